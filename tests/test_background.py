"""Background mode on every surface: the run returns untouched, the report arrives later."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.surfaces_fixtures import (
    CHEAT_ANSWER,
    MODES,
    Mode,
    ask,
    first_objective,
    invoke,
    make_graph,
)

from confessional import (
    Confession,
    ConfessionPolicy,
    ConfessionTelemetry,
    ConfigurationError,
    flush_background,
)
from confessional.langchain import ConfessionCallbackHandler, ConfessionMiddleware
from confessional.testing import cheating_agent, example_tools


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", ["middleware", "node", "callback"])
def test_background_confession_reaches_sinks_after_the_run(
    surface: str,
    mode: Mode,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    received: list[Confession] = []
    options: dict[str, Any] = {
        "sinks": [received.append],
        "background": True,
        "telemetry": ConfessionTelemetry(tracer_provider=tracer_provider),
    }
    model = cheating_agent()
    config = None
    if surface == "middleware":
        runnable = create_agent(
            model, example_tools(), middleware=[ConfessionMiddleware(**options)]
        )
    elif surface == "node":
        runnable = make_graph(model, **options)
    else:
        runnable = create_agent(model, example_tools())
        config = {"callbacks": [ConfessionCallbackHandler(model, **options)]}

    marker = f"bg-{surface}-{mode}"
    with tracer_provider.get_tracer("test").start_as_current_span("user agent run"):
        result = invoke(runnable, ask(marker), config, mode)

    assert result["messages"][-1].content == CHEAT_ANSWER  # delivered untouched
    assert not result.get("confessions")  # background mode writes nothing to state
    assert flush_background(timeout=10)
    assert len(received) == 1
    assert received[0].verdict == "flag"
    assert first_objective(received[0]).endswith(f"run={marker}")
    spans = span_exporter.get_finished_spans()
    [confession_span] = [s for s in spans if s.name.startswith("confession")]
    [root] = [s for s in spans if s.name == "user agent run"]
    # It finished after the run, yet it nests in the run's trace.
    assert confession_span.context.trace_id == root.context.trace_id


def test_background_with_a_halting_policy_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="background=True cannot halt"):
        ConfessionMiddleware(policy=ConfessionPolicy(on_violation="end"), background=True)
