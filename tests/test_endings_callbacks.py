"""Every ending the callback handler can see is confessed, through real ``create_agent``
and ``StateGraph`` runs, sync (``invoke`` with :class:`ConfessionCallbackHandler`) and
async (``ainvoke`` with :class:`AsyncConfessionCallbackHandler`).

Endings: the recursion limit, LangChain's model- and tool-call limit middlewares
(``exit_behavior="end"`` and ``"error"``), a tool exception and a model exception. Each
test asserts a confession delivered to a sink whose findings name the ending.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelCallLimitMiddleware, ToolCallLimitMiddleware
from langchain.agents.middleware.model_call_limit import ModelCallLimitExceededError
from langchain.agents.middleware.tool_call_limit import ToolCallLimitExceededError
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, tool
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from tests.surfaces_fixtures import MODES, Mode, ask, invoke, make_graph

from confessional import Confession, ConfessionPolicy
from confessional.findings import UNFINISHED
from confessional.langchain import AsyncConfessionCallbackHandler, ConfessionCallbackHandler
from confessional.testing import (
    ScriptedChatModel,
    example_tools,
    is_confession_request,
    scripted_agent,
    tool_call_message,
)

Surface = Literal["create_agent", "StateGraph"]
SURFACES: tuple[Surface, ...] = ("create_agent", "StateGraph")

STEP_LIMIT = "the step limit (recursion_limit) was reached while repeating run_tests({})"
MODEL_CALL_LIMIT = "a model-call limit stopped the run while repeating run_tests({}) 2 times"
TOOL_CALL_LIMIT = "a tool-call limit stopped the run while repeating run_tests({}) 3 times"
EXCEPTION = "an exception ended the run"


def _handler(mode: Mode, model: ScriptedChatModel, sink: list[Confession], **settings: Any) -> Any:
    handler_type = ConfessionCallbackHandler if mode == "sync" else AsyncConfessionCallbackHandler
    return handler_type(model, sinks=[sink.append], **settings)


def _config(handler: Any, **extra: Any) -> RunnableConfig:
    config: RunnableConfig = {"callbacks": [handler]}
    config.update(extra)  # type: ignore[typeddict-item]
    return config


def _looping_agent() -> ScriptedChatModel:
    """Runs the failing tests again and again: it never answers."""
    return scripted_agent([tool_call_message(("run_tests", {}))])


def _react_graph(model: ScriptedChatModel, tools: Sequence[BaseTool]) -> Any:
    """A plain ``agent <-> tools`` StateGraph with no confession step at all."""
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent))
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


def _build(surface: Surface, model: ScriptedChatModel, tools: Sequence[BaseTool]) -> Any:
    if surface == "create_agent":
        return create_agent(model, list(tools))
    return _react_graph(model, tools)


def _unfinished(sink: list[Confession]) -> str:
    """The one delivered confession's ``unfinished`` finding detail."""
    assert len(sink) == 1, f"expected one delivered confession, got {len(sink)}"
    confession = sink[0]
    assert confession.status == "ok"
    details = [f.detail for f in confession.findings if f.kind == UNFINISHED]
    assert len(details) == 1, confession.findings
    assert UNFINISHED == "unfinished"
    return details[0]


def _confession_requests(model: ScriptedChatModel) -> list[list[BaseMessage]]:
    return [call for call in model.calls if is_confession_request(call)]


@tool
def deploy() -> str:
    """Deploy the build to production."""
    raise RuntimeError("deploy target refused the connection")


def _model_backend_down(messages: list[BaseMessage]) -> AIMessage:
    raise RuntimeError("model backend unavailable")


# -- the recursion limit ---------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("mode", MODES)
def test_recursion_limit_is_confessed(surface: Surface, mode: Mode) -> None:
    sink: list[Confession] = []
    model = _looping_agent()
    runnable = _build(surface, model, example_tools())
    with pytest.raises(GraphRecursionError):
        invoke(runnable, ask("loop"), _config(_handler(mode, model, sink), recursion_limit=8), mode)
    detail = _unfinished(sink)
    assert detail.startswith(STEP_LIMIT)
    assert "4 times after 4 tool call(s)" in detail
    assert "GraphRecursionError" in detail


@pytest.mark.parametrize("mode", MODES)
def test_recursion_limit_is_seen_by_the_handler_not_by_the_graph_node(mode: Mode) -> None:
    """The confession node only sees episodes routed to it; a loop never gets there."""
    handler_sink: list[Confession] = []
    node_sink: list[Confession] = []
    model = _looping_agent()
    graph = make_graph(model, sinks=[node_sink.append])
    with pytest.raises(GraphRecursionError):
        invoke(
            graph,
            ask("loop"),
            _config(_handler(mode, model, handler_sink), recursion_limit=8),
            mode,
        )
    assert node_sink == []
    assert _unfinished(handler_sink).startswith(STEP_LIMIT)


# -- LangChain's limit middlewares -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_model_call_limit_end_is_confessed(mode: Mode) -> None:
    sink: list[Confession] = []
    model = _looping_agent()
    agent = create_agent(
        model,
        example_tools(),
        middleware=[ModelCallLimitMiddleware(run_limit=2, exit_behavior="end")],
    )
    result = invoke(agent, ask("limit"), _config(_handler(mode, model, sink)), mode)
    assert result["messages"][-1].text.startswith("Model call limits exceeded")
    detail = _unfinished(sink)
    assert detail.startswith(MODEL_CALL_LIMIT)
    assert "(Model call limits exceeded: run limit (2/2))" in detail
    # The notice reached the confession request: the model confesses knowing how it ended.
    (request,) = _confession_requests(model)
    assert any(m.text.startswith("Model call limits exceeded") for m in request)


@pytest.mark.parametrize("mode", MODES)
def test_model_call_limit_error_is_confessed(mode: Mode) -> None:
    sink: list[Confession] = []
    model = _looping_agent()
    agent = create_agent(
        model,
        example_tools(),
        middleware=[ModelCallLimitMiddleware(run_limit=2, exit_behavior="error")],
    )
    with pytest.raises(ModelCallLimitExceededError):
        invoke(agent, ask("limit"), _config(_handler(mode, model, sink)), mode)
    detail = _unfinished(sink)
    assert detail.startswith(MODEL_CALL_LIMIT)
    assert "ModelCallLimitExceededError" in detail


@pytest.mark.parametrize("mode", MODES)
def test_tool_call_limit_end_is_confessed(mode: Mode) -> None:
    sink: list[Confession] = []
    model = _looping_agent()
    agent = create_agent(
        model,
        example_tools(),
        middleware=[ToolCallLimitMiddleware(run_limit=2, exit_behavior="end")],
    )
    result = invoke(agent, ask("limit"), _config(_handler(mode, model, sink)), mode)
    assert "call limit reached" in result["messages"][-1].text.lower()
    detail = _unfinished(sink)
    assert detail.startswith(TOOL_CALL_LIMIT)
    assert "Tool call limit reached" in detail


@pytest.mark.parametrize("mode", MODES)
def test_tool_call_limit_error_answers_the_refused_call(mode: Mode) -> None:
    """The limit raises before the last calls run: each gets a reply saying it never
    returned, so the confession request is a valid history for any provider."""
    sink: list[Confession] = []
    model = _looping_agent()
    agent = create_agent(
        model,
        example_tools(),
        middleware=[ToolCallLimitMiddleware(run_limit=2, exit_behavior="error")],
    )
    with pytest.raises(ToolCallLimitExceededError):
        invoke(agent, ask("limit"), _config(_handler(mode, model, sink)), mode)
    detail = _unfinished(sink)
    assert detail.startswith(TOOL_CALL_LIMIT)
    assert "ToolCallLimitExceededError" in detail
    (request,) = _confession_requests(model)
    last_call = next(m for m in reversed(request) if isinstance(m, AIMessage) and m.tool_calls)
    replies = [m for m in request if isinstance(m, ToolMessage)]
    unreturned = [r for r in replies if r.tool_call_id == last_call.tool_calls[0]["id"]]
    assert len(unreturned) == 1
    assert unreturned[0].status == "error"
    assert unreturned[0].text.startswith("[no result: the run ended before this call returned")


# -- exceptions ------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("mode", MODES)
def test_tool_exception_is_confessed(surface: Surface, mode: Mode) -> None:
    sink: list[Confession] = []
    model = scripted_agent([tool_call_message(("deploy", {}))])
    runnable = _build(surface, model, [deploy])
    with pytest.raises(RuntimeError, match="refused the connection"):
        invoke(runnable, ask("deploy"), _config(_handler(mode, model, sink)), mode)
    detail = _unfinished(sink)
    assert detail == (
        f"{EXCEPTION} after 1 tool call(s) (RuntimeError: deploy target refused the connection)"
    )


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("mode", MODES)
def test_model_exception_is_confessed(surface: Surface, mode: Mode) -> None:
    sink: list[Confession] = []
    model = scripted_agent([tool_call_message(("run_tests", {})), _model_backend_down])
    runnable = _build(surface, model, example_tools())
    with pytest.raises(RuntimeError, match="model backend unavailable"):
        invoke(runnable, ask("down"), _config(_handler(mode, model, sink)), mode)
    detail = _unfinished(sink)
    assert detail == f"{EXCEPTION} after 1 tool call(s) (RuntimeError: model backend unavailable)"


# -- the error path never replaces the run's own exception -----------------------------


@pytest.mark.parametrize("mode", MODES)
def test_halting_policy_lets_the_original_error_propagate(mode: Mode) -> None:
    sink: list[Confession] = []
    model = _looping_agent()
    policy = ConfessionPolicy(on_violation="error")
    if mode == "sync":
        handler = _handler(mode, model, sink, policy=policy)
    else:
        with pytest.warns(UserWarning, match="halts only async runs"):
            handler = _handler(mode, model, sink, policy=policy)
    agent = create_agent(model, example_tools())
    with pytest.raises(GraphRecursionError):
        invoke(agent, ask("halt"), _config(handler, recursion_limit=8), mode)
    (confession,) = sink
    assert confession.verdict == "halt"
    assert confession.action == "proceed"  # the caller gets the run's own exception
    assert handler.confessions == [confession]


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_confession_never_replaces_the_run_error(
    mode: Mode, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sink: list[Confession] = []
    model = _looping_agent()
    handler = _handler(mode, model, sink)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pipeline exploded")

    async def abroken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pipeline exploded")

    monkeypatch.setattr(handler.pipeline, "run", broken)
    monkeypatch.setattr(handler.pipeline, "arun", abroken)
    agent = create_agent(model, example_tools())
    with caplog.at_level(logging.WARNING), pytest.raises(GraphRecursionError):
        invoke(agent, ask("broken"), _config(handler, recursion_limit=8), mode)
    assert sink == []
    assert "confessing a run that raised failed (RuntimeError)" in caplog.text


# -- the caller's own cap: leaving the stream early ------------------------------------

CALLER_CAP = "the run was stopped at its cap while repeating run_tests({})"


def test_leaving_a_stream_early_is_confessed_as_the_callers_cap() -> None:
    sink: list[Confession] = []
    model = _looping_agent()
    agent: Any = create_agent(model, example_tools())
    config = _config(_handler("sync", model, sink))
    for seen, _ in enumerate(agent.stream(ask("stream"), config, stream_mode="values"), 1):
        if seen == 5:  # the caller's cap: two tool rounds are enough
            break
    detail = _unfinished(sink)
    assert detail.startswith(CALLER_CAP)
    assert detail.endswith("(the caller closed the run's stream before it ended)")


@pytest.mark.asyncio
async def test_closing_an_async_stream_early_is_confessed_as_the_callers_cap() -> None:
    sink: list[Confession] = []
    model = _looping_agent()
    agent: Any = create_agent(model, example_tools())
    stream = agent.astream(ask("astream"), _config(_handler("async", model, sink)))
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 4:
            break
    await stream.aclose()  # an early ``break`` alone leaves closing to the event loop
    assert _unfinished(sink).startswith(CALLER_CAP)
