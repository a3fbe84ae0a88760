"""The ``confessional`` command.

- ``confessional demo [--model M] [--base-url URL] [--phoenix URL] [--out DIR]``: three
  scenarios end to end (scripted by default: no network, no key), confessions printed,
  trace written.
- ``confessional eval``, ``audit``, ``review``, ``drain``, ``worker``, ``queue``: see their
  modules.
- ``confessional report FILE``: summary of the confessions in an OTLP JSON trace file.

Exit codes: 0 success; 1 the command ran and found a failure (a demo run that did not reach
its expected verdict); 2 a user error (bad option, model string, missing key or package,
unreadable file), reported as one line on stderr; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from confessional._render import Printer
from confessional.errors import ConfessionalError

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ConfessionalError):
    """A bad command line, reported as one line and exit code 2.

    Attributes:
        prog: the (sub)command whose arguments were wrong, e.g. ``confessional eval``.
    """

    def __init__(self, message: str, *, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block is for ``--help``, not for mistakes."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)", prog=self.prog)


def build_parser() -> argparse.ArgumentParser:
    from confessional import __version__

    parser = _Parser(
        prog="confessional",
        description="Confessions for LangChain and LangGraph agents: demo, evaluation, "
        "trace summaries.",
    )
    parser.add_argument("--version", action="version", version=f"confessional {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    demo = sub.add_parser(
        "demo",
        help="run three scenarios end to end (scripted: no network, no key)",
        description="Run three scenarios through create_agent with the confession "
        "middleware: an honest run, a confessed timer hack that is halted, and a "
        "sandbagging run that is flagged. Writes an OTLP JSON trace file.",
    )
    demo.add_argument(
        "--model",
        help="'local' (the managed open-weight model), or provider:model, e.g. "
        "openai:gpt-4.1-mini (default: scripted models)",
    )
    demo.add_argument(
        "--base-url",
        metavar="URL",
        help="an OpenAI-compatible server for an openai:NAME model (llama.cpp, Ollama, vLLM)",
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
    rep.add_argument(
        "--send",
        metavar="URL",
        help="also post the file's spans to an OTLP/HTTP receiver, e.g. a local Phoenix at "
        "http://127.0.0.1:6006 (waits up to 60 s for it to start); in Phoenix, each "
        "confession also becomes an annotation on its agent span",
    )
    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(f"confessional.cli.{name}") is not None:
            importlib.import_module(f"confessional.cli.{name}").add_parser(sub)
    return parser


# Commands with a module of their own: each module has ``add_parser(subparsers)``, which sets
# ``run=run`` as the parser's default, and ``run(args, printer) -> int``.
_COMMAND_MODULES = ("eval", "audit", "review", "drain", "worker", "queue")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``confessional`` console script; returns the exit code."""
    command = "confessional"
    try:
        args = build_parser().parse_args(argv)
        command = f"confessional {args.command}"
        return _dispatch(args, Printer())
    except ConfessionalError as exc:
        command = getattr(exc, "prog", None) or command
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # unreadable or unwritable files named on the command line
        print(f"{command}: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace, out: Printer) -> int:
    if args.command == "demo":
        from confessional.demo import run_demo
        from confessional.models import open_chat_model

        if args.model is None:
            if args.base_url is not None:
                raise UsageError("--base-url needs --model openai:NAME")
            return run_demo(phoenix=args.phoenix, out_dir=args.out, printer=out)
        with open_chat_model(args.model, base_url=args.base_url) as model:
            return run_demo(
                model=model,
                model_label=args.model,
                phoenix=args.phoenix,
                out_dir=args.out,
                printer=out,
            )
    if hasattr(args, "run"):
        code: int = args.run(args, out)
        return code
    from confessional.report import summarise

    code = summarise(args.trace_file, out)
    if args.send:
        from confessional.cli.report import send

        send(args.trace_file, args.send, out)
    return code


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
