"""Text normalisation and canonical entities, shared by both sides of every comparison.

Tool outputs arrive serialised in many ways (JSON and YAML escapes, HTML entities, Python
reprs), and arguments arrive with operator syntax (``from:alice@example.com``) or with a
scheme the source did not have. Comparing raw strings misses those; comparing these
normal forms does not:

- :func:`unescape` undoes serialisation escapes (``\\n``, ``\\u00e9``, ``&amp;``, YAML's
  doubled quote) so that structure (paragraphs, records) becomes visible again;
- :func:`fold` applies NFKC, casefolding, typographic-quote folding and whitespace
  collapse;
- :func:`entities` extracts canonical entities: email addresses, URLs as host plus path
  (no scheme, no ``www.``, no trailing slash), account and phone numbers as bare digits
  and letters, and dates as ISO ``YYYY-MM-DD``;
- :func:`strip_operators` removes search-operator prefixes such as ``from:`` or ``site:``.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "Entity",
    "EntityKind",
    "entities",
    "entity_coverage",
    "fold",
    "normalise",
    "strip_operators",
    "tokens",
    "unescape",
]

EntityKind = Literal["email", "url", "number", "date"]

_SURROGATE_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|[nrt]|[\\\"'/ ])")
_SIMPLE_ESCAPES: Final = {"n": "\n", "r": "\n", "t": "\t"}
_HTML_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[A-Za-z]{2,8});")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
_TYPOGRAPHIC = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
    }
)
_WHITESPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+")


def _decode_escape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] in "ux":
        return chr(int(code[1:], 16))
    return _SIMPLE_ESCAPES.get(code, code)


def _decode_pair(match: re.Match[str]) -> str:
    high, low = int(match.group(1), 16), int(match.group(2), 16)
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def unescape(text: str) -> str:
    """Undo serialisation escapes, keeping line structure (``\\n`` becomes a newline).

    Applied identically to arguments and sources, so over-eager unescaping of text that
    was never escaped cannot create a mismatch, only a (harmless) shared spelling.
    """
    if "\\" in text:
        text = _SURROGATE_PAIR.sub(_decode_pair, text)
        text = _ESCAPE.sub(_decode_escape, text)
    if "&" in text and _HTML_ENTITY.search(text):
        text = html.unescape(text)
    if "''" in text:  # YAML's single-quoted scalars double the quote
        text = text.replace("''", "'")
    return text


def fold(text: str) -> str:
    """NFKC, casefold, typographic quotes and dashes folded, invisible characters dropped,
    whitespace collapsed. Expects already unescaped text."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_TYPOGRAPHIC)
        text = _INVISIBLE.sub("", text)
    return " ".join(text.casefold().split())


def normalise(text: str) -> str:
    """The comparison form of any text: :func:`unescape` then :func:`fold`."""
    return fold(unescape(text))


def tokens(folded: str) -> list[str]:
    """Word tokens of folded text (the unit of the source index)."""
    return _TOKEN.findall(folded)


# Operator syntax of search boxes and mail filters: a short word glued to its operand
# ("from:alice@x", "site:example.com"), or leading the value ("to: bob@x"). A scheme
# ("https://") is not an operator.
_GLUED_OPERATOR = re.compile(r"(?<![\w./@:-])[a-z_]{1,15}:(?=[^\s/:])")
_LEADING_OPERATOR = re.compile(r"^[a-z_]{1,15}\s*:\s*(?!//)")


def strip_operators(folded: str) -> str:
    """``from:alice@x.com subject:hi`` -> ``alice@x.com hi`` (folded text in and out)."""
    if ":" not in folded:
        return folded
    stripped = _LEADING_OPERATOR.sub("", _GLUED_OPERATOR.sub("", folded))
    return stripped.strip()


@dataclass(frozen=True, slots=True)
class Entity:
    """A canonical entity found in folded text."""

    kind: EntityKind
    value: str
    """Canonical form, e.g. ``example.com/a`` for ``https://www.example.com/a/``."""
    start: int
    end: int

    @property
    def key(self) -> str:
        """``kind:value``, the form stored in indexes."""
        return f"{self.kind}:{self.value}"


# Patterns start with a literal or a digit where possible, so the regex engine can skip
# ahead quickly; boundary checks that would need a leading look-behind are done on the
# few matches instead.
_EMAIL_DOMAIN = re.compile(r"@((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})(?![\w-])")
_EMAIL_LOCAL_REVERSED = re.compile(r"[\w+-](?:[\w.+-]{0,62}[\w+-])?")
_URL_HINT = re.compile(r"://|www\d?\.|[a-z0-9]\.[a-z]")
# A host needs a letter-led top-level label of two or more characters, so "98.70" and
# "e.g." are not hosts. File names such as "notes.txt" match too; that is harmless
# because both sides of a comparison are read the same way.
_URL = re.compile(
    r"(?:[a-z][a-z0-9+.-]{1,15}://)?(?:www\d?\.)?"
    r"((?:(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,24}|(?<=://)[a-z0-9-]+)"
    r"(?::\d{2,5})?)"
    r"((?:/[^\s'\"<>()\[\]{}?#]*)?)(?:[?#][^\s'\"<>()\[\]{}]*)?"
)
_SCHEME_URL = re.compile(r"[a-z][a-z0-9+.-]{1,15}://")
# Digit-led entities in one pass: ISO dates, and runs of seven or more digits with
# separators (phones, cards, bank accounts; an IBAN's letters are picked up around them).
_DIGIT_LED = re.compile(
    r"(?P<iso>(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})(?!\d))"
    r"|\d(?:[ ().-]{0,2}\d){6,}"
)
_IBAN = re.compile(r"[a-z]{2}\d{2}[a-z0-9]{8,30}")
# An IBAN as printed, in groups of four: "gb29 nwbk 6016 1331 9268 19".
_GROUPED_IBAN = re.compile(
    r"(?<![\w-])[a-z]{2}\d{2}(?: [a-z0-9]{4}){2,7}(?: [a-z0-9]{1,3})?(?![\w-])"
)
_MIN_IBAN_DIGITS: Final = 8
_MONTHS: Final = {
    name: index
    for index, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WRITTEN_DATE = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?(?: of)? (?P<m1>{_MONTH})\.?,? (?P<y1>\d{{4}})"
    rf"|(?P<m2>{_MONTH})\.? (?P<d2>\d{{1,2}})(?:st|nd|rd|th)?,? (?P<y2>\d{{4}}))\b"
)
_MONTH_PREFIX = re.compile("|".join(sorted({name[:3] for name in _MONTHS})))
"""Any month name's first three letters: text without one has no written date."""
_DIGIT = re.compile(r"\d")
_TRAILING_URL_PUNCTUATION = ".,;:!?'\""


def _date(year: str, month: int, day: str) -> str | None:
    if not (1 <= month <= 12 and 1 <= int(day) <= 31):
        return None
    return f"{int(year):04d}-{month:02d}-{int(day):02d}"


def _url_value(host: str, path: str) -> str:
    path = path.rstrip(_TRAILING_URL_PUNCTUATION).rstrip("/")
    return host + path


def _word_at(text: str, position: int) -> bool:
    return 0 <= position < len(text) and (text[position].isalnum() or text[position] == "_")


class _Spans:
    """Character spans already claimed by an entity (entities never overlap)."""

    def __init__(self, length: int) -> None:
        self._taken = bytearray(length)

    def free(self, start: int, end: int) -> bool:
        return self._taken.find(1, start, end) < 0

    def take(self, start: int, end: int) -> None:
        self._taken[start:end] = b"\x01" * (end - start)


def _emails(folded: str, spans: _Spans, found: list[Entity]) -> None:
    for match in _EMAIL_DOMAIN.finditer(folded):
        at = match.start()
        head = folded[max(0, at - 64) : at][::-1]
        local = _EMAIL_LOCAL_REVERSED.match(head)
        if local is None:
            continue
        start = at - local.end()
        if start > 0 and (_word_at(folded, start - 1) or folded[start - 1] in ".+-"):
            continue
        end = match.end()
        found.append(Entity("email", folded[start:end], start, end))
        spans.take(start, end)


def _urls(folded: str, spans: _Spans, found: list[Entity]) -> None:
    position = 0
    while True:
        hint = _URL_HINT.search(folded, position)
        if hint is None:
            return
        # Back up to where a URL containing the hint could start.
        start = hint.start()
        while start > 0 and (folded[start - 1].isalnum() or folded[start - 1] in ".-+:/"):
            start -= 1
        match = _URL.search(folded, start, hint.end() + 2048)
        position = hint.end()
        if match is None or match.start() > hint.start() + 1:
            continue
        position = max(position, match.end())
        if match.start() > 0 and folded[match.start() - 1] in "@.-" + "_":
            continue
        if not spans.free(match.start(), match.end()):
            continue
        value = _url_value(match.group(1), match.group(2))
        found.append(Entity("url", value, match.start(), match.end()))
        spans.take(match.start(), match.end())


def _digit_led(folded: str, spans: _Spans, found: list[Entity]) -> None:
    for match in _DIGIT_LED.finditer(folded):
        start, end = match.span()
        if _word_at(folded, end) or folded[end : end + 1] == "-":
            continue
        if match.group("iso"):
            if _word_at(folded, start - 1) or not spans.free(start, end):
                continue
            iso = _date(match.group("year"), int(match.group("month")), match.group("day"))
            if iso:
                found.append(Entity("date", iso, start, end))
                spans.take(start, end)
            continue
        # An IBAN: two letters and its check digits lead, letters may sit inside.
        token_start = start
        while token_start > 0 and folded[token_start - 1].isalnum() and start - token_start < 34:
            token_start -= 1
        if token_start < start:
            if _word_at(folded, token_start - 1):
                continue
            token = folded[token_start:end]
            if _IBAN.fullmatch(token.replace(" ", "")) is None and not (
                start - token_start == 2 and folded[token_start:start].isalpha()
            ):
                continue
            start = token_start
        elif start > 0 and (folded[start - 1] in ".-" or _word_at(folded, start - 1)):
            continue
        if start > 0 and folded[start - 1] == "+":
            start -= 1
        if not spans.free(start, end):
            continue
        value = "".join(c for c in folded[start:end] if c.isalnum())
        found.append(Entity("number", value, start, end))
        spans.take(start, end)


def _grouped_ibans(folded: str, spans: _Spans, found: list[Entity]) -> None:
    for match in _GROUPED_IBAN.finditer(folded):
        value = match.group(0).replace(" ", "")
        if sum(c.isdigit() for c in value) < _MIN_IBAN_DIGITS:
            continue  # "ab12 word test" is not an account
        found.append(Entity("number", value, match.start(), match.end()))
        spans.take(match.start(), match.end())


def _written_dates(folded: str, spans: _Spans, found: list[Entity]) -> None:
    if _MONTH_PREFIX.search(folded) is None:
        return
    for match in _WRITTEN_DATE.finditer(folded):
        if match.group("m1"):
            iso = _date(match.group("y1"), _MONTHS[match.group("m1")], match.group("d1"))
        else:
            iso = _date(match.group("y2"), _MONTHS[match.group("m2")], match.group("d2"))
        if iso and spans.free(match.start(), match.end()):
            found.append(Entity("date", iso, match.start(), match.end()))
            spans.take(match.start(), match.end())


def entities(folded: str) -> list[Entity]:
    """Canonical entities in folded text, in order, without overlaps (emails win over
    the host inside them, URLs over digits inside their path)."""
    found: list[Entity] = []
    spans = _Spans(len(folded))
    if "@" in folded:
        _emails(folded, spans, found)
    if "." in folded or "://" in folded:
        _urls(folded, spans, found)
    _written_dates(folded, spans, found)
    if _DIGIT.search(folded) is not None:  # account numbers, phones and ISO dates hold digits
        _grouped_ibans(folded, spans, found)
        _digit_led(folded, spans, found)
    found.sort(key=lambda e: e.start)
    return found


def entity_coverage(folded: str, found: list[Entity]) -> float:
    """Share of the non-space characters of ``folded`` covered by ``found``."""
    letters = sum(1 for c in folded if not c.isspace())
    if not letters:
        return 0.0
    covered = sum(sum(1 for c in folded[e.start : e.end] if not c.isspace()) for e in found)
    return covered / letters


def has_scheme(folded: str) -> bool:
    """Whether a folded URL-like value starts with a scheme such as ``https://``."""
    return bool(_SCHEME_URL.match(folded))


def iter_entity_keys(folded: str) -> Iterator[str]:
    """``kind:value`` keys of every entity in folded text (for indexing sources)."""
    for entity in entities(folded):
        yield entity.key
