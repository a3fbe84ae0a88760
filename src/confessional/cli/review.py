"""``confessional review list|show|approve|reject|serve``: the reviewer's side of interrupts.

- ``list``: pending confession reviews on every thread (a table, or ``--json``).
- ``show THREAD``: one thread's pending review in full.
- ``approve THREAD [--answer TEXT]`` / ``reject THREAD [--message TEXT]``: apply a
  decision (``--answer`` makes it an edit), through the graph given with ``--graph``.
- ``serve``: the reviewers' web page (the ``review-web`` extra), on 127.0.0.1 by default,
  behind an access token printed at start (or read from ``--token-file``).

``--checkpointer`` is ``sqlite:///PATH`` (``sqlite:////abs/path.db`` for an absolute path,
as in SQLAlchemy URLs) or ``postgresql://...``. ``--graph`` is ``module_or_file:attribute``,
the convention of LangGraph's ``langgraph.json``: a compiled graph, a ``StateGraph``
builder, or a function returning either. It is used with the given checkpointer.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from confessional._render import Printer
from confessional.errors import ConfessionalError, MissingExtraError
from confessional.review import PendingReview, ReviewError, pending, resume

__all__ = ["add_parser", "load_graph", "open_checkpointer", "run"]

_SQLITE = "sqlite:///"
_POSTGRES = ("postgresql://", "postgres://")


class ReviewCommandError(ConfessionalError):
    """Bad ``confessional review`` input: a checkpointer URL, a graph reference."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "review",
        help="list and resolve runs paused for a confession review",
        description="List runs paused on a confession review (on_violation='interrupt') "
        "in a SQLite or PostgreSQL checkpointer, show one, and approve or reject it.",
    )
    parser.set_defaults(run=run)
    actions = parser.add_subparsers(dest="review_command", required=True, metavar="ACTION")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--checkpointer",
            required=True,
            metavar="URL",
            help="sqlite:///PATH or postgresql://USER@HOST/DB",
        )
        sub.add_argument("--json", action="store_true", help="machine-readable output")

    listing = actions.add_parser("list", help="pending reviews on every thread")
    show = actions.add_parser("show", help="one thread's pending review")
    show.add_argument("thread_id")
    for sub in (listing, show):
        common(sub)
        sub.add_argument(
            "--content",
            action="store_true",
            help="also print the withheld answer (model-written text)",
        )
    approve = actions.add_parser("approve", help="deliver the answer (or --answer instead)")
    reject = actions.add_parser("reject", help="withhold the answer")
    approve.add_argument("--answer", help="deliver this text instead (an 'edit' decision)")
    reject.add_argument("--message", help="reviewer note kept in the rejection notice")
    for sub in (approve, reject):
        sub.add_argument("thread_id")
        common(sub)
        sub.add_argument(
            "--graph",
            required=True,
            metavar="MODULE_OR_FILE:ATTRIBUTE",
            help="the graph that paused, e.g. my_app.agent:graph or ./agent.py:graph",
        )
        sub.add_argument(
            "--interrupt-id",
            help="the review to answer (from 'list'); refused if the thread is not paused on it",
        )
        sub.add_argument("--reviewer", help="name recorded with the decision (default user@host)")
    _add_serve(actions)


def _add_serve(actions: Any) -> None:
    from confessional.telemetry import CAPTURE_MODES

    serve = actions.add_parser(
        "serve",
        help="the reviewers' web page (list, detail, decide)",
        description="Serve a web page where reviewers list pending confession reviews, "
        "read one and approve, edit or reject it. Needs the review-web extra.",
    )
    serve.add_argument(
        "--checkpointer",
        required=True,
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB",
    )
    serve.add_argument(
        "--graph",
        required=True,
        metavar="MODULE_OR_FILE:ATTRIBUTE",
        help="the graph that paused, e.g. my_app.agent:graph or ./agent.py:graph",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)"
    )
    serve.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="read the access token from FILE (first line) instead of generating one",
    )
    serve.add_argument(
        "--capture-content",
        choices=CAPTURE_MODES,
        help="show the model's words (withheld answer, transcript, objectives) unless "
        "NO_CONTENT; default: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, as for spans",
    )
    serve.add_argument(
        "--claim-ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help="take over a claim never applied after this long (default 300)",
    )


@contextmanager
def open_checkpointer(url: str) -> Iterator[BaseCheckpointSaver[Any]]:
    """A sync checkpointer for ``url``, closed on exit. Never creates a database."""
    from confessional.langgraph import checkpoint_serde

    if url.startswith(_SQLITE):
        path = Path(url[len(_SQLITE) :])
        if not path.is_file():
            raise ReviewCommandError(f"no SQLite checkpoint database at {str(path)!r}")
        try:
            from langgraph.checkpoint.sqlite import SqliteSaver
        except ImportError as exc:
            raise MissingExtraError(
                "sqlite", "a SQLite checkpointer", "langgraph-checkpoint-sqlite"
            ) from exc
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, check_same_thread=False)
        try:
            yield SqliteSaver(conn, serde=checkpoint_serde())
        finally:
            conn.close()
        return
    if url.startswith(_POSTGRES):
        try:
            import psycopg
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg.rows import dict_row
        except ImportError as exc:
            raise MissingExtraError(
                "postgres", "a PostgreSQL checkpointer", "langgraph-checkpoint-postgres"
            ) from exc
        try:
            pg = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ReviewCommandError(
                f"cannot connect to the PostgreSQL checkpointer: {first}"
            ) from None
        with pg:
            yield PostgresSaver(pg, serde=checkpoint_serde())  # type: ignore[arg-type]
        return
    raise ReviewCommandError(
        f"--checkpointer {url!r} is not supported; use sqlite:///PATH or postgresql://..."
    )


def load_graph(reference: str, checkpointer: BaseCheckpointSaver[Any]) -> Any:
    """The graph named by ``module_or_file:attribute``, using ``checkpointer``."""
    from langgraph.graph import StateGraph
    from langgraph.pregel import Pregel

    source, sep, attribute = reference.rpartition(":")
    if not sep or not source or not attribute:
        raise ReviewCommandError(
            f"--graph {reference!r} is not MODULE_OR_FILE:ATTRIBUTE (e.g. my_app.agent:graph)"
        )
    module = _import(source)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ReviewCommandError(f"--graph {reference!r}: {source} has no {attribute!r}")
        target = getattr(target, part)
    if callable(target) and not isinstance(target, Pregel | StateGraph):
        required = [
            p
            for p in inspect.signature(target).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if required:
            raise ReviewCommandError(f"--graph {reference!r}: the factory must take no arguments")
        target = target()
    if isinstance(target, StateGraph):
        return target.compile(checkpointer=checkpointer)
    if isinstance(target, Pregel):
        return target.copy({"checkpointer": checkpointer})
    raise ReviewCommandError(
        f"--graph {reference!r} is a {type(target).__name__}, not a compiled graph, "
        "a StateGraph or a function returning one"
    )


def _import(source: str) -> Any:
    if source.endswith(".py") or "/" in source or "\\" in source:
        path = Path(source).resolve()
        if not path.is_file():
            raise ReviewCommandError(f"--graph: no file {source!r}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ReviewCommandError(f"--graph: cannot import {source!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)
        spec.loader.exec_module(module)
        return module
    if str(Path.cwd()) not in sys.path:  # as `python -m`: modules of the current directory
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        raise ReviewCommandError(f"--graph: no module named {exc.name!r}") from None


def _table(reviews: list[PendingReview], out: Printer, content: bool) -> None:
    if not reviews:
        out.line("No confession reviews pending.")
        return
    # Read at 80 columns: one reason per line; ids and decisions are in `show` and --json.
    columns = ["thread", "paused at (UTC)", "grade", "reasons"]
    if content:
        columns.append("withheld answer")
    rows = []
    for r in reviews:
        row = [
            r.thread_id,
            r.paused_at.replace("T", " ")[:19],
            "-" if r.grade is None else str(r.grade),
            "\n".join(r.reasons),
        ]
        if content:
            row.append(r.answer or "")
        rows.append(row)
    out.table(
        columns,
        rows,
        title=f"{len(reviews)} pending confession review(s)",
        no_wrap=(0, 1),
    )
    out.line(
        "Decide: confessional review approve|reject THREAD --checkpointer URL "
        "--graph MODULE:ATTR (show THREAD for details)"
    )


def _show(review: PendingReview, out: Printer) -> None:
    out.rule(f"thread {review.thread_id}")
    for label, value in (
        ("checkpoint", review.checkpoint_id),
        ("interrupt", review.interrupt_id),
        ("paused at", review.paused_at),
        ("grade", "-" if review.grade is None else str(review.grade)),
        ("verdict", review.verdict or "-"),
        ("action", review.action),
        ("decisions", ", ".join(review.allowed_decisions)),
    ):
        out.line(f"{label:>11}: {value}")
    out.line()
    for line in review.description.splitlines():
        out.line(line)
    if review.details:
        out.line()
        out.line("confession:", style="bold")
        for line in review.details.splitlines():
            out.line(line)
    if review.answer is not None:
        out.line()
        out.line("withheld answer:", style="bold")
        out.line(review.answer)


def _emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _token(path: Path | None) -> tuple[str, bool]:
    """The access token and whether it was generated here."""
    if path is None:
        from confessional.review.web import new_token

        return new_token(), True
    lines = path.read_text(encoding="utf-8").splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise ReviewCommandError(
            f"--token-file {str(path)!r}: the first line must hold a token of 16 characters or more"
        )
    return token, False


def _serve(args: argparse.Namespace, saver: BaseCheckpointSaver[Any]) -> int:
    from confessional.review import DEFAULT_CLAIM_TTL_S
    from confessional.review.web import create_app, serve

    token, generated = _token(args.token_file)
    graph = load_graph(args.graph, saver)
    app = create_app(
        checkpointer=saver,
        graph=graph,
        token=token,
        capture_content=args.capture_content,
        claim_ttl_s=DEFAULT_CLAIM_TTL_S if args.claim_ttl is None else args.claim_ttl,
    )

    def started(url: str) -> None:
        # Plain prints, flushed: scripts and tests read these lines as they come.
        print(f"Reviewing at {url}/login", flush=True)
        if generated:
            print(f"Access token: {token}", flush=True)
        else:
            print(f"Access token: read from {args.token_file}", flush=True)
        print("Stop with Ctrl+C.", flush=True)

    serve(app, host=args.host, port=args.port, started=started)
    return 0


def run(args: argparse.Namespace, out: Printer) -> int:
    with open_checkpointer(args.checkpointer) as saver:
        command = args.review_command
        if command == "serve":
            return _serve(args, saver)
        if command in ("list", "show"):
            thread = args.thread_id if command == "show" else None
            reviews = pending(saver, thread_id=thread, content=args.content)
            if command == "show" and not reviews:
                raise ReviewError(f"thread {thread!r} is not paused on a confession review")
            if args.json:
                items = [r.to_json() for r in reviews]
                _emit_json(items[0] if command == "show" else items)
            elif command == "show":
                _show(reviews[0], out)
            else:
                _table(reviews, out, args.content)
            return 0
        graph = load_graph(args.graph, saver)
        if command == "approve":
            decision: dict[str, Any] = (
                {
                    "type": "edit",
                    "edited_action": {"name": "deliver_answer", "args": {"answer": args.answer}},
                }
                if args.answer is not None
                else {"type": "approve"}
            )
        else:
            decision = {"type": "reject"}
            if args.message:
                decision["message"] = args.message
        done = resume(
            graph,
            args.thread_id,
            {"decisions": [decision]},
            interrupt_id=args.interrupt_id,
            reviewer=args.reviewer,
        )
        outcome = "paused again for review" if done.paused_again else "finished"
        if args.json:
            _emit_json(
                {
                    "thread_id": done.thread_id,
                    "interrupt_id": done.interrupt_id,
                    "decision": done.decision.action,
                    "paused_again": done.paused_again,
                }
            )
        else:
            out.line(
                f"{done.decision.action}: thread {done.thread_id} resumed "
                f"(review {done.interrupt_id}); the run {outcome}."
            )
        return 0
