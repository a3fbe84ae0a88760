"""Sinks: everything that receives a finished confession goes through one protocol.

A sink is a callable ``sink(confession)``, sync or async (it may return an awaitable).
Optionally it has ``flush()`` and ``close()`` (sync or async too), and
``inline_only = True`` when it only makes sense while the agent's run is still going
(background mode skips those). The pipeline keeps the whole contract:
:meth:`~confessional.ConfessionPipeline.flush` calls every sink's ``flush()`` once the
background work is done, :meth:`~confessional.ConfessionPipeline.close` calls every
``close()``, and both run at interpreter exit (and on SIGTERM/SIGINT once background
mode installed its handlers). A sink should raise when it fails; the pipeline reports.

The pipeline delivers, in order: the OpenTelemetry recording
(:class:`~confessional.ConfessionTelemetry` is itself a sink), :class:`LangChainRunTags`,
:class:`GraphStreamEvent`, then the sinks in ``ConfessionOptions.sinks``. A sink that
raises is logged, counted and marked on the confession span; the others still run and the
agent never sees the error.

Built here: :class:`JsonlSink` (append-only file), :class:`LangChainRunTags` (tags the
LangChain run, for LangSmith filters) and :class:`GraphStreamEvent` (the LangGraph
``custom`` stream chunk and ``"confession"`` callback event). The Phoenix, LangSmith and
Langfuse annotation sinks are in :mod:`confessional.annotations`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol, runtime_checkable

from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config

from confessional import semconv
from confessional._callbacks import custom_event_listeners, tracer_watching
from confessional._jsonl import JsonlFile
from confessional.confession import Confession
from confessional.errors import ConfigurationError

try:  # POSIX; elsewhere the check holds within one process only
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CONFESSION_EVENT",
    "ConfessionSink",
    "GraphStreamEvent",
    "JsonlSink",
    "LangChainRunTags",
    "confession_event_payload",
    "delivery_steps",
    "lifecycle_steps",
    "sink_name",
    "validate_sinks",
]

CONFESSION_EVENT: Final = "confession"
"""Name of the custom event (``astream_events``) and ``type`` of the ``custom`` stream
chunk that carry each confession."""


@runtime_checkable
class ConfessionSink(Protocol):
    """Receives every finished confession. May return an awaitable (an async sink)."""

    def __call__(self, confession: Confession, /) -> Awaitable[None] | None: ...


SinkMethod = Literal["flush", "close"]
"""The optional lifecycle methods of a sink."""


SinkFailure = Callable[[object, BaseException], None]
"""Called with ``(sink, exception)`` when a sink fails."""


def sink_name(sink: object) -> str:
    """A readable name for logs."""
    return str(getattr(sink, "__name__", None) or type(sink).__name__)


def validate_sinks(sinks: Sequence[object]) -> None:
    """Every sink must be callable; raise :class:`ConfigurationError` otherwise."""
    for sink in sinks:
        if not callable(sink):
            raise ConfigurationError(f"sinks entries must be callable, got {sink!r}")


def inline_only(sink: object) -> bool:
    """Whether ``sink`` needs the agent's run to be still going."""
    return bool(getattr(sink, "inline_only", False))


async def _guarded(sink: object, awaitable: Awaitable[Any], on_failure: SinkFailure) -> None:
    try:
        await awaitable
    except Exception as exc:
        on_failure(sink, exc)


def delivery_steps(
    sinks: Sequence[object],
    confession: Confession,
    *,
    inline: bool,
    on_failure: SinkFailure,
) -> Iterator[Awaitable[None]]:
    """Call each sink; yield the awaitables of async sinks for the driver to await.

    One step sequence for both drivers: sync code runs each yielded awaitable to
    completion, async code awaits it. Failures go to ``on_failure``, never out.
    """
    for sink in sinks:
        if not inline and inline_only(sink):
            continue
        try:
            result = sink(confession)  # type: ignore[operator]
        except Exception as exc:
            on_failure(sink, exc)
            continue
        if inspect.isawaitable(result):
            yield _guarded(sink, result, on_failure)


def lifecycle_steps(
    sinks: Sequence[object], method: SinkMethod, *, on_failure: SinkFailure
) -> Iterator[Awaitable[None]]:
    """Call ``method`` (``flush`` or ``close``) on every sink that has it; yield the
    awaitables of async ones. Failures go to ``on_failure``, never out."""
    for sink in sinks:
        call = getattr(sink, method, None)
        if not callable(call):
            continue
        try:
            result = call()
        except Exception as exc:
            on_failure(sink, exc)
            continue
        if inspect.isawaitable(result):
            yield _guarded(sink, result, on_failure)


class JsonlSink:
    """Appends every confession to a JSON Lines file: one record per line, fsync per
    record, append-only, safe across threads and processes (``O_APPEND``).

    Each line is ``{"type": "confession", "confession": {...}}`` with the full
    :class:`~confessional.Confession` (report text included: this is your own file; pass
    ``redact`` to scrub free text first).

    Deduplicated on ``Confession.id``: a confession whose id the file already holds is not
    written again (a queue job retried after a crash carries the same id, see
    :mod:`confessional.queue`). The check holds across processes writing the same file:
    under an advisory file lock, each write first reads what others appended since (the
    first write reads the whole file once, and the ids are kept in memory).

    Args:
        path: the file; parent directories are created.
        redact: applied to every string in the record before writing. Default ``None``.
        deduplicate: skip ids already in the file. Default ``True``: a repeat is only ever
            a redelivery of the same confession.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        redact: Callable[[str], str] | None = None,
        deduplicate: bool = True,
    ) -> None:
        if redact is not None and not callable(redact):
            raise ConfigurationError("redact must be a callable str -> str")
        self._file = JsonlFile(path)
        self._redact = redact
        self._seen = _WrittenIds(self._file.path) if deduplicate else None

    @property
    def path(self) -> str:
        return str(self._file.path)

    def __call__(self, confession: Confession) -> None:
        record: Any = {"type": "confession", "confession": confession.model_dump(mode="json")}
        if self._redact is not None:
            record = _map_strings(record, self._redact)
        if self._seen is None:
            self._file.append(record)
            return
        with self._seen.locked() as seen:
            if confession.id in seen:
                return
            self._file.append(record)
            seen.add(confession.id)

    def close(self) -> None:
        self._file.close()
        if self._seen is not None:
            self._seen.close()

    def __repr__(self) -> str:
        return f"JsonlSink({self.path!r})"


class _WrittenIds:
    """The confession ids a JSONL file holds, kept current under an advisory lock
    (``flock``) by reading only what was appended since the last look."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ids: set[str] = set()
        self._offset = 0
        self._pending = b""
        self._lock = threading.Lock()
        self._fd: int | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[set[str]]:
        with self._lock:
            if self._fd is None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CREAT, 0o600)
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._catch_up(self._fd)
                yield self._ids
            finally:
                if fcntl is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _catch_up(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size < self._offset:  # truncated or replaced: read it again
            self._ids.clear()
            self._offset, self._pending = 0, b""
        while self._offset < size:
            chunk = os.pread(fd, min(size - self._offset, 1 << 20), self._offset)
            if not chunk:
                break
            self._offset += len(chunk)
            *lines, self._pending = (self._pending + chunk).split(b"\n")
            for line in lines:
                confession_id = _confession_id(line)
                if confession_id is not None:
                    self._ids.add(confession_id)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._ids.clear()
                self._offset, self._pending = 0, b""


def _confession_id(line: bytes) -> str | None:
    try:
        record = json.loads(line)
        value = record["confession"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def _map_strings(value: Any, apply: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return apply(value)
    if isinstance(value, dict):
        return {key: _map_strings(item, apply) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, apply) for item in value]
    return value


def _marked(confession: Confession) -> bool:
    return confession.verdict in ("flag", "halt") or confession.status == "error"


class LangChainRunTags:
    """Tags the current LangChain run when a confession flags, halts or fails.

    It runs a tiny ``confession_verdict`` child run carrying tags
    (``confession:flagged``, ``confession:verdict:<v>``, ``confession:status:error``) and
    verdict metadata, so LangSmith and other callback-based tracers can filter runs.
    Inline only: after the run has returned there is no run to attach a child to (use
    :func:`confessional.annotations.langsmith_feedback` for background confessions).
    """

    inline_only = True

    def __call__(self, confession: Confession) -> None:
        if not _marked(confession):
            return
        if not tracer_watching():
            return  # no tracer would see the child run: skip its cost
        base = ensure_config()
        grade = confession.report.overall_compliance_grade if confession.report else None
        tags = [*base.get("tags", [])]
        if confession.verdict != "pass":
            tags += [semconv.TAG_FLAGGED, f"{semconv.TAG_VERDICT_PREFIX}{confession.verdict}"]
        if confession.status == "error":
            tags.append(f"{semconv.TAG_STATUS_PREFIX}{confession.status}")
        child = RunnableConfig(
            callbacks=base.get("callbacks"),
            tags=tags,
            metadata={
                **base.get("metadata", {}),
                semconv.METADATA_CONFESSION_VERDICT: confession.verdict,
                semconv.METADATA_CONFESSION_STATUS: confession.status,
                semconv.METADATA_CONFESSION_GRADE: grade,
                semconv.METADATA_CONFESSION_ID: confession.id,
            },
        )
        payload = {"verdict": confession.verdict, "status": confession.status, "grade": grade}
        # The run a runnable would make, without a runnable around it: it has nothing to
        # run, only tags and metadata to carry.
        run = get_callback_manager_for_config(child).on_chain_start(
            None, payload, name=semconv.LANGCHAIN_RUN_NAME
        )
        run.on_chain_end(payload)


def confession_event_payload(confession: Confession) -> dict[str, Any]:
    """The payload of the ``custom`` stream chunk and of the ``"confession"`` event."""
    return {"type": CONFESSION_EVENT, "confession": confession.model_dump(mode="json")}


class GraphStreamEvent:
    """Streams each confession live while a LangGraph run goes on: a ``custom`` stream
    chunk (``stream_mode="custom"``) and a ``"confession"`` custom callback event
    (``astream_events``). Outside a graph run it does nothing. Inline only: once the run
    has returned, its stream is closed."""

    inline_only = True

    def __call__(self, confession: Confession) -> Awaitable[None] | None:
        from langgraph.config import get_config, get_stream_writer

        try:
            config = get_config()
        except RuntimeError:  # not inside a runnable (a hook called directly)
            return None
        payload = confession_event_payload(confession)
        with contextlib.suppress(RuntimeError, KeyError):  # a runnable, but not a graph run
            get_stream_writer()(payload)
        if not custom_event_listeners(config):
            return None  # no handler takes custom events (tracers do not): nothing to send
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            dispatch_custom_event(CONFESSION_EVENT, payload, config=config)
            return None
        return adispatch_custom_event(CONFESSION_EVENT, payload, config=config)
