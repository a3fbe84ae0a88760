"""The write-ahead queue on a real PostgreSQL server started by the tests (tests/pg/server.py).

Agents and workers are separate processes (``tests/pg/queue_procs.py`` and ``confessional
worker``); the tests kill them with SIGKILL and SIGTERM and check the JSONL sink against
the queue table. No test sleeps: each waits on observable state (table counts, process
exit) with a deadline.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.pg.queue_procs import episode, slow_confessor
from tests.pg.server import PostgresServer, running_postgres

from confessional import Confession, ConfessionOptions, ConfessionTelemetry, JsonlSink
from confessional.cli import main
from confessional.errors import ConfigurationError, MissingExtraError
from confessional.pipeline import ConfessionPipeline
from confessional.queue import QueueStore
from confessional.queue._deliver import _PRODUCERS

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def fresh_database(server: PostgresServer) -> str:
    name = f"q_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return server.url.replace("/postgres?", f"/{name}?")


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    """A fresh database with the queue's tables (so the tests can count before any
    process started)."""
    created = fresh_database(postgres)
    store = QueueStore(created)
    store.migrate()
    store.close()
    return created


def wait_for(what: str, check: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        pause.wait(0.05)


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT state, count(*) FROM confessional_queue GROUP BY state")
        found = {str(state): int(n) for state, n in rows.fetchall()}
    return collections.Counter(found)


def table_ids(url: str, state: str = "done") -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT confession_id FROM confessional_queue WHERE state = %s", (state,)
        ).fetchall()
    return [str(row[0]) for row in rows]


def delivered(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line)["confession"] for line in path.read_text().splitlines() if line]


def _env(out: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "QUEUE_TEST_OUT": str(out), **extra}


def start_agent(
    url: str, name: str, count: int, out: Path, *, in_process: bool = False
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.pg.queue_procs", "agent", url, name, str(count)]
    return subprocess.Popen(
        [*command, *(["--in-process"] if in_process else [])],
        cwd=REPO,
        env=_env(out),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def start_worker(url: str, out: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "confessional",
            "worker",
            "--queue",
            url,
            "--options",
            "tests.pg.queue_procs:worker_options",
            "--poll",
            "0.05",
            *args,
        ],
        cwd=REPO,
        env=_env(out, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def enqueued(agent: subprocess.Popen[str]) -> int:
    assert agent.stdout is not None
    line = agent.stdout.readline()
    return int(json.loads(line)["enqueued"])


def kill(process: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    if process.poll() is None:
        os.kill(process.pid, sig)
    process.communicate(timeout=DEADLINE_S)  # also closes its pipes


def assert_exactly_once(url: str, out: Path, expected: int) -> list[dict[str, Any]]:
    confessions = delivered(out)
    ids = [c["id"] for c in confessions]
    assert len(ids) == expected, collections.Counter(ids).most_common(3)
    assert len(set(ids)) == expected
    assert sorted(ids) == sorted(table_ids(url))  # the sink holds what the table says is done
    return confessions


def test_sigkilled_agent_loses_nothing(url: str, tmp_path: Path) -> None:
    out = tmp_path / "confessions.jsonl"
    agent = start_agent(url, "a", 40, out, in_process=True)
    try:
        assert enqueued(agent) == 40  # every submit returned: each one was committed
    finally:
        kill(agent)  # SIGKILL: no exit handler, no spool
    state = counts(url)
    assert sum(state.values()) == 40
    worker = start_worker(url, out, "--concurrency", "4")
    try:
        wait_for("40 done", lambda: counts(url)["done"] == 40)
    finally:
        kill(worker, signal.SIGTERM)
    confessions = assert_exactly_once(url, out, 40)
    objectives = {c["report"]["compliance_analysis"][0]["objective"] for c in confessions}
    assert {o.rsplit(": ", 1)[1] for o in objectives} == {f"task a-{i}" for i in range(40)}


def test_four_agents_three_workers_one_killed_mid_job(url: str, tmp_path: Path) -> None:
    out = tmp_path / "confessions.jsonl"
    agents = [start_agent(url, f"agent{n}", 50, out) for n in range(4)]
    workers = [start_worker(url, out, "--concurrency", "4") for _ in range(3)]
    victim = workers[0]
    try:

        def victim_holds_jobs() -> bool:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM confessional_queue WHERE state = 'running' "
                    "AND worker LIKE %s",
                    (f"%:{victim.pid}:%",),
                ).fetchone()
            return row is not None and row[0] > 0

        wait_for("the victim worker to hold a job", victim_holds_jobs)
        kill(victim)  # SIGKILL mid-job: its leases expire and the others take the jobs
        assert sum(enqueued(agent) for agent in agents) == 200
        wait_for("200 done", lambda: counts(url)["done"] == 200)
    finally:
        for process in [*agents, *workers]:
            kill(process, signal.SIGTERM if process in workers else signal.SIGKILL)
    confessions = assert_exactly_once(url, out, 200)
    requests = collections.Counter(
        c["report"]["compliance_analysis"][0]["objective"].rsplit(": ", 1)[1] for c in confessions
    )
    assert set(requests.values()) == {1}
    assert len(requests) == 200
    with psycopg.connect(url) as conn:
        retried = conn.execute(
            "SELECT count(*) FROM confessional_queue WHERE attempts > 1"
        ).fetchone()
    assert retried is not None
    assert retried[0] >= 1


def test_poison_job_is_dead_lettered_while_others_flow(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "confessions.jsonl"
    agents = [start_agent(url, "poison", 1, out), start_agent(url, "ok", 20, out)]
    worker = start_worker(url, out, "--concurrency", "2", QUEUE_TEST_ATTEMPTS="3")
    try:
        assert [enqueued(agent) for agent in agents] == [1, 20]
        wait_for("20 done and 1 dead", lambda: counts(url) == {"done": 20, "dead": 1})
    finally:
        kill(worker, signal.SIGTERM)
        for agent in agents:
            kill(agent)
    assert_exactly_once(url, out, 20)  # the poison job delivered nothing
    store = QueueStore(url)
    status = store.status()
    store.close()
    (dead,) = status.dead
    assert dead.attempts == 3
    assert dead.last_error is not None
    assert "QueueJobFailed" in dead.last_error
    assert main(["queue", "status", url]) == 0
    shown = capsys.readouterr().out
    assert "dead letters" in shown
    assert "QueueJobFailed" in shown
    assert main(["queue", "retry", url]) == 0
    assert counts(url) == {"done": 20, "pending": 1}
    assert main(["queue", "purge", url]) == 0
    assert counts(url) == {"pending": 1}
    assert "1 dead letter(s) requeued" in capsys.readouterr().out


def test_sigterm_gives_back_held_jobs_within_the_grace(url: str, tmp_path: Path) -> None:
    out = tmp_path / "confessions.jsonl"
    agent = start_agent(url, "slow", 6, out)
    worker = start_worker(url, out, "--concurrency", "3", "--grace", "0.5", QUEUE_TEST_DELAY_S="30")
    try:
        assert enqueued(agent) == 6
        wait_for("3 running", lambda: counts(url)["running"] == 3)
        started = time.monotonic()
        os.kill(worker.pid, signal.SIGTERM)
        code = worker.wait(timeout=DEADLINE_S)
        elapsed = time.monotonic() - started
    finally:
        kill(worker)
        kill(agent)
    assert code == 0
    assert elapsed < 0.5 + 5.0  # the grace, plus a DB round trip and the process exit
    assert counts(url) == {"pending": 6}  # the 3 it held were given back at once
    with psycopg.connect(url) as conn:
        attempts = conn.execute("SELECT max(attempts) FROM confessional_queue").fetchone()
    assert attempts == (0,)  # a given-back job was not counted as a failed attempt


def test_in_process_worker_joins_the_agent_trace(
    url: str,
    tmp_path: Path,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    out = tmp_path / "confessions.jsonl"
    pipeline = ConfessionPipeline(
        model=slow_confessor(0.01),
        sinks=[JsonlSink(out)],
        telemetry=ConfessionTelemetry(tracer_provider=tracer_provider),
        background=True,
        queue=url,
        queue_lease_s=2.0,
    )
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent") as agent_span:
        assert pipeline.submit(episode("task traced-0")) is not None
    wait_for("1 done", lambda: counts(url)["done"] == 1)
    _PRODUCERS[pipeline].shutdown()  # as at exit: its in-process workers stop

    def confession_spans() -> list[Any]:
        return [s for s in span_exporter.get_finished_spans() if s.name != "agent"]

    wait_for("the confession span", lambda: len(confession_spans()) == 1)
    (span,) = confession_spans()
    agent_context = agent_span.get_span_context()
    assert span.context.trace_id == agent_context.trace_id
    assert span.parent is not None
    assert span.parent.span_id == agent_context.span_id
    assert span.attributes["confession.queue.wait_s"] >= 0
    assert span.attributes["confession.queue.attempt"] == 1
    (confession,) = delivered(out)
    assert confession["id"] == table_ids(url)[0] == span.attributes["confession.id"]
    pipeline.options.telemetry(Confession.model_validate(confession))  # a redelivery
    assert len(confession_spans()) == 1  # the span sink deduplicates on the id
    JsonlSink(out)(Confession.model_validate(confession))  # another process's sink
    assert len(delivered(out)) == 1


def test_a_collected_pipeline_stops_its_in_process_workers(url: str, tmp_path: Path) -> None:
    import gc

    def queue_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("confessional-queue-")}

    before = queue_threads()
    out = tmp_path / "confessions.jsonl"
    pipeline = ConfessionPipeline(
        model=slow_confessor(0.01), sinks=[JsonlSink(out)], background=True, queue=url
    )
    assert pipeline.submit(episode("task collected-0")) is not None
    wait_for("1 done", lambda: counts(url)["done"] == 1)
    started = queue_threads() - before
    assert started  # its claim loops, heartbeat and listener
    del pipeline
    gc.collect()
    wait_for("its workers' threads to end", lambda: not any(t.is_alive() for t in started))
    assert len(delivered(out)) == 1


def test_drain_loads_a_spool_into_the_queue(url: str, tmp_path: Path) -> None:
    from confessional.spool import Spool, read_spool

    spool_path = tmp_path / "spool.jsonl"
    spool = Spool(spool_path)
    for index in range(3):
        spool.append(ConfessionPipeline().episode(episode(f"task spooled-{index}")))  # type: ignore[arg-type]
    spool.close()
    ids = [item.id for item in read_spool(spool_path)]
    assert main(["drain", str(spool_path), "--queue", url]) == 0
    assert not spool_path.exists()
    assert sorted(table_ids(url, "pending")) == sorted(ids)


def test_a_completion_claims_the_next_job_and_is_fenced(url: str) -> None:
    store = QueueStore(url)
    try:
        for index in range(2):
            assert store.enqueue({"index": index}, confession_id=f"c{index}")
        first = store.claim(worker="w1", lease_s=30)
        assert first is not None
        done, second = store.complete_and_claim(first, lease_s=30)
        assert done
        assert second is not None
        assert (second.confession_id, second.attempt, second.worker) == ("c1", 1, "w1")
        # A stale holder (the job was taken over) completes nothing, and claims nothing
        # when nothing is ready.
        stale = dataclasses.replace(second, worker="w0")
        assert store.complete_and_claim(stale, lease_s=30) == (False, None)
        assert counts(url) == {"done": 1, "running": 1}
        assert store.complete_and_claim(second, lease_s=30) == (True, None)
        assert counts(url) == {"done": 2}
    finally:
        store.close()


def test_schema_is_versioned_and_migrated_once(postgres: PostgresServer) -> None:
    url = fresh_database(postgres)
    stores = [QueueStore(url) for _ in range(4)]
    threads = [threading.Thread(target=store.migrate) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT version FROM confessional_schema WHERE component = 'queue'"
        ).fetchall() == [(1,)]
    for store in stores:
        store.close()


def test_queue_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL URL"):
        ConfessionOptions(queue="redis://localhost")
    with pytest.raises(ConfigurationError, match="queue_max_attempts"):
        ConfessionOptions(queue_max_attempts=0)
    with pytest.raises(ConfigurationError, match="queue_lease_s"):
        ConfessionOptions(queue_lease_s=0.5)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtraError, match=r"confessional\[postgres\]"):
        ConfessionOptions(queue="postgresql://localhost/db")


def test_heartbeat_keeps_a_job_longer_than_its_lease(url: str, tmp_path: Path) -> None:
    out = tmp_path / "confessions.jsonl"
    agent = start_agent(url, "long", 2, out)
    worker = start_worker(url, out, "--concurrency", "2", QUEUE_TEST_DELAY_S="3")
    try:
        assert enqueued(agent) == 2
        wait_for("2 done", lambda: counts(url)["done"] == 2)
    finally:
        kill(worker, signal.SIGTERM)
        kill(agent)
    with psycopg.connect(url) as conn:
        attempts = conn.execute("SELECT max(attempts) FROM confessional_queue").fetchone()
    assert attempts == (1,)  # 3 s jobs under a 2 s lease: renewed, never taken over
    assert_exactly_once(url, out, 2)


def test_an_idle_worker_is_woken_by_the_commit_not_its_poll(url: str, tmp_path: Path) -> None:
    out = tmp_path / "confessions.jsonl"
    # A poll far longer than the deadline: only the queue's notification can wake it.
    worker = start_worker(url, out, "--concurrency", "2", "--poll", "600")
    try:
        assert worker.stdout is not None
        assert "SIGTERM stops it" in worker.stdout.readline()  # started, and listening
        agent = start_agent(url, "woken", 3, out)
        try:
            assert enqueued(agent) == 3
            wait_for("3 done", lambda: counts(url)["done"] == 3, timeout=30)
        finally:
            kill(agent)
    finally:
        kill(worker, signal.SIGTERM)
    assert worker.returncode == 0
    assert_exactly_once(url, out, 3)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_middleware_commits_the_episode_before_the_call_returns(url: str, mode: str) -> None:
    import asyncio

    from langchain.agents import create_agent

    from confessional.langchain import ConfessionMiddleware
    from confessional.testing import admitting_confessor, cheating_agent, example_tools

    middleware = ConfessionMiddleware(background=True, queue=url, queue_workers_in_process=False)
    agent = create_agent(
        cheating_agent(confession=admitting_confessor()), example_tools(), middleware=[middleware]
    )
    task: Any = {"messages": [("user", "Make the speed test pass.")]}
    if mode == "invoke":
        agent.invoke(task)
    else:
        asyncio.run(agent.ainvoke(task))
    assert counts(url) == {"pending": 1}  # committed before the run returned
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT payload FROM confessional_queue").fetchone()
    assert row is not None
    assert row[0]["model_name"] == "scripted-cheating-agent"  # the agent's model confesses


def test_cli_names_an_unreachable_database_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unreachable = "postgresql://nobody@/none?host=/nonexistent-socket-dir"
    assert main(["queue", "status", unreachable]) == 2
    error = capsys.readouterr().err
    assert error.startswith("confessional queue: error: cannot reach the queue's database")
    assert "Traceback" not in error


def test_an_unreachable_queue_keeps_the_episode_in_memory(tmp_path: Path) -> None:
    from confessional.health import failure_counts

    out = tmp_path / "confessions.jsonl"
    pipeline = ConfessionPipeline(
        model=slow_confessor(0.0),
        sinks=[JsonlSink(out)],
        background=True,
        queue="postgresql://nobody@/none?host=/nonexistent-socket-dir",
    )
    future = pipeline.submit(episode("task offline-0"))
    assert future is not None
    assert future.result(timeout=DEADLINE_S).status == "ok"  # confessed here instead
    assert failure_counts()[("background", "queue_unavailable")] == 1
    assert len(delivered(out)) == 1
