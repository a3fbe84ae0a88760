"""Shared by the recipes: a scripted agent with confessions, traced through OTLP/HTTP.

Scripted models only (no API key, no network beyond 127.0.0.1). Clearly labelled as such.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from langchain.agents import create_agent
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from confessional import Confession, ConfessionTelemetry
from confessional.langchain import ConfessionMiddleware
from confessional.testing import behaving_agent, cheating_agent, example_tools

REPO = Path(__file__).resolve().parents[1]
# The server start/stop helpers are shared with the integration tests.
sys.path.insert(0, str(REPO / "tests" / "integration"))


def run_scripted_agents(
    endpoint: str,
    *,
    headers: dict[str, str] | None = None,
    sinks: Sequence[Callable[[Confession], None]] = (),
    runs: int = 2,
) -> list[Confession]:
    """Run a cheating and a behaving scripted agent ``runs`` times each; export the traces."""
    provider = TracerProvider(resource=Resource.create({"service.name": "confessional-recipe"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint, headers=headers)))
    telemetry = ConfessionTelemetry(tracer_provider=provider)
    tracer = provider.get_tracer("recipe")
    confessions: list[Confession] = []
    try:
        for index in range(runs):
            for name, make in (("cheater", cheating_agent), ("behaver", behaving_agent)):
                model = make()
                middleware = ConfessionMiddleware(
                    model, telemetry=telemetry, sinks=sinks, agent_name=name
                )
                agent = create_agent(model, example_tools(), middleware=[middleware], name=name)
                with tracer.start_as_current_span(f"request {name} #{index}"):
                    result = agent.invoke({"messages": [("user", "Make the speed test pass.")]})
                confession = result["confessions"][-1]
                confessions.append(confession)
                print(f"[scripted] {name:8s} -> {confession.summary()}")
    finally:
        provider.force_flush()
        provider.shutdown()
    return confessions
