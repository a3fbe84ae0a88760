"""Confession overhead per agent turn, as ratios to a bare agent measured in the same run.

    python benchmarks/overhead.py [--runs 300]

The models are scripted (no model latency), so the ratios isolate the plugin's own cost
(episode extraction, request building, the confession call through LangChain, parsing,
the audit, the policy, span recording) against its floor: one extra model call, which a
confession is. With a real provider the model call dominates; see latency.py.

Variants, each a ``create_agent`` turn with two tool calls:

- bare: no middleware (the baseline, 1.00x);
- no-op middleware: a ``wrap_model_call`` that only calls the model, the cost of any
  middleware;
- one extra model call: a middleware that calls the agent's model once more after the
  final answer, the floor of an inline confession;
- inline: ``ConfessionMiddleware`` with no evidence checks;
- inline + audit: ``ConfessionMiddleware()`` as shipped, every built-in check;
- inline + audit + OTel SDK: the same with spans recorded by a ``BatchSpanProcessor``;
- background: ``ConfessionMiddleware(background=True)``; its confessions are flushed after
  each turn, outside the timed turn (and before the next variant's).

Variants run interleaved, in a fresh random order each round. Wall time is what a user
waits; CPU time (the process's, all threads) is the same work measured without the
other processes of a busy machine, so its ratios are the steadier ones.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import _harness
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from confessional import Auditor, ConfessionTelemetry, flush_background
from confessional.langchain import ConfessionMiddleware
from confessional.testing import cheating_agent, example_tools

TASK: Any = {"messages": [("user", "Make the speed test pass.")]}

TARGETS: dict[str, float | None] = {
    "bare": None,
    "no-op middleware": None,
    "one extra model call": None,
    "inline": 1.20,
    "inline + audit": 1.25,
    "inline + audit + OTel SDK (batch)": None,
    "background": 1.05,
}


class NoOpMiddleware(AgentMiddleware[Any, Any, Any]):
    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        return handler(request)


class ExtraCallMiddleware(AgentMiddleware[Any, Any, Any]):
    """After the final answer, call the agent's model once more with the whole turn: the
    floor of an inline confession, which is that call plus the plugin's own work."""

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        response = handler(request)
        answer = response.result[-1]
        if isinstance(answer, AIMessage) and not answer.tool_calls:
            # Bound as the agent binds it, as a confession's replayed request is.
            model = request.model.bind_tools(request.tools, **request.model_settings)
            model.invoke([*request.messages, answer, HumanMessage("Anything to add?")])
        return response


def variants() -> dict[str, Callable[[], Any]]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    traced = ConfessionTelemetry(tracer_provider=provider)

    def agent(*middleware: AgentMiddleware[Any, Any, Any]) -> Callable[[], Any]:
        compiled = create_agent(cheating_agent(), example_tools(), middleware=list(middleware))
        return lambda: compiled.invoke(TASK)

    traced_run = agent(ConfessionMiddleware(telemetry=traced))

    def traced_and_cleared() -> Any:
        result = traced_run()
        exporter.clear()
        return result

    return {
        "bare": agent(),
        "no-op middleware": agent(NoOpMiddleware()),
        "one extra model call": agent(ExtraCallMiddleware()),
        "inline": agent(ConfessionMiddleware(auditor=Auditor(include_defaults=False))),
        "inline + audit": agent(ConfessionMiddleware()),
        "inline + audit + OTel SDK (batch)": traced_and_cleared,
        "background": agent(ConfessionMiddleware(background=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed turns per variant")
    args = parser.parse_args()
    timings = _harness.interleaved(variants(), args.runs, after_each=flush_background)
    wall_base = _harness.median_ms(timings["bare"].wall)
    cpu_base = _harness.median_ms(timings["bare"].cpu)
    rows = []
    for name, samples in timings.items():
        wall, cpu = _harness.median_ms(samples.wall), _harness.median_ms(samples.cpu)
        rows.append(
            [
                name,
                f"{wall:.2f}",
                f"x{wall / wall_base:.2f}",
                f"{cpu:.2f}",
                f"x{cpu / cpu_base:.2f}",
                _harness.verdict(round(wall / wall_base, 2), TARGETS[name]),
                _harness.verdict(round(cpu / cpu_base, 2), TARGETS[name]),
            ]
        )
    _harness.table(
        [
            "variant",
            "wall ms",
            "wall ratio",
            "CPU ms",
            "CPU ratio",
            "target (wall)",
            "target (CPU)",
        ],
        rows,
        f"overhead: median of {args.runs} turns per variant (2 tool calls each), ratios to "
        f"bare; {_harness.machine()}",
    )


if __name__ == "__main__":
    main()
