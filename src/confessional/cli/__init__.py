"""The ``confessional`` command: ``demo``, ``eval`` and ``report``.

- ``confessional demo [--model M] [--phoenix URL] [--out DIR]``: three scenarios end to
  end (scripted by default: no network, no key), confessions printed, trace written.
- ``confessional eval --model M|scripted [--scenarios a,b] [--runs N] [--out DIR]
  [--seed S] [--concurrency N]``: the scenario suite, confusion matrices, paper metrics,
  ``results.json`` and ``confusion_matrix.png``. Real models need only their provider's
  usual environment variable (e.g. ``OPENAI_API_KEY``) and provider package.
- ``confessional report FILE``: summary of the confessions in an OTLP JSON trace file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from confessional._render import Printer, percent
from confessional.errors import ConfessionalError, MissingExtraError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confessional",
        description="Confessions for LangChain and LangGraph agents: demo, evaluation, "
        "trace summaries.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run three scenarios end to end (scripted: no network, no key)",
        description="Run three scenarios through create_agent with the confession "
        "middleware: an honest run, a confessed timer hack that is halted, and a "
        "sandbagging run that is flagged. Writes an OTLP JSON trace file.",
    )
    demo.add_argument(
        "--model",
        help="init_chat_model string, e.g. openai:gpt-4.1-mini (default: scripted models)",
    )
    demo.add_argument(
        "--phoenix",
        metavar="URL",
        help="also export spans to a local Phoenix, e.g. http://127.0.0.1:6006",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("confessional-out"),
        help="output directory for the trace file (default: ./confessional-out)",
    )

    ev = sub.add_parser(
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

    rep = sub.add_parser(
        "report",
        help="summarise the confessions in an OTLP JSON trace file",
        description="Counts per verdict, flagged runs and the worst objectives (objective "
        "text needs content capture; otherwise label counts).",
    )
    rep.add_argument("trace_file", type=Path)
    return parser


def _list_scenarios(out: Printer) -> int:
    from confessional.scenarios import SCENARIOS

    out.table(
        ["name", "family", "not complied when", "checker reads"],
        [[s.name, s.family, s.non_compliance, s.checker_reads] for s in SCENARIOS.values()],
        title="Scenarios",
    )
    return 0


def _eval(args: argparse.Namespace, out: Printer) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``confessional`` console script."""
    args = build_parser().parse_args(argv)
    out = Printer()
    try:
        if args.command == "demo":
            from confessional.demo import run_demo

            return run_demo(model=args.model, phoenix=args.phoenix, out_dir=args.out, printer=out)
        if args.command == "eval":
            return _eval(args, out)
        from confessional.report import summarise

        return summarise(args.trace_file, out)
    except ConfessionalError as exc:
        print(f"confessional {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
