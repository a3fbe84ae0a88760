"""LangGraph surface: a confession node for any ``StateGraph`` whose state has messages.

``confession_node(...)`` returns a node (sync and async) that confesses the latest episode
of ``state["messages"]`` through the one :class:`~confessional.ConfessionPipeline`,
appends the result to ``state["confessions"]`` and routes with ``Command(goto=...)``:

- pass / ``flag`` / ``continue``: to ``next`` (``END`` when not given);
- ``end``: to ``END``, downstream nodes do not run, and the flagged final answer is
  replaced in ``messages`` by a notice (the original goes to ``confession_withheld``);
- ``interrupt``: ``langgraph.types.interrupt`` with the report as payload (needs a
  checkpointer). The payload is a LangChain ``HITLRequest`` (see
  :func:`confessional.review.review_payload`). Resume with the HITL response
  (``{"decisions": [{"type": "approve"}]}``, ``reject`` with a ``message``, ``edit`` with
  a replacement answer) or ``"approve"`` / ``"reject"``: approve continues to ``next``,
  edit continues with the replacement; reject ends as ``end`` does, or raises when
  ``policy.reject_action="error"``. :mod:`confessional.review` lists and resumes them;
- ``error``: raises :class:`~confessional.ConfessionHalted`.

The node re-executes from its start when a graph resumes. The confession is therefore run
inside a LangGraph ``@task`` when the policy may interrupt: on resume the stored result
is replayed from the checkpoint and the confession model is never called twice.

``add_confession_step(builder, after="agent", then="next_node")`` wires the node with one
call. Every confession is also written to the ``custom`` stream and dispatched as a
``"confession"`` custom event (``astream_events``) while the graph runs.

The control flow it shares with the middleware (review pauses, notices, the durable
task) lives in :mod:`confessional.control`; this module only maps actions to routing.

What the node sees of how a run ended: only the episodes routed to it, that is a final
answer (and whatever the graph routes to it on purpose). A run that never reaches it is
invisible to it: the recursion limit (``GraphRecursionError`` aborts the graph between
steps, so no node runs after it), a tool or model exception that ends the run, or a caller
leaving the stream early. For those, attach
:class:`~confessional.langchain.ConfessionCallbackHandler` (or its async twin) with
``config={"callbacks": [handler]}``: its error path confesses them with the ending's
``unfinished`` finding. The README's "Every ending is confessed" table has every case.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, MessagesState, StateGraph
from langgraph.types import Command
from typing_extensions import assert_never

from confessional._control import aconfess_durably, confess_durably, resolve
from confessional._graph import CheckpointerCheck
from confessional.confession import Confession
from confessional.errors import ConfigurationError
from confessional.options import ConfessionOptions
from confessional.pipeline import ConfessionPipeline, EpisodeCall
from confessional.review import ReviewDecision, review_payload
from confessional.sinks import CONFESSION_EVENT, confession_event_payload

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


def _field(state: Any, key: str) -> Any:
    if isinstance(state, Mapping):
        return state.get(key)
    return getattr(state, key, None)


class _ConfessionNode:
    """Maps the core's action to graph routing: proceed to ``next``, withhold to ``END``."""

    def __init__(
        self,
        pipeline: ConfessionPipeline,
        *,
        tools: Sequence[Any] | None,
        next_node: str,
        messages_key: str,
        withhold: bool,
    ) -> None:
        self.pipeline = pipeline
        self.tools = tools
        self.next_node = next_node
        self.messages_key = messages_key
        self.withhold = withhold
        self._check_checkpointer = CheckpointerCheck("confession_node")

    def _request(self, state: Any, config: RunnableConfig) -> EpisodeCall:
        messages = _field(state, self.messages_key)
        if messages is None:
            raise ConfigurationError(
                f"confession_node: the graph state has no {self.messages_key!r} key; "
                "pass messages_key= or use ConfessionState"
            )
        if self.pipeline.policy.on_violation == "interrupt":
            self._check_checkpointer(config)
        return EpisodeCall(list(messages), tools=self.tools, config=config)

    def _route(self, request: EpisodeCall, confession: Confession) -> Command[Any]:
        if confession.status == "skipped":
            return Command(goto=self.next_node)
        update: dict[str, Any] = {"confessions": [confession]}
        messages = request.messages
        last = messages[-1] if isinstance(messages, list) and messages else None
        answer = last if isinstance(last, AIMessage) and not last.tool_calls else None
        resolution = resolve(
            self.pipeline.policy, confession, answer, telemetry=self.pipeline.options.telemetry
        )
        match resolution.action:
            case "proceed":
                if answer is not None and resolution.edited:  # deliver the reviewer's version
                    update[self.messages_key] = [resolution.answer(answer)]
                    update["confession_withheld"] = [answer]
                return Command(update=update, goto=self.next_node)
            case "withhold" | "review" | "raise":  # review was decided; raise has raised
                if self.withhold and answer is not None:
                    notice = resolution.notice(confession, answer.id)
                    update |= {self.messages_key: [notice], "confession_withheld": [answer]}
                return Command(update=update, goto=END)
            case _:
                assert_never(resolution.action)

    def invoke(self, state: Any, config: RunnableConfig) -> Command[Any]:
        request = self._request(state, config)
        return self._route(request, confess_durably(self.pipeline, request))

    async def ainvoke(self, state: Any, config: RunnableConfig) -> Command[Any]:
        request = self._request(state, config)
        return self._route(request, await aconfess_durably(self.pipeline, request))


def confession_node(
    model: Any = None,
    *,
    options: ConfessionOptions | None = None,
    next: str | None = None,  # LangGraph's own word for the next node
    tools: Sequence[Any] | None = None,
    messages_key: str = "messages",
    withhold: bool = True,
    name: str = "confession",
    **settings: Any,
) -> RunnableLambda[Any, Command[Any]]:
    """A graph node that confesses the latest episode of ``state[messages_key]``.

    Args:
        model: the model that confesses (``ConfessionOptions.model``). A graph has no
            single "agent model" the node could borrow, so this or a ``confessor`` with a
            model is required (``ConfigurationError`` otherwise).
        options: every pipeline setting, see :class:`~confessional.ConfessionOptions`.
            Each of its fields is also accepted as a keyword (``sample_rate=0.1``).
        next: node to go to when the run may go on. Default ``None``: ``END``. Do not add
            static edges out of this node: routing is by ``Command(goto=...)``, and a
            static edge would still fire after ``end``.
        tools: tool definitions of the agent, so the report can cite tool specifications.
            Default ``None``: only the messages are used.
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
    resolved = ConfessionOptions.merge(
        options, settings, model=model, required_by="confession_node"
    )
    if not messages_key:
        raise ConfigurationError("messages_key must be a non-empty state key")
    node = _ConfessionNode(
        ConfessionPipeline(resolved),
        tools=tools,
        next_node=next if next is not None else END,
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
