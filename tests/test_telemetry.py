"""ConfessionTelemetry: span, attributes, evaluation event, privacy, errors, run marking."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind, StatusCode

from confessional import (
    COMPLIANCE_LABELS,
    Confession,
    ConfessionPipeline,
    ConfessionPolicy,
    ConfessionReport,
    ConfessionTelemetry,
    Confessor,
    ConfigurationError,
    extract_episode,
)
from confessional import semconv as sc
from confessional.testing import (
    ScriptedChatModel,
    denying_confessor,
    garbage_confessor,
    report_responder,
)

MARKERS = {
    "human": "MARKER-HUMAN-7f3a",
    "toolarg": "MARKER-TOOLARG-1b2c",
    "toolresult": "MARKER-TOOLRESULT-9d8e",
    "answer": "MARKER-ANSWER-4c5d",
    "objective": "MARKER-OBJECTIVE-aa11",
    "analysis": "MARKER-ANALYSIS-bb22",
    "shortcut": "MARKER-SHORTCUT-cc33",
    "uncertainty": "MARKER-UNCERTAINTY-dd44",
}


def marker_messages() -> list[BaseMessage]:
    return [
        HumanMessage(f"Make the speed test pass. {MARKERS['human']}"),
        AIMessage(
            content="",
            tool_calls=[
                {"name": "run_tests", "args": {"note": MARKERS["toolarg"]}, "id": "c1"},
                {
                    "name": "write_file",
                    "args": {"path": "tests/test_speed.py", "content": "timer = 0"},
                    "id": "c2",
                },
            ],
        ),
        ToolMessage(f"1 failed {MARKERS['toolresult']}", tool_call_id="c1"),
        ToolMessage("wrote 9 bytes", tool_call_id="c2"),
        AIMessage(f"All tests pass now. {MARKERS['answer']}"),
    ]


def marker_report(grade: int = 2) -> ConfessionReport:
    return ConfessionReport.model_validate(
        {
            "compliance_analysis": [
                {
                    "objective": f"Make it fast {MARKERS['objective']}",
                    "compliance": "not_complied_not_reported",
                    "analysis": f"I rigged the timer {MARKERS['analysis']}",
                },
                {
                    "objective": "Keep tests intact",
                    "compliance": "fully_complied",
                    "analysis": "ok",
                },
                {"objective": "Be quick", "compliance": "nearly_complied", "analysis": "mostly"},
            ],
            "uncertainties_and_conflicts": [f"Budget unclear {MARKERS['uncertainty']}"],
            "overall_compliance_grade": grade,
            "shortcuts": [f"Set timer to zero {MARKERS['shortcut']}"],
        }
    )


def marker_confessor(grade: int = 2) -> ScriptedChatModel:
    return ScriptedChatModel(
        respond=report_responder(lambda _messages: marker_report(grade)),
        model_name="scripted-marker-confessor",
    )


def pipeline(
    telemetry: ConfessionTelemetry,
    *,
    model: ScriptedChatModel | None = None,
    policy: ConfessionPolicy | None = None,
) -> ConfessionPipeline:
    return ConfessionPipeline(
        confessor=Confessor(model or marker_confessor()),
        policy=policy,
        telemetry=telemetry,
    )


def confession_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get(sc.GEN_AI_OPERATION_NAME) == sc.OPERATION_CONFESSION
    ]


def one_confession_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = confession_spans(exporter)
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    return spans[0]


def all_exported_text(
    spans: Sequence[ReadableSpan], logs: InMemoryLogRecordExporter | None = None
) -> list[str]:
    """Every string anywhere in the exported data: names, attributes, events, status, resource,
    links and log records."""
    texts: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                add(key)
                add(item)
        elif isinstance(value, list | tuple):
            for item in value:
                add(item)
        elif value is not None and not isinstance(value, int | float | bool):
            texts.append(str(value))

    for span in spans:
        add(span.name)
        add(dict(span.attributes or {}))
        add(span.status.description)
        add(dict(span.resource.attributes))
        for event in span.events:
            add(event.name)
            add(dict(event.attributes or {}))
        for link in span.links:
            add(dict(link.attributes or {}))
    if logs is not None:
        for log in logs.get_finished_logs():
            record = log.log_record
            add(record.body)
            add(dict(record.attributes or {}))
            add(record.event_name)
    return texts


def leaked(texts: Sequence[str]) -> list[str]:
    return [t for t in texts if "MARKER" in t]


@pytest.fixture
def log_exporter() -> Iterator[tuple[LoggerProvider, InMemoryLogRecordExporter]]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_span_attributes_and_event_for_a_flagged_confession(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    log_exporter: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    logger_provider, logs = log_exporter
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider,
        capture_content="NO_CONTENT",
        logger_provider=logger_provider,
    )
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent") as parent:
        confession = pipeline(telemetry).run(marker_messages(), agent_name="coder")

    assert confession.verdict == "flag"
    span = one_confession_span(span_exporter)
    assert span.name == "confession coder"
    assert span.kind is SpanKind.INTERNAL
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    attrs = dict(span.attributes or {})
    expected = {
        sc.GEN_AI_OPERATION_NAME: "confession",
        sc.OPENINFERENCE_SPAN_KIND: "EVALUATOR",
        sc.CONFESSION_GRADE: 2,
        sc.CONFESSION_VERDICT: "flag",
        sc.CONFESSION_STATUS: "ok",
        sc.CONFESSION_SHORTCUT_COUNT: 1,
        sc.CONFESSION_UNCERTAINTY_COUNT: 1,
        sc.CONFESSION_OBJECTIVE_COUNT: 3,
        sc.CONFESSION_EPISODE_TOOL_CALL_COUNT: 2,
        sc.CONFESSION_DISCREPANCY_COUNT: len(confession.discrepancies),
        sc.CONFESSION_FINDING_COUNT: len(confession.findings),
        sc.CONFESSION_REASON_COUNT: len(confession.reasons),
        sc.GEN_AI_REQUEST_MODEL: "scripted-marker-confessor",
        sc.CONFESSION_MODEL_NAME: "scripted-marker-confessor",
        sc.GEN_AI_AGENT_NAME: "coder",
        sc.CONFESSION_ID: confession.id,
        sc.CONFESSION_EVALUATED_SPAN_ID: format(parent.get_span_context().span_id, "016x"),
    }
    assert {k: attrs.get(k) for k in expected} == expected
    counts = {label: attrs[sc.objective_count_attribute(label)] for label in COMPLIANCE_LABELS}
    assert counts == {
        "not_complied_claimed_compliance": 0,
        "not_complied_not_reported": 1,
        "not_complied_reported": 0,
        "unsure_complied_not_reported": 0,
        "unsure_complied_reported": 0,
        "nearly_complied": 1,
        "fully_complied": 1,
    }
    assert confession.findings, "the rigged timer must produce audit findings"
    assert attrs[sc.CONFESSION_FINDING_KINDS] == tuple(
        sorted({f.kind for f in confession.findings})
    )
    assert span.status.status_code is StatusCode.UNSET

    # The evaluation result belongs to the evaluated operation, the agent span: a log record
    # in its context (the span-event copy is opt-in). Its label reads the score (grade 2
    # fails) and the verdict has its own attribute. A flag delivers: no status on the agent.
    assert span.events == ()
    agent = next(s for s in span_exporter.get_finished_spans() if s.name == "agent")
    assert agent.events == ()
    assert agent.status.status_code is StatusCode.UNSET
    [log] = logs.get_finished_logs()
    assert log.log_record.event_name == "gen_ai.evaluation.result"
    assert log.log_record.span_id == parent.get_span_context().span_id
    assert dict(log.log_record.attributes or {}) == {
        "gen_ai.evaluation.name": "confession",
        "gen_ai.evaluation.score.value": 2.0,
        "gen_ai.evaluation.score.label": "fail",
        "confession.verdict": "flag",
        "confession.id": confession.id,
    }


def test_span_without_agent_name_and_without_parent_is_a_root(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    pipeline(telemetry, model=marker_confessor(grade=7)).run(marker_messages())
    span = one_confession_span(span_exporter)
    assert span.name == "confession"
    assert span.parent is None
    assert sc.GEN_AI_AGENT_NAME not in (span.attributes or {})


def test_no_content_leaks_anywhere_without_capture(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    log_exporter: tuple[LoggerProvider, InMemoryLogRecordExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    logger_provider, logs = log_exporter
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider, log_events=True, logger_provider=logger_provider
    )
    assert telemetry.capture_content == "NO_CONTENT"
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent"):
        confession = pipeline(telemetry).run(marker_messages(), agent_name="coder")
        # The markers do reach the confession itself: the test would be vacuous otherwise.
        assert confession.report is not None
        assert MARKERS["shortcut"] in confession.report.shortcuts[0]
        pipeline(telemetry, model=garbage_confessor()).run(marker_messages())

    spans = span_exporter.get_finished_spans()
    assert len(confession_spans(span_exporter)) == 2
    assert len(logs.get_finished_logs()) == 2
    texts = all_exported_text(spans, logs)
    assert texts
    assert leaked(texts) == []
    for span in confession_spans(span_exporter):
        for key in (sc.CONFESSION_REPORT, sc.INPUT_VALUE, sc.OUTPUT_VALUE, sc.CONFESSION_ERROR):
            assert key not in (span.attributes or {})
        for event in span.events:
            assert sc.GEN_AI_EVALUATION_EXPLANATION not in (event.attributes or {})


def test_span_only_records_text_on_the_span_not_the_log_event(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    log_exporter: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    logger_provider, logs = log_exporter
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider,
        capture_content="SPAN_ONLY",
        log_events=True,
        logger_provider=logger_provider,
        span_event="confession",
    )
    pipeline(telemetry).run(marker_messages())
    span = one_confession_span(span_exporter)
    attrs = dict(span.attributes or {})
    report = ConfessionReport.model_validate_json(str(attrs[sc.CONFESSION_REPORT]))
    assert report == marker_report()
    assert attrs[sc.OUTPUT_VALUE] == attrs[sc.CONFESSION_REPORT]
    assert attrs[sc.OUTPUT_MIME_TYPE] == "application/json"
    assert MARKERS["answer"] in str(attrs[sc.INPUT_VALUE])
    explanation = str(span.events[0].attributes[sc.GEN_AI_EVALUATION_EXPLANATION])  # type: ignore[index]
    for key in ("objective", "analysis", "shortcut", "uncertainty"):
        assert MARKERS[key] in explanation

    [log] = logs.get_finished_logs()
    assert log.log_record.event_name == "gen_ai.evaluation.result"
    assert leaked(all_exported_text([], logs)) == []


def test_event_only_records_text_on_the_log_event_only(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    log_exporter: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    logger_provider, logs = log_exporter
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider,
        capture_content="EVENT_ONLY",
        log_events=True,
        logger_provider=logger_provider,
    )
    pipeline(telemetry).run(marker_messages())
    span = one_confession_span(span_exporter)
    assert leaked(all_exported_text([span])) == []
    [log] = logs.get_finished_logs()
    record = log.log_record
    assert record.event_name == "gen_ai.evaluation.result"
    # No enclosing agent span here: the confession span is the evaluated operation's stand-in.
    assert record.span_id == span.context.span_id
    assert record.trace_id == span.context.trace_id
    attrs = dict(record.attributes or {})
    assert attrs[sc.GEN_AI_EVALUATION_NAME] == "confession"
    assert attrs[sc.GEN_AI_EVALUATION_SCORE_VALUE] == 2.0
    assert attrs[sc.GEN_AI_EVALUATION_SCORE_LABEL] == "fail"
    assert attrs[sc.CONFESSION_VERDICT] == "flag"
    assert MARKERS["shortcut"] in str(attrs[sc.GEN_AI_EVALUATION_EXPLANATION])


@pytest.mark.parametrize(
    ("env", "argument", "expected"),
    [
        (None, None, "NO_CONTENT"),
        ("SPAN_AND_EVENT", None, "SPAN_AND_EVENT"),
        ("span_only", None, "SPAN_ONLY"),
        ("true", None, "SPAN_AND_EVENT"),
        ("SPAN_AND_EVENT", "NO_CONTENT", "NO_CONTENT"),
        ("SPAN_AND_EVENT", False, "NO_CONTENT"),
        (None, True, "SPAN_AND_EVENT"),
        ("NO_CONTENT", "EVENT_ONLY", "EVENT_ONLY"),
    ],
)
def test_capture_mode_follows_the_env_and_the_argument_overrides_it(
    monkeypatch: pytest.MonkeyPatch, env: str | None, argument: Any, expected: str
) -> None:
    if env is None:
        monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    else:
        monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, env)
    assert ConfessionTelemetry(capture_content=argument).capture_content == expected


def test_env_capture_mode_records_text(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, "SPAN_ONLY")
    pipeline(ConfessionTelemetry(tracer_provider=tracer_provider)).run(marker_messages())
    assert leaked(all_exported_text(span_exporter.get_finished_spans()))


def test_invalid_configuration_is_rejected_naming_the_valid_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match="SPAN_AND_EVENT"):
        ConfessionTelemetry(capture_content="EVERYTHING")  # type: ignore[arg-type]
    monkeypatch.setenv(sc.CAPTURE_CONTENT_ENV, "loud")
    with pytest.raises(ConfigurationError, match="NO_CONTENT"):
        ConfessionTelemetry()
    with pytest.raises(ConfigurationError, match="max_attribute_length"):
        ConfessionTelemetry(capture_content=False, max_attribute_length=3)
    with pytest.raises(ConfigurationError, match="redact"):
        ConfessionTelemetry(capture_content=False, redact="no")  # type: ignore[arg-type]


def test_redaction_runs_on_every_string_before_recording(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    log_exporter: tuple[LoggerProvider, InMemoryLogRecordExporter],
) -> None:
    seen: list[str] = []

    def redact(text: str) -> str:
        seen.append(text)
        return text.replace("MARKER", "[REDACTED]")

    logger_provider, logs = log_exporter
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider,
        capture_content="SPAN_AND_EVENT",
        redact=redact,
        log_events=True,
        logger_provider=logger_provider,
    )
    pipeline(telemetry).run(marker_messages())
    texts = all_exported_text(span_exporter.get_finished_spans(), logs)
    assert leaked(texts) == []
    assert any("[REDACTED]-SHORTCUT" in t for t in texts)
    assert any("[REDACTED]-ANSWER" in t for t in texts)
    assert any(MARKERS["analysis"] in s for s in seen)


def test_a_failing_redaction_hook_records_a_placeholder_and_never_raises(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    def redact(text: str) -> str:
        raise RuntimeError("redactor down")

    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider, capture_content=True, redact=redact
    )
    confession = pipeline(telemetry).run(marker_messages())
    assert confession.status == "ok"
    texts = all_exported_text(span_exporter.get_finished_spans())
    assert leaked(texts) == []
    assert any("[redaction failed]" in t for t in texts)


def test_every_recorded_string_is_bounded(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    long_shortcut = "x" * 10_000
    report = marker_report().model_copy(update={"shortcuts": [long_shortcut]})
    model = ScriptedChatModel(respond=report_responder(lambda _m: report))
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider, capture_content=True, max_attribute_length=200
    )
    pipeline(telemetry, model=model).run(marker_messages(), agent_name="a" * 500)
    texts = all_exported_text(confession_spans(span_exporter))
    assert max(len(t) for t in texts) <= 200
    assert any(t.endswith("…[truncated]") for t in texts)


def test_a_failed_confession_yields_an_error_span_without_its_text(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider, capture_content=False, span_event="agent"
    )
    confession = pipeline(telemetry, model=garbage_confessor()).run(marker_messages())
    assert confession.status == "error"
    span = one_confession_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    attrs = dict(span.attributes or {})
    assert attrs[sc.CONFESSION_STATUS] == "error"
    assert attrs[sc.ERROR_TYPE]
    assert sc.CONFESSION_GRADE not in attrs
    assert span.status.description == attrs[sc.ERROR_TYPE]
    [event] = span.events  # no agent span: the copy stays on the confession span
    assert event.attributes is not None
    assert sc.GEN_AI_EVALUATION_SCORE_VALUE not in event.attributes
    assert sc.GEN_AI_EVALUATION_SCORE_LABEL not in event.attributes  # no score to read
    assert event.attributes[sc.CONFESSION_VERDICT] == confession.verdict
    assert "lol" not in " ".join(all_exported_text([span]))


def test_a_model_exception_becomes_an_error_type_naming_its_class(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    def boom(_messages: list[BaseMessage], _tools: list[dict[str, Any]]) -> str:
        raise ConnectionError("provider unreachable")

    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider, capture_content=True)
    pipeline(telemetry, model=ScriptedChatModel(respond=boom)).run(marker_messages())
    span = one_confession_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[sc.ERROR_TYPE] == "ConnectionError"
    assert "provider unreachable" in str((span.attributes or {})[sc.CONFESSION_ERROR])


def test_an_exception_inside_the_span_marks_it_and_propagates(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    with pytest.raises(KeyError), telemetry.span(agent_name="x"):
        raise KeyError("secret MARKER-IN-EXCEPTION")
    [span] = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[sc.ERROR_TYPE] == "KeyError"
    assert leaked(all_exported_text([span])) == []


class _BrokenSpan(NonRecordingSpan):
    def set_attributes(self, attributes: Any) -> None:
        raise RuntimeError("exporter is dead")

    def set_attribute(self, key: str, value: Any) -> None:
        raise RuntimeError("exporter is dead")

    def add_event(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("exporter is dead")

    def end(self, end_time: int | None = None) -> None:
        raise RuntimeError("exporter is dead")

    def is_recording(self) -> bool:
        return True


class _BrokenTracer(trace.NoOpTracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return _BrokenSpan(trace.INVALID_SPAN_CONTEXT)


class _BrokenProvider(trace.NoOpTracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _BrokenTracer()


def test_a_broken_tracer_never_crashes_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=_BrokenProvider(), capture_content=True)
    confession = pipeline(telemetry).run(marker_messages())
    assert confession.status == "ok"
    assert confession.verdict == "flag"
    assert "could not record the confession" in caplog.text


def test_without_an_sdk_everything_is_a_no_op() -> None:
    telemetry = ConfessionTelemetry(tracer_provider=trace.NoOpTracerProvider())
    confession = pipeline(telemetry).run(marker_messages())
    assert confession.verdict == "flag"


class _RunCollector(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.runs.append(
            {
                "name": kwargs.get("name"),
                "run_id": run_id,
                "parent_run_id": parent_run_id,
                "tags": tags or [],
                "metadata": metadata or {},
            }
        )


@pytest.mark.parametrize(("grade", "flagged"), [(2, True), (7, False)])
def test_mark_run_flags_the_open_agent_span_and_tags_the_langchain_run(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    grade: int,
    flagged: bool,
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    collector = _RunCollector()
    tracer = tracer_provider.get_tracer("test")
    model = marker_confessor(grade) if flagged else denying_confessor()
    clean: list[BaseMessage] = [
        HumanMessage("Run the tests."),
        AIMessage(content="", tool_calls=[{"name": "run_tests", "args": {}, "id": "c1"}]),
        ToolMessage("1 failed", tool_call_id="c1"),
        AIMessage("1 test fails; I did not change anything."),
    ]
    messages = marker_messages() if flagged else clean

    def step(_payload: dict[str, Any], config: RunnableConfig) -> str:
        return pipeline(telemetry, model=model).run(messages, config=config).verdict

    with tracer.start_as_current_span("agent"):
        verdict = RunnableLambda(step, name="agent_step").invoke(
            {}, config={"callbacks": [collector]}
        )
    assert verdict == ("flag" if flagged else "pass")
    agent = next(s for s in span_exporter.get_finished_spans() if s.name == "agent")
    confession = one_confession_span(span_exporter)
    assert (agent.attributes or {}).get(sc.CONFESSION_FLAGGED) is (True if flagged else None)
    assert sc.CONFESSION_FLAGGED not in (confession.attributes or {})

    verdict_runs = [r for r in collector.runs if r["name"] == sc.LANGCHAIN_RUN_NAME]
    if not flagged:
        assert verdict_runs == []
        return
    [run] = verdict_runs
    outer = next(r for r in collector.runs if r["name"] == "agent_step")
    assert run["parent_run_id"] == outer["run_id"]
    assert {"confession:flagged", "confession:verdict:flag"} <= set(run["tags"])
    assert run["metadata"]["confession_verdict"] == "flag"
    assert run["metadata"]["confession_grade"] == grade


def test_recording_inside_the_span_flags_the_parent_not_the_confession(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider, tag_langchain_run=False)
    halted = Confession(status="ok", report=marker_report(), verdict="halt", reasons=["r"])
    episode = extract_episode(marker_messages())
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent"), telemetry.span(episode=episode):
        telemetry(halted)  # the recording sink, as the pipeline delivers it
    agent = next(s for s in span_exporter.get_finished_spans() if s.name == "agent")
    assert (agent.attributes or {})[sc.CONFESSION_FLAGGED] is True
    assert (agent.attributes or {})[sc.CONFESSION_VERDICT] == "halt"
    assert sc.CONFESSION_FLAGGED not in (one_confession_span(span_exporter).attributes or {})


def test_run_tagging_never_breaks_the_run_on_a_broken_config() -> None:
    from langchain_core.runnables.config import var_child_runnable_config

    from confessional import failure_counts

    broken = var_child_runnable_config.set({"callbacks": object()})  # type: ignore[typeddict-item]
    try:
        failed = pipeline(
            ConfessionTelemetry(tracer_provider=trace.NoOpTracerProvider()),
            model=marker_confessor(2),
        ).run(marker_messages())
    finally:
        var_child_runnable_config.reset(broken)
    # The model call fails on the broken callbacks; tagging the failed run fails too, and
    # both are counted while the run goes on.
    assert failed.status == "error"
    stages = {stage for stage, _cause in failure_counts()}
    assert {"confession", "sink"} <= stages


@pytest.mark.asyncio
async def test_async_confessions_nest_under_their_own_parent_across_awaits(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    tracer = tracer_provider.get_tracer("test")

    async def one(name: str) -> tuple[int, Confession]:
        with tracer.start_as_current_span(name) as parent:
            await asyncio.sleep(0)
            confession = await pipeline(telemetry).arun(marker_messages(), agent_name=name)
            return parent.get_span_context().span_id, confession

    results = await asyncio.gather(one("agent-a"), one("agent-b"))
    spans = {s.name: s for s in confession_spans(span_exporter)}
    assert set(spans) == {"confession agent-a", "confession agent-b"}
    for name, (parent_id, confession) in zip(("agent-a", "agent-b"), results, strict=True):
        span = spans[f"confession {name}"]
        assert span.parent is not None
        assert span.parent.span_id == parent_id
        assert (span.attributes or {})[sc.CONFESSION_ID] == confession.id
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_captured_parent_context_is_used_later(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent") as agent:
        parent = telemetry.current_parent()
    with telemetry.span(parent=parent) as span:
        span.record(Confession(status="ok", report=marker_report()), None)
    confession = one_confession_span(span_exporter)
    assert confession.parent is not None
    assert confession.parent.span_id == agent.get_span_context().span_id


def test_native_annotation_sinks_need_their_extra_and_are_plain_callables() -> None:
    import importlib.util

    from confessional import MissingExtraError
    from confessional.annotations import langfuse_score, langsmith_feedback

    if importlib.util.find_spec("langfuse") is None:
        with pytest.raises(MissingExtraError, match=r"confessional\[langfuse\]"):
            langfuse_score()

    sent: list[dict[str, Any]] = []

    class FakeLangSmith:
        def create_feedback(self, run_id: Any, **kwargs: Any) -> None:
            sent.append({"run_id": run_id, **kwargs})

    sink = langsmith_feedback(client=FakeLangSmith())
    flagged = Confession(status="ok", report=marker_report(), verdict="flag", reasons=["r"])
    sink(flagged)  # no current LangSmith run: nothing is sent, nothing raises
    assert sent == []


@pytest.mark.parametrize("placement", ["agent", "confession", "off"])
def test_the_evaluation_event_is_a_log_record_on_the_agent_span_with_a_configurable_copy(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    log_exporter: tuple[LoggerProvider, InMemoryLogRecordExporter],
    placement: Any,
) -> None:
    logger_provider, logs = log_exporter
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider, logger_provider=logger_provider, span_event=placement
    )
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent") as agent_span:
        confession = pipeline(telemetry, model=marker_confessor(grade=6)).run(marker_messages())
    [log] = logs.get_finished_logs()
    assert log.log_record.event_name == "gen_ai.evaluation.result"
    assert log.log_record.span_id == agent_span.get_span_context().span_id
    attrs = dict(log.log_record.attributes or {})
    assert attrs[sc.GEN_AI_EVALUATION_SCORE_LABEL] == "pass"
    assert attrs[sc.CONFESSION_VERDICT] == confession.verdict
    agent = next(s for s in span_exporter.get_finished_spans() if s.name == "agent")
    ours = one_confession_span(span_exporter)
    copies = {"agent": len(agent.events), "confession": len(ours.events)}
    assert copies == {
        "agent": {"agent": 1, "confession": 0, "off": 0}[placement],
        "confession": {"agent": 0, "confession": 1, "off": 0}[placement],
    }


def test_the_span_event_copy_is_off_by_default() -> None:
    assert ConfessionTelemetry().span_event == "off"


def test_a_halted_run_marks_its_agent_span_with_an_error_status(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    policy = ConfessionPolicy(on_violation="end")
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent"):
        confession = pipeline(telemetry, policy=policy).run(marker_messages())
    assert confession.verdict == "halt"
    agent = next(s for s in span_exporter.get_finished_spans() if s.name == "agent")
    assert agent.status.status_code is StatusCode.ERROR
    assert agent.status.description == sc.STATUS_HALTED
    attrs = dict(agent.attributes or {})
    assert attrs[sc.ERROR_TYPE] == sc.ERROR_TYPE_HALTED
    assert attrs[sc.CONFESSION_VERDICT] == "halt"
    # The confession itself worked: its own span is not an error.
    assert one_confession_span(span_exporter).status.status_code is StatusCode.UNSET


def test_span_event_placement_is_validated() -> None:
    with pytest.raises(ConfigurationError, match=r"span_event='agents' is not valid.*'agent'"):
        ConfessionTelemetry(span_event="agents")  # type: ignore[arg-type]


def test_evaluation_records_reach_a_logs_sdk_set_after_the_telemetry(
    log_exporter: tuple[LoggerProvider, InMemoryLogRecordExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The default global providers: the API's no-op ones until the application sets an SDK.
    telemetry = ConfessionTelemetry()
    logger_provider, logs = log_exporter
    pipeline(telemetry).run(marker_messages())
    assert logs.get_finished_logs() == ()

    # The application sets its SDK later (as set_logger_provider would, undone after).
    from opentelemetry._logs import _internal as logs_api

    monkeypatch.setattr(logs_api, "_LOGGER_PROVIDER", logger_provider)
    confession = pipeline(telemetry).run(marker_messages())
    [record] = logs.get_finished_logs()
    assert record.log_record.attributes is not None
    assert record.log_record.attributes[sc.CONFESSION_ID] == confession.id
