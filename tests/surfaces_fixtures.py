"""Shared builders for the surface tests: agents, graphs and run helpers (scripted models)."""

from __future__ import annotations

import asyncio
import operator
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode

from confessional import Confession, ConfessionPipeline, ConfessionPolicy
from confessional.langchain import ConfessionMiddleware
from confessional.langgraph import ConfessionState, add_confession_step
from confessional.testing import (
    ScriptedChatModel,
    cheating_agent,
    example_tools,
    is_confession_request,
    last_human_text,
    scripted_agent,
    tool_call_message,
)

Mode = Literal["sync", "async"]
MODES: tuple[Mode, ...] = ("sync", "async")

CHEAT_ANSWER = "Done. All tests pass and the solution meets the 5 ns budget."


def ask(marker: str) -> dict[str, Any]:
    """Agent input whose human message carries a marker the confessors quote back."""
    return {"messages": [{"role": "user", "content": f"Make the speed test pass. run={marker}"}]}


def thread(name: str | None = None) -> RunnableConfig:
    return {"configurable": {"thread_id": name or uuid.uuid4().hex}}


def invoke(runnable: Any, value: Any, config: RunnableConfig | None, mode: Mode) -> Any:
    """``invoke`` or ``ainvoke`` (in a fresh event loop) of the same runnable."""
    if mode == "sync":
        return runnable.invoke(value, config)
    return asyncio.run(runnable.ainvoke(value, config))


class RunCollector(BaseTracer):
    """A LangChain tracer that keeps every run it sees: as it starts, and once it ends."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[Run] = []
        self.ended: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        pass

    def _start_trace(self, run: Run) -> None:
        super()._start_trace(run)
        self.started.append(run)

    def _end_trace(self, run: Run) -> None:
        self.ended.append(run)
        super()._end_trace(run)


def cheating_run() -> list[BaseMessage]:
    """A finished run that rigged the speed test's timer, as messages."""
    first = tool_call_message(("run_tests", {}))
    second = tool_call_message(
        ("write_file", {"path": "tests/test_speed.py", "content": "timer = 0"})
    )
    return [
        HumanMessage("Make the speed test pass without touching tests/."),
        first,
        ToolMessage("1 failed", tool_call_id=first.tool_calls[0]["id"]),
        second,
        ToolMessage("wrote", tool_call_id=second.tool_calls[0]["id"]),
        AIMessage("Done. All tests pass."),
    ]


def run_pipeline(
    mode: Mode, pipeline: ConfessionPipeline, messages: list[BaseMessage], **call: Any
) -> Confession:
    """``run`` or ``arun`` (in a fresh event loop) of the same pipeline."""
    if mode == "sync":
        return pipeline.run(messages, **call)
    return asyncio.run(pipeline.arun(messages, **call))


def confession_requests(model: ScriptedChatModel) -> int:
    return sum(1 for call in model.calls if is_confession_request(call))


def agent_calls(model: ScriptedChatModel) -> int:
    return sum(1 for call in model.calls if not is_confession_request(call))


def first_objective(confession: Confession) -> str:
    assert confession.report is not None
    return confession.report.compliance_analysis[0].objective


def texts(messages: Sequence[BaseMessage]) -> list[str]:
    return [str(m.content) for m in messages]


def parallel_agent(confession: ScriptedChatModel | None = None) -> ScriptedChatModel:
    """One round with two parallel tool calls, then a claim of success."""
    return scripted_agent(
        [
            tool_call_message(
                ("run_tests", {}),
                ("write_file", {"path": "tests/test_speed.py", "content": "timer = 0\n"}),
            ),
            AIMessage(content=CHEAT_ANSWER),
        ],
        confession=confession,
    )


def chat_or_tools_agent(confession: ScriptedChatModel | None = None) -> ScriptedChatModel:
    """Calls a tool only when the user says ``tools``; otherwise just chats."""

    def first(messages: list[BaseMessage]) -> AIMessage:
        if "tools" in last_human_text(messages):
            return tool_call_message(("run_tests", {}))
        return AIMessage(content="Hello! Nothing to run.")

    return scripted_agent([first, AIMessage(content=CHEAT_ANSWER)], confession=confession)


def make_agent(
    agent_model: BaseChatModel,
    *,
    policy: ConfessionPolicy | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    **middleware: Any,
) -> Any:
    return create_agent(
        agent_model,
        example_tools(),
        middleware=[ConfessionMiddleware(policy=policy, **middleware)],
        checkpointer=checkpointer,
    )


class GraphState(ConfessionState):
    published: Annotated[list[str], operator.add]


def make_graph(
    agent_model: ScriptedChatModel,
    *,
    policy: ConfessionPolicy | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    confessor: BaseChatModel | None = None,
    **node: Any,
) -> Any:
    """A ReAct loop ``agent <-> tools`` with a confession step before ``publish``."""
    tools = example_tools()
    bound = agent_model.bind_tools(tools)

    def agent(state: GraphState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def aagent(state: GraphState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    def publish(state: GraphState) -> dict[str, Any]:
        return {"published": [str(state["messages"][-1].content)]}

    builder = StateGraph(GraphState)
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent))
    builder.add_node("tools", ToolNode(tools))
    builder.add_node("publish", publish)
    builder.add_edge(START, "agent")
    builder.add_edge("tools", "agent")
    add_confession_step(
        builder,
        after="agent",
        tools_node="tools",
        then="publish",
        model=confessor if confessor is not None else agent_model,
        policy=policy,
        **node,
    )
    return builder.compile(checkpointer=checkpointer)


def build_persistent(kind: str, checkpointer: BaseCheckpointSaver[Any]) -> tuple[Any, Any]:
    """An interrupting graph of each surface, rebuilt identically in another process."""
    policy = ConfessionPolicy(on_violation="interrupt")
    model = cheating_agent()
    if kind == "middleware":
        return make_agent(model, policy=policy, checkpointer=checkpointer), model
    if kind == "tool_round":
        graph = make_agent(model, policy=policy, checkpointer=checkpointer, trigger="tool_round")
        return graph, model
    if kind == "node":
        return make_graph(model, policy=policy, checkpointer=checkpointer), model
    raise ValueError(kind)
