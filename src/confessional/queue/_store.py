"""The queue table on PostgreSQL: schema, migration, and every statement the queue runs.

Tables (created and migrated by :meth:`QueueStore.migrate`, under a transaction-scoped
advisory lock, so many processes starting at once migrate exactly once):

- ``confessional_schema (component, version, migrated_at)``: one row per component;
  the queue's is ``'queue'``. A database migrated by a newer confessional is refused.
- ``confessional_queue``: one row per selected episode. ``state`` is ``pending``
  (waiting, or waiting for a retry after ``available_at``), ``running`` (claimed by
  ``worker`` until ``leased_until``), ``done`` or ``dead`` (dead letter, with
  ``last_error``). ``confession_id`` is the confession's id, fixed at enqueue: the
  idempotency key the sinks deduplicate on. ``payload`` is the episode as a spool record
  (:func:`confessional.spool.episode_record`).

Every state change a worker makes is fenced on ``(id, worker, attempts, state =
'running')``, so a worker whose lease expired cannot complete or fail a job that another
worker holds now.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from confessional.errors import ConfessionalError, require_extra

__all__ = [
    "CHANNEL",
    "MAX_BACKOFF_S",
    "SCHEMA_VERSION",
    "ClaimedJob",
    "DeadLetter",
    "QueueListener",
    "QueueSchemaError",
    "QueueStatus",
    "QueueStore",
    "worker_name",
]

SCHEMA_VERSION: Final = 1
"""The queue's schema version, recorded in ``confessional_schema``."""
MAX_BACKOFF_S: Final = 300.0
"""Longest wait between two attempts of a job, however many attempts it took."""
ERROR_LIMIT: Final = 2000
"""Characters of a job's last error kept in the table."""
CONNECT_TIMEOUT_S: Final = 5
"""Connection timeout when the URL sets none (``connect_timeout``): an unreachable
database then fails an enqueue in seconds (the episode is kept in memory instead)."""

CHANNEL: Final = "confessional_queue"
"""The ``LISTEN``/``NOTIFY`` channel: a notification is sent (at commit) whenever a job
becomes ready now (enqueued, given back, retried by an operator), so idle workers claim
at once instead of at their next poll."""

# pg_advisory_xact_lock key for migrations: the bytes "confqueu" as a signed 64-bit integer.
_MIGRATION_LOCK: Final = int.from_bytes(b"confqueu", "big", signed=True)
_COMPONENT: Final = "queue"

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE confessional_queue (
            id bigserial PRIMARY KEY,
            confession_id text NOT NULL UNIQUE,
            state text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'dead')),
            payload jsonb NOT NULL,
            producer text,
            attempts integer NOT NULL DEFAULT 0,
            enqueued_at timestamptz NOT NULL DEFAULT now(),
            available_at timestamptz NOT NULL DEFAULT now(),
            claimed_at timestamptz,
            leased_until timestamptz,
            worker text,
            last_error text,
            finished_at timestamptz
        )""",
        "CREATE INDEX confessional_queue_ready ON confessional_queue (available_at, id) "
        "WHERE state = 'pending'",
        "CREATE INDEX confessional_queue_leases ON confessional_queue (leased_until) "
        "WHERE state = 'running'",
    ),
}


class QueueSchemaError(ConfessionalError):
    """The database's queue schema is newer than this confessional knows."""


def worker_name() -> str:
    """A name unique to one worker: host, process id and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class ClaimedJob:
    """One job a worker holds: what it confesses, and the fence of its lease."""

    id: int
    confession_id: str
    payload: Mapping[str, Any]
    attempt: int
    """1 for the first attempt."""
    wait_s: float
    """Seconds from enqueue to this claim: the time in the queue."""
    worker: str


@dataclass(frozen=True)
class DeadLetter:
    id: int
    confession_id: str
    attempts: int
    last_error: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class QueueStatus:
    counts: Mapping[str, int]
    """Jobs by state: ``pending``, ``running``, ``done``, ``dead``."""
    oldest_pending_s: float | None
    """Age of the oldest pending job, in seconds; ``None`` when none is pending."""
    dead: Sequence[DeadLetter]


def _close_all(pools: dict[bool, list[Any]]) -> None:
    for connections in pools.values():
        for conn in connections:
            conn.close()


class QueueStore:
    """The queue table at ``url``: a small pool of autocommit connections, one statement
    per state change. Thread-safe."""

    def __init__(self, url: str) -> None:
        require_extra("psycopg", extra="postgres", feature="the confession queue")
        self.url = url
        # Idle connections by durability (see _connection).
        self._idle: dict[bool, list[Any]] = {True: [], False: []}
        self._lock = threading.Lock()
        self._closed = False
        # A store dropped without close() (its pipeline was collected) closes its
        # connections, instead of leaving them to the garbage collector.
        weakref.finalize(self, _close_all, self._idle)

    @contextmanager
    def _connection(self, *, durable: bool = True) -> Iterator[Any]:
        """A pooled autocommit connection.

        ``durable=False``: commits do not wait for the WAL flush (``synchronous_commit =
        off``). Only for a worker's state changes (claim, heartbeat, done, retry, give
        back): a database crash can only undo the last of them, which puts a job back in
        an earlier state (pending, or running with a lease that expires), so it runs
        again with the same confession id. Enqueueing is always durable: it is the
        write-ahead.
        """
        import psycopg

        with self._lock:
            idle = self._idle[durable]
            conn = idle.pop() if idle else None
        if conn is None or conn.closed:
            from psycopg.conninfo import conninfo_to_dict

            given = conninfo_to_dict(self.url)
            # An unreachable host must not hold the agent's call for minutes.
            timeout = int(given.get("connect_timeout") or CONNECT_TIMEOUT_S)
            if durable:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=timeout)
            else:
                options = f"{given.get('options') or ''} -c synchronous_commit=off".strip()
                conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=timeout, options=options
                )
        try:
            yield conn
        except psycopg.OperationalError:
            conn.close()  # a broken connection is never handed out again
            raise
        with self._lock:
            if self._closed:
                conn.close()
            else:
                self._idle[durable].append(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = {durable: list(conns) for durable, conns in self._idle.items()}
            for conns in self._idle.values():
                conns.clear()
        _close_all(idle)

    # -- schema ---------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or migrate the tables; returns the schema version. Idempotent, and safe
        from many processes at once (an advisory lock serialises them)."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS confessional_schema ("
                "component text PRIMARY KEY, version integer NOT NULL, "
                "migrated_at timestamptz NOT NULL DEFAULT now())"
            )
            row = conn.execute(
                "SELECT version FROM confessional_schema WHERE component = %s", (_COMPONENT,)
            ).fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise QueueSchemaError(
                    f"the queue schema in this database is version {current}; this "
                    f"confessional knows up to version {SCHEMA_VERSION}: upgrade it"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
            if current != SCHEMA_VERSION:
                conn.execute(
                    "INSERT INTO confessional_schema (component, version) VALUES (%s, %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, "
                    "migrated_at = now()",
                    (_COMPONENT, SCHEMA_VERSION),
                )
        return SCHEMA_VERSION

    # -- producer -------------------------------------------------------------------

    def enqueue(
        self, payload: Mapping[str, Any], *, confession_id: str, producer: str | None = None
    ) -> bool:
        """Commit one job; ``False`` when a job with this confession id exists already."""
        from psycopg.types.json import Jsonb

        with self._connection() as conn:
            cursor = conn.execute(
                # One statement, one commit: the notification goes out with the job.
                "WITH job AS (INSERT INTO confessional_queue (confession_id, payload, producer) "
                "VALUES (%s, %s, %s) ON CONFLICT (confession_id) DO NOTHING RETURNING id) "
                "SELECT pg_notify(%s, '') FROM job",
                (confession_id, Jsonb(dict(payload)), producer, CHANNEL),
            )
            return bool(cursor.rowcount)

    def listener(self) -> QueueListener:
        """A connection of its own that waits for the queue's notifications."""
        return QueueListener(self.url)

    # -- worker ---------------------------------------------------------------------

    def claim(
        self, *, worker: str, lease_s: float, producer: str | None = None
    ) -> ClaimedJob | None:
        """Lease the oldest ready job (``FOR UPDATE SKIP LOCKED``: claimers never wait on
        each other). ``producer``: only jobs that producer enqueued."""
        only = "AND producer = %(producer)s" if producer is not None else ""
        with self._connection(durable=False) as conn:
            row = conn.execute(
                # A scalar sub-select (an InitPlan) runs once. Joined in FROM instead, the
                # planner may rescan it per row, and each rescan of a SKIP LOCKED LIMIT 1
                # locks another row: one claim then takes many jobs (seen at 224).
                "UPDATE confessional_queue q SET state = 'running', attempts = q.attempts + 1,"
                " claimed_at = now(), leased_until = now() + make_interval(secs => %(lease)s),"
                " worker = %(worker)s "
                "WHERE q.id = (SELECT id FROM confessional_queue WHERE state = 'pending' "
                f"AND available_at <= now() {only} ORDER BY available_at, id LIMIT 1 "
                "FOR UPDATE SKIP LOCKED) "
                "RETURNING q.id, q.confession_id, q.payload, q.attempts,"
                " EXTRACT(EPOCH FROM now() - q.enqueued_at)",
                {"lease": lease_s, "worker": worker, "producer": producer},
            ).fetchone()
        if row is None:
            return None
        return ClaimedJob(
            id=int(row[0]),
            confession_id=str(row[1]),
            payload=row[2],
            attempt=int(row[3]),
            wait_s=float(row[4]),
            worker=worker,
        )

    def complete_and_claim(
        self, job: ClaimedJob, *, lease_s: float, producer: str | None = None
    ) -> tuple[bool, ClaimedJob | None]:
        """:meth:`complete` ``job`` and :meth:`claim` the next one, in one statement (one
        round trip, one commit): a busy worker's steady state. Returns whether ``job`` was
        still held, and the job claimed (``None`` when none is ready)."""
        only = "AND producer = %(producer)s" if producer is not None else ""
        with self._connection(durable=False) as conn:
            row = conn.execute(
                "WITH done AS (UPDATE confessional_queue SET state = 'done', "
                "finished_at = now(), leased_until = NULL, last_error = NULL "
                "WHERE id = %(id)s AND worker = %(worker)s AND attempts = %(attempt)s "
                "AND state = 'running' RETURNING id), "
                # As in claim(): a scalar sub-select, run once. It cannot see the row done
                # above (running in this statement's snapshot).
                "claimed AS (UPDATE confessional_queue q SET state = 'running', "
                "attempts = q.attempts + 1, claimed_at = now(), "
                "leased_until = now() + make_interval(secs => %(lease)s), worker = %(worker)s "
                "WHERE q.id = (SELECT id FROM confessional_queue WHERE state = 'pending' "
                f"AND available_at <= now() {only} ORDER BY available_at, id LIMIT 1 "
                "FOR UPDATE SKIP LOCKED) "
                "RETURNING q.id, q.confession_id, q.payload, q.attempts,"
                " EXTRACT(EPOCH FROM now() - q.enqueued_at) AS wait_s) "
                "SELECT (SELECT count(*) FROM done), claimed.id, claimed.confession_id,"
                " claimed.payload, claimed.attempts, claimed.wait_s "
                "FROM (SELECT 1) AS one LEFT JOIN claimed ON true",
                {
                    "id": job.id,
                    "worker": job.worker,
                    "attempt": job.attempt,
                    "lease": lease_s,
                    "producer": producer,
                },
            ).fetchone()
        assert row is not None  # one row, whatever happened
        if row[1] is None:
            return bool(row[0]), None
        return bool(row[0]), ClaimedJob(
            id=int(row[1]),
            confession_id=str(row[2]),
            payload=row[3],
            attempt=int(row[4]),
            wait_s=float(row[5]),
            worker=job.worker,
        )

    def heartbeat(self, jobs: Sequence[ClaimedJob], *, lease_s: float) -> int:
        """Extend the leases of ``jobs``; returns how many are still held."""
        if not jobs:
            return 0
        with self._connection(durable=False) as conn:
            cursor = conn.execute(
                "UPDATE confessional_queue SET leased_until = now() + make_interval(secs => %s) "
                "WHERE state = 'running' AND worker = %s AND id = ANY(%s)",
                (lease_s, jobs[0].worker, [job.id for job in jobs]),
            )
            return int(cursor.rowcount)

    def complete(self, job: ClaimedJob) -> bool:
        """Mark ``job`` done; ``False`` when its lease was lost meanwhile."""
        return self._fenced(
            job,
            "state = 'done', finished_at = now(), leased_until = NULL, last_error = NULL",
        )

    def fail(self, job: ClaimedJob, error: str, *, max_attempts: int, backoff_s: float) -> str:
        """Record a failed attempt: back to ``pending`` after a backoff, or ``dead`` once
        ``max_attempts`` were made. Returns the new state (``lost``: the lease was lost)."""
        with self._connection(durable=False) as conn:
            row = conn.execute(
                "UPDATE confessional_queue SET "
                "state = CASE WHEN attempts >= %(max)s THEN 'dead' ELSE 'pending' END, "
                "finished_at = CASE WHEN attempts >= %(max)s THEN now() END, "
                "available_at = now() + make_interval(secs => "
                "LEAST(%(cap)s, %(backoff)s * power(2, attempts - 1))), "
                "leased_until = NULL, last_error = %(error)s "
                "WHERE id = %(id)s AND worker = %(worker)s AND attempts = %(attempt)s "
                "AND state = 'running' RETURNING state",
                {
                    "max": max_attempts,
                    "cap": MAX_BACKOFF_S,
                    "backoff": backoff_s,
                    "error": error[:ERROR_LIMIT],
                    "id": job.id,
                    "worker": job.worker,
                    "attempt": job.attempt,
                },
            ).fetchone()
        return "lost" if row is None else str(row[0])

    def release(self, job: ClaimedJob) -> bool:
        """Give ``job`` back unfinished (a worker stopping): pending at once, and this
        attempt not counted."""
        return self._fenced(
            job,
            "state = 'pending', attempts = attempts - 1, available_at = now(), leased_until = NULL",
            notify=True,
        )

    def _fenced(self, job: ClaimedJob, assignments: str, *, notify: bool = False) -> bool:
        notifying = f", pg_notify('{CHANNEL}', '')" if notify else ""
        with self._connection(durable=False) as conn:
            cursor = conn.execute(
                f"WITH job AS (UPDATE confessional_queue SET {assignments} "
                "WHERE id = %s AND worker = %s AND attempts = %s AND state = 'running' "
                f"RETURNING id) SELECT id{notifying} FROM job",
                (job.id, job.worker, job.attempt),
            )
            return bool(cursor.rowcount)

    def requeue_expired(self, *, max_attempts: int) -> tuple[int, int]:
        """Jobs whose worker stopped answering (lease expired): back to ``pending``, or
        ``dead`` when that was their last attempt. Returns ``(requeued, dead)``."""
        with self._connection(durable=False) as conn:
            rows = conn.execute(
                "UPDATE confessional_queue SET "
                "state = CASE WHEN attempts >= %(max)s THEN 'dead' ELSE 'pending' END, "
                "finished_at = CASE WHEN attempts >= %(max)s THEN now() END, "
                "available_at = now(), leased_until = NULL, "
                "last_error = 'lease expired: worker ' || coalesce(worker, '?') || "
                "' stopped answering (killed, or lost its database connection)' "
                "WHERE id IN (SELECT id FROM confessional_queue WHERE state = 'running' "
                "AND leased_until < now() FOR UPDATE SKIP LOCKED) RETURNING state",
                {"max": max_attempts},
            ).fetchall()
        dead = sum(1 for (state,) in rows if state == "dead")
        return len(rows) - dead, dead

    # -- operators ------------------------------------------------------------------

    def status(self, *, dead_limit: int = 20) -> QueueStatus:
        with self._connection() as conn:
            counts = {state: 0 for state in ("pending", "running", "done", "dead")}
            for state, count in conn.execute(
                "SELECT state, count(*) FROM confessional_queue GROUP BY state"
            ).fetchall():
                counts[str(state)] = int(count)
            oldest = conn.execute(
                "SELECT EXTRACT(EPOCH FROM now() - min(enqueued_at)) FROM confessional_queue "
                "WHERE state = 'pending'"
            ).fetchone()
            dead = conn.execute(
                "SELECT id, confession_id, attempts, last_error, finished_at "
                "FROM confessional_queue WHERE state = 'dead' ORDER BY id LIMIT %s",
                (dead_limit,),
            ).fetchall()
        return QueueStatus(
            counts=counts,
            oldest_pending_s=None if oldest is None or oldest[0] is None else float(oldest[0]),
            dead=[DeadLetter(int(r[0]), str(r[1]), int(r[2]), r[3], r[4]) for r in dead],
        )

    def retry(self, ids: Sequence[int] = ()) -> int:
        """Dead letters (all, or those in ``ids``) back to ``pending`` with fresh attempts."""
        only = "AND id = ANY(%s)" if ids else ""
        with self._connection() as conn, conn.transaction():
            cursor = conn.execute(
                "UPDATE confessional_queue SET state = 'pending', attempts = 0, "
                f"available_at = now(), finished_at = NULL WHERE state = 'dead' {only}",
                (list(ids),) if ids else (),
            )
            retried = int(cursor.rowcount)
            if retried:
                conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            return retried

    def purge(self, *, dead: bool = False, older_than_s: float = 0.0) -> int:
        """Delete finished jobs (``done``, and ``dead`` too with ``dead``) finished more
        than ``older_than_s`` ago."""
        states = ["done", "dead"] if dead else ["done"]
        with self._connection() as conn:
            cursor = conn.execute(
                "DELETE FROM confessional_queue WHERE state = ANY(%s) "
                "AND finished_at <= now() - make_interval(secs => %s)",
                (states, older_than_s),
            )
            return int(cursor.rowcount)


class QueueListener:
    """Waits for the queue's notifications (``LISTEN``) on a connection of its own.

    Notifications are hints, never the only way work is found: a worker still polls, so a
    lost notification (the connection dropped, a job whose backoff ran out) only delays a
    job by one poll."""

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        timeout = int(conninfo_to_dict(url).get("connect_timeout") or CONNECT_TIMEOUT_S)
        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=timeout)
        try:
            self._conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            self._conn.close()
            raise

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives (``True``) or ``timeout`` seconds pass.
        Notifications that arrived meanwhile are all taken at once."""
        got = False
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            got = True
        if got:  # drain the rest already buffered, without waiting
            for _ in self._conn.notifies(timeout=0):
                pass
        return got

    def close(self) -> None:
        self._conn.close()
