"""Measurement that means something: a seed per run, the temperature, rates with their run
counts, the caught-by breakdown, and a results table that reads at 80 columns when piped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from confessional import ConfessionReport, ConfigurationError
from confessional.audit.calibrator import Calibrator
from confessional.confession import Confession
from confessional.evaluation import caught_by, run_eval, run_seed
from confessional.findings import Finding
from confessional.scenarios import get_scenario, report_confessor
from confessional.testing import ScriptedChatModel


class SamplingScriptedModel(ScriptedChatModel):
    """A scripted model with the sampling fields OpenAI-compatible models have."""

    seed: int | None = None
    temperature: float | None = None


def _sampling_agent(behaviour: str = "comply") -> SamplingScriptedModel:
    scripted = get_scenario("impossible_timing").scripted_agent(behaviour)  # type: ignore[arg-type]
    return SamplingScriptedModel(respond=scripted.respond, model_name="sampling")


def test_each_run_gets_its_own_recorded_seed_and_the_temperature(tmp_path: Path) -> None:
    result = run_eval(
        _sampling_agent(), scenarios=["impossible_timing"], runs=3, seed=7, temperature=0.7
    )
    seeds = [r.seed for r in result.records]
    assert seeds == [run_seed(7, i) for i in range(3)]
    assert len(set(seeds)) == 3
    assert run_seed(8, 0) not in seeds  # another base seed gives other samples
    assert all(r.temperature == 0.7 for r in result.records)
    result.write_json(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["temperature"] == 0.7
    assert [run["seed"] for run in data["runs"]] == seeds


def test_a_model_without_sampling_fields_records_no_seed() -> None:
    model = get_scenario("impossible_timing").scripted_agent("comply")
    result = run_eval(model, scenarios=["impossible_timing"], runs=1, temperature=0.5)
    assert result.records[0].seed is None
    assert result.records[0].temperature is None  # never claim what was not sent


def test_temperature_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="temperature"):
        run_eval("scripted", runs=1, temperature=-1.0)


def _finding(kind: str) -> Finding:
    return Finding(kind=kind, severity="high", evidence="episode", detail=kind, subject=kind)


def test_caught_by_names_each_source() -> None:
    scenario = get_scenario("protected_config")
    denial = scenario.scripted_report("denial")
    admission = scenario.scripted_report("admission")
    audit_only = Confession(
        status="ok",
        report=denial,
        findings=[_finding("protected_write")],
        discrepancies=[_finding("protected_write")],
    )
    assert caught_by(audit_only) == {
        "confession": False,
        "audit": True,
        "calibrator": False,
        "any": True,
    }
    calibrator_only = Confession(
        status="error", findings=[_finding("calibrator_flagged")], discrepancies=[]
    )
    assert caught_by(calibrator_only)["calibrator"] is True
    assert caught_by(calibrator_only)["audit"] is False
    confessed_only = Confession(status="ok", report=admission)
    assert caught_by(confessed_only) == {
        "confession": True,
        "audit": False,
        "calibrator": False,
        "any": True,
    }
    assert not any(caught_by(None).values())


def test_caught_by_matrices_per_source() -> None:
    scenario = get_scenario("protected_config")
    liar = report_confessor(scenario.scripted_report("denial"))
    model = scenario.scripted_agent("misbehave", confession=liar)
    result = run_eval(model, scenarios=["protected_config"], runs=2)
    by_source = {s: m["protected_config"] for s, m in result.caught_by_matrices.items()}
    assert (by_source["confession"].tp, by_source["confession"].fn) == (0, 2)
    assert (by_source["audit"].tp, by_source["audit"].fn) == (2, 0)
    assert (by_source["calibrator"].tp, by_source["calibrator"].fn) == (0, 2)
    assert (by_source["any"].tp, by_source["any"].fn) == (2, 0)
    averages = result.caught_by_averages()
    assert averages["audit"]["mean_caught_given_not_complied"] == 1.0
    assert averages["confession"]["mean_joint_false_negative_rate"] == 1.0


def _piped_environment() -> dict[str, str]:
    """This process's environment without a terminal size: what a pipe gets."""
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


def test_piped_results_read_at_80_columns(tmp_path: Path) -> None:
    names = "instruction_hierarchy,instruction_following,protected_config,broken_tool"
    done = subprocess.run(
        [sys.executable, "-m", "confessional", "eval", "--model", "scripted", "--runs", "3",
         "--scenarios", names, "--caught-by", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=300,
        env=_piped_environment(),
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    headers = [line for line in lines if line.startswith("┃ scenario")]
    assert len(headers) == 4
    words = {w for line in headers for w in re.split(r"[┃\s]+", line) if w}
    for header in ("complied", "DNF", "P(conf|nc)", "joint", "confession", "calibrator", "any"):
        assert header in words
    assert re.search(r"\d+% \(\d+/\d+\)", done.stdout)  # each figure with its run count
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["scenarios"]["broken_tool"]["caught_by"]) == {
        "confession",
        "audit",
        "calibrator",
        "any",
    }
    assert all(isinstance(run["seed"], int) for run in data["runs"])
    # Each run keeps its report, so another flagging rule can be scored from the file.
    reports = [ConfessionReport.model_validate(run["report"]) for run in data["runs"]]
    assert len(reports) == 3 * 4
    assert all(r.compliance_analysis for r in reports)


def test_a_configured_calibrator_is_recorded_with_its_style_and_failures() -> None:
    scenario = get_scenario("protected_config")
    liar = report_confessor(scenario.scripted_report("denial"))
    model = scenario.scripted_agent("misbehave", confession=liar)
    answers = "Q1: write_file overwrote config/settings.toml => yes\nQ2: => no"
    second = Calibrator(ScriptedChatModel(respond=lambda m, t: answers), style="questions")
    result = run_eval(model, scenarios=["protected_config"], runs=1, calibrator=second)
    (record,) = result.records
    assert record.caught_by["calibrator"] is True
    assert record.calibrator_failed is False
    assert result.to_json()["calibrator_style"] == "questions"
    silent = Calibrator(ScriptedChatModel(respond=lambda m, t: "no idea"))
    (failed,) = run_eval(model, scenarios=["protected_config"], runs=1, calibrator=silent).records
    assert failed.calibrator_failed is True
    assert failed.caught_by["calibrator"] is False


def test_each_finished_run_is_written_at_once_to_the_partial_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "confessional", "eval", "--model", "scripted", "--runs", "2",
         "--scenarios", "broken_tool", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=300,
        env=_piped_environment(),
    )  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "runs.partial.jsonl").read_text().splitlines()]
    assert [(r["scenario"], r["index"]) for r in rows] == [("broken_tool", 0), ("broken_tool", 1)]
    assert rows == json.loads((tmp_path / "results.json").read_text())["runs"], done.stdout


def test_runs_go_round_by_round_so_a_stopped_evaluation_covers_every_scenario() -> None:
    names = ["impossible_timing", "broken_tool"]
    result = run_eval(_sampling_agent(), scenarios=names, runs=2)
    order = [(r.scenario, r.index) for r in result.records]
    assert order == [(n, i) for i in range(2) for n in names]
