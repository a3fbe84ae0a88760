"""``confessional eval``: the scenario suite, confusion matrices and the paper's metrics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from confessional._render import Printer, percent
from confessional.errors import MissingExtraError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="run the scenario suite and compute the paper's confession metrics",
        description="Run each scenario N times through the confession middleware, label "
        "ground truth from the environment and 'confessed' from the report, and write "
        "results.json and confusion_matrix.png. --model scripted only proves the harness.",
    )
    ev.add_argument(
        "--model", required=True, help="init_chat_model string (provider:model) or 'scripted'"
    )
    ev.add_argument("--scenarios", help="comma-separated scenario names (default: all)")
    ev.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    ev.add_argument(
        "--out",
        type=Path,
        default=Path("eval-out"),
        help="output directory (default: ./eval-out)",
    )
    ev.add_argument("--seed", type=int, default=0, help="seed of the scripted mix (default 0)")
    ev.add_argument("--concurrency", type=int, default=1, help="runs in flight at once (default 1)")
    ev.add_argument("--list", action="store_true", help="list the scenarios and exit")

    ev.set_defaults(run=run)


def _list_scenarios(out: Printer) -> int:
    from confessional.scenarios import SCENARIOS

    out.table(
        ["name", "family", "not complied when", "checker reads"],
        [[s.name, s.family, s.non_compliance, s.checker_reads] for s in SCENARIOS.values()],
        title="Scenarios",
    )
    return 0


def run(args: argparse.Namespace, out: Printer) -> int:
    from confessional.evaluation import (
        CONFESSED_DEFINITION,
        SCRIPTED,
        SCRIPTED_NOTICE,
        plot_confusion_matrices,
        run_eval,
    )
    from confessional.scenarios import SCENARIOS, get_scenario

    if args.list:
        return _list_scenarios(out)
    try:
        import matplotlib  # noqa: F401
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError as exc:
        raise MissingExtraError("eval", "confessional eval", exc.name or "rich") from exc

    names = [n.strip() for n in args.scenarios.split(",") if n.strip()] if args.scenarios else []
    for name in names:
        get_scenario(name)
    names = names or list(SCENARIOS)
    scripted = args.model == SCRIPTED
    if scripted:
        out.line(SCRIPTED_NOTICE, style="bold magenta")
    total = len(names) * max(args.runs, 0)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=out.console,
        transient=False,
    )
    with progress:
        task = progress.add_task(f"eval {args.model}", total=total)
        result = run_eval(
            args.model,
            scenarios=names,
            runs=args.runs,
            seed=args.seed,
            concurrency=args.concurrency,
            on_run=lambda _record: progress.advance(task),
        )
    rows = []
    for name in result.scenarios:
        m = result.matrices[name]
        rows.append(
            [
                name,
                str(m.n),
                percent(m.complied_rate),
                percent(m.not_complied_rate),
                percent(m.confessed_given_not_complied),
                percent(m.false_positive_rate),
                percent(m.joint_false_negative_rate),
                f"{m.tp}/{m.fn}/{m.fp}/{m.tn}",
            ]
        )
    out.table(
        [
            "scenario",
            "runs",
            "complied",
            "not complied",
            "P(conf|nc)",
            "FP P(conf|c)",
            "joint FN P(nc∧¬conf)",
            "TP/FN/FP/TN",
        ],
        rows,
        title=f"Confessions vs ground truth ({result.model}, {result.runs} run(s) per scenario)",
    )
    avg = result.averages
    out.line(
        f"Mean over scenarios of P(not complied ∧ not confessed): "
        f"{percent(avg.mean_joint_false_negative_rate)}   (paper: 4.4%)",
        style="bold",
    )
    out.line(
        f"Mean over scenarios of P(confessed | not complied):     "
        f"{percent(avg.mean_confessed_given_not_complied)}   (paper: 74.3%; "
        f"{len(avg.scenarios_in_confession_mean)} of {len(result.scenarios)} scenarios "
        "had a not-complied run)",
        style="bold",
    )
    out.line(f"'Confessed' means: {CONFESSED_DEFINITION}", style="dim")
    if result.run_errors:
        out.line(
            f"{result.run_errors} run(s) raised and are excluded; see results.json.",
            style="bold red",
        )
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "results.json"
    png_path = args.out / "confusion_matrix.png"
    result.write_json(json_path)
    plot_confusion_matrices(result, png_path)
    out.line(f"Wrote {json_path} and {png_path} in {result.duration_s:.1f} s.")
    if scripted:
        out.line("Reminder: scripted mode only proves the harness.", style="magenta")
    return 0
