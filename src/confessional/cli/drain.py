"""``confessional drain SPOOL``: confess the background episodes spooled at shutdown.

The spool (see :mod:`confessional.spool`) holds the episodes; the settings come from this
command, because models, sinks and policies are objects no file can hold:

- ``--options module:attr``: a :class:`~confessional.ConfessionOptions` (or a function
  returning one) importable by the draining process, normally the very object the agent
  uses, so the drained confessions get the same model, policy, auditor, sinks and
  telemetry as live ones;
- ``--model provider:model``: the confessing model as an ``init_chat_model`` string, on
  top of ``--options`` or alone;
- ``--out FILE``: also append every drained confession to a JSON Lines file;
- ``--queue URL``: load the episodes into the PostgreSQL queue instead (see
  :mod:`confessional.queue`), for ``confessional worker`` to confess: no model needed.

Drained confessions run inline (``background`` is off), and every spooled episode is
confessed (no second ``sample_rate`` draw: it was sampled when it was spooled).

The spool is first renamed to ``SPOOL.draining-<pid>``, so confessions spooled meanwhile
by a running agent go to a fresh file and two drains never take the same records.
Episodes whose confession fails again (the model is still down) are appended back to
SPOOL for the next drain. Leftovers of an interrupted drain (``SPOOL.draining-*``) are
drained too, so nothing is left behind, at the price of maybe confessing an episode
twice after a crash.

Exit status: 0 when every episode was confessed, 1 when some were spooled again, 2 for
bad input (no spool, unreadable record, bad ``--options``), which leaves the spool as it
was.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

from confessional._render import Printer
from confessional.errors import ConfigurationError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "drain",
        help="confess the background episodes spooled at shutdown",
        description="Confess every episode in a spool file written at shutdown (SIGTERM, "
        "SIGINT, exit) by background mode, with the settings given here. Episodes that "
        "fail again are spooled back for the next drain.",
    )
    parser.add_argument("spool", type=Path, metavar="SPOOL", help="the spool file")
    add_settings_arguments(parser)
    parser.add_argument(
        "--queue",
        metavar="URL",
        help="load the spooled episodes into this PostgreSQL queue instead of confessing "
        "them here (workers confess them; no model needed)",
    )
    parser.set_defaults(run=run)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """``--options``, ``--model`` and ``--out``: where a command that confesses outside the
    agent's process (drain, worker) gets the agent's settings; see :func:`load_options`."""
    parser.add_argument(
        "--options",
        metavar="MODULE:ATTR",
        help="a ConfessionOptions (or a function returning one) to import, e.g. "
        "myapp.agent:CONFESSION_OPTIONS: the settings the agent itself uses",
    )
    parser.add_argument(
        "--model", help="the confessing model, an init_chat_model string (provider:model)"
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="also append the confessions to this JSONL file"
    )


def load_options(args: argparse.Namespace, command: str = "drain") -> Any:
    """The :class:`~confessional.ConfessionOptions` from the flags of
    :func:`add_settings_arguments`; ``command`` names the command in errors."""
    spec, model, out = args.options, args.model, args.out
    from confessional.options import ConfessionOptions
    from confessional.sinks import JsonlSink

    options: Any = None
    if spec is not None:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ConfigurationError(f"--options must be MODULE:ATTR, got {spec!r}")
        try:
            options = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"--options {spec}: cannot import it ({exc})") from exc
        if callable(options) and not isinstance(options, ConfessionOptions):
            options = options()
        if not isinstance(options, ConfessionOptions):
            raise ConfigurationError(
                f"--options {spec} must be a ConfessionOptions or a function returning one, "
                f"got {type(options).__name__}"
            )
    # Inline. The episodes were selected when they were spooled (``selected=True`` below).
    settings: dict[str, Any] = {"background": False}
    if model is not None:
        settings["model"] = model
    if out is not None:
        base = options.sinks if options is not None else ()
        settings["sinks"] = [*base, JsonlSink(out)]
    options = ConfessionOptions.merge(options, settings)
    if not options.has_model:
        raise ConfigurationError(
            f"{command} needs the model that confesses: pass --model provider:model, or "
            "--options MODULE:ATTR with a model or confessor"
        )
    return options


def _claim(spool: Path) -> list[Path]:
    """Rename the spool for this drain; with the leftovers of interrupted drains."""
    leftovers = sorted(spool.parent.glob(f"{spool.name}.draining-*"))
    if spool.exists():
        claimed = spool.with_name(f"{spool.name}.draining-{os.getpid()}")
        spool.rename(claimed)
        leftovers.append(claimed)
    return leftovers


def _into_queue(spool_path: Path, url: str, out: Printer) -> int:
    """``--queue``: move every spooled record into the queue table, its record id as the
    confession id (loading the same record twice enqueues it once)."""
    from confessional._jsonl import read_jsonl
    from confessional.cli.queue import migrate
    from confessional.queue import QueueStore
    from confessional.spool import read_spool

    if not spool_path.exists() and not list(
        spool_path.parent.glob(f"{spool_path.name}.draining-*")
    ):
        raise ConfigurationError(f"no spool at {spool_path}")
    store = QueueStore(url)
    try:
        migrate(store)
        files = _claim(spool_path)
        try:  # every record is read back (validated) before any is queued
            records = [record for file in files for _, record in read_jsonl(file)]
            for _ in (item for file in files for item in read_spool(file)):
                pass
        except (ValueError, ConfigurationError) as exc:
            for file in files:  # give the records back untouched
                if not spool_path.exists():
                    file.rename(spool_path)
            raise ConfigurationError(str(exc)) from None
        loaded = already = 0
        for record in records:  # a crash here leaves the files: reloading is idempotent
            if store.enqueue(record, confession_id=str(record["id"]), producer="drain"):
                loaded += 1
            else:
                already += 1
        for file in files:
            file.unlink()
    finally:
        store.close()
    out.line(f"{loaded} spooled episode(s) queued ({already} were queued already).")
    return 0


def run(args: argparse.Namespace, out: Printer) -> int:
    from confessional.pipeline import ConfessionPipeline, EpisodeCall
    from confessional.spool import Spool, read_spool

    if args.queue:
        return _into_queue(args.spool, args.queue, out)
    options = load_options(args)
    pipeline = ConfessionPipeline(options)  # builds the model: fails before the spool is touched
    spool_path: Path = args.spool
    if not spool_path.exists() and not list(
        spool_path.parent.glob(f"{spool_path.name}.draining-*")
    ):
        raise ConfigurationError(f"no spool at {spool_path}")
    files = _claim(spool_path)
    try:
        spooled = [episode for file in files for episode in read_spool(file)]
    except ConfigurationError:
        for file in files:  # give the records back untouched
            if not spool_path.exists():
                file.rename(spool_path)
        raise
    respool = Spool(spool_path)
    outcomes: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    for item in spooled:
        confession = pipeline.run(
            EpisodeCall(
                item.episode,
                tools=item.tools,
                agent_name=item.agent_name,
                model_settings=item.model_settings,
                parent=item.parent,
                selected=True,
            )
        )
        if confession.status == "error":
            respool.append(
                item.episode,
                agent_name=item.agent_name,
                run_id=item.run_id,
                model_name=item.model_name,
                model_settings=item.model_settings,
                parent=item.parent,
                reason=f"drain failed: {confession.error_type or 'error'}",
                record_id=item.id,
            )
            outcomes["spooled again"] += 1
        else:
            outcomes["delivered"] += 1
            verdicts[str(confession.verdict)] += 1
    respool.close()
    for file in files:
        file.unlink()
    out.table(
        ["episodes", "delivered", "spooled again", "verdicts"],
        [
            [
                str(len(spooled)),
                str(outcomes["delivered"]),
                str(outcomes["spooled again"]),
                ", ".join(f"{v}: {n}" for v, n in sorted(verdicts.items())) or "-",
            ]
        ],
        title=f"confessional drain {spool_path}",
    )
    out.line(
        f"{len(spooled)} spooled episode(s): {outcomes['delivered']} delivered, "
        f"{outcomes['spooled again']} spooled again."
    )
    if outcomes["spooled again"]:
        out.line(
            f"{outcomes['spooled again']} episode(s) failed again and are back in "
            f"{spool_path}; run drain again when the model answers.",
            style="bold red",
        )
        return 1
    return 0
