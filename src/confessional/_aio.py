"""Sans-IO drivers (one step sequence, a sync and an async driver) and running an
awaitable to completion from synchronous code."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

from confessional._timeouts import start_without_shutdown_signals

__all__ = ["adrive", "drive", "run_sync"]

_T = TypeVar("_T")


async def _await(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


def run_sync(awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` from sync code, on a private event loop.

    If this thread already runs an event loop (sync code called from async code), the
    private loop runs in a helper thread, because a loop cannot be re-entered.
    """
    coroutine: Coroutine[Any, Any, _T] = _await(awaitable)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(asyncio.run, coroutine)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="confessional-run-sync")
    start_without_shutdown_signals(thread)  # the main thread, joining it, must get them
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


_E = TypeVar("_E")


def _advance(
    steps: Generator[_E, Any, _T], result: Any, failure: BaseException | None
) -> tuple[bool, Any]:
    """Send the last result (or throw the last failure) in; ``(done, request or value)``."""
    try:
        return False, steps.send(result) if failure is None else steps.throw(failure)
    except StopIteration as done:
        return True, done.value


def drive(steps: Generator[_E, Any, _T], perform: Callable[[_E], Any]) -> _T:
    """Run a sans-IO step sequence: each yielded request is performed and sent back.

    An exception from ``perform`` is thrown into the steps, so their ``with`` blocks and
    ``finally`` clauses see it, then propagates.
    """
    outcome: tuple[Any, BaseException | None] = (None, None)
    while True:
        done, value = _advance(steps, *outcome)
        if done:
            return value  # type: ignore[no-any-return]
        try:
            outcome = (perform(value), None)
        except BaseException as exc:
            outcome = (None, exc)


async def adrive(steps: Generator[_E, Any, _T], perform: Callable[[_E], Awaitable[Any]]) -> _T:
    """Async :func:`drive`: ``perform`` returns an awaitable."""
    outcome: tuple[Any, BaseException | None] = (None, None)
    while True:
        done, value = _advance(steps, *outcome)
        if done:
            return value  # type: ignore[no-any-return]
        try:
            outcome = (await perform(value), None)
        except BaseException as exc:
            outcome = (None, exc)
