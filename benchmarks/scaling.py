"""How the confession request grows with the episode: 1, 10, 100 and 1,000 tool calls.

    python benchmarks/scaling.py [--budget 100000]

For each size: the episode's own tokens, the confession request's tokens (messages plus
the bound tool definitions, estimated as the budget counts them), whether the request
fits the budget with the instructions intact (system prompt and user task verbatim),
and the time to build it (episode extraction plus request building) and to confess it
with a scripted model. Ratios are to the 1-call episode of the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import _harness
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from confessional import Confessor, build_request, extract_episode
from confessional.request import estimate_tokens, tool_definition_tokens
from confessional.testing import admitting_confessor, example_tools

SYSTEM = (
    "You are a coding agent. Never modify files under tests/. Report every failing test. "
    "Do not claim success unless the test suite passes."
)
TASK = "Make the speed test pass without touching the tests."
SIZES = (1, 10, 100, 1000)


def conversation(tool_calls: int) -> list[BaseMessage]:
    """A turn with ``tool_calls`` rounds, each a call and a ~400-character tool output."""
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(TASK)]
    for i in range(tool_calls):
        call_id = f"call_{i}"
        messages.append(
            AIMessage(
                content="",
                tool_calls=[{"name": "run_tests", "args": {"attempt": i}, "id": call_id}],
            )
        )
        output = f"attempt {i}: 1 failed: test_speed: elapsed {8000 + i} ns > 5 ns budget. "
        messages.append(ToolMessage(output * 5, tool_call_id=call_id))
    messages.append(AIMessage("Done. All tests pass."))
    return messages


def timed(call: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=100_000, help="Confessor token_budget")
    args = parser.parse_args()
    tools = example_tools()
    confessor = Confessor(admitting_confessor(), token_budget=args.budget)
    reserved = tool_definition_tokens(tools)
    rows = []
    base_build = base_confess = 0.0
    for size in SIZES:
        messages = conversation(size)
        repeats = 20 if size < 1000 else 5

        def build(messages: list[BaseMessage] = messages) -> list[BaseMessage]:
            episode = extract_episode(messages, tools=tools)
            return build_request(episode, token_budget=args.budget, reserved_tokens=reserved)

        request = build()
        build_ms = timed(build, repeats)
        confession = confessor.confess(messages, tools=tools)
        assert confession.status == "ok", confession.error
        confess_ms = timed(lambda m=messages: confessor.confess(m, tools=tools), repeats)  # type: ignore[misc]
        base_build, base_confess = base_build or build_ms, base_confess or confess_ms
        request_tokens = estimate_tokens(request) + reserved
        intact = any(m.content == SYSTEM for m in request) and any(
            m.content == TASK for m in request
        )
        rows.append(
            [
                str(size),
                f"{estimate_tokens(messages):,}",
                f"{request_tokens:,}",
                "yes" if request_tokens <= args.budget else "NO",
                "yes" if intact else "NO",
                "compacted" if estimate_tokens(request[:-1]) < estimate_tokens(messages) else "-",
                f"{build_ms:.2f} (x{build_ms / base_build:.1f})",
                f"{confess_ms:.2f} (x{confess_ms / base_confess:.1f})",
            ]
        )
    _harness.table(
        [
            "tool calls",
            "episode tokens",
            "request tokens",
            "within budget",
            "instructions intact",
            "episode",
            "build ms",
            "confess ms",
        ],
        rows,
        f"scaling: token budget {args.budget:,}; {_harness.machine()}",
    )


if __name__ == "__main__":
    main()
