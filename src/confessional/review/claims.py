"""Where claims on reviews live, and where paused runs are found.

One small protocol, :class:`ClaimStore`, with two implementations:

- :class:`SqlClaims`: a ``confessional_review_claims`` table in the checkpointer's own
  SQLite or PostgreSQL database, so reviewers in many processes share it;
- :class:`MemoryClaims`: a dict per ``InMemorySaver``, within one process.

A claim is a compare-and-set: the first reviewer to insert it wins. A claim that was
never applied expires after ``claim_ttl_s`` and may then be taken over (again a
compare-and-set, on the claim's token), which is recorded on the new claim
(:attr:`Claim.took_over`). Every method is a sans-IO step (see :mod:`._io`), so one
store serves the sync and the async driver.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver

from confessional.review._io import Query, Statement, Steps, Tuple, immediate, thread_config
from confessional.review.errors import ReviewError

__all__ = [
    "CLAIMS_TABLE",
    "DEFAULT_CLAIM_TTL_S",
    "Claim",
    "ClaimStatus",
    "ClaimStore",
    "Dialect",
    "MemoryClaims",
    "SqlClaims",
    "claim_store",
]

CLAIMS_TABLE = "confessional_review_claims"
INTERRUPT_CHANNEL = "__interrupt__"  # where LangGraph keeps a task's interrupts

DEFAULT_CLAIM_TTL_S = 300.0
"""How long a claim that was never applied holds: 5 minutes. A resume normally takes a
second; a claim that old belongs to a reviewer that died between claiming and applying."""

ClaimStatus = Literal["claimed", "applied"]
Dialect = Literal["sqlite", "postgres", "memory"]
Outcome = Literal["applied", "release"]


@dataclass(frozen=True)
class Claim:
    """A reviewer's hold on one review (a row of the claims table)."""

    thread_id: str
    interrupt_id: str
    checkpoint_id: str
    decision: str
    reviewer: str
    claimed_at: str
    """ISO 8601, UTC: also the decision time recorded on the trace."""
    token: str
    """Unique to this claim: only its holder may apply or release it."""
    status: ClaimStatus = "claimed"
    took_over: str | None = None
    """The expired claim this one replaced, as ``"DECISION by REVIEWER at TIME"``."""

    def expired(self, ttl_s: float, now: datetime) -> bool:
        """Never applied and older than ``ttl_s``: its reviewer is presumed gone."""
        if self.status != "claimed":
            return False
        try:
            claimed = datetime.fromisoformat(self.claimed_at)
        except ValueError:  # written by something else: treat as old
            return True
        if claimed.tzinfo is None:
            claimed = claimed.replace(tzinfo=timezone.utc)
        return now - claimed >= timedelta(seconds=ttl_s)

    def describe(self) -> str:
        return f"{self.decision} by {self.reviewer} at {self.claimed_at}"


class ClaimStore(Protocol):
    """Claims on reviews, and the latest checkpoints with interrupts.

    Every method is a step: a generator of I/O operations returning its answer.
    """

    def latest(self, thread_id: str | None) -> Steps[list[CheckpointTuple]]:
        """The latest root checkpoint of ``thread_id``, or of every thread with interrupts."""
        ...

    def claim(self, claim: Claim) -> Steps[bool]:
        """Record ``claim`` unless the review is claimed already; whether it was ours."""
        ...

    def take_over(self, expired: Claim, claim: Claim) -> Steps[bool]:
        """Replace ``expired`` by ``claim`` unless it changed meanwhile; whether we won."""
        ...

    def claim_of(self, thread_id: str, interrupt_id: str) -> Steps[Claim | None]:
        """The claim on one review, if any."""
        ...

    def settle(self, claim: Claim, outcome: Outcome) -> Steps[None]:
        """Mark our claim applied, or give it back (``release``) after a failed resume."""
        ...

    def history(self, thread_id: str) -> Steps[list[Claim]]:
        """Every claim on the thread's reviews, oldest first."""
        ...


# -- SQL ------------------------------------------------------------------------------------

_COLUMNS = (
    "thread_id, interrupt_id, checkpoint_id, decision, reviewer, claimed_at, token, status, "
    "took_over"
)
_CREATE_CLAIMS = (
    f"CREATE TABLE IF NOT EXISTS {CLAIMS_TABLE} ("
    "thread_id TEXT NOT NULL, interrupt_id TEXT NOT NULL, checkpoint_id TEXT NOT NULL, "
    "decision TEXT NOT NULL, reviewer TEXT NOT NULL, status TEXT NOT NULL, "
    "claimed_at TEXT NOT NULL, token TEXT NOT NULL DEFAULT '', took_over TEXT, "
    "PRIMARY KEY (thread_id, interrupt_id))"
)
# Columns added after the table's first release, for tables created before them.
_ADDED_COLUMNS = {"token": "TEXT NOT NULL DEFAULT ''", "took_over": "TEXT"}
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
_KEY = "WHERE thread_id = %s AND interrupt_id = %s"


def _claim_of_row(row: tuple[Any, ...]) -> Claim:
    thread_id, interrupt_id, checkpoint_id, decision, reviewer, claimed_at, token, status, took = (
        row
    )
    return Claim(
        thread_id=str(thread_id),
        interrupt_id=str(interrupt_id),
        checkpoint_id=str(checkpoint_id),
        decision=str(decision),
        reviewer=str(reviewer),
        claimed_at=str(claimed_at),
        token=str(token or ""),
        status="applied" if status == "applied" else "claimed",
        took_over=None if took is None else str(took),
    )


class SqlClaims:
    """Claims in the checkpointer's SQLite or PostgreSQL database."""

    def __init__(self, dialect: Literal["sqlite", "postgres"]) -> None:
        self.dialect = dialect
        self._ensured = False

    def _sql(self, statements: Iterable[Statement]) -> list[Statement]:
        if self.dialect == "sqlite":
            return [(text.replace("%s", "?"), params) for text, params in statements]
        return list(statements)

    def _run(self, *statements: Statement) -> Steps[tuple[int, list[tuple[Any, ...]]]]:
        answer: tuple[int, list[tuple[Any, ...]]] = yield Query(self._sql(statements))
        return answer

    def _ensure(self) -> Steps[None]:
        """Create the claims table, or add the columns an older version lacked."""
        if self._ensured:
            return
        if self.dialect == "postgres":
            added = [
                (f"ALTER TABLE {CLAIMS_TABLE} ADD COLUMN IF NOT EXISTS {name} {kind}", ())
                for name, kind in _ADDED_COLUMNS.items()
            ]
            yield from self._run((_PG_DDL_LOCK, (CLAIMS_TABLE,)), (_CREATE_CLAIMS, ()), *added)
        else:
            _, rows = yield from self._run(
                (_CREATE_CLAIMS, ()),
                (f"SELECT name FROM pragma_table_info('{CLAIMS_TABLE}')", ()),
            )
            have = {str(name) for (name,) in rows}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in have:
                    yield from self._run((f"ALTER TABLE {CLAIMS_TABLE} ADD {name} {kind}", ()))
        self._ensured = True

    def latest(self, thread_id: str | None) -> Steps[list[CheckpointTuple]]:
        if thread_id is not None:
            found = yield Tuple(thread_config(thread_id))
            return [found] if found is not None else []
        writes = "checkpoint_writes" if self.dialect == "postgres" else "writes"
        _, rows = yield from self._run(
            (_LATEST_WITH_INTERRUPTS.format(writes=writes), (INTERRUPT_CHANNEL,))
        )
        tuples = []
        for thread, checkpoint in rows:
            found = yield Tuple(thread_config(str(thread), str(checkpoint)))
            if found is not None:
                tuples.append(found)
        return tuples

    def claim(self, claim: Claim) -> Steps[bool]:
        yield from self._ensure()
        count, _ = yield from self._run(
            (
                f"INSERT INTO {CLAIMS_TABLE} ({_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, 'claimed', %s) "
                "ON CONFLICT (thread_id, interrupt_id) DO NOTHING",
                (
                    claim.thread_id,
                    claim.interrupt_id,
                    claim.checkpoint_id,
                    claim.decision,
                    claim.reviewer,
                    claim.claimed_at,
                    claim.token,
                    claim.took_over,
                ),
            )
        )
        return count == 1

    def take_over(self, expired: Claim, claim: Claim) -> Steps[bool]:
        yield from self._ensure()
        count, _ = yield from self._run(
            (
                f"UPDATE {CLAIMS_TABLE} SET checkpoint_id = %s, decision = %s, reviewer = %s, "
                "claimed_at = %s, token = %s, took_over = %s, status = 'claimed' "
                f"{_KEY} AND token = %s AND status = 'claimed'",
                (
                    claim.checkpoint_id,
                    claim.decision,
                    claim.reviewer,
                    claim.claimed_at,
                    claim.token,
                    claim.took_over,
                    claim.thread_id,
                    claim.interrupt_id,
                    expired.token,
                ),
            )
        )
        return count == 1

    def claim_of(self, thread_id: str, interrupt_id: str) -> Steps[Claim | None]:
        yield from self._ensure()
        _, rows = yield from self._run(
            (f"SELECT {_COLUMNS} FROM {CLAIMS_TABLE} {_KEY}", (thread_id, interrupt_id))
        )
        return _claim_of_row(rows[0]) if rows else None

    def settle(self, claim: Claim, outcome: Outcome) -> Steps[None]:
        key = (claim.thread_id, claim.interrupt_id, claim.token)
        if outcome == "applied":
            text = f"UPDATE {CLAIMS_TABLE} SET status = 'applied' {_KEY} AND token = %s"
        else:
            text = f"DELETE FROM {CLAIMS_TABLE} {_KEY} AND token = %s AND status = 'claimed'"
        yield from self._run((text, key))

    def history(self, thread_id: str) -> Steps[list[Claim]]:
        yield from self._ensure()
        _, rows = yield from self._run(
            (
                f"SELECT {_COLUMNS} FROM {CLAIMS_TABLE} WHERE thread_id = %s "
                "ORDER BY claimed_at, interrupt_id",
                (thread_id,),
            )
        )
        return [_claim_of_row(row) for row in rows]


# -- process memory -----------------------------------------------------------------------

_MEMORY: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Claim]] = weakref.WeakKeyDictionary()
_MEMORY_LOCK = threading.Lock()


class MemoryClaims:
    """Claims of an ``InMemorySaver``: a dict per saver, in this process."""

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        self.saver = saver
        with _MEMORY_LOCK:
            self._claims = _MEMORY.setdefault(saver, {})

    def latest(self, thread_id: str | None) -> Steps[list[CheckpointTuple]]:
        seen: dict[str, CheckpointTuple] = {}
        for checkpoint in self.saver.list(thread_config(thread_id) if thread_id else None):
            configurable = checkpoint.config["configurable"]
            if configurable.get("checkpoint_ns", "") == "":
                seen.setdefault(str(configurable["thread_id"]), checkpoint)
        return immediate(list(seen.values()))

    def claim(self, claim: Claim) -> Steps[bool]:
        key = (claim.thread_id, claim.interrupt_id)
        with _MEMORY_LOCK:
            won = key not in self._claims
            if won:
                self._claims[key] = claim
        return immediate(won)

    def take_over(self, expired: Claim, claim: Claim) -> Steps[bool]:
        key = (claim.thread_id, claim.interrupt_id)
        with _MEMORY_LOCK:
            held = self._claims.get(key)
            won = held is not None and held.token == expired.token and held.status == "claimed"
            if won:
                self._claims[key] = claim
        return immediate(won)

    def claim_of(self, thread_id: str, interrupt_id: str) -> Steps[Claim | None]:
        with _MEMORY_LOCK:
            return immediate(self._claims.get((thread_id, interrupt_id)))

    def settle(self, claim: Claim, outcome: Outcome) -> Steps[None]:
        key = (claim.thread_id, claim.interrupt_id)
        with _MEMORY_LOCK:
            held = self._claims.get(key)
            if held is not None and held.token == claim.token:
                if outcome == "applied":
                    self._claims[key] = replace(held, status="applied")
                elif held.status == "claimed":
                    del self._claims[key]
        return immediate(None)

    def history(self, thread_id: str) -> Steps[list[Claim]]:
        with _MEMORY_LOCK:
            found = [c for (thread, _), c in self._claims.items() if thread == thread_id]
        return immediate(sorted(found, key=lambda c: (c.claimed_at, c.interrupt_id)))


def claim_store(saver: BaseCheckpointSaver[Any]) -> tuple[ClaimStore, Dialect, bool]:
    """The claim store for ``saver``, its dialect and whether the saver is async-only."""
    modules = [c.__module__ for c in type(saver).__mro__]
    dialects: tuple[Literal["sqlite", "postgres"], ...] = ("sqlite", "postgres")
    for dialect in dialects:
        matches = [m for m in modules if m.startswith(f"langgraph.checkpoint.{dialect}")]
        if matches:
            return SqlClaims(dialect), dialect, matches[0].endswith(".aio")
    if isinstance(saver, InMemorySaver):
        return MemoryClaims(saver), "memory", False
    raise ReviewError(
        f"confessional.review does not support {type(saver).__name__}; use SqliteSaver, "
        "AsyncSqliteSaver, PostgresSaver, AsyncPostgresSaver or InMemorySaver"
    )


def as_row(value: Any) -> tuple[Any, ...]:
    """A database row (a tuple, or a dict from a ``dict_row`` factory) as a tuple."""
    return tuple(value.values()) if isinstance(value, Mapping) else tuple(value)
