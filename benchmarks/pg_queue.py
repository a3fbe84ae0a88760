"""The PostgreSQL queue: what enqueueing adds to the time to answer, and worker throughput.

    python benchmarks/pg_queue.py [--queue URL] [--runs 20] [--jobs 240] [--latency-ms 100]

Without ``--queue`` a throwaway PostgreSQL server is started (``tests/pg/server.py``:
needs the server binaries, as the tests do), with ``fsync`` turned back on so that each
commit flushes the WAL to disk as in production.

1. Enqueue overhead, agent side. A ``create_agent`` turn with two tool calls, every model
   call taking ``--latency-ms`` (``ainvoke``), as in ``latency.py``: the bare agent (the
   floor), background mode without a queue (the baseline), and background mode with
   ``queue=URL, queue_workers_in_process=False`` (the episode is committed to the table
   before the call returns; nothing confesses in this process). Target: the queue adds at
   most 2% to the bare agent's time to answer.
2. Throughput. 1, 2 and 4 ``confessional worker`` processes (4 jobs at a time each) on
   ``--jobs`` queued episodes, a confessing model of ``--latency-ms``, a JSONL sink. The
   workers are started and ready before the jobs are committed; the clock runs from the
   commit to the last job done. Target: 4 workers at least 3.5 times 1 worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Not ``queue.py``: a module of that name in this directory would shadow the standard
# library's ``queue`` (which concurrent.futures imports) for every benchmark here.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # tests.pg: the throwaway server and the worker settings

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import _harness  # noqa: E402
from langchain.agents import create_agent  # noqa: E402
from latency import TASK, slow_agent  # noqa: E402

from confessional import flush_background  # noqa: E402
from confessional.langchain import ConfessionMiddleware  # noqa: E402
from confessional.queue import QueueStore  # noqa: E402
from confessional.spool import episode_record  # noqa: E402
from confessional.testing import example_tools  # noqa: E402


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """``url``, or a fresh database on a throwaway server."""
    if url is not None:
        yield url
        return
    import psycopg
    from tests.pg.server import running_postgres  # type: ignore[import-not-found]

    with running_postgres() as server:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            # The test server runs with fsync off; a commit here costs what it does in
            # production (a WAL flush to disk).
            admin.execute("ALTER SYSTEM SET fsync = on")
            admin.execute("SELECT pg_reload_conf()")
        yield str(server.url).replace("/postgres?", f"/{name}?")


def enqueue_overhead(url: str, runs: int, latency_s: float) -> list[list[str]]:
    def agent(**settings: Any) -> Callable[[], Any]:
        middleware = [ConfessionMiddleware(**settings)] if settings else []
        compiled = create_agent(slow_agent(latency_s), example_tools(), middleware=middleware)
        return lambda: asyncio.run(compiled.ainvoke(TASK))

    variants = {
        "bare (floor)": agent(),
        "background, no queue (baseline)": agent(background=True),
        "background + queue (enqueue only)": agent(
            background=True, queue=url, queue_workers_in_process=False
        ),
    }
    timings = _harness.interleaved(variants, runs, after_each=flush_background)
    floor = _harness.median_ms(timings["bare (floor)"].wall)
    baseline = _harness.median_ms(timings["background, no queue (baseline)"].wall)
    rows = []
    for name, samples in timings.items():
        median = _harness.median_ms(samples.wall)
        pct = (median - floor) / floor * 100
        target = "-"
        if name.startswith("background + queue"):
            target = f"{pct:+.1f}% added; " + _harness.verdict(round(pct, 1), 2.0)
        rows.append(
            [
                name,
                f"{median:.1f}",
                f"{median - floor:+.1f}",
                f"{pct:+.2f}%",
                f"{(median - baseline) / baseline * 100:+.2f}%",
                target,
            ]
        )
    return rows


def _record(index: int) -> dict[str, Any]:
    from tests.pg.queue_procs import episode  # type: ignore[import-not-found]

    from confessional.pipeline import ConfessionPipeline

    extracted = ConfessionPipeline().episode(episode(f"task bench-{index}"))
    assert extracted is not None
    return episode_record(extracted, reason="queued")


def _start_workers(url: str, count: int, out: Path, latency_s: float) -> list[Any]:
    # The production lease (30 s), not the tests' short one.
    env = {**os.environ, "QUEUE_TEST_DELAY_S": str(latency_s), "QUEUE_TEST_LEASE_S": "30"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    # One JSONL file per worker process, as on separate machines: processes sharing one
    # file take turns on its lock for each write and its fsync (see README).
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "confessional",
                "worker",
                "--queue",
                url,
                "--options",
                "tests.pg.queue_procs:worker_options",
                "--concurrency",
                "4",
                "--poll",
                "0.02",
            ],
            cwd=REPO,
            env={**env, "QUEUE_TEST_OUT": str(out.with_suffix(f".{index}.jsonl"))},
            stdout=subprocess.PIPE,
            stderr=out.with_suffix(f".{index}.log").open("w"),
            text=True,
        )
        for index in range(count)
    ]
    for worker in workers:  # the first line is printed once its threads claim
        assert worker.stdout is not None
        worker.stdout.readline()
    return workers


def _stop(workers: list[Any]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.communicate(timeout=60)


def throughput(url: str, jobs: int, latency_s: float) -> list[list[str]]:
    import psycopg
    from psycopg.types.json import Jsonb

    records = [_record(index) for index in range(jobs)]
    store = QueueStore(url)
    store.migrate()
    store.close()
    rates: dict[int, float] = {}
    problems: dict[int, str] = {}
    tmp = tempfile.mkdtemp(prefix="confessional-queue-bench-")
    # The workers' logs and sinks stay in tmp when a job was retried.
    for count in (1, 2, 4):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE confessional_queue")
        workers = _start_workers(url, count, Path(tmp) / f"out-{count}.jsonl", latency_s)
        try:
            with psycopg.connect(url) as conn:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO confessional_queue (confession_id, payload) VALUES (%s, %s)",
                        [(uuid.uuid4().hex, Jsonb(r)) for r in records],
                    )
                conn.commit()
                started = time.perf_counter()
                pause = threading.Event()
                with psycopg.connect(url, autocommit=True) as watch:
                    row: tuple[Any, ...] = (0, 0, 0)
                    while time.perf_counter() - started < 600:
                        fetched = watch.execute(
                            "SELECT count(*) FILTER (WHERE state IN ('done', 'dead')),"
                            " count(*) FILTER (WHERE state = 'dead'),"
                            " count(*) FILTER (WHERE attempts > 1) FROM confessional_queue"
                        ).fetchone()
                        row = fetched if fetched is not None else row
                        if row[0] >= jobs:
                            break
                        pause.wait(0.01)
                rates[count] = jobs / (time.perf_counter() - started)
                problems[count] = f"{row[2]} / {row[1]}"
        finally:
            _stop(workers)
    if any(problem != "0 / 0" for problem in problems.values()):
        print(f"some jobs were retried: the workers' logs are in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    ideal = 4 / latency_s  # 4 jobs at a time per worker, each taking one model latency
    return [
        [
            str(count),
            f"{rate:.1f}",
            f"{rate / (count * ideal):.0%}",
            f"x{rate / rates[1]:.2f}",
            problems[count],
            "-" if count != 4 else ("met" if rate / rates[1] >= 3.5 else "MISSED") + " (>= 3.5x)",
        ]
        for count, rate in rates.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--queue", metavar="URL", help="PostgreSQL URL; default: a throwaway")
    parser.add_argument("--runs", type=int, default=20, help="timed turns per mode")
    parser.add_argument("--jobs", type=int, default=240, help="queued episodes per worker count")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="latency of each call")
    args = parser.parse_args()
    latency_s = args.latency_ms / 1000
    with database(args.queue) as url:
        overhead = enqueue_overhead(url, args.runs, latency_s)
        rates = throughput(url, args.jobs, latency_s)
    _harness.table(
        ["mode", "time to answer ms", "added ms", "vs bare", "vs background", "target"],
        overhead,
        f"enqueue overhead: {args.runs} turns per mode, {args.latency_ms:g} ms per model "
        f"call, 3 agent calls per turn, ainvoke; {_harness.machine()}",
    )
    _harness.table(
        ["workers", "jobs/s", "of ideal", "vs 1 worker", "retried / dead", "target"],
        rates,
        f"throughput: {args.jobs} queued episodes, {args.latency_ms:g} ms confessing model, "
        f"4 jobs at a time per worker process, a JSONL sink per process; {_harness.machine()}",
    )


if __name__ == "__main__":
    main()
