"""The one pipeline every surface calls: Episode -> Confessor -> Auditor -> Policy -> Sinks."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import random
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any
from uuid import UUID

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig

from confessional.audit import Auditor, discrepancies
from confessional.confession import Confession
from confessional.confessor import Confessor
from confessional.episode import Episode, MessageLike, extract_episode
from confessional.errors import ConfigurationError
from confessional.policy import ConfessionPolicy
from confessional.telemetry import ConfessionSpan, ConfessionTelemetry

__all__ = ["ConfessionPipeline", "ConfessionSink", "flush_background"]

logger = logging.getLogger("confessional")

_NOT_CONFESSED = Confession(status="skipped", error="no tool calls in this turn, or not sampled")
_SUBMITTED = Confession(status="skipped", error="confessing in the background")

_BACKGROUND_PIPELINES: weakref.WeakSet[ConfessionPipeline] = weakref.WeakSet()


def flush_background(timeout: float | None = None) -> bool:
    """Wait for the background confessions of every pipeline (also run at exit).

    Surfaces build their pipeline internally; this reaches them all. ``False`` if some
    were still running when ``timeout`` (per pipeline) ran out.
    """
    return all([pipeline.flush(timeout) for pipeline in list(_BACKGROUND_PIPELINES)])


atexit.register(flush_background)

ConfessionSink = Callable[[Confession], Any]
"""A user callback that receives every finished confession (JSONL writer, alerting...)."""


class ConfessionPipeline:
    """Confess, audit, decide and record one episode. Surfaces are thin adapters over it.

    The pipeline never raises :class:`~confessional.ConfessionHalted` itself: each surface
    turns a ``"halt"`` verdict into its framework's control flow.

    Args:
        confessor: how to ask for the report. Default ``Confessor()``, which uses the
            model each surface passes per call (the agent's own model).
        auditor: evidence checks. Default ``Auditor()`` with its default checks.
        policy: verdicts. Default ``ConfessionPolicy()`` (flag, fail-open).
        telemetry: OpenTelemetry recording. Default ``ConfessionTelemetry()`` on the global
            tracer provider, which is a no-op until the application configures the SDK.
        on_confession: callbacks run with every confession; their errors are logged, never
            raised, so a broken sink cannot break the agent.
        confess_without_tools: also confess turns with no tool call. Default ``False``:
            the method targets tool-using episodes, and plain chat turns would double cost.
        sample_rate: fraction of episodes confessed, 0 to 1. Default 1.0 (every episode);
            lower it to bound cost on high-traffic agents. Unsampled turns are ``skipped``.
        background: run confessions off the critical path: :meth:`run`/:meth:`arun` (and
            so every surface) hand the episode to :meth:`submit` and return at once with a
            ``skipped`` confession; the report reaches telemetry and ``on_confession``
            later. Not allowed with halting policies (a background confession cannot stop
            a run that has already returned). Call :meth:`flush` before exit or in tests;
            an exit hook also flushes. Default ``False``.
        max_concurrency: background confessions running at once. Default 4: confessions
            are network-bound, and more would compete with the agent for rate limits.
        max_pending: background confessions queued or running before :meth:`submit`
            blocks (back-pressure instead of silently dropping work). Default 1000.
    """

    def __init__(
        self,
        *,
        confessor: Confessor | None = None,
        auditor: Auditor | None = None,
        policy: ConfessionPolicy | None = None,
        telemetry: ConfessionTelemetry | None = None,
        on_confession: Sequence[ConfessionSink] = (),
        confess_without_tools: bool = False,
        sample_rate: float = 1.0,
        background: bool = False,
        max_concurrency: int = 4,
        max_pending: int = 1000,
    ) -> None:
        for sink in on_confession:
            if not callable(sink):
                raise ConfigurationError(f"on_confession entries must be callable, got {sink!r}")
        if not 0.0 <= sample_rate <= 1.0:
            raise ConfigurationError(f"sample_rate must be between 0 and 1, got {sample_rate!r}")
        if max_concurrency < 1 or max_pending < 1:
            raise ConfigurationError("max_concurrency and max_pending must be at least 1")
        if background and policy is not None and policy.halts:
            raise ConfigurationError(
                f"background=True cannot halt a run (on_violation={policy.on_violation!r}); "
                "use on_violation='flag' or 'continue', or background=False"
            )
        self.confessor = confessor or Confessor()
        self.auditor = auditor or Auditor()
        self.policy = policy or ConfessionPolicy()
        self.telemetry = telemetry or ConfessionTelemetry()
        self.on_confession = tuple(on_confession)
        self.confess_without_tools = confess_without_tools
        self.sample_rate = sample_rate
        self.background = background
        self._random = random.Random()
        self._executor: ThreadPoolExecutor | None = None
        self._max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_pending)
        self._pending: set[Future[Confession]] = set()
        self._lock = threading.Lock()

    def episode(
        self, messages: Sequence[MessageLike] | Episode, tools: Sequence[Any] | None = None
    ) -> Episode | None:
        """The episode to confess, or ``None`` when this turn is not confessed."""
        episode = (
            messages if isinstance(messages, Episode) else extract_episode(messages, tools=tools)
        )
        if not episode.has_tool_calls and not self.confess_without_tools:
            return None
        if self.sample_rate < 1.0 and self._random.random() >= self.sample_rate:
            return None
        return episode

    def _finish(
        self, confession: Confession, episode: Episode, agent_name: str | None, span: ConfessionSpan
    ) -> Confession:
        """Audit, decide and record on the span: every step after the model call."""
        try:
            findings = self.auditor.audit(episode)
        except Exception:  # a bug in a custom check must not take the agent down
            logger.exception("evidence audit failed; continuing without findings")
            findings = []
        confession = confession.model_copy(
            update={
                "findings": findings,
                "discrepancies": discrepancies(confession.report, findings),
                "agent_name": agent_name,
            }
        )
        confession = self.policy.decide(confession)
        span.record(confession, episode)
        return confession

    def _deliver(self, confession: Confession, config: RunnableConfig | None) -> Confession:
        self.telemetry.mark_run(confession, config)
        self._emit(confession)
        return confession

    def _emit(self, confession: Confession) -> None:
        for sink in self.on_confession:
            try:
                sink(confession)
            except Exception:
                logger.exception("confession sink %r failed; the run goes on", sink)

    def run(
        self,
        messages: Sequence[MessageLike] | Episode,
        *,
        model: BaseChatModel | None = None,
        tools: Sequence[Any] | None = None,
        agent_name: str | None = None,
        config: RunnableConfig | None = None,
        run_id: UUID | None = None,
    ) -> Confession:
        """Confess the latest episode of ``messages`` and return the decided confession.

        ``run_id``: the LangChain run the episode belongs to, for callers outside that
        run's context (a callback handler's ``on_chain_end``): the span nests under it.
        """
        if self.background:
            self.submit(messages, model=model, tools=tools, agent_name=agent_name, run_id=run_id)
            return _SUBMITTED
        episode = self.episode(messages, tools)
        if episode is None:
            return _NOT_CONFESSED
        with self.telemetry.span(agent_name=agent_name, run_id=run_id) as span:
            confession = self.confessor.confess(episode, model=model, config=config)
            confession = self._finish(confession, episode, agent_name, span)
        return self._deliver(confession, config)

    async def arun(
        self,
        messages: Sequence[MessageLike] | Episode,
        *,
        model: BaseChatModel | None = None,
        tools: Sequence[Any] | None = None,
        agent_name: str | None = None,
        config: RunnableConfig | None = None,
        run_id: UUID | None = None,
    ) -> Confession:
        """Async :meth:`run`, with the same behaviour."""
        if self.background:
            await self.asubmit(
                messages, model=model, tools=tools, agent_name=agent_name, run_id=run_id
            )
            return _SUBMITTED
        episode = self.episode(messages, tools)
        if episode is None:
            return _NOT_CONFESSED
        with self.telemetry.span(agent_name=agent_name, run_id=run_id) as span:
            confession = await self.confessor.aconfess(episode, model=model, config=config)
            confession = self._finish(confession, episode, agent_name, span)
        return self._deliver(confession, config)

    # -- background mode ------------------------------------------------------------

    def submit(
        self,
        messages: Sequence[MessageLike] | Episode,
        *,
        model: BaseChatModel | None = None,
        tools: Sequence[Any] | None = None,
        agent_name: str | None = None,
        run_id: UUID | None = None,
    ) -> Future[Confession] | None:
        """Confess in the background; ``None`` when the turn is not confessed.

        The trace parent is captured now, at episode end, so the confession span nests
        under the agent's trace even though it finishes later. Blocks only when
        ``max_pending`` confessions are already queued.
        """
        episode = self.episode(messages, tools)
        if episode is None:
            return None
        parent = self.telemetry.current_parent(run_id)
        context = contextvars.copy_context()
        self._slots.acquire()
        future = self._pool().submit(
            context.run, self._run_in_background, episode, model, agent_name, parent
        )
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._settle)
        return future

    async def asubmit(
        self,
        messages: Sequence[MessageLike] | Episode,
        *,
        model: BaseChatModel | None = None,
        tools: Sequence[Any] | None = None,
        agent_name: str | None = None,
        run_id: UUID | None = None,
    ) -> Future[Confession] | None:
        """Async :meth:`submit`: never blocks the event loop, even under back-pressure."""
        kwargs: dict[str, Any] = {
            "model": model,
            "tools": tools,
            "agent_name": agent_name,
            "run_id": run_id,
        }
        if self._slots.acquire(blocking=False):
            self._slots.release()
            return self.submit(messages, **kwargs)
        return await asyncio.to_thread(self.submit, messages, **kwargs)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._max_concurrency, thread_name_prefix="confessional"
                )
                _BACKGROUND_PIPELINES.add(self)
            return self._executor

    def _run_in_background(
        self, episode: Episode, model: BaseChatModel | None, agent_name: str | None, parent: Any
    ) -> Confession:
        # No RunnableConfig: the agent's run has ended, so callbacks would attach to a
        # finished run; the trace parent captured at submit time keeps the nesting.
        with self.telemetry.span(agent_name=agent_name, parent=parent) as span:
            confession = self.confessor.confess(episode, model=model)
            confession = self._finish(confession, episode, agent_name, span)
        # No mark_run: the agent's span and run have already ended.
        self._emit(confession)
        return confession

    def _settle(self, future: Future[Confession]) -> None:
        with self._lock:
            self._pending.discard(future)
        self._slots.release()
        if not future.cancelled() and future.exception() is not None:
            logger.error("background confession failed", exc_info=future.exception())

    @property
    def pending(self) -> int:
        """Background confessions queued or running."""
        with self._lock:
            return len(self._pending)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for every background confession; ``False`` if some are still running."""
        with self._lock:
            waiting = list(self._pending)
        _, still_running = futures_wait(waiting, timeout=timeout)
        if still_running:
            logger.warning(
                "%d background confession(s) still running after flush", len(still_running)
            )
        return not still_running

    async def aflush(self, timeout: float | None = None) -> bool:
        """Async :meth:`flush`: waits without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)
