"""The one pipeline every surface calls: Episode -> Confessor -> Auditor -> Policy -> Sinks.

:meth:`ConfessionPipeline.run` and :meth:`~ConfessionPipeline.arun` drive one step
sequence, :meth:`~ConfessionPipeline._steps`, which does no I/O itself: it yields the
model call, the audit (whose checks may be async, the calibrator's model call among them)
and the async sinks for the driver to perform, as the Confessor's dialogue does.
Background mode runs the same steps on a worker thread; what is still pending at
shutdown is spooled for ``confessional drain`` (see :mod:`confessional.background`).

The pipeline never raises :class:`~confessional.ConfessionHalted` itself: it records the
action the surface says it will take, and the surface then acts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any
from uuid import UUID

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from opentelemetry.context import Context

from confessional._aio import adrive, drive, run_sync
from confessional.annotations import automatic_sinks
from confessional.audit import CheckContext, discrepancies
from confessional.background import BackgroundRunner, on_shutdown
from confessional.confession import ACTIONS, Action, Confession
from confessional.confessor import model_name_of
from confessional.ending import Ending
from confessional.episode import Episode, MessageLike, extract_episode
from confessional.findings import Finding
from confessional.health import report_failure
from confessional.options import ConfessionOptions
from confessional.policy import ConfessionPolicy
from confessional.sinks import (
    GraphStreamEvent,
    LangChainRunTags,
    SinkMethod,
    delivery_steps,
    lifecycle_steps,
    sink_name,
)
from confessional.spool import Spool
from confessional.telemetry import ConfessionSpan

__all__ = ["ConfessionPipeline", "EpisodeCall"]

_NOT_CONFESSED = Confession(status="skipped", error="no tool calls in this turn, or not sampled")
_SUBMITTED = Confession(status="skipped", error="confessing in the background")
_SPOOLED = Confession(status="skipped", error="spooled at shutdown, not delivered")


@dataclass(frozen=True)
class EpisodeCall:
    """One request to confess: what a surface knows about the episode that just ended.

    Attributes:
        messages: the conversation (or an already extracted :class:`Episode`).
        model: the agent's own model, used when no confessing model is configured.
        tools: the agent's tool definitions.
        agent_name: overrides ``ConfessionOptions.agent_name`` for this call.
        config: the LangChain config of the agent's run (callbacks, so the confession's
            model call nests in its trace).
        run_id: the LangChain run being confessed, for callers outside its context.
        model_settings: the agent's request parameters, replayed on the confession call.
        actions: what the calling surface can do; any other decided action becomes
            ``proceed`` (callback handlers cannot withhold or pause).
        parent: the trace context to nest under, captured when the episode ended.
        selected: the episode was already chosen for confession (a background job, a
            spooled episode): it is confessed as it is, with no second ``sample_rate``
            draw and no second "does this turn have tool calls" test.
        ending: how the run ended, when the surface knows (an exception, a limit it
            foresaw); default ``None``: read from the messages (see
            :func:`confessional.ending.ending_of_messages`).
    """

    messages: Sequence[MessageLike] | Episode
    model: BaseChatModel | None = None
    tools: Sequence[Any] | None = None
    agent_name: str | None = None
    config: RunnableConfig | None = None
    run_id: UUID | None = None
    model_settings: Mapping[str, Any] = field(default_factory=dict)
    actions: Collection[Action] = ACTIONS
    parent: Context | None = None
    selected: bool = False
    ending: Ending | None = None


@dataclass(frozen=True)
class _ModelCall:
    """The step's I/O request: confess ``episode`` (performed by the driver)."""

    episode: Episode
    call: EpisodeCall


@dataclass(frozen=True)
class _AuditCall:
    """The step's audit request: run every check over ``context`` (performed by the
    driver: the sync one runs async checks to completion, the async one awaits them)."""

    context: CheckContext


class ConfessionPipeline:
    """Confess, audit, decide and deliver one episode. Surfaces are thin adapters over it.

    Args:
        options: every setting, see :class:`~confessional.ConfessionOptions`.
        **settings: any ``ConfessionOptions`` field as a keyword, on top of ``options``.
    """

    def __init__(self, options: ConfessionOptions | None = None, **settings: Any) -> None:
        self.options = ConfessionOptions.merge(options, settings)
        self.confessor = self.options.build_confessor()
        self.auditor = self.options.build_auditor()
        telemetry = self.options.telemetry
        self.sinks: tuple[object, ...] = (
            telemetry,
            *((LangChainRunTags(),) if telemetry.tag_langchain_run else ()),
            GraphStreamEvent(),
            *self.options.sinks,
            # Phoenix annotations when PHOENIX_COLLECTOR_ENDPOINT is set (and the extra is in).
            *automatic_sinks(telemetry, self.options.sinks),
        )
        self._random = random.Random(self.options.sample_seed)
        self._background: BackgroundRunner | None = None
        self._spool: Spool | None = None
        on_shutdown(self._finish_sinks)

    @property
    def policy(self) -> ConfessionPolicy:
        """The policy in use (``options.policy``)."""
        return self.options.policy

    def __repr__(self) -> str:
        return f"ConfessionPipeline({self.confessor!r}, {self.options.policy!r})"

    def episode(
        self,
        messages: Sequence[MessageLike] | Episode,
        tools: Sequence[Any] | None = None,
        ending: Ending | None = None,
    ) -> Episode | None:
        """The episode of ``messages``, or ``None`` when its turn is never confessed (no
        tool call, and ``confess_without_tools`` is off). Deterministic: no sampling.
        ``ending``: how the run ended, when the surface knows (see :mod:`confessional.ending`)."""
        episode = _extracted(messages, tools, ending)
        if not episode.has_tool_calls and not self.options.confess_without_tools:
            return None
        return episode

    def _select(self, call: EpisodeCall) -> Episode | None:
        """The one decision "confess this turn?": the episode, or ``None``.

        Taken once per turn, before any work. A call that was already selected (a
        background job, a spooled episode) is confessed as it is.
        """
        if call.selected:
            return _extracted(call.messages, call.tools, call.ending)
        episode = self.episode(call.messages, call.tools, call.ending)
        if episode is None:
            return None
        sample_rate = self.options.sample_rate
        # An episode that ended without an answer (a limit, an error) is always confessed:
        # a runaway run is rare, and exactly the one a reviewer must see.
        if episode.ending.finished and sample_rate < 1.0 and self._random.random() >= sample_rate:
            return None
        return episode

    # -- the step sequence, shared by every driver -----------------------------------

    def _steps(
        self,
        call: EpisodeCall,
        *,
        inline: bool,
        may_deliver: Callable[[], bool] | None = None,
    ) -> Generator[Any, Any, Confession]:
        """Yields a :class:`_ModelCall` (receives its Confession), an :class:`_AuditCall`
        (receives the findings), then the awaitables of async sinks; returns the delivered
        confession.

        ``may_deliver``: asked right before delivery (background mode); when it says no,
        the episode was spooled at shutdown meanwhile and the sinks get nothing."""
        episode = self._select(call)
        if episode is None:
            return _NOT_CONFESSED
        agent_name = call.agent_name or self.options.agent_name
        telemetry = self.options.telemetry
        with telemetry.span(
            agent_name=agent_name, parent=call.parent, run_id=call.run_id, episode=episode
        ) as span:
            confession: Confession = yield _ModelCall(episode, call)
            findings: list[Finding] = yield _AuditCall(CheckContext(episode, confession.report))
            confession = self._decide(confession, findings, agent_name, call.actions)
            if may_deliver is not None and not may_deliver():
                return _SPOOLED
            failed = partial(self._sink_failed, span)
            yield from delivery_steps(self.sinks, confession, inline=inline, on_failure=failed)
        return confession

    def _decide(
        self,
        confession: Confession,
        findings: list[Finding],
        agent_name: str | None,
        actions: Collection[Action],
    ) -> Confession:
        """Record the audit, decide the verdict, and settle the action the surface will
        take.

        A failed confession was logged and counted by the Confessor; the span mark is the
        telemetry sink's."""
        confession = confession.model_copy(
            update={
                "findings": findings,
                "discrepancies": discrepancies(confession.report, findings),
                "agent_name": agent_name,
            }
        )
        confession = self.options.policy.decide(confession)
        if confession.action not in actions:
            confession = confession.model_copy(update={"action": "proceed"})
        return confession

    @staticmethod
    def _sink_failed(span: ConfessionSpan, sink: object, exc: BaseException) -> None:
        cause = type(exc).__name__
        report_failure(
            "sink", cause, f"confession sink {sink_name(sink)} raised {cause}", exc_info=exc
        )
        span.note_failure("sink", cause)

    # -- drivers ------------------------------------------------------------------------

    def _drive(
        self,
        call: EpisodeCall,
        *,
        inline: bool = True,
        may_deliver: Callable[[], bool] | None = None,
    ) -> Confession:
        def perform(step: Any) -> Any:
            if isinstance(step, _ModelCall):
                return self.confessor.confess(step.episode, **_replay(step.call))
            if isinstance(step, _AuditCall):
                try:
                    return self.auditor.audit(step.context)
                except Exception as exc:
                    return _audit_failed(exc)
            return run_sync(step)

        return drive(self._steps(call, inline=inline, may_deliver=may_deliver), perform)

    async def _adrive(self, call: EpisodeCall) -> Confession:
        async def perform(step: Any) -> Any:
            if isinstance(step, _ModelCall):
                return await self.confessor.aconfess(step.episode, **_replay(step.call))
            if isinstance(step, _AuditCall):
                try:
                    return await self.auditor.aaudit(step.context)
                except Exception as exc:
                    return _audit_failed(exc)
            return await step

        return await adrive(self._steps(call, inline=True), perform)

    # -- public entry points ------------------------------------------------------------

    def run(
        self, messages: Sequence[MessageLike] | Episode | EpisodeCall, **call: Any
    ) -> Confession:
        """Confess the latest episode of ``messages`` and return the decided confession.

        ``call``: the other :class:`EpisodeCall` fields (``model``, ``tools``,
        ``agent_name``, ``config``, ``run_id``, ``model_settings``, ``actions``), or pass
        one ``EpisodeCall``. With ``background=True`` this submits and returns a
        ``skipped`` confession at once.
        """
        request = _as_call(messages, call)
        if self.options.background:
            self.submit(request)
            return _SUBMITTED
        return self._drive(request)

    async def arun(
        self, messages: Sequence[MessageLike] | Episode | EpisodeCall, **call: Any
    ) -> Confession:
        """Async :meth:`run`, with the same behaviour."""
        request = _as_call(messages, call)
        if self.options.background:
            await self.asubmit(request)
            return _SUBMITTED
        return await self._adrive(request)

    # -- background mode ----------------------------------------------------------------

    def _background_job(self, request: EpisodeCall) -> _BackgroundJob | None:
        episode = self._select(request)
        if episode is None:
            return None
        # The trace parent is captured now, at episode end, so the span nests under the
        # agent's trace although it finishes later. No config: that run has ended.
        parent = self.options.telemetry.current_parent(request.run_id)
        request = replace(request, messages=episode, config=None, parent=parent, selected=True)
        return _BackgroundJob(self, request)

    def submit(
        self, messages: Sequence[MessageLike] | Episode | EpisodeCall, **call: Any
    ) -> Future[Confession] | None:
        """Confess in the background; ``None`` when the turn is not confessed. With
        ``options.queue``, the episode is committed to the queue table before this returns
        (see :mod:`confessional.queue`)."""
        job = self._background_job(_as_call(messages, call))
        if job is None:
            return None
        if self.options.queue is not None:
            from confessional.queue._deliver import enqueue

            queued = enqueue(self, job.call)
            if queued is not None:
                return queued
        return self._runner().submit(job)

    async def asubmit(
        self, messages: Sequence[MessageLike] | Episode | EpisodeCall, **call: Any
    ) -> Future[Confession] | None:
        """Async :meth:`submit`: never blocks the event loop, even under back-pressure."""
        job = self._background_job(_as_call(messages, call))
        if job is None:
            return None
        if self.options.queue is not None:
            from confessional.queue._deliver import enqueue

            queued = await asyncio.to_thread(enqueue, self, job.call)
            if queued is not None:
                return queued
        return await self._runner().asubmit(job)

    def _runner(self) -> BackgroundRunner:
        if self._background is None:
            self._background = BackgroundRunner(
                max_concurrency=self.options.max_concurrency,
                max_pending=self.options.max_pending,
                flush_timeout_s=self.options.flush_timeout_s,
            )
            self._spool = Spool(self.options.spool)
        return self._background

    def _spool_job(self, call: EpisodeCall) -> str:
        """Write a background episode to the spool (at shutdown); returns the record id."""
        assert isinstance(call.messages, Episode)  # background jobs carry the extracted one
        if self._spool is None:
            self._spool = Spool(self.options.spool)
        model = self.confessor.model or call.model
        return self._spool.append(
            call.messages,
            agent_name=call.agent_name or self.options.agent_name,
            run_id=call.run_id,
            model_name=model_name_of(model) if model is not None else None,
            model_settings=call.model_settings,
            parent=call.parent,
        )

    @property
    def pending(self) -> int:
        """Background confessions queued or running."""
        return 0 if self._background is None else self._background.pending

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for every background confession, then flush every sink that has
        ``flush()``. ``False`` if some confessions are still running after ``timeout``."""
        finished = True if self._background is None else self._background.flush(timeout)
        drive(self._sink_lifecycle("flush"), run_sync)
        return finished

    async def aflush(self, timeout: float | None = None) -> bool:
        """Async :meth:`flush`: waits without blocking the event loop."""
        finished = True if self._background is None else await self._background.aflush(timeout)
        await adrive(self._sink_lifecycle("flush"), _awaited)
        return finished

    def close(self, timeout: float | None = None) -> bool:
        """:meth:`flush`, then close every sink that has ``close()``. Sinks that reopen
        on use (:class:`~confessional.JsonlSink`) keep working afterwards. Also done at
        interpreter exit."""
        finished = self.flush(timeout)
        drive(self._sink_lifecycle("close"), run_sync)
        return finished

    async def aclose(self, timeout: float | None = None) -> bool:
        """Async :meth:`close`."""
        finished = await self.aflush(timeout)
        await adrive(self._sink_lifecycle("close"), _awaited)
        return finished

    def _sink_lifecycle(self, method: SinkMethod) -> Generator[Any, Any, None]:
        def failed(sink: object, exc: BaseException) -> None:
            cause = type(exc).__name__
            report_failure(
                "sink", cause, f"{method}() of sink {sink_name(sink)} raised {cause}", exc_info=exc
            )

        yield from lifecycle_steps(self.sinks, method, on_failure=failed)

    def _finish_sinks(self) -> None:
        """At shutdown, once background work was flushed or spooled: flush, then close."""
        drive(self._sink_lifecycle("flush"), run_sync)
        drive(self._sink_lifecycle("close"), run_sync)


async def _awaited(step: Any) -> Any:
    return await step


@dataclass(frozen=True)
class _BackgroundJob:
    """A background confession: run it, or (at shutdown) spool it."""

    pipeline: ConfessionPipeline
    call: EpisodeCall

    def run(self, may_deliver: Callable[[], bool]) -> Confession:
        return self.pipeline._drive(self.call, inline=False, may_deliver=may_deliver)

    def spool(self) -> str:
        return self.pipeline._spool_job(self.call)


def _audit_failed(exc: Exception) -> list[Finding]:
    """A broken Auditor subclass must not take the agent down: no findings, loudly."""
    report_failure("check", type(exc).__name__, "evidence audit failed; no findings", exc_info=exc)
    return []


def _extracted(
    messages: Sequence[MessageLike] | Episode, tools: Sequence[Any] | None, ending: Ending | None
) -> Episode:
    if not isinstance(messages, Episode):
        return extract_episode(messages, tools=tools, ending=ending)
    return messages if ending is None else replace(messages, ending=ending)


def _as_call(messages: Sequence[MessageLike] | Episode | EpisodeCall, call: Any) -> EpisodeCall:
    return messages if isinstance(messages, EpisodeCall) else EpisodeCall(messages, **call)


def _replay(call: EpisodeCall) -> dict[str, Any]:
    """What the Confessor needs to replay the agent's own request."""
    return {
        "model": call.model,
        "tools": call.tools,
        "model_settings": call.model_settings,
        "config": call.config,
    }
