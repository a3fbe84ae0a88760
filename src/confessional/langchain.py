"""LangChain surfaces: agent middleware for ``create_agent`` and a callback handler.

Both are thin adapters over :class:`~confessional.ConfessionPipeline`: they find the
episode, call the pipeline, and turn a ``"halt"`` verdict into LangChain control flow.

:class:`ConfessionMiddleware` (``create_agent(..., middleware=[ConfessionMiddleware()])``)

- ``trigger="turn"`` (default): once per tool-using turn, right after the model's final
  answer, inside ``wrap_model_call``. The confession uses the exact request the agent's
  model just answered (same model, same tools, same prefix), so nothing is captured in
  shared state and concurrent runs cannot mix.
- ``trigger="tool_round"``: after each tool round, before the next model call.
- Results accumulate in ``state["confessions"]``.
- ``flag`` / ``continue``: the run completes. ``error``: raises
  :class:`~confessional.ConfessionHalted`. ``end``: the flagged answer never enters
  ``messages``; a notice stands in for it and the original is kept under
  ``confession_withheld`` (``tool_round``: the next model call is skipped). Nothing jumps
  from ``after_agent``, which loops in LangChain 1.x; the notice has no tool calls, so the
  agent loop ends by its own routing.
- ``interrupt`` (needs a checkpointer): ``trigger="turn"`` puts a "held for review" notice
  in place of the answer and pauses in ``after_model``, reading the stored confession from
  state (nothing is recomputed on resume). ``tool_round`` pauses before the model call;
  its confession runs as a LangGraph task so a resume replays it. Resume with
  ``Command(resume="approve")`` (the answer is restored, or the model called) or
  ``"reject"`` (withheld as with ``end``, or ``ConfessionHalted`` when
  ``policy.reject_action="error"``).

:class:`ConfessionCallbackHandler` works with any Runnable (chains, AgentExecutor-style
loops, graphs). See its docstring for what a callback can and cannot stop.

Caveat for every surface: a model's answer is streamed token by token (``stream_mode=
"messages"``) while it is generated, before it can be confessed. ``end`` keeps it out of
state and out of the result, not out of a token stream that was already sent.
"""

from __future__ import annotations

import logging
import operator
import threading
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from langchain.agents.middleware.internal_call_transformer import InternalCallTransformer
from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    OmitFromInput,
    PrivateStateAttr,
)
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langgraph.runtime import Runtime
from langgraph.types import Command
from typing_extensions import NotRequired

from confessional import semconv
from confessional.audit import Auditor
from confessional.confession import Confession
from confessional.confessor import CONFESSION_TAGS, Confessor
from confessional.errors import ConfessionHalted, ConfigurationError
from confessional.langgraph import (
    aemit_confession,
    arun_pipeline,
    as_confession,
    ask_review,
    build_pipeline,
    emit_confession,
    is_notice,
    node_config,
    run_pipeline,
    withheld_notice,
)
from confessional.pipeline import ConfessionPipeline, ConfessionSink
from confessional.policy import ConfessionPolicy
from confessional.telemetry import ConfessionTelemetry

__all__ = [
    "AsyncConfessionCallbackHandler",
    "ConfessionAgentState",
    "ConfessionCallbackHandler",
    "ConfessionMiddleware",
    "Trigger",
]

logger = logging.getLogger("confessional")

Trigger = Literal["turn", "tool_round"]
"""When the middleware confesses:

- ``turn``: once per tool-using turn, after the final answer.
- ``tool_round``: after each tool round, before the next model call, so a run can be
  stopped midway.
"""


class ConfessionAgentState(AgentState[Any]):
    """Agent state keys added by :class:`ConfessionMiddleware`."""

    # LangGraph reads the reducer from the last Annotated entry.
    confessions: NotRequired[Annotated[list[Confession], OmitFromInput, operator.add]]
    confession_withheld: NotRequired[Annotated[list[AnyMessage], OmitFromInput, operator.add]]
    confession_pending: NotRequired[Annotated[dict[str, Any] | None, PrivateStateAttr]]
    """A turn's answer held for review: ``{"confession_id", "message_id", "answer"}``."""


def _final_answer(response: ModelResponse[Any]) -> AIMessage | None:
    for message in reversed(response.result):
        if isinstance(message, AIMessage):
            return None if message.tool_calls or is_notice(message) else message
    return None


class ConfessionMiddleware(AgentMiddleware[ConfessionAgentState, Any, Any]):
    """Confess each tool-using turn of a ``create_agent`` agent and act on the verdict.

    Args:
        model: the model that confesses. Default ``None``: the agent's own model, taken
            from each model request (the paper's setting, and a prompt-cache hit).
        policy: verdict and action. Default ``ConfessionPolicy()`` (flag, fail-open).
        trigger: see :data:`Trigger`. Default ``"turn"``.
        confessor: a configured :class:`~confessional.Confessor`. Default ``None``:
            ``Confessor(model)``. Its own model, if any, wins over the agent's.
        auditor / telemetry / on_confession / confess_without_tools / background: passed
            to the :class:`~confessional.ConfessionPipeline` (see there for defaults). With
            ``background=True`` the turn returns at once and nothing is written to state.
        agent_name: recorded on confessions and spans. Default ``None``: the
            ``create_agent(name=...)`` of the agent, if any.
    """

    state_schema = ConfessionAgentState
    # The confession's model call runs inside the model node; this keeps it out of
    # run.messages and the raw event log (the call is tagged by the Confessor).
    transformers = (InternalCallTransformer,)

    def __init__(
        self,
        model: BaseChatModel | None = None,
        *,
        policy: ConfessionPolicy | None = None,
        trigger: Trigger = "turn",
        confessor: Confessor | None = None,
        auditor: Auditor | None = None,
        telemetry: ConfessionTelemetry | None = None,
        on_confession: Sequence[ConfessionSink] = (),
        confess_without_tools: bool = False,
        background: bool = False,
        agent_name: str | None = None,
    ) -> None:
        super().__init__()
        if trigger not in get_args(Trigger):
            raise ConfigurationError(
                f"trigger={trigger!r} is not valid; choose one of: "
                + ", ".join(map(repr, get_args(Trigger)))
            )
        self.model = model
        self.trigger: Trigger = trigger
        self.agent_name = agent_name
        self.pipeline: ConfessionPipeline = build_pipeline(
            model=model,
            confessor=confessor,
            auditor=auditor,
            policy=policy,
            telemetry=telemetry,
            on_confession=on_confession,
            confess_without_tools=confess_without_tools,
            background=background,
        )

    @property
    def policy(self) -> ConfessionPolicy:
        return self.pipeline.policy

    # -- shared pieces ------------------------------------------------------------

    def _call_args(
        self, request: ModelRequest[Any], extra: Sequence[BaseMessage] = ()
    ) -> dict[str, Any]:
        config = node_config()
        prefix = [request.system_message] if request.system_message is not None else []
        agent_name = self.agent_name
        if agent_name is None and config is not None:
            agent_name = config.get("metadata", {}).get("lc_agent_name")
        return {
            "messages": [*prefix, *request.messages, *extra],
            "model": self.model if self.model is not None else request.model,
            "tools": list(request.tools),
            "agent_name": agent_name,
            "config": config,
        }

    def _after_turn(
        self, response: ModelResponse[Any], answer: AIMessage, confession: Confession
    ) -> ExtendedModelResponse[Any]:
        update: dict[str, Any] = {"confessions": [confession]}
        if confession.verdict == "halt":
            action = self.policy.on_violation
            if action == "error":
                raise ConfessionHalted(confession)
            reason: Literal["violation", "review"] = (
                "review" if action == "interrupt" else ("violation")
            )
            notice = withheld_notice(confession, message_id=answer.id, reason=reason)
            if action == "interrupt":
                update["confession_pending"] = {
                    "confession_id": confession.id,
                    "message_id": notice.id,
                    "answer": answer,
                }
            else:
                update["confession_withheld"] = [answer]
            result = [notice if m is answer else m for m in response.result]
            response = ModelResponse(result=result, structured_response=None)
        return ExtendedModelResponse(model_response=response, command=Command(update=update))

    def _before_round(self, confession: Confession) -> ExtendedModelResponse[Any] | None:
        """``None``: call the model; else the response that replaces the model call."""
        if confession.verdict != "halt":
            return None
        action = self.policy.on_violation
        if action == "error":
            raise ConfessionHalted(confession)
        reason: Literal["violation", "rejected"] = "violation"
        note = ""
        if action == "interrupt":
            decision = ask_review(confession)
            if decision.action == "approve":
                return None
            if self.policy.reject_action == "error":
                raise ConfessionHalted(confession, "the reviewer rejected the flagged run")
            reason, note = "rejected", decision.message or ""
        notice = withheld_notice(confession, message_id=None, reason=reason, note=note)
        return ExtendedModelResponse(
            model_response=ModelResponse(result=[notice]),
            command=Command(update={"confessions": [confession]}),
        )

    @staticmethod
    def _with_confession(
        response: ModelResponse[Any], confession: Confession
    ) -> ExtendedModelResponse[Any]:
        return ExtendedModelResponse(
            model_response=response, command=Command(update={"confessions": [confession]})
        )

    def _is_round_end(self, request: ModelRequest[Any]) -> bool:
        return bool(request.messages) and isinstance(request.messages[-1], ToolMessage)

    # -- hooks --------------------------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        if self.trigger == "tool_round":
            if not self._is_round_end(request):
                return handler(request)
            args = self._call_args(request)
            confession = run_pipeline(self.pipeline, **args)
            if confession.status == "skipped":
                return handler(request)
            emit_confession(confession, args["config"])
            stop = self._before_round(confession)
            return stop if stop is not None else self._with_confession(handler(request), confession)

        response = handler(request)
        answer = _final_answer(response)
        if answer is None:
            return response
        args = self._call_args(request, response.result)
        confession = self.pipeline.run(**args)
        if confession.status == "skipped":
            return response
        emit_confession(confession, args["config"])
        return self._after_turn(response, answer, confession)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        if self.trigger == "tool_round":
            if not self._is_round_end(request):
                return await handler(request)
            args = self._call_args(request)
            confession = await arun_pipeline(self.pipeline, **args)
            if confession.status == "skipped":
                return await handler(request)
            await aemit_confession(confession, args["config"])
            stop = self._before_round(confession)
            if stop is not None:
                return stop
            return self._with_confession(await handler(request), confession)

        response = await handler(request)
        answer = _final_answer(response)
        if answer is None:
            return response
        args = self._call_args(request, response.result)
        confession = await self.pipeline.arun(**args)
        if confession.status == "skipped":
            return response
        await aemit_confession(confession, args["config"])
        return self._after_turn(response, answer, confession)

    def after_model(
        self, state: ConfessionAgentState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        # Only a turn held for review gets here with work to do. Everything below reads
        # state, so re-running this node on resume repeats nothing.
        pending = state.get("confession_pending")
        messages = state.get("messages") or []
        if not pending or not messages or messages[-1].id != pending.get("message_id"):
            return None
        confession = next(
            (
                as_confession(c)
                for c in reversed(state.get("confessions") or [])
                if as_confession(c).id == pending.get("confession_id")
            ),
            None,
        )
        answer: AIMessage = pending["answer"]
        if confession is None:  # state edited by hand: nothing to review against
            return {"confession_pending": None}
        decision = ask_review(confession, answer)
        message_id = pending["message_id"]
        if decision.action == "approve":
            return {
                "messages": [answer.model_copy(update={"id": message_id})],
                "confession_pending": None,
            }
        if self.policy.reject_action == "error":
            raise ConfessionHalted(confession, "the reviewer rejected the flagged answer")
        notice = withheld_notice(
            confession, message_id=message_id, reason="rejected", note=decision.message or ""
        )
        return {
            "messages": [notice],
            "confession_withheld": [answer],
            "confession_pending": None,
        }

    async def aafter_model(
        self, state: ConfessionAgentState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        return self.after_model(state, runtime)


# -- callback handler -------------------------------------------------------------


@dataclass
class _ToolRun:
    name: str
    args: dict[str, Any]
    call_id: str | None
    seq: int
    output: str | None = None
    error: bool = False


@dataclass
class _RunTrace:
    """What one outermost run has shown through callbacks so far."""

    model_run: UUID | None = None
    model_input: list[BaseMessage] = field(default_factory=list)
    model_output: AIMessage | None = None
    model_end_seq: int = -1
    tools: list[Any] = field(default_factory=list)
    tool_runs: dict[UUID, _ToolRun] = field(default_factory=dict)


_IGNORED_TAGS = frozenset({*CONFESSION_TAGS[1:], semconv.TAG_FLAGGED})


def _own_run(tags: Sequence[str] | None, metadata: Mapping[str, Any] | None, name: Any) -> bool:
    """A run confessional itself started: its confession call or its verdict marker."""
    if tags and _IGNORED_TAGS.intersection(tags):
        return True
    if metadata and semconv.METADATA_CONFESSION_ID in metadata:
        return True
    return bool(name == semconv.LANGCHAIN_RUN_NAME)


def _text(output: Any) -> tuple[str, bool]:
    if isinstance(output, ToolMessage):
        return str(output.content), output.status == "error"
    if isinstance(output, BaseMessage):
        return str(output.content), False
    return str(output), False


class _Recorder:
    """Rebuilds each outermost run's episode from callback events, keyed by root run id."""

    def __init__(
        self,
        model: BaseChatModel | None,
        *,
        policy: ConfessionPolicy | None,
        confessor: Confessor | None,
        auditor: Auditor | None,
        telemetry: ConfessionTelemetry | None,
        on_confession: Sequence[ConfessionSink],
        confess_without_tools: bool,
        background: bool,
        agent_name: str | None,
        max_history: int,
    ) -> None:
        if model is None and (confessor is None or confessor.model is None):
            raise ConfigurationError(
                "a callback handler cannot see the agent's model object: pass model= or "
                "confessor=Confessor(model)"
            )
        if max_history < 1:
            raise ConfigurationError("max_history must be at least 1")
        self.pipeline = build_pipeline(
            model=model,
            confessor=confessor,
            auditor=auditor,
            policy=policy,
            telemetry=telemetry,
            on_confession=on_confession,
            confess_without_tools=confess_without_tools,
            background=background,
        )
        self.model = model
        self.agent_name = agent_name
        self.max_history = max_history
        self._lock = threading.Lock()
        self._root: dict[UUID, UUID] = {}
        self._members: dict[UUID, set[UUID]] = {}
        self._ignored: set[UUID] = set()
        self._traces: dict[UUID, _RunTrace] = {}
        self._history: OrderedDict[UUID, Confession] = OrderedDict()
        self._seq = 0
        if self.pipeline.policy.on_violation in ("end", "interrupt"):
            warnings.warn(
                f"{type(self).__name__} cannot {self.pipeline.policy.on_violation} a run: a "
                "callback sees the run only after its answer exists and has no control "
                "flow. Violations are recorded with verdict 'halt' but the run completes. "
                "Use on_violation='error' to raise, or ConfessionMiddleware / "
                "confession_node to end or interrupt.",
                UserWarning,
                stacklevel=3,
            )

    # -- bookkeeping (thread-safe; sync handlers run in executor threads under ainvoke)

    def _enter(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        own: bool,
    ) -> _RunTrace | None:
        with self._lock:
            if own or (parent_run_id is not None and parent_run_id in self._ignored):
                self._ignored.add(run_id)
                return None
            if parent_run_id is None:
                root = run_id
                self._traces[root] = _RunTrace()
                self._members[root] = {root}
            else:
                root = self._root.get(parent_run_id, parent_run_id)
                self._members.setdefault(root, set()).add(run_id)
            self._root[run_id] = root
            return self._traces.get(root)

    def _trace_of(self, run_id: UUID) -> _RunTrace | None:
        root = self._root.get(run_id)
        return self._traces.get(root) if root is not None else None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def chain_start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        name: Any,
    ) -> None:
        self._enter(run_id, parent_run_id, _own_run(tags, metadata, name))

    def chat_model_start(
        self,
        messages: list[list[BaseMessage]],
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        invocation_params: Mapping[str, Any] | None,
    ) -> None:
        trace = self._enter(run_id, parent_run_id, _own_run(tags, metadata, None))
        if trace is None or not messages:
            return
        with self._lock:
            trace.model_run = run_id
            trace.model_input = list(messages[0])
            trace.model_output = None
            tools = (invocation_params or {}).get("tools")
            if tools:
                trace.tools = list(tools)

    def llm_end(self, response: LLMResult, run_id: UUID) -> None:
        with self._lock:
            trace = self._trace_of(run_id)
            if trace is None or trace.model_run != run_id or not response.generations:
                return
            generation = response.generations[0][0] if response.generations[0] else None
            if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
                trace.model_output = generation.message
                trace.model_end_seq = self._next_seq()

    def tool_start(
        self,
        serialized: Mapping[str, Any] | None,
        input_str: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        inputs: Mapping[str, Any] | None,
        extra: Mapping[str, Any],
    ) -> None:
        trace = self._enter(run_id, parent_run_id, _own_run(tags, metadata, None))
        if trace is None:
            return
        name = str(extra.get("name") or (serialized or {}).get("name") or "tool")
        call_id = extra.get("tool_call_id")
        with self._lock:
            trace.tool_runs[run_id] = _ToolRun(
                name=name,
                args=dict(inputs) if inputs is not None else {"input": input_str},
                call_id=str(call_id) if call_id else None,
                seq=self._next_seq(),
            )

    def tool_end(self, output: Any, run_id: UUID, error: bool = False) -> None:
        with self._lock:
            trace = self._trace_of(run_id)
            tool_run = trace.tool_runs.get(run_id) if trace is not None else None
            if tool_run is None:
                return
            tool_run.output, failed = _text(output)
            tool_run.error = error or failed
            tool_run.seq = self._next_seq()

    def finish(self, run_id: UUID, parent_run_id: UUID | None) -> _RunTrace | None:
        """The finished root run's trace, or ``None`` when this is not a root we track."""
        if parent_run_id is not None:
            return None
        with self._lock:
            self._ignored.discard(run_id)
            trace = self._traces.pop(run_id, None)
            for member in self._members.pop(run_id, set()):
                self._root.pop(member, None)
                self._ignored.discard(member)
            return trace

    # -- episode and verdict ------------------------------------------------------

    @staticmethod
    def episode_messages(trace: _RunTrace) -> list[BaseMessage]:
        """The conversation as the last model call saw it, its answer, and later tools."""
        messages: list[BaseMessage] = list(trace.model_input)
        if trace.model_output is not None:
            messages.append(trace.model_output)
        answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
        requested = {
            c.get("id") for c in (trace.model_output.tool_calls if trace.model_output else [])
        }
        later = sorted(
            (r for r in trace.tool_runs.values() if r.seq > trace.model_end_seq),
            key=lambda r: r.seq,
        )
        for index, tool_run in enumerate(later):
            if tool_run.output is None or (tool_run.call_id and tool_run.call_id in answered):
                continue
            call_id = tool_run.call_id or f"callback_tool_{index}"
            if call_id not in requested:  # a tool no model call asked for (plain chains)
                messages.append(
                    AIMessage(
                        content="",
                        tool_calls=[
                            {
                                "name": tool_run.name,
                                "args": tool_run.args,
                                "id": call_id,
                                "type": "tool_call",
                            }
                        ],
                    )
                )
            messages.append(
                ToolMessage(
                    content=tool_run.output,
                    tool_call_id=call_id,
                    name=tool_run.name,
                    status="error" if tool_run.error else "success",
                )
            )
        return messages

    def record(self, run_id: UUID, confession: Confession) -> None:
        with self._lock:
            self._history[run_id] = confession
            while len(self._history) > self.max_history:
                self._history.popitem(last=False)

    def verdict(self, confession: Confession) -> None:
        if confession.verdict == "halt" and self.pipeline.policy.on_violation == "error":
            raise ConfessionHalted(confession)

    @property
    def confessions(self) -> list[Confession]:
        with self._lock:
            return list(self._history.values())

    def confession_for(self, run_id: UUID) -> Confession | None:
        with self._lock:
            return self._history.get(run_id)


class _HandlerBase:
    """Construction and accessors shared by the sync and async handlers."""

    def __init__(
        self,
        model: BaseChatModel | None = None,
        *,
        policy: ConfessionPolicy | None = None,
        confessor: Confessor | None = None,
        auditor: Auditor | None = None,
        telemetry: ConfessionTelemetry | None = None,
        on_confession: Sequence[ConfessionSink] = (),
        confess_without_tools: bool = False,
        background: bool = False,
        agent_name: str | None = None,
        max_history: int = 1000,
    ) -> None:
        self._recorder = _Recorder(
            model,
            policy=policy,
            confessor=confessor,
            auditor=auditor,
            telemetry=telemetry,
            on_confession=on_confession,
            confess_without_tools=confess_without_tools,
            background=background,
            agent_name=agent_name,
            max_history=max_history,
        )
        # Only a deliberate halt should reach the caller; other handler errors are logged.
        self.raise_error = self._recorder.pipeline.policy.on_violation == "error"
        self._warn_about_limits()

    def _warn_about_limits(self) -> None:
        """Subclasses warn here when their configuration cannot do what it asks."""

    @property
    def pipeline(self) -> ConfessionPipeline:
        return self._recorder.pipeline

    @property
    def confessions(self) -> list[Confession]:
        """Confessions of finished runs, oldest first (skipped turns excluded)."""
        return self._recorder.confessions

    def confession_for(self, run_id: UUID) -> Confession | None:
        """The confession of the outermost run ``run_id`` (set it with ``config["run_id"]``)."""
        return self._recorder.confession_for(run_id)


class ConfessionCallbackHandler(_HandlerBase, BaseCallbackHandler):
    """Confess every outermost run of any Runnable it is attached to.

    Pass it in ``config={"callbacks": [handler]}``. It rebuilds each run's episode from
    ``on_chat_model_start`` / ``on_llm_end`` / ``on_tool_*`` events, keyed by run id and
    parent run id so concurrent runs never mix, and confesses when the outermost run ends
    (``on_chain_end`` with no parent). Its own confession call is ignored.

    What a callback can stop: only ``on_violation="error"`` halts, by raising
    :class:`~confessional.ConfessionHalted` from this sync handler (``raise_error`` is
    set for it) once the run has produced its output; the caller gets the exception
    instead of the result, under ``invoke`` and ``ainvoke`` alike. ``end`` and
    ``interrupt`` cannot be honoured from a callback (a ``UserWarning`` says so at
    construction); the confession is recorded with verdict ``halt`` and the run completes.
    Use :class:`ConfessionMiddleware` or :func:`confessional.langgraph.confession_node`
    for those. Confessions are not streamed live: the run is over when they are made.
    ``on_agent_action``/``on_agent_finish`` are not used: ``create_agent`` graphs never
    fire them.

    Args:
        model: the model that confesses; required unless ``confessor`` has one, because
            callbacks carry no model object to borrow.
        policy / confessor / auditor / telemetry / on_confession / confess_without_tools /
            background: as for :class:`ConfessionMiddleware`.
        agent_name: recorded on confessions and spans. Default ``None``.
        max_history: confessions kept for :attr:`confessions` and :meth:`confession_for`.
            Default 1000: bounded memory for a long-lived handler.
    """

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.chain_start(run_id, parent_run_id, tags, metadata, kwargs.get("name"))

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.chat_model_start(
            messages, run_id, parent_run_id, tags, metadata, kwargs.get("invocation_params")
        )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.llm_end(response, run_id)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.tool_start(
            serialized, input_str, run_id, parent_run_id, tags, metadata, inputs, kwargs
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.tool_end(output, run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.tool_end(f"{type(error).__name__}: {error}", run_id, error=True)

    def on_chain_end(
        self,
        outputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        trace = self._recorder.finish(run_id, parent_run_id)
        if trace is None:
            return
        confession = self.pipeline.run(
            _Recorder.episode_messages(trace),
            model=self._recorder.model,
            tools=trace.tools or None,
            agent_name=self._recorder.agent_name,
            run_id=run_id,
        )
        if confession.status == "skipped":
            return
        self._recorder.record(run_id, confession)
        self._recorder.verdict(confession)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.finish(run_id, parent_run_id)


class AsyncConfessionCallbackHandler(_HandlerBase, AsyncCallbackHandler):
    """Async variant of :class:`ConfessionCallbackHandler`: confesses with ``arun``.

    It never blocks the event loop, but LangChain swallows (logs) errors from async
    handlers when the run is driven synchronously (``invoke``/``stream``), so with
    ``on_violation="error"`` it halts only ``ainvoke``/``astream`` runs; a ``UserWarning``
    says so at construction. Use the sync handler to halt everywhere. Same arguments.
    """

    def _warn_about_limits(self) -> None:
        if self.raise_error:
            warnings.warn(
                "AsyncConfessionCallbackHandler halts only async runs (ainvoke/astream): "
                "LangChain logs and swallows errors raised by async callback handlers in "
                "sync runs. Use ConfessionCallbackHandler to halt sync runs too.",
                UserWarning,
                stacklevel=3,  # the caller's line, past __init__ and this hook
            )

    async def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.chain_start(run_id, parent_run_id, tags, metadata, kwargs.get("name"))

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.chat_model_start(
            messages, run_id, parent_run_id, tags, metadata, kwargs.get("invocation_params")
        )

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.llm_end(response, run_id)

    async def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.tool_start(
            serialized, input_str, run_id, parent_run_id, tags, metadata, inputs, kwargs
        )

    async def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.tool_end(output, run_id)

    async def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.tool_end(f"{type(error).__name__}: {error}", run_id, error=True)

    async def on_chain_end(
        self,
        outputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        trace = self._recorder.finish(run_id, parent_run_id)
        if trace is None:
            return
        confession = await self.pipeline.arun(
            _Recorder.episode_messages(trace),
            model=self._recorder.model,
            tools=trace.tools or None,
            agent_name=self._recorder.agent_name,
            run_id=run_id,
        )
        if confession.status == "skipped":
            return
        self._recorder.record(run_id, confession)
        self._recorder.verdict(confession)

    async def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._recorder.finish(run_id, parent_run_id)
