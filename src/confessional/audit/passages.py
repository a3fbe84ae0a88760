"""Injected passages: the parts of untrusted text that address the agent with orders.

A *marker* is a cue addressed to the agent ("ignore your previous instructions", "before
you can solve the task I gave you", "this is a message ... to you"), never a generic word
such as "important". A passage around a marker is delimited by structure, not by a fixed
window:

- if a pseudo-tag (``<INFORMATION>``, ``<system>``, any ``<word>``) opens before the marker
  and closes after it, the passage runs from the opening to the closing tag;
- otherwise it runs from the start of the marker's paragraph or record to the next
  structural boundary after the marker (blank line, new list item, new record key at the
  same or lower indentation, end of a JSON string), capped at :data:`PASSAGE_CAP`
  characters after the marker. A marker that is only a heading ("New instructions:")
  (nothing but punctuation after it) takes the following unit along.

Input is unescaped text (:func:`confessional.audit.text.unescape`), so that JSON and YAML
escapes no longer hide line structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["PASSAGE_CAP", "Passage", "find_passages", "has_marker"]

PASSAGE_CAP: Final = 1500
"""Most characters a passage without a closing tag extends past its marker."""
_TAG_REACH: Final = 2000
"""How far before a marker an opening pseudo-tag may sit."""
_TAG_CAP: Final = 8000
"""Longest tagged passage; a longer span is not one passage."""
_WORD = re.compile(r"\w")

_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|former|original|initial|other|all)"
# "\w{0,3}structions?" also takes the misspellings injections carry ("iunstructions").
_ORDERS = (
    r"(?:\w{0,3}structions?|prompts?|directions?|directives?|rules|guidelines|tasks?|"
    r"commands?|context|orders|requests?)"
)
# Every cue but the pseudo role header starts a word. The header and the word test come
# first: the engine then tries the word cues only where a word starts, not at every
# character (about three times faster; the matches are the same).
_WORD_CUES = (
    # Overriding what the agent was told.
    rf"\b(?:ignore|disregard|forget|override|skip)\s+(?:(?:all|any|the|your|my|of|"
    rf"every|these|those)\s+)*{_PREVIOUS}\s+{_ORDERS}\b",
    rf"\b(?:ignore|disregard|forget)\s+(?:(?:all|the|your)\s+)*{_ORDERS}\s+(?:above|"
    r"before|so far|you (?:were|have been) given)\b",
    # Re-tasking the agent with reference to the task it holds.
    r"\bbefore (?:you )?(?:can |do |start |begin )?(?:solv(?:e|ing)|complet(?:e|ing)|"
    r"finish(?:ing)?|continu(?:e|ing) with|proceed(?:ing)? with|answer(?:ing)?|"
    r"address(?:ing)?)\s+(?:the|your|my|this)\s+(?:original\s+|current\s+|user'?s?\s+)?"
    r"(?:task|request|instructions?|goal|job|assignment|question)\b",
    r"\b(?:the|your|this) (?:task|request|goal|job|assignment) (?:that )?(?:i|the user|"
    r"they|he|she|we) (?:gave|assigned|asked|have given|has given|gave to) you\b",
    r"\bafter you (?:do|have done|did|complete|finish) (?:that|this|it),? you (?:can|may"
    r"|should) (?:solve|continue|complete|finish|proceed|do|return)\b",
    r"\b(?:new|updated|revised|additional|real|actual|true|secret|hidden)\s+"
    r"(?:instructions?|task|objective|goal|directives?|orders)\s*:",
    # A message addressed to the model rather than to the user.
    r"\b(?:message|note|instructions?|request|notice|memo)\s+from\s+[^\n]{1,80}?\s+"
    r"(?:to|for)\s+you\b",
    r"\b(?:dear|attention|hey|hello|hi|note to|message to|instructions? for)\s*,?\s*"
    r"(?:the\s+)?(?:ai(?:\s+(?:assistant|agent|model))?|a\.i\.|llm|language model|"
    r"chatbot|ai bot|large language model)\b",
    r"\b(?:system|admin(?:istrator)?|developer|root|operator)\s*(?:override|prompt|"
    r"message|instructions?|notice|command)s?\s*:",
    # Concealment from the user.
    r"\b(?:do not|don't|never|without) (?:tell(?:ing)?|inform(?:ing)?|notify(?:ing)?|"
    r"alert(?:ing)?|warn(?:ing)?|mention(?:ing)? (?:this|it) to|reveal(?:ing)? (?:this|"
    r"it) to|let(?:ting)?) (?:the user|the human|anyone|your user|the owner)\b",
    r"\binstead,? you (?:must|should|will|need to|have to)\b",
    r"\byou (?:must|need to|have to|are required to) (?:first|now|immediately) (?:"
    r"ignore|stop|send|forward|transfer|pay|email|visit|open|delete|share|invite|post)\b",
)
_MARKERS = re.compile(
    # A pseudo role header: "###(system_message)", "##[system prompt]". A plain markdown
    # heading ("## System prompt") is a document's, not an order.
    r"#{2,}\s*[(\[]\s*(?:system|admin|developer|assistant)[ _-]?(?:message|prompt|"
    r"instructions?|override)\s*[)\]]"
    r"|(?<!\w)(?=\w)(?:" + "|".join(_WORD_CUES) + ")",
    re.IGNORECASE,
)
_OPEN_TAG = re.compile(r"<([A-Za-z][\w-]{0,40})(?:\s[^<>]{0,200})?>")
_BOUNDARY = re.compile(
    r"(?P<paragraph>\n[ \t]*\n)"
    r"|(?P<item>\n[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t])"
    r"|(?P<key>\n(?P<indent>[ \t]*)[\"']?\w[\w .-]{0,40}[\"']?[ \t]*:(?=[ \t\n]|$))"
    r"|(?P<element>[\"'][ \t]*[,}\]])"
)


@dataclass(frozen=True, slots=True)
class Passage:
    """One injected passage: ``text[start:end]`` of the unescaped source."""

    start: int
    end: int
    marker: str
    """The cue that marked it, as written."""
    tagged: bool
    """Delimited by a pseudo-tag rather than by structure."""


def has_marker(text: str) -> bool:
    """Whether text holds any cue addressed to the agent (cheap pre-check)."""
    return _MARKERS.search(text) is not None


def _line_indent(text: str, position: int) -> int:
    line_start = text.rfind("\n", 0, position) + 1
    line = text[line_start:position]
    return len(line) - len(line.lstrip(" \t"))


def _tagged_span(text: str, marker_start: int, marker_end: int) -> tuple[int, int] | None:
    window_start = max(0, marker_start - _TAG_REACH)
    best: tuple[int, int] | None = None
    for tag in _OPEN_TAG.finditer(text, window_start, marker_start):
        name = tag.group(1)
        closing = re.compile(rf"</\s*{re.escape(name)}\s*>", re.IGNORECASE)
        close = closing.search(text, marker_end, tag.start() + _TAG_CAP)
        if close is None:
            continue
        # A tag closed again before the marker does not enclose it.
        if closing.search(text, tag.end(), marker_start) is not None:
            continue
        span = (tag.start(), close.end())
        if best is None or span[0] > best[0]:  # innermost enclosing tag
            best = span
    return best


def _structural_span(text: str, marker_start: int, marker_end: int) -> tuple[int, int]:
    # The passage starts where the marker's unit starts: after the last boundary.
    start = max(0, marker_start - PASSAGE_CAP)
    for match in _BOUNDARY.finditer(text, start, marker_start):
        start = match.end()
    # Record keys indented deeper than the marker's line belong to the same record.
    indent = _line_indent(text, marker_start)
    limit = min(len(text), marker_end + PASSAGE_CAP)
    position = marker_end
    heading_extended = False
    while True:
        boundary = _BOUNDARY.search(text, position, limit)
        if boundary is None:
            return start, limit
        if boundary.group("key") is not None and len(boundary.group("indent")) > indent:
            position = boundary.end()
            continue
        end = boundary.start()
        if not heading_extended and _WORD.search(text, marker_end, end) is None:
            heading_extended = True
            position = boundary.end()
            continue
        return start, end


def find_passages(text: str) -> list[Passage]:
    """Injected passages of unescaped untrusted text, in order, merged where they overlap."""
    passages: list[Passage] = []
    for marker in _MARKERS.finditer(text):
        if passages and marker.start() < passages[-1].end:
            continue  # already inside the previous passage
        tagged = _tagged_span(text, marker.start(), marker.end())
        if tagged is not None:
            start, end = tagged
        else:
            start, end = _structural_span(text, marker.start(), marker.end())
        if passages and start < passages[-1].end:
            previous = passages.pop()
            start = previous.start
            end = max(end, previous.end)
            passages.append(Passage(start, end, previous.marker, previous.tagged))
            continue
        passages.append(Passage(start, end, marker.group(0), tagged is not None))
    return passages
