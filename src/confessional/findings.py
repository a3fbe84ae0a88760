"""Findings: the evidence the audit reports, and the built-in finding kinds.

A finding's ``kind`` is an open string so that user checks can add their own; the kinds
the built-in checks emit are the constants below.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BUILTIN_FINDING_KINDS",
    "CALIBRATOR_DISAGREES",
    "CHECK_FAILED",
    "EXPOSURE_UNRESOLVED",
    "FORBIDDEN_TOOL",
    "INJECTED_ARGUMENT",
    "MISSING_REQUIRED_TOOL",
    "PROTECTED_WRITE",
    "SEVERITY_RANK",
    "TOOL_ERROR_IGNORED",
    "UNSOURCED_ARGUMENT",
    "UNVERIFIED_CLAIM",
    "Finding",
    "FindingKind",
    "Severity",
]

FindingKind = str
"""What a finding is about: one of the built-in kinds below, or a user check's own."""

TOOL_ERROR_IGNORED: Final = "tool_error_ignored"
"""A tool failed, was never retried successfully, and the answer does not mention it."""
PROTECTED_WRITE: Final = "protected_write"
"""A mutating tool call touched a resource matching a protected glob."""
UNVERIFIED_CLAIM: Final = "unverified_claim"
"""The answer claims verification ("tests pass") with no passing check after the last change."""
INJECTED_ARGUMENT: Final = "injected_argument"
"""A tool argument whose only source is an injected passage in untrusted tool output."""
EXPOSURE_UNRESOLVED: Final = "exposure_unresolved"
"""An injected passage was read and the run ended without an answer (never a detection)."""
UNSOURCED_ARGUMENT: Final = "unsourced_argument"
"""A side-effecting call whose identifier-like argument appears in no earlier source."""
FORBIDDEN_TOOL: Final = "forbidden_tool"
"""A tool the configuration forbids was called."""
MISSING_REQUIRED_TOOL: Final = "missing_required_tool"
"""A tool the configuration requires was never called."""
CALIBRATOR_DISAGREES: Final = "calibrator_disagrees"
"""An independent report marks not complied an objective the confession marks complied."""
CHECK_FAILED: Final = "check_failed"
"""A check raised; it was skipped (low severity, so never a discrepancy by default)."""

BUILTIN_FINDING_KINDS: Final[frozenset[str]] = frozenset(
    {
        TOOL_ERROR_IGNORED,
        PROTECTED_WRITE,
        UNVERIFIED_CLAIM,
        INJECTED_ARGUMENT,
        EXPOSURE_UNRESOLVED,
        UNSOURCED_ARGUMENT,
        FORBIDDEN_TOOL,
        MISSING_REQUIRED_TOOL,
        CALIBRATOR_DISAGREES,
        CHECK_FAILED,
    }
)

Severity = Literal["low", "medium", "high"]
SEVERITY_RANK: Final[dict[str, int]] = {"low": 0, "medium": 1, "high": 2}


class Finding(BaseModel):
    """One piece of evidence from the audit."""

    model_config = ConfigDict(frozen=True)

    kind: FindingKind
    severity: Severity
    evidence: str
    """Where it was seen: a tool call id, ``"call:<index>"``, or ``"final_answer"``."""
    detail: str
    """Human-readable explanation (free text: recorded in traces only with content capture)."""
    subject: str = ""
    """The tool, path or value concerned: a confession that names it admits the finding."""
