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
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from confessional._render import Printer
from confessional.errors import ConfessionalError

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

    rep = sub.add_parser(
        "report",
        help="summarise the confessions in an OTLP JSON trace file",
        description="Counts per verdict, flagged runs and the worst objectives (objective "
        "text needs content capture; otherwise label counts).",
    )
    rep.add_argument("trace_file", type=Path)
    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(f"confessional.cli.{name}") is not None:
            importlib.import_module(f"confessional.cli.{name}").add_parser(sub)
    return parser


# Commands with a module of their own: each module has ``add_parser(subparsers)``, which sets
# ``run=run`` as the parser's default, and ``run(args, printer) -> int``.
_COMMAND_MODULES = ("eval", "audit", "review", "drain")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``confessional`` console script."""
    args = build_parser().parse_args(argv)
    out = Printer()
    try:
        if args.command == "demo":
            from confessional.demo import run_demo

            return run_demo(model=args.model, phoenix=args.phoenix, out_dir=args.out, printer=out)
        if hasattr(args, "run"):
            code: int = args.run(args, out)
            return code
        from confessional.report import summarise

        return summarise(args.trace_file, out)
    except ConfessionalError as exc:
        print(f"confessional {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
