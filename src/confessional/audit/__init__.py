"""Evidence audit: checks over an episode and its confession, independent of the model.

A check receives one :class:`CheckContext` (the episode, and the confession report once
there is one) and returns its findings; it may be ``def`` or ``async def`` (see
:data:`Check`), like a guardrail function in the OpenAI Agents SDK. The built-in checks
live in :mod:`confessional.audit.checks`, :mod:`confessional.audit.injection` and
:mod:`confessional.audit.unsourced` (both read the argument provenance of
:mod:`confessional.audit.provenance`); :func:`default_checks` builds them from the
:class:`Auditor` settings. The :class:`confessional.audit.calibrator.Calibrator` is a check
like any other (off by default: one model call), configured as
``ConfessionOptions(calibrator=...)``. A finding the confession does not admit is a
*discrepancy*: the sharpest signal there is, because the model is then wrong or lying
about its own run.

Which argument a check gets (a documented, deterministic rule, decided once when the
:class:`Auditor` is built): a check whose first parameter is annotated ``Episode`` (the
class, or the string ``"Episode"`` under ``from __future__ import annotations``), or is
unannotated and named ``episode``, receives ``context.episode``. This keeps every check
written for the original ``Episode -> findings`` protocol working unchanged. Every other
check receives the :class:`CheckContext`.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from confessional._aio import adrive, drive, run_sync
from confessional._offload import OffloadUnavailable, call_off_process
from confessional.audit.checks import (
    DEFAULT_MUTATING_TOOL_PATTERNS,
    DEFAULT_VERIFYING_TOOL_PATTERNS,
    ProtectedWrites,
    ToolRules,
    UnverifiedClaims,
    ignored_tool_errors,
)
from confessional.audit.ending import unfinished_episode
from confessional.audit.injection import ExposureUnresolved, InjectedArguments
from confessional.audit.unsourced import UnsourcedArguments
from confessional.episode import LARGE_EPISODE_CHARS, Episode, MessageLike, extract_episode
from confessional.errors import ConfigurationError
from confessional.findings import (
    CHECK_FAILED,
    DISAGREEMENT_KINDS,
    SEVERITY_RANK,
    Finding,
    FindingKind,
    Severity,
)
from confessional.health import report_failure
from confessional.schema import ConfessionReport

__all__ = [
    "AsyncCapableCheck",
    "Auditor",
    "Check",
    "CheckContext",
    "Finding",
    "FindingKind",
    "Severity",
    "check_name",
    "default_checks",
    "discrepancies",
]


@dataclass(frozen=True)
class CheckContext:
    """What a check sees: its only input.

    Attributes:
        episode: the episode under audit.
        report: the confession's report, or ``None`` when there is none (the confession
            failed or was skipped, or ``confessional audit`` reads a logged run).
    """

    episode: Episode
    report: ConfessionReport | None = None


CheckResult = Iterable[Finding] | Awaitable[Iterable[Finding]]
"""What a check returns: its findings, or an awaitable of them (an ``async def`` check)."""

Check = Callable[[CheckContext], CheckResult] | Callable[[Episode], Iterable[Finding]]
"""An evidence check: takes a :class:`CheckContext` and returns (or yields) its findings,
or an awaitable of them. A check written for an ``Episode`` still works (see the rule in
the module docs).

Sync audits run an async check's awaitable to completion; async audits await it, so a
check's I/O never blocks the event loop. A check that does I/O bounds it itself (as the
calibrator's ``timeout_s`` does). A check that raises (a ``TimeoutError`` included) is
logged, counted and skipped, and leaves a ``check_failed`` finding of low severity; it
never breaks the agent.
"""


@runtime_checkable
class AsyncCapableCheck(Protocol):
    """A check with a blocking and a non-blocking form of the same work.

    Sync audits call the check itself; async audits await :meth:`acheck` instead. The
    calibrator is one: ``model.invoke`` on a worker thread, ``model.ainvoke`` on the
    event loop (running an async client on a private loop would break clients that cache
    their connections per loop).
    """

    def __call__(self, context: CheckContext) -> Iterable[Finding]: ...

    async def acheck(self, context: CheckContext) -> Iterable[Finding]: ...


def check_name(check: Check) -> str:
    """A readable name for logs: the function's or the class's name."""
    return str(getattr(check, "__name__", None) or type(check).__name__)


def _takes_episode(check: Check) -> bool:
    """The rule of the module docs: does ``check`` want the bare :class:`Episode`?"""
    try:
        signature = inspect.signature(check)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    first = next((p for p in signature.parameters.values() if p.kind in positional), None)
    if first is None:
        return False
    annotation = first.annotation
    if annotation is inspect.Parameter.empty:
        return first.name == "episode"
    if isinstance(annotation, str):  # postponed annotations are never evaluated here
        return annotation.strip().rsplit(".", 1)[-1] == Episode.__name__
    return isinstance(annotation, type) and issubclass(annotation, Episode)


@dataclass(frozen=True)
class _ResolvedCheck:
    """A check with its calling convention decided once, at construction."""

    check: Check
    takes_episode: bool
    blocking: bool
    """Whether an async audit runs it as plain CPU work (no ``acheck``). Decided here, as
    an isinstance test against a runtime-checkable protocol inspects the whole class."""

    @classmethod
    def of(cls, check: Check) -> _ResolvedCheck:
        return cls(check, _takes_episode(check), not isinstance(check, AsyncCapableCheck))

    @property
    def name(self) -> str:
        return check_name(self.check)

    def start(self, context: CheckContext, *, in_event_loop: bool) -> CheckResult:
        if in_event_loop and not self.blocking:
            return cast(AsyncCapableCheck, self.check).acheck(context)
        argument: Any = context.episode if self.takes_episode else context
        result: CheckResult = self.check(argument)
        return result


def _run_blocking_checks(
    checks: Sequence[tuple[Any, bool]], context: CheckContext
) -> list[list[Finding] | Exception]:
    """Every check's findings, or the exception it raised (in the worker process)."""
    outcomes: list[list[Finding] | Exception] = []
    for check, takes_episode in checks:
        try:
            outcomes.append(list(check(context.episode if takes_episode else context)))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


async def _off_the_loop(
    resolved: Sequence[_ResolvedCheck], context: CheckContext
) -> dict[int, list[Finding] | Exception]:
    """The outcomes of the blocking checks of a large episode, computed off the event
    loop: in the worker process, or on a thread when a check or the episode cannot be
    sent there (a lambda, an unpicklable tool output)."""
    indices = [index for index, r in enumerate(resolved) if r.blocking]
    checks = [(resolved[index].check, resolved[index].takes_episode) for index in indices]
    try:
        outcomes = await asyncio.to_thread(call_off_process, _run_blocking_checks, checks, context)
    except OffloadUnavailable as exc:
        report_failure(
            "check",
            "offload_unavailable",
            f"the audit of a large episode could not run in the worker process ({exc}); "
            "it runs on a thread instead, and the event loop may stall",
        )
        outcomes = await asyncio.to_thread(_run_blocking_checks, checks, context)
    return dict(zip(indices, outcomes, strict=True))


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
        unfinished_episode,
    ]


class Auditor:
    """Runs evidence checks over an episode and its confession report.

    All arguments are keyword-only. The built-in checks run by default; the ones that
    need configuration (protected globs, tool rules) do nothing until configured.

    Args:
        checks: your own checks (``def`` or ``async def``, see :data:`Check`), run after
            the built-in ones, in order. Default: none.
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
        self._resolved = tuple(map(_ResolvedCheck.of, self.checks))

    def __repr__(self) -> str:
        return f"Auditor(checks=[{', '.join(check_name(c) for c in self.checks)}])"

    def with_checks(self, *checks: Check) -> Auditor:
        """A copy of this auditor (of its class too) with ``checks`` run after its own;
        the pipeline adds the calibrator this way."""
        extended = copy.copy(self)
        extended.checks = (*self.checks, *checks)
        extended._resolved = tuple(map(_ResolvedCheck.of, extended.checks))
        return extended

    def audit(
        self,
        episode: Episode | Sequence[MessageLike] | CheckContext,
        report: ConfessionReport | None = None,
    ) -> list[Finding]:
        """Run every check over ``episode`` (an :class:`Episode`, a message list or a
        :class:`CheckContext`) and ``report``. Async checks are run to completion here;
        from async code use :meth:`aaudit`, which awaits them instead. Never raises for a
        failing check."""
        return drive(self._steps(_context(episode, report), in_event_loop=False), run_sync)

    async def aaudit(
        self,
        episode: Episode | Sequence[MessageLike] | CheckContext,
        report: ConfessionReport | None = None,
    ) -> list[Finding]:
        """Async :meth:`audit`: async checks are awaited on the running loop.

        A subclass that overrides only :meth:`audit` gets its override here too (called
        inline), so it means the same on both paths."""
        if type(self).audit is not Auditor.audit:
            return self.audit(episode) if report is None else self.audit(episode, report)
        context = _context(episode, report)
        done: dict[int, list[Finding] | Exception] = {}
        if context.episode.text_size >= LARGE_EPISODE_CHARS:
            done = await _off_the_loop(self._resolved, context)
        return await adrive(self._steps(context, in_event_loop=True, done=done), _as_awaitable)

    def _steps(
        self,
        context: CheckContext,
        *,
        in_event_loop: bool,
        done: Mapping[int, list[Finding] | Exception] | None = None,
    ) -> Generator[Awaitable[Iterable[Finding]], Iterable[Finding], list[Finding]]:
        """One step sequence for both drivers: each async check's awaitable is yielded for
        the driver to run (sync) or await (async); its failure is thrown back in here.
        ``done``: outcomes already computed off the event loop, by check index."""
        findings: list[Finding] = []
        for index, resolved in enumerate(self._resolved):
            try:
                outcome = (done or {}).get(index)
                if isinstance(outcome, Exception):
                    raise outcome
                result = (
                    outcome
                    if outcome is not None
                    else resolved.start(context, in_event_loop=in_event_loop)
                )
                if inspect.isawaitable(result):
                    result = yield result
                produced = list(result)  # a check that fails halfway adds nothing
            except Exception as exc:
                findings.append(_check_failed(resolved.name, exc))
            else:
                findings.extend(produced)
        return findings


def _context(
    episode: Episode | Sequence[MessageLike] | CheckContext, report: ConfessionReport | None
) -> CheckContext:
    if isinstance(episode, CheckContext):
        return episode if report is None else CheckContext(episode.episode, report)
    if not isinstance(episode, Episode):
        episode = extract_episode(episode)
    return CheckContext(episode, report)


def _as_awaitable(awaitable: Awaitable[Iterable[Finding]]) -> Awaitable[Iterable[Finding]]:
    return awaitable


def _check_failed(name: str, exc: Exception) -> Finding:
    """Report a failed check (logged, counted, escalating) and leave its finding."""
    # asyncio.TimeoutError is a distinct class before Python 3.11
    timed_out = isinstance(exc, TimeoutError | asyncio.TimeoutError)
    cause = "timeout" if timed_out else type(exc).__name__
    report_failure("check", cause, f"check {name} raised {cause}; skipped", exc_info=exc)
    return Finding(
        kind=CHECK_FAILED,
        severity="low",
        evidence="episode",
        detail=f"check {name} raised {cause} and was skipped",
        subject=name,
    )


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
    so those count as admissions too. The calibrator's typed disagreements
    (:data:`~confessional.findings.DISAGREEMENT_KINDS`: the confession hid, fabricated or
    downplayed a problem) already compare the evidence with this report, so each is a
    discrepancy as it stands. Without a report nothing can be compared: ``[]``.
    """
    if report is None or not findings:
        return []
    text = _admission_text(report)
    floor = SEVERITY_RANK[min_severity]
    return [
        f
        for f in findings
        if SEVERITY_RANK[f.severity] >= floor
        and (f.kind in DISAGREEMENT_KINDS or not f.subject or f.subject.lower() not in text)
    ]
