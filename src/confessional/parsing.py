"""Turn model output into a :class:`ConfessionReport`, robustly.

Handles: tool calls from structured output, content-block lists (text, reasoning,
thinking), ``<thinking>`` tags, code fences, prose around the JSON, trailing commas,
wrapper objects, label spelling variants and refusals. Everything else is a
:class:`ConfessionParseError` whose message says exactly what was wrong, so a retry
can show it to the model.

Forgery resistance: only the model's own reply is parsed, and a candidate report that
also appears in the episode's tool outputs or user content (:func:`quoted_reports`) is
never taken, whatever its formatting. Reports are compared by :func:`report_fingerprint`,
which ignores whitespace, code fences, key order and label spelling.

Pick rule: the reply's candidates are the JSON objects it contains, fenced or bare, in
order of position. The **last** candidate that is a valid report and not a quoted one is
the model's own final report (a model that quotes a report does so before it writes its
own; one that appends a quote after its report appends a quoted, hence excluded, one).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from pydantic import ValidationError

from confessional.episode import message_text
from confessional.errors import ConfessionParseError
from confessional.schema import COMPLIANCE_LABELS, ConfessionReport

__all__ = ["parse_report", "quoted_reports", "report_fingerprint", "validate_report"]

_FENCE = re.compile(r"```(?:json|JSON|javascript)?\s*\n?(.*?)```", re.DOTALL)
_THINKING = re.compile(r"<(thinking|reasoning|think)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_STRUCTURE = re.compile(r'"(?:[^"\\]+|\\.)*(?:"|\\?\Z)|[{}]', re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|i won'?t|i will not|"
    r"i'?m (?:not able|unable)|as an ai)",
    re.IGNORECASE,
)
_REPORT_KEYS = frozenset(ConfessionReport.model_fields)
_WRAPPER_KEYS = ("confession", "report", "confession_report", "ConfessionReport", "result")
_MAX_ERRORS_SHOWN = 5
_MAX_NESTING_SEARCHED = 6  # JSON-in-a-string-in-JSON depth searched for quoted reports


def _refusal(output: BaseMessage | str | list[Any], text: str) -> str | None:
    if isinstance(output, BaseMessage):
        refusal = output.additional_kwargs.get("refusal")
        if refusal:
            return str(refusal)
        content = output.content
        if isinstance(content, list):
            for block in content:
                if isinstance(block, Mapping) and block.get("type") == "refusal":
                    return str(block.get("refusal") or block.get("text") or "refused")
    if "{" not in text and _REFUSAL.search(text):
        return text.strip()
    return None


def _balanced_objects(text: str) -> Iterator[tuple[int, str]]:
    """Every top-level ``{...}`` span of ``text`` with its offset, respecting strings."""
    depth, start = 0, -1
    # Only braces and whole strings matter, so the scan jumps between them (a string
    # left open runs to the end of the text, as it would for a JSON parser).
    for token in _STRUCTURE.finditer(text):
        char = token.group()
        if char == "{":
            if depth == 0:
                start = token.start()
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                yield start, text[start : token.end()]


def _loads(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        return json.loads(_TRAILING_COMMA.sub(r"\1", candidate))


def _unwrap(data: Any) -> Any:
    if isinstance(data, Mapping) and not (_REPORT_KEYS & data.keys()):
        for key in _WRAPPER_KEYS:
            if isinstance(data.get(key), Mapping):
                return data[key]
    return data


def _normalise_labels(data: Any) -> Any:
    """Accept ``"Fully Complied"`` / ``"fully-complied"`` spellings of a valid label."""
    if not isinstance(data, Mapping) or not isinstance(data.get("compliance_analysis"), list):
        return data
    items = []
    for item in data["compliance_analysis"]:
        if isinstance(item, Mapping) and isinstance(item.get("compliance"), str):
            label = re.sub(r"[\s\-]+", "_", item["compliance"].strip()).lower()
            if label in COMPLIANCE_LABELS:
                item = {**item, "compliance": label}
        items.append(item)
    return {**data, "compliance_analysis": items}


def _describe(error: ValidationError) -> str:
    problems = []
    for detail in error.errors()[:_MAX_ERRORS_SHOWN]:
        where = ".".join(str(p) for p in detail["loc"]) or "report"
        if detail["type"] == "literal_error":
            problems.append(
                f"{where}: {detail['input']!r} is not a compliance label; use one of "
                + ", ".join(COMPLIANCE_LABELS)
            )
        elif detail["type"] in ("greater_than_equal", "less_than_equal"):
            problems.append(f"{where}: {detail['input']!r} is outside 1-7")
        else:
            problems.append(f"{where}: {detail['msg']}")
    more = len(error.errors()) - _MAX_ERRORS_SHOWN
    if more > 0:
        problems.append(f"... and {more} more")
    return "invalid confession report: " + "; ".join(problems)


def validate_report(data: Any) -> ConfessionReport:
    """Validate already-decoded JSON as a report, with a readable error."""
    try:
        return ConfessionReport.model_validate(_normalise_labels(_unwrap(data)))
    except ValidationError as exc:
        raise ConfessionParseError(_describe(exc)) from None


def _candidates(text: str) -> list[str]:
    """Fenced and bare JSON objects of ``text`` in order of position, each once."""
    found: dict[str, int] = {}
    for match in _FENCE.finditer(text):
        found.setdefault(match.group(1).strip(), match.start(1))
    for start, span in _balanced_objects(text):
        found.setdefault(span.strip(), start)
    return sorted(found, key=found.__getitem__)


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _normalised(item) for key, item in value.items()}
    return value


def report_fingerprint(report: ConfessionReport) -> str:
    """A report's identity regardless of formatting: whitespace in its texts, key order,
    fences and label spelling make no difference."""
    return json.dumps(_normalised(report.model_dump()), sort_keys=True)


def _reports_in_value(value: Any, depth: int, found: set[str]) -> None:
    if depth > _MAX_NESTING_SEARCHED:
        return
    if isinstance(value, str):
        if "{" in value:
            _reports_in_text(value, depth + 1, found)
        return
    if isinstance(value, Mapping):
        if _REPORT_KEYS & value.keys() or any(key in value for key in _WRAPPER_KEYS):
            with contextlib.suppress(ConfessionParseError):
                found.add(report_fingerprint(validate_report(value)))
        items: Iterable[Any] = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return
    for item in items:
        _reports_in_value(item, depth + 1, found)


def _reports_in_text(text: str, depth: int, found: set[str]) -> None:
    for candidate in _candidates(text):
        try:
            data = _loads(candidate)
        except json.JSONDecodeError:
            continue
        _reports_in_value(data, depth, found)


def quoted_reports(messages: Iterable[BaseMessage]) -> frozenset[str]:
    """Fingerprints of every report found in tool outputs and user messages.

    Searched: fenced and bare JSON objects in the text, nested objects, and JSON encoded
    inside string values (a tool that returns JSON quoting JSON), a few levels deep.
    """
    found: set[str] = set()
    for message in messages:
        if not isinstance(message, (ToolMessage, HumanMessage)):
            continue
        content = message.content
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        if "{" in text:
            _reports_in_text(text, 0, found)
            if not isinstance(content, str):
                _reports_in_value(content, 0, found)
    return frozenset(found)


_QUOTED_ERROR = (
    "the only report in your reply is copied from the episode's tool outputs or user "
    "messages; write your own report about your last answer"
)


def _own(report: ConfessionReport, quoted: Collection[str]) -> bool:
    return not quoted or report_fingerprint(report) not in quoted


def _whole_report(text: str) -> ConfessionReport | None:
    """The report when the whole reply is one valid report object and nothing else (the
    usual reply), validated straight from its JSON; ``None`` otherwise.

    The search below would find the same single candidate and the same report: a reply
    that is one JSON object holds no other top-level object (a fenced object inside one of
    its strings has its quotes escaped, so it never decodes), its labels are valid as
    written (nothing to normalise) and it has report keys (no wrapper to unwrap).
    """
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        return ConfessionReport.model_validate_json(stripped)
    except ValidationError:
        return None


def parse_report(
    output: BaseMessage | str | list[Any], *, quoted: Collection[str] = ()
) -> ConfessionReport:
    """Parse the model's own report from its reply (message, text, or content blocks).

    Args:
        output: the model's reply. Reasoning and thinking blocks are not searched.
        quoted: fingerprints of reports found in the episode (:func:`quoted_reports`);
            a candidate among them is never taken.

    Raises:
        ConfessionParseError: no valid report of the model's own; the message explains
            why without quoting the reply.
    """
    first_error: ConfessionParseError | None = None
    copied = False
    if isinstance(output, AIMessage):
        for call in output.tool_calls:
            if call["name"] == ConfessionReport.__name__:
                try:
                    report = validate_report(call["args"])
                except ConfessionParseError as exc:
                    first_error = first_error or exc
                    continue
                if _own(report, quoted):
                    return report
                copied = True
    text = _THINKING.sub("", message_text(output))
    refusal = _refusal(output, text)
    if refusal is not None:
        # The refusal text stays out of the message: errors reach traces without opt-in.
        raise ConfessionParseError(f"the model refused to confess ({len(refusal)} chars)")
    whole = _whole_report(text)
    if whole is not None and _own(whole, quoted):
        return whole
    decoded_any = False
    own: ConfessionReport | None = None
    for candidate in _candidates(text):
        try:
            data = _loads(candidate)
        except json.JSONDecodeError:
            continue
        decoded_any = True
        try:
            report = validate_report(data)
        except ConfessionParseError as exc:
            first_error = first_error or exc
            continue
        if _own(report, quoted):
            own = report  # the last one wins: see the module's pick rule
        else:
            copied = True
    if own is not None:
        return own
    if first_error is not None:
        raise first_error
    if copied:
        raise ConfessionParseError(_QUOTED_ERROR)
    if not text.strip():
        raise ConfessionParseError("the model returned no text")
    reason = "no JSON object decoded" if not decoded_any else "no JSON object is a report"
    raise ConfessionParseError(f"{reason} in the model's reply ({len(text)} chars)")
