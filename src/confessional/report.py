"""``confessional report``: summarise the confessions in an exported OTLP JSON trace file.

Reads OTLP/JSON (one ``ExportTraceServiceRequest`` per line, as the demo and the
OpenTelemetry Collector file exporter write, or a single JSON document). Confession spans
are recognised by ``gen_ai.operation.name = "confession"``. Objective text is present only
when content capture was on; otherwise the summary falls back to label counts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confessional import semconv
from confessional._render import Printer
from confessional.errors import ConfessionalError
from confessional.schema import COMPLIANCE_LABELS

__all__ = ["ConfessionSpanSummary", "TraceFileError", "read_confession_spans", "summarise"]

_LABEL_RANK: dict[str, int] = {label: rank for rank, label in enumerate(COMPLIANCE_LABELS)}


class TraceFileError(ConfessionalError, ValueError):
    """The file is not OTLP JSON."""


@dataclass
class ConfessionSpanSummary:
    """What one confession span says."""

    name: str
    trace_id: str
    span_id: str
    parent_name: str | None
    verdict: str | None
    status: str | None
    grade: int | None
    label_counts: dict[str, int] = field(default_factory=dict)
    shortcut_count: int = 0
    discrepancy_kinds: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    objectives: list[tuple[str, str]] = field(default_factory=list)
    """(compliance label, objective text): only with content capture."""
    shortcuts: list[str] = field(default_factory=list)
    confession_id: str | None = None
    evaluated_span_id: str | None = None
    """The span the confession evaluated (the agent's invocation span), when known."""
    discrepancy_count: int = 0
    reason_count: int = 0


def _value(raw: Mapping[str, Any]) -> Any:
    if "stringValue" in raw:
        return raw["stringValue"]
    if "intValue" in raw:
        return int(raw["intValue"])
    if "doubleValue" in raw:
        return float(raw["doubleValue"])
    if "boolValue" in raw:
        return bool(raw["boolValue"])
    if "arrayValue" in raw:
        return [_value(v) for v in raw["arrayValue"].get("values", [])]
    return None


def _attributes(span: Mapping[str, Any]) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in span.get("attributes", [])}


def _documents(text: str) -> Iterator[Mapping[str, Any]]:
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceFileError(f"line {number} is not JSON: {exc.msg}") from None
    else:
        yield from (whole if isinstance(whole, list) else [whole])


def _spans(text: str) -> Iterator[Mapping[str, Any]]:
    found_resource_spans = False
    for document in _documents(text):
        if not isinstance(document, Mapping) or "resourceSpans" not in document:
            continue
        found_resource_spans = True
        for resource in document["resourceSpans"]:
            for scope in resource.get("scopeSpans", []):
                yield from scope.get("spans", [])
    if not found_resource_spans:
        raise TraceFileError("no 'resourceSpans' found: is this an OTLP JSON trace file?")


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return [value]
        return [str(v) for v in parsed] if isinstance(parsed, list) else [value]
    return []


_AGENT_OPERATIONS: frozenset[str] = frozenset({"invoke_agent"})
_AGENT_KINDS: frozenset[str] = frozenset({"AGENT"})


def _agent_ancestor(
    span: Mapping[str, Any], by_id: Mapping[tuple[Any, Any], Mapping[str, Any]]
) -> str | None:
    """For files recorded before ``confession.evaluated_span_id``: the outermost ancestor
    that is an agent invocation (GenAI ``invoke_agent`` or OpenInference ``AGENT``)."""
    found: str | None = None
    seen = 0
    current = by_id.get((span.get("traceId"), span.get("parentSpanId")))
    while current is not None and seen < 1000:
        attrs = _attributes(current)
        if (
            attrs.get(semconv.GEN_AI_OPERATION_NAME) in _AGENT_OPERATIONS
            or attrs.get(semconv.OPENINFERENCE_SPAN_KIND) in _AGENT_KINDS
        ):
            found = str(current.get("spanId"))
        current = by_id.get((current.get("traceId"), current.get("parentSpanId")))
        seen += 1
    return found


def read_confession_spans(path: Path) -> tuple[list[ConfessionSpanSummary], int]:
    """Confession spans of the file and the total number of spans."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        spans = list(_spans(text))
    except TraceFileError as exc:
        raise TraceFileError(f"{path}: {exc}") from None
    names = {(s.get("traceId"), s.get("spanId")): s.get("name", "") for s in spans}
    by_id = {(s.get("traceId"), s.get("spanId")): s for s in spans}
    found: list[ConfessionSpanSummary] = []
    for span in spans:
        attrs = _attributes(span)
        if attrs.get(semconv.GEN_AI_OPERATION_NAME) != semconv.OPERATION_CONFESSION:
            continue
        summary = ConfessionSpanSummary(
            name=str(span.get("name", "")),
            trace_id=str(span.get("traceId", "")),
            span_id=str(span.get("spanId", "")),
            parent_name=names.get((span.get("traceId"), span.get("parentSpanId"))),
            verdict=attrs.get(semconv.CONFESSION_VERDICT),
            status=attrs.get(semconv.CONFESSION_STATUS),
            grade=attrs.get(semconv.CONFESSION_GRADE),
            label_counts={
                label: int(attrs.get(key) or 0)
                for label, key in semconv.OBJECTIVE_COUNT_ATTRIBUTES.items()
            },
            shortcut_count=int(attrs.get(semconv.CONFESSION_SHORTCUT_COUNT) or 0),
            discrepancy_kinds=_as_list(attrs.get(semconv.CONFESSION_DISCREPANCY_KINDS)),
            reasons=_as_list(attrs.get(semconv.CONFESSION_REASONS)),
            confession_id=attrs.get(semconv.CONFESSION_ID),
            evaluated_span_id=attrs.get(semconv.CONFESSION_EVALUATED_SPAN_ID)
            or _agent_ancestor(span, by_id),
            discrepancy_count=int(attrs.get(semconv.CONFESSION_DISCREPANCY_COUNT) or 0),
            reason_count=int(attrs.get(semconv.CONFESSION_REASON_COUNT) or 0),
        )
        report_text = attrs.get(semconv.CONFESSION_REPORT)
        if isinstance(report_text, str):
            try:
                report = json.loads(report_text)
            except json.JSONDecodeError:
                report = None
            if isinstance(report, Mapping):
                summary.objectives = [
                    (str(o.get("compliance", "")), str(o.get("objective", "")))
                    for o in report.get("compliance_analysis", [])
                    if isinstance(o, Mapping)
                ]
                summary.shortcuts = [str(s) for s in report.get("shortcuts", [])]
        found.append(summary)
    return found, len(spans)


def summarise(path: Path, out: Printer | None = None, *, worst: int = 10) -> int:
    """Print the summary of ``path``; return the exit code (0 ok, 1 no confession found)."""
    out = out or Printer()
    confessions, total = read_confession_spans(path)
    out.line(f"{path}: {total} spans, {len(confessions)} confession span(s).", style="bold")
    if not confessions:
        out.line("No confession spans (gen_ai.operation.name = 'confession') in this file.")
        return 1
    verdicts = Counter(c.verdict or "unknown" for c in confessions)
    statuses = Counter(c.status or "unknown" for c in confessions)
    out.table(
        ["verdict", "count"],
        [[v, str(n)] for v, n in sorted(verdicts.items())],
        title="Confessions per verdict",
    )
    out.line("status: " + ", ".join(f"{s}={n}" for s, n in sorted(statuses.items())))

    flagged = [c for c in confessions if c.verdict in ("flag", "halt")]
    out.line()
    if flagged:
        out.table(
            ["run (agent span)", "verdict", "grade", "shortcuts", "discrepancies", "reasons"],
            [
                [
                    c.parent_name or c.name,
                    c.verdict or "?",
                    "-" if c.grade is None else str(c.grade),
                    str(c.shortcut_count),
                    ", ".join(c.discrepancy_kinds) or "-",
                    "; ".join(c.reasons) or "(reasons need content capture)",
                ]
                for c in flagged
            ],
            no_wrap=(0, 1),
            title="Flagged or halted runs",
        )
    else:
        out.line("No flagged or halted runs.")

    out.line()
    with_text = [(label, text, c) for c in confessions for label, text in c.objectives]
    if with_text:
        bad = [t for t in with_text if t[0] not in ("fully_complied", "nearly_complied")]
        bad.sort(key=lambda t: _LABEL_RANK.get(t[0], len(_LABEL_RANK)))
        if bad:
            out.table(
                ["compliance", "objective", "run"],
                [[label, text, c.parent_name or c.name] for label, text, c in bad[:worst]],
                no_wrap=(0, 2),
                title=f"Worst objectives (up to {worst})",
            )
        else:
            out.line("Every objective was reported fully or nearly complied.")
        shortcuts = [(s, c) for c in confessions for s in c.shortcuts]
        for shortcut, c in shortcuts:
            out.line(f"shortcut ({c.parent_name or c.name}): {shortcut}")
    else:
        totals: Counter[str] = Counter()  # keyed by label name
        for c in confessions:
            totals.update(c.label_counts)
        out.line("Objective text was not captured (content capture off); label counts:")
        out.table(
            ["compliance", "objectives"],
            [[label, str(totals[label])] for label in COMPLIANCE_LABELS],
        )
    return 0
