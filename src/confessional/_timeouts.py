"""Time limits on model calls, without a thread per call.

A synchronous call cannot be interrupted from Python, so a time limit needs the call to
run somewhere the caller can stop waiting for. Two ways, cheapest first:

- the model's own client timeout, when it has one that fits the limit: the provider's
  HTTP client then ends the call itself and it runs on the caller's thread;
- otherwise a process-wide pool of at most :data:`MAX_CALL_THREADS` daemon threads,
  started on demand and reused. A call that is still running when its limit passes is
  counted as *overdue* and reported (``confessional.health``), and reported again when it
  finally returns; a call still queued when its limit passes is cancelled and never runs.
  Daemon threads never hold up interpreter exit.

Async calls need none of this: a timeout scope (``asyncio.timeout``, Python 3.11+) cancels
them in the caller's own task, with no task created per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import queue
import signal
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final, TypeVar

from confessional.health import report_failure

__all__ = [
    "MAX_CALL_THREADS",
    "SHUTDOWN_SIGNALS",
    "DaemonPool",
    "await_with_timeout",
    "model_deadline",
    "overdue_calls",
    "run_with_timeout",
    "start_without_shutdown_signals",
    "wait_for_idle_pools",
    "wait_for_overdue",
]

_T = TypeVar("_T")

MAX_CALL_THREADS: Final = 32
"""Threads the timeout pool may start. Enough for dozens of concurrent agents on threads
(each call holds one only while the provider answers), and a hard ceiling when a provider
hangs: then later calls queue, time out and are reported instead of piling up threads."""


class DaemonPool:
    """A bounded pool of daemon threads, started on demand and reused while busy.

    Unlike ``concurrent.futures.ThreadPoolExecutor``, whose workers are joined at
    interpreter exit (so one hung call stalls exit), these threads never delay exit. A
    thread idle for ``idle_timeout_s`` ends, so a pool (one per background pipeline) holds
    no threads while it has no work. A submitted call runs in a copy of the submitter's
    context (OTel, callbacks).
    """

    def __init__(self, max_workers: int, name: str, *, idle_timeout_s: float = 60.0) -> None:
        self.max_workers = max_workers
        self.idle_timeout_s = idle_timeout_s
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], contextvars.Context, Callable[[], Any]]]
        self._work = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # alive
        self._waiting = 0  # waiting for a call (or just started, about to)
        self._queued = 0  # submitted, not yet taken by a worker
        self._idle = threading.Condition(self._lock)  # notified when no call runs
        self._numbers = itertools.count(1)
        _POOLS.add(self)

    @property
    def threads(self) -> int:
        """Threads alive now."""
        with self._lock:
            return self._threads

    def submit(self, call: Callable[[], _T]) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            self._work.put((future, contextvars.copy_context(), call))
            self._queued += 1
            if self._waiting >= self._queued or self._threads >= self.max_workers:
                return future  # a waiting worker takes it, or it waits for a free one
            self._threads += 1
            self._waiting += 1
            name = f"{self._name}-{next(self._numbers)}"
        start_without_shutdown_signals(
            threading.Thread(target=self._worker, name=name, daemon=True)
        )
        return future

    def _worker(self) -> None:
        while True:  # counted in _waiting here
            try:
                future, context, call = self._work.get(timeout=self.idle_timeout_s)
            except queue.Empty:
                with self._lock:
                    if self._queued == 0:  # nothing for it: end (a later call starts one)
                        self._waiting -= 1
                        self._threads -= 1
                        return
                continue  # a call was queued just now: take it
            with self._lock:
                self._waiting -= 1
                self._queued -= 1
            if future.set_running_or_notify_cancel():
                try:
                    result = context.run(call)
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, context, call  # hold nothing while idle
            with self._lock:
                self._waiting += 1
                if self._waiting == self._threads:
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is running (every thread waits for one); ``False`` if
        ``timeout`` ran out first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._waiting == self._threads, timeout)


_POOLS: weakref.WeakSet[DaemonPool] = weakref.WeakSet()


def wait_for_idle_pools(timeout: float) -> bool:
    """Wait, ``timeout`` in all, until no pool runs a call; ``False`` if one still does."""
    deadline = time.monotonic() + timeout
    return all([pool.wait_idle(max(deadline - time.monotonic(), 0.0)) for pool in list(_POOLS)])


SHUTDOWN_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
"""The signals that shut a process down, whose handlers the main thread runs."""


def start_without_shutdown_signals(thread: threading.Thread) -> None:
    """Start ``thread`` with SIGTERM and SIGINT blocked in it from its first instruction.

    The kernel hands a process signal to any thread that does not block it, and Python
    runs handlers on the main thread only: a main thread waiting on a lock (``join()``,
    ``Event.wait()``) is woken only when the signal lands on it. A thread inherits its
    creator's signal mask, so the signals are blocked here around ``start()``: a thread
    that blocks them itself, once running, leaves a window in which a signal can land on
    it. A signal sent meanwhile stays pending and reaches this thread when its mask is
    restored.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: no per-thread masks
        thread.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_pool = DaemonPool(MAX_CALL_THREADS, "confessional-call")
_overdue_changed = threading.Condition()
_overdue = 0


def overdue_calls() -> int:
    """Model calls still running after their time limit ran out."""
    with _overdue_changed:
        return _overdue


def wait_for_overdue(at_most: int = 0, timeout: float | None = None) -> bool:
    """Wait until at most ``at_most`` calls are overdue; ``False`` if ``timeout`` ran out."""
    with _overdue_changed:
        return _overdue_changed.wait_for(lambda: _overdue <= at_most, timeout)


def model_deadline(model: object) -> float | None:
    """The longest a call to ``model`` can take by its own client settings, or ``None``.

    Reads the timeout the LangChain provider classes expose (``request_timeout`` or
    ``timeout``, ``default_request_timeout``) and multiplies by the client's own retries
    (``max_retries``), because each retry can take the full timeout again.
    """
    timeout: Any = None
    for attribute in ("request_timeout", "timeout", "default_request_timeout"):
        timeout = getattr(model, attribute, None)
        if timeout is not None:
            break
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        return None  # unset, or an httpx.Timeout/tuple whose total is not one number
    retries = getattr(model, "max_retries", 0)
    retries = retries if isinstance(retries, int) and not isinstance(retries, bool) else 0
    return float(timeout) * (1 + max(retries, 0))


def run_with_timeout(
    call: Callable[[], _T],
    timeout_s: float,
    *,
    model: object = None,
    attempts: int = 1,
    own_deadline_s: float | None = None,
) -> _T:
    """Run ``call`` with a time limit of ``timeout_s``.

    ``model`` and ``attempts``: the model ``call`` calls, and how many times at most. When
    its own client timeout bounds all of them within ``timeout_s`` (see
    :func:`model_deadline`), the call runs right here and the provider's client enforces
    the limit. ``own_deadline_s`` gives that bound directly. Otherwise the call runs on
    the shared pool.
    """
    if own_deadline_s is None and model is not None:
        per_attempt = model_deadline(model)
        own_deadline_s = None if per_attempt is None else per_attempt * max(attempts, 1)
    if own_deadline_s is not None and own_deadline_s <= timeout_s:
        return call()
    future = _pool.submit(call)
    started = time.monotonic()
    try:
        return future.result(timeout_s)
    except FutureTimeout:
        if not future.cancel():  # it is running: it keeps its thread until it returns
            _mark_overdue(future, started, timeout_s)
        raise TimeoutError(f"confession model did not answer within {timeout_s:g}s") from None
    except CancelledError:  # not ours to cancel; treat as the call failing
        raise TimeoutError("confession model call was cancelled") from None


def _mark_overdue(future: Future[Any], started: float, timeout_s: float) -> None:
    global _overdue
    with _overdue_changed:
        _overdue += 1
        overdue = _overdue
    report_failure(
        "confession",
        "overdue_call",
        f"a confession model call is still running after its {timeout_s:g}s limit; it "
        f"holds one of at most {MAX_CALL_THREADS} call threads until it returns "
        f"({overdue} overdue now)",
    )

    def returned(_: Future[Any]) -> None:
        global _overdue
        report_failure(
            "confession",
            "overdue_call_returned",
            f"an overdue confession model call returned after {time.monotonic() - started:.1f}s"
            " (its result was discarded)",
        )
        with _overdue_changed:
            _overdue -= 1
            _overdue_changed.notify_all()

    future.add_done_callback(returned)


async def await_with_timeout(awaitable: Awaitable[_T], timeout_s: float) -> _T:
    """Await ``awaitable`` for at most ``timeout_s``; ``TimeoutError`` after that.

    On Python 3.11+ it runs in the caller's task under ``asyncio.timeout``: no task per
    call and no extra turn of the event loop, as ``asyncio.wait_for`` would take.
    """
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(timeout_s):
                return await awaitable
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:  # a distinct class before Python 3.11
        raise TimeoutError(f"confession model did not answer within {timeout_s:g}s") from None
