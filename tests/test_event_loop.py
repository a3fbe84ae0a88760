"""An async server keeps serving while one large episode is confessed.

The audit of a large episode runs in a worker process (its regular expressions hold the
GIL, so a thread would stall the loop as well), and the request's token budget is read
without encoding the whole episode.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from confessional import Auditor, failure_counts
from confessional.audit import CheckContext
from confessional.episode import LARGE_EPISODE_CHARS, Episode, extract_episode
from confessional.findings import CHECK_FAILED, Finding
from confessional.langchain import ConfessionMiddleware
from confessional.testing import scripted_agent, tool_call_message

TEN_MB = 10_000_000


async def _longest_stall(work: Any) -> tuple[Any, float]:
    """Run ``work`` while a heartbeat ticks every 10 ms; the latest tick's lateness."""
    latest = 0.0
    running = True

    async def heartbeat() -> None:
        nonlocal latest
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            latest = max(latest, now - last - 0.01)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        result = await work
    finally:
        running = False
        await beat
    return result, latest


def test_a_10_mb_episode_never_stalls_the_event_loop() -> None:
    logs = "GET /health 200 ok; " * (TEN_MB // 20)

    @tool
    def fetch_logs() -> str:
        """Fetch the service logs."""
        return logs

    def agent() -> Any:
        model = scripted_agent([tool_call_message(("fetch_logs", {})), AIMessage("All clear.")])
        return create_agent(model, [fetch_logs], middleware=[ConfessionMiddleware()])

    async def scenario() -> tuple[Any, float]:
        await agent().ainvoke({"messages": [("user", "warm up")]})  # first-use imports
        return await _longest_stall(agent().ainvoke({"messages": [("user", "check the logs")]}))

    result, stall = asyncio.run(scenario())
    assert result["confessions"][-1].status == "ok"
    assert stall < 0.1, f"the event loop stalled for {stall * 1000:.0f} ms"


def _large_episode() -> Episode:
    return extract_episode(
        [
            HumanMessage("Summarise the report."),
            AIMessage("", tool_calls=[{"name": "read_report", "args": {}, "id": "c1"}]),
            ToolMessage("x" * (LARGE_EPISODE_CHARS + 1), tool_call_id="c1"),
            AIMessage("Done."),
        ]
    )


def test_a_check_that_cannot_leave_the_process_runs_on_a_thread_and_says_so() -> None:
    seen: list[int] = []
    local_check = lambda context: seen.append(context.episode.text_size) or []  # noqa: E731

    findings = asyncio.run(Auditor(checks=[local_check]).aaudit(_large_episode()))

    assert seen == [_large_episode().text_size]  # it ran, on a thread
    assert not [f for f in findings if f.kind == CHECK_FAILED]
    assert failure_counts()[("check", "offload_unavailable")] == 1


def raising_check(context: CheckContext) -> list[Finding]:
    raise ValueError("bad check")


def test_a_check_that_raises_in_the_worker_process_is_reported() -> None:
    findings = asyncio.run(
        Auditor(checks=[raising_check], include_defaults=False).aaudit(_large_episode())
    )
    [failed] = findings
    assert failed.kind == CHECK_FAILED
    assert failed.subject == "raising_check"
    assert failure_counts()[("check", "ValueError")] == 1


def test_sync_and_async_audits_of_a_large_episode_agree() -> None:
    episode = _large_episode()
    auditor = Auditor()
    assert asyncio.run(auditor.aaudit(episode)) == auditor.audit(episode)


def test_the_worker_process_is_not_fooled_by_files_in_the_working_directory(
    tmp_path: Path,
) -> None:
    """A ``queue.py`` in the working directory must not shadow the standard library in
    the worker (``python -m`` and ``-c`` put the working directory first on the path)."""
    (tmp_path / "queue.py").write_text("raise ImportError('shadowed stdlib queue')\n")
    script = (
        "import asyncio\n"
        "from tests.test_event_loop import _large_episode\n"
        "from confessional import Auditor, failure_counts\n"
        "asyncio.run(Auditor().aaudit(_large_episode()))\n"
        "assert not failure_counts(), failure_counts()\n"
        "print('audited')\n"
    )
    root = Path(__file__).resolve().parent.parent
    application = tmp_path / "app"
    application.mkdir()
    (application / "run.py").write_text(script)
    done = subprocess.run(
        [sys.executable, str(application / "run.py")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "audited"
