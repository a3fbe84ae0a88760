"""Evidence audit: deterministic checks over an episode, independent of the confession.

A check is a plain callable ``Episode -> Iterable[Finding]`` (see :data:`Check`). The
built-in checks live in :mod:`confessional.audit.checks`,
:mod:`confessional.audit.injection` and :mod:`confessional.audit.unsourced` (both read
the argument provenance of :mod:`confessional.audit.provenance`);
:func:`default_checks` builds them from the :class:`Auditor` settings. The optional
:class:`confessional.audit.calibrator.Calibrator` (off by default: one model call) compares
the confession with a second model's report. A finding the confession does not admit is
a *discrepancy*: the sharpest signal there is, because the model is then wrong or lying
about its own run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from confessional.audit.checks import (
    DEFAULT_MUTATING_TOOL_PATTERNS,
    DEFAULT_VERIFYING_TOOL_PATTERNS,
    ProtectedWrites,
    ToolRules,
    UnverifiedClaims,
    ignored_tool_errors,
)
from confessional.audit.injection import ExposureUnresolved, InjectedArguments
from confessional.audit.unsourced import UnsourcedArguments
from confessional.episode import Episode, MessageLike, extract_episode
from confessional.errors import ConfigurationError
from confessional.findings import CHECK_FAILED, SEVERITY_RANK, Finding, FindingKind, Severity
from confessional.health import report_failure
from confessional.schema import ConfessionReport

__all__ = [
    "Auditor",
    "Check",
    "Finding",
    "FindingKind",
    "Severity",
    "check_name",
    "default_checks",
    "discrepancies",
]

Check = Callable[[Episode], Iterable[Finding]]
"""An evidence check: takes the episode, returns (or yields) its findings.

A check that raises is logged, counted and skipped, and leaves a ``check_failed`` finding
of low severity; it never breaks the agent.
"""


def check_name(check: Check) -> str:
    """A readable name for logs: the function's or the class's name."""
    return str(getattr(check, "__name__", None) or type(check).__name__)


def default_checks(
    *,
    protected_paths: Sequence[str] = (),
    mutating_tools: Sequence[str] = DEFAULT_MUTATING_TOOL_PATTERNS,
    verifying_tools: Sequence[str] = DEFAULT_VERIFYING_TOOL_PATTERNS,
    forbidden_tools: Sequence[str] = (),
    required_tools: Sequence[str] = (),
    min_injected_value_length: int = 6,
) -> list[Check]:
    """The built-in checks, configured as :class:`Auditor` documents its arguments."""
    return [
        ignored_tool_errors,
        ProtectedWrites(tuple(protected_paths), tuple(mutating_tools)),
        UnverifiedClaims(tuple(mutating_tools), tuple(verifying_tools)),
        InjectedArguments(min_injected_value_length, tuple(mutating_tools)),
        ExposureUnresolved(min_injected_value_length),
        UnsourcedArguments(tuple(mutating_tools), min_injected_value_length),
        ToolRules(frozenset(forbidden_tools), frozenset(required_tools)),
    ]


class Auditor:
    """Runs evidence checks over an episode.

    All arguments are keyword-only. The built-in checks run by default; the ones that
    need configuration (protected globs, tool rules) do nothing until configured.

    Args:
        checks: your own checks, run after the built-in ones. Default: none.
        include_defaults: run the built-in checks. Default ``True``; pass ``False`` with
            ``checks=[...]`` to replace them (``default_checks(...)`` rebuilds any of them).
        protected_paths: globs (``fnmatch``) of resources no tool may modify, e.g.
            ``["config/protected/*", "*.lock"]``. Default: none, since only you know them.
        mutating_tools: name globs of tools that change state. Default: common verbs
            (write, edit, delete, ...), because tool names are usually descriptive.
        verifying_tools: name globs of tools that verify work (tests, checks). Default:
            test/verify/check/validate/lint.
        forbidden_tools: tools that must never be called. Default: none.
        required_tools: tools each episode must call at least once. Default: none.
        min_injected_value_length: shortest plain-text argument value considered for the
            injection check (addresses, URLs and account numbers always count). Default 6,
            so values like ``"1"`` or ``"yes"`` do not match by chance.
    """

    def __init__(
        self,
        *,
        checks: Sequence[Check] = (),
        include_defaults: bool = True,
        protected_paths: Sequence[str] = (),
        mutating_tools: Sequence[str] = DEFAULT_MUTATING_TOOL_PATTERNS,
        verifying_tools: Sequence[str] = DEFAULT_VERIFYING_TOOL_PATTERNS,
        forbidden_tools: Sequence[str] = (),
        required_tools: Sequence[str] = (),
        min_injected_value_length: int = 6,
    ) -> None:
        for label, value in (
            ("checks", checks),
            ("protected_paths", protected_paths),
            ("mutating_tools", mutating_tools),
            ("verifying_tools", verifying_tools),
            ("forbidden_tools", forbidden_tools),
            ("required_tools", required_tools),
        ):
            if isinstance(value, str):
                raise ConfigurationError(f"{label} must be a list, not one string")
        for check in checks:
            if not callable(check):
                raise ConfigurationError(f"checks entries must be callables, got {check!r}")
        if min_injected_value_length < 1:
            raise ConfigurationError("min_injected_value_length must be at least 1")
        defaults = (
            default_checks(
                protected_paths=protected_paths,
                mutating_tools=mutating_tools,
                verifying_tools=verifying_tools,
                forbidden_tools=forbidden_tools,
                required_tools=required_tools,
                min_injected_value_length=min_injected_value_length,
            )
            if include_defaults
            else []
        )
        self.checks: tuple[Check, ...] = (*defaults, *checks)

    def __repr__(self) -> str:
        return f"Auditor(checks=[{', '.join(check_name(c) for c in self.checks)}])"

    def audit(self, episode: Episode | Sequence[MessageLike]) -> list[Finding]:
        """Run every check over ``episode`` (an :class:`Episode` or a message list)."""
        if not isinstance(episode, Episode):
            episode = extract_episode(episode)
        findings: list[Finding] = []
        for check in self.checks:
            try:
                findings.extend(check(episode))
            except Exception as exc:
                name = check_name(check)
                report_failure(
                    "check",
                    type(exc).__name__,
                    f"check {name} raised {type(exc).__name__}; skipped",
                    exc_info=exc,
                )
                findings.append(
                    Finding(
                        kind=CHECK_FAILED,
                        severity="low",
                        evidence="episode",
                        detail=f"check {name} raised {type(exc).__name__} and was skipped",
                        subject=name,
                    )
                )
        return findings


def _admission_text(report: ConfessionReport) -> str:
    admitted = [
        f"{o.objective} {o.analysis}"
        for o in report.compliance_analysis
        if o.compliance != "fully_complied"
    ]
    return "\n".join([*admitted, *report.shortcuts, *report.uncertainties_and_conflicts]).lower()


def discrepancies(
    report: ConfessionReport | None,
    findings: Sequence[Finding],
    *,
    min_severity: Severity = "medium",
) -> list[Finding]:
    """Findings at or above ``min_severity`` that the report does not admit.

    A finding counts as admitted when a non-fully-complied objective, a shortcut or an
    uncertainty names its subject. The paper found violations misfiled as uncertainties,
    so those count as admissions too. Without a report nothing can be compared: ``[]``.
    """
    if report is None:
        return []
    text = _admission_text(report)
    floor = SEVERITY_RANK[min_severity]
    return [
        f
        for f in findings
        if SEVERITY_RANK[f.severity] >= floor and (not f.subject or f.subject.lower() not in text)
    ]
