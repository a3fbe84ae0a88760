"""Time limits on confession calls: no thread per call, none left behind unaccounted."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult
from pydantic import PrivateAttr

from confessional import Confessor, failure_counts
from confessional._timeouts import (
    MAX_CALL_THREADS,
    DaemonPool,
    await_with_timeout,
    model_deadline,
    overdue_calls,
    run_with_timeout,
    wait_for_overdue,
)
from confessional.testing import ScriptedChatModel, admitting_confessor, tool_call_message

CALL_THREAD = "confessional-call"


def _episode() -> list[BaseMessage]:
    call = tool_call_message(("run_tests", {}))
    return [
        HumanMessage("Make the speed test pass."),
        call,
        ToolMessage("1 passed", tool_call_id=call.tool_calls[0]["id"]),
        AIMessage("Done."),
    ]


class HungModel:
    """A confessing model that blocks every call until released, counting calls."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0
        self._changed = threading.Condition()
        answer = admitting_confessor().respond

        def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> Any:
            with self._changed:
                self.started += 1
                self._changed.notify_all()
            self.release.wait()
            return answer(messages, tools)

        self.model = ScriptedChatModel(respond=respond, model_name="hung")

    def wait_started(self, n: int) -> bool:
        """Wait until ``n`` calls have reached the model (they may lag their time out)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.started >= n, timeout=10)


def _call_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(CALL_THREAD)}


@pytest.fixture
def hung() -> Iterator[HungModel]:
    model = HungModel()
    yield model
    model.release.set()
    assert wait_for_overdue(0, timeout=10)


def test_twenty_hung_calls_leave_no_thread_unaccounted_for(hung: HungModel) -> None:
    before = set(threading.enumerate())
    confessor = Confessor(hung.model, timeout_s=0.05)

    confessions = [confessor.confess(_episode()) for _ in range(20)]

    assert [c.error_type for c in confessions] == ["timeout"] * 20
    new_threads = set(threading.enumerate()) - before
    print(f"threads before {len(before)}, after 20 hung calls {len(before) + len(new_threads)}")
    # Every extra thread is a call thread of the bounded pool, none per call beyond that...
    assert all(t.name.startswith(CALL_THREAD) and t.daemon for t in new_threads)
    assert len(new_threads) <= 20
    # ... and every call still running past its limit is counted and reported.
    assert hung.wait_started(20)
    assert hung.started == 20
    assert overdue_calls() == 20
    assert failure_counts()[("confession", "overdue_call")] == 20

    hung.release.set()
    assert wait_for_overdue(0, timeout=10)
    assert failure_counts()[("confession", "overdue_call_returned")] == 20
    settled = set(threading.enumerate())

    # The freed threads are reused: twenty more calls start no thread at all.
    answers = [confessor.confess(_episode()) for _ in range(20)]
    assert [c.status for c in answers] == ["ok"] * 20
    assert set(threading.enumerate()) - settled == set()


def test_the_pool_never_grows_past_its_bound(hung: HungModel) -> None:
    confessor = Confessor(hung.model, timeout_s=0.05)
    busy_before = overdue_calls()

    confessions = [confessor.confess(_episode()) for _ in range(MAX_CALL_THREADS + 8)]

    assert all(c.error_type == "timeout" for c in confessions)
    assert len(_call_threads()) == MAX_CALL_THREADS
    # Calls that found every thread busy timed out in the queue and never reached the model.
    assert hung.wait_started(MAX_CALL_THREADS - busy_before)
    assert hung.started == MAX_CALL_THREADS - busy_before
    assert overdue_calls() == MAX_CALL_THREADS


class _AsyncHungModel(ScriptedChatModel):
    """Its async call awaits forever (cancellable), as an async provider client does."""

    _never: asyncio.Event | None = PrivateAttr(default=None)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_async_timeouts_cancel_the_call_and_start_no_thread() -> None:
    confessor = Confessor(_AsyncHungModel(respond=lambda m, t: "unused"), timeout_s=0.05)
    before = set(threading.enumerate())

    confessions = [await confessor.aconfess(_episode()) for _ in range(20)]

    assert [c.error_type for c in confessions] == ["timeout"] * 20
    assert set(threading.enumerate()) - before == set()
    assert ("confession", "overdue_call") not in failure_counts()


@pytest.mark.asyncio
@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
async def test_an_async_time_limit_runs_the_call_in_the_callers_task() -> None:
    async def where() -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    assert await await_with_timeout(where(), 5.0) is asyncio.current_task()
    with pytest.raises(TimeoutError, match=r"within 0\.01s"):
        await await_with_timeout(asyncio.Event().wait(), 0.01)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


class _ClientWithTimeout(ScriptedChatModel):
    """A model whose client has its own timeout, as ``ChatOpenAI(timeout=...)`` does."""

    request_timeout: float | None = 2.0
    max_retries: int = 1


def test_a_model_with_its_own_timeout_is_called_on_the_callers_thread() -> None:
    seen: list[threading.Thread] = []
    model = _ClientWithTimeout(respond=lambda m, t: seen.append(threading.current_thread()) or "")

    assert model_deadline(model) == 4.0  # each of its 2 attempts may take the full 2 s
    assert run_with_timeout(lambda: model.invoke("hi"), 5.0, own_deadline_s=4.0).content == ""
    assert seen == [threading.current_thread()]
    run_with_timeout(lambda: model.invoke("hi"), 9.0, model=model, attempts=2)
    assert seen[-1] is threading.current_thread()
    # A limit tighter than the client's own needs the pool.
    run_with_timeout(lambda: model.invoke("hi"), 3.0, model=model)
    assert seen[-1].name.startswith(CALL_THREAD)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"request_timeout": None}, None),
        ({"request_timeout": 0.0}, None),
        ({"request_timeout": 3.0, "max_retries": 0}, 3.0),
    ],
)
def test_model_deadline_reads_the_client_settings(
    settings: dict[str, Any], expected: float | None
) -> None:
    model = _ClientWithTimeout(respond=lambda m, t: "", **settings)
    assert model_deadline(model) == expected
    assert model_deadline(admitting_confessor()) is None


def test_idle_pool_threads_end_and_a_later_call_starts_one_again() -> None:
    pool = DaemonPool(3, "idle-test", idle_timeout_s=0.05)

    assert [f.result(5) for f in [pool.submit(lambda i=i: i) for i in range(30)]] == list(range(30))

    workers = [t for t in threading.enumerate() if t.name.startswith("idle-test-")]
    assert 1 <= len(workers) <= 3  # bounded, and reused across the 30 calls
    for worker in workers:
        worker.join(timeout=5)  # each ends on its own once idle
        assert not worker.is_alive()
    assert pool.threads == 0
    assert pool.submit(lambda: "again").result(5) == "again"


def test_the_confessor_calls_a_model_with_its_own_timeout_on_the_callers_thread() -> None:
    seen: list[threading.Thread] = []
    admitting = admitting_confessor()

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> Any:
        seen.append(threading.current_thread())
        return admitting.respond(messages, tools)

    # 0.5 s per request, one client retry, three attempts at most: 3 s, within the 60 s limit.
    model = _ClientWithTimeout(respond=respond, request_timeout=0.5, max_retries=1)
    episode = [
        HumanMessage("fix it"),
        tool_call_message(("run_tests", {})),
        ToolMessage("1 failed", tool_call_id="call_0"),
        AIMessage("Fixed."),
    ]
    confession = Confessor(model, timeout_s=60).confess(episode)
    assert confession.status == "ok", confession.error
    assert seen
    assert all(thread is threading.current_thread() for thread in seen)
