"""Pieces both API modules share: rejections, rendered responses, ids and SSE framing."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_BASE62 = string.ascii_letters + string.digits


def random_id(prefix: str, length: int) -> str:
    """An id shaped like the real ones: ``chatcmpl-…``, ``call_…``, ``msg_01…``, ``toolu_01…``."""
    return prefix + "".join(secrets.choice(_BASE62) for _ in range(length))


class ApiRejection(Exception):
    """A request the real API refuses; rendered by each API module in its own error shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Rendered:
    """A complete HTTP response; ``chunks`` are the SSE events when streaming."""

    status: int
    chunks: tuple[bytes, ...]
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    streamed: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Rendered:
    data = json.dumps(payload).encode("utf-8")
    return Rendered(status, (data,), "application/json", dict(headers or {}))


def sse_event(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


def estimate_tokens(text: str) -> int:
    """About four characters a token, never zero: enough for budgets and usage assertions."""
    return max(1, len(text) // 4)
