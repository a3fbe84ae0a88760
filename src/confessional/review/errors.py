"""What the review package raises: one branch of confessional's exception hierarchy."""

from __future__ import annotations

from confessional.errors import ConfessionalError

__all__ = [
    "AlreadyResolvedError",
    "InvalidDecisionError",
    "NotPausedError",
    "ReviewError",
    "ReviewMismatchError",
]


class InvalidDecisionError(ConfessionalError, ValueError):
    """A review decision is malformed or not allowed for the paused review."""


class ReviewError(ConfessionalError):
    """A review could not be listed or applied; nothing was changed."""


class NotPausedError(ReviewError):
    """The thread is not paused on a confession review."""


class ReviewMismatchError(ReviewError):
    """The decision names an interrupt the thread is not paused on."""


class AlreadyResolvedError(ReviewError):
    """Another reviewer already resolved (or is resolving) this review.

    Attributes:
        reviewer: who holds the review, when known.
        decided_at: when they claimed it (ISO 8601), when known.
    """

    def __init__(
        self, message: str, *, reviewer: str | None = None, decided_at: str | None = None
    ) -> None:
        super().__init__(message)
        self.reviewer = reviewer
        self.decided_at = decided_at
