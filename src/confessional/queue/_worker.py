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

from confessional._timeouts import start_without_shutdown_signals
from confessional.health import report_failure
from confessional.queue._store import ClaimedJob, QueueListener, QueueStore, worker_name

__all__ = ["QueueWorker"]

DEFAULT_POLL_S = 0.5
"""Wait between two claims when the queue is empty. A busy queue is claimed from
back-to-back, and an idle worker is woken by the queue's notification as soon as a job is
committed; polling only catches what sends none (a retry whose backoff ran out, a
notification lost with its connection)."""
RELISTEN_S = 5.0
"""Wait before listening again after the notification connection failed (polling goes
on meanwhile)."""


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
        poll_s: wait between claims while the queue is empty (notifications wake an idle
            worker sooner).
        listen: wake on the queue's notifications (``LISTEN``, one more connection).
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
        listen: bool = True,
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
        self._listen = listen
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        # Wake-ups: a claim loop that found nothing waits for the generation to move on.
        self._woken = threading.Condition()
        self._generation = 0
        self._lock = threading.Lock()
        self._held: dict[int, ClaimedJob] = {}
        self._released: set[int] = set()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self._concurrency):
            self._spawn(self._claim_loop, f"confessional-queue-{index}")
        self._spawn(self._heartbeat_loop, "confessional-queue-heartbeat")
        if self._listen:
            # Listening before start() returns: a job committed after it is heard.
            listener = self._connect_listener()
            self._spawn(lambda: self._listen_loop(listener), "confessional-queue-listen")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        start_without_shutdown_signals(thread)  # the main thread handles SIGTERM and SIGINT
        self._threads.append(thread)

    def wake(self) -> None:
        """New work was enqueued: claim now instead of at the next poll.

        One idle claim loop is woken, not all of them (a notification for one job would
        send every idle loop of every worker to the database); a loop that claims a job
        wakes the next (:meth:`_pass_on`), so a burst still gets every loop at once."""
        with self._woken:
            self._generation += 1
            self._woken.notify()

    def _pass_on(self) -> None:
        with self._woken:
            self._woken.notify()

    def _wait_for_work(self, seen: int) -> None:
        """Until :meth:`wake` is called after generation ``seen``, or one poll."""
        with self._woken:
            if self._generation == seen and not self._stopping.is_set():
                self._woken.wait(self._poll_s)

    def _connect_listener(self) -> QueueListener | None:
        try:
            return self.store.listener()
        except Exception as exc:
            report_failure(
                "background",
                "queue_unavailable",
                f"the queue's notifications could not be listened to ({type(exc).__name__}); "
                f"polling every {self._poll_s:g} s meanwhile",
                exc_info=exc,
            )
            return None

    def _listen_loop(self, listener: QueueListener | None) -> None:
        while not self._stopping.is_set():
            if listener is None:
                if self._stopping.wait(RELISTEN_S):
                    return
                listener = self._connect_listener()
                continue
            try:
                while not self._stopping.is_set():
                    # Bounded, so that a stopping worker is noticed.
                    if listener.wait(min(self._poll_s, 1.0)):
                        self.wake()
            except Exception as exc:
                if not self._stopping.is_set():
                    report_failure(
                        "background",
                        "queue_unavailable",
                        f"the queue's notification connection failed ({type(exc).__name__}); "
                        "listening again",
                        exc_info=exc,
                    )
            finally:
                listener.close()
            listener = None

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1

    def _claim_loop(self) -> None:
        job: ClaimedJob | None = None
        while not self._stopping.is_set():
            if job is None:
                job = self._claim()
            if job is not None:
                self._pass_on()  # there may be more
                job = self._run(job)
        if job is not None:  # claimed with the previous one's completion as the stop came
            self._give_back(job)

    def _claim(self) -> ClaimedJob | None:
        """The next ready job; ``None`` after waiting for work (or a failed read)."""
        with self._woken:
            seen = self._generation
        try:
            job = self.store.claim(worker=self.name, lease_s=self._lease_s, producer=self._producer)
        except Exception as exc:
            report_failure(
                "background",
                "queue_unavailable",
                f"the confession queue could not be read ({type(exc).__name__}); retrying",
                exc_info=exc,
            )
            self._stopping.wait(self._poll_s)
            return None
        if job is None:
            self._wait_for_work(seen)
        return job

    def _run(self, job: ClaimedJob) -> ClaimedJob | None:
        """Run ``job`` and record its outcome; returns the next job when one was claimed
        with the outcome."""
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
            return None  # given back at stop; whoever claims it next delivers (same id)
        try:
            return self._settle(job, error)
        except Exception as exc:  # the database went away: the lease expires, it is retried
            report_failure(
                "background",
                "queue_unavailable",
                f"a queue job's outcome could not be recorded ({type(exc).__name__}); it "
                "is retried once its lease expires",
                exc_info=exc,
            )
            return None

    def _give_back(self, job: ClaimedJob) -> int:
        """Releases ``job``; 1 if it was given back, else 0 (it was not held any more)."""
        try:
            released = int(self.store.release(job))
        except Exception as exc:  # its lease expires instead: it is retried then
            report_failure(
                "background",
                "queue_unavailable",
                f"queue job {job.id} could not be given back ({type(exc).__name__}); "
                "it is retried once its lease expires",
                exc_info=exc,
            )
            return 0
        self._count_many("released", released)
        return released

    def _settle(self, job: ClaimedJob, error: BaseException | None) -> ClaimedJob | None:
        if error is None:
            following = None
            if self._stopping.is_set():
                done = self.store.complete(job)
            else:  # the next claim rides on this completion: one round trip, not two
                done, following = self.store.complete_and_claim(
                    job, lease_s=self._lease_s, producer=self._producer
                )
            if done:
                self._count("done")
            else:
                self._lost(job)
            return following
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
        return None

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
        with self._woken:
            self._generation += 1
            self._woken.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if not thread.name[len("confessional-queue-") :].isdigit():
                continue  # the heartbeat goes on while held jobs finish; the listener ends
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            held = list(self._held.values())
            self._released.update(job.id for job in held)
        released = sum(self._give_back(job) for job in held)
        self._stopped.set()
        return released
