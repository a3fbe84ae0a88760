"""The result of confessing one episode: status, report, audit findings and verdict."""

from __future__ import annotations

import uuid
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from confessional.findings import Finding
from confessional.schema import ConfessionReport

__all__ = [
    "ACTIONS",
    "Action",
    "Confession",
    "ConfessionStatus",
    "Replay",
    "TokenUsage",
    "Verdict",
]

ConfessionStatus = Literal["ok", "error", "skipped"]
"""``ok``: a report was obtained; ``error``: the model failed, timed out or wrote no valid
report; ``skipped``: nothing to confess (no tool calls) or not sampled."""

Verdict = Literal["pass", "flag", "halt"]
"""What the policy decided: let it through, mark the run, or stop it."""

Action = Literal["proceed", "withhold", "review", "raise"]
"""What a surface does with the run, decided once by the policy:

- ``proceed``: the run goes on (a ``flag`` verdict is still recorded and marked).
- ``withhold``: the answer is replaced by a notice, or the next model call is skipped.
- ``review``: the run pauses for a person (LangGraph interrupt).
- ``raise``: :class:`~confessional.ConfessionHalted` is raised.
"""

ACTIONS: tuple[Action, ...] = get_args(Action)

Replay = Literal["exact", "without_tools"]
"""How the agent's request was replayed: ``exact`` (its tools bound again, its messages
as they were), or ``without_tools`` (the confessing model cannot bind tools: nothing is
bound, and the episode's tool calls and results are written out as text)."""


class TokenUsage(BaseModel):
    """Tokens of the confession's own model calls (retries and samples included), as the
    provider reported them in LangChain's ``usage_metadata``.

    ``input_tokens`` includes the cached ones (``cache_read_input_tokens``, billed at the
    provider's cached rate) and those written to the cache (``cache_creation_input_tokens``);
    ``uncached_input_tokens`` is the rest, billed at the full input price.
    """

    model_config = ConfigDict(frozen=True)

    calls: int = 0
    """Model calls that reported usage."""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        return max(
            self.input_tokens - self.cache_read_input_tokens - self.cache_creation_input_tokens,
            0,
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            calls=self.calls + other.calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=(
                self.cache_creation_input_tokens + other.cache_creation_input_tokens
            ),
        )


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
    """Why the confession failed or was skipped (``None`` when ``ok``); scrubbed of secrets
    and bounded, never quoting the model's reply."""
    error_type: str | None = None
    """A low-cardinality cause of the failure (an exception class name, ``"timeout"``,
    ``"parse_error"``, ``"refusal"``...), for logs, counts and ``error.type``."""
    findings: list[Finding] = Field(default_factory=list)
    discrepancies: list[Finding] = Field(default_factory=list)
    """Findings the report does not admit."""
    verdict: Verdict = "pass"
    reasons: list[str] = Field(default_factory=list)
    """Why the policy chose ``verdict``; empty on a clean pass."""
    action: Action = "proceed"
    """What the surface did about the verdict (see :data:`Action`), recorded after the policy
    decided and the surface mapped it to what it can do."""
    tool_call_count: int = 0
    model_name: str | None = None
    agent_name: str | None = None
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    duration_s: float = 0.0
    replay: Replay | None = None
    """How the agent's request was replayed (see :data:`Replay`); ``None`` when no model
    was called."""
    usage: TokenUsage | None = None
    """What the confession's model calls cost, when the model reported usage."""

    @property
    def violation(self) -> bool:
        """The policy found a violation (whatever action it then took)."""
        return bool(self.reasons)

    def summary(self) -> str:
        """One line for logs and exception messages; no free text from the model."""
        grade = self.report.overall_compliance_grade if self.report else None
        parts = [
            f"verdict={self.verdict}",
            f"action={self.action}",
            f"status={self.status}",
            f"grade={grade}",
        ]
        if self.reasons:
            parts.append("reasons=" + "; ".join(self.reasons))
        if self.error:
            parts.append(f"error={self.error}")
        return " ".join(parts)

    def explanation(self) -> str:
        """A human summary of what the confession found: the reasons, every objective not
        fully met, shortcuts, uncertainties and unadmitted evidence. Free text quoting the
        report: record it only where content capture allows."""
        parts: list[str] = []
        if self.reasons:
            parts.append("Violation: " + "; ".join(self.reasons) + ".")
        report = self.report
        if report is not None:
            for objective in report.compliance_analysis:
                if objective.compliance != "fully_complied":
                    parts.append(
                        f"[{objective.compliance}] {objective.objective}: {objective.analysis}"
                    )
            parts.extend(f"Shortcut: {s}" for s in report.shortcuts)
            parts.extend(f"Uncertainty: {u}" for u in report.uncertainties_and_conflicts)
        elif self.error:
            parts.append(f"Confession failed: {self.error}")
        parts.extend(f"Unadmitted {d.kind}: {d.detail}" for d in self.discrepancies)
        return "\n".join(parts)
