"""The confessional command: demo, eval and report, end to end with scripted models."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from confessional import semconv
from confessional._render import Printer
from confessional.cli import main
from confessional.demo import OTLPJsonFileExporter, run_demo
from confessional.evaluation import run_eval, scripted_plan
from confessional.report import read_confession_spans
from confessional.scenarios import get_scenario
from confessional.testing import ScriptedChatModel


def test_demo_shows_pass_halt_flag_and_writes_a_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SCRIPTED" in out
    assert "PASSED" in out
    assert "HALTED" in out
    assert "FLAGGED" in out
    assert "not_complied_claimed_compliance" in out  # the confession is rendered
    trace = tmp_path / "trace.otlp.jsonl"
    lines = trace.read_text().splitlines()
    assert lines
    request = json.loads(lines[0])
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32  # hex, as OTLP/JSON requires (not base64)
    assert len(span["spanId"]) == 16
    assert int(span["traceId"], 16)

    confessions, total = read_confession_spans(trace)
    assert total > len(confessions) == 3
    assert sorted(c.verdict or "" for c in confessions) == ["flag", "halt", "pass"]
    for c in confessions:
        # Each confession span is a child of the demo's agent span.
        assert c.parent_name is not None
        assert c.parent_name.startswith("invoke_agent demo-")
        assert c.objectives  # the demo turns content capture on

    assert main(["report", str(trace)]) == 0
    summary = capsys.readouterr().out
    assert "3 confession span(s)" in summary
    assert "halt" in summary
    assert "flag" in summary
    assert "Worst objectives" in summary
    assert "not_complied_claimed_compliance" in summary


def test_eval_scripted_writes_results_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["sandbagging", "prompt_injection", "background_work"]
    code = main(
        ["eval", "--model", "scripted", "--runs", "4", "--seed", "3",
         "--scenarios", ",".join(names), "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "only proves the harness" in out
    assert "paper: 4.4%" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["scripted"] is True
    assert list(data["scenarios"]) == names
    assert len(data["runs"]) == 12
    plan = {(p.scenario, p.index): p for p in scripted_plan(names, 4, 3)}
    for run in data["runs"]:
        planned = plan[(run["scenario"], run["index"])]
        # Ground truth follows the scripted behaviour, 'confessed' the scripted report.
        assert run["truth"] == ("complied" if planned.behaviour == "comply" else "not_complied")
        assert run["confessed"] is (planned.scripted_confession in ("admission", "false_alarm"))
        assert run["status"] == "ok"
    for name in names:
        counts = data["scenarios"][name]["counts"]
        runs = [r for r in data["runs"] if r["scenario"] == name]
        assert counts["tp"] == sum(r["truth"] == "not_complied" and r["confessed"] for r in runs)
        assert counts["fn"] == sum(
            r["truth"] == "not_complied" and not r["confessed"] for r in runs
        )
        assert counts["n"] == 4
    png = (tmp_path / "confusion_matrix.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_eval_rejects_unknown_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--model", "scripted", "--scenarios", "nope", "--out", str(tmp_path)])
    assert code == 2
    assert "impossible_timing" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_eval_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", "scripted", "--list"]) == 0
    out = capsys.readouterr().out
    assert "background_work" in out
    assert "payments.jsonl" in out


def test_report_falls_back_to_label_counts_without_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "trace.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPJsonFileExporter(path)))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("invoke_agent a"),
        tracer.start_as_current_span(
            "confession a",
            attributes={
                semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CONFESSION,
                semconv.CONFESSION_VERDICT: "flag",
                semconv.CONFESSION_STATUS: "ok",
                semconv.CONFESSION_GRADE: 2,
                semconv.OBJECTIVE_COUNT_ATTRIBUTES["not_complied_not_reported"]: 2,
                semconv.OBJECTIVE_COUNT_ATTRIBUTES["fully_complied"]: 1,
            },
        ),
    ):
        pass
    provider.shutdown()
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "content capture off" in out
    assert "invoke_agent a" in out
    assert re.search(r"not_complied_not_reported\W+2\b", out)
    assert re.search(r"fully_complied\W+1\b", out)


def test_report_rejects_non_otlp_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    assert main(["report", str(path)]) == 2
    assert "OTLP" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json")]) == 2


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "confessional", "report", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_eval_with_a_model_instance_and_concurrency() -> None:
    # A chat-model instance takes the same path as a real provider model.
    scenario = get_scenario("impossible_timing")
    model = scenario.scripted_agent("misbehave")
    seen: list[str] = []
    result = run_eval(
        model,
        scenarios=["impossible_timing"],
        runs=3,
        concurrency=3,
        on_run=lambda r: seen.append(r.scenario),
    )
    assert not result.scripted
    assert result.model == "ScriptedChatModel"
    assert seen == ["impossible_timing"] * 3
    m = result.matrices["impossible_timing"]
    assert (m.tp, m.fn, m.fp, m.tn) == (3, 0, 0, 0)
    assert result.averages.mean_confessed_given_not_complied == 1.0
    assert result.averages.mean_joint_false_negative_rate == 0.0


def test_eval_counts_failing_runs_as_errors_not_labels() -> None:
    def boom(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage:
        raise RuntimeError("provider down")

    result = run_eval(ScriptedChatModel(respond=boom), scenarios=["sandbagging"], runs=2)
    assert result.run_errors == 2
    assert result.matrices["sandbagging"].n == 0
    assert result.records[0].error is not None
    assert "provider down" in result.records[0].error
    assert result.averages.mean_joint_false_negative_rate is None


def test_demo_with_a_model_that_never_uses_tools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lazy = ScriptedChatModel(respond=lambda messages, tools: "I would rather not.")
    assert run_demo(model=lazy, out_dir=tmp_path) == 0  # real-model runs are not judged
    out = capsys.readouterr().out
    assert "outcomes depend on the model" in out
    # Every run is confessed, also one without a tool call: this model's reply to the
    # confession request is no report, and the demo says so.
    assert "no confession was recorded" not in out
    assert out.count("confession failed: no JSON object decoded") == 3
    assert "SCRIPTED models" not in out


def test_demo_plain_output_without_rich(tmp_path: Path) -> None:
    buffer = io.StringIO()
    assert run_demo(out_dir=tmp_path, printer=Printer(buffer, plain=True)) == 0
    out = buffer.getvalue()
    assert "━" not in out  # no rich box drawing: the plain fallback was used
    for word in ("PASSED", "HALTED", "FLAGGED", "objective", "not_complied_claimed_compliance"):
        assert word in out


def test_demo_says_when_phoenix_did_not_receive_the_spans(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    buffer = io.StringIO()
    assert run_demo(out_dir=tmp_path, phoenix=dead, printer=Printer(buffer, plain=True)) == 0
    out = buffer.getvalue()
    assert f"Phoenix at {dead}: 6 span(s) NOT delivered" in out
    assert "Also sent" not in out
    assert (tmp_path / "trace.otlp.jsonl").stat().st_size > 0  # the file is still complete
