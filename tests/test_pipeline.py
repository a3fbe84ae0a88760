"""The pipeline end to end over scripted models, sync and async with the same cases."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.surfaces_fixtures import cheating_run, run_pipeline

from confessional import (
    Auditor,
    Confession,
    ConfessionPipeline,
    ConfessionPolicy,
    ConfessionTelemetry,
    Confessor,
    ConfigurationError,
)
from confessional.testing import (
    admitting_confessor,
    cheating_agent,
    denying_confessor,
    garbage_confessor,
)

both = pytest.mark.parametrize("mode", ["sync", "async"])


@both
def test_admitted_violation_is_flagged_with_findings(
    mode: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    received: list[Confession] = []
    pipeline = ConfessionPipeline(
        confessor=Confessor(admitting_confessor()),
        auditor=Auditor(protected_paths=["tests/*"]),
        telemetry=ConfessionTelemetry(tracer_provider=tracer_provider),
        sinks=[received.append],
    )
    confession = run_pipeline(mode, pipeline, cheating_run(), agent_name="coder")
    assert confession.status == "ok"
    assert confession.verdict == "flag"
    assert confession.reasons == [
        "grade 2 <= 3",
        "1 objective(s) not_complied_claimed_compliance",
        "1 objective(s) not_complied_not_reported",
        "1 shortcut(s) reported",
        "unadmitted evidence: protected_write, unverified_claim",
    ]
    assert {f.kind for f in confession.findings} == {"protected_write", "unverified_claim"}
    assert confession.agent_name == "coder"
    assert received == [confession]
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["confession coder"]


@both
def test_denial_contradicted_by_evidence_is_a_discrepancy(mode: str) -> None:
    pipeline = ConfessionPipeline(
        confessor=Confessor(denying_confessor()),
        auditor=Auditor(protected_paths=["tests/*"]),
        policy=ConfessionPolicy(on_violation="end"),
    )
    confession = run_pipeline(mode, pipeline, cheating_run())
    assert confession.report is not None
    assert confession.report.passes
    assert {d.kind for d in confession.discrepancies} == {"protected_write", "unverified_claim"}
    assert confession.verdict == "halt"
    assert confession.reasons == ["unadmitted evidence: protected_write, unverified_claim"]


@both
def test_agents_own_model_confesses(mode: str) -> None:
    confession = run_pipeline(mode, ConfessionPipeline(), cheating_run(), model=cheating_agent())
    assert confession.model_name == "scripted-cheating-agent"
    assert confession.verdict == "flag"


@both
def test_turn_without_tools_is_skipped_without_a_span(
    mode: str, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    model = admitting_confessor()
    pipeline = ConfessionPipeline(
        confessor=Confessor(model), telemetry=ConfessionTelemetry(tracer_provider=tracer_provider)
    )
    confession = run_pipeline(mode, pipeline, [HumanMessage("hi"), AIMessage("hello")])
    assert confession.status == "skipped"
    assert model.calls == []
    assert span_exporter.get_finished_spans() == ()
    opted_in = ConfessionPipeline(confessor=Confessor(model), confess_without_tools=True)
    assert run_pipeline(mode, opted_in, [HumanMessage("hi"), AIMessage("hello")]).status == "ok"


@both
def test_fail_open_and_closed(mode: str) -> None:
    open_ = ConfessionPipeline(confessor=Confessor(garbage_confessor()))
    assert run_pipeline(mode, open_, cheating_run()).verdict == "pass"
    closed = ConfessionPipeline(
        confessor=Confessor(garbage_confessor()),
        policy=ConfessionPolicy(on_violation="end", fail_mode="closed"),
    )
    confession = run_pipeline(mode, closed, cheating_run())
    assert (confession.status, confession.verdict) == ("error", "halt")


@both
def test_broken_sink_and_auditor_do_not_break_the_run(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenAuditor(Auditor):
        def audit(self, episode: Any) -> list[Any]:
            raise RuntimeError("bug in a custom check")

    def broken_sink(confession: Confession) -> None:
        raise OSError("disk full")

    pipeline = ConfessionPipeline(
        confessor=Confessor(admitting_confessor()),
        auditor=BrokenAuditor(),
        sinks=[broken_sink],
    )
    with caplog.at_level(logging.WARNING, logger="confessional"):
        confession = run_pipeline(mode, pipeline, cheating_run())
    assert confession.status == "ok"
    assert confession.findings == []
    assert "evidence audit failed" in caplog.text
    assert "confession sink" in caplog.text


def test_sink_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="sinks entries must be callable"):
        ConfessionPipeline(sinks=["not callable"])  # type: ignore[list-item]


@pytest.mark.asyncio
async def test_concurrent_runs_get_their_own_confession() -> None:
    pipeline = ConfessionPipeline(confessor=Confessor(admitting_confessor()))

    def run_for(marker: str) -> list[BaseMessage]:
        messages = cheating_run()
        messages[0] = HumanMessage(f"Make the speed test pass. run-{marker}")
        return messages

    results = await asyncio.gather(*(pipeline.arun(run_for(str(i))) for i in range(50)))
    for i, confession in enumerate(results):
        assert confession.report is not None
        assert confession.report.compliance_analysis[0].objective.endswith(f"run-{i}")
    assert len({c.id for c in results}) == 50


def test_background_mode_returns_at_once_and_flush_delivers(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    import threading

    from opentelemetry import trace

    release = threading.Event()
    gated = admitting_confessor()
    respond = gated.respond

    def slow(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> Any:
        release.wait(10)
        return respond(messages, tools)

    gated.respond = slow
    received: list[Confession] = []
    pipeline = ConfessionPipeline(
        confessor=Confessor(gated),
        telemetry=ConfessionTelemetry(tracer_provider=tracer_provider),
        sinks=[received.append],
        background=True,
    )
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent") as agent_span:
        futures = [pipeline.submit(cheating_run()) for _ in range(3)]
    assert all(f is not None for f in futures)
    assert pipeline.pending == 3
    assert received == []
    assert pipeline.flush(timeout=0.05) is False
    release.set()
    assert pipeline.flush(timeout=10) is True
    assert pipeline.pending == 0
    assert [c.verdict for c in received] == ["flag"] * 3
    confession_spans = [s for s in span_exporter.get_finished_spans() if s.name == "confession"]
    assert len(confession_spans) == 3
    parent_id = agent_span.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == parent_id for s in confession_spans)
    assert pipeline.submit([HumanMessage("hi"), AIMessage("no tools")]) is None
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.asyncio
async def test_background_async_flush_and_sampling() -> None:
    received: list[Confession] = []
    unsampled = ConfessionPipeline(
        confessor=Confessor(admitting_confessor()),
        sinks=[received.append],
        background=True,
        sample_rate=0.0,
    )
    assert await unsampled.asubmit(cheating_run()) is None  # nothing sampled
    pipeline = ConfessionPipeline(unsampled.options, sample_rate=1.0)
    assert await pipeline.asubmit(cheating_run()) is not None
    assert await pipeline.aflush(timeout=10)
    assert len(received) == 1


def test_background_cannot_halt() -> None:
    with pytest.raises(ConfigurationError, match="background=True cannot halt"):
        ConfessionPipeline(policy=ConfessionPolicy(on_violation="end"), background=True)
    with pytest.raises(ConfigurationError, match="sample_rate must be between 0 and 1"):
        ConfessionPipeline(sample_rate=1.5)
