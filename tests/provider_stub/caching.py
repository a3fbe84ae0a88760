"""The providers' documented prompt-cache rules, applied to every valid request.

The stub keeps what each API would have cached and reports, per request, how many input
tokens were read from that cache, in the API's own ``usage`` fields. Tokens are estimated
at four characters each over the canonical JSON of the prompt's parts (as ``wire`` does).

OpenAI (automatic caching, "Prompt caching" guide):
- the prompt is read as one sequence: the structured-output schema first ("a prefix to the
  system message"), then the tool definitions, then the messages;
- a request reuses the longest prefix identical to one an earlier request sent, once the
  prompt is at least 1024 tokens, in steps of 128 tokens from 1024 (``cached_tokens`` in
  ``usage.prompt_tokens_details``, included in ``prompt_tokens``).

Anthropic ("Prompt caching"):
- the prefix is read in the order tools, system, messages, as content blocks;
- only a prefix that ends at a cache breakpoint is written: a block with ``cache_control``,
  or the last block when the request sets a top-level ``cache_control`` (automatic
  caching); at least 1024 tokens;
- a read is the longest written prefix found at a breakpoint or at most 20 blocks before
  one;
- a change of ``tool_choice`` or of the thinking settings invalidates the cached message
  blocks (tools and system stay cached); a change of the tools invalidates everything;
- ``usage.cache_read_input_tokens`` and ``cache_creation_input_tokens`` are reported apart
  from ``input_tokens``, which counts only the rest.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

OPENAI_MINIMUM = 1024
OPENAI_STEP = 128
ANTHROPIC_MINIMUM = 1024
ANTHROPIC_LOOKBACK = 20


@dataclass(frozen=True)
class CacheUse:
    """One request's input tokens: all of them, read from the cache, written to it."""

    input_tokens: int
    read: int = 0
    written: int = 0


def _canonical(part: Any) -> str:
    return json.dumps(part, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _tokens(chars: int) -> int:
    return chars // 4


def _without_cache_control(part: Any) -> Any:
    """Breakpoint markers say where to cache, they are not part of what is cached."""
    if isinstance(part, dict):
        return {k: _without_cache_control(v) for k, v in part.items() if k != "cache_control"}
    if isinstance(part, list):
        return [_without_cache_control(v) for v in part]
    return part


class PromptCache:
    """What one stub instance's API keys would hold; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._openai: list[str] = []
        self._anthropic: set[str] = set()

    # -- OpenAI -----------------------------------------------------------------------

    def openai(self, body: dict[str, Any]) -> CacheUse:
        parts: list[Any] = []
        if "response_format" in body:
            parts.append(body["response_format"])
        parts.extend(body.get("tools") or [])
        parts.extend(body.get("messages") or [])
        prompt = "".join(_canonical(part) + "\n" for part in parts)
        total = _tokens(len(prompt))
        with self._lock:
            shared = max((_common_prefix(prompt, seen) for seen in self._openai), default=0)
            self._openai.append(prompt)
        cached = _tokens(shared)
        if total < OPENAI_MINIMUM or cached < OPENAI_MINIMUM:
            return CacheUse(total)
        return CacheUse(total, read=cached - (cached - OPENAI_MINIMUM) % OPENAI_STEP)

    # -- Anthropic ----------------------------------------------------------------------

    def anthropic(self, body: dict[str, Any]) -> CacheUse:
        blocks = _anthropic_blocks(body)
        keys: list[str] = []
        sizes: list[int] = []
        digest = hashlib.sha256()
        size = 0
        # The cache key of a message block also covers what invalidates message blocks.
        message_context = _canonical(
            {"tool_choice": body.get("tool_choice"), "thinking": body.get("thinking")}
        )
        for section, block in blocks:
            digest.update(_canonical(_without_cache_control(block)).encode())
            size += len(_canonical(_without_cache_control(block)))
            context = message_context if section == "messages" else ""
            keys.append(hashlib.sha256(digest.digest() + context.encode()).hexdigest())
            sizes.append(_tokens(size))
        breakpoints = [i for i, (_, block) in enumerate(blocks) if _marked(block)]
        if body.get("cache_control") and blocks:
            breakpoints.append(len(blocks) - 1)
        total = sizes[-1] if sizes else 0
        with self._lock:
            read_at = -1
            for point in breakpoints:
                for index in range(point, max(point - ANTHROPIC_LOOKBACK, -1), -1):
                    if keys[index] in self._anthropic:
                        read_at = max(read_at, index)
                        break
            read = sizes[read_at] if read_at >= 0 else 0
            written_at = -1
            for point in breakpoints:
                if sizes[point] >= ANTHROPIC_MINIMUM and keys[point] not in self._anthropic:
                    self._anthropic.add(keys[point])
                    written_at = max(written_at, point)
        written = sizes[written_at] - read if written_at > read_at else 0
        return CacheUse(total, read=read, written=max(written, 0))


def _marked(block: Any) -> bool:
    return isinstance(block, dict) and bool(block.get("cache_control"))


def _anthropic_blocks(body: dict[str, Any]) -> list[tuple[str, Any]]:
    blocks: list[tuple[str, Any]] = [("tools", tool) for tool in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, str):
        blocks.append(("system", {"type": "text", "text": system}))
    elif isinstance(system, list):
        blocks.extend(("system", block) for block in system)
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for block in content or []:
            if isinstance(block, dict):
                blocks.append(("messages", {"role": message.get("role"), **block}))
    return blocks


def _common_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    low, high = 0, limit
    while low < high:  # binary search on prefix equality: long prompts, few requests
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
