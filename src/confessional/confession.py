"""The result of confessing one episode: status, report, audit findings and verdict."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from confessional.audit import Finding
from confessional.schema import ConfessionReport

__all__ = ["Confession", "ConfessionStatus", "Verdict"]

ConfessionStatus = Literal["ok", "error", "skipped"]
"""``ok``: a report was obtained; ``error``: the model failed, timed out or wrote no valid
report; ``skipped``: nothing to confess (no tool calls) or not sampled."""

Verdict = Literal["pass", "flag", "halt"]
"""What the policy decided: let it through, mark the run, or stop it."""


class Confession(BaseModel):
    """One episode's confession as it flows through the pipeline.

    The confessor fills ``status``/``report``/``error``; the auditor ``findings`` and
    ``discrepancies``; the policy ``verdict`` and ``reasons``. It is immutable and
    serialisable, so it can live in graph state and survive a checkpoint.
    """

    model_config = ConfigDict(frozen=True)

    status: ConfessionStatus
    report: ConfessionReport | None = None
    error: str | None = None
    """Why the confession failed or was skipped (``None`` when ``ok``)."""
    findings: list[Finding] = Field(default_factory=list)
    discrepancies: list[Finding] = Field(default_factory=list)
    """Findings the report does not admit."""
    verdict: Verdict = "pass"
    reasons: list[str] = Field(default_factory=list)
    """Why the policy chose ``verdict``; empty on a clean pass."""
    tool_call_count: int = 0
    model_name: str | None = None
    agent_name: str | None = None
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    duration_s: float = 0.0

    @property
    def violation(self) -> bool:
        """The policy found a violation (whatever action it then took)."""
        return bool(self.reasons)

    def summary(self) -> str:
        """One line for logs and exception messages; no free text from the model."""
        grade = self.report.overall_compliance_grade if self.report else None
        parts = [f"verdict={self.verdict}", f"status={self.status}", f"grade={grade}"]
        if self.reasons:
            parts.append("reasons=" + "; ".join(self.reasons))
        if self.error:
            parts.append(f"error={self.error}")
        return " ".join(parts)
