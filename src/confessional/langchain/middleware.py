"""``ConfessionMiddleware``: confessions for ``create_agent`` agents.

- ``trigger="turn"`` (default): once per tool-using turn, right after the model's final
  answer, inside ``wrap_model_call``. The confession replays the exact request the
  agent's model just answered (same model, tools, settings and prefix), so nothing is
  captured in shared state and concurrent runs cannot mix.
- ``trigger="tool_round"``: after each tool round, before the next model call, so a run
  can be stopped midway.

The core decides the action; this module maps it (see :data:`~confessional.Action`):

============  ====================================  ==========================================
action        ``turn``                              ``tool_round``
============  ====================================  ==========================================
proceed       the answer is kept                    the model is called
withhold      a notice replaces the answer, the     the model call is skipped; a notice ends
              original is kept in                   the turn
              ``confession_withheld``
review        a notice stands in and the run        the run pauses before the model call
              pauses in ``after_agent`` (reads
              state only, so a resume repeats
              nothing)
raise         :class:`~confessional.ConfessionHalted`
============  ====================================  ==========================================

A review pause's value is a LangChain ``HITLRequest`` and it resumes with the HITL
response (approve, reject with a message, edit with a replacement answer) or
``"approve"`` / ``"reject"``; :mod:`confessional.review` lists and resumes paused runs.

Nothing jumps from ``after_agent``, which loops in LangChain 1.x: a notice has no tool
calls, so the agent loop ends by its own routing. The ``after_agent`` hook is one graph step
per turn: it confesses a turn a limit middleware ended (no model answered it), and pauses
a turn held for review. Every other ending is confessed inside the model and tool nodes
(the README's "Every ending is confessed" table), so confessing never costs the run a
step of its ``recursion_limit`` beyond that one. Both triggers confess every ending: with
``tool_round`` it is the only confession to see the run's last round.

A model's answer is streamed token by token (``stream_mode="messages"``) before it can be
confessed: ``withhold`` keeps it out of state and the result, not out of a token stream
that was already sent.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, cast, get_args

from langchain.agents.middleware.internal_call_transformer import InternalCallTransformer
from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    OmitFromInput,
    PrivateStateAttr,
    ToolCallRequest,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.runtime import Runtime
from langgraph.types import Command, TracePolicy, omit_payload
from typing_extensions import NotRequired, assert_never

from confessional._aio import adrive, drive
from confessional._control import (
    aconfess_durably,
    as_confession,
    confess_durably,
    is_notice,
    node_config,
    resolve,
    withheld_notice,
)
from confessional._graph import CheckpointerCheck
from confessional.confession import Confession
from confessional.ending import Ending, ending_of_error, ending_of_messages
from confessional.errors import ConfigurationError
from confessional.options import ConfessionOptions
from confessional.pipeline import ConfessionPipeline, EpisodeCall
from confessional.policy import ConfessionPolicy
from confessional.telemetry import ConfessionTelemetry

__all__ = ["ConfessionAgentState", "ConfessionMiddleware", "Trigger"]

Trigger = Literal["turn", "tool_round"]
"""When the middleware confesses: ``turn`` (after the final answer) or ``tool_round``
(after each tool round, before the next model call)."""


class _ConfessingState(AgentState[Any]):
    # LangGraph reads the reducer from the last Annotated entry.
    confessions: NotRequired[Annotated[list[Confession], OmitFromInput, operator.add]]
    confession_steps_left: NotRequired[Annotated[int | None, PrivateStateAttr]]
    """Graph steps left before the recursion limit at the last model call that called
    tools: the next call measures the loop's length from it (see
    ``_unless_last_model_call``)."""


class _WithholdingState(_ConfessingState):
    confession_withheld: NotRequired[Annotated[list[AnyMessage], OmitFromInput, operator.add]]


class ConfessionAgentState(_WithholdingState):
    """Agent state keys added by :class:`ConfessionMiddleware`: every key any
    configuration adds. A middleware declares only the keys its configuration can write
    (each state key costs every graph step a channel read and copy): ``confessions`` and
    ``confession_steps_left`` always; ``confession_withheld`` when a turn's answer can be
    withheld (``trigger="turn"`` and a policy that can halt); ``confession_pending`` when
    a turn can pause for review. With a policy subclass, every key."""

    confession_pending: NotRequired[Annotated[dict[str, Any] | None, PrivateStateAttr]]
    """A turn's answer held for review: ``{"confession_id", "message_id", "answer"}``."""


@dataclass(frozen=True)
class _CallModel:
    """Step request: call the agent's model (the ``handler``)."""


@dataclass(frozen=True)
class _Confess:
    request: EpisodeCall
    durable: bool


_CALL_MODEL = _CallModel()


@dataclass(frozen=True)
class _Replay:
    """What a confession replays of the agent's model call: its model, tools, system
    message and request parameters (the tool choice too: providers key their cache on it)."""

    model: BaseChatModel | None = None
    tools: list[Any] | None = None
    system_message: SystemMessage | None = None
    model_settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, request: ModelRequest[Any]) -> _Replay:
        settings = request.model_settings
        if request.tool_choice is not None:
            settings = {**settings, "tool_choice": request.tool_choice}
        return cls(request.model, list(request.tools), request.system_message, settings)


_MAX_LOOP = 20
"""Longest plausible loop between two model calls, in graph steps (model, tools and the
hooks of other middleware); a longer gap means the two calls were in different runs."""
_WATCH_STEPS = 2 * _MAX_LOOP
"""Steps left at or below which each model call records them in state for the next one.
Further from the limit no loop of plausible length can reach it, at this call or the
next, so the count is not needed there (and state is not written once per tool round)."""
_SCRATCHPAD_KEY = "__pregel_scratchpad"
"""LangGraph's per-task scratchpad in the config: its ``step`` and ``stop`` give the steps
left before ``GraphRecursionError`` (what ``langgraph.managed.RemainingSteps`` reads)."""


def _steps_left(config: Any) -> int | None:
    """Graph steps the run may still take after this one, or ``None`` when unknown."""
    scratchpad = ((config or {}).get("configurable") or {}).get(_SCRATCHPAD_KEY)
    step, stop = getattr(scratchpad, "step", None), getattr(scratchpad, "stop", None)
    if not isinstance(step, int) or not isinstance(stop, int):
        return None
    return stop - step


def _after_tool_round(messages: list[AnyMessage]) -> bool:
    return bool(messages) and isinstance(messages[-1], ToolMessage)


def _final_answer(response: ModelResponse[Any]) -> AIMessage | None:
    for message in reversed(response.result):
        if isinstance(message, AIMessage):
            return None if message.tool_calls or is_notice(message) else message
    return None


def _with(
    response: ModelResponse[Any], update: dict[str, Any]
) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
    """``response`` with a state update (``response`` itself when there is none)."""
    if not update:
        return response
    return ExtendedModelResponse(model_response=response, command=Command(update=update))


class ConfessionMiddleware(AgentMiddleware[ConfessionAgentState, Any, Any]):
    """Confess each tool-using turn of a ``create_agent`` agent and act on the verdict.

    Args:
        model: the model that confesses. Default ``None``: the agent's own model, taken
            from each model request (the paper's setting, and a prompt-cache hit).
        options: every pipeline setting, see :class:`~confessional.ConfessionOptions`.
            Each of its fields is also accepted as a keyword (``sample_rate=0.1``).
        trigger: see :data:`Trigger`. Default ``"turn"``.
    """

    state_schema = ConfessionAgentState
    # Its hook spans record no state payload, as LangChain's own middleware do: a tracer
    # serialising the whole conversation into every hook span costs more than the hook.
    # The messages are still on the model-call spans.
    trace_policy = TracePolicy(process_inputs=omit_payload)
    # The confession's model call runs inside the model node; this keeps it out of
    # run.messages and the raw event log (the call is tagged by the Confessor).
    transformers = (InternalCallTransformer,)

    def __init__(
        self,
        model: Any = None,
        *,
        options: ConfessionOptions | None = None,
        trigger: Trigger = "turn",
        **settings: Any,
    ) -> None:
        super().__init__()
        if trigger not in get_args(Trigger):
            raise ConfigurationError(
                f"trigger={trigger!r} is not valid; choose one of: "
                + ", ".join(map(repr, get_args(Trigger)))
            )
        self.pipeline = ConfessionPipeline(ConfessionOptions.merge(options, settings, model=model))
        self.trigger: Trigger = trigger
        # The agent's model call as of its last one: hooks without a model request (a
        # tool's exception, a limit's end) replay it.
        self._agent = _Replay()
        self._check_checkpointer = CheckpointerCheck("ConfessionMiddleware")
        reviews = trigger == "turn" and self.policy.on_violation == "interrupt"
        # Only the keys this configuration writes: each key costs every graph step a
        # channel. LangGraph drops an update to an undeclared key without a word, so a
        # policy subclass, which may act on its own terms, keeps every key. Every key is
        # NotRequired, so the hooks read any of these states as a ConfessionAgentState.
        self.state_schema = cast(
            "type[ConfessionAgentState]",
            ConfessionAgentState
            if reviews or type(self.policy) is not ConfessionPolicy
            else _WithholdingState
            if trigger == "turn" and self.policy.halts
            else _ConfessingState,
        )
        if reviews:
            # Only a configuration that can hold a turn's answer for review reads it back
            # (in after_agent, once per turn).
            self.__class__ = _ReviewingConfessionMiddleware

    @property
    def name(self) -> str:
        return "ConfessionMiddleware"

    @property
    def policy(self) -> ConfessionPolicy:
        return self.pipeline.policy

    @property
    def _telemetry(self) -> ConfessionTelemetry:
        # Decides whether a review's description may quote the report.
        return self.pipeline.options.telemetry

    def _request(
        self,
        request: ModelRequest[Any],
        answer: list[BaseMessage] | None = None,
        ending: Ending | None = None,
    ) -> EpisodeCall:
        call = self._episode(_Replay.of(request), [*request.messages, *(answer or [])], ending)
        if self.policy.on_violation == "interrupt":
            self._check_checkpointer(call.config)
        return call

    def _episode(
        self, replay: _Replay, messages: Sequence[BaseMessage], ending: Ending | None
    ) -> EpisodeCall:
        """The call that confesses ``messages`` as the agent's ``replay`` model call saw
        them; every hook's confession is built here."""
        config = node_config()
        agent_name = self.pipeline.options.agent_name
        if agent_name is None and config is not None:
            agent_name = config.get("metadata", {}).get("lc_agent_name")
        prefix = [replay.system_message] if replay.system_message is not None else []
        return EpisodeCall(
            [*prefix, *messages],
            model=replay.model,
            tools=replay.tools,
            agent_name=agent_name,
            config=config,
            model_settings=replay.model_settings,
            ending=ending,
        )

    def _steps(
        self, request: ModelRequest[Any]
    ) -> Generator[_CallModel | _Confess, Any, ModelResponse[Any] | ExtendedModelResponse[Any]]:
        """One step sequence for both hooks: yields model calls and confessions."""
        update: dict[str, Any] = {}
        if self.trigger == "tool_round" and _after_tool_round(request.messages):
            confession: Confession = yield _Confess(self._request(request), durable=True)
            if confession.status != "skipped":
                resolution = resolve(self.policy, confession, telemetry=self._telemetry)
                match resolution.action:
                    case "proceed":
                        update["confessions"] = [confession]
                    case "withhold" | "review" | "raise":
                        # resolve() has paused (review) or raised (raise) by now; what is
                        # left of them is a stop, which is the fail-safe reading.
                        notice = resolution.notice(confession, None)
                        return _with(ModelResponse(result=[notice]), {"confessions": [confession]})
                    case _:
                        assert_never(resolution.action)

        self._agent = _Replay.of(request)
        try:
            response: ModelResponse[Any] = yield _CALL_MODEL
        except Exception as exc:  # the run ends here: confess what it did, then re-raise
            yield _Confess(self._request(request, ending=ending_of_error(exc)), durable=False)
            raise
        answer = _final_answer(response)
        if answer is None:
            return (yield from self._unless_last_model_call(request, response, update))
        if self.trigger == "tool_round":  # its last round was confessed before this call
            return _with(response, update)
        confession = yield _Confess(self._request(request, response.result), durable=False)
        if confession.status == "skipped":
            return response
        update = {"confessions": [confession]}
        match confession.action:
            case "proceed":
                return _with(response, update)
            case "review":
                notice = withheld_notice(confession, message_id=answer.id, reason="review")
                update["confession_pending"] = {
                    "confession_id": confession.id,
                    "message_id": notice.id,
                    "answer": answer,
                }
            case "withhold" | "raise":
                notice = resolve(self.policy, confession).notice(confession, answer.id)
                update["confession_withheld"] = [answer]
            case _:
                assert_never(confession.action)
        result = [notice if m is answer else m for m in response.result]
        return _with(ModelResponse(result=result, structured_response=None), update)

    def _unless_last_model_call(
        self, request: ModelRequest[Any], response: ModelResponse[Any], update: dict[str, Any]
    ) -> Generator[_Confess, Any, ModelResponse[Any] | ExtendedModelResponse[Any]]:
        """A response that calls tools: when the recursion limit will stop the run before
        the model can answer again, confess now (inside this node, so confessing adds no
        graph step). The loop's length is measured between two model calls of the run
        (two steps until then: model, tools). Far from the limit there is nothing to
        measure (see ``_WATCH_STEPS``). ``update``: the state this node writes already."""
        left = _steps_left(node_config())
        if left is None or left > _WATCH_STEPS:
            return _with(response, update)
        before = request.state.get("confession_steps_left")
        loop = before - left if isinstance(before, int) and 0 < before - left <= _MAX_LOOP else 2
        if left - loop >= 0:
            return _with(response, {**update, "confession_steps_left": left})
        ending = Ending("recursion_limit", f"{left} graph step(s) left; the loop takes {loop}")
        confession = yield _Confess(
            self._request(request, response.result, ending=ending), durable=False
        )
        confessions = [*update.get("confessions", []), confession]
        return _with(response, {"confessions": confessions, "confession_steps_left": left})

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        try:
            return handler(request)
        except Exception as exc:  # the run ends here: confess what it did, then re-raise
            self.pipeline.run(self._tool_failure(request, exc))
            raise

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        try:
            return await handler(request)
        except Exception as exc:
            await self.pipeline.arun(self._tool_failure(request, exc))
            raise

    def _tool_failure(self, request: ToolCallRequest, error: Exception) -> EpisodeCall:
        """The episode up to a tool call whose exception ends the run, with its failure."""
        call = request.tool_call
        failed = ToolMessage(
            f"{type(error).__name__}: {error}",
            tool_call_id=call.get("id") or "",
            name=call.get("name"),
            status="error",
        )
        messages = [*request.state.get("messages", []), failed]
        return self._episode(self._agent, messages, ending_of_error(error))

    def _limit_ending(self, state: ConfessionAgentState) -> EpisodeCall | None:
        """The episode of a turn a limit middleware ended (``exit_behavior="end"``): no
        model answered, so ``wrap_model_call`` confessed nothing. ``None`` otherwise."""
        messages = state.get("messages") or []
        ending = ending_of_messages(messages)
        if ending is None:
            return None
        return self._episode(self._agent, messages, ending)

    def _settle_limit_ending(self, confession: Confession) -> dict[str, Any] | None:
        if confession.status == "skipped":
            return None
        # The limit's notice already stands in for an answer, so there is nothing to
        # withhold; a review pauses here and a raise raises.
        resolve(self.policy, confession, telemetry=self._telemetry)
        return {"confessions": [confession]}

    def after_agent(
        self, state: ConfessionAgentState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        request = self._limit_ending(state)
        if request is None:
            return None
        return self._settle_limit_ending(confess_durably(self.pipeline, request))

    async def aafter_agent(
        self, state: ConfessionAgentState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        request = self._limit_ending(state)
        if request is None:
            return None
        return self._settle_limit_ending(await aconfess_durably(self.pipeline, request))

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        def perform(step: _CallModel | _Confess) -> Any:
            if isinstance(step, _CallModel):
                return handler(request)
            if step.durable:
                return confess_durably(self.pipeline, step.request)
            return self.pipeline.run(step.request)

        return drive(self._steps(request), perform)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        async def perform(step: _CallModel | _Confess) -> Any:
            if isinstance(step, _CallModel):
                return await handler(request)
            if step.durable:
                return await aconfess_durably(self.pipeline, step.request)
            return await self.pipeline.arun(step.request)

        return await adrive(self._steps(request), perform)


class _ReviewingConfessionMiddleware(ConfessionMiddleware):
    """The middleware when a turn can pause for review: adds the ``after_agent`` pause.

    The pause runs once per turn, after the agent loop, instead of after every model call:
    the answer it reviews is the turn's last message, and the loop has ended by then.
    """

    def after_agent(
        self, state: ConfessionAgentState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        # A turn held for review has work to do here. Everything below reads state, so
        # re-running this node on resume repeats nothing.
        pending = state.get("confession_pending")
        messages = state.get("messages") or []
        if not pending or not messages or messages[-1].id != pending.get("message_id"):
            return super().after_agent(state, runtime)
        confession = next(
            (
                c
                for c in map(as_confession, reversed(state.get("confessions") or []))
                if c.id == pending.get("confession_id")
            ),
            None,
        )
        if confession is None:  # state edited by hand: nothing to review against
            return {"confession_pending": None}
        answer: AIMessage = pending["answer"]
        resolution = resolve(self.policy, confession, answer, telemetry=self._telemetry)
        message_id = pending["message_id"]
        match resolution.action:
            case "proceed":
                restored = resolution.answer(answer).model_copy(update={"id": message_id})
                delivered: dict[str, Any] = {"messages": [restored], "confession_pending": None}
                if resolution.edited:  # the reviewer's replacement went out; keep the original
                    delivered["confession_withheld"] = [answer]
                return delivered
            case "withhold" | "review" | "raise":  # review was decided; raise has raised
                return {
                    "messages": [resolution.notice(confession, message_id)],
                    "confession_withheld": [answer],
                    "confession_pending": None,
                }
            case _:
                assert_never(resolution.action)

    async def aafter_agent(
        self, state: ConfessionAgentState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        pending = state.get("confession_pending")
        messages = state.get("messages") or []
        if not pending or not messages or messages[-1].id != pending.get("message_id"):
            return await super().aafter_agent(state, runtime)
        return self.after_agent(state, runtime)  # reads state only: no I/O to await
