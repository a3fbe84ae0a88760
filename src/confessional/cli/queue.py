"""``confessional queue status|retry|purge URL``: look after the confession queue.

- ``status``: jobs by state, the age of the oldest pending job, the dead letters with
  their last errors;
- ``retry``: dead letters (all, or ``--id`` ones) back to pending with fresh attempts;
- ``purge``: delete finished jobs (``done``; with ``--dead`` the dead letters too), or
  only those finished more than ``--older-than`` seconds ago.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from confessional._render import Printer
from confessional.errors import ConfigurationError

if TYPE_CHECKING:
    from confessional.queue import QueueStore

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "queue",
        help="status, retry and purge of the PostgreSQL confession queue",
        description="Inspect and maintain the confession queue (ConfessionOptions.queue).",
    )
    actions = parser.add_subparsers(dest="queue_action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="jobs by state, oldest pending, dead letters")
    status.add_argument("url", metavar="URL", help="the PostgreSQL URL of the queue")
    status.add_argument(
        "--dead", type=int, default=20, metavar="N", help="dead letters listed (default 20)"
    )
    retry = actions.add_parser("retry", help="requeue dead letters")
    retry.add_argument("url", metavar="URL", help="the PostgreSQL URL of the queue")
    retry.add_argument(
        "--id", type=int, action="append", default=[], dest="ids", help="only this job id"
    )
    purge = actions.add_parser("purge", help="delete finished jobs")
    purge.add_argument("url", metavar="URL", help="the PostgreSQL URL of the queue")
    purge.add_argument("--dead", action="store_true", help="also delete dead letters")
    purge.add_argument(
        "--older-than",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="only jobs finished more than this long ago (default 0: all)",
    )
    parser.set_defaults(run=run)


def migrate(store: QueueStore) -> None:
    """Create or migrate the tables; an unreachable database is a one-line error."""
    import psycopg

    try:
        store.migrate()
    except psycopg.OperationalError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"cannot reach the queue's database: {message}") from None


def run(args: argparse.Namespace, out: Printer) -> int:
    from confessional.queue import QueueStore

    store = QueueStore(args.url)
    try:
        migrate(store)
        action = args.queue_action
        if action == "status":
            status = store.status(dead_limit=args.dead)
            counts = status.counts
            oldest = status.oldest_pending_s
            out.table(
                ["pending", "running", "done", "dead", "oldest pending"],
                [
                    [
                        *(str(counts[state]) for state in ("pending", "running", "done", "dead")),
                        "-" if oldest is None else f"{oldest:.1f} s",
                    ]
                ],
                title="confessional queue",
            )
            if status.dead:
                out.table(
                    ["job", "confession id", "attempts", "last error"],
                    [
                        [str(d.id), d.confession_id, str(d.attempts), (d.last_error or "")[:200]]
                        for d in status.dead
                    ],
                    title="dead letters",
                )
            return 0
        if action == "retry":
            out.line(f"{store.retry(args.ids)} dead letter(s) requeued.")
            return 0
        deleted = store.purge(dead=args.dead, older_than_s=args.older_than)
        out.line(f"{deleted} finished job(s) deleted.")
        return 0
    finally:
        store.close()
