"""A write-ahead work queue for background confessions, on PostgreSQL.

With ``ConfessionOptions(background=True, queue="postgresql://...")`` every selected
episode is committed to the ``confessional_queue`` table before the agent's call returns,
so a SIGKILL, an OOM kill or a lost node loses nothing. Workers (``confessional worker``
on any number of machines, and the agent's own in-process workers unless
``queue_workers_in_process=False``) claim jobs with ``FOR UPDATE SKIP LOCKED`` and a
lease they renew while the job runs. An enqueue notifies the workers with its commit
(``LISTEN``/``NOTIFY`` on ``confessional_queue``), so an idle worker claims at once;
polling is only the fallback. On failure:

- a job whose worker died is re-queued when its lease expires;
- a failed attempt is retried with exponential backoff (``queue_retry_backoff_s``), and
  after ``queue_max_attempts`` the job is dead-lettered with its last error
  (``confessional queue status|retry|purge``);
- every job has a confession id, fixed at enqueue, that its confession carries on every
  attempt. Delivery is at least once; the built-in sinks (:class:`~confessional.JsonlSink`,
  the OpenTelemetry span) skip an id they already delivered, so for them it is exactly once.

The tables are created and migrated by :meth:`QueueStore.migrate` (called by producers
and workers on start), under an advisory lock, with the version in
``confessional_schema``. See the README, "Running at scale".
"""

from __future__ import annotations

from confessional.queue._store import (
    SCHEMA_VERSION,
    ClaimedJob,
    DeadLetter,
    QueueListener,
    QueueSchemaError,
    QueueStatus,
    QueueStore,
)
from confessional.queue._worker import QueueWorker

__all__ = [
    "SCHEMA_VERSION",
    "ClaimedJob",
    "DeadLetter",
    "QueueListener",
    "QueueSchemaError",
    "QueueStatus",
    "QueueStore",
    "QueueWorker",
]
