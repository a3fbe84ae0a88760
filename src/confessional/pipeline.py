"""The one pipeline every surface calls: Episode -> Confessor -> Auditor -> Policy -> Sinks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig

from confessional.audit import Auditor, discrepancies
from confessional.confession import Confession
from confessional.confessor import Confessor
from confessional.episode import Episode, MessageLike, extract_episode
from confessional.errors import ConfigurationError
from confessional.policy import ConfessionPolicy
from confessional.telemetry import ConfessionTelemetry

__all__ = ["ConfessionPipeline", "ConfessionSink"]

logger = logging.getLogger("confessional")

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
    ) -> None:
        for sink in on_confession:
            if not callable(sink):
                raise ConfigurationError(f"on_confession entries must be callable, got {sink!r}")
        self.confessor = confessor or Confessor()
        self.auditor = auditor or Auditor()
        self.policy = policy or ConfessionPolicy()
        self.telemetry = telemetry or ConfessionTelemetry()
        self.on_confession = tuple(on_confession)
        self.confess_without_tools = confess_without_tools

    def episode(
        self, messages: Sequence[MessageLike] | Episode, tools: Sequence[Any] | None = None
    ) -> Episode | None:
        """The episode to confess, or ``None`` when this turn is not confessed."""
        episode = (
            messages if isinstance(messages, Episode) else extract_episode(messages, tools=tools)
        )
        if not episode.has_tool_calls and not self.confess_without_tools:
            return None
        return episode

    def _finish(
        self, confession: Confession, episode: Episode, agent_name: str | None
    ) -> Confession:
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
        return self.policy.decide(confession)

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
    ) -> Confession:
        """Confess the latest episode of ``messages`` and return the decided confession."""
        episode = self.episode(messages, tools)
        if episode is None:
            return Confession(status="skipped", error="no tool calls in this turn")
        with self.telemetry.span(agent_name=agent_name) as span:
            confession = self.confessor.confess(episode, model=model, config=config)
            confession = self._finish(confession, episode, agent_name)
            span.record(confession, episode)
        self.telemetry.mark_run(confession, config)
        self._emit(confession)
        return confession

    async def arun(
        self,
        messages: Sequence[MessageLike] | Episode,
        *,
        model: BaseChatModel | None = None,
        tools: Sequence[Any] | None = None,
        agent_name: str | None = None,
        config: RunnableConfig | None = None,
    ) -> Confession:
        """Async :meth:`run`, with the same behaviour."""
        episode = self.episode(messages, tools)
        if episode is None:
            return Confession(status="skipped", error="no tool calls in this turn")
        with self.telemetry.span(agent_name=agent_name) as span:
            confession = await self.confessor.aconfess(episode, model=model, config=config)
            confession = self._finish(confession, episode, agent_name)
            span.record(confession, episode)
        self.telemetry.mark_run(confession, config)
        self._emit(confession)
        return confession
