"""``confessional worker --queue URL --options MODULE:ATTR``: confess queued episodes.

Run it on any number of machines against one PostgreSQL database (see
:mod:`confessional.queue`). Settings come from ``--options`` as in ``confessional drain``:
normally the very ``ConfessionOptions`` the agent uses, so the worker confesses with the
same model, policy, auditor, sinks and telemetry (and the same retry and lease settings).

Before its first claim it pays a confession's one-off import costs, and it listens for
the queue's notifications: an idle worker takes a job as soon as it is committed, and
``--poll`` is only the fallback (a retry whose backoff ran out).

SIGTERM or SIGINT stops it cleanly: it claims nothing more, gives the jobs it holds
``--grace`` seconds to finish, gives the rest back to the queue (another worker takes
them at once), and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

from confessional._render import Printer
from confessional.cli.drain import add_settings_arguments, load_options
from confessional.errors import ConfigurationError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="confess the episodes queued on PostgreSQL (ConfessionOptions.queue)",
        description="Claim queued episodes from the PostgreSQL queue and confess them with "
        "the settings given here, until SIGTERM or SIGINT.",
    )
    parser.add_argument(
        "--queue",
        metavar="URL",
        help="the PostgreSQL URL of the queue; default: the queue of --options",
    )
    add_settings_arguments(parser)
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="jobs confessed at once; default: max_concurrency of the options (4)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may finish before they are given back; "
        "default: flush_timeout_s of the options (5 s)",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="wait between claims while the queue is empty (default 0.5); an idle worker "
        "is woken sooner by the queue's notification when a job is committed",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: Printer) -> int:
    from confessional.cli.queue import migrate
    from confessional.queue import QueueStore, QueueWorker
    from confessional.queue._deliver import JobExecutor, worker_pipeline

    options = load_options(args, "worker")
    url = args.queue or options.queue
    if not url:
        raise ConfigurationError(
            "worker needs the queue: pass --queue URL, or --options "
            "with ConfessionOptions(queue=...)"
        )
    concurrency = args.concurrency if args.concurrency is not None else options.max_concurrency
    if concurrency < 1:
        raise ConfigurationError(f"--concurrency must be >= 1, got {concurrency}")
    grace = args.grace if args.grace is not None else options.flush_timeout_s
    if grace < 0 or args.poll <= 0:
        raise ConfigurationError("--grace must be >= 0 and --poll > 0")
    store = QueueStore(url)
    migrate(store)
    executor = JobExecutor(worker_pipeline(options))
    executor.warm_up()  # before the first claim, not during the first jobs
    worker = QueueWorker(
        store,
        executor,
        concurrency=concurrency,
        lease_s=options.queue_lease_s,
        max_attempts=options.queue_max_attempts,
        backoff_s=options.queue_retry_backoff_s,
        poll_s=args.poll,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker.start()
    out.line(f"confessional worker {worker.name}: {concurrency} at a time; SIGTERM stops it.")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        released = worker.stop(grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
    counts = worker.counts
    out.line(
        f"confessional worker {worker.name} stopped: {counts['done']} done, "
        f"{counts['retried']} retried, {counts['dead']} dead-lettered, {released} given back."
    )
    return 0
