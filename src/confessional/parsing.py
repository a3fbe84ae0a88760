"""Turn model output into a :class:`ConfessionReport`, robustly.

Handles: tool calls from structured output, content-block lists (text, reasoning,
thinking), ``<thinking>`` tags, code fences, prose around the JSON, trailing commas,
wrapper objects, label spelling variants and refusals. Everything else is a
:class:`ConfessionParseError` whose message says exactly what was wrong, so a retry
can show it to the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import ValidationError

from confessional.episode import message_text
from confessional.errors import ConfessionParseError
from confessional.schema import COMPLIANCE_LABELS, ConfessionReport

__all__ = ["parse_report", "validate_report"]

_FENCE = re.compile(r"```(?:json|JSON|javascript)?\s*\n?(.*?)```", re.DOTALL)
_THINKING = re.compile(r"<(thinking|reasoning|think)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|i won'?t|i will not|"
    r"i'?m (?:not able|unable)|as an ai)",
    re.IGNORECASE,
)
_REPORT_KEYS = frozenset(ConfessionReport.model_fields)
_WRAPPER_KEYS = ("confession", "report", "confession_report", "ConfessionReport", "result")
_MAX_ERRORS_SHOWN = 5


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


def _balanced_objects(text: str) -> Iterator[str]:
    """Every top-level ``{...}`` span of ``text``, respecting strings and escapes."""
    depth, start, in_string, escaped = 0, -1, False, False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                yield text[start : index + 1]


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


def _candidates(text: str) -> Iterator[str]:
    for match in _FENCE.finditer(text):
        yield match.group(1).strip()
    yield from _balanced_objects(text)


def parse_report(output: BaseMessage | str | list[Any]) -> ConfessionReport:
    """Parse a report from a model reply (message, text, or content blocks).

    Raises:
        ConfessionParseError: no valid report found; the message explains why.
    """
    if isinstance(output, AIMessage):
        for call in output.tool_calls:
            if call["name"] == ConfessionReport.__name__:
                return validate_report(call["args"])
    text = _THINKING.sub("", message_text(output))
    refusal = _refusal(output, text)
    if refusal is not None:
        # The refusal text stays out of the message: errors reach traces without opt-in.
        raise ConfessionParseError(f"the model refused to confess ({len(refusal)} chars)")
    first_error: ConfessionParseError | None = None
    decoded_any = False
    for candidate in _candidates(text):
        try:
            data = _loads(candidate)
        except json.JSONDecodeError:
            continue
        decoded_any = True
        try:
            return validate_report(data)
        except ConfessionParseError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    if not text.strip():
        raise ConfessionParseError("the model returned no text")
    reason = "no JSON object decoded" if not decoded_any else "no JSON object is a report"
    raise ConfessionParseError(f"{reason} in the model's reply ({len(text)} chars)")
