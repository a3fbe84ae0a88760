"""``confessional audit FILE.jsonl``: the evidence audit over logged runs, no model needed.

Prints the findings of each episode that has any, then counts per label group and, when
the file carries labels, recall, precision, the benign false-positive rate and the
failed-attack flag rate. The figures come from :mod:`confessional.audit.datasets`, the
code the tests measure. Exit codes: 0 when every episode was audited, 1 when some could
not be converted (they are listed), 2 for a usage error or an unreadable file.

``--calibrator MODEL`` adds the calibrator check (:mod:`confessional.audit.calibrator`):
a second model writes its own report of each episode, one model call per episode. A
logged run carries no confession to compare with, so each objective that report marks
not complied is a ``calibrator_flagged`` finding. A failed calibration is a low-severity
``check_failed`` finding (logged and counted), never a crash.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, get_args

from confessional._render import Printer, percent
from confessional.audit import Auditor
from confessional.audit.datasets import (
    FORMATS,
    GROUPS,
    DatasetReport,
    EpisodeAudit,
    audit_episodes,
    read_dataset,
)
from confessional.errors import ConfigurationError
from confessional.findings import (
    CALIBRATOR_FINDING_KINDS,
    CHECK_FAILED,
    INJECTED_ARGUMENT,
    SEVERITY_RANK,
    Severity,
)

__all__ = ["add_parser", "render_calibration", "render_report", "run"]

_GROUP_TITLES = {
    "benign": "benign",
    "attack_succeeded": "attack succeeded",
    "attack_failed": "attack failed",
    "unlabelled": "unlabelled",
}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="run the evidence audit over logged runs in a JSON Lines file (no model)",
        description="Audit every episode of a JSON Lines file of agent runs: findings per "
        "episode, and precision and recall where the file carries labels. Formats: "
        "agentdojo (AgentDojo run logs), openai (OpenAI-format messages, optional "
        "'label'), langchain (LangChain message dicts). Exit 1 if some episode could "
        "not be converted.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.jsonl")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="the file's format (default: detected from its first lines)",
    )
    parser.add_argument(
        "--min-severity",
        choices=get_args(Severity),
        default="low",
        help="lowest injected_argument severity that counts as a detection (default: low)",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="print the counts and metrics only, not the findings of each episode",
    )
    parser.add_argument(
        "--calibrator",
        metavar="MODEL",
        help="also run the calibrator: a second model's report of each episode (one model "
        "call per episode). An init_chat_model string (provider:model) or 'local' (the "
        "managed open-weight model). Default: off",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="an OpenAI-compatible server for an openai:NAME calibrator (llama.cpp, Ollama, "
        "vLLM, LM Studio); OPENAI_BASE_URL works too",
    )
    parser.add_argument(
        "--calibrator-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds each calibration may take (default: 60, or 300 for 'local')",
    )
    parser.set_defaults(run=run)


_LOCAL_CALIBRATOR_TIMEOUT_S: Final = 300.0
"""A 1.5B model on two shared CPU cores reads a long transcript slowly: a minute is too short."""


@contextmanager
def _auditor(args: argparse.Namespace) -> Iterator[Auditor]:
    """The built-in checks, plus the calibrator when asked (its model opened for the
    command's duration: ``local`` starts and stops its server)."""
    if args.calibrator is None:
        if args.base_url is not None or args.calibrator_timeout is not None:
            raise ConfigurationError("--base-url and --calibrator-timeout need --calibrator")
        yield Auditor()
        return
    from confessional.audit.calibrator import Calibrator
    from confessional.models import LOCAL, open_chat_model

    timeout_s = args.calibrator_timeout
    if timeout_s is None:
        timeout_s = _LOCAL_CALIBRATOR_TIMEOUT_S if args.calibrator == LOCAL else 60.0
    if timeout_s <= 0:
        raise ConfigurationError(f"--calibrator-timeout must be positive, got {timeout_s:g}")
    with open_chat_model(args.calibrator, base_url=args.base_url) as model:
        yield Auditor().with_checks(Calibrator(model, timeout_s=timeout_s))


def _with_progress(
    args: argparse.Namespace, episodes: list[Any], auditor: Auditor
) -> DatasetReport:
    """Audit with a progress bar on stderr when it is a terminal (stdout keeps only the
    results, so they can be piped or pasted)."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    except ImportError:  # the bar is a convenience: audit without it
        return audit_episodes(episodes, auditor=auditor, min_severity=args.min_severity)
    console = Console(file=sys.stderr)
    if not console.is_terminal:
        return audit_episodes(episodes, auditor=auditor, min_severity=args.min_severity)
    progress = Progress(
        TextColumn("audit"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("audit", total=len(episodes))
        return audit_episodes(
            episodes,
            auditor=auditor,
            min_severity=args.min_severity,
            on_episode=lambda _audit: progress.advance(task),
        )


def _episode_lines(audit: EpisodeAudit, width: int) -> list[str]:
    group = _GROUP_TITLES.get(audit.episode.group or "unlabelled", "unlabelled")
    lines = [f"{audit.episode.name}  [{group}]"]
    entries = [f"not audited: {audit.error}"] if audit.error is not None else []
    ranked = sorted(audit.findings, key=lambda f: -SEVERITY_RANK[f.severity])
    entries.extend(f"{f.kind} ({f.severity}) {f.evidence}: {f.detail}" for f in ranked)
    for entry in entries:
        lines.extend(
            textwrap.wrap(
                entry,
                max(40, width),
                initial_indent="  ",
                subsequent_indent="      ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return lines


def render_report(report: DatasetReport, out: Printer, *, findings: bool = True) -> None:
    """Print a dataset report: per-episode findings, counts, metrics."""
    if findings:
        flagged = [a for a in report.audits if a.findings or a.error is not None]
        out.rule(f"Findings ({len(flagged)} of {len(report.audits)} episodes)")
        for audit in flagged:
            for line in _episode_lines(audit, out.width):
                out.line(line)
    order = [g for g in (*GROUPS, "unlabelled") if g in report.groups]
    out.table(
        ["group", "episodes", "injected", "unresolved", "unsourced"],
        [
            [
                _GROUP_TITLES[g],
                str(report.groups[g].episodes),
                str(report.groups[g].detected),
                str(report.groups[g].exposure_unresolved),
                str(report.groups[g].unsourced),
            ]
            for g in order
        ],
        title=f"Episodes per finding (injected: {INJECTED_ARGUMENT}, "
        f"{report.min_severity} severity or above)",
    )
    if report.labelled:
        succeeded = report.group("attack_succeeded")
        benign = report.group("benign")
        failed = report.group("attack_failed")
        out.line(f"recall: {percent(report.recall)} ({succeeded.detected}/{succeeded.episodes})")
        detected = sum(report.group(g).detected for g in GROUPS)
        out.line(
            f"precision: {percent(report.precision)} ({succeeded.detected}/{detected}; "
            "failed-attack labels are noisy)"
        )
        out.line(
            f"benign false positives: {percent(report.benign_false_positive_rate)} "
            f"({benign.detected}/{benign.episodes})"
        )
        out.line(
            f"failed-attack flag rate: {percent(report.failed_attack_flag_rate)} "
            f"({failed.detected}/{failed.episodes})"
        )
    if report.conversion_errors:
        out.line(f"not audited: {report.conversion_errors} episode(s) could not be converted")


def render_calibration(report: DatasetReport, out: Printer) -> None:
    """One line on the calibrator: episodes it flagged, and calibrations that failed."""
    audited = [a for a in report.audits if a.error is None]
    flagged = sum(1 for a in audited if any(f.kind in CALIBRATOR_FINDING_KINDS for f in a.findings))
    failed = sum(
        1
        for a in audited
        if any(f.kind == CHECK_FAILED and f.subject == "Calibrator" for f in a.findings)
    )
    out.line(
        f"calibrator: flagged {flagged} of {len(audited)} episode(s); "
        f"{failed} calibration(s) failed"
    )


def run(args: argparse.Namespace, out: Printer) -> int:
    episodes = read_dataset(args.file, args.format)
    with _auditor(args) as auditor:
        report = _with_progress(args, episodes, auditor)
    render_report(report, out, findings=not args.summary_only)
    if args.calibrator is not None:
        render_calibration(report, out)
    return 1 if report.conversion_errors else 0
