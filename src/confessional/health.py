"""Loud failure: every failure is logged (rate-limited per cause), counted, and escalates.

Fail-open means the agent goes on, not that nobody hears. Each failure of a confession,
a check, a sink or the recording itself goes through :func:`report_failure`, which

- logs a WARNING on the ``confessional`` logger the first time a cause is seen, then at
  most once per :data:`LOG_INTERVAL_S` per cause (with the number suppressed meanwhile);
- logs one ERROR when the same cause has failed :data:`ESCALATE_AFTER` times;
- counts it, in process (:func:`failure_counts`) and on the OTel metrics API
  (``confessional.failures``, a no-op until the application installs a metrics SDK).

Messages never quote model or user text: callers pass a cause and a scrubbed summary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Final, Literal

from opentelemetry import metrics

from confessional import semconv

__all__ = [
    "ESCALATE_AFTER",
    "LOG_INTERVAL_S",
    "FailureStage",
    "failure_counts",
    "report_failure",
    "reset_failure_counts",
]

logger = logging.getLogger("confessional")

FailureStage = Literal["confession", "check", "sink", "telemetry", "background", "config"]
"""Where a failure happened."""

LOG_INTERVAL_S: Final = 60.0
"""Least time between two WARNING records of the same cause."""
ESCALATE_AFTER: Final = 5
"""Failures of one cause after which a single ERROR record says it keeps happening."""


@dataclass
class _CauseState:
    count: int = 0
    last_logged: float = float("-inf")
    suppressed: int = 0
    escalated: bool = False


_lock = threading.Lock()
_states: dict[tuple[str, str], _CauseState] = {}
_counter = metrics.get_meter(semconv.TRACER_NAME).create_counter(
    semconv.METRIC_FAILURES,
    unit="{failure}",
    description="Failures of confessional's own steps (confessions, checks, sinks, recording).",
)


def report_failure(
    stage: FailureStage,
    cause: str,
    message: str,
    *,
    exc_info: BaseException | None = None,
) -> None:
    """Log, count and maybe escalate one failure. Never raises.

    Args:
        stage: which step failed.
        cause: a low-cardinality reason, such as an exception class or ``"timeout"``.
        message: one scrubbed line for the log (no model or user text).
        exc_info: the exception, attached to the log record for a traceback.
    """
    try:
        now = time.monotonic()
        with _lock:
            state = _states.setdefault((stage, cause), _CauseState())
            state.count += 1
            log_now = now - state.last_logged >= LOG_INTERVAL_S
            suppressed = state.suppressed
            if log_now:
                state.last_logged, state.suppressed = now, 0
            else:
                state.suppressed += 1
            escalate = state.count >= ESCALATE_AFTER and not state.escalated
            state.escalated = state.escalated or escalate
            count = state.count
        _counter.add(1, {semconv.FAILURE_STAGE: stage, semconv.ERROR_TYPE: cause})
        if escalate:
            logger.error(
                "confessional %s failures keep happening (%d so far, cause %s): %s",
                stage,
                count,
                cause,
                message,
                exc_info=exc_info,
            )
        elif log_now:
            extra = f" ({suppressed} similar suppressed)" if suppressed else ""
            logger.warning(
                "confessional %s failed (cause %s): %s%s",
                stage,
                cause,
                message,
                extra,
                exc_info=exc_info,
            )
    except Exception:  # reporting must never become the failure
        logger.debug("could not report a failure", exc_info=True)


def failure_counts() -> dict[tuple[str, str], int]:
    """Failures counted in this process, by ``(stage, cause)``."""
    with _lock:
        return dict(Counter({key: state.count for key, state in _states.items()}))


def reset_failure_counts() -> None:
    """Forget counts and rate-limit state (for tests)."""
    with _lock:
        _states.clear()
