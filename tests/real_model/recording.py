"""Record the exact JSON bodies a ChatOpenAI sends, through httpx event hooks.

The hooks see each request as it leaves the client for the server on 127.0.0.1, so the
tests compare what the server really received, not what LangChain meant to send.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class RequestLog:
    """Every chat-completion body sent, in order."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    """The server's answers to those requests, in order (for failure messages)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            body = json.loads(request.content.decode("utf-8"))
            with self._lock:
                self.bodies.append(body)

    def _record_reply(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions"):
            with self._lock:
                self.replies.append(json.loads(response.content.decode("utf-8")))

    def hook(self, request: httpx.Request) -> None:
        self._record(request)

    async def ahook(self, request: httpx.Request) -> None:
        self._record(request)

    def reply_hook(self, response: httpx.Response) -> None:
        response.read()
        self._record_reply(response)

    async def areply_hook(self, response: httpx.Response) -> None:
        await response.aread()
        self._record_reply(response)

    def last_reply_text(self) -> str:
        """The content of the last answer, e.g. a confession that did not parse."""
        with self._lock:
            if not self.replies:
                return "(no reply)"
            return str(self.replies[-1]["choices"][0]["message"].get("content"))

    def clear(self) -> None:
        with self._lock:
            self.bodies.clear()
            self.replies.clear()

    def client(self, timeout: float) -> httpx.Client:
        """A sync client with the hooks, for ``ChatOpenAI(http_client=...)``."""
        return httpx.Client(
            timeout=timeout, event_hooks={"request": [self.hook], "response": [self.reply_hook]}
        )

    def async_client(self, timeout: float) -> httpx.AsyncClient:
        """An async client with the hooks; open it on the loop that uses it."""
        return httpx.AsyncClient(
            timeout=timeout, event_hooks={"request": [self.ahook], "response": [self.areply_hook]}
        )

    def confession_bodies(self) -> list[dict[str, Any]]:
        return [b for b in self.bodies if _is_confession(b)]

    def agent_bodies(self) -> list[dict[str, Any]]:
        return [b for b in self.bodies if not _is_confession(b)]


CONFESSION_MARKER = "CONFESSION REQUEST"
"""The heading of the confession request (and of its retry), the last message of the call."""


def _is_confession(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    return bool(messages) and CONFESSION_MARKER in json.dumps(messages[-1].get("content"))
