"""Background confessions: off the agent's critical path, bounded, and durable at shutdown.

Each pipeline with ``background=True`` gets a :class:`BackgroundRunner`: at most
``max_concurrency`` confessions run at once on daemon threads, at most ``max_pending`` are
queued or running before a new one waits (back-pressure, never a silent drop).

Shutdown. When the process ends (interpreter exit, or SIGTERM or SIGINT) the pending
confessions get one bounded wait, ``flush_timeout_s`` in total however many pipelines
there are. Every confession still queued or running after it is written to its
pipeline's spool (:mod:`confessional.spool`) and counted; ``confessional drain SPOOL``
confesses it later. A confession is either delivered to the sinks or spooled, never both
and never neither: a running one that was spooled is not delivered if it finishes later.

Signals. The first time background mode is used from the main thread, handlers for
SIGTERM and SIGINT are installed that flush, spool, then hand the signal on to the handler
that was there before (the default one terminates the process, as before; Python's SIGINT
handler raises ``KeyboardInterrupt``). A signal that was ignored stays ignored. Signal
handlers can only be set from the main thread: an application that first uses background
mode from another thread calls :func:`install_signal_handlers` from its main thread.
Python runs signal handlers on the main thread only, so confessional's own threads block
SIGTERM and SIGINT: the kernel then delivers them to the main thread, and a main thread
waiting in ``join()`` or ``Event.wait()`` wakes up to run the handler at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from types import FrameType
from typing import Any, Final, Literal, Protocol

from confessional._timeouts import SHUTDOWN_SIGNALS, DaemonPool, wait_for_idle_pools
from confessional.confession import Confession
from confessional.health import report_failure

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT_S",
    "BackgroundJob",
    "BackgroundRunner",
    "background_counts",
    "flush_background",
    "install_signal_handlers",
    "on_shutdown",
]

DEFAULT_FLUSH_TIMEOUT_S: Final = 5.0
"""Default total wait for background confessions at shutdown. Half of the 10 s grace
period ``docker stop`` gives before SIGKILL (Kubernetes gives 30 s), which leaves the
application time for its own shutdown; the rest is spooled, not lost."""

EXIT_SETTLE_S: Final = 0.5
"""At interpreter exit, after the flush and the spool: how long confession calls still
running (their results discarded) get to return before the interpreter finalises. CPython
before 3.14 ends a daemon thread that takes the GIL during finalisation by unwinding its
stack; unwinding through a Rust extension's frames (pydantic-core validating a reply)
aborts the whole process ("FATAL: exception not rethrown", SIGABRT: 3 of 70 SIGINT exits
of the shutdown test's child, 0 of 120 with this wait). A call about to return returns
meanwhile; a hung one stays blocked in C, where the exit is safe."""

_RUNNERS: weakref.WeakSet[BackgroundRunner] = weakref.WeakSet()
_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


def _count(outcome: str, n: int = 1) -> None:
    with _counts_lock:
        _counts[outcome] += n


def background_counts() -> dict[str, int]:
    """Background confessions in this process by outcome: ``submitted``, ``delivered``
    (the pipeline ran to the sinks), ``spooled`` (written to a spool at shutdown),
    ``failed`` (the job raised) and ``lost`` (could not be spooled either). Failed and
    lost ones are also reported as failures (``confessional.health``)."""
    outcomes = ("submitted", "delivered", "spooled", "failed", "lost")
    with _counts_lock:
        return {key: _counts[key] for key in outcomes}


class BackgroundJob(Protocol):
    """One background confession as the runner sees it."""

    def run(self, may_deliver: Callable[[], bool]) -> Confession:
        """Confess; call ``may_deliver()`` right before delivering, and skip delivery when
        it returns ``False`` (the job was spooled meanwhile)."""

    def spool(self) -> str:
        """Write the job to its spool; returns the record id. May raise ``OSError``."""


_State = Literal["queued", "running", "delivering", "done", "spooled"]


class _Ticket:
    """A job's place in the runner: delivered or spooled, decided exactly once."""

    def __init__(self, job: BackgroundJob) -> None:
        self.job = job
        self.future: Future[Confession] | None = None
        self.state: _State = "queued"
        self._lock = threading.Lock()

    def _move(self, allowed: tuple[_State, ...], to: _State) -> bool:
        with self._lock:
            if self.state not in allowed:
                return False
            self.state = to
            return True

    def start(self) -> bool:
        return self._move(("queued",), "running")

    def claim_delivery(self) -> bool:
        return self._move(("running",), "delivering")

    def claim_spool(self) -> bool:
        return self._move(("queued", "running"), "spooled")

    def finish(self) -> None:
        self._move(("running", "delivering"), "done")


_SPOOLED = Confession(status="skipped", error="spooled at shutdown; confess it with drain")


class BackgroundRunner:
    """A bounded pool of background confessions with back-pressure, flush and spool.

    Args:
        max_concurrency: confessions running at once.
        max_pending: confessions queued or running before :meth:`submit` waits.
        flush_timeout_s: this pipeline's share of the wait at shutdown (the longest of
            all pipelines' is the total wait).
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_pending: int,
        flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S,
    ) -> None:
        self.flush_timeout_s = flush_timeout_s
        self._slots = threading.BoundedSemaphore(max_pending)
        # Re-entrant: a signal handler runs on the main thread, maybe inside submit().
        self._lock = threading.RLock()
        self._tickets: set[_Ticket] = set()
        self._workers = DaemonPool(max_concurrency, "confessional-background")
        self._registered = False

    def submit(self, job: BackgroundJob) -> Future[Confession]:
        """Run ``job`` in the background, in a copy of the caller's context. Blocks only
        while ``max_pending`` jobs are already queued or running."""
        self._slots.acquire()
        ticket = _Ticket(job)
        with self._lock:  # registered before it can run, so a fast job cannot outrun it
            self._tickets.add(ticket)
            if not self._registered:
                self._registered = True
                _RUNNERS.add(self)
                _register_at_exit()
                install_signal_handlers(quiet=True)
        _count("submitted")
        future = self._workers.submit(lambda: self._run(ticket))
        ticket.future = future
        future.add_done_callback(lambda _: self._settle(ticket))
        return future

    async def asubmit(self, job: BackgroundJob) -> Future[Confession]:
        """:meth:`submit` that never blocks the event loop, even under back-pressure."""
        if self._slots.acquire(blocking=False):
            self._slots.release()
            return self.submit(job)
        return await asyncio.to_thread(self.submit, job)

    @staticmethod
    def _run(ticket: _Ticket) -> Confession:
        if not ticket.start():
            return _SPOOLED
        try:
            confession = ticket.job.run(ticket.claim_delivery)
        finally:
            delivered = ticket.state == "delivering"
            ticket.finish()
        if delivered:
            _count("delivered")
        return confession

    def _settle(self, ticket: _Ticket) -> None:
        with self._lock:
            self._tickets.discard(ticket)
        self._slots.release()
        future = ticket.future
        error = None if future is None or future.cancelled() else future.exception()
        if error is not None:
            _count("failed")
            report_failure(
                "background",
                type(error).__name__,
                "a background confession failed",
                exc_info=error,
            )

    def _unfinished(self) -> list[Future[Confession]]:
        with self._lock:
            return [
                t.future for t in self._tickets if t.future is not None and t.state != "spooled"
            ]

    @property
    def pending(self) -> int:
        """Background confessions queued or running (not counting spooled ones)."""
        return len(self._unfinished())

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for every background confession; ``False`` if some are still running."""
        _, still_running = futures_wait(self._unfinished(), timeout=timeout)
        return not still_running

    async def aflush(self, timeout: float | None = None) -> bool:
        """Async :meth:`flush`: waits without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    def spool_unfinished(self) -> tuple[int, int]:
        """Spool every confession not finished yet; ``(spooled, lost)``.

        A queued one will not run; a running one will not be delivered when it returns.
        One that is delivering right now is left to finish.
        """
        spooled = lost = 0
        with self._lock:
            tickets = list(self._tickets)
        for ticket in tickets:
            if not ticket.claim_spool():
                continue
            if ticket.future is not None:
                ticket.future.cancel()  # succeeds for a queued job, so its slot is freed
            try:
                ticket.job.spool()
            except Exception as exc:  # a full disk or unserialisable state: say so loudly
                lost += 1
                report_failure(
                    "background",
                    "spool_failed",
                    f"a pending background confession could not be spooled ({type(exc).__name__})"
                    "; it is lost",
                    exc_info=exc,
                )
            else:
                spooled += 1
        _count("spooled", spooled)
        _count("lost", lost)
        return spooled, lost


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def flush_background(timeout: float | None = None, *, spool_unfinished: bool = False) -> bool:
    """Wait for the background confessions of every pipeline (also run at exit).

    Surfaces build their pipeline internally; this reaches them all. ``timeout`` is the
    total wait across every pipeline. With ``spool_unfinished``, what is still pending
    after it is written to each pipeline's spool (as at shutdown). ``True`` when nothing
    was left pending.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    runners = list(_RUNNERS)
    finished = all([runner.flush(_remaining(deadline)) for runner in runners])
    if finished or not spool_unfinished:
        return finished
    spooled = lost = 0
    for runner in runners:
        done = runner.spool_unfinished()
        spooled, lost = spooled + done[0], lost + done[1]
    if spooled:
        report_failure(
            "background",
            "spooled",
            f"{spooled} background confession(s) were not finished within the flush "
            "timeout and were spooled; confess them with `confessional drain SPOOL`",
        )
    return False


# -- shutdown: at exit and on SIGTERM/SIGINT ------------------------------------------

_shutdown_lock = threading.Lock()
_shutdown_deadline: float | None = None
_previous: dict[int, Any] = {}
_hooks: list[weakref.WeakMethod[Callable[[], None]]] = []
_hooks_lock = threading.Lock()


def on_shutdown(hook: Callable[[], None]) -> None:
    """Call the bound method ``hook`` at shutdown, after the background confessions were
    flushed or spooled (pipelines flush and close their sinks there). Held weakly: a
    pipeline that was garbage-collected is skipped. Registers the exit handler."""
    with _hooks_lock:
        _hooks[:] = [ref for ref in _hooks if ref() is not None]
        _hooks.append(weakref.WeakMethod(hook))  # type: ignore[arg-type]
    _register_at_exit()


def _run_hooks() -> None:
    with _hooks_lock:
        hooks = [hook for hook in (ref() for ref in _hooks) if hook is not None]
    for hook in hooks:
        try:
            hook()
        except Exception as exc:  # one pipeline's sinks must not keep the others open
            report_failure(
                "sink", type(exc).__name__, "closing sinks at shutdown failed", exc_info=exc
            )


def _shutdown() -> None:
    """One bounded flush for the whole process, then spool the rest, then the
    :func:`on_shutdown` hooks (sinks are flushed and closed).

    The budget (the longest ``flush_timeout_s`` of the pipelines) starts at the first
    shutdown event; a signal followed by interpreter exit shares it.
    """
    global _shutdown_deadline
    if not _shutdown_lock.acquire(blocking=False):
        return  # a signal arrived while this thread was already shutting down
    try:
        runners = list(_RUNNERS)
        if runners:
            if _shutdown_deadline is None:
                budget = max(runner.flush_timeout_s for runner in runners)
                _shutdown_deadline = time.monotonic() + budget
            flush_background(_remaining(_shutdown_deadline), spool_unfinished=True)
        _run_hooks()
    finally:
        _shutdown_lock.release()


_at_exit_registered = False


def _register_at_exit() -> None:
    """Register the exit flush at first use, not at import: exit hooks run last-in,
    first-out, so ours then runs before the shutdown of a tracer provider the application
    set up earlier, and the spans of confessions finishing in the flush still export."""
    global _at_exit_registered
    if not _at_exit_registered:
        _at_exit_registered = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    _shutdown()
    if not wait_for_idle_pools(EXIT_SETTLE_S):  # see EXIT_SETTLE_S
        report_failure(
            "background",
            "running_at_exit",
            f"a confession model call was still running {EXIT_SETTLE_S:g}s after the exit's "
            "flush and spool; the interpreter exits with it (its result was discarded)",
        )


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _shutdown()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    # SIG_DFL, or a handler set outside Python: re-raise with the default disposition,
    # so the process ends as it would have (and its exit status names the signal).
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers(*, quiet: bool = False) -> bool:
    """Flush and spool background confessions on SIGTERM and SIGINT, then hand the signal
    to the handler that was installed before. Idempotent.

    Done for you the first time background mode is used from the main thread. Returns
    ``False`` off the main thread (Python only lets the main thread set handlers); with
    ``quiet=False`` that is also reported.
    """
    if threading.current_thread() is not threading.main_thread():
        if not quiet:
            report_failure(
                "config",
                "signal_handlers_off_main_thread",
                "install_signal_handlers() must be called from the main thread",
            )
        return False
    for signum in SHUTDOWN_SIGNALS:
        current = signal.getsignal(signum)
        if current is _on_signal or current == signal.SIG_IGN:
            continue  # installed already, or the application chose to ignore it
        with contextlib.suppress(ValueError, OSError):  # e.g. an embedded interpreter
            signal.signal(signum, _on_signal)
            _previous[signum] = current
    return True
