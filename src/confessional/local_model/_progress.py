"""Progress lines on stderr: what step is running and for how long."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

ProgressSink = Callable[[str], None]
"""Receives one finished progress line (no trailing newline)."""

_PREFIX = "[confessional local-model]"


def stderr_sink(line: str) -> None:
    """Write ``line`` to stderr at once, so it shows under ``pytest -s`` and in CI logs."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def silent_sink(line: str) -> None:
    """Discard progress; for callers that report on their own."""


class Step:
    """One named step; every line it emits carries the time since the step began."""

    def __init__(self, sink: ProgressSink, name: str) -> None:
        self._sink = sink
        self.name = name
        self._started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def say(self, message: str) -> None:
        self._sink(f"{_PREFIX} {self.name}: {message} [{self.elapsed:.1f}s]")
