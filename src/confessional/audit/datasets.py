"""Audit logged runs from JSON Lines files and measure the audit against their labels.

The ``confessional audit`` command and the tests both use this module, so the figures a
user sees are the figures the tests assert. No model is needed.

Formats (one episode per line):

- ``agentdojo``: AgentDojo run logs. An optional header line ``{"metadata": {...}}``,
  then ``{"messages": [...], "metadata": {"injection_task_id", "security", ...}}``.
  Labels: ``benign`` (no injection task), ``attack_succeeded`` (``security`` true: the
  injected goal was reached, by AgentDojo's exact-match checker) or ``attack_failed``.
- ``openai``: a list of OpenAI-format messages, or ``{"messages": [...]}`` with optional
  ``"tools"`` (OpenAI tool specs), ``"name"`` and ``"label"`` (one of the labels above).
- ``langchain``: the same, with LangChain message dicts (``messages_to_dict`` output or
  ``{"type": "human", "content": ...}``).

Detection means at least one ``injected_argument`` finding at or above
``min_severity``; ``exposure_unresolved`` never counts as one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from confessional.audit import Auditor
from confessional.episode import extract_episode
from confessional.errors import ConfessionalError
from confessional.findings import (
    EXPOSURE_UNRESOLVED,
    INJECTED_ARGUMENT,
    SEVERITY_RANK,
    UNSOURCED_ARGUMENT,
    Finding,
    Severity,
)

__all__ = [
    "FORMATS",
    "GROUPS",
    "DatasetError",
    "DatasetFormat",
    "DatasetReport",
    "EpisodeAudit",
    "Group",
    "GroupCounts",
    "LoggedEpisode",
    "audit_episodes",
    "detect_format",
    "parse_records",
    "read_dataset",
]

DatasetFormat = Literal["agentdojo", "openai", "langchain"]
FORMATS: Final[tuple[str, ...]] = get_args(DatasetFormat)
Group = Literal["benign", "attack_succeeded", "attack_failed"]
GROUPS: Final[tuple[str, ...]] = get_args(Group)


class DatasetError(ConfessionalError, ValueError):
    """A dataset file cannot be read: unreadable, not JSON Lines, or not the format."""


@dataclass(frozen=True)
class LoggedEpisode:
    """One episode of a dataset file, before conversion."""

    line: int
    name: str
    group: Group | None
    messages: Sequence[Any]
    tools: Sequence[Any] = ()


def _agentdojo_episode(line: int, record: Mapping[str, Any]) -> LoggedEpisode:
    meta = record.get("metadata")
    if not isinstance(meta, Mapping):
        raise DatasetError(f"line {line}: an AgentDojo episode needs a 'metadata' object")
    injection = meta.get("injection_task_id")
    group: Group = (
        "benign"
        if injection is None
        else "attack_succeeded"
        if meta.get("security")
        else "attack_failed"
    )
    parts = [str(meta.get(k)) for k in ("suite_name", "user_task_id") if meta.get(k) is not None]
    name = "/".join(parts) or f"line {line}"
    if injection is not None:
        name += f" + {injection}"
    if "index" in record:
        name = f"#{record['index']} {name}"
    return LoggedEpisode(line, name, group, _messages_of(line, record))


def _messages_of(line: int, record: Mapping[str, Any]) -> Sequence[Any]:
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise DatasetError(f"line {line}: expected a 'messages' list")
    return messages


def _generic_episode(line: int, record: Any) -> LoggedEpisode:
    if isinstance(record, list):
        return LoggedEpisode(line, f"line {line}", None, record)
    if not isinstance(record, Mapping):
        raise DatasetError(f"line {line}: expected a list of messages or an object")
    meta = record.get("metadata")
    label = record.get("label", meta.get("label") if isinstance(meta, Mapping) else None)
    if label is not None and label not in GROUPS:
        raise DatasetError(f"line {line}: label must be one of {', '.join(GROUPS)}")
    tools = record.get("tools") or ()
    name = str(record.get("name") or record.get("id") or f"line {line}")
    return LoggedEpisode(line, name, label, _messages_of(line, record), tools)


def detect_format(records: Sequence[tuple[int, Any]]) -> DatasetFormat:
    """Guess the format from the first records."""
    for _, record in records[:3]:
        if isinstance(record, Mapping):
            meta = record.get("metadata")
            if isinstance(meta, Mapping) and (
                "agent" in str(meta.get("benchmark", "")).replace("-", "").lower()
                or "injection_task_id" in meta
            ):
                return "agentdojo"
    for _, record in records[:3]:
        messages = record.get("messages") if isinstance(record, Mapping) else record
        if isinstance(messages, list) and messages and isinstance(messages[0], Mapping):
            return "openai" if "role" in messages[0] else "langchain"
    return "openai"


def parse_records(
    records: Sequence[tuple[int, Any]], format: DatasetFormat | None = None
) -> list[LoggedEpisode]:
    """Episodes from ``(line number, decoded JSON)`` pairs."""
    chosen = format or detect_format(records)
    if chosen not in FORMATS:
        raise DatasetError(f"unknown format {chosen!r}; expected one of {', '.join(FORMATS)}")
    episodes: list[LoggedEpisode] = []
    for line, record in records:
        if isinstance(record, Mapping) and set(record) == {"metadata"}:
            continue  # a header line
        if chosen == "agentdojo":
            if not isinstance(record, Mapping):
                raise DatasetError(f"line {line}: an AgentDojo episode must be an object")
            episodes.append(_agentdojo_episode(line, record))
        else:
            episodes.append(_generic_episode(line, record))
    return episodes


def read_dataset(path: str | Path, format: DatasetFormat | None = None) -> list[LoggedEpisode]:
    """Read a JSON Lines dataset. Raises :class:`DatasetError` with a one-line reason."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DatasetError(f"cannot read {path}: {reason}") from None
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {number} is not JSON ({exc.msg})") from None
    return parse_records(records, format)


@dataclass(frozen=True)
class EpisodeAudit:
    """The audit of one logged episode."""

    episode: LoggedEpisode
    findings: tuple[Finding, ...]
    error: str | None = None
    """Why the episode could not be converted, if it could not."""

    def has(self, kind: str, min_severity: Severity = "low") -> bool:
        floor = SEVERITY_RANK[min_severity]
        return any(f.kind == kind and SEVERITY_RANK[f.severity] >= floor for f in self.findings)


@dataclass(frozen=True)
class GroupCounts:
    """Counts of one label group."""

    episodes: int = 0
    detected: int = 0
    """With an ``injected_argument`` finding at or above the threshold."""
    exposure_unresolved: int = 0
    unsourced: int = 0


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class DatasetReport:
    """Per-episode audits and the metrics over them."""

    audits: tuple[EpisodeAudit, ...]
    min_severity: Severity = "low"
    groups: dict[str, GroupCounts] = field(default_factory=dict)

    @classmethod
    def of(cls, audits: Sequence[EpisodeAudit], min_severity: Severity = "low") -> DatasetReport:
        tallies: dict[str, list[int]] = {}
        for audit in audits:
            key = audit.episode.group or "unlabelled"
            tally = tallies.setdefault(key, [0, 0, 0, 0])
            tally[0] += 1
            tally[1] += audit.has(INJECTED_ARGUMENT, min_severity)
            tally[2] += audit.has(EXPOSURE_UNRESOLVED)
            tally[3] += audit.has(UNSOURCED_ARGUMENT)
        groups = {k: GroupCounts(*v) for k, v in tallies.items()}
        return cls(tuple(audits), min_severity, groups)

    def group(self, name: str) -> GroupCounts:
        return self.groups.get(name, GroupCounts())

    @property
    def labelled(self) -> bool:
        return any(g in self.groups for g in GROUPS)

    @property
    def recall(self) -> float | None:
        """Share of succeeded attacks with a detection."""
        g = self.group("attack_succeeded")
        return _rate(g.detected, g.episodes)

    @property
    def precision(self) -> float | None:
        """Share of detections that are succeeded attacks (benign and failed-attack
        detections count against it; failed-attack labels are noisy)."""
        detected = sum(self.group(g).detected for g in GROUPS)
        return _rate(self.group("attack_succeeded").detected, detected)

    @property
    def benign_false_positive_rate(self) -> float | None:
        g = self.group("benign")
        return _rate(g.detected, g.episodes)

    @property
    def failed_attack_flag_rate(self) -> float | None:
        g = self.group("attack_failed")
        return _rate(g.detected, g.episodes)

    @property
    def benign_unsourced_rate(self) -> float | None:
        g = self.group("benign")
        return _rate(g.unsourced, g.episodes)

    @property
    def conversion_errors(self) -> int:
        return sum(1 for a in self.audits if a.error is not None)


def audit_episodes(
    episodes: Iterable[LoggedEpisode],
    *,
    auditor: Auditor | None = None,
    min_severity: Severity = "low",
    on_episode: Callable[[EpisodeAudit], None] | None = None,
) -> DatasetReport:
    """Audit every episode (conversion failures are recorded, not raised)."""
    auditor = auditor or Auditor()
    audits: list[EpisodeAudit] = []
    for logged in episodes:
        try:
            episode = extract_episode(logged.messages, tools=logged.tools or None)
        except (TypeError, ValueError) as exc:
            audit = EpisodeAudit(logged, (), f"{type(exc).__name__}: {exc}")
        else:
            audit = EpisodeAudit(logged, tuple(auditor.audit(episode)))
        audits.append(audit)
        if on_episode is not None:
            on_episode(audit)
    return DatasetReport.of(audits, min_severity)
