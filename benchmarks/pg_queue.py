"""The PostgreSQL queue: what enqueueing adds to the time to answer, and worker throughput.

    python benchmarks/pg_queue.py [--queue URL] [--runs 40] [--jobs 240] [--repeats 3]
                                  [--latency-ms 100] [--part overhead|throughput|both]

Without ``--queue`` a throwaway PostgreSQL server is started (``tests/pg/server.py``:
needs the server binaries, as the tests do) with ``fsync`` on, so that each commit
flushes the WAL to disk as in production.

1. Enqueue overhead, agent side. A ``create_agent`` turn with two tool calls, every model
   call taking ``--latency-ms`` (``ainvoke``), as in ``latency.py``: the bare agent (the
   floor), background mode without a queue (the baseline), and background mode with
   ``queue=URL, queue_workers_in_process=False`` (the episode is committed to the table
   before the call returns; nothing confesses in this process), interleaved in a random
   order each round. The added time is the median of the differences to the bare turn of
   the same round. Also timed alone: a background ``submit()`` of a finished turn (the
   middleware's hand-off), with and without the queue (which commits the episode: a
   durable INSERT). Target: the queue adds at most 2% to the bare agent's time to answer.
2. Throughput. 1, 2 and 4 ``confessional worker`` processes (4 jobs at a time each, the
   default poll) on ``--jobs`` queued episodes, a confessing model of ``--latency-ms``, a
   JSONL sink per process. The workers are started, warmed up and listening before the
   jobs are committed (with the notification an enqueue sends); the clock is the
   database's, from that commit to the last job done. The floor: the same processes
   confessing the same records with the same executor, split in memory, no queue. Each
   repeat runs every count (1-2-4, then 4-2-1); ratios are taken within a repeat, and
   their median reported. Target: 4 workers at least 3.5 times 1 worker.
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
import statistics  # noqa: E402
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
from confessional.testing import example_tools  # noqa: E402


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    """``url``, or a fresh database on a throwaway server."""
    if url is not None:
        yield url
        return
    import psycopg
    from tests.pg.server import running_postgres  # type: ignore[import-not-found]

    # fsync on, unlike the tests' server: a commit costs what it does in production (a WAL
    # flush to disk). (It used to be set with ALTER SYSTEM, which the server's command
    # line outranks: the figures before 2026-12-07 were taken with fsync off.)
    with running_postgres(fsync=True) as server:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
            assert admin.execute("SHOW fsync").fetchone() == ("on",)
        yield str(server.url).replace("/postgres?", f"/{name}?")


BARE, BACKGROUND, QUEUED = (
    "bare (floor)",
    "background, no queue (baseline)",
    "background + queue (enqueue only)",
)


def enqueue_overhead(url: str, runs: int, latency_s: float) -> list[list[str]]:
    """Time to answer of the three modes, interleaved in a fresh random order each round.
    Besides the medians, the added time is the median of the differences within a round
    (paired: a round's three turns ran within a second of each other, under the same
    load), which a busy machine disturbs far less than a difference of medians."""

    def agent(**settings: Any) -> Callable[[], Any]:
        middleware = [ConfessionMiddleware(**settings)] if settings else []
        compiled = create_agent(slow_agent(latency_s), example_tools(), middleware=middleware)
        return lambda: asyncio.run(compiled.ainvoke(TASK))

    variants = {
        BARE: agent(),
        BACKGROUND: agent(background=True),
        QUEUED: agent(background=True, queue=url, queue_workers_in_process=False),
    }
    timings = _harness.interleaved(variants, runs, after_each=flush_background)
    bare, background = timings[BARE].wall, timings[BACKGROUND].wall
    floor = _harness.median_ms(bare)
    rows = []
    for name, samples in timings.items():
        median = _harness.median_ms(samples.wall)
        paired = _harness.median_ms([t - b for t, b in zip(samples.wall, bare, strict=True)])
        # What the queue adds to background mode (whose own cost is latency.py's target).
        over = _harness.median_ms([t - b for t, b in zip(samples.wall, background, strict=True)])
        pct = paired / floor * 100
        target = "-"
        if name == QUEUED:
            target = f"{pct:+.1f}% added; " + _harness.verdict(round(pct, 1), 2.0)
        rows.append(
            [
                name,
                f"{median:.1f}",
                f"{median - floor:+.1f}",
                f"{paired:+.1f}",
                f"{pct:+.2f}%",
                f"{over / floor * 100:+.2f}%",
                target,
            ]
        )
    # What the queue itself adds on the agent's path, timed alone: a background submit()
    # of a finished turn (the middleware's hand-off) with and without the queue,
    # interleaved. The queued one commits the episode (a durable INSERT: WAL flush).
    from tests.pg.queue_procs import episode, slow_confessor  # type: ignore[import-not-found]

    from confessional.pipeline import ConfessionPipeline

    def submitter(**settings: Any) -> Callable[[], Any]:
        pipeline = ConfessionPipeline(model=slow_confessor(0.0), background=True, **settings)
        turn = episode("task submit")
        return lambda: pipeline.submit(turn)

    submits = _harness.interleaved(
        {
            "submit(), background": submitter(),
            "submit(), background + queue": submitter(queue=url, queue_workers_in_process=False),
        },
        max(runs, 100),
        after_each=flush_background,
    )
    for name, samples in submits.items():
        median = _harness.median_ms(samples.wall)
        rows.append([name, f"{median:.2f}", "", "", f"{median / floor:+.2%}", "", "-"])
    return rows


def _worker_env(latency_s: float, out: Path) -> dict[str, str]:
    # The production lease (30 s), not the tests' short one.
    env = {**os.environ, "QUEUE_TEST_DELAY_S": str(latency_s), "QUEUE_TEST_LEASE_S": "30"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    # One JSONL file per process, as on separate machines: processes sharing one file take
    # turns on its lock for each write and its fsync (see README).
    env["QUEUE_TEST_OUT"] = str(out)
    return env


def _start_workers(url: str, count: int, out: Path, latency_s: float) -> list[Any]:
    # The default poll (0.5 s): idle workers are woken by the queue's notification.
    workers = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "confessional", "worker", "--queue", url),
                *("--options", "tests.pg.queue_procs:worker_options", "--concurrency", "4"),
            ],
            cwd=REPO,
            env=_worker_env(latency_s, out.with_suffix(f".{index}.jsonl")),
            stdout=subprocess.PIPE,
            stderr=out.with_suffix(f".{index}.log").open("w"),
            text=True,
        )
        for index in range(count)
    ]
    for worker in workers:  # the first line is printed once it is warmed up and listening
        assert worker.stdout is not None
        worker.stdout.readline()
    return workers


def _stop(workers: list[Any]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.communicate(timeout=60)


def _queue_run(url: str, count: int, payloads: list[Any], out: Path, latency_s: float) -> Any:
    """Seconds from the commit of the jobs to the last one done (the database's clock),
    and ``retried / dead``."""
    import psycopg

    from confessional.queue._store import CHANNEL

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE confessional_queue")
    workers = _start_workers(url, count, out, latency_s)
    try:
        with psycopg.connect(url) as conn:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO confessional_queue (confession_id, payload) VALUES (%s, %s)",
                    [(uuid.uuid4().hex, payload) for payload in payloads],
                )
            # As an enqueue does: the notification goes out at commit.
            conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            started = conn.execute("SELECT clock_timestamp()").fetchone()
            conn.commit()
        pause = threading.Event()
        deadline = time.monotonic() + 600
        with psycopg.connect(url, autocommit=True) as watch:
            while time.monotonic() < deadline:
                row = watch.execute(
                    "SELECT count(*) FILTER (WHERE state NOT IN ('done', 'dead')),"
                    " count(*) FILTER (WHERE attempts > 1), count(*) FILTER (WHERE state = 'dead'),"
                    " EXTRACT(EPOCH FROM max(finished_at) - %s) FROM confessional_queue",
                    (started[0] if started else None,),
                ).fetchone()
                assert row is not None
                if row[0] == 0:
                    return float(row[3]), f"{row[1]} / {row[2]}"
                pause.wait(0.05)
        raise TimeoutError(f"{count} worker(s) did not finish within 600 s")
    finally:
        _stop(workers)


def _floor_run(count: int, jobs: int, out: Path, latency_s: float) -> float:
    """Seconds for ``count`` processes to confess ``jobs`` with the worker's executor, 4
    at a time each, the jobs split evenly in memory: everything but the queue."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.pg.queue_procs", "confess", str(share), "4"],
            cwd=REPO,
            env=_worker_env(latency_s, out.with_suffix(f".floor{index}.jsonl")),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index, share in enumerate(_split(jobs, count))
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.readline()  # ready: imported, warmed up, records built
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.readline()
        return time.perf_counter() - started
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()


def _split(jobs: int, count: int) -> list[int]:
    return [jobs // count + (1 if index < jobs % count else 0) for index in range(count)]


COUNTS = (1, 2, 4)


def throughput(
    url: str, jobs: int, latency_s: float, repeats: int
) -> tuple[list[list[str]], list[float]]:
    """Each repeat runs 1, 2 and 4 processes with the queue, then without it (the floor),
    in alternating order (1-2-4, then 4-2-1), so that load changes on a shared machine
    hit every count alike. Ratios are taken within a repeat, then their median."""
    from psycopg.types.json import Jsonb
    from tests.pg.queue_procs import record  # type: ignore[import-not-found]

    payloads = [Jsonb(record(index)) for index in range(jobs)]
    store = QueueStore(url)
    store.migrate()
    store.close()
    queued: dict[int, list[float]] = {count: [] for count in COUNTS}
    floor: dict[int, list[float]] = {count: [] for count in COUNTS}
    problems: dict[int, list[str]] = {count: [] for count in COUNTS}
    loads: list[float] = []
    tmp = tempfile.mkdtemp(prefix="confessional-queue-bench-")
    # The workers' logs and sinks stay in tmp when a job was retried.
    for repeat in range(repeats):
        order = COUNTS if repeat % 2 == 0 else COUNTS[::-1]
        for count in order:
            out = Path(tmp) / f"out-{repeat}-{count}.jsonl"
            seconds, problem = _queue_run(url, count, payloads, out, latency_s)
            queued[count].append(seconds)
            problems[count].append(problem)
            floor[count].append(_floor_run(count, jobs, out, latency_s))
            loads.append(os.getloadavg()[0])
    if any(problem != "0 / 0" for found in problems.values() for problem in found):
        print(f"some jobs were retried: the workers' logs are in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    ideal = 4 / latency_s  # 4 jobs at a time per worker, each taking one model latency

    def speedups(times: dict[int, list[float]], count: int) -> list[float]:
        return [one / many for one, many in zip(times[1], times[count], strict=True)]

    rows = []
    for count in COUNTS:
        rate = jobs / statistics.median(queued[count])
        ratio = statistics.median(speedups(queued, count))
        floor_ratio = statistics.median(speedups(floor, count))
        target = "-"
        if count == 4:
            target = ("met" if ratio >= 3.5 else "MISSED") + " (>= 3.5x)"
        rows.append(
            [
                str(count),
                f"{rate:.1f}",
                f"{rate / (count * ideal):.0%}",
                f"x{ratio:.2f}",
                " ".join(f"{r:.2f}" for r in speedups(queued, count)),
                f"{jobs / statistics.median(floor[count]):.1f}",
                f"x{floor_ratio:.2f}",
                ", ".join(sorted(set(problems[count]))),
                target,
            ]
        )
    return rows, loads


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--queue", metavar="URL", help="PostgreSQL URL; default: a throwaway")
    parser.add_argument("--runs", type=int, default=40, help="timed turns per mode")
    parser.add_argument("--jobs", type=int, default=240, help="queued episodes per worker count")
    parser.add_argument(
        "--repeats", type=int, default=3, help="throughput runs per worker count (median)"
    )
    parser.add_argument("--latency-ms", type=float, default=100.0, help="latency of each call")
    parser.add_argument(
        "--part", choices=["overhead", "throughput", "both"], default="both", help="what to run"
    )
    args = parser.parse_args()
    latency_s = args.latency_ms / 1000
    with database(args.queue) as url:
        if args.part != "throughput":
            overhead = enqueue_overhead(url, args.runs, latency_s)
            _harness.table(
                [
                    "mode",
                    "time to answer ms",
                    "added ms",
                    "added ms, paired",
                    "paired vs bare",
                    "paired vs background",
                    "target",
                ],
                overhead,
                f"enqueue overhead: {args.runs} turns per mode, {args.latency_ms:g} ms per "
                f"model call, 3 agent calls per turn, ainvoke; {_harness.machine()}",
            )
        if args.part != "overhead":
            rates, loads = throughput(url, args.jobs, latency_s, args.repeats)
            _harness.table(
                [
                    "workers",
                    "jobs/s",
                    "of ideal",
                    "vs 1 worker",
                    "each repeat",
                    "no queue: jobs/s",
                    "no queue: vs 1",
                    "retried / dead",
                    "target",
                ],
                rates,
                f"throughput: {args.jobs} queued episodes, {args.latency_ms:g} ms confessing "
                f"model, 4 jobs at a time per worker process, a JSONL sink per process, "
                f"median of {args.repeats} repeats; {_harness.machine()}; load during the "
                "runs: " + " ".join(f"{x:.1f}" for x in loads),
            )


if __name__ == "__main__":
    main()
