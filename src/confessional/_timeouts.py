"""Time limits on model calls."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["await_with_timeout", "run_with_timeout"]

_T = TypeVar("_T")


def run_with_timeout(call: Callable[[], _T], timeout_s: float) -> _T:
    """Run ``call`` in a daemon thread so a hung provider cannot hang the agent or exit."""
    outcome: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()  # keeps OTel and callback context in the thread

    def target() -> None:
        try:
            outcome["value"] = context.run(call)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="confessional-confess", daemon=True).start()
    if not done.wait(timeout_s):
        raise TimeoutError(f"confession model did not answer within {timeout_s:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


async def await_with_timeout(awaitable: Awaitable[_T], timeout_s: float) -> _T:
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:  # a distinct class before Python 3.11
        raise TimeoutError(f"confession model did not answer within {timeout_s:g}s") from None
