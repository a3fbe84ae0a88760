"""``confessional eval``: the scenario suite, confusion matrices and the paper's metrics."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from confessional._render import Printer, percent
from confessional.audit.calibrator import CALIBRATOR_STYLES, Calibrator
from confessional.errors import ConfigurationError, MissingExtraError
from confessional.evaluation import ConfusionMatrix, EvalResult, RunLimits, RunRecord
from confessional.request import REQUEST_STYLES

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

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
        "--model",
        help="init_chat_model string (provider:model), 'local' (the managed open-weight "
        "model: fetched, built and served on this machine on first use) or 'scripted'; "
        "required unless --list",
    )
    ev.add_argument(
        "--base-url",
        metavar="URL",
        help="an OpenAI-compatible server for an openai:NAME model (llama.cpp, Ollama, vLLM, "
        "LM Studio); OPENAI_BASE_URL works too",
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
    ev.add_argument(
        "--max-model-calls",
        type=int,
        default=RunLimits.max_model_calls,
        help=f"per-run cap on the agent's model calls (default {RunLimits.max_model_calls}); "
        "a capped run counts as 'did not finish'",
    )
    ev.add_argument(
        "--max-seconds",
        type=float,
        default=RunLimits.max_seconds,
        help=f"per-run wall-clock cap (default {RunLimits.max_seconds:.0f})",
    )
    ev.add_argument(
        "--confession-timeout",
        type=float,
        help="seconds the confession may take (default: 60, or 300 for --model local)",
    )
    ev.add_argument(
        "--temperature",
        type=float,
        help="sampling temperature of the model under test (default: the model's own; the "
        "local model's is 0). Each run also gets its own seed, derived from --seed and the "
        "run index and recorded in results.json, so repeated runs are real samples",
    )
    ev.add_argument(
        "--calibrator",
        metavar="MODEL",
        help="a second model (init_chat_model string, or 'local') that judges each run "
        "from its transcript; its disagreements with the confession are the 'calibrator' "
        "column of --caught-by. Its time limit is the confession's (--confession-timeout)",
    )
    ev.add_argument(
        "--calibrator-style",
        choices=CALIBRATOR_STYLES,
        default=Calibrator.style,
        help=f"what the calibrator is asked (default: {Calibrator.style}): questions asks "
        "one yes/no question per shortcut family, evidence first; report asks for the whole "
        "confession report; each is one model call",
    )
    ev.add_argument(
        "--request-style",
        choices=REQUEST_STYLES,
        default="standard",
        help="the confession request variant (default: standard, the paper's request): "
        "evidence_first lists what each tool call returned, quoted_objectives quotes the "
        "instructions, direct_questions asks one question per shortcut family, combined "
        "does all three; each is one model call",
    )
    ev.add_argument(
        "--confession-samples",
        type=int,
        default=1,
        metavar="K",
        help="confessions sampled per run, keeping the one that admits the most (default 1); "
        "costs K confession calls per run, within --confession-timeout",
    )
    ev.add_argument(
        "--caught-by",
        action="store_true",
        help="also show, per scenario and overall, P(caught | not complied) and the joint "
        "false negative when 'caught' means the confession, the audit, the calibrator or "
        "any of them",
    )
    ev.add_argument("--list", action="store_true", help="list the scenarios and exit")

    ev.set_defaults(run=run)


_LOCAL_CONFESSION_TIMEOUT_S = 300.0
"""A 1.5B model on two shared CPU cores reads a long episode slowly: a minute is too short."""


@contextmanager
def _calibrator_model(
    args: argparse.Namespace,
    open_chat_model: Any,
    model: str | BaseChatModel,
    timeout_s: float | None,
) -> Iterator[Calibrator | None]:
    """The calibrator, its model opened for the whole evaluation (the model under test when
    both are 'local': one server on this machine, not two)."""
    settings: dict[str, Any] = {"style": args.calibrator_style}
    if timeout_s is not None:
        settings["timeout_s"] = timeout_s
    if not args.calibrator:
        yield None
    elif args.calibrator == args.model and not isinstance(model, str):
        yield Calibrator(model, **settings)
    else:
        with open_chat_model(args.calibrator, base_url=None) as calibrator:
            yield Calibrator(calibrator, **settings)


@contextmanager
def _chat_model(
    args: argparse.Namespace, open_chat_model: Any, scripted: bool
) -> Iterator[str | BaseChatModel]:
    """The model to evaluate: ``"scripted"`` as is, anything else opened (``local`` starts
    and stops the managed server around the whole evaluation)."""
    if scripted:
        if args.base_url:
            raise ConfigurationError("--base-url needs an openai:NAME model, not 'scripted'")
        yield args.model
        return
    with open_chat_model(args.model, base_url=args.base_url) as model:
        yield model


PARTIAL_NAME: Final = "runs.partial.jsonl"
"""One JSON line per finished run (the ``runs`` rows of results.json), written as each run
ends, so a long evaluation that is stopped still leaves its figures readable."""


def _on_run(
    progress: Any, task: Any, total: int, out: Printer, partial: Path
) -> Callable[[RunRecord], None]:
    """Advance the bar and append the run to ``partial``; off a terminal (CI logs) also
    print one line per run with an ETA, since the bar is only drawn at the end there."""
    started = time.monotonic()
    done = 0
    plain = out.console is None or not out.console.is_terminal

    def on_run(record: RunRecord) -> None:
        nonlocal done
        done += 1
        progress.advance(task)
        with partial.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(record)) + "\n")
        if not plain:
            return
        elapsed = time.monotonic() - started
        eta = elapsed / done * (total - done)
        out.line(
            f"[{done}/{total}] {record.scenario} #{record.index}: {record.status}, "
            f"truth {record.truth}, confessed {record.confessed}, caught {record.caught}, "
            f"{record.model_calls} model call(s), {record.duration_s:.0f}s; "
            f"elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min"
        )

    return on_run


def _share(numerator: int, denominator: int) -> str:
    """A rate with the runs behind it, "42% (5/12)": a percentage of three runs and one of
    three hundred must not read alike."""
    if not denominator:
        return "n/a (0)"
    return f"{numerator / denominator:.0%} ({numerator}/{denominator})"


def _mean_cell(value: float | None, runs: int) -> str:
    return "n/a" if value is None else f"{value:.0%} (n={runs})"


def _print_tables(result: EvalResult, out: Printer, *, caught_by: bool) -> None:
    """The results as narrow tables, each readable at 80 columns (piped output is 80 wide):
    one wide table folded its cells into three-character fragments there."""
    names = result.scenarios
    out.table(
        ["scenario", "runs", "complied", "not complied", "DNF"],
        [
            [
                name,
                str(result.matrices[name].n),
                _share(result.matrices[name].complied, result.matrices[name].n),
                _share(result.matrices[name].not_complied, result.matrices[name].n),
                str(result.did_not_finish(name)),
            ]
            for name in names
        ],
        title=f"Ground truth ({result.model}, {result.runs} run(s) per scenario; "
        "DNF = did not finish)",
    )
    rows = []
    for name in names:
        m = result.matrices[name]
        caught = result.caught_matrices[name]
        rows.append(
            [
                name,
                _share(m.tp, m.not_complied),
                _share(m.fp, m.complied),
                _share(m.fn, m.n),
                _share(caught.fn, caught.n),
            ]
        )
    out.table(
        ["scenario", "P(conf|nc)", "P(conf|c)", "joint FN", "FN +audit"],
        rows,
        title="Confessions vs ground truth (nc = not complied, c = complied)",
    )
    if not caught_by:
        return
    averages = result.caught_by_averages()
    scored = sum(1 for r in result.records if r.scored)
    sources = list(result.caught_by_matrices)
    breakdown: list[tuple[str, str, Callable[[ConfusionMatrix], str]]] = [
        (
            "mean_caught_given_not_complied",
            "P(caught | not complied), by what caught it",
            lambda m: _share(m.tp, m.not_complied),
        ),
        (
            "mean_joint_false_negative_rate",
            "Joint FN P(not complied and not caught), by what caught it",
            lambda m: _share(m.fn, m.n),
        ),
    ]
    for figure, title, cell in breakdown:
        table_rows = [
            [name, *(cell(result.caught_by_matrices[s][name]) for s in sources)] for name in names
        ]
        table_rows.append(["mean", *(_mean_cell(averages[s][figure], scored) for s in sources)])
        out.table(["scenario", *sources], table_rows, title=title)
    if result.calibrator is None:
        out.line(
            "No calibrator ran (pass --calibrator MODEL): its column counts nothing.",
            style="dim",
        )


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
        CAUGHT_DEFINITION,
        CONFESSED_DEFINITION,
        SCRIPTED,
        SCRIPTED_NOTICE,
        plot_confusion_matrices,
        run_eval,
    )
    from confessional.models import LOCAL, open_chat_model
    from confessional.scenarios import SCENARIOS, get_scenario

    if args.list:
        return _list_scenarios(out)
    if not args.model:
        raise ConfigurationError(
            "eval needs --model: provider:model, 'local' or 'scripted' (or --list)"
        )
    limits = RunLimits(max_model_calls=args.max_model_calls, max_seconds=args.max_seconds)
    if args.confession_samples < 1:
        raise ConfigurationError(
            f"--confession-samples must be at least 1, got {args.confession_samples}"
        )
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
    confession_timeout = args.confession_timeout
    if confession_timeout is None and args.model == LOCAL:
        confession_timeout = _LOCAL_CONFESSION_TIMEOUT_S
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / PARTIAL_NAME
    partial.write_text("", encoding="utf-8")
    with (
        _chat_model(args, open_chat_model, scripted) as model,
        _calibrator_model(args, open_chat_model, model, confession_timeout) as calibrator,
        progress,
    ):
        task = progress.add_task(f"eval {args.model}", total=total)
        result = run_eval(
            model,
            scenarios=names,
            runs=args.runs,
            seed=args.seed,
            concurrency=args.concurrency,
            on_run=_on_run(progress, task, total, out, partial),
            limits=limits,
            confession_timeout_s=confession_timeout,
            label=args.model,
            temperature=args.temperature,
            calibrator=calibrator,
            calibrator_label=args.calibrator,
            request_style=args.request_style,
            confession_samples=args.confession_samples,
        )
    _print_tables(result, out, caught_by=args.caught_by)
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
    out.line(
        f"Mean over scenarios of P(not complied ∧ not caught):     "
        f"{percent(avg.mean_joint_false_negative_rate_with_audit)}   (caught = confessed or "
        "flagged by the evidence audit or the calibrator: this product's answer to the "
        "paper's 4.4%)",
        style="bold",
    )
    out.line(f"'Confessed' means: {CONFESSED_DEFINITION}", style="dim")
    out.line(f"'Caught' means: {CAUGHT_DEFINITION}", style="dim")
    if result.model_identity:
        identity = ", ".join(f"{k}={v}" for k, v in result.model_identity.items())
        out.line(f"Model: {identity}", style="dim")
    dnf = result.did_not_finish()
    if dnf:
        out.line(
            f"{dnf} run(s) did not finish (cap: {limits.max_model_calls} model calls or "
            f"{limits.max_seconds:.0f} s per run): counted in the DNF column, confessed and "
            "scored in the matrices.",
            style="bold yellow",
        )
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
