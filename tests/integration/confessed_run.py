"""A confessed agent run exported over OTLP/HTTP: the payload of both integration tests.

A real ``create_agent`` with scripted models (a cheating agent that confesses) and the real
``ConfessionMiddleware``, traced by OpenInference's LangChain instrumentor (which never sets
the current OTel span). The middleware confesses inside the model node that produced the
final answer, so the expected tree is ``confession coder -> model -> coder -> request``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from langchain.agents import create_agent
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from confessional import Confession, ConfessionTelemetry
from confessional.langchain import ConfessionMiddleware
from confessional.testing import cheating_agent, example_tools

ROOT_SPAN = "request"
HOOK_SPAN = "model"
AGENT_SPAN = "coder"
CONFESSION_SPAN = "confession coder"


@dataclass
class ExportedRun:
    trace_id: str
    """Hex, 32 characters."""
    confession: Confession


def export_confessed_run(
    endpoint: str,
    *,
    headers: dict[str, str] | None = None,
    service: str = "confessional-it",
    sinks: Sequence[Callable[[Confession], None]] = (),
) -> ExportedRun:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=10))
    )
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        middleware = ConfessionMiddleware(
            telemetry=ConfessionTelemetry(tracer_provider=provider),
            sinks=sinks,
        )
        agent = create_agent(
            cheating_agent(), example_tools(), middleware=[middleware], name="coder"
        )
        tracer = provider.get_tracer("integration-test")
        with tracer.start_as_current_span(ROOT_SPAN) as root:
            result = agent.invoke({"messages": [("user", "Make the speed test pass.")]})
        trace_id = format(root.get_span_context().trace_id, "032x")
    finally:
        instrumentor.uninstrument()
        provider.force_flush()
        provider.shutdown()
    [confession] = result["confessions"]
    return ExportedRun(trace_id, confession)
