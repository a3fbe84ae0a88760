"""The middleware adds no graph step where its trigger does not need one, so an agent that
fits its ``recursion_limit`` still fits it with confessions on (target: bare steps + at
most 1 per turn)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from tests.surfaces_fixtures import MODES, Mode

from confessional import ConfessionPolicy
from confessional.langchain import ConfessionMiddleware
from confessional.testing import (
    admitting_confessor,
    denying_confessor,
    example_tools,
    scripted_agent,
    tool_call_message,
)


def _agent_model(rounds: int) -> Any:
    return scripted_agent(
        [*(tool_call_message(("run_tests", {})) for _ in range(rounds)), AIMessage("Done.")]
    )


def _steps_per_turn(middleware: list[Any], rounds: int, mode: Mode, turns: int = 2) -> list[int]:
    """Graph steps of each of ``turns`` turns on one thread, from LangGraph's debug stream."""
    agent = create_agent(
        _agent_model(rounds), example_tools(), middleware=middleware, checkpointer=InMemorySaver()
    )
    config: Any = {"recursion_limit": 4 * rounds + 20, "configurable": {"thread_id": "t"}}

    def steps_of(events: list[dict[str, Any]]) -> int:
        return len({e["step"] for e in events if e["type"] == "task"})

    async def collect(value: Any) -> list[dict[str, Any]]:
        return [e async for e in agent.astream(value, config, stream_mode="debug")]

    counts = []
    for turn in range(turns):
        value = {"messages": [("user", f"Make the speed test pass. turn={turn}")]}
        if mode == "sync":
            events = list(agent.stream(value, config, stream_mode="debug"))
        else:
            events = asyncio.run(collect(value))
        counts.append(steps_of(events))
    return counts


CONFIGURATIONS = {
    "turn, flag": {},
    "turn, withhold": {"policy": ConfessionPolicy(on_violation="end")},
    "tool_round, flag": {"trigger": "tool_round"},
    "tool_round, withhold": {
        "trigger": "tool_round",
        "policy": ConfessionPolicy(on_violation="end"),
    },
    "turn, background": {"background": True},
    # Can pause for review (after_agent, once per turn). The confessor reports compliance,
    # so the turn runs to its end instead of pausing.
    "turn, interrupt": {
        "model": denying_confessor(),
        "policy": ConfessionPolicy(on_violation="interrupt"),
    },
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rounds", [1, 50])
@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_confessions_add_at_most_one_graph_step_per_turn(
    name: str, rounds: int, mode: Mode
) -> None:
    bare = _steps_per_turn([], rounds, mode)
    settings = {"model": admitting_confessor(), **CONFIGURATIONS[name]}
    middleware = ConfessionMiddleware(**settings)

    confessed = _steps_per_turn([middleware], rounds, mode)

    assert bare == [2 * rounds + 1] * 2  # model and tools per round, then the answer
    assert all(c <= b + 1 for c, b in zip(confessed, bare, strict=True)), (name, bare, confessed)
