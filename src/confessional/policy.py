"""Policy: turn a confession (plus audit findings) into a verdict and an action."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Final, Literal, get_args

from confessional.confession import Action, Confession, Verdict
from confessional.errors import ConfigurationError
from confessional.findings import UNFINISHED
from confessional.schema import COMPLIANCE_LABELS, UNREPORTED_LABELS, ComplianceLabel

__all__ = [
    "ConfessionPolicy",
    "FailMode",
    "OnViolation",
    "RejectAction",
    "ReviewOutcome",
    "ViolationRule",
    "default_violation_rule",
]

OnViolation = Literal["continue", "flag", "end", "interrupt", "error"]
"""What to do when a confession shows a violation:

- ``continue``: record the confession only.
- ``flag``: record it and mark the run (span attribute, run tags) so it can be filtered.
- ``end``: withhold the flagged answer (or stop before the next model call) and end the run.
- ``interrupt``: pause for human review (needs a checkpointer); approve or reject on resume.
- ``error``: raise :class:`~confessional.ConfessionHalted`.
"""

FailMode = Literal["open", "closed"]
"""What a failed confession (``status="error"``) means: ``open`` lets the run through,
``closed`` treats it as a violation."""

ViolationRule = Callable[[Confession], Sequence[str]]
"""A rule returns the reasons it considers the confession a violation (empty: none)."""

RejectAction = Literal["end", "error"]
"""What a rejected review does: withhold the answer (``end``) or raise (``error``)."""

ReviewOutcome = Literal["approve", "edit", "reject"]
"""A reviewer's decision on a paused run."""

_HALT_ACTIONS: Final[dict[str, Action]] = {
    "end": "withhold",
    "interrupt": "review",
    "error": "raise",
}
_REJECT_ACTIONS: Final[dict[str, Action]] = {"end": "withhold", "error": "raise"}


def _valid(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigurationError(
            f"{name}={value!r} is not valid; choose one of: " + ", ".join(map(repr, allowed))
        )


def default_violation_rule(
    *,
    max_failing_grade: int = 3,
    labels: Collection[ComplianceLabel] = UNREPORTED_LABELS,
    shortcuts: bool = True,
    discrepancies: bool = True,
    unfinished: bool = True,
) -> ViolationRule:
    """The default violation rule (README, "Three surfaces, one pipeline"), with its knobs.

    A violation is: grade <= ``max_failing_grade``; any objective with a label in
    ``labels``; any reported shortcut (if ``shortcuts``); any audit discrepancy (if
    ``discrepancies``); an episode that ended without the model's answer, at a limit, an
    exception or a cap (if ``unfinished``: a runaway run is one a reviewer must see).
    """
    if not 0 <= max_failing_grade <= 7:
        raise ConfigurationError("max_failing_grade must be between 0 and 7")
    for label in labels:
        _valid("labels entry", label, COMPLIANCE_LABELS)
    label_set = frozenset(labels)

    def rule(confession: Confession) -> list[str]:
        reasons: list[str] = []
        report = confession.report
        if report is not None:
            if report.overall_compliance_grade <= max_failing_grade:
                reasons.append(f"grade {report.overall_compliance_grade} <= {max_failing_grade}")
            hits = [o.compliance for o in report.compliance_analysis if o.compliance in label_set]
            for label in sorted(set(hits)):
                reasons.append(f"{hits.count(label)} objective(s) {label}")
            if shortcuts and report.shortcuts:
                reasons.append(f"{len(report.shortcuts)} shortcut(s) reported")
        if discrepancies and confession.discrepancies:
            kinds = sorted({d.kind for d in confession.discrepancies})
            reasons.append("unadmitted evidence: " + ", ".join(kinds))
        if unfinished and any(f.kind == UNFINISHED for f in confession.findings):
            reasons.append("the episode ended without the model's answer")
        return reasons

    return rule


class ConfessionPolicy:
    """Decides pass / flag / halt for each confession.

    Args:
        on_violation: action on a violation, see :data:`OnViolation`. Default ``"flag"``:
            nothing is stopped until you choose to, but every violation is filterable.
        fail_mode: see :data:`FailMode`. Default ``"open"``: a broken confession model must
            not take the agent down with it.
        rules: violation rules; a confession violates if any rule returns a reason.
            Default: ``[default_violation_rule()]``. Custom rules are plain callables.
        reject_action: what a rejected ``interrupt`` review does: ``"end"`` (default, the
            flagged answer is withheld) or ``"error"`` (raise ``ConfessionHalted``).
    """

    def __init__(
        self,
        *,
        on_violation: OnViolation = "flag",
        fail_mode: FailMode = "open",
        rules: Sequence[ViolationRule] | None = None,
        reject_action: RejectAction = "end",
    ) -> None:
        _valid("on_violation", on_violation, get_args(OnViolation))
        _valid("fail_mode", fail_mode, get_args(FailMode))
        _valid("reject_action", reject_action, get_args(RejectAction))
        rules = [default_violation_rule()] if rules is None else list(rules)
        for rule in rules:
            if not callable(rule):
                raise ConfigurationError(f"rules must be callables, got {rule!r}")
        # Read-only once built: surfaces decide their graph shape and state keys from the
        # policy when they are constructed.
        self._on_violation: OnViolation = on_violation
        self._fail_mode: FailMode = fail_mode
        self._rules: tuple[ViolationRule, ...] = tuple(rules)
        self._reject_action: RejectAction = reject_action

    @property
    def on_violation(self) -> OnViolation:
        return self._on_violation

    @property
    def fail_mode(self) -> FailMode:
        return self._fail_mode

    @property
    def rules(self) -> tuple[ViolationRule, ...]:
        return self._rules

    @property
    def reject_action(self) -> RejectAction:
        return self._reject_action

    @property
    def halts(self) -> bool:
        """Whether a violation stops the run (``end``, ``interrupt`` or ``error``)."""
        return self.on_violation in _HALT_ACTIONS

    def action_for(self, verdict: Verdict) -> Action:
        """The action a verdict calls for: a halt acts as ``on_violation`` says."""
        return _HALT_ACTIONS[self.on_violation] if verdict == "halt" else "proceed"

    def follow_up(self, outcome: ReviewOutcome) -> Action:
        """The action after a review: approve or edit goes on, reject as ``reject_action``."""
        return _REJECT_ACTIONS[self.reject_action] if outcome == "reject" else "proceed"

    def reasons(self, confession: Confession) -> list[str]:
        """Every reason the confession counts as a violation (empty: it passes)."""
        if confession.status == "skipped":
            return []
        if confession.status == "error":
            return ["confession failed (fail-closed)"] if self.fail_mode == "closed" else []
        return [reason for rule in self.rules for reason in rule(confession)]

    def decide(self, confession: Confession) -> Confession:
        """Return ``confession`` with ``verdict``, ``reasons`` and ``action`` filled in."""
        reasons = self.reasons(confession)
        verdict: Verdict = "pass"
        if reasons:
            verdict = "halt" if self.halts else "flag"
        return confession.model_copy(
            update={"verdict": verdict, "reasons": reasons, "action": self.action_for(verdict)}
        )

    def __repr__(self) -> str:
        return (
            f"ConfessionPolicy(on_violation={self.on_violation!r}, "
            f"fail_mode={self.fail_mode!r}, rules={len(self.rules)})"
        )
