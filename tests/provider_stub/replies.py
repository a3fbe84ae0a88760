"""What a scripted model says: one `Reply` per request, rendered in each API's wire format.

A test supplies a *responder*, ``(api, body) -> Reply``, or queues replies with `ReplyQueue`.
The same `Reply` renders as an OpenAI chat completion or an Anthropic message, streamed or not,
so one script can drive both providers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ApiName = Literal["openai", "anthropic"]
Finish = Literal["stop", "length"]

# Signatures are an HMAC over the thinking text, so the Anthropic stub can tell a block it issued
# from one that was edited or invented, as the real API does. The key is public on purpose: a
# test that hand-writes history calls `thinking_signature` to sign its own blocks.
_SIGNING_KEY = b"provider-stub-thinking-signature"


def thinking_signature(thinking: str) -> str:
    """The signature the stub issues for (and accepts on) a thinking block with this text."""
    digest = hmac.new(_SIGNING_KEY, thinking.encode("utf-8"), hashlib.sha256).digest()
    # Real signatures are long opaque base64 strings; the prefix makes ours recognisable.
    return "stubsig" + base64.b64encode(digest * 3).decode("ascii")


def signature_is_valid(thinking: str, signature: str) -> bool:
    return hmac.compare_digest(thinking_signature(thinking), signature)


@dataclass(frozen=True)
class ToolCall:
    """One tool call in a reply; ``arguments`` given as a string is sent verbatim (bad JSON too)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None  # None: a realistic id is generated (``call_…`` / ``toolu_…``)

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"))

    def arguments_object(self) -> Any:
        """The input object Anthropic puts in a ``tool_use`` block (raw strings are parsed)."""
        if isinstance(self.arguments, str):
            try:
                return json.loads(self.arguments)
            except json.JSONDecodeError:
                return {}
        return dict(self.arguments)


@dataclass(frozen=True)
class Thinking:
    """An Anthropic thinking block. OpenAI chat completions never return one (it is dropped)."""

    text: str
    signature: str | None = None  # None: a valid stub signature; a string is sent as given


@dataclass(frozen=True)
class Usage:
    """Token counts to report; None fields are estimated from the request and reply sizes,
    and the cached ones from the provider's cache rules (``caching``)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None


@dataclass(frozen=True)
class HttpError:
    """An HTTP error in the API's own error shape. ``error_type`` defaults from the status."""

    status: int
    message: str
    error_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RawResponse:
    """Bytes sent exactly as given, for malformed or unusual replies."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


ThinkingLike = Thinking | str


def _thinking_blocks(thinking: Iterable[ThinkingLike]) -> tuple[Thinking, ...]:
    return tuple(item if isinstance(item, Thinking) else Thinking(item) for item in thinking)


@dataclass(frozen=True)
class Reply:
    """One model turn. Build it with the class methods; the fields are the rendered parts.

    Rendering: OpenAI puts ``content`` in ``message.content``, ``calls`` in ``tool_calls``,
    ``refusal_text`` in ``message.refusal`` and ``finish="length"`` as ``finish_reason="length"``.
    Anthropic emits ``thinking`` blocks, then a text block, then ``tool_use`` blocks; a refusal is
    ``stop_reason="refusal"``, ``finish="length"`` is ``stop_reason="max_tokens"``.
    """

    content: str | None = None
    calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()
    refusal_text: str | None = None
    finish: Finish = "stop"
    usage: Usage = field(default_factory=Usage)
    error: HttpError | None = None
    raw: RawResponse | None = None

    @classmethod
    def text(
        cls, text: str, *, thinking: Iterable[ThinkingLike] = (), usage: Usage | None = None
    ) -> Reply:
        return cls(content=text, thinking=_thinking_blocks(thinking), usage=usage or Usage())

    @classmethod
    def json(cls, value: Any, *, thinking: Iterable[ThinkingLike] = ()) -> Reply:
        """JSON text as the content: a str is sent verbatim (it may be invalid), else dumped."""
        text = value if isinstance(value, str) else json.dumps(value)
        return cls(content=text, thinking=_thinking_blocks(thinking))

    @classmethod
    def tool_calls(
        cls,
        calls: Sequence[ToolCall | tuple[str, Mapping[str, Any] | str]],
        *,
        text: str | None = None,
        thinking: Iterable[ThinkingLike] = (),
    ) -> Reply:
        """Several calls in one turn are parallel tool calls. Items may be ``(name, args)``."""
        parsed = tuple(call if isinstance(call, ToolCall) else ToolCall(*call) for call in calls)
        return cls(content=text, calls=parsed, thinking=_thinking_blocks(thinking))

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        id: str | None = None,
        text: str | None = None,
        thinking: Iterable[ThinkingLike] = (),
    ) -> Reply:
        call = ToolCall(name, {} if arguments is None else arguments, id)
        return cls.tool_calls([call], text=text, thinking=thinking)

    @classmethod
    def truncated(
        cls,
        text: str | None,
        *,
        calls: Sequence[ToolCall] = (),
        thinking: Iterable[ThinkingLike] = (),
    ) -> Reply:
        """Cut off by ``max_tokens``: ``finish_reason="length"`` / ``stop_reason="max_tokens"``."""
        return cls(
            content=text, calls=tuple(calls), thinking=_thinking_blocks(thinking), finish="length"
        )

    @classmethod
    def refusal(cls, message: str) -> Reply:
        return cls(refusal_text=message)

    @classmethod
    def http_error(
        cls,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        return cls(error=HttpError(status, message, error_type, dict(headers or {})))

    @classmethod
    def raw_response(
        cls,
        status: int,
        body: bytes | str,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        data = body.encode("utf-8") if isinstance(body, str) else body
        return cls(raw=RawResponse(status, data, content_type, dict(headers or {})))


Responder = Callable[[ApiName, dict[str, Any]], Reply]


class ScriptError(AssertionError):
    """The test's script could not answer a request (a test bug, raised again at teardown)."""


class ReplyQueue:
    """A responder that answers requests in order with the queued replies, whatever the API."""

    def __init__(self, replies: Iterable[Reply] = ()) -> None:
        self._replies: deque[Reply] = deque(replies)
        self._lock = threading.Lock()

    def add(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._replies)

    def __call__(self, api: ApiName, body: dict[str, Any]) -> Reply:
        with self._lock:
            if not self._replies:
                raise ScriptError(f"no scripted reply left for this {api} request")
            return self._replies.popleft()
