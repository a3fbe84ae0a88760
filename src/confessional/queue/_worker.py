"""Queue workers: claim, heartbeat, execute, acknowledge, retry, dead-letter, release.

:class:`QueueWorker` runs ``concurrency`` claim loops and one heartbeat thread. It knows
nothing of the pipeline: it hands each claimed job to ``execute`` (a callable that raises
when the attempt failed). Used by ``confessional worker`` and by the in-process workers of
an agent with ``ConfessionOptions(queue=...)``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from confessional._timeouts import _block_shutdown_signals
from confessional.health import report_failure
from confessional.queue._store import ClaimedJob, QueueStore, worker_name

__all__ = ["QueueWorker"]

DEFAULT_POLL_S = 0.5
"""Wait between two claims when the queue is empty. A busy queue is claimed from
back-to-back; this only sets how soon an idle worker notices new work."""


class QueueWorker:
    """Claims jobs from ``store`` and runs ``execute`` on each, ``concurrency`` at a time.

    Args:
        store: the queue table.
        execute: runs one job; raising means the attempt failed (retried with backoff,
            dead-lettered after ``max_attempts``).
        concurrency: jobs held at once.
        lease_s: lease per claim, renewed every third of it while the job runs.
        max_attempts: attempts before a job is dead-lettered.
        backoff_s: wait before the first retry, doubled each attempt.
        poll_s: wait between claims while the queue is empty.
        producer: only claim jobs this producer enqueued (an agent's in-process workers
            that have no confessing model of their own).
    """

    def __init__(
        self,
        store: QueueStore,
        execute: Callable[[ClaimedJob], object],
        *,
        concurrency: int,
        lease_s: float,
        max_attempts: int,
        backoff_s: float,
        poll_s: float = DEFAULT_POLL_S,
        producer: str | None = None,
    ) -> None:
        self.store = store
        self.name = worker_name()
        self.counts: Counter[str] = Counter()
        self._execute = execute
        self._concurrency = concurrency
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._poll_s = poll_s
        self._producer = producer
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._held: dict[int, ClaimedJob] = {}
        self._released: set[int] = set()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self._concurrency):
            self._spawn(self._claim_loop, f"confessional-queue-{index}")
        self._spawn(self._heartbeat_loop, "confessional-queue-heartbeat")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            _block_shutdown_signals()  # the main thread handles SIGTERM and SIGINT
            target()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def wake(self) -> None:
        """New work was enqueued here: claim now instead of at the next poll."""
        self._wake.set()

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1

    def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.store.claim(
                    worker=self.name, lease_s=self._lease_s, producer=self._producer
                )
            except Exception as exc:
                report_failure(
                    "background",
                    "queue_unavailable",
                    f"the confession queue could not be read ({type(exc).__name__}); retrying",
                    exc_info=exc,
                )
                self._stopping.wait(self._poll_s)
                continue
            if job is None:
                if self._wake.wait(self._poll_s):
                    self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: ClaimedJob) -> None:
        with self._lock:
            self._held[job.id] = job
        self._count("claimed")
        error: BaseException | None = None
        try:
            self._execute(job)
        except Exception as exc:
            error = exc
        with self._lock:
            self._held.pop(job.id, None)
            released = job.id in self._released
            self._released.discard(job.id)
        if released:
            return  # given back at stop; whoever claims it next delivers (same id)
        try:
            self._settle(job, error)
        except Exception as exc:  # the database went away: the lease expires, it is retried
            report_failure(
                "background",
                "queue_unavailable",
                f"a queue job's outcome could not be recorded ({type(exc).__name__}); it "
                "is retried once its lease expires",
                exc_info=exc,
            )

    def _settle(self, job: ClaimedJob, error: BaseException | None) -> None:
        if error is None:
            if self.store.complete(job):
                self._count("done")
            else:
                self._lost(job)
            return
        cause = type(error).__name__
        state = self.store.fail(
            job,
            f"{cause}: {error}",
            max_attempts=self._max_attempts,
            backoff_s=self._backoff_s,
        )
        if state == "lost":
            self._lost(job)
        elif state == "dead":
            self._count("dead")
            report_failure(
                "background",
                "queue_dead_letter",
                f"queue job {job.id} failed {job.attempt} time(s) ({cause}) and was "
                "dead-lettered; see `confessional queue status`",
                exc_info=error,
            )
        else:
            self._count("retried")
            report_failure(
                "background",
                cause,
                f"queue job {job.id} failed (attempt {job.attempt}); it will be retried",
                exc_info=error,
            )

    def _lost(self, job: ClaimedJob) -> None:
        self._count("lost_lease")
        report_failure(
            "background",
            "queue_lease_lost",
            f"queue job {job.id} outlived its lease and another worker took it; its "
            "confession may be delivered twice, with the same id",
        )

    def _heartbeat_loop(self) -> None:
        interval = self._lease_s / 3
        while not self._stopped.wait(interval):
            with self._lock:
                held = list(self._held.values())
            try:
                self.store.heartbeat(held, lease_s=self._lease_s)
                if not self._stopping.is_set():
                    requeued, dead = self.store.requeue_expired(max_attempts=self._max_attempts)
                    if requeued or dead:
                        self._count_many("requeued_expired", requeued)
                        self._count_many("dead", dead)
            except Exception as exc:
                report_failure(
                    "background",
                    "queue_unavailable",
                    f"queue heartbeat failed ({type(exc).__name__})",
                    exc_info=exc,
                )

    def _count_many(self, outcome: str, n: int) -> None:
        if n:
            with self._lock:
                self.counts[outcome] += n

    def stop(self, timeout: float) -> int:
        """Stop claiming, wait up to ``timeout`` seconds for the jobs held, then give the
        rest back to the queue. Returns how many were given back."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.name.endswith("heartbeat"):
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            held = list(self._held.values())
            self._released.update(job.id for job in held)
        released = 0
        for job in held:
            try:
                released += self.store.release(job)
            except Exception as exc:  # its lease expires instead: it is retried then
                report_failure(
                    "background",
                    "queue_unavailable",
                    f"queue job {job.id} could not be given back ({type(exc).__name__}); "
                    "it is retried once its lease expires",
                    exc_info=exc,
                )
        self._count_many("released", released)
        self._stopped.set()
        return released
