"""Review runs paused on a confession: list them across threads and resume them safely.

A run with ``on_violation="interrupt"`` pauses on a LangGraph interrupt whose value is a
LangChain ``HITLRequest`` (see :func:`confessional.control.review_payload`). This module
finds those pauses in a checkpointer and applies a reviewer's decision:

- :func:`pending` / :func:`apending` list the reviews pending on every thread (thread id,
  checkpoint id, time, grade, reasons; the withheld answer only with ``content=True``).
- :func:`resume` / :func:`aresume` apply a decision to one thread, through the graph
  that paused (compiled with the same checkpointer).

Safety, for many workers and reviewers sharing one checkpointer:

- A decision only resumes a thread whose latest checkpoint is paused on a confession
  review (and on the interrupt id given, when one is). Anything else raises
  :class:`NotPausedError` or :class:`ReviewMismatchError` before anything is written.
- Each review is applied at most once. Before resuming, the reviewer claims the review
  with a compare-and-set insert into a small ``confessional_review_claims`` table in the
  checkpointer's own database (keyed by thread and interrupt id). The loser of a race
  gets :class:`AlreadyResolvedError`. The table doubles as a record of who decided what.
  A resume that fails gives its claim back, so the review can be answered again.
- The decision applied names its reviewer, its time and the confession span under review
  (the payload's ``traceparent``), so the resumed run records it on the confession's trace
  as a ``confession.review.decision`` span, whichever process resumes it.

Supported checkpointers: ``SqliteSaver``, ``AsyncSqliteSaver``, ``PostgresSaver``,
``AsyncPostgresSaver`` (the ``postgres`` extra) and ``InMemorySaver`` (claims then hold
within one process only).
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import weakref
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Interrupt, StateSnapshot
from pydantic import ValidationError

from confessional._aio import adrive, drive
from confessional.confession import Confession
from confessional.control import (
    REVIEW_TYPE,
    InvalidDecisionError,
    ReviewDecision,
    allowed_decisions,
    check_allowed,
)
from confessional.errors import ConfessionalError

__all__ = [
    "AlreadyResolvedError",
    "InvalidDecisionError",
    "NotPausedError",
    "PendingReview",
    "Resumed",
    "ReviewDecision",
    "ReviewError",
    "ReviewMismatchError",
    "apending",
    "aresume",
    "pending",
    "resume",
]

_INTERRUPT_CHANNEL = "__interrupt__"  # where LangGraph keeps a task's interrupts
_RESUME_CHANNEL = "__resume__"  # ... and the resume values the task has taken
CLAIMS_TABLE = "confessional_review_claims"


class ReviewError(ConfessionalError):
    """A review could not be listed or applied; nothing was changed."""


class NotPausedError(ReviewError):
    """The thread is not paused on a confession review."""


class ReviewMismatchError(ReviewError):
    """The decision names an interrupt the thread is not paused on."""


class AlreadyResolvedError(ReviewError):
    """Another reviewer already resolved (or is resolving) this review."""


@dataclass(frozen=True)
class PendingReview:
    """One confession review waiting for a decision."""

    thread_id: str
    checkpoint_id: str
    interrupt_id: str
    paused_at: str
    """When the run paused (the checkpoint's ISO 8601 timestamp)."""
    confession_id: str | None
    grade: int | None
    verdict: str | None
    reasons: tuple[str, ...]
    action: str
    """The action under review: ``deliver_answer`` or ``continue_run``."""
    allowed_decisions: tuple[str, ...]
    description: str
    answer: str | None = None
    """The withheld answer: only when listed with ``content=True``."""
    details: str | None = None
    """What the confession says (objectives, shortcuts, uncertainties): only with
    ``content=True``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "checkpoint_id": self.checkpoint_id,
            "interrupt_id": self.interrupt_id,
            "paused_at": self.paused_at,
            "confession_id": self.confession_id,
            "grade": self.grade,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "action": self.action,
            "allowed_decisions": list(self.allowed_decisions),
            "description": self.description,
            "answer": self.answer,
            "details": self.details,
        }


@dataclass(frozen=True)
class Resumed:
    """A decision applied: the run went on from its pause."""

    thread_id: str
    interrupt_id: str
    decision: ReviewDecision
    values: dict[str, Any] = field(repr=False)
    """The graph's output after the resume (``__interrupt__`` when it paused again)."""

    @property
    def paused_again(self) -> bool:
        """The resumed run paused on another interrupt (``tool_round`` pauses per round)."""
        return bool(self.values.get("__interrupt__"))


# -- steps: one sequence for sync and async, performed by a driver below -----------------


@dataclass(frozen=True)
class _Latest:
    """The latest root checkpoint of ``thread_id``, or of every thread with interrupts."""

    thread_id: str | None


@dataclass(frozen=True)
class _State:
    config: RunnableConfig


@dataclass(frozen=True)
class _Resume:
    command: Command[Any]
    config: RunnableConfig


@dataclass(frozen=True)
class _Claim:
    """Compare-and-set: record the claim unless one exists; answers whether it was ours."""

    thread_id: str
    interrupt_id: str
    checkpoint_id: str
    decision: str
    reviewer: str
    claimed_at: str
    """ISO 8601, UTC: also the decision time recorded on the trace."""


@dataclass(frozen=True)
class _ClaimOf:
    """The claim on a review, as ``(decision, reviewer, claimed_at, status)``, or None."""

    thread_id: str
    interrupt_id: str


@dataclass(frozen=True)
class _Settle:
    """Mark a claim ``applied``, or give it back (``release``) after a failed resume."""

    thread_id: str
    interrupt_id: str
    outcome: Literal["applied", "release"]


_Step = _Latest | _State | _Resume | _Claim | _ClaimOf | _Settle
_ClaimRecord = tuple[str, str, str, str]


def _config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _is_review(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("type") == REVIEW_TYPE


def _entry(
    thread_id: str, checkpoint_id: str, paused_at: str, found: Interrupt, content: bool
) -> PendingReview:
    payload: Mapping[str, Any] = found.value
    [request, *_] = payload.get("action_requests") or [{}]
    confession = payload.get("confession") or {}
    report = confession.get("report") or {}
    answer = payload.get("withheld_answer")
    return PendingReview(
        thread_id=thread_id,
        checkpoint_id=checkpoint_id,
        interrupt_id=found.id,
        paused_at=paused_at,
        confession_id=payload.get("confession_id") or confession.get("id"),
        grade=payload.get("grade", report.get("overall_compliance_grade")),
        verdict=confession.get("verdict"),
        reasons=tuple(payload.get("reasons") or ()),
        action=str(request.get("name", "")),
        allowed_decisions=allowed_decisions(payload),
        description=str(request.get("description", "")),
        answer=answer if content and isinstance(answer, str) else None,
        details=_details(confession) if content else None,
    )


def _details(confession: Mapping[str, Any]) -> str | None:
    try:
        return Confession.model_validate(confession).explanation() or None
    except ValidationError:  # a payload written by another version: no details
        return None


def _reviews_at(checkpoint: CheckpointTuple, content: bool) -> list[PendingReview]:
    thread_id = str(checkpoint.config["configurable"]["thread_id"])
    checkpoint_id = str(checkpoint.config["configurable"]["checkpoint_id"])
    paused_at = str(checkpoint.checkpoint.get("ts", ""))
    return [
        _entry(thread_id, checkpoint_id, paused_at, found, content)
        for _task, channel, value in checkpoint.pending_writes or ()
        if channel == _INTERRUPT_CHANNEL
        for found in (value if isinstance(value, Sequence) else ())
        if isinstance(found, Interrupt) and _is_review(found.value)
    ]


def _pending_steps(
    thread_id: str | None, content: bool
) -> Generator[_Step, Any, list[PendingReview]]:
    latest: list[CheckpointTuple] = yield _Latest(thread_id)
    reviews = [review for checkpoint in latest for review in _reviews_at(checkpoint, content)]
    return sorted(reviews, key=lambda r: (r.paused_at, r.thread_id))


def _decision_taken(checkpoint: CheckpointTuple, interrupt_id: str) -> bool:
    """Whether the task paused on ``interrupt_id`` has recorded a resume value."""
    writes = checkpoint.pending_writes or ()
    tasks = {
        task
        for task, channel, value in writes
        if channel == _INTERRUPT_CHANNEL
        and any(getattr(i, "id", None) == interrupt_id for i in value)
    }
    return any(task in tasks and channel == _RESUME_CHANNEL for task, channel, _ in writes)


def _paused_reviews(snapshot: StateSnapshot) -> list[Interrupt]:
    return [i for i in snapshot.interrupts if _is_review(i.value)]


def _resolved(thread_id: str, interrupt_id: str, claim: _ClaimRecord | None) -> ReviewError:
    if claim is None:
        return AlreadyResolvedError(
            f"the confession review {interrupt_id} on thread {thread_id!r} was already "
            "resolved (the thread is no longer paused on it)"
        )
    decision, reviewer, claimed_at, status = claim
    progress = "; the decision is still being applied" if status == "claimed" else ""
    return AlreadyResolvedError(
        f"the confession review {interrupt_id} on thread {thread_id!r} was already resolved "
        f"by another reviewer: {decision} by {reviewer} at {claimed_at}{progress}"
    )


def _resume_steps(
    thread_id: str, value: Any, interrupt_id: str | None, reviewer: str | None
) -> Generator[_Step, Any, Resumed]:
    decision = ReviewDecision.parse(value)
    reviewer = _reviewer(reviewer or decision.reviewer)
    snapshot: StateSnapshot = yield _State(_config(thread_id))
    paused = _paused_reviews(snapshot)
    target = interrupt_id if interrupt_id is not None else (paused[0].id if paused else None)
    found = next((i for i in paused if i.id == target), None)
    if found is None or target is None:
        claim = (yield _ClaimOf(thread_id, target)) if target is not None else None
        if claim is not None:
            raise _resolved(thread_id, target or "", claim)
        if not paused:
            raise NotPausedError(
                f"thread {thread_id!r} is not paused on a confession review; nothing was changed"
            )
        raise ReviewMismatchError(
            f"thread {thread_id!r} is paused on confession review "
            + ", ".join(i.id for i in paused)
            + f", not on {interrupt_id!r}; nothing was changed"
        )
    check_allowed(decision, allowed_decisions(found.value))
    checkpoint_id = str(snapshot.config["configurable"]["checkpoint_id"])
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    traceparent = found.value.get("traceparent")
    # What the resumed run records on the trace, in whatever process runs it.
    decision = decision.model_copy(
        update={
            "reviewer": reviewer,
            "decided_at": now,
            "traceparent": traceparent if isinstance(traceparent, str) else decision.traceparent,
        }
    )
    won: bool = yield _Claim(thread_id, found.id, checkpoint_id, decision.action, reviewer, now)
    if not won:
        raise _resolved(thread_id, found.id, (yield _ClaimOf(thread_id, found.id)))
    # The claim is ours; the thread may still have been resumed outside this module.
    current: StateSnapshot = yield _State(_config(thread_id))
    if found.id not in {i.id for i in _paused_reviews(current)}:
        yield _Settle(thread_id, found.id, "release")
        raise _resolved(thread_id, found.id, None)
    try:
        values = yield _Resume(Command(resume={found.id: decision.as_resume()}), _config(thread_id))
    except BaseException:
        # If the paused task took the decision before the run failed (a rejection that
        # raises, a later node's error), LangGraph replays it on every resume: the review
        # is resolved. Otherwise give the claim back so the review can be answered again.
        latest: list[CheckpointTuple] = yield _Latest(thread_id)
        taken = any(_decision_taken(checkpoint, found.id) for checkpoint in latest)
        yield _Settle(thread_id, found.id, "applied" if taken else "release")
        raise
    yield _Settle(thread_id, found.id, "applied")
    return Resumed(thread_id, found.id, decision, dict(values or {}))


# -- where the claims live: SQL in the checkpointer's database, or process memory --------

Dialect = Literal["sqlite", "postgres", "memory"]


def _dialect(saver: BaseCheckpointSaver[Any]) -> tuple[Dialect, bool]:
    """The claim store for ``saver`` and whether the saver is async-only."""
    modules = [c.__module__ for c in type(saver).__mro__]
    for prefix, dialect in (
        ("langgraph.checkpoint.sqlite", "sqlite"),
        ("langgraph.checkpoint.postgres", "postgres"),
    ):
        matches = [m for m in modules if m.startswith(prefix)]
        if matches:
            return dialect, matches[0].endswith(".aio")  # type: ignore[return-value]
    if isinstance(saver, InMemorySaver):
        return "memory", False
    raise ReviewError(
        f"confessional.review does not support {type(saver).__name__}; use SqliteSaver, "
        "AsyncSqliteSaver, PostgresSaver, AsyncPostgresSaver or InMemorySaver"
    )


_CREATE_CLAIMS = (
    f"CREATE TABLE IF NOT EXISTS {CLAIMS_TABLE} ("
    "thread_id TEXT NOT NULL, interrupt_id TEXT NOT NULL, checkpoint_id TEXT NOT NULL, "
    "decision TEXT NOT NULL, reviewer TEXT NOT NULL, status TEXT NOT NULL, "
    "claimed_at TEXT NOT NULL, PRIMARY KEY (thread_id, interrupt_id))"
)
# Concurrent CREATE TABLE IF NOT EXISTS can collide in PostgreSQL's catalog; serialise it.
_PG_DDL_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%s))"

_LATEST_WITH_INTERRUPTS = (
    "SELECT c.thread_id, c.checkpoint_id FROM checkpoints c "
    "WHERE c.checkpoint_ns = '' AND c.checkpoint_id = ("
    "  SELECT MAX(m.checkpoint_id) FROM checkpoints m "
    "  WHERE m.thread_id = c.thread_id AND m.checkpoint_ns = '') "
    "AND EXISTS (SELECT 1 FROM {writes} w WHERE w.thread_id = c.thread_id "
    "  AND w.checkpoint_ns = '' AND w.checkpoint_id = c.checkpoint_id AND w.channel = %s)"
)

Statement = tuple[str, tuple[Any, ...]]


def _sql(dialect: Dialect, statements: Iterable[Statement]) -> list[Statement]:
    """Statements written with ``%s`` placeholders, in ``dialect``'s spelling."""
    if dialect == "sqlite":
        return [(text.replace("%s", "?"), params) for text, params in statements]
    return list(statements)


def _ensure_claims(dialect: Dialect) -> list[Statement]:
    if dialect == "postgres":
        return [(_PG_DDL_LOCK, (CLAIMS_TABLE,)), (_CREATE_CLAIMS, ())]
    return [(_CREATE_CLAIMS, ())]


def _statements(dialect: Dialect, step: _Latest | _Claim | _ClaimOf | _Settle) -> list[Statement]:
    """The SQL of a step; the result of the last statement answers it."""
    if isinstance(step, _Latest):
        writes = "checkpoint_writes" if dialect == "postgres" else "writes"
        return _sql(
            dialect, [(_LATEST_WITH_INTERRUPTS.format(writes=writes), (_INTERRUPT_CHANNEL,))]
        )
    where = "WHERE thread_id = %s AND interrupt_id = %s"
    key = (step.thread_id, step.interrupt_id)
    if isinstance(step, _Claim):
        insert = (
            f"INSERT INTO {CLAIMS_TABLE} (thread_id, interrupt_id, checkpoint_id, decision, "
            "reviewer, status, claimed_at) VALUES (%s, %s, %s, %s, %s, 'claimed', %s) "
            "ON CONFLICT (thread_id, interrupt_id) DO NOTHING",
            (*key, step.checkpoint_id, step.decision, step.reviewer, step.claimed_at),
        )
        return _sql(dialect, [*_ensure_claims(dialect), insert])
    if isinstance(step, _ClaimOf):
        select = (
            f"SELECT decision, reviewer, claimed_at, status FROM {CLAIMS_TABLE} {where}",
            key,
        )
        return _sql(dialect, [*_ensure_claims(dialect), select])
    if step.outcome == "applied":
        update = (f"UPDATE {CLAIMS_TABLE} SET status = 'applied' {where}", key)
        return _sql(dialect, [update])
    return _sql(dialect, [(f"DELETE FROM {CLAIMS_TABLE} {where} AND status = 'claimed'", key)])


def _answer(
    step: _Latest | _Claim | _ClaimOf | _Settle, rowcount: int, rows: list[tuple[Any, ...]]
) -> Any:
    """What a SQL step returns to the step sequence."""
    if isinstance(step, _Claim):
        return rowcount == 1
    if isinstance(step, _ClaimOf):
        return tuple(str(v) for v in rows[0]) if rows else None
    if isinstance(step, _Latest):
        return [(str(thread), str(checkpoint)) for thread, checkpoint in rows]
    return None


def _as_tuple(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, Mapping) else tuple(row)


_MEMORY_CLAIMS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], list[str]]] = (
    weakref.WeakKeyDictionary()
)
_MEMORY_LOCK = threading.Lock()


def _memory_claims(saver: Any, step: _Claim | _ClaimOf | _Settle) -> Any:
    """The claim store of an ``InMemorySaver``: a dict per saver, in this process."""
    with _MEMORY_LOCK:
        claims = _MEMORY_CLAIMS.setdefault(saver, {})
        key = (step.thread_id, step.interrupt_id)
        if isinstance(step, _Claim):
            if key in claims:
                return False
            claims[key] = [step.decision, step.reviewer, step.claimed_at, "claimed"]
            return True
        if isinstance(step, _ClaimOf):
            found = claims.get(key)
            return tuple(found) if found else None
        if step.outcome == "applied" and key in claims:
            claims[key][3] = "applied"
        elif step.outcome == "release" and claims.get(key, ["", "", "", ""])[3] == "claimed":
            del claims[key]
        return None


def _memory_latest(saver: BaseCheckpointSaver[Any], thread_id: str | None) -> list[Any]:
    seen: dict[str, CheckpointTuple] = {}
    for checkpoint in saver.list(_config(thread_id) if thread_id else None):
        configurable = checkpoint.config["configurable"]
        if configurable.get("checkpoint_ns", "") == "":
            seen.setdefault(str(configurable["thread_id"]), checkpoint)
    return list(seen.values())


# -- drivers ------------------------------------------------------------------------------


def _reviewer(reviewer: str | None) -> str:
    if reviewer:
        return reviewer
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class _Query:
    """Run SQL statements in one transaction; answers ``(rowcount, rows)`` of the last."""

    statements: list[Statement]


@dataclass(frozen=True)
class _Tuple:
    """Read one checkpoint tuple."""

    config: RunnableConfig


_Io = _State | _Resume | _Query | _Tuple


def _io(step: _Step, dialect: Dialect, saver: BaseCheckpointSaver[Any]) -> Generator[_Io, Any, Any]:
    """One review step as I/O operations: what the sync and async stores share."""
    if isinstance(step, _State | _Resume):
        return (yield step)
    if dialect == "memory":  # nothing to await: plain calls
        if isinstance(step, _Latest):
            return _memory_latest(saver, step.thread_id)
        return _memory_claims(saver, step)
    if isinstance(step, _Latest) and step.thread_id is not None:
        found = yield _Tuple(_config(step.thread_id))
        return [found] if found is not None else []
    rowcount, rows = yield _Query(_statements(dialect, step))
    answer = _answer(step, rowcount, rows)
    if not isinstance(step, _Latest):
        return answer
    tuples = []
    for thread_id, checkpoint_id in answer:
        found = yield _Tuple(_config(thread_id, checkpoint_id))
        if found is not None:
            tuples.append(found)
    return tuples


def _refine(exc: Exception) -> Exception:
    """A database error as a one-line :class:`ReviewError`; anything else unchanged."""
    if isinstance(exc, ReviewError) or type(exc).__module__.split(".")[0] not in (
        "sqlite3",
        "psycopg",
    ):
        return exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ReviewError(f"the checkpointer's database refused the review query: {first}")


class _SyncStore:
    """Performs review steps with a sync checkpointer and ``graph.invoke``."""

    def __init__(self, saver: BaseCheckpointSaver[Any], graph: Any = None) -> None:
        self.saver = saver
        self.graph = graph
        self.dialect, is_async = _dialect(saver)
        if is_async:
            raise ReviewError(
                f"{type(saver).__name__} is async: use apending() / aresume() "
                "(or SqliteSaver / PostgresSaver here)"
            )

    def perform(self, step: _Step) -> Any:
        return drive(_io(step, self.dialect, self.saver), self.operate)

    def operate(self, op: _Io) -> Any:
        if isinstance(op, _State):
            return self.graph.get_state(op.config)
        if isinstance(op, _Resume):
            return self.graph.invoke(op.command, op.config)
        if isinstance(op, _Tuple):
            return self.saver.get_tuple(op.config)
        try:
            return self._query(op.statements)
        except Exception as exc:
            raise _refine(exc) from exc

    def _query(self, statements: list[Statement]) -> tuple[int, list[tuple[Any, ...]]]:
        saver: Any = self.saver
        if self.dialect == "sqlite":
            with saver.lock:
                saver.setup()
                cursor = saver.conn.cursor()
                try:
                    for text, params in statements:
                        cursor.execute(text, params)
                    rows = cursor.fetchall()
                    saver.conn.commit()
                    return cursor.rowcount, [_as_tuple(r) for r in rows]
                except BaseException:
                    saver.conn.rollback()
                    raise
                finally:
                    cursor.close()
        from psycopg_pool import ConnectionPool

        if isinstance(saver.conn, ConnectionPool):
            with saver.conn.connection() as conn:
                return self._postgres(conn, statements)
        with saver.lock:  # the saver's own single connection
            return self._postgres(saver.conn, statements)

    @staticmethod
    def _postgres(conn: Any, statements: list[Statement]) -> tuple[int, list[tuple[Any, ...]]]:
        with conn.transaction(), conn.cursor() as cursor:
            for text, params in statements:
                cursor.execute(text, params)
            rows = cursor.fetchall() if cursor.description else []
            return cursor.rowcount, [_as_tuple(r) for r in rows]


class _AsyncStore:
    """Performs review steps with ``graph.ainvoke`` and an async (or sync) checkpointer."""

    def __init__(self, saver: BaseCheckpointSaver[Any], graph: Any = None) -> None:
        self.saver = saver
        self.graph = graph
        self.dialect, is_async = _dialect(saver)
        if graph is not None and not is_async and self.dialect != "memory":
            # ainvoke needs the saver's async methods, which sync SQL savers lack.
            raise ReviewError(
                f"{type(saver).__name__} is sync only: use resume(), or compile the graph "
                "with AsyncSqliteSaver / AsyncPostgresSaver for aresume()"
            )
        # Listing with a sync saver is fine: its calls simply do not await.
        self._sync = None if is_async else _SyncStore(saver, graph)

    async def perform(self, step: _Step) -> Any:
        return await adrive(_io(step, self.dialect, self.saver), self.operate)

    async def operate(self, op: _Io) -> Any:
        if isinstance(op, _State):
            return await self.graph.aget_state(op.config)
        if isinstance(op, _Resume):
            return await self.graph.ainvoke(op.command, op.config)
        if self._sync is not None:
            return self._sync.operate(op)
        if isinstance(op, _Tuple):
            return await self.saver.aget_tuple(op.config)
        try:
            return await self._query(op.statements)
        except Exception as exc:
            raise _refine(exc) from exc

    async def _query(self, statements: list[Statement]) -> tuple[int, list[tuple[Any, ...]]]:
        saver: Any = self.saver
        if self.dialect == "sqlite":
            await saver.setup()
            async with saver.lock, saver.conn.cursor() as cursor:
                try:
                    for text, params in statements:
                        await cursor.execute(text, params)
                    rows = await cursor.fetchall()
                    await saver.conn.commit()
                    return cursor.rowcount, [_as_tuple(r) for r in rows]
                except BaseException:
                    await saver.conn.rollback()
                    raise
        from psycopg_pool import AsyncConnectionPool

        if isinstance(saver.conn, AsyncConnectionPool):
            async with saver.conn.connection() as conn:
                return await self._postgres(conn, statements)
        async with saver.lock:
            return await self._postgres(saver.conn, statements)

    @staticmethod
    async def _postgres(
        conn: Any, statements: list[Statement]
    ) -> tuple[int, list[tuple[Any, ...]]]:
        async with conn.transaction(), conn.cursor() as cursor:
            for text, params in statements:
                await cursor.execute(text, params)
            rows = await cursor.fetchall() if cursor.description else []
            return cursor.rowcount, [_as_tuple(r) for r in rows]


def _graph_saver(graph: Any) -> BaseCheckpointSaver[Any]:
    saver = getattr(graph, "checkpointer", None)
    if not isinstance(saver, BaseCheckpointSaver):
        raise ReviewError(
            "the graph has no checkpointer: compile it with the checkpointer the paused "
            "runs were saved in (graph.compile(checkpointer=...) or create_agent(..., "
            "checkpointer=...))"
        )
    return saver


def pending(
    checkpointer: BaseCheckpointSaver[Any],
    *,
    thread_id: str | None = None,
    content: bool = False,
) -> list[PendingReview]:
    """Confession reviews pending on every thread of ``checkpointer`` (oldest first).

    Args:
        checkpointer: a ``SqliteSaver``, ``PostgresSaver`` or ``InMemorySaver``.
        thread_id: only this thread. Default ``None``: every thread.
        content: include the withheld answer (model-written text). Default ``False``.
    """
    store = _SyncStore(checkpointer)
    return drive(_pending_steps(thread_id, content), store.perform)


async def apending(
    checkpointer: BaseCheckpointSaver[Any],
    *,
    thread_id: str | None = None,
    content: bool = False,
) -> list[PendingReview]:
    """Async :func:`pending`; also takes ``AsyncSqliteSaver`` and ``AsyncPostgresSaver``."""
    store = _AsyncStore(checkpointer)
    return await adrive(_pending_steps(thread_id, content), store.perform)


def resume(
    graph: Any,
    thread_id: str,
    decision: Any,
    *,
    interrupt_id: str | None = None,
    reviewer: str | None = None,
) -> Resumed:
    """Apply a reviewer's ``decision`` to the run paused on ``thread_id``.

    Args:
        graph: the compiled graph that paused, with the checkpointer it paused in.
        thread_id: the paused thread.
        decision: a HITL response (``{"decisions": [{"type": "approve"}]}``), a bare
            decision (``{"type": "reject", "message": "..."}``, an ``edit`` with
            ``edited_action.args.answer``), ``"approve"`` / ``"reject"`` or a
            :class:`~confessional.control.ReviewDecision`.
        interrupt_id: the review being answered (from :func:`pending`). Default ``None``:
            the one the thread is paused on. Give it when you decided on what you saw,
            so a later pause is never answered by mistake.
        reviewer: recorded with the claim and on the trace. Default: the decision's own
            ``reviewer``, else ``user@host:pid``.

    Raises:
        InvalidDecisionError: the decision is malformed or not offered by this review.
        NotPausedError / ReviewMismatchError: the thread is not paused on this review.
        AlreadyResolvedError: another reviewer resolved it first.
    """
    store = _SyncStore(_graph_saver(graph), graph)
    steps = _resume_steps(thread_id, decision, interrupt_id, reviewer)
    return drive(steps, store.perform)


async def aresume(
    graph: Any,
    thread_id: str,
    decision: Any,
    *,
    interrupt_id: str | None = None,
    reviewer: str | None = None,
) -> Resumed:
    """Async :func:`resume` (``graph.ainvoke``; async or sync checkpointers)."""
    store = _AsyncStore(_graph_saver(graph), graph)
    steps = _resume_steps(thread_id, decision, interrupt_id, reviewer)
    return await adrive(steps, store.perform)
