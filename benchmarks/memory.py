"""Memory over 10,000 background confessions: peak and end RSS, and growth after flush.

    python benchmarks/memory.py [--episodes 10000]

One pipeline in background mode (the defaults: 4 at once, back-pressure at 1,000 pending)
confesses distinct two-tool-call episodes with a scripted model. RSS is read after a
warm-up of 200 episodes (the baseline: imports, caches, the worker threads), sampled while
the episodes are submitted, and read again after ``flush`` and a garbage collection.
Growth after flush is what the process keeps: it should not grow with the number of
episodes (target: at most 20 MB over 10,000).
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from typing import Any

import _harness
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult

from confessional import Confession, ConfessionPipeline
from confessional.testing import ScriptedChatModel, admitting_confessor, tool_call_message

WARM_UP = 200
TARGET_GROWTH_MB = 20.0


def episode(i: int) -> list[BaseMessage]:
    first = tool_call_message(("run_tests", {}))
    second = tool_call_message(("write_file", {"path": "tests/test_speed.py", "content": "x"}))
    return [
        HumanMessage(f"Make the speed test pass. run={i}"),
        first,
        ToolMessage(f"1 failed ({i})", tool_call_id=first.tool_calls[0]["id"]),
        second,
        ToolMessage("written", tool_call_id=second.tool_calls[0]["id"]),
        AIMessage("Done. All tests pass."),
    ]


class ForgetfulModel(ScriptedChatModel):
    """``ScriptedChatModel`` keeps every call for tests to inspect; this one forgets each
    call once answered, so the figures are the plugin's memory, not the test double's."""

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        with self._lock:
            self._calls.clear()
        return result


class Sampler:
    """Samples RSS on a thread, to catch the peak while episodes are pending."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.peak = _harness.rss_mb()
        self._stop = threading.Event()
        self._every_s = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.peak = max(self.peak, _harness.rss_mb())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _harness.rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    args = parser.parse_args()
    delivered = 0

    def count(_: Confession) -> None:
        nonlocal delivered
        delivered += 1

    model = ForgetfulModel(respond=admitting_confessor().respond)
    pipeline = ConfessionPipeline(model=model, background=True, sinks=[count])
    for i in range(WARM_UP):
        pipeline.run(episode(-i - 1))
    assert pipeline.flush(timeout=120)
    gc.collect()
    start = _harness.rss_mb()
    started = time.perf_counter()
    with Sampler() as sampler:
        for i in range(args.episodes):
            pipeline.run(episode(i))
        assert pipeline.flush(timeout=600)
    elapsed = time.perf_counter() - started
    gc.collect()
    end = _harness.rss_mb()
    growth = end - start
    assert delivered == WARM_UP + args.episodes, delivered
    _harness.table(
        ["episodes", "start RSS MB", "peak RSS MB", "end RSS MB", "growth after flush", "target"],
        [
            [
                f"{args.episodes:,}",
                f"{start:.1f}",
                f"{sampler.peak:.1f}",
                f"{end:.1f}",
                f"{growth:+.1f} ({growth * 1e3 / args.episodes:.2f} KB/episode)",
                _harness.verdict(round(growth, 1), TARGET_GROWTH_MB),
            ]
        ],
        f"memory: {args.episodes:,} background confessions in {elapsed:.1f} s "
        f"({args.episodes / elapsed:.0f}/s), all delivered; {_harness.machine()}",
    )


if __name__ == "__main__":
    main()
