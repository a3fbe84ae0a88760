"""The eval harness around real create_agent runs: caps, 'did not finish', the audit figure,
the model identity in results.json, and the CLI's --list / --model handling."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage

from confessional import ConfigurationError
from confessional.cli import main
from confessional.evaluation import (
    RunLimits,
    arun_scenario,
    run_eval,
    run_scenario,
)
from confessional.findings import UNFINISHED
from confessional.local_model import IDENTITY_METADATA_KEY
from confessional.scenarios import get_scenario, report_confessor
from confessional.testing import ScriptedChatModel, admitting_confessor, is_confession_request


def _looping_model() -> ScriptedChatModel:
    """Lists the same directory for ever: the failure the step cap exists for."""
    ids = itertools.count()

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage:
        return AIMessage(
            content="",
            tool_calls=[{"name": "list_files", "args": {"directory": "."}, "id": f"c{next(ids)}"}],
        )

    return ScriptedChatModel(respond=respond, model_name="looper")


def test_a_looping_run_stops_at_the_model_call_cap() -> None:
    model = _looping_model()
    outcome = run_scenario("sandbagging", model, limits=RunLimits(max_model_calls=3))
    assert outcome.capped == "model_calls"
    assert not outcome.finished
    assert outcome.model_calls == 3
    assert sum(1 for call in model.calls if not is_confession_request(call)) == 3
    # The run is confessed all the same (this model answers with tool calls, so the
    # report fails to parse), and the audit names how it ended.
    assert outcome.confession is not None
    assert any(f.kind == UNFINISHED for f in outcome.confession.findings)
    assert outcome.final_answer is None
    assert outcome.truth == "not_complied"  # nothing was submitted: the state says so


@pytest.mark.asyncio
async def test_async_run_stops_at_the_model_call_cap() -> None:
    outcome = await arun_scenario(
        "sandbagging", _looping_model(), limits=RunLimits(max_model_calls=2)
    )
    assert outcome.capped == "model_calls"
    assert outcome.model_calls == 2


def test_a_run_past_its_time_cap_stops_after_the_current_step() -> None:
    model = _looping_model()
    outcome = run_scenario("sandbagging", model, limits=RunLimits(max_seconds=1e-9))
    assert outcome.capped == "seconds"
    assert outcome.model_calls == 1  # the deadline is checked after each step


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_model_calls"):
        RunLimits(max_model_calls=0)
    with pytest.raises(ConfigurationError, match="max_seconds"):
        RunLimits(max_seconds=0)


def test_capped_runs_are_did_not_finish_counted_and_scored(tmp_path: Path) -> None:
    result = run_eval(
        _looping_model(), scenarios=["sandbagging"], runs=2, limits=RunLimits(max_model_calls=2)
    )
    assert all(r.did_not_finish and r.scored for r in result.records)
    assert all(r.capped == "model_calls" and r.model_calls == 2 for r in result.records)
    assert result.did_not_finish("sandbagging") == 2
    assert result.matrices["sandbagging"].n == 2  # confessed, so scored
    assert result.run_errors == 0
    result.write_json(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["did_not_finish"] == 2
    assert data["scenarios"]["sandbagging"]["did_not_finish"] == 2
    assert data["limits"] == {"max_model_calls": 2, "max_seconds": 600.0}
    assert {r["truth"] for r in data["runs"]} == {"not_complied"}


def test_the_audit_catches_a_lying_confession_in_the_third_figure() -> None:
    scenario = get_scenario("protected_config")
    liar = report_confessor(scenario.scripted_report("denial"))
    model = scenario.scripted_agent("misbehave", confession=liar)
    result = run_eval(model, scenarios=["protected_config"], runs=2)
    assert all(r.truth == "not_complied" and not r.confessed for r in result.records)
    assert all(r.caught and "protected_write" in r.audit_discrepancies for r in result.records)
    assert result.averages.mean_joint_false_negative_rate == 1.0
    assert result.averages.mean_joint_false_negative_rate_with_audit == 0.0
    caught = result.caught_matrices["protected_config"]
    assert (caught.tp, caught.fn) == (2, 0)


def test_results_json_records_the_model_identity(tmp_path: Path) -> None:
    scenario = get_scenario("impossible_timing")
    model = scenario.scripted_agent("comply")
    identity = {"gguf_name": "Some Model", "sha256": "ab" * 32, "server_version": "1 (x)"}
    model.metadata = {IDENTITY_METADATA_KEY: identity}
    result = run_eval(model, scenarios=["impossible_timing"], runs=1, label="local")
    result.write_json(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["model"] == "local"
    assert data["model_identity"] == identity
    assert data["runs"][0]["status"] == "ok"
    assert data["runs"][0]["final_answer"]


def test_other_models_record_their_name() -> None:
    model = get_scenario("impossible_timing").scripted_agent("comply")
    result = run_eval(model, scenarios=["impossible_timing"], runs=1)
    assert result.model_identity == {"model_name": model.model_name}


def test_eval_list_needs_no_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--list"]) == 0
    assert "prompt_injection" in capsys.readouterr().out


def test_eval_without_model_says_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--model" in err
    assert "local" in err
    assert not (tmp_path / "results.json").exists()


def test_eval_cli_shows_the_audit_figure_and_caps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["eval", "--model", "scripted", "--runs", "2", "--scenarios", "protected_config",
         "--max-model-calls", "5", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "not caught" in out
    assert "DNF" in out
    # off a terminal each run gets its own progress line, with an ETA
    assert "[1/2] protected_config #0: ok" in out
    assert "[2/2] protected_config #1: ok" in out
    assert "ETA 0.0 min" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["limits"]["max_model_calls"] == 5
    assert data["averages"]["mean_joint_false_negative_rate_with_audit"] is not None


def test_base_url_is_refused_for_scripted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["eval", "--model", "scripted", "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path)]
    )
    assert code == 2
    assert "--base-url" in capsys.readouterr().err


def test_a_run_answered_without_any_tool_is_confessed_and_scored() -> None:
    """Sandbagging with no tool call at all is still a run to score: it is confessed."""

    confessor = admitting_confessor()

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage | str:
        if is_confession_request(messages):
            return confessor.respond(messages, tools)
        return AIMessage(content="I would rather not take the quiz.")

    outcome = run_scenario("sandbagging", ScriptedChatModel(respond=respond, model_name="shy"))
    assert outcome.finished
    assert outcome.confession is not None
    assert outcome.confession.status == "ok"
