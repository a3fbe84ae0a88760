"""Time to answer with a 100 ms model, per confession mode, against the bare agent.

    python benchmarks/latency.py [--runs 20] [--latency-ms 100]

Every model call (the agent's and the confession's) takes ``--latency-ms``, asynchronously
(``ainvoke``), as a provider does; the turn makes two tool calls, so the bare agent waits
three model latencies. Targets:

- background (flag): at most 2% added to the time to answer;
- inline (blocking): one more model latency, plus at most 2%.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

import _harness
from langchain.agents import create_agent
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult

from confessional import flush_background
from confessional.langchain import ConfessionMiddleware
from confessional.testing import ScriptedChatModel, example_tools, scripted_agent, tool_call_message

TASK: Any = {"messages": [("user", "Make the speed test pass.")]}


class SlowModel(ScriptedChatModel):
    """A scripted model with a fixed latency per call, sync (sleep) and async (await)."""

    latency_s: float = 0.1

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(self.latency_s)
        return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self.latency_s)
        return super()._generate(messages, stop, None, **kwargs)


def slow_agent(latency_s: float) -> SlowModel:
    script = scripted_agent(
        [
            tool_call_message(("run_tests", {})),
            tool_call_message(
                ("write_file", {"path": "tests/test_speed.py", "content": "timer = 0\n"})
            ),
            AIMessage("Done. All tests pass."),
        ]
    )
    return SlowModel(respond=script.respond, latency_s=latency_s)


def variants(latency_s: float) -> dict[str, Callable[[], Any]]:
    def agent(**settings: Any) -> Callable[[], Any]:
        middleware = [ConfessionMiddleware(**settings)] if settings else []
        compiled = create_agent(slow_agent(latency_s), example_tools(), middleware=middleware)
        return lambda: asyncio.run(compiled.ainvoke(TASK))

    return {
        "bare": agent(),
        "background (flag)": agent(background=True),
        "inline (flag, blocking)": agent(policy=None),
        "inline, tool_round trigger": agent(trigger="tool_round"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed turns per mode")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="latency of each call")
    args = parser.parse_args()
    latency_ms = args.latency_ms
    timings = _harness.interleaved(
        variants(latency_ms / 1000), args.runs, after_each=flush_background
    )
    bare = _harness.median_ms(timings["bare"].wall)
    rows = []
    for name, samples in timings.items():
        median = _harness.median_ms(samples.wall)
        added = median - bare
        # Paired: the median of the differences to the bare turn of the same round (the
        # order is shuffled each round), far less disturbed by a busy machine.
        paired = _harness.median_ms(
            [t - b for t, b in zip(samples.wall, timings["bare"].wall, strict=True)]
        )
        if name == "background (flag)":
            pct = paired / bare * 100
            target = f"{pct:+.1f}% added; " + _harness.verdict(round(pct, 1), 2.0)
        elif name == "inline (flag, blocking)":
            beyond = (paired - latency_ms) / (bare + latency_ms) * 100
            target = f"latency + {beyond:.1f}%; " + _harness.verdict(round(beyond, 1), 2.0)
        else:
            target = "-"
        rows.append(
            [
                name,
                f"{median:.1f}",
                f"{added:+.1f}",
                f"{paired:+.1f}",
                f"{paired / latency_ms:+.2f}",
                f"x{median / bare:.3f}",
                target,
            ]
        )
    _harness.table(
        [
            "mode",
            "time to answer ms",
            "added ms",
            "added ms, paired",
            "added latencies",
            "ratio",
            "target",
        ],
        rows,
        f"latency: {args.runs} turns per mode, {latency_ms:g} ms per model call, "
        f"3 agent calls per turn, ainvoke; {_harness.machine()}",
    )


if __name__ == "__main__":
    main()
