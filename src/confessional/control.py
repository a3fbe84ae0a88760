"""Compatibility path: the review protocol moved to :mod:`confessional.review`, and the
surfaces' control flow to a private module. Import from :mod:`confessional.review`."""

from __future__ import annotations

from confessional._control import (
    NoticeReason,
    Resolution,
    aconfess_durably,
    as_confession,
    ask_review,
    confess_durably,
    is_notice,
    node_config,
    resolve,
    withheld_notice,
)
from confessional.review.protocol import (
    CONTINUE_RUN,
    DECISION_TYPES,
    DELIVER_ANSWER,
    REVIEW_TYPE,
    DecisionType,
    InvalidDecisionError,
    ReviewDecision,
    allowed_decisions,
    check_allowed,
    review_description,
    review_payload,
)

__all__ = [
    "CONTINUE_RUN",
    "DECISION_TYPES",
    "DELIVER_ANSWER",
    "REVIEW_TYPE",
    "DecisionType",
    "InvalidDecisionError",
    "NoticeReason",
    "Resolution",
    "ReviewDecision",
    "aconfess_durably",
    "allowed_decisions",
    "as_confession",
    "ask_review",
    "check_allowed",
    "confess_durably",
    "is_notice",
    "node_config",
    "resolve",
    "review_description",
    "review_payload",
    "withheld_notice",
]
