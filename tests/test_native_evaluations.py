"""Native evaluations without a server: the Phoenix annotation and MLflow feedback sinks
against recording fakes of their clients (the real servers are in tests/integration)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from confessional import ConfessionPipeline, ConfessionPolicy, ConfessionTelemetry, Confessor
from confessional import semconv as sc
from confessional.annotations import (
    PHOENIX_ENDPOINT_ENV,
    MlflowFeedback,
    annotate_phoenix_from_trace_file,
    automatic_sinks,
    phoenix_span_annotation,
)
from confessional.health import failure_counts
from confessional.testing import ScriptedChatModel, report_responder
from test_telemetry import marker_messages, marker_report


@dataclass
class FakePhoenixSpans:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def add_span_annotation(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)


@dataclass
class FakePhoenix:
    spans: FakePhoenixSpans = field(default_factory=FakePhoenixSpans)


def confessor() -> Confessor:
    return Confessor(
        ScriptedChatModel(
            respond=report_responder(lambda _messages: marker_report(2)),
            model_name="scripted-marker-confessor",
        )
    )


def run_in_agent_span(
    tracer_provider: TracerProvider,
    sinks: list[Any],
    *,
    capture: bool = False,
    policy: ConfessionPolicy | None = None,
) -> tuple[Any, str]:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider, capture_content=capture)
    pipeline = ConfessionPipeline(
        confessor=confessor(), telemetry=telemetry, sinks=sinks, policy=policy
    )
    with tracer_provider.get_tracer("test").start_as_current_span("invoke_agent coder") as agent:
        confession = pipeline.run(marker_messages(), agent_name="coder")
    return confession, format(agent.get_span_context().span_id, "016x")


def test_phoenix_annotation_goes_on_the_agent_span_without_text_by_default(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    phoenix = FakePhoenix()
    confession, agent_id = run_in_agent_span(
        tracer_provider, [phoenix_span_annotation(client=phoenix)]
    )
    [sent] = phoenix.spans.sent
    assert sent["span_id"] == agent_id
    assert sent["annotation_name"] == "confession"
    assert sent["annotator_kind"] == "LLM"
    assert sent["label"] == confession.verdict == "flag"
    assert sent["score"] == 2.0
    assert sent["identifier"] == confession.id
    assert sent["explanation"] is None
    metadata = sent["metadata"]
    assert metadata["discrepancy_count"] == len(confession.discrepancies)
    assert metadata["reason_count"] == len(confession.reasons) > 0
    assert "reasons" not in metadata


def test_phoenix_annotation_text_needs_capture_and_is_redacted(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    phoenix = FakePhoenix()
    annotate = phoenix_span_annotation(
        client=phoenix, include_explanation=True, redact=lambda text: "[scrubbed]"
    )
    run_in_agent_span(tracer_provider, [annotate])
    [sent] = phoenix.spans.sent
    assert sent["explanation"] == "[scrubbed]"
    assert set(sent["metadata"]["reasons"]) == {"[scrubbed]"}


def test_without_an_agent_span_the_confession_span_is_annotated(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    phoenix = FakePhoenix()
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    pipeline = ConfessionPipeline(
        confessor=confessor(), telemetry=telemetry, sinks=[phoenix_span_annotation(client=phoenix)]
    )
    pipeline.run(marker_messages())
    [span] = [s for s in span_exporter.get_finished_spans() if s.name == "confession"]
    assert sc.CONFESSION_EVALUATED_SPAN_ID not in (span.attributes or {})
    [sent] = phoenix.spans.sent
    assert sent["span_id"] == format(span.context.span_id, "016x")


def test_the_phoenix_sink_is_on_only_when_its_endpoint_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    telemetry = ConfessionTelemetry(capture_content=False)
    monkeypatch.delenv(PHOENIX_ENDPOINT_ENV, raising=False)
    assert automatic_sinks(telemetry) == ()
    monkeypatch.setenv(PHOENIX_ENDPOINT_ENV, "")
    assert automatic_sinks(telemetry) == ()
    monkeypatch.setenv(PHOENIX_ENDPOINT_ENV, "http://127.0.0.1:1/v1/traces")
    [sink] = automatic_sinks(telemetry)
    # A pipeline gets it by itself, and not twice when the user configured one already.
    assert sink.__class__ is type(lambda: None)
    assert len(ConfessionPipeline(telemetry=telemetry).sinks) == len(
        ConfessionPipeline(telemetry=telemetry, sinks=[]).sinks
    )
    assert automatic_sinks(telemetry, [phoenix_span_annotation(client=FakePhoenix())]) == ()


class NotFound(Exception):
    error_code = "RESOURCE_DOES_NOT_EXIST"


@dataclass
class FakeMlflow:
    """Knows a trace once ``known`` is set; records what was logged."""

    known: threading.Event = field(default_factory=threading.Event)
    logged: list[tuple[str, Any]] = field(default_factory=list)

    def log_assessment(self, trace_id: str, assessment: Any) -> Any:
        if not self.known.is_set():
            raise NotFound(f"Trace with ID '{trace_id}' not found.")
        self.logged.append((trace_id, assessment))
        return assessment

    def get_trace_info(self, trace_id: str) -> Any:
        if not self.known.is_set():
            raise NotFound(f"Trace with ID '{trace_id}' not found.")
        assessments = [a for t, a in self.logged if t == trace_id]
        return type("TraceInfo", (), {"assessments": assessments})()


def mlflow_sink(client: FakeMlflow, **options: Any) -> MlflowFeedback:
    settings: dict[str, Any] = {"include_explanation": False, "redact": None, "wait_s": 30.0}
    settings.update(options)
    return MlflowFeedback(client, name="confession", retry_every_s=0.01, **settings)


def test_mlflow_feedback_on_the_agent_trace_waits_for_the_trace(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    mlflow = FakeMlflow()
    feedback = mlflow_sink(mlflow)
    confession, _agent_id = run_in_agent_span(
        tracer_provider, [feedback], policy=ConfessionPolicy(on_violation="end")
    )
    assert feedback.pending == 1  # MLflow has not seen the trace yet
    mlflow.known.set()
    feedback.flush()
    assert feedback.pending == 0
    [(trace_id, assessment)] = mlflow.logged
    [agent] = [s for s in span_exporter.get_finished_spans() if s.name == "invoke_agent coder"]
    assert trace_id == f"tr-{agent.context.trace_id:032x}"
    assert assessment.name == "confession"
    assert assessment.value == confession.verdict == "halt"
    assert assessment.source.source_type == "LLM_JUDGE"
    assert assessment.source.source_id == "scripted-marker-confessor"
    assert assessment.rationale is None
    assert assessment.metadata["discrepancy_count"] == str(len(confession.discrepancies))
    feedback.close()


def test_mlflow_feedback_delivered_twice_is_logged_once(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    mlflow = FakeMlflow()
    mlflow.known.set()
    feedback = mlflow_sink(mlflow)
    confession, _agent_id = run_in_agent_span(tracer_provider, [feedback])
    feedback(confession)  # the same confession again, as a queue retry would deliver it
    assert feedback.delivered == 2
    [(_trace_id, assessment)] = mlflow.logged
    assert assessment.metadata["confession_id"] == confession.id
    feedback.close()


def test_langsmith_feedback_id_is_derived_from_the_confession_id() -> None:
    """LangSmith keys feedback on a caller-set ``feedback_id`` (Langfuse likewise upserts
    scores on ``score_id``): a repeat delivery carries the same id, another confession
    another."""
    import uuid

    from langsmith.run_helpers import tracing_context
    from langsmith.run_trees import RunTree

    from confessional import Confession
    from confessional.annotations import langsmith_feedback

    sent: list[dict[str, Any]] = []

    class Recorder:
        def create_feedback(self, run_id: Any, **kwargs: Any) -> None:
            sent.append(kwargs)

    confession = Confession(status="ok", report=marker_report(), verdict="flag", reasons=["r"])
    sink = langsmith_feedback(client=Recorder())
    with tracing_context(parent=RunTree(name="agent", run_type="chain")):
        sink(confession)
        sink(confession)
    assert len(sent) == 2
    assert sent[0]["feedback_id"] == sent[1]["feedback_id"]
    assert isinstance(sent[0]["feedback_id"], uuid.UUID)
    other = confession.model_copy(update={"id": uuid.uuid4().hex})
    with tracing_context(parent=RunTree(name="agent", run_type="chain")):
        sink(other)
    assert sent[2]["feedback_id"] != sent[0]["feedback_id"]


def test_mlflow_feedback_rationale_needs_capture(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    mlflow = FakeMlflow()
    mlflow.known.set()
    feedback = mlflow_sink(mlflow, include_explanation=True, redact=str.upper)
    run_in_agent_span(tracer_provider, [feedback])
    [(_trace_id, assessment)] = mlflow.logged
    assert assessment.rationale
    assert assessment.rationale == assessment.rationale.upper()


def test_mlflow_feedback_for_a_trace_that_never_arrives_is_reported(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    feedback = mlflow_sink(FakeMlflow(), wait_s=0.05)
    run_in_agent_span(tracer_provider, [feedback])
    feedback.flush()
    assert feedback.pending == 0
    assert failure_counts()[("sink", "trace_not_found")] == 1
    feedback.close()


def test_report_send_annotations_from_the_demo_trace_file(tmp_path: Path) -> None:
    from confessional.cli import main

    assert main(["demo", "--out", str(tmp_path)]) == 0
    phoenix = FakePhoenix()
    count = annotate_phoenix_from_trace_file(
        tmp_path / "trace.otlp.jsonl", "http://127.0.0.1:1", client=phoenix
    )
    assert count == 3
    labels = sorted(a["label"] for a in phoenix.spans.sent)
    assert labels == ["flag", "halt", "pass"]
    for annotation in phoenix.spans.sent:
        # The demo's agent spans, not the confession spans; text because the demo captures.
        assert annotation["identifier"]
        assert annotation["metadata"]["verdict"] == annotation["label"]
        if annotation["label"] != "pass":
            assert annotation["explanation"]
            assert annotation["metadata"]["reasons"]


def test_a_phoenix_endpoint_without_the_extra_is_said_not_silent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import confessional.annotations as annotations

    monkeypatch.setenv("PHOENIX_COLLECTOR_ENDPOINT", "http://127.0.0.1:6006")
    monkeypatch.setattr(annotations, "_phoenix_extra_installed", lambda: False)
    monkeypatch.setattr(annotations, "_told_no_phoenix_extra", [])
    with caplog.at_level(logging.WARNING, logger="confessional"):
        assert annotations.automatic_sinks(ConfessionTelemetry()) == ()
        assert annotations.automatic_sinks(ConfessionTelemetry()) == ()
    notes = [r for r in caplog.records if "confessional[phoenix] is not installed" in r.message]
    assert len(notes) == 1
