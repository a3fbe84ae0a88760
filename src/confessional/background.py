"""Background confessions: off the agent's critical path, bounded, and flushed at exit."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from confessional.confession import Confession
from confessional.health import report_failure

__all__ = ["BackgroundRunner", "flush_background"]

_RUNNERS: weakref.WeakSet[BackgroundRunner] = weakref.WeakSet()


def flush_background(timeout: float | None = None) -> bool:
    """Wait for the background confessions of every pipeline (also run at exit).

    Surfaces build their pipeline internally; this reaches them all. ``False`` if some
    were still running when ``timeout`` (per pipeline) ran out.
    """
    return all([runner.flush(timeout) for runner in list(_RUNNERS)])


atexit.register(flush_background)


class BackgroundRunner:
    """A bounded pool of background confessions with back-pressure and flush.

    Args:
        max_concurrency: confessions running at once.
        max_pending: confessions queued or running before :meth:`submit` waits.
    """

    def __init__(self, *, max_concurrency: int, max_pending: int) -> None:
        self._max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_pending)
        self._pending: set[Future[Confession]] = set()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._max_concurrency, thread_name_prefix="confessional"
                )
                _RUNNERS.add(self)
            return self._executor

    def submit(self, job: Callable[[], Confession]) -> Future[Confession]:
        """Run ``job`` in the background, in a copy of the caller's context. Blocks only
        while ``max_pending`` jobs are already queued or running."""
        context = contextvars.copy_context()
        self._slots.acquire()
        future = self._pool().submit(context.run, job)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._settle)
        return future

    async def asubmit(self, job: Callable[[], Confession]) -> Future[Confession]:
        """:meth:`submit` that never blocks the event loop, even under back-pressure."""
        if self._slots.acquire(blocking=False):
            self._slots.release()
            return self.submit(job)
        return await asyncio.to_thread(self.submit, job)

    def _settle(self, future: Future[Confession]) -> None:
        with self._lock:
            self._pending.discard(future)
        self._slots.release()
        error = None if future.cancelled() else future.exception()
        if error is not None:
            report_failure(
                "background",
                type(error).__name__,
                "a background confession failed",
                exc_info=error,
            )

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
            report_failure(
                "background",
                "flush_timeout",
                f"{len(still_running)} background confession(s) still running after flush",
            )
        return not still_running

    async def aflush(self, timeout: float | None = None) -> bool:
        """Async :meth:`flush`: waits without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)
