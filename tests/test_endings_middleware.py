"""Every ending of a ``create_agent`` run is confessed by ``ConfessionMiddleware``.

A final answer in ``wrap_model_call``; the recursion limit foreseen at the last model
call before it (inside the model node: confessing adds no graph step); a limit
middleware's end in ``after_agent``; a tool's or the model's exception on its way out.
Both triggers confess the endings: with ``trigger="tool_round"`` the ending's confession
is the only one to see the run's last round, which no later model call confesses.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelCallLimitMiddleware, ToolCallLimitMiddleware
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphRecursionError
from langgraph.types import Command
from tests.surfaces_fixtures import (
    MODES,
    Mode,
    agent_calls,
    ask,
    confession_requests,
    invoke,
    thread,
)

from confessional import Confession, ConfessionPolicy, flush_background
from confessional.findings import UNFINISHED
from confessional.langchain import ConfessionMiddleware, Trigger
from confessional.testing import (
    denying_confessor,
    example_tools,
    is_confession_request,
    scripted_agent,
    tool_call_message,
)


def _looping_agent() -> Any:
    """Runs the tests forever: every model call asks for them again."""
    return scripted_agent([tool_call_message(("run_tests", {}))])


def _unfinished(confession: Confession) -> str:
    [finding] = [f for f in confession.findings if f.kind == UNFINISHED]
    return finding.detail


TRIGGERS: tuple[Trigger, ...] = ("turn", "tool_round")


def _ending_confession(received: list[Confession], trigger: Trigger) -> Confession:
    """The run's last confession, its ending's: with ``tool_round``, after one per round
    the model was called again for (each without an ending)."""
    *rounds, ending = received
    assert not rounds if trigger == "turn" else rounds
    assert all(not [f for f in c.findings if f.kind == UNFINISHED] for c in rounds)
    assert ending.tool_call_count > max((c.tool_call_count for c in rounds), default=0)
    return ending


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_run_that_loops_into_the_recursion_limit_is_confessed(
    mode: Mode, trigger: Trigger
) -> None:
    received: list[Confession] = []
    agent = create_agent(
        _looping_agent(),
        example_tools(),
        middleware=[ConfessionMiddleware(sinks=[received.append], trigger=trigger)],
        checkpointer=InMemorySaver(),
    )
    config = {**thread(), "recursion_limit": 9}
    with pytest.raises(GraphRecursionError):
        invoke(agent, ask(f"loop-{trigger}-{mode}"), config, mode)

    confession = _ending_confession(received, trigger)
    assert confession.status == "ok"
    assert confession.verdict == "flag"
    detail = _unfinished(confession)
    assert "recursion_limit" in detail
    assert "repeating run_tests({})" in detail
    # The confession was written by the model node, the last step that completed.
    state = agent.get_state(config).values
    assert [c.id for c in state["confessions"]] == [c.id for c in received]


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
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_run_a_limit_middleware_ends_is_confessed(
    mode: Mode, limiter: str, trigger: Trigger
) -> None:
    received: list[Confession] = []
    limit = (
        ModelCallLimitMiddleware(run_limit=3, exit_behavior="end")
        if limiter == "model_calls"
        else ToolCallLimitMiddleware(run_limit=2, exit_behavior="end")
    )
    agent = create_agent(
        _looping_agent(),
        example_tools(),
        middleware=[limit, ConfessionMiddleware(sinks=[received.append], trigger=trigger)],
    )
    result = invoke(agent, ask(f"limit-{limiter}-{trigger}-{mode}"), None, mode)

    assert result["confessions"] == received
    confession = _ending_confession(received, trigger)
    expected = "model-call limit" if limiter == "model_calls" else "tool-call limit"
    assert expected in _unfinished(confession)
    assert confession.verdict == "flag"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_limit_ending_held_for_review_resumes_without_confessing_again(
    mode: Mode, trigger: Trigger
) -> None:
    # The rounds confess clean; only the ending (no answer) calls for review.
    model = scripted_agent([tool_call_message(("run_tests", {}))], confession=denying_confessor())
    agent = create_agent(
        model,
        example_tools(),
        middleware=[
            ModelCallLimitMiddleware(run_limit=3, exit_behavior="end"),
            ConfessionMiddleware(
                trigger=trigger, policy=ConfessionPolicy(on_violation="interrupt")
            ),
        ],
        checkpointer=InMemorySaver(),
    )
    config = thread()
    paused = invoke(agent, ask(f"limit-review-{trigger}-{mode}"), config, mode)
    [pause] = paused["__interrupt__"]
    rounds = paused.get("confessions", [])
    asked = confession_requests(model)

    done = invoke(agent, Command(resume={"decisions": [{"type": "approve"}]}), config, mode)
    assert "__interrupt__" not in done
    assert confession_requests(model) == asked  # the paused confession was replayed
    ending = _ending_confession(done["confessions"], trigger)
    assert done["confessions"] == [*rounds, ending]
    assert pause.value["confession_id"] == ending.id
    assert "model-call limit" in _unfinished(ending)
    assert "Model call limits exceeded" in str(done["messages"][-1].content)


class _ToolBroke(RuntimeError):
    pass


def _run_tests(ending: str) -> Any:
    """``run_tests``, which raises ``_ToolBroke`` when that is the ending under test."""

    @tool
    def run_tests() -> str:
        """Run the test suite and report the result."""
        if ending == "_ToolBroke":
            raise _ToolBroke("the runner crashed")
        return "1 failed"

    return run_tests


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ending", ["model-call limit", "recursion_limit", "_ToolBroke"])
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_background_mode_confesses_every_ending_too(
    mode: Mode, ending: str, trigger: Trigger
) -> None:
    received: list[Confession] = []
    middleware: list[Any] = [
        ConfessionMiddleware(sinks=[received.append], trigger=trigger, background=True)
    ]
    if ending == "model-call limit":
        middleware.insert(0, ModelCallLimitMiddleware(run_limit=3, exit_behavior="end"))
    agent = create_agent(
        scripted_agent([tool_call_message(("run_tests", {}))], confession=denying_confessor()),
        [_run_tests(ending)],
        middleware=middleware,
    )
    config = {"recursion_limit": 9 if ending == "recursion_limit" else 50}
    raised = {"recursion_limit": GraphRecursionError, "_ToolBroke": _ToolBroke}.get(ending)
    with pytest.raises(raised) if raised else contextlib.nullcontext():
        invoke(agent, ask(f"background-{ending}-{trigger}-{mode}"), config, mode)
    assert flush_background(timeout=30)
    # Delivered in the order the workers finish: the ending's is the one with a finding.
    [confession] = [c for c in received if any(f.kind == UNFINISHED for f in c.findings)]
    assert ending in _unfinished(confession)
    # tool_round: one per round the model was called again after (a call per round here),
    # then the ending's, which also sees the last round.
    rounds = confession.tool_call_count - 1 if trigger == "tool_round" else 0
    assert len(received) == rounds + 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_tool_exception_that_ends_the_run_is_confessed(mode: Mode, trigger: Trigger) -> None:
    @tool
    def deploy(target: str) -> str:
        """Deploy the build to a target."""
        raise _ToolBroke(f"cannot reach {target}")

    received: list[Confession] = []
    agent = create_agent(
        scripted_agent(
            [
                tool_call_message(("run_tests", {})),
                tool_call_message(("deploy", {"target": "prod"})),
            ]
        ),
        [deploy, *example_tools()],
        middleware=[ConfessionMiddleware(sinks=[received.append], trigger=trigger)],
    )
    with pytest.raises(_ToolBroke):
        invoke(agent, ask(f"deploy-{trigger}-{mode}"), None, mode)

    confession = _ending_confession(received, trigger)
    assert confession.status == "ok"
    detail = _unfinished(confession)
    assert "an exception ended the run" in detail
    assert "_ToolBroke: cannot reach prod" in detail


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_model_exception_that_ends_the_run_is_confessed(mode: Mode, trigger: Trigger) -> None:
    def second_call_fails(messages: list[BaseMessage]) -> AIMessage:
        raise ConnectionError("provider unreachable")

    agent_model = scripted_agent([tool_call_message(("run_tests", {})), second_call_fails])
    received: list[Confession] = []
    agent = create_agent(
        agent_model,
        example_tools(),
        middleware=[ConfessionMiddleware(sinks=[received.append], trigger=trigger)],
    )
    with pytest.raises(ConnectionError):
        invoke(agent, ask(f"model-down-{trigger}-{mode}"), None, mode)

    confession = received[-1]  # tool_round: the round was confessed before the failing call
    assert len(received) == (1 if trigger == "turn" else 2)
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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ending", ["model-call limit", "_ToolBroke"])
def test_an_ending_without_an_answer_replays_the_agents_request(mode: Mode, ending: str) -> None:
    """The episode of a limit's end or a tool's exception (no model request at hand) is
    the agent's as its last model call saw it: its system prompt, its name and settings."""

    received: list[Confession] = []
    model = scripted_agent([tool_call_message(("run_tests", {}))])
    middleware: list[Any] = [ConfessionMiddleware(sinks=[received.append])]
    if ending == "model-call limit":
        middleware.insert(0, ModelCallLimitMiddleware(run_limit=2, exit_behavior="end"))
    agent = create_agent(
        model,
        [_run_tests(ending)],
        system_prompt="Never edit files under tests/.",
        name="coder",
        middleware=middleware,
    )
    raised = _ToolBroke if ending == "_ToolBroke" else None
    with pytest.raises(raised) if raised else contextlib.nullcontext():
        invoke(agent, ask(f"replay-{ending}-{mode}"), None, mode)

    [confession] = received
    assert ending in _unfinished(confession)
    assert confession.agent_name == "coder"
    [request] = [call for call in model.calls if is_confession_request(call)]
    assert "Never edit files under tests/." in str(request[0].content)
