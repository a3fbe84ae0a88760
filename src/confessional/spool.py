"""The spool: background episodes that could not be confessed before the process ended.

At shutdown (SIGTERM, SIGINT, interpreter exit) background confessions get
``flush_timeout_s`` to finish. Every episode still pending then is written here instead of
being dropped: one JSON object per line, appended, fsynced per record. A later process
confesses them with ``confessional drain SPOOL`` (see :mod:`confessional.cli.drain`).

A record holds everything a later process needs to replay the confession, and nothing
that only lives in memory:

- ``messages``: the whole conversation, as ``langchain_core.messages.messages_to_dict``
  writes it (read back with ``messages_from_dict``);
- ``tools``: the agent's tool definitions (name, description, JSON-schema parameters);
- ``agent_name``, ``run_id``, ``model_name`` (the model that would have confessed, for
  information: the drain command's own settings choose the model);
- ``model_settings``: the agent's request parameters that are JSON values (the names of
  any others are listed in ``dropped_settings``);
- ``traceparent``: the W3C trace context the confession would have nested under, so the
  drained confession's span joins the agent's original trace.

The spool holds conversation text, like the agent's own logs: the file is created with
mode 0600.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final
from uuid import UUID

from langchain_core.messages import messages_from_dict, messages_to_dict
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from confessional._jsonl import JsonlFile, read_jsonl
from confessional.episode import Episode, ToolDefinition, extract_episode
from confessional.errors import ConfigurationError

__all__ = [
    "SPOOL_ENV",
    "SPOOL_VERSION",
    "Spool",
    "SpooledEpisode",
    "default_spool_path",
    "episode_from_record",
    "episode_record",
    "read_spool",
]

SPOOL_VERSION: Final = 1
"""Format version written in every record; readers refuse versions they do not know."""
SPOOL_ENV: Final = "CONFESSIONAL_SPOOL"
"""Environment variable naming the spool file when ``ConfessionOptions.spool`` is unset."""

_RECORD_TYPE: Final = "spooled_episode"
_propagator = TraceContextTextMapPropagator()


def default_spool_path() -> Path:
    """``$CONFESSIONAL_SPOOL``, else ``$XDG_STATE_HOME/confessional/spool.jsonl`` (with
    ``~/.local/state`` when ``XDG_STATE_HOME`` is unset): state that must outlive the
    process, in the place the XDG base-directory convention gives such state."""
    explicit = os.environ.get(SPOOL_ENV)
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "confessional" / "spool.jsonl"


@dataclass(frozen=True)
class SpooledEpisode:
    """One spooled episode, read back: what the drain command confesses."""

    id: str
    episode: Episode
    agent_name: str | None = None
    run_id: UUID | None = None
    model_name: str | None = None
    model_settings: Mapping[str, Any] = field(default_factory=dict)
    parent: Context | None = None
    spooled_at: datetime | None = None
    reason: str = ""
    line: int = 0
    """Line of the spool file it was read from."""

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The agent's tools as OpenAI tool dicts, as a model binds them."""
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": dict(tool.parameters),
                },
            }
            for tool in self.episode.tools
        ]


class Spool:
    """An append-only spool file (the file is opened on the first record)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._file = JsonlFile(path if path is not None else default_spool_path())

    @property
    def path(self) -> Path:
        return self._file.path

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    def append(
        self,
        episode: Episode,
        *,
        agent_name: str | None = None,
        run_id: UUID | None = None,
        model_name: str | None = None,
        model_settings: Mapping[str, Any] | None = None,
        parent: Context | None = None,
        reason: str = "shutdown",
        record_id: str | None = None,
    ) -> str:
        """Write one episode (fsynced before this returns); returns the record's id.

        Raises ``OSError`` when the file cannot be written, and ``TypeError`` or
        ``ValueError`` when the messages cannot be serialised.
        """
        record = episode_record(
            episode,
            agent_name=agent_name,
            run_id=run_id,
            model_name=model_name,
            model_settings=model_settings,
            parent=parent,
            reason=reason,
            record_id=record_id,
        )
        self._file.append(record)
        return str(record["id"])

    def close(self) -> None:
        self._file.close()


def read_spool(path: str | os.PathLike[str]) -> Iterator[SpooledEpisode]:
    """Every episode in a spool file, in order.

    Raises :class:`~confessional.ConfigurationError` naming the line for a record that is
    not a spooled episode of a known version (a last line cut short by a crash is skipped).
    """
    try:
        for number, record in read_jsonl(path):
            yield _from_record(record, number, path)
    except ValueError as exc:  # a line that is not JSON
        raise ConfigurationError(str(exc)) from None


def episode_record(
    episode: Episode,
    *,
    agent_name: str | None = None,
    run_id: UUID | None = None,
    model_name: str | None = None,
    model_settings: Mapping[str, Any] | None = None,
    parent: Context | None = None,
    reason: str = "shutdown",
    record_id: str | None = None,
) -> dict[str, Any]:
    """One episode as a spool record (a JSON object), as :meth:`Spool.append` writes it
    and the work queue (:mod:`confessional.queue`) stores it.

    Raises ``TypeError`` or ``ValueError`` when the messages cannot be serialised.
    """
    settings, dropped = _json_values(model_settings or {})
    carrier: dict[str, str] = {}
    if parent is not None:
        _propagator.inject(carrier, context=parent)
    return {
        "type": _RECORD_TYPE,
        "spool_version": SPOOL_VERSION,
        "id": record_id or uuid.uuid4().hex,
        "spooled_at": datetime.now(timezone.utc).isoformat(),
        "reason": reason,
        "agent_name": agent_name,
        "run_id": str(run_id) if run_id is not None else None,
        "model_name": model_name,
        "model_settings": settings,
        "dropped_settings": dropped,
        "traceparent": carrier.get("traceparent"),
        "tools": [dataclasses.asdict(tool) for tool in episode.tools],
        "messages": messages_to_dict(list(episode.messages)),
    }


def episode_from_record(record: Any, *, where: str) -> SpooledEpisode:
    """A record written by :func:`episode_record`, read back. Raises
    :class:`~confessional.ConfigurationError` naming ``where`` when it cannot be."""
    return _read_record(record, 0, where)


def _from_record(record: Any, line: int, path: str | os.PathLike[str]) -> SpooledEpisode:
    return _read_record(record, line, f"{path}: line {line}")


def _read_record(record: Any, line: int, where: str) -> SpooledEpisode:
    if not isinstance(record, Mapping) or record.get("type") != _RECORD_TYPE:
        raise ConfigurationError(f"{where} is not a spooled episode")
    version = record.get("spool_version")
    if version != SPOOL_VERSION:
        raise ConfigurationError(
            f"{where} has spool_version {version!r}; this confessional reads version "
            f"{SPOOL_VERSION}"
        )
    try:
        messages = messages_from_dict(list(record["messages"]))
        tools = [ToolDefinition(**tool) for tool in record.get("tools") or []]
        episode = extract_episode(messages, tools=tools)
        run_id = UUID(record["run_id"]) if record.get("run_id") else None
        spooled_at = (
            datetime.fromisoformat(record["spooled_at"]) if record.get("spooled_at") else None
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where} cannot be read back: {exc}") from None
    traceparent = record.get("traceparent")
    parent = _propagator.extract({"traceparent": traceparent}) if traceparent else None
    return SpooledEpisode(
        id=str(record.get("id") or f"line-{line}"),
        episode=episode,
        agent_name=record.get("agent_name"),
        run_id=run_id,
        model_name=record.get("model_name"),
        model_settings=dict(record.get("model_settings") or {}),
        parent=parent,
        spooled_at=spooled_at,
        reason=str(record.get("reason") or ""),
        line=line,
    )


def _json_values(settings: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings that are JSON values, and the names of those that are not."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in settings.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            dropped.append(str(name))
        else:
            kept[str(name)] = value
    return kept, sorted(dropped)
