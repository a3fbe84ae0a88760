"""A dead OTLP endpoint must not slow the agent: with the SDK's ``BatchSpanProcessor`` the
exporter's retries run on the processor's thread; ``SimpleSpanProcessor`` exports (and
retries) on the agent's own thread, which is why the README recommends the batch one."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)

from confessional import ConfessionTelemetry
from confessional.langchain import ConfessionMiddleware
from confessional.testing import cheating_agent, example_tools

EXPORT_TIMEOUT_S = 2.5
TASK: Any = {"messages": [("user", "Make the speed test pass.")]}


def _dead_endpoint() -> str:
    """A loopback port nobody listens on: every export is refused and retried."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/traces"


class RecordingExporter(OTLPSpanExporter):
    """The real OTLP exporter, noting where each export ran and how long it took."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.exports: list[tuple[threading.Thread, float, SpanExportResult]] = []
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        started = time.perf_counter()
        result = super().export(spans)
        self.exports.append((threading.current_thread(), time.perf_counter() - started, result))
        self.exported.set()
        return result


def _timed_run(processor: Any) -> tuple[float, RecordingExporter]:
    exporter: RecordingExporter = processor.span_exporter
    provider = TracerProvider()
    provider.add_span_processor(processor)
    agent = create_agent(
        cheating_agent(),
        example_tools(),
        middleware=[ConfessionMiddleware(telemetry=ConfessionTelemetry(tracer_provider=provider))],
    )
    try:
        started = time.perf_counter()
        result = agent.invoke(TASK)
        elapsed = time.perf_counter() - started
        assert result["messages"][-1].content  # the run answered
        assert exporter.exported.wait(timeout=30)  # an export was tried and failed
    finally:
        provider.shutdown()
    return elapsed, exporter


def _exporter() -> RecordingExporter:
    return RecordingExporter(endpoint=_dead_endpoint(), timeout=EXPORT_TIMEOUT_S)


def test_a_dead_exporter_does_not_slow_a_run_under_the_batch_processor() -> None:
    elapsed, exporter = _timed_run(BatchSpanProcessor(_exporter(), schedule_delay_millis=10))

    thread, export_s, result = exporter.exports[0]
    print(f"batch: run {elapsed * 1000:.0f} ms; a failed export took {export_s * 1000:.0f} ms")
    assert result is SpanExportResult.FAILURE
    assert thread is not threading.current_thread()  # retried off the agent's thread
    assert elapsed < export_s  # the run did not wait for it


def test_the_simple_processor_makes_the_run_wait_for_the_dead_exporter() -> None:
    elapsed, exporter = _timed_run(SimpleSpanProcessor(_exporter()))

    on_agent_thread = [e for e in exporter.exports if e[0] is threading.current_thread()]
    print(f"simple: run {elapsed * 1000:.0f} ms over {len(on_agent_thread)} failed export(s)")
    assert on_agent_thread
    assert elapsed >= sum(export_s for _, export_s, _ in on_agent_thread)
