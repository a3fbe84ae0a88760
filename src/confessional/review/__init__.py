"""Review runs paused on a confession: the protocol, the inbox, claims and drivers.

A run with ``on_violation="interrupt"`` pauses on a LangGraph interrupt whose value is a
LangChain ``HITLRequest`` (:class:`ConfessionReviewRequest`, built by
:func:`review_payload`). This package finds those pauses in a checkpointer and applies a
reviewer's decision, exactly once:

- :mod:`.protocol`: the request and the decisions, typed on LangChain's HITL TypedDicts;
- :mod:`.inbox`: :func:`pending` and :func:`resume` (and their async forms), with the
  safety rules;
- :mod:`.claims`: where claims live (SQL in the checkpointer's database, or process
  memory), behind one small protocol; claims expire after ``claim_ttl_s``;
- :mod:`.drivers`: the sync and async drivers that perform the steps;
- :mod:`.web`: ``confessional review serve``, the reviewers' web page (``review-web`` extra).

Supported checkpointers: ``SqliteSaver``, ``AsyncSqliteSaver``, ``PostgresSaver``,
``AsyncPostgresSaver`` (the ``postgres`` extra) and ``InMemorySaver`` (claims then hold
within one process only).

The package sits below the pipeline and the surfaces: it imports neither.
"""

from confessional.review.claims import CLAIMS_TABLE, DEFAULT_CLAIM_TTL_S, Claim, ClaimStore
from confessional.review.errors import (
    AlreadyResolvedError,
    InvalidDecisionError,
    NotPausedError,
    ReviewError,
    ReviewMismatchError,
)
from confessional.review.inbox import (
    PendingReview,
    Resumed,
    ahistory,
    apending,
    aresume,
    history,
    pending,
    resume,
)
from confessional.review.protocol import (
    CONTINUE_RUN,
    DECISION_TYPES,
    DELIVER_ANSWER,
    REVIEW_TYPE,
    ConfessionDecision,
    ConfessionReviewRequest,
    ConfessionReviewResponse,
    DecisionContext,
    DecisionType,
    ReviewDecision,
    allowed_decisions,
    check_allowed,
    review_description,
    review_payload,
)

__all__ = [
    "CLAIMS_TABLE",
    "CONTINUE_RUN",
    "DECISION_TYPES",
    "DEFAULT_CLAIM_TTL_S",
    "DELIVER_ANSWER",
    "REVIEW_TYPE",
    "AlreadyResolvedError",
    "Claim",
    "ClaimStore",
    "ConfessionDecision",
    "ConfessionReviewRequest",
    "ConfessionReviewResponse",
    "DecisionContext",
    "DecisionType",
    "InvalidDecisionError",
    "NotPausedError",
    "PendingReview",
    "Resumed",
    "ReviewDecision",
    "ReviewError",
    "ReviewMismatchError",
    "ahistory",
    "allowed_decisions",
    "apending",
    "aresume",
    "check_allowed",
    "history",
    "pending",
    "resume",
    "review_description",
    "review_payload",
]
