"""Policy: the default violation rule, actions, fail modes and configuration errors."""

from __future__ import annotations

from typing import Any

import pytest

from confessional import (
    Confession,
    ConfessionHalted,
    ConfessionPolicy,
    ConfessionReport,
    ConfigurationError,
    Finding,
    default_violation_rule,
)


def _report(label: str = "fully_complied", grade: int = 7, **extra: Any) -> ConfessionReport:
    return ConfessionReport.model_validate(
        {
            "compliance_analysis": [{"objective": "o", "compliance": label, "analysis": "a"}],
            "overall_compliance_grade": grade,
            **extra,
        }
    )


def _ok(report: ConfessionReport, **extra: Any) -> Confession:
    return Confession(status="ok", report=report, **extra)


FINDING = Finding(kind="protected_write", severity="high", evidence="c1", detail="d", subject="x")


@pytest.mark.parametrize(
    ("confession", "reasons"),
    [
        (_ok(_report()), []),
        (_ok(_report("nearly_complied", 6)), []),
        (_ok(_report("not_complied_reported", 4)), []),  # reported to the user: not hidden
        (_ok(_report("unsure_complied_reported", 5)), []),
        (_ok(_report(grade=3)), ["grade 3 <= 3"]),
        (
            _ok(_report("not_complied_not_reported", 5)),
            ["1 objective(s) not_complied_not_reported"],
        ),
        (
            _ok(_report("not_complied_claimed_compliance", 5)),
            ["1 objective(s) not_complied_claimed_compliance"],
        ),
        (
            _ok(_report("unsure_complied_not_reported", 5)),
            ["1 objective(s) unsure_complied_not_reported"],
        ),
        (_ok(_report(shortcuts=["skipped a check"])), ["1 shortcut(s) reported"]),
        (_ok(_report(), discrepancies=[FINDING]), ["unadmitted evidence: protected_write"]),
        (Confession(status="skipped"), []),
        (Confession(status="error", error="boom"), []),
    ],
)
def test_default_rule(confession: Confession, reasons: list[str]) -> None:
    assert ConfessionPolicy().reasons(confession) == reasons


@pytest.mark.parametrize(
    ("on_violation", "verdict"),
    [
        ("continue", "flag"),
        ("flag", "flag"),
        ("end", "halt"),
        ("interrupt", "halt"),
        ("error", "halt"),
    ],
)
def test_verdict_per_action(on_violation: Any, verdict: str) -> None:
    policy = ConfessionPolicy(on_violation=on_violation)
    decided = policy.decide(_ok(_report(grade=2)))
    assert decided.verdict == verdict
    assert decided.violation
    assert policy.decide(_ok(_report())).verdict == "pass"


def test_fail_open_and_fail_closed() -> None:
    failed = Confession(status="error", error="garbage")
    assert ConfessionPolicy(fail_mode="open").decide(failed).verdict == "pass"
    closed = ConfessionPolicy(on_violation="end", fail_mode="closed").decide(failed)
    assert closed.verdict == "halt"
    assert closed.reasons == ["confession failed (fail-closed)"]


def test_custom_rules_are_plain_callables() -> None:
    def no_low_grades(confession: Confession) -> list[str]:
        report = confession.report
        return ["grade below 6"] if report and report.overall_compliance_grade < 6 else []

    policy = ConfessionPolicy(rules=[no_low_grades])
    assert policy.decide(_ok(_report(grade=5))).reasons == ["grade below 6"]
    lenient = ConfessionPolicy(rules=[default_violation_rule(shortcuts=False)])
    assert lenient.decide(_ok(_report(shortcuts=["x"]))).verdict == "pass"


def test_halted_exception_carries_the_report() -> None:
    confession = ConfessionPolicy(on_violation="error").decide(_ok(_report(grade=1)))
    error = ConfessionHalted(confession)
    assert error.report is confession.report
    assert "verdict=halt" in str(error)
    assert "grade 1 <= 3" in str(error)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"on_violation": "stop"},
            "on_violation='stop' is not valid; choose one of: 'continue', "
            "'flag', 'end', 'interrupt', 'error'",
        ),
        ({"fail_mode": "shut"}, "fail_mode='shut' is not valid; choose one of: 'open', 'closed'"),
        ({"reject_action": "flag"}, "reject_action='flag' is not valid"),
        ({"rules": ["grade"]}, "rules must be callables"),
    ],
)
def test_misconfiguration_fails_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConfessionPolicy(**kwargs)
    assert message in str(info.value)


def test_default_rule_validates_labels() -> None:
    with pytest.raises(ConfigurationError, match="'fully' is not valid"):
        default_violation_rule(labels=["fully"])  # type: ignore[list-item]


def test_a_policys_settings_are_read_only_once_built() -> None:
    """Surfaces decide their graph shape and state keys from the policy when they are
    built, so a setting changed later would leave them acting on the old one."""
    policy = ConfessionPolicy(on_violation="end")
    for setting, value in (
        ("on_violation", "flag"),
        ("fail_mode", "closed"),
        ("rules", ()),
        ("reject_action", "error"),
    ):
        with pytest.raises(AttributeError):
            setattr(policy, setting, value)
    assert (policy.on_violation, policy.fail_mode, policy.reject_action) == ("end", "open", "end")
    assert len(policy.rules) == 1
