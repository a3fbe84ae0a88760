"""Callback handlers: confessions for any Runnable, with no code changes.

A handler rebuilds each outermost run's episode from callback events
(:mod:`confessional.langchain._recorder`) and confesses when that run ends
(``on_chain_end`` with no parent). Its own confession call is ignored.

Every ending is confessed (see :mod:`confessional.ending`):

- A run that returns: with its answer, or with the closing notice of LangChain's
  ``ModelCallLimitMiddleware`` / ``ToolCallLimitMiddleware`` (``exit_behavior="end"``),
  read from the run's output.
- A run that raises (``on_chain_error`` with no parent): ``GraphRecursionError`` from a
  looping ``create_agent`` or ``StateGraph``, a limit middleware's ``exit_behavior="error"``,
  a tool or model exception. This is the only surface that sees a recursion abort of a
  plain ``StateGraph``: no node or middleware hook runs after it. The confession is
  delivered to the sinks and recorded; it never raises or replaces the run's own
  exception, whatever the policy (its action is recorded as ``proceed``: the caller gets
  the original exception either way). A call that never returned gets a reply saying so.
- A run whose caller stops reading its stream (a ``break`` out of ``stream()``, or
  ``aclose()`` of ``astream()``): LangChain reports ``GeneratorExit``, confessed with the
  ending ``cap`` (the caller's own cap) while the stream closes.

Not confessed: ``KeyboardInterrupt`` and a cancelled task (the caller asked to stop now,
and a confession's model call would delay that), and LangGraph's own control flow
(``GraphBubbleUp``: interrupts, commands to a parent graph).

What a callback can do with the core's action: only ``raise`` (``on_violation="error"``)
acts, by raising :class:`~confessional.ConfessionHalted` from the handler once the run has
produced its output, so the caller gets the exception instead of the result. A callback
sees the run only after its answer exists and has no control flow, so ``withhold`` and
``review`` cannot be honoured: a ``UserWarning`` says so at construction, and such
confessions are recorded with verdict ``halt`` and action ``proceed``. Use
:class:`~confessional.langchain.ConfessionMiddleware` or
:func:`confessional.langgraph.confession_node` for those. ``on_agent_action`` /
``on_agent_finish`` are not used: ``create_agent`` graphs never fire them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langgraph.errors import GraphBubbleUp
from typing_extensions import assert_never

from confessional.confession import Action, Confession
from confessional.ending import Ending, ending_of_error, ending_of_messages
from confessional.errors import ConfessionHalted
from confessional.health import report_failure
from confessional.langchain._recorder import RunRecorder
from confessional.options import ConfessionOptions
from confessional.pipeline import ConfessionPipeline, EpisodeCall

__all__ = ["AsyncConfessionCallbackHandler", "ConfessionCallbackHandler"]

_CALLBACK_ACTIONS: frozenset[Action] = frozenset({"proceed", "raise"})
"""A callback can let the run finish or raise; it cannot withhold or pause."""

_ERROR_PATH_ACTIONS: frozenset[Action] = frozenset({"proceed"})
"""A run that raised already ends with its own exception, which must reach the caller."""


def _output_messages(outputs: Any) -> Sequence[BaseMessage]:
    """The messages a run returned (a graph's ``messages`` channel, a list), else none."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("messages")
    if isinstance(outputs, BaseMessage):
        return [outputs]
    if isinstance(outputs, Sequence) and not isinstance(outputs, str):
        return [m for m in outputs if isinstance(m, BaseMessage)]
    return []


def _ends_an_episode(error: BaseException) -> bool:
    """An exception that ended the agent's work, or the caller closing its stream (its own
    cap); not a request to stop at once (Ctrl-C, a cancelled task: a confession's model
    call would delay it) nor LangGraph's control flow (an interrupt, a command to the
    parent graph)."""
    if isinstance(error, GeneratorExit):
        return True
    return isinstance(error, Exception) and not isinstance(error, GraphBubbleUp)


def _ending_of(error: BaseException) -> Ending:
    if isinstance(error, GeneratorExit):
        # ``stream()`` left early (a ``break``) or ``aclose()``: the caller's own cap.
        return Ending("cap", "the caller closed the run's stream before it ended")
    return ending_of_error(error)


def _error_path_failed(exc: Exception) -> None:
    cause = type(exc).__name__
    report_failure(
        "confession",
        cause,
        f"confessing a run that raised failed ({cause}); the run's own error propagates",
        exc_info=exc,
    )


class _RecordingHandler(BaseCallbackHandler):
    """Construction and the recording events shared by both handlers (no I/O)."""

    def __init__(
        self,
        model: Any = None,
        *,
        options: ConfessionOptions | None = None,
        max_history: int = 1000,
        **settings: Any,
    ) -> None:
        resolved = ConfessionOptions.merge(
            options, settings, model=model, required_by=type(self).__name__
        )
        self.pipeline = ConfessionPipeline(resolved)
        self._recorder = RunRecorder(max_history=max_history)
        # Only a deliberate halt should reach the caller; other handler errors are logged.
        self.raise_error = resolved.policy.on_violation == "error"
        if resolved.policy.on_violation in ("end", "interrupt"):
            warnings.warn(
                f"{type(self).__name__} cannot {resolved.policy.on_violation} a run: a "
                "callback sees the run only after its answer exists and has no control "
                "flow. Violations are recorded with verdict 'halt' but the run completes. "
                "Use on_violation='error' to raise, or ConfessionMiddleware / "
                "confession_node to end or interrupt.",
                UserWarning,
                stacklevel=2,
            )
        if self.raise_error and isinstance(self, AsyncCallbackHandler):
            warnings.warn(
                "AsyncConfessionCallbackHandler halts only async runs (ainvoke/astream): "
                "LangChain logs and swallows errors raised by async callback handlers in "
                "sync runs. Use ConfessionCallbackHandler to halt sync runs too.",
                UserWarning,
                stacklevel=2,
            )

    @property
    def confessions(self) -> list[Confession]:
        """Confessions of finished runs, oldest first (skipped turns excluded)."""
        return self._recorder.confessions

    def confession_for(self, run_id: UUID) -> Confession | None:
        """The confession of the outermost run ``run_id`` (set it with ``config["run_id"]``)."""
        return self._recorder.confession_for(run_id)

    def _request(
        self, run_id: UUID, parent_run_id: UUID | None, outputs: Any
    ) -> EpisodeCall | None:
        """The episode of a root run that returned ``outputs``."""
        trace = self._recorder.finish(run_id, parent_run_id)
        if trace is None:
            return None
        closing = _output_messages(outputs)
        return EpisodeCall(
            RunRecorder.episode_messages(trace, closing=closing),
            tools=trace.tools or None,
            run_id=run_id,
            actions=_CALLBACK_ACTIONS,
            ending=ending_of_messages(closing),
        )

    def _aborted_request(
        self, run_id: UUID, parent_run_id: UUID | None, error: BaseException
    ) -> EpisodeCall | None:
        """The episode of a root run that raised ``error``."""
        trace = self._recorder.finish(run_id, parent_run_id)
        if trace is None or not _ends_an_episode(error):
            return None
        ending = _ending_of(error)
        return EpisodeCall(
            RunRecorder.episode_messages(trace, aborted_by=ending.detail),
            tools=trace.tools or None,
            run_id=run_id,
            actions=_ERROR_PATH_ACTIONS,
            ending=ending,
        )

    def _record(self, run_id: UUID, confession: Confession) -> None:
        if confession.status != "skipped":
            self._recorder.record(run_id, confession)

    def _settle(self, run_id: UUID, confession: Confession) -> None:
        if confession.status == "skipped":
            return
        self._record(run_id, confession)
        match confession.action:
            case "raise":
                raise ConfessionHalted(confession)
            case "proceed" | "withhold" | "review":  # the pipeline mapped the last two away
                return
            case _:
                assert_never(confession.action)

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.chain_start(
            run_id,
            kwargs.get("parent_run_id"),
            kwargs.get("tags"),
            kwargs.get("metadata"),
            kwargs.get("name"),
        )

    def on_chat_model_start(
        self, serialized: Any, messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._recorder.chat_model_start(
            messages,
            run_id,
            kwargs.get("parent_run_id"),
            kwargs.get("tags"),
            kwargs.get("metadata"),
            kwargs.get("invocation_params"),
        )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.llm_end(response, run_id)

    def on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._recorder.tool_start(
            serialized,
            input_str,
            run_id,
            kwargs.get("parent_run_id"),
            kwargs.get("tags"),
            kwargs.get("metadata"),
            kwargs.get("inputs"),
            kwargs,
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.tool_end(output, run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._recorder.tool_end(f"{type(error).__name__}: {error}", run_id, error=True)


class ConfessionCallbackHandler(_RecordingHandler):
    """Confess every outermost run of any Runnable it is attached to.

    Pass it in ``config={"callbacks": [handler]}``. With ``on_violation="error"`` it
    raises :class:`~confessional.ConfessionHalted` under ``invoke`` and ``ainvoke`` alike.

    Args:
        model: the model that confesses; required unless a ``confessor`` has one, because
            callbacks carry no model object to borrow.
        options: every pipeline setting, see :class:`~confessional.ConfessionOptions`.
            Each of its fields is also accepted as a keyword (``sample_rate=0.1``).
        max_history: confessions kept for :attr:`confessions` and :meth:`confession_for`.
            Default 1000: bounded memory for a long-lived handler.
    """

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        request = self._request(run_id, kwargs.get("parent_run_id"), outputs)
        if request is not None:
            self._settle(run_id, self.pipeline.run(request))

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        # The run's own exception is propagating: nothing raised here may replace it.
        try:
            request = self._aborted_request(run_id, kwargs.get("parent_run_id"), error)
            if request is not None:
                self._record(run_id, self.pipeline.run(request))
        except Exception as exc:
            _error_path_failed(exc)


# The recording events stay sync on purpose: LangChain calls sync methods of a
# ``run_inline`` async handler inline, and they only append to in-memory traces.
class AsyncConfessionCallbackHandler(_RecordingHandler, AsyncCallbackHandler):  # type: ignore[misc]
    """Async variant of :class:`ConfessionCallbackHandler`: confesses with ``arun`` and
    never blocks the event loop. Its recording events are cheap and run inline.

    LangChain swallows (logs) errors from async handlers when the run is driven
    synchronously (``invoke``/``stream``), so with ``on_violation="error"`` it halts only
    ``ainvoke``/``astream`` runs; a ``UserWarning`` says so at construction. Use the sync
    handler to halt everywhere. Same arguments.
    """

    run_inline = True

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:  # type: ignore[override]
        request = self._request(run_id, kwargs.get("parent_run_id"), outputs)
        if request is not None:
            self._settle(run_id, await self.pipeline.arun(request))

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:  # type: ignore[override]
        # The run's own exception is propagating: nothing raised here may replace it.
        try:
            request = self._aborted_request(run_id, kwargs.get("parent_run_id"), error)
            if request is not None:
                self._record(run_id, await self.pipeline.arun(request))
        except Exception as exc:
            _error_path_failed(exc)
