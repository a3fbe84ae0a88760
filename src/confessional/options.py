"""``ConfessionOptions``: the one settings object every surface and the pipeline share.

Every surface takes ``options=`` and also accepts each field below as a keyword, so
``ConfessionMiddleware(sample_rate=0.1)`` and
``ConfessionMiddleware(options=ConfessionOptions(sample_rate=0.1))`` are the same thing.
All validation happens here, once, at construction.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel

from confessional.audit import Auditor
from confessional.audit.calibrator import Calibrator
from confessional.confessor import Confessor
from confessional.errors import ConfigurationError, require_extra
from confessional.policy import ConfessionPolicy
from confessional.sinks import ConfessionSink, validate_sinks
from confessional.telemetry import ConfessionTelemetry

__all__ = ["ConfessionOptions"]


@dataclass(frozen=True, kw_only=True)
class ConfessionOptions:
    """Every pipeline setting, with its default and the reason for it.

    Attributes:
        model: the model that confesses: a ``BaseChatModel`` or an ``init_chat_model``
            string. Default ``None``: the agent's own model, which the middleware takes from
            each model request (the paper's method, and a prompt-cache hit). The graph node
            and the callback handler see no model object, so they need this or a
            ``confessor`` with a model.
        confessor: a configured :class:`~confessional.Confessor` (output mode, timeouts,
            budgets). Default ``None``: ``Confessor(model)``. Give ``model`` or a confessor
            with its own model, not both.
        auditor: evidence checks. Default ``Auditor()``: every built-in check.
        calibrator: a second model that writes its own report from the transcript alone;
            the audit then types where the confession *hid*, *fabricated* or *downplayed*
            a problem (discrepancies, see :mod:`confessional.audit.calibrator`). A
            ``BaseChatModel``, an ``init_chat_model`` string (loaded, and its API key
            checked, here) or a configured ``Calibrator`` (timeout, matching). It runs as
            the last check, inline and in background mode alike. Default ``None`` (off):
            it costs one more model call per confession, with its latency on the
            critical path unless ``background=True``; a different model from the agent's
            gives the most independent view.
        policy: verdicts and actions. Default ``ConfessionPolicy()``: flag, fail-open, so
            nothing is stopped until you choose to, but every violation is filterable.
        telemetry: OpenTelemetry recording. Default ``ConfessionTelemetry()`` on the global
            providers: a no-op until the application configures the SDK.
        sinks: more receivers of every finished confession (see
            :class:`~confessional.sinks.ConfessionSink`): bare callables, async callables,
            :class:`~confessional.sinks.JsonlSink`, the annotation helpers. Their errors are
            logged and counted, never raised. Default: none.
        agent_name: recorded on confessions and spans. Default ``None``: the
            ``create_agent(name=...)`` of the agent where the surface can see it.
        confess_without_tools: also confess turns with no tool call. Default ``False``: the
            method targets tool-using episodes, and plain chat turns would double the cost.
        sample_rate: fraction of episodes confessed, 0 to 1. Default 1.0 (every episode);
            lower it to bound cost on high-traffic agents. Unsampled turns are ``skipped``.
            The draw is made once per turn, before any work (background jobs and spooled
            episodes are never drawn again).
        sample_seed: seeds the sampling draws, for reproducible runs (tests, evals).
            Default ``None``: seeded from the operating system.
        background: confess off the critical path: the run returns at once and the report
            reaches the sinks later. Only for non-halting policies (a background
            confession cannot stop a run that has already returned). Default ``False``.
        max_concurrency: background confessions running at once. Default 4: confessions
            are network-bound, and more would compete with the agent for rate limits.
        max_pending: background confessions queued or running before new ones wait
            (back-pressure instead of silently dropping work). Default 1000.
        flush_timeout_s: at shutdown (exit, SIGTERM, SIGINT), the total wait for pending
            background confessions; the rest is spooled, not dropped. Default 5 s: half
            of the 10 s ``docker stop`` grace period, leaving the application time for its
            own shutdown. See :mod:`confessional.background`.
        spool: the file where background confessions still pending at shutdown are
            written, for ``confessional drain SPOOL``. Default ``None``:
            ``$CONFESSIONAL_SPOOL``, else ``$XDG_STATE_HOME/confessional/spool.jsonl``
            (``~/.local/state/...``), state that outlives the process. See
            :mod:`confessional.spool`.
        queue: a PostgreSQL URL (``postgresql://...``): in background mode every selected
            episode is committed to a queue table before the agent's call returns
            (write-ahead), and workers claim it from there; see :mod:`confessional.queue`.
            Needs ``confessional[postgres]``. Default ``None``: no database; pending work
            lives in the process and goes to ``spool`` at shutdown.
        queue_workers_in_process: with ``queue``, this process also runs
            ``max_concurrency`` workers that claim jobs from the table. Default ``True``:
            one process works alone as before. ``False`` only enqueues, for agent
            processes that should never confess themselves (``confessional worker`` does).
        queue_max_attempts: attempts per job before it is dead-lettered with its last
            error. Default 5: rides out a short model outage (with the backoff, about
            15 s of retries) without retrying a poison job for ever.
        queue_retry_backoff_s: wait before the first retry, doubled at each attempt
            (capped at 300 s). Default 1 s: a rate limit or a blip clears in seconds.
        queue_lease_s: how long a claimed job stays with its worker without a heartbeat
            (sent every third of it). A job whose worker died is re-queued once its lease
            expires. Default 30 s: far above a heartbeat's round trip, short enough that
            a killed worker's job is soon taken by another.
    """

    model: BaseChatModel | str | None = None
    confessor: Confessor | None = None
    auditor: Auditor = field(default_factory=Auditor)
    calibrator: BaseChatModel | str | Calibrator | None = None
    policy: ConfessionPolicy = field(default_factory=ConfessionPolicy)
    telemetry: ConfessionTelemetry = field(default_factory=ConfessionTelemetry)
    sinks: Sequence[ConfessionSink] = ()
    agent_name: str | None = None
    confess_without_tools: bool = False
    sample_rate: float = 1.0
    sample_seed: int | None = None
    background: bool = False
    max_concurrency: int = 4
    max_pending: int = 1000
    flush_timeout_s: float = 5.0
    spool: str | os.PathLike[str] | None = None
    queue: str | None = None
    queue_workers_in_process: bool = True
    queue_max_attempts: int = 5
    queue_retry_backoff_s: float = 1.0
    queue_lease_s: float = 30.0

    def __post_init__(self) -> None:
        _expect("auditor", self.auditor, Auditor)
        _expect("policy", self.policy, ConfessionPolicy)
        _expect("telemetry", self.telemetry, ConfessionTelemetry)
        object.__setattr__(self, "calibrator", _calibrator(self.calibrator))
        if self.confessor is not None:
            _expect("confessor", self.confessor, Confessor)
        if self.model is not None and not isinstance(self.model, BaseChatModel | str):
            raise ConfigurationError(
                "model must be a BaseChatModel, an init_chat_model string or None, "
                f"got {type(self.model).__name__}"
            )
        if self.model is not None and self.confessor is not None and self.confessor.model:
            raise ConfigurationError(
                "pass either model= or a confessor with its own model, not both"
            )
        if isinstance(self.sinks, str) or not isinstance(self.sinks, Sequence):
            raise ConfigurationError("sinks must be a list of sinks")
        object.__setattr__(self, "sinks", tuple(self.sinks))
        validate_sinks(self.sinks)
        if isinstance(self.sample_rate, bool) or not 0.0 <= self.sample_rate <= 1.0:
            raise ConfigurationError(
                f"sample_rate must be between 0 and 1, got {self.sample_rate!r}"
            )
        if self.sample_seed is not None and (
            isinstance(self.sample_seed, bool) or not isinstance(self.sample_seed, int)
        ):
            raise ConfigurationError(
                f"sample_seed must be an integer or None, got {self.sample_seed!r}"
            )
        for name in ("max_concurrency", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
        if (
            isinstance(self.flush_timeout_s, bool)
            or not isinstance(self.flush_timeout_s, int | float)
            or self.flush_timeout_s < 0
        ):
            raise ConfigurationError(
                f"flush_timeout_s must be a number of seconds >= 0, got {self.flush_timeout_s!r}"
            )
        if self.spool is not None and not isinstance(self.spool, str | os.PathLike):
            raise ConfigurationError(
                f"spool must be a file path or None, got {type(self.spool).__name__}"
            )
        _validate_queue(self)
        if self.background and self.policy.halts:
            raise ConfigurationError(
                "background=True cannot halt a run "
                f"(on_violation={self.policy.on_violation!r}); use on_violation='flag' or "
                "'continue', or background=False"
            )

    @classmethod
    def merge(
        cls,
        options: ConfessionOptions | None,
        settings: Mapping[str, Any],
        *,
        model: Any = None,
        required_by: str | None = None,
    ) -> ConfessionOptions:
        """``options`` (default: all defaults) with ``settings`` given as keywords on top.

        ``model`` is a surface's positional model argument, a shorthand for the ``model``
        setting. ``required_by`` names a surface that cannot see the agent's model (a graph
        node, a callback handler), so a missing confessing model is a configuration error.
        """
        if model is not None:
            settings = {**settings, "model": model}
        resolved = cls._merge(options, settings)
        if required_by is not None and not resolved.has_model:
            raise ConfigurationError(
                f"{required_by} needs a model (it cannot see the agent's own): pass model= "
                "or confessor=Confessor(model)"
            )
        return resolved

    @classmethod
    def _merge(
        cls, options: ConfessionOptions | None, settings: Mapping[str, Any]
    ) -> ConfessionOptions:
        base = options if options is not None else None
        if base is not None and not isinstance(base, ConfessionOptions):
            raise ConfigurationError(
                f"options must be a ConfessionOptions, got {type(base).__name__}"
            )
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(map(repr, unknown))}; valid settings are: "
                + ", ".join(f.name for f in dataclasses.fields(cls))
            )
        # ``policy=None`` and the like mean "the default", as they read.
        defaults = {
            f.name: f.default_factory()
            for f in dataclasses.fields(cls)
            if f.default_factory is not dataclasses.MISSING and settings.get(f.name, 0) is None
        }
        settings = {**settings, **defaults}
        if base is None:
            return cls(**settings)
        return dataclasses.replace(base, **settings) if settings else base

    def build_confessor(self) -> Confessor:
        """The confessor to use: the given one, else one for ``model``."""
        return self.confessor if self.confessor is not None else Confessor(self.model)

    def build_auditor(self) -> Auditor:
        """The auditor to use: ``auditor``, with the calibrator as its last check."""
        if isinstance(self.calibrator, Calibrator):
            return self.auditor.with_checks(self.calibrator)
        return self.auditor

    @property
    def has_model(self) -> bool:
        """Whether a confessing model is configured (else the agent's own is needed)."""
        return self.model is not None or (
            self.confessor is not None and self.confessor.model is not None
        )


def _calibrator(value: object) -> Calibrator | None:
    """The ``calibrator`` setting as a :class:`Calibrator`: a model string is loaded now,
    so a typo or a missing key fails at construction, not at the first confession."""
    if value is None or isinstance(value, Calibrator):
        return value
    if isinstance(value, str):
        from confessional.models import LOCAL, load_chat_model

        if value == LOCAL:
            raise ConfigurationError(
                f"calibrator={LOCAL!r} needs a running server: open it with "
                "confessional.local_model.local_chat_model() and pass the model"
            )
        return Calibrator(load_chat_model(value))
    if isinstance(value, BaseChatModel):
        return Calibrator(value)
    raise ConfigurationError(
        "calibrator must be a BaseChatModel, an init_chat_model string, a Calibrator or "
        f"None, got {type(value).__name__}"
    )


def _expect(name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind):
        raise ConfigurationError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")


def _validate_queue(options: ConfessionOptions) -> None:
    """The ``queue*`` settings; a queue URL needs psycopg (the ``postgres`` extra)."""
    in_process = options.queue_workers_in_process
    if not isinstance(in_process, bool):
        raise ConfigurationError(
            f"queue_workers_in_process must be True or False, got {in_process!r}"
        )
    attempts = options.queue_max_attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigurationError(f"queue_max_attempts must be an integer >= 1, got {attempts!r}")
    for name in ("queue_retry_backoff_s", "queue_lease_s"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if options.queue_lease_s < 1:
        raise ConfigurationError(
            f"queue_lease_s must be at least 1 s (heartbeats go every third of it), "
            f"got {options.queue_lease_s!r}"
        )
    if options.queue is None:
        return
    if not isinstance(options.queue, str) or not options.queue.startswith(
        ("postgresql://", "postgres://")
    ):
        # The URL may hold a password: name its kind, never echo it.
        raise ConfigurationError(
            "queue must be a PostgreSQL URL (postgresql://...) or None, got a "
            f"{type(options.queue).__name__} that is not one"
        )
    require_extra("psycopg", extra="postgres", feature="ConfessionOptions(queue=...)")
