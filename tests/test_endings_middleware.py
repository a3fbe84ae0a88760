"""Every ending of a ``create_agent`` run is confessed by ``ConfessionMiddleware``.

A final answer in ``wrap_model_call``; the recursion limit foreseen at the last model
call before it (inside the model node: confessing adds no graph step); a limit
middleware's end in ``after_agent``; a tool's or the model's exception on its way out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelCallLimitMiddleware, ToolCallLimitMiddleware
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphRecursionError
from tests.surfaces_fixtures import (
    MODES,
    Mode,
    agent_calls,
    ask,
    confession_requests,
    invoke,
    thread,
)

from confessional import Confession
from confessional.findings import UNFINISHED
from confessional.langchain import ConfessionMiddleware
from confessional.testing import example_tools, scripted_agent, tool_call_message


def _looping_agent() -> Any:
    """Runs the tests forever: every model call asks for them again."""
    return scripted_agent([tool_call_message(("run_tests", {}))])


def _unfinished(confession: Confession) -> str:
    [finding] = [f for f in confession.findings if f.kind == UNFINISHED]
    return finding.detail


@pytest.mark.parametrize("mode", MODES)
def test_a_run_that_loops_into_the_recursion_limit_is_confessed(mode: Mode) -> None:
    received: list[Confession] = []
    agent = create_agent(
        _looping_agent(),
        example_tools(),
        middleware=[ConfessionMiddleware(sinks=[received.append])],
        checkpointer=InMemorySaver(),
    )
    config = {**thread(), "recursion_limit": 9}
    with pytest.raises(GraphRecursionError):
        invoke(agent, ask(f"loop-{mode}"), config, mode)

    [confession] = received
    assert confession.status == "ok"
    assert confession.verdict == "flag"
    detail = _unfinished(confession)
    assert "recursion_limit" in detail
    assert "repeating run_tests({})" in detail
    # The confession was written by the model node, the last step that completed.
    state = agent.get_state(config).values
    assert [c.id for c in state["confessions"]] == [confession.id]


# Past 40 steps left the count is not kept (no loop can reach the limit from there): the
# larger limits enter that window mid-run, at either parity of the two-step loop.
@pytest.mark.parametrize("limit", [5, 6, 25, 43, 44, 101])
def test_the_foresight_confesses_once_and_costs_the_run_no_step(limit: int) -> None:
    received: list[Confession] = []
    watched, bare = _looping_agent(), _looping_agent()
    agent = create_agent(
        watched, example_tools(), middleware=[ConfessionMiddleware(sinks=[received.append])]
    )
    for runnable in (agent, create_agent(bare, example_tools())):
        with pytest.raises(GraphRecursionError):
            runnable.invoke(ask("n"), {"recursion_limit": limit})

    assert agent_calls(watched) == agent_calls(bare)  # the same loop, to the same limit
    assert confession_requests(watched) == 1
    [confession] = received
    assert "recursion_limit" in _unfinished(confession)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("limiter", ["model_calls", "tool_calls"])
def test_a_run_a_limit_middleware_ends_is_confessed(mode: Mode, limiter: str) -> None:
    received: list[Confession] = []
    limit = (
        ModelCallLimitMiddleware(run_limit=3, exit_behavior="end")
        if limiter == "model_calls"
        else ToolCallLimitMiddleware(run_limit=2, exit_behavior="end")
    )
    agent = create_agent(
        _looping_agent(),
        example_tools(),
        middleware=[limit, ConfessionMiddleware(sinks=[received.append])],
    )
    result = invoke(agent, ask(f"limit-{limiter}-{mode}"), None, mode)

    [confession] = result["confessions"]
    assert received == [confession]
    expected = "model-call limit" if limiter == "model_calls" else "tool-call limit"
    assert expected in _unfinished(confession)
    assert confession.verdict == "flag"


class _ToolBroke(RuntimeError):
    pass


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_exception_that_ends_the_run_is_confessed(mode: Mode) -> None:
    @tool
    def deploy(target: str) -> str:
        """Deploy the build to a target."""
        raise _ToolBroke(f"cannot reach {target}")

    received: list[Confession] = []
    agent = create_agent(
        scripted_agent([tool_call_message(("deploy", {"target": "prod"}))]),
        [deploy],
        middleware=[ConfessionMiddleware(sinks=[received.append])],
    )
    with pytest.raises(_ToolBroke):
        invoke(agent, ask(f"deploy-{mode}"), None, mode)

    [confession] = received
    assert confession.status == "ok"
    detail = _unfinished(confession)
    assert "an exception ended the run" in detail
    assert "_ToolBroke: cannot reach prod" in detail


@pytest.mark.parametrize("mode", MODES)
def test_a_model_exception_that_ends_the_run_is_confessed(mode: Mode) -> None:
    def second_call_fails(messages: list[BaseMessage]) -> AIMessage:
        raise ConnectionError("provider unreachable")

    agent_model = scripted_agent([tool_call_message(("run_tests", {})), second_call_fails])
    received: list[Confession] = []
    agent = create_agent(
        agent_model,
        example_tools(),
        middleware=[ConfessionMiddleware(sinks=[received.append])],
    )
    with pytest.raises(ConnectionError):
        invoke(agent, ask(f"model-down-{mode}"), None, mode)

    [confession] = received
    assert "ConnectionError: provider unreachable" in _unfinished(confession)
    assert confession.tool_call_count == 1


def test_a_final_answer_gets_no_ending_finding() -> None:
    received: list[Confession] = []
    agent = create_agent(
        scripted_agent([tool_call_message(("run_tests", {})), AIMessage("Tests fail.")]),
        example_tools(),
        middleware=[ConfessionMiddleware(sinks=[received.append])],
    )
    asyncio.run(agent.ainvoke(ask("answered")))
    [confession] = received
    assert not [f for f in confession.findings if f.kind == UNFINISHED]
