"""Confession overhead per agent turn, as ratios against a baseline measured in the same run.

The models are scripted (no model latency), so the ratios isolate confessional's own cost:
episode extraction, request building, the confession call through LangChain, parsing, the
audit, the policy and span recording. With a real provider the confession's model call,
one extra call per tool-using turn, dominates everything measured here.

    .venv/bin/python benchmarks/overhead.py [--runs 200]

Variants run interleaved, in a fresh random order each round, so machine noise and
garbage collection hit them alike.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from langchain.agents import create_agent
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from confessional import ConfessionTelemetry, flush_background
from confessional.langchain import ConfessionMiddleware
from confessional.testing import cheating_agent, example_tools

TASK: Any = {"messages": [("user", "Make the speed test pass.")]}


def variants() -> dict[str, Callable[[], Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plain = create_agent(cheating_agent(), example_tools())
    confessed = create_agent(cheating_agent(), example_tools(), middleware=[ConfessionMiddleware()])
    traced = create_agent(
        cheating_agent(),
        example_tools(),
        middleware=[ConfessionMiddleware(telemetry=ConfessionTelemetry(tracer_provider=provider))],
    )
    background = create_agent(
        cheating_agent(), example_tools(), middleware=[ConfessionMiddleware(background=True)]
    )

    def traced_run() -> Any:
        result = traced.invoke(TASK)
        exporter.clear()
        return result

    return {
        "baseline: create_agent, no confession": lambda: plain.invoke(TASK),
        "ConfessionMiddleware (flag)": lambda: confessed.invoke(TASK),
        "ConfessionMiddleware + OTel SDK spans": traced_run,
        "ConfessionMiddleware background=True": lambda: background.invoke(TASK),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    runs = variants()
    for run in runs.values():  # warm-up: imports, graph compilation caches
        run()
    flush_background()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    shuffle = random.Random(0).shuffle
    for _ in range(args.runs):
        shuffle(order)
        for name in order:
            started = time.perf_counter()
            runs[name]()
            timings[name].append(time.perf_counter() - started)
        # Background confessions finish between rounds, outside the timed agent turns.
        flush_background()
    baseline = statistics.median(next(iter(timings.values())))
    print(f"{args.runs} runs per variant, median wall time per agent turn (2 tool calls)")
    for name, samples in timings.items():
        median = statistics.median(samples)
        print(f"  {name:<40} {median * 1000:7.2f} ms   x{median / baseline:.2f}")


if __name__ == "__main__":
    main()
