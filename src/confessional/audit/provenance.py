"""Where each tool-call argument came from: trusted text, untrusted tool output, or an
injected passage.

The analysis walks the conversation once, in order, so only what was said before a call
can be its source (causal order):

- **trusted** text: system, developer and user messages, and tool definitions;
- **untrusted** text: tool outputs, split into *injected passages*
  (:mod:`confessional.audit.passages`) and the clean rest;
- **tainted** text: the whole output of a call that was itself driven by an injected
  value, which catches multi-hop attacks ("fetch this page, then do what it says").

Each argument is cut into *atoms*: its canonical entities when one entity makes up most
of it (``from:alice@example.com`` is the address), else its normalised text plus any
addresses, URLs or account numbers inside it. Atoms are looked up in token-indexed
sources, so an episode of many calls costs about linear time, not quadratic.
The result is cached per episode, so the checks that read it share one walk. A long
text's injected passages and index terms are also kept (bounded) across episodes: every
confession of a conversation walks its whole history again.
"""

from __future__ import annotations

import hashlib
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from confessional.audit.passages import Passage, find_passages
from confessional.audit.text import (
    EntityKind,
    entities,
    entity_coverage,
    fold,
    normalise,
    strip_operators,
    tokens,
    unescape,
)
from confessional.episode import Episode, ToolCallRecord, message_text

__all__ = [
    "ArgumentAtom",
    "AtomVerdict",
    "Exposure",
    "Provenance",
    "SourceRef",
    "argument_atoms",
    "argument_items",
    "provenance",
]

DOMINANT_ENTITY_SHARE: Final = 0.5
"""An argument whose entities cover at least this share is compared as those entities."""
_WORD_CHAR = re.compile(r"\w")


@dataclass(frozen=True, slots=True)
class ArgumentAtom:
    """One comparable piece of an argument value."""

    text: str
    """Folded, operator-stripped text, or an entity's canonical value."""
    kind: EntityKind | None
    """The entity kind, ``None`` for plain text."""
    whole: bool
    """It stands for the whole argument (plain text, or a dominant entity), rather than
    an address embedded in composed text."""

    @property
    def key(self) -> str:
        return self.text if self.kind is None else f"{self.kind}:{self.text}"


def argument_items(args: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """``(parameter name, value as text)`` for every scalar inside tool-call arguments."""
    if isinstance(args, str):
        yield key, args
    elif isinstance(args, Mapping):
        for name, value in args.items():
            yield from argument_items(value, str(name))
    elif isinstance(args, (list, tuple)):
        for value in args:
            yield from argument_items(value, key)
    elif isinstance(args, (int, float)) and not isinstance(args, bool):
        yield key, str(args)


def argument_atoms(value: str) -> list[ArgumentAtom]:
    """The atoms of one argument value (see the module docstring)."""
    folded = strip_operators(normalise(value))
    if not folded:
        return []
    found = entities(folded)
    if found and entity_coverage(folded, found) >= DOMINANT_ENTITY_SHARE:
        return [ArgumentAtom(e.value, e.kind, True) for e in found]
    atoms = [ArgumentAtom(folded, None, True)]
    atoms.extend(ArgumentAtom(e.value, e.kind, False) for e in found if e.kind != "date")
    return atoms


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a source text came from."""

    message_index: int
    call: ToolCallRecord | None
    """The call whose reply it is (``None`` for trusted text or an unpaired reply)."""
    passage: Passage | None = None
    """The injected passage, for injected text; ``None`` for tainted whole outputs."""
    text: str = ""
    """The folded source text (injected sources only, for the finding's detail)."""

    @property
    def label(self) -> str:
        if self.call is None:
            return f"message {self.message_index}"
        return f"{self.call.name} ({self.call.evidence})"


def _host_key(url: str) -> str:
    return "host:" + url.split("/", 1)[0]


def _one_edit(a: str, b: str) -> bool:
    """``a`` and ``b`` differ by exactly one insertion, deletion or substitution."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    prefix = 0
    while prefix < len(a) and a[prefix] == b[prefix]:
        prefix += 1
    if len(a) == len(b):
        return a[prefix + 1 :] == b[prefix + 1 :]
    return a[prefix:] == b[prefix + 1 :]


def _is_word(character: str) -> bool:
    return character.isalnum() or character == "_"


@dataclass(frozen=True)
class _Terms:
    """What the source index files one folded text under."""

    tokens: frozenset[str]
    keys: frozenset[str]
    """Canonical entity keys, URL hosts included."""
    emails: tuple[tuple[str, str], ...]
    """``(local part, domain)`` of each email address."""

    @property
    def size(self) -> int:
        return len(self.tokens) + len(self.keys) + len(self.emails)


def _terms(folded: str) -> _Terms:
    keys: set[str] = set()
    emails: list[tuple[str, str]] = []
    for entity in entities(folded):
        keys.add(entity.key)
        if entity.kind == "email":
            local, _, domain = entity.value.rpartition("@")
            emails.append((local, domain))
        elif entity.kind == "url":
            host = _host_key(entity.value)
            keys.add(host)
            # "www.example.com.They said" lost its space: the host may end one label
            # early, so a source also counts under its host without the last label.
            if host.count(".") >= 2:
                keys.add(host.rsplit(".", 1)[0])
    return _Terms(frozenset(tokens(folded)), frozenset(keys), tuple(emails))


_T = TypeVar("_T")

_LONG_TEXT_CHARS: Final = 65_536
"""From this length a text's passages and index terms are kept for the next confessions:
each confession walks the whole conversation again, and a long tool output (a file, a web
page, a log) would otherwise cost every later turn of the conversation its full analysis
(about 2.5 s for 10 MB). Shorter texts cost less to analyse than to look up."""


class _LongTextMemo(Generic[_T]):
    """The results of one pure function of long texts, keyed by a digest of the text (so no
    text is kept alive), the least recently used dropped first once the results' total size
    passes the budget. Thread-safe: confessions run on several threads."""

    def __init__(
        self, compute: Callable[[str], _T], size: Callable[[_T], int], *, budget: int
    ) -> None:
        self._compute = compute
        self._size = size
        self._budget = budget
        self._used = 0
        self._results: OrderedDict[bytes, tuple[_T, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> _T:
        if len(text) < _LONG_TEXT_CHARS:
            return self._compute(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            kept = self._results.get(key)
            if kept is not None:
                self._results.move_to_end(key)
                return kept[0]
        result = self._compute(text)
        size = self._size(result)
        if size > self._budget:
            return result  # worth more than everything kept: computed again next time
        with self._lock:
            if key not in self._results:
                self._results[key] = (result, size)
                self._used += size
            while self._used > self._budget:
                _, (_, dropped) = self._results.popitem(last=False)
                self._used -= dropped
        return result


_MEMO_BUDGET: Final = 250_000
"""Items (tokens, entity keys, passages) each memo keeps: tens of MB at most."""
_terms_of = _LongTextMemo(_terms, lambda terms: terms.size, budget=_MEMO_BUDGET)
_passages_of = _LongTextMemo(
    lambda text: tuple(find_passages(text)), lambda found: len(found) + 1, budget=_MEMO_BUDGET
)


class _SourceIndex:
    """Folded texts with a token index and an entity index (amortised linear build)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.refs: list[SourceRef] = []
        self._seen: set[str] = set()
        self._postings: dict[str, list[int]] = {}
        self._entities: dict[str, list[int]] = {}
        self._domains_by_local: dict[str, set[str]] = {}

    def add(self, folded: str, ref: SourceRef) -> None:
        if not folded or folded in self._seen:
            return
        self._seen.add(folded)
        text_id = len(self.texts)
        self.texts.append(folded)
        self.refs.append(ref)
        terms = _terms_of(folded)
        for token in terms.tokens:
            self._postings.setdefault(token, []).append(text_id)
        for local, domain in terms.emails:
            self._domains_by_local.setdefault(local, set()).add(domain)
        for key in terms.keys:
            self._entities.setdefault(key, []).append(text_id)

    def _aligned(self, text_id: int, needle: str) -> bool:
        """``needle`` occurs in the text at word boundaries (no "ice" inside "alice")."""
        text = self.texts[text_id]
        check_start = bool(_WORD_CHAR.match(needle[0]))
        check_end = bool(_WORD_CHAR.match(needle[-1]))
        position = text.find(needle)
        while position >= 0:
            before_ok = not check_start or position == 0 or not _is_word(text[position - 1])
            after = position + len(needle)
            after_ok = not check_end or after == len(text) or not _is_word(text[after])
            if before_ok and after_ok:
                return True
            position = text.find(needle, position + 1)
        return False

    def find_text(self, needle: str) -> int | None:
        if not needle or not self.texts:
            return None
        needle_tokens = set(tokens(needle))
        if not needle_tokens:
            return next((i for i in range(len(self.texts)) if needle in self.texts[i]), None)
        candidates: list[int] | None = None
        for token in needle_tokens:
            posting = self._postings.get(token)
            if posting is None:
                return None
            if candidates is None or len(posting) < len(candidates):
                candidates = posting
        assert candidates is not None
        return next((i for i in candidates if self._aligned(i, needle)), None)

    def find(self, atom: ArgumentAtom) -> int | None:
        """Id of the first text holding the atom, ``None`` if none does.

        Entities compare as canonical entities only (``informations.com`` is not inside
        ``true-informations.com``); a URL also matches a source naming the same host.
        """
        if atom.kind is None:
            return self.find_text(atom.text)
        posting = self._entities.get(atom.key)
        if not posting and atom.kind == "url":
            posting = self._entities.get(_host_key(atom.text))
        return posting[0] if posting else None

    def near_address(self, atom: ArgumentAtom) -> bool:
        """An email address one edit away from one seen here, for the same person."""
        if atom.kind != "email":
            return False
        local, _, domain = atom.text.rpartition("@")
        return any(_one_edit(domain, seen) for seen in self._domains_by_local.get(local, ()))


Origin = Literal["trusted", "untrusted", "injected"]


@dataclass(frozen=True, slots=True)
class AtomVerdict:
    """The sources of one atom of one argument of one call."""

    parameter: str
    value: str
    """The argument value as given."""
    atom: ArgumentAtom
    trusted: bool
    """Found in trusted text said before the call."""
    untrusted: bool
    """Found in clean (not injected, not tainted) tool output returned before the call."""
    injected: SourceRef | None
    """The injected passage or tainted output holding it, if any."""
    reused: bool
    """The same tool was called with this atom before the injected source appeared."""
    near: bool = False
    """Found nowhere, but one edit from an address seen before (a corrected typo)."""


@dataclass(frozen=True, slots=True)
class Exposure:
    """An injected passage read during the episode."""

    reply_index: int
    call: ToolCallRecord | None
    passage: Passage
    excerpt: str


@dataclass
class Provenance:
    """The result of one walk over an episode."""

    verdicts: dict[int, list[AtomVerdict]] = field(default_factory=dict)
    """Per call position: a verdict for each atom of each argument."""
    driven: set[int] = field(default_factory=set)
    """Positions of calls driven by an injected value (their outputs are tainted)."""
    exposures: list[Exposure] = field(default_factory=list)
    """Injected passages in outputs returned within the episode's scope."""

    def injected_only(self, verdict: AtomVerdict, min_length: int) -> bool:
        """An injected atom not explained by trusted text, long enough to mean something.

        A value from a tainted output (the whole reply of a call an injected value drove)
        that clean output also holds is explained by the clean output: tainted replies
        carry ordinary records too, such as the user's own address.
        """
        source = verdict.injected
        if source is None or verdict.trusted:
            return False
        if source.passage is None and verdict.untrusted:
            return False
        return verdict.atom.kind is not None or len(verdict.atom.text) >= min_length


def _trusted_text(message: BaseMessage) -> bool:
    if isinstance(message, (SystemMessage, HumanMessage)):
        return True
    return isinstance(message, ChatMessage) and message.role in ("system", "developer", "user")


def _walk(episode: Episode, min_length: int) -> Provenance:
    result = Provenance()
    trusted, clean, injected = _SourceIndex(), _SourceIndex(), _SourceIndex()
    for tool in episode.tools:
        parameters = " ".join(f"{k} {v}" for k, v in tool.parameters.items())
        trusted.add(normalise(f"{tool.name} {tool.description} {parameters}"), SourceRef(-1, None))
    calls_at: dict[int, list[ToolCallRecord]] = {}
    reply_of: dict[int, ToolCallRecord] = {}
    for call in episode.tool_calls:
        calls_at.setdefault(call.message_index, []).append(call)
        if call.reply_index is not None:
            reply_of[call.reply_index] = call
    first_use: dict[tuple[str, str], int] = {}

    for index, message in enumerate(episode.messages):
        if _trusted_text(message):
            trusted.add(normalise(message_text(message)), SourceRef(index, None))
        elif isinstance(message, AIMessage):
            for call in calls_at.get(index, ()):
                verdicts = _judge(call, trusted, clean, injected, first_use)
                result.verdicts[call.position] = verdicts
                if any(result.injected_only(v, min_length) for v in verdicts):
                    result.driven.add(call.position)
        elif isinstance(message, ToolMessage):
            origin = reply_of.get(index)
            text = unescape(message_text(message))
            if origin is not None and origin.position in result.driven:
                injected.add(fold(text), SourceRef(index, origin, None, fold(text)))
                continue
            passages = _passages_of(text)
            if not passages:
                clean.add(fold(text), SourceRef(index, origin))
                continue
            rest: list[str] = []
            cursor = 0
            for passage in passages:
                rest.append(text[cursor : passage.start])
                cursor = passage.end
                folded = fold(text[passage.start : passage.end])
                injected.add(folded, SourceRef(index, origin, passage, folded))
                if index >= episode.start:
                    result.exposures.append(Exposure(index, origin, passage, folded[:160]))
            rest.append(text[cursor:])
            clean.add(fold("\n".join(rest)), SourceRef(index, origin))
    return result


def _judge(
    call: ToolCallRecord,
    trusted: _SourceIndex,
    clean: _SourceIndex,
    injected: _SourceIndex,
    first_use: dict[tuple[str, str], int],
) -> list[AtomVerdict]:
    verdicts: list[AtomVerdict] = []
    for parameter, value in argument_items(call.args):
        for atom in argument_atoms(value):
            source_id = injected.find(atom)
            source = injected.refs[source_id] if source_id is not None else None
            use_key = (call.name, atom.key)
            earlier = first_use.setdefault(use_key, call.message_index)
            in_trusted = trusted.find(atom) is not None
            in_clean = clean.find(atom) is not None
            near = (
                source is None
                and not in_trusted
                and not in_clean
                and any(index.near_address(atom) for index in (trusted, clean, injected))
            )
            verdicts.append(
                AtomVerdict(
                    parameter=parameter,
                    value=value,
                    atom=atom,
                    trusted=in_trusted,
                    untrusted=in_clean,
                    injected=source,
                    reused=source is not None and earlier < source.message_index,
                    near=near,
                )
            )
    return verdicts


class _Cache(threading.local):
    def __init__(self) -> None:
        self.episode: weakref.ref[Episode] | None = None
        self.min_length = -1
        self.result: Provenance | None = None


_CACHE = _Cache()


def provenance(episode: Episode, min_length: int = 6) -> Provenance:
    """The provenance of every argument of ``episode`` (cached for the last episode,
    per thread, so several checks share one walk)."""
    cached = _CACHE.episode() if _CACHE.episode is not None else None
    if cached is episode and _CACHE.min_length == min_length and _CACHE.result is not None:
        return _CACHE.result
    result = _walk(episode, min_length)
    _CACHE.episode = weakref.ref(episode)
    _CACHE.min_length = min_length
    _CACHE.result = result
    return result
