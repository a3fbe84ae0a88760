"""The pipeline's side of the queue: enqueue from an agent, confess a claimed job.

- :func:`enqueue` is the hand-off of ``ConfessionPipeline.submit`` when
  ``ConfessionOptions.queue`` is set: the episode is committed to the table before the
  agent's call returns. With ``queue_workers_in_process`` the agent's process also runs
  workers (on a pipeline of its own, with the same options).
- :func:`worker_pipeline` builds the pipeline a worker confesses with, and
  :class:`JobExecutor` confesses one claimed job on it: the confession gets the job's
  confession id (stable across retries), its span joins the agent's trace (the
  traceparent travels in the job) and records the time in the queue. A failed confession
  (the model failed, timed out or wrote no report) raises :class:`QueueJobFailed`, so it
  is retried and never delivered as an error first.
"""

from __future__ import annotations

import contextvars
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, cast

from opentelemetry import trace

from confessional import semconv
from confessional._timeouts import start_without_shutdown_signals
from confessional.background import install_signal_handlers, on_shutdown
from confessional.confession import Confession
from confessional.confessor import Confessor, model_name_of
from confessional.episode import Episode, MessageLike
from confessional.errors import ConfessionalError
from confessional.health import report_failure
from confessional.options import ConfessionOptions
from confessional.pipeline import ConfessionPipeline, EpisodeCall
from confessional.queue._store import ClaimedJob, QueueStore
from confessional.queue._worker import QueueWorker
from confessional.spool import episode_from_record, episode_record

__all__ = ["JobExecutor", "QueueJobFailed", "enqueue", "worker_pipeline"]

_QUEUED = Confession(status="skipped", error="queued; a queue worker confesses it")

_CURRENT_JOB: contextvars.ContextVar[ClaimedJob | None] = contextvars.ContextVar(
    "confessional_queue_job", default=None
)


class QueueJobFailed(ConfessionalError):
    """A queue job's confession failed; the worker retries it (or dead-letters it)."""


class _JobConfessor:
    """Wraps the worker pipeline's Confessor: inside a job, the confession takes the job's
    id, its span gets the queue attributes, and a failure raises instead of delivering."""

    def __init__(self, inner: Confessor) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def confess(self, messages: Sequence[MessageLike] | Episode, **call: Any) -> Confession:
        return self._settle(self._inner.confess(messages, **call))

    async def aconfess(self, messages: Sequence[MessageLike] | Episode, **call: Any) -> Confession:
        return self._settle(await self._inner.aconfess(messages, **call))

    @staticmethod
    def _settle(confession: Confession) -> Confession:
        job = _CURRENT_JOB.get()
        if job is None:
            return confession
        span = trace.get_current_span()  # the confession span, opened by the pipeline
        span.set_attribute(semconv.CONFESSION_QUEUE_WAIT_S, round(job.wait_s, 6))
        span.set_attribute(semconv.CONFESSION_QUEUE_ATTEMPT, job.attempt)
        if confession.status == "error":
            raise QueueJobFailed(
                f"the confession failed ({confession.error_type or 'error'}): "
                f"{confession.error or ''}".strip()
            )
        return confession.model_copy(update={"id": job.confession_id})


def worker_pipeline(options: ConfessionOptions) -> ConfessionPipeline:
    """The pipeline a queue worker confesses with: ``options``, inline."""
    pipeline = ConfessionPipeline(options, background=False)
    pipeline.confessor = cast(Confessor, _JobConfessor(pipeline.confessor))
    return pipeline


class _LocalCalls:
    """Calls enqueued by this process, kept in memory (bounded) so its own workers confess
    them with full fidelity: the agent's model object, its tools, every request setting."""

    def __init__(self, limit: int) -> None:
        self._calls: OrderedDict[str, EpisodeCall] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def put(self, confession_id: str, call: EpisodeCall) -> None:
        with self._lock:
            self._calls[confession_id] = call
            while len(self._calls) > self._limit:
                self._calls.popitem(last=False)

    def pop(self, confession_id: str) -> EpisodeCall | None:
        with self._lock:
            return self._calls.pop(confession_id, None)


class JobExecutor:
    """Confesses one claimed job on ``pipeline`` (see :func:`worker_pipeline`)."""

    def __init__(self, pipeline: ConfessionPipeline, local: _LocalCalls | None = None) -> None:
        self.pipeline = pipeline
        self._local = local

    def warm_up(self) -> None:
        """Pay a confession's one-off costs now, before the first claim: the modules a
        confession imports on first use (LangChain's agents package, for the metadata that
        hides the call from the agent's stream; OpenInference's span lookup, when
        installed) cost about 0.4 s of CPU, which a new worker's first jobs, four at once,
        would otherwise wait for. Nothing is called or recorded."""
        from confessional.confessor import _call_config
        from confessional.telemetry import resolve_parent_span

        _call_config(None)
        resolve_parent_span()

    def __call__(self, job: ClaimedJob) -> Confession:
        call = self._local.pop(job.confession_id) if self._local is not None else None
        if call is None:
            item = episode_from_record(job.payload, where=f"queue job {job.id}")
            call = EpisodeCall(
                item.episode,
                tools=item.tools,
                agent_name=item.agent_name,
                run_id=item.run_id,
                model_settings=item.model_settings,
                parent=item.parent,
                selected=True,
            )
        token = _CURRENT_JOB.set(job)
        try:
            return self.pipeline._drive(call, inline=False)
        finally:
            _CURRENT_JOB.reset(token)


class _Producer:
    """One agent pipeline's link to the queue: its enqueues, and its in-process workers."""

    def __init__(self, pipeline: ConfessionPipeline) -> None:
        options = pipeline.options
        assert options.queue is not None
        self.options = options
        self.name = f"producer-{uuid.uuid4().hex[:12]}"
        self.store = QueueStore(options.queue)
        self.store.migrate()
        self._model = pipeline.confessor.model
        self.worker: QueueWorker | None = None
        self._local: _LocalCalls | None = None
        if options.queue_workers_in_process:
            self._local = _LocalCalls(options.max_pending)
            self.worker = QueueWorker(
                self.store,
                JobExecutor(worker_pipeline(options), self._local),
                concurrency=options.max_concurrency,
                lease_s=options.queue_lease_s,
                max_attempts=options.queue_max_attempts,
                backoff_s=options.queue_retry_backoff_s,
                # Without a confessing model of its own, this process can only confess
                # the episodes it holds the agent's model for: its own.
                producer=None if options.has_model else self.name,
                # Its own enqueues wake it directly; others' only matter when it may
                # claim them.
                listen=options.has_model,
            )
            self.worker.start()
            install_signal_handlers(quiet=True)
        # Dropped with its pipeline (garbage-collected, never shut down): its workers
        # stop, on a thread of their own (a collection may run on one of theirs).
        self._finalizer = weakref.finalize(
            self, _stop_detached, self.worker, self.store, options.flush_timeout_s
        )
        on_shutdown(self.shutdown)

    def enqueue(self, call: EpisodeCall) -> Future[Confession]:
        assert isinstance(call.messages, Episode)  # background jobs carry the extracted one
        model = self._model or call.model
        confession_id = uuid.uuid4().hex
        record = episode_record(
            call.messages,
            agent_name=call.agent_name or self.options.agent_name,
            run_id=call.run_id,
            model_name=model_name_of(model) if model is not None else None,
            model_settings=call.model_settings,
            parent=call.parent,
            reason="queued",
            record_id=confession_id,
        )
        if self._local is not None:
            self._local.put(confession_id, call)
        self.store.enqueue(record, confession_id=confession_id, producer=self.name)
        if self.worker is not None:
            self.worker.wake()
        future: Future[Confession] = Future()
        future.set_result(_QUEUED)
        return future

    def shutdown(self) -> None:
        """At exit or on SIGTERM: in-process workers finish within ``flush_timeout_s`` or
        give their jobs back; what is still pending stays in the table."""
        self._finalizer.detach()
        _stop(self.worker, self.store, self.options.flush_timeout_s)


def _stop(worker: QueueWorker | None, store: QueueStore, timeout: float) -> None:
    if worker is not None:
        worker.stop(timeout)
    store.close()


def _stop_detached(worker: QueueWorker | None, store: QueueStore, timeout: float) -> None:
    stopper = threading.Thread(
        target=_stop, args=(worker, store, timeout), name="confessional-queue-stop", daemon=True
    )
    start_without_shutdown_signals(stopper)


_PRODUCERS: weakref.WeakKeyDictionary[ConfessionPipeline, _Producer] = weakref.WeakKeyDictionary()
_PRODUCERS_LOCK = threading.Lock()


def enqueue(pipeline: ConfessionPipeline, call: EpisodeCall) -> Future[Confession] | None:
    """Commit ``call`` (an already selected episode) to ``pipeline``'s queue; ``None``
    when the queue cannot take it (reported), so the caller keeps it in memory instead."""
    try:
        with _PRODUCERS_LOCK:
            producer = _PRODUCERS.get(pipeline)
            if producer is None:
                producer = _PRODUCERS[pipeline] = _Producer(pipeline)
        return producer.enqueue(call)
    except Exception as exc:  # database down, unserialisable episode: keep it in memory
        report_failure(
            "background",
            "queue_unavailable",
            f"an episode could not be enqueued ({type(exc).__name__}); it is confessed in "
            "this process instead (and spooled if still pending at shutdown)",
            exc_info=exc,
        )
        return None
