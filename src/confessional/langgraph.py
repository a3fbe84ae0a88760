"""LangGraph surface: a confession node for any ``StateGraph`` whose state has messages.

``confession_node(...)`` returns a node (sync and async) that confesses the latest episode
of ``state["messages"]`` through the one :class:`~confessional.ConfessionPipeline`,
appends the result to ``state["confessions"]`` and routes with ``Command(goto=...)``:

- pass / ``flag`` / ``continue``: to ``next`` (``END`` when not given);
- ``end``: to ``END``, downstream nodes do not run, and the flagged final answer is
  replaced in ``messages`` by a notice (the original goes to ``confession_withheld``);
- ``interrupt``: ``langgraph.types.interrupt`` with the report as payload (needs a
  checkpointer). Resume with ``Command(resume="approve")`` or ``"reject"`` (also
  ``{"action": "approve"}``): approve continues to ``next``; reject ends as ``end`` does,
  or raises when ``policy.reject_action="error"``;
- ``error``: raises :class:`~confessional.ConfessionHalted`.

The node re-executes from its start when a graph resumes. The confession is therefore run
inside a LangGraph ``@task`` when the policy may interrupt: on resume the stored result
is replayed from the checkpoint and the confession model is never called twice.

``add_confession_step(builder, after="agent", then="next_node")`` wires the node with one
call. Every confession is also written to the ``custom`` stream and dispatched as a
``"confession"`` custom event (``astream_events``) while the graph runs.

This module also holds the LangGraph control-flow helpers that
:mod:`confessional.langchain` reuses, so both surfaces pause, resume and stream alike.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Annotated, Any, Literal, cast

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.config import get_config, get_stream_writer
from langgraph.func import task
from langgraph.graph import END, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from pydantic import BaseModel, model_validator

from confessional.audit import Auditor
from confessional.confession import Confession
from confessional.confessor import Confessor
from confessional.episode import message_text
from confessional.errors import ConfessionHalted, ConfigurationError
from confessional.pipeline import ConfessionPipeline, ConfessionSink
from confessional.policy import ConfessionPolicy
from confessional.telemetry import ConfessionTelemetry

__all__ = [
    "CHECKPOINT_TYPES",
    "CONFESSION_EVENT",
    "ConfessionState",
    "ReviewDecision",
    "add_confession_step",
    "checkpoint_serde",
    "confession_event_payload",
    "confession_node",
    "review_payload",
]

CONFESSION_EVENT = "confession"
"""Name of the custom event (``astream_events``) and ``type`` of the ``custom`` stream
chunk that carry each confession."""

_TASK_NAME = "confessional_confession"

CHECKPOINT_TYPES: tuple[tuple[str, str], ...] = (("confessional.confession", "Confession"),)
"""Types confessional stores in graph state, for a checkpointer's msgpack allowlist
(nested models are rebuilt by ``Confession`` itself)."""


def checkpoint_serde(*extra: tuple[str, ...] | type) -> JsonPlusSerializer:
    """A checkpoint serialiser that loads confessions without "unregistered type" warnings
    and keeps working under ``LANGGRAPH_STRICT_MSGPACK``. ``extra``: your own state types.

    ``SqliteSaver(conn, serde=checkpoint_serde())``.
    """
    return JsonPlusSerializer(allowed_msgpack_modules=[*CHECKPOINT_TYPES, *extra])


class ConfessionState(MessagesState):
    """State keys the confession surfaces write. Subclass it for your own graph state.

    ``confessions`` accumulates one :class:`~confessional.Confession` per confessed
    episode. ``confession_withheld`` keeps every answer that ``end`` (or a rejected
    review) took out of ``messages``.
    """

    confessions: Annotated[list[Confession], operator.add]
    confession_withheld: Annotated[list[AnyMessage], operator.add]


class ReviewDecision(BaseModel):
    """What a reviewer answers to a confession interrupt.

    Accepted resume values: ``"approve"`` / ``"reject"``, ``{"action": ...}`` or
    ``{"type": ...}`` (the shape LangChain's human-in-the-loop middleware uses). Anything
    else fails validation and the interrupt can simply be answered again.
    """

    action: Literal["approve", "reject"]
    message: str | None = None
    """Optional reviewer note, kept in the rejection notice."""

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"action": value.strip().lower()}
        if isinstance(value, Mapping) and "action" not in value and "type" in value:
            return {**value, "action": value["type"]}
        return value


def review_payload(confession: Confession, answer: BaseMessage | None = None) -> dict[str, Any]:
    """The JSON-serialisable interrupt payload for a confession awaiting review."""
    return {
        "type": "confession_review",
        "confession": confession.model_dump(mode="json"),
        "reasons": list(confession.reasons),
        "withheld_answer": message_text(answer) if answer is not None else None,
        "actions": ["approve", "reject"],
    }


def confession_event_payload(confession: Confession) -> dict[str, Any]:
    """The payload of the ``custom`` stream chunk and of the ``"confession"`` event."""
    return {"type": CONFESSION_EVENT, "confession": confession.model_dump(mode="json")}


def node_config() -> RunnableConfig | None:
    try:
        return get_config()
    except RuntimeError:  # called outside a runnable context (hooks tested directly)
        return None


def _stream_writer() -> Callable[[Any], None] | None:
    try:
        return get_stream_writer()
    except (RuntimeError, KeyError):  # outside a graph run (e.g. a node called directly)
        return None


def emit_confession(confession: Confession, config: RunnableConfig | None) -> None:
    """Stream the confession live: ``custom`` stream mode and a custom callback event."""
    if config is None:
        return
    payload = confession_event_payload(confession)
    writer = _stream_writer()
    if writer is not None:
        writer(payload)
    if config.get("callbacks") is not None:
        dispatch_custom_event(CONFESSION_EVENT, payload, config=config)


async def aemit_confession(confession: Confession, config: RunnableConfig | None) -> None:
    """Async :func:`emit_confession`."""
    if config is None:
        return
    payload = confession_event_payload(confession)
    writer = _stream_writer()
    if writer is not None:
        writer(payload)
    if config.get("callbacks") is not None:
        await adispatch_custom_event(CONFESSION_EVENT, payload, config=config)


class _Call:
    """Arguments of one pipeline run, handed to the durable task (never checkpointed)."""

    def __init__(
        self,
        pipeline: ConfessionPipeline,
        messages: Sequence[BaseMessage],
        model: BaseChatModel | None,
        tools: Sequence[Any] | None,
        agent_name: str | None,
    ) -> None:
        self.pipeline = pipeline
        self.messages = messages
        self.model = model
        self.tools = tools
        self.agent_name = agent_name


# Both tasks share one name: a run paused with invoke() may be resumed with ainvoke(), and
# the task id (hence the replayed result) depends on the name only. Results are plain JSON
# so any checkpointer serialiser stores them without registering types.
def _confess(call: _Call) -> dict[str, Any]:
    confession = call.pipeline.run(
        call.messages,
        model=call.model,
        tools=call.tools,
        agent_name=call.agent_name,
        config=node_config(),
    )
    return confession.model_dump(mode="json")


async def _aconfess(call: _Call) -> dict[str, Any]:
    confession = await call.pipeline.arun(
        call.messages,
        model=call.model,
        tools=call.tools,
        agent_name=call.agent_name,
        config=node_config(),
    )
    return confession.model_dump(mode="json")


# langgraph's task typing does not express these signatures; the calls below are checked.
_confess_task: Any = cast(Any, task)(name=_TASK_NAME)(_confess)
_aconfess_task: Any = cast(Any, task)(name=_TASK_NAME)(_aconfess)


def run_pipeline(
    pipeline: ConfessionPipeline,
    messages: Sequence[BaseMessage],
    *,
    model: BaseChatModel | None,
    tools: Sequence[Any] | None,
    agent_name: str | None,
    config: RunnableConfig | None,
) -> Confession:
    """Run the pipeline; durably (once per task, replayed on resume) if it may interrupt."""
    if pipeline.policy.on_violation == "interrupt" and config is not None:
        data: dict[str, Any] = _confess_task(
            _Call(pipeline, messages, model, tools, agent_name)
        ).result()
        return Confession.model_validate(data)
    return pipeline.run(messages, model=model, tools=tools, agent_name=agent_name, config=config)


async def arun_pipeline(
    pipeline: ConfessionPipeline,
    messages: Sequence[BaseMessage],
    *,
    model: BaseChatModel | None,
    tools: Sequence[Any] | None,
    agent_name: str | None,
    config: RunnableConfig | None,
) -> Confession:
    """Async :func:`run_pipeline`."""
    if pipeline.policy.on_violation == "interrupt" and config is not None:
        data: dict[str, Any] = await _aconfess_task(
            _Call(pipeline, messages, model, tools, agent_name)
        )
        return Confession.model_validate(data)
    return await pipeline.arun(
        messages, model=model, tools=tools, agent_name=agent_name, config=config
    )


def ask_review(confession: Confession, answer: BaseMessage | None = None) -> ReviewDecision:
    """Pause the graph for review; returns the decision once resumed."""
    decision = interrupt(review_payload(confession, answer), response_schema=ReviewDecision)
    return (
        decision
        if isinstance(decision, ReviewDecision)
        else ReviewDecision.model_validate(decision)
    )


NoticeReason = Literal["violation", "rejected", "review"]


def withheld_notice(
    confession: Confession,
    *,
    message_id: str | None,
    reason: NoticeReason = "violation",
    note: str = "",
) -> AIMessage:
    """The AI message that stands in for a withheld answer (same id: it replaces it)."""
    why = "; ".join(confession.reasons) or confession.summary()
    if reason == "review":
        text = f"[confessional] The answer is held for human review ({why})."
    else:
        cause = (
            "a reviewer rejected it"
            if reason == "rejected"
            else ("its confession reported a violation")
        )
        text = f"[confessional] The answer was withheld because {cause} ({why})."
    if note:
        text += f" Reviewer note: {note}"
    return AIMessage(
        content=text,
        id=message_id or f"confessional-{uuid.uuid4().hex}",
        response_metadata={
            "confessional": {"withheld": True, "confession_id": confession.id, "reason": reason}
        },
    )


def is_notice(message: BaseMessage) -> bool:
    """Whether ``message`` is a notice written by confessional (never confessed itself)."""
    meta = message.response_metadata.get("confessional") if isinstance(message, AIMessage) else None
    return isinstance(meta, Mapping) and bool(meta.get("withheld"))


def build_pipeline(
    *,
    model: BaseChatModel | None,
    confessor: Confessor | None,
    auditor: Auditor | None,
    policy: ConfessionPolicy | None,
    telemetry: ConfessionTelemetry | None,
    on_confession: Sequence[ConfessionSink],
    confess_without_tools: bool,
    background: bool,
) -> ConfessionPipeline:
    """The one pipeline a surface adapts; ``model`` seeds a default :class:`Confessor`."""
    if confessor is not None and model is not None and confessor.model is not None:
        raise ConfigurationError("pass either model= or a confessor with its own model, not both")
    return ConfessionPipeline(
        confessor=confessor if confessor is not None else Confessor(model),
        auditor=auditor,
        policy=policy,
        telemetry=telemetry,
        on_confession=on_confession,
        confess_without_tools=confess_without_tools,
        background=background,
    )


def as_confession(value: Any) -> Confession:
    """A state entry as a :class:`Confession` (checkpoint serialisers may hand back dicts)."""
    return value if isinstance(value, Confession) else Confession.model_validate(value)


def _field(state: Any, key: str) -> Any:
    if isinstance(state, Mapping):
        return state.get(key)
    return getattr(state, key, None)


class _ConfessionNode:
    def __init__(
        self,
        pipeline: ConfessionPipeline,
        *,
        model: BaseChatModel | None,
        tools: Sequence[Any] | None,
        next_node: str,
        agent_name: str | None,
        messages_key: str,
        withhold: bool,
    ) -> None:
        self.pipeline = pipeline
        self.model = model
        self.tools = tools
        self.next_node = next_node
        self.agent_name = agent_name
        self.messages_key = messages_key
        self.withhold = withhold

    def _messages(self, state: Any) -> list[BaseMessage]:
        messages = _field(state, self.messages_key)
        if messages is None:
            raise ConfigurationError(
                f"confession_node: the graph state has no {self.messages_key!r} key; "
                "pass messages_key= or use ConfessionState"
            )
        return list(messages)

    def _end_update(
        self, messages: list[BaseMessage], confession: Confession, **kw: Any
    ) -> dict[str, Any]:
        last = messages[-1] if messages else None
        if not self.withhold or not isinstance(last, AIMessage) or last.tool_calls:
            return {}
        notice = withheld_notice(confession, message_id=last.id, **kw)
        return {self.messages_key: [notice], "confession_withheld": [last]}

    def _route(self, messages: list[BaseMessage], confession: Confession) -> Command[Any]:
        update: dict[str, Any] = {"confessions": [confession]}
        if confession.verdict != "halt":
            return Command(update=update, goto=self.next_node)
        action = self.pipeline.policy.on_violation
        if action == "error":
            raise ConfessionHalted(confession)
        if action == "interrupt":
            last = messages[-1] if messages else None
            decision = ask_review(confession, last if isinstance(last, AIMessage) else None)
            if decision.action == "approve":
                return Command(update=update, goto=self.next_node)
            if self.pipeline.policy.reject_action == "error":
                raise ConfessionHalted(confession, "the reviewer rejected the flagged answer")
            update |= self._end_update(
                messages, confession, reason="rejected", note=decision.message or ""
            )
            return Command(update=update, goto=END)
        update |= self._end_update(messages, confession)
        return Command(update=update, goto=END)

    def invoke(self, state: Any, config: RunnableConfig) -> Command[Any]:
        messages = self._messages(state)
        confession = run_pipeline(
            self.pipeline,
            messages,
            model=self.model,
            tools=self.tools,
            agent_name=self.agent_name,
            config=config,
        )
        if confession.status == "skipped":
            return Command(goto=self.next_node)
        emit_confession(confession, config)
        return self._route(messages, confession)

    async def ainvoke(self, state: Any, config: RunnableConfig) -> Command[Any]:
        messages = self._messages(state)
        confession = await arun_pipeline(
            self.pipeline,
            messages,
            model=self.model,
            tools=self.tools,
            agent_name=self.agent_name,
            config=config,
        )
        if confession.status == "skipped":
            return Command(goto=self.next_node)
        await aemit_confession(confession, config)
        return self._route(messages, confession)


def confession_node(
    model: BaseChatModel | None = None,
    *,
    policy: ConfessionPolicy | None = None,
    next: str | None = None,  # LangGraph's own word for the next node
    confessor: Confessor | None = None,
    auditor: Auditor | None = None,
    telemetry: ConfessionTelemetry | None = None,
    on_confession: Sequence[ConfessionSink] = (),
    confess_without_tools: bool = False,
    background: bool = False,
    tools: Sequence[Any] | None = None,
    agent_name: str | None = None,
    messages_key: str = "messages",
    withhold: bool = True,
    name: str = "confession",
) -> RunnableLambda[Any, Command[Any]]:
    """A graph node that confesses the latest episode of ``state[messages_key]``.

    Args:
        model: the model that confesses. Default ``None``: use ``confessor``'s model. A
            graph has no single "agent model" the node could borrow, so one of the two is
            required (``ConfigurationError`` otherwise).
        policy: verdict and action. Default ``ConfessionPolicy()`` (flag, fail-open).
        next: node to go to when the run may go on. Default ``None``: ``END``. Do not add
            static edges out of this node: routing is by ``Command(goto=...)``, and a
            static edge would still fire after ``end``.
        confessor / auditor / telemetry / on_confession / confess_without_tools /
            background: passed to the :class:`~confessional.ConfessionPipeline` (see there
            for defaults).
        tools: tool definitions of the agent, so the report can cite tool specifications.
            Default ``None``: only the messages are used.
        agent_name: recorded on the confession and its span. Default ``None``.
        messages_key: state key holding the conversation. Default ``"messages"``.
        withhold: on ``end`` / a rejected review, replace the final answer in ``messages``
            with a notice and keep the original under ``confession_withheld``. Default
            ``True``: a flagged answer must not travel on.
        name: run name of the node in traces. Default ``"confession"``.

    Returns:
        A runnable usable as a node: ``builder.add_node("confession", confession_node(...))``.
        The state needs a ``confessions`` key with an adding reducer (see
        :class:`ConfessionState`).
    """
    if model is None and (confessor is None or confessor.model is None):
        raise ConfigurationError(
            "confession_node needs a model: pass model= or confessor=Confessor(model)"
        )
    if not messages_key:
        raise ConfigurationError("messages_key must be a non-empty state key")
    pipeline = build_pipeline(
        model=model,
        confessor=confessor,
        auditor=auditor,
        policy=policy,
        telemetry=telemetry,
        on_confession=on_confession,
        confess_without_tools=confess_without_tools,
        background=background,
    )
    node = _ConfessionNode(
        pipeline,
        model=model,
        tools=tools,
        next_node=next if next is not None else END,
        agent_name=agent_name,
        messages_key=messages_key,
        withhold=withhold,
    )
    return RunnableLambda(node.invoke, afunc=node.ainvoke, name=name)


def _last_has_tool_calls(messages_key: str) -> Callable[[Any], bool]:
    def check(state: Any) -> bool:
        messages = _field(state, messages_key) or []
        last = messages[-1] if messages else None
        return isinstance(last, AIMessage) and bool(last.tool_calls)

    return check


def add_confession_step(
    builder: StateGraph[Any, Any, Any, Any],
    *,
    after: str,
    then: str = END,
    tools_node: str | None = None,
    name: str = "confession",
    **node_kwargs: Any,
) -> str:
    """Wire a confession node between ``after`` (the agent) and ``then`` with one call.

    Without ``tools_node``: ``after -> confession -> then``. With ``tools_node`` (a ReAct
    loop): ``after`` goes to it while its last message calls tools, otherwise to the
    confession node, which goes on to ``then``; keep your ``tools -> after`` edge. The
    confession routes to ``END`` instead of ``then`` when the policy ends the run.
    ``node_kwargs`` go to :func:`confession_node`. Works the same inside a subgraph's
    builder. Returns the node name.
    """
    if after not in builder.nodes:
        raise ConfigurationError(f"add_confession_step: no node named {after!r} in the graph")
    if name in builder.nodes:
        raise ConfigurationError(f"add_confession_step: a node named {name!r} already exists")
    if tools_node is not None and tools_node not in builder.nodes:
        raise ConfigurationError(f"add_confession_step: no tools node named {tools_node!r}")
    if "confessions" not in builder.channels:
        raise ConfigurationError(
            "the graph state has no 'confessions' key: subclass "
            "confessional.langgraph.ConfessionState (or add "
            "confessions: Annotated[list[Confession], operator.add])"
        )
    node = confession_node(next=then, name=name, **node_kwargs)
    builder.add_node(name, node, destinations=(then, END) if then != END else (END,))
    if tools_node is None:
        builder.add_edge(after, name)
    else:
        has_calls = _last_has_tool_calls(node_kwargs.get("messages_key", "messages"))

        def route(state: Any) -> str:
            return tools_node if has_calls(state) else name

        path_map: dict[Hashable, str] = {tools_node: tools_node, name: name}
        builder.add_conditional_edges(after, route, path_map)
    return name
