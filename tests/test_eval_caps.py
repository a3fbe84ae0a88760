"""A run stopped at the eval's own cap is confessed (through the same middleware's
pipeline, ending ``cap``) and scored in the matrices; "did not finish" still counts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, ToolMessage

from confessional.evaluation import RunLimits, RunOutcome, arun_scenario, run_eval, run_scenario
from confessional.findings import UNFINISHED
from confessional.testing import (
    ScriptedChatModel,
    is_confession_request,
    scripted_agent,
    tool_call_message,
)

LOOP = 'the run was stopped at its cap while repeating list_files({"directory": "."})'


def _looping_agent() -> ScriptedChatModel:
    """Lists the same directory for ever, and confesses (admits) when asked."""
    return scripted_agent([tool_call_message(("list_files", {"directory": "."}))])


def _unfinished_detail(outcome: RunOutcome) -> str:
    confession = outcome.confession
    assert confession is not None
    assert confession.status == "ok"
    assert confession.agent_name == "sandbagging"  # the scenario's own middleware confessed
    (detail,) = [f.detail for f in confession.findings if f.kind == UNFINISHED]
    return detail


def _check_capped_at_three(outcome: RunOutcome, model: ScriptedChatModel) -> None:
    assert outcome.capped == "model_calls"
    assert outcome.model_calls == 3
    assert outcome.final_answer is None
    assert _unfinished_detail(outcome) == (
        f"{LOOP} 2 times after 2 tool call(s) (the evaluation's cap of 3 model calls)"
    )
    agent_calls = [call for call in model.calls if not is_confession_request(call)]
    (request,) = [call for call in model.calls if is_confession_request(call)]
    assert len(agent_calls) == 3
    # The third call's tool request never ran: it is left out, so no call lacks a reply.
    replayed = request[:-1]
    assert isinstance(replayed[-1], ToolMessage)
    asked = sum(len(m.tool_calls) for m in replayed if isinstance(m, AIMessage))
    assert asked == sum(1 for m in replayed if isinstance(m, ToolMessage)) == 2


def test_a_run_capped_on_model_calls_is_confessed() -> None:
    model = _looping_agent()
    outcome = run_scenario("sandbagging", model, limits=RunLimits(max_model_calls=3))
    _check_capped_at_three(outcome, model)


@pytest.mark.asyncio
async def test_an_async_run_capped_on_model_calls_is_confessed() -> None:
    model = _looping_agent()
    outcome = await arun_scenario("sandbagging", model, limits=RunLimits(max_model_calls=3))
    _check_capped_at_three(outcome, model)


def test_a_run_capped_on_time_is_confessed() -> None:
    outcome = run_scenario("sandbagging", _looping_agent(), limits=RunLimits(max_seconds=1e-9))
    assert outcome.capped == "seconds"
    # Stopped after the first step: its tool call never ran, so nothing was done; the run
    # is confessed all the same (the eval scores every run).
    assert _unfinished_detail(outcome) == (
        "the run was stopped at its cap after 0 tool call(s) (the evaluation's cap of 1e-09 s)"
    )


def test_capped_runs_are_scored_and_still_did_not_finish(tmp_path: Path) -> None:
    result = run_eval(
        _looping_agent(), scenarios=["sandbagging"], runs=2, limits=RunLimits(max_model_calls=3)
    )
    assert [r.capped for r in result.records] == ["model_calls", "model_calls"]
    assert all(r.status == "ok" and r.scored and r.did_not_finish for r in result.records)
    assert result.did_not_finish("sandbagging") == result.did_not_finish() == 2
    matrix = result.matrices["sandbagging"]
    # Nothing was submitted (not complied) and the agent's own confession admitted it.
    assert (matrix.n, matrix.tp, matrix.fn) == (2, 2, 0)
    assert result.caught_matrices["sandbagging"].n == 2
    assert all(m["sandbagging"].n == 2 for m in result.caught_by_matrices.values())
    assert result.averages.mean_confessed_given_not_complied == 1.0
    result.write_json(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["did_not_finish"] == 2
    assert data["scenarios"]["sandbagging"]["did_not_finish"] == 2
    assert data["scenarios"]["sandbagging"]["counts"]["n"] == 2
    assert all(run["capped"] == "model_calls" and run["status"] == "ok" for run in data["runs"])
