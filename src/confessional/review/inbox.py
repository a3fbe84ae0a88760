"""The inbox: list the reviews pending in a checkpointer, and resume one safely.

- :func:`pending` / :func:`apending` list the reviews pending on every thread (thread id,
  checkpoint id, time, grade, reasons; the withheld answer only with ``content=True``).
- :func:`resume` / :func:`aresume` apply a decision to one thread, through the graph
  that paused (compiled with the same checkpointer).
- :func:`history` / :func:`ahistory` list the decisions taken on a thread.

Safety, for many workers and reviewers sharing one checkpointer:

- A decision only resumes a thread whose latest checkpoint is paused on a confession
  review (and on the interrupt id given, when one is). Anything else raises
  :class:`NotPausedError` or :class:`ReviewMismatchError` before anything is written.
- Each review is applied at most once. Before resuming, the reviewer claims the review
  (see :mod:`confessional.review.claims`). The loser of a race gets
  :class:`AlreadyResolvedError`. A resume that fails gives its claim back, so the review
  can be answered again.
- A claim never applied expires after ``claim_ttl_s`` (default
  :data:`~confessional.review.claims.DEFAULT_CLAIM_TTL_S`): the next reviewer takes it
  over, which is logged and kept on the claim (``took_over``), and the first claimer's
  late apply is refused with :class:`AlreadyResolvedError`.
- The decision applied names its reviewer, its time and the confession span under review
  (the payload's ``traceparent``), so the resumed run records it on the confession's trace
  as a ``confession.review.decision`` span, whichever process resumes it.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.types import Command, Interrupt, StateSnapshot
from pydantic import ValidationError

from confessional.confession import Confession
from confessional.errors import ConfigurationError
from confessional.review._io import Resume, State, Steps, thread_config
from confessional.review.claims import (
    DEFAULT_CLAIM_TTL_S,
    INTERRUPT_CHANNEL,
    Claim,
    ClaimStore,
)
from confessional.review.drivers import AsyncDriver, SyncDriver, graph_saver
from confessional.review.errors import (
    AlreadyResolvedError,
    NotPausedError,
    ReviewMismatchError,
)
from confessional.review.protocol import (
    ReviewDecision,
    allowed_decisions,
    check_allowed,
    is_review,
)

__all__ = [
    "PendingReview",
    "Resumed",
    "ahistory",
    "apending",
    "aresume",
    "history",
    "pending",
    "resume",
]

logger = logging.getLogger("confessional.review")

_RESUME_CHANNEL = "__resume__"  # where LangGraph keeps the resume values a task has taken


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
    confession: Confession | None = field(default=None, repr=False, compare=False)
    """The whole confession (report, findings): only with ``content=True``, as it quotes
    the model's words."""

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
    took_over: str | None = None
    """The expired claim this decision took over (``"DECISION by REVIEWER at TIME"``)."""

    @property
    def paused_again(self) -> bool:
        """The resumed run paused on another interrupt (``tool_round`` pauses per round)."""
        return bool(self.values.get("__interrupt__"))


# -- reading the checkpoint ---------------------------------------------------------------


def _confession(value: Any) -> Confession | None:
    try:
        return Confession.model_validate(value)
    except ValidationError:  # a payload written by another version
        return None


def _entry(
    thread_id: str, checkpoint_id: str, paused_at: str, found: Interrupt, content: bool
) -> PendingReview:
    payload: Mapping[str, Any] = found.value
    [request, *_] = payload.get("action_requests") or [{}]
    confession = payload.get("confession") or {}
    report = confession.get("report") or {}
    answer = payload.get("withheld_answer")
    parsed = _confession(confession) if content else None
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
        details=(parsed.explanation() or None) if parsed is not None else None,
        confession=parsed,
    )


def _reviews_at(checkpoint: CheckpointTuple, content: bool) -> list[PendingReview]:
    thread_id = str(checkpoint.config["configurable"]["thread_id"])
    checkpoint_id = str(checkpoint.config["configurable"]["checkpoint_id"])
    paused_at = str(checkpoint.checkpoint.get("ts", ""))
    return [
        _entry(thread_id, checkpoint_id, paused_at, found, content)
        for _task, channel, value in checkpoint.pending_writes or ()
        if channel == INTERRUPT_CHANNEL
        for found in (value if isinstance(value, Sequence) else ())
        if isinstance(found, Interrupt) and is_review(found.value)
    ]


def _decision_taken(checkpoint: CheckpointTuple, interrupt_id: str) -> bool:
    """Whether the task paused on ``interrupt_id`` has recorded a resume value."""
    writes = checkpoint.pending_writes or ()
    tasks = {
        task
        for task, channel, value in writes
        if channel == INTERRUPT_CHANNEL
        and any(getattr(i, "id", None) == interrupt_id for i in value)
    }
    return any(task in tasks and channel == _RESUME_CHANNEL for task, channel, _ in writes)


def _paused_reviews(snapshot: StateSnapshot) -> list[Interrupt]:
    return [i for i in snapshot.interrupts if is_review(i.value)]


def _reviewer(reviewer: str | None) -> str:
    if reviewer:
        return reviewer
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


def _resolved(
    thread_id: str, interrupt_id: str, claim: Claim | None, *, late: Claim | None = None
) -> AlreadyResolvedError:
    if claim is None:
        return AlreadyResolvedError(
            f"the confession review {interrupt_id} on thread {thread_id!r} was already "
            "resolved (the thread is no longer paused on it)"
        )
    progress = "; the decision is still being applied" if claim.status == "claimed" else ""
    expired = (
        f"; your claim of {late.claimed_at} expired and was taken over" if late is not None else ""
    )
    return AlreadyResolvedError(
        f"the confession review {interrupt_id} on thread {thread_id!r} was already resolved "
        f"by another reviewer: {claim.describe()}{progress}{expired}",
        reviewer=claim.reviewer,
        decided_at=claim.claimed_at,
    )


# -- the steps: one sequence for sync and async, performed by a driver ---------------------


def _pending_steps(
    store: ClaimStore, thread_id: str | None, content: bool
) -> Steps[list[PendingReview]]:
    latest = yield from store.latest(thread_id)
    reviews = [review for checkpoint in latest for review in _reviews_at(checkpoint, content)]
    return sorted(reviews, key=lambda r: (r.paused_at, r.thread_id))


def _claim_steps(store: ClaimStore, mine: Claim, ttl_s: float, now: datetime) -> Steps[Claim]:
    """Claim the review, or take over an expired claim; the claim we hold."""
    if (yield from store.claim(mine)):
        return mine
    held = yield from store.claim_of(mine.thread_id, mine.interrupt_id)
    if held is not None and held.expired(ttl_s, now):
        mine = replace(mine, took_over=held.describe())
        if (yield from store.take_over(held, mine)):
            logger.warning(
                "confession review %s on thread %r: took over the expired claim (%s, older "
                "than %.0f s) for %s by %s",
                mine.interrupt_id,
                mine.thread_id,
                held.describe(),
                ttl_s,
                mine.decision,
                mine.reviewer,
            )
            return mine
        held = yield from store.claim_of(mine.thread_id, mine.interrupt_id)
    raise _resolved(mine.thread_id, mine.interrupt_id, held)


def _resume_steps(
    store: ClaimStore,
    thread_id: str,
    value: Any,
    interrupt_id: str | None,
    reviewer: str | None,
    claim_ttl_s: float,
) -> Steps[Resumed]:
    decision = ReviewDecision.parse(value)
    reviewer = _reviewer(reviewer or decision.reviewer)
    snapshot: StateSnapshot = yield State(thread_config(thread_id))
    paused = _paused_reviews(snapshot)
    target = interrupt_id if interrupt_id is not None else (paused[0].id if paused else None)
    found = next((i for i in paused if i.id == target), None)
    if found is None or target is None:
        claim = (yield from store.claim_of(thread_id, target)) if target is not None else None
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
    now = datetime.now(timezone.utc)
    stamp = now.isoformat(timespec="seconds")
    traceparent = found.value.get("traceparent")
    # What the resumed run records on the trace, in whatever process runs it.
    decision = decision.model_copy(
        update={
            "reviewer": reviewer,
            "decided_at": stamp,
            "traceparent": traceparent if isinstance(traceparent, str) else decision.traceparent,
        }
    )
    mine = Claim(
        thread_id=thread_id,
        interrupt_id=found.id,
        checkpoint_id=checkpoint_id,
        decision=decision.action,
        reviewer=reviewer,
        claimed_at=stamp,
        token=uuid.uuid4().hex,
    )
    mine = yield from _claim_steps(store, mine, claim_ttl_s, now)
    # The claim is ours; the thread may still have been resumed outside this module.
    current: StateSnapshot = yield State(thread_config(thread_id))
    if found.id not in {i.id for i in _paused_reviews(current)}:
        yield from store.settle(mine, "release")
        raise _resolved(thread_id, found.id, (yield from store.claim_of(thread_id, found.id)))
    # A reviewer stalled past the claim's expiry may have been taken over: refuse to apply.
    held = yield from store.claim_of(thread_id, found.id)
    if held is None or held.token != mine.token:
        raise _resolved(thread_id, found.id, held, late=mine)
    try:
        command: Command[Any] = Command(resume={found.id: decision.as_resume()})
        values = yield Resume(command, thread_config(thread_id))
    except BaseException:
        # If the paused task took the decision before the run failed (a rejection that
        # raises, a later node's error), LangGraph replays it on every resume: the review
        # is resolved. Otherwise give the claim back so the review can be answered again.
        latest = yield from store.latest(thread_id)
        taken = any(_decision_taken(checkpoint, found.id) for checkpoint in latest)
        yield from store.settle(mine, "applied" if taken else "release")
        raise
    yield from store.settle(mine, "applied")
    return Resumed(thread_id, found.id, decision, dict(values or {}), took_over=mine.took_over)


# -- the public functions -------------------------------------------------------------------


def _check_ttl(claim_ttl_s: float) -> float:
    if (
        isinstance(claim_ttl_s, bool)
        or not isinstance(claim_ttl_s, int | float)
        or not 0 <= claim_ttl_s < 10**9
    ):
        raise ConfigurationError(
            f"claim_ttl_s must be a number of seconds, at least 0, got {claim_ttl_s!r}"
        )
    return float(claim_ttl_s)


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
        content: include the withheld answer and the confession (model-written text).
            Default ``False``.
    """
    driver = SyncDriver(checkpointer)
    return driver.run(_pending_steps(driver.store, thread_id, content))


async def apending(
    checkpointer: BaseCheckpointSaver[Any],
    *,
    thread_id: str | None = None,
    content: bool = False,
) -> list[PendingReview]:
    """Async :func:`pending`; also takes ``AsyncSqliteSaver`` and ``AsyncPostgresSaver``."""
    driver = AsyncDriver(checkpointer)
    return await driver.run(_pending_steps(driver.store, thread_id, content))


def history(checkpointer: BaseCheckpointSaver[Any], thread_id: str) -> list[Claim]:
    """The decisions claimed on ``thread_id``'s reviews, oldest first (applied or not)."""
    driver = SyncDriver(checkpointer)
    return driver.run(driver.store.history(thread_id))


async def ahistory(checkpointer: BaseCheckpointSaver[Any], thread_id: str) -> list[Claim]:
    """Async :func:`history`."""
    driver = AsyncDriver(checkpointer)
    return await driver.run(driver.store.history(thread_id))


def resume(
    graph: Any,
    thread_id: str,
    decision: Any,
    *,
    interrupt_id: str | None = None,
    reviewer: str | None = None,
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
) -> Resumed:
    """Apply a reviewer's ``decision`` to the run paused on ``thread_id``.

    Args:
        graph: the compiled graph that paused, with the checkpointer it paused in.
        thread_id: the paused thread.
        decision: a HITL response (``{"decisions": [{"type": "approve"}]}``), a bare
            decision (``{"type": "reject", "message": "..."}``, an ``edit`` with
            ``edited_action.args.answer``), ``"approve"`` / ``"reject"`` or a
            :class:`~confessional.review.ReviewDecision`.
        interrupt_id: the review being answered (from :func:`pending`). Default ``None``:
            the one the thread is paused on. Give it when you decided on what you saw,
            so a later pause is never answered by mistake.
        reviewer: recorded with the claim and on the trace. Default: the decision's own
            ``reviewer``, else ``user@host:pid``.
        claim_ttl_s: how long another reviewer's claim that was never applied holds
            before this decision takes it over. Default 300 s
            (:data:`~confessional.review.claims.DEFAULT_CLAIM_TTL_S`).

    Raises:
        InvalidDecisionError: the decision is malformed or not offered by this review.
        NotPausedError / ReviewMismatchError: the thread is not paused on this review.
        AlreadyResolvedError: another reviewer resolved it first, or took over this
            reviewer's expired claim.
    """
    driver = SyncDriver(graph_saver(graph), graph)
    steps = _resume_steps(
        driver.store, thread_id, decision, interrupt_id, reviewer, _check_ttl(claim_ttl_s)
    )
    return driver.run(steps)


async def aresume(
    graph: Any,
    thread_id: str,
    decision: Any,
    *,
    interrupt_id: str | None = None,
    reviewer: str | None = None,
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
) -> Resumed:
    """Async :func:`resume` (``graph.ainvoke``; async or sync checkpointers)."""
    driver = AsyncDriver(graph_saver(graph), graph)
    steps = _resume_steps(
        driver.store, thread_id, decision, interrupt_id, reviewer, _check_ttl(claim_ttl_s)
    )
    return await driver.run(steps)
