"""The stub HTTP server: both APIs on one 127.0.0.1 port, every request recorded raw."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from . import anthropic_api, openai_api
from .caching import CacheUse, PromptCache
from .replies import ApiName, Reply, Responder, ScriptError
from .wire import ApiRejection, Rendered

API_KEY = "sk-stub-test-key-0000000000000000"
"""The key the stub accepts, for both APIs (any other key gets the API's 401)."""

_ROUTES: dict[str, tuple[ApiName, ModuleType]] = {
    "/v1/chat/completions": ("openai", openai_api),
    "/v1/messages": ("anthropic", anthropic_api),
}


@dataclass(frozen=True)
class Exchange:
    """One request as received (raw bytes and decoded JSON) and the status answered."""

    api: ApiName
    path: str
    headers: dict[str, str]
    raw: bytes
    status: int
    error: str | None = None

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class ProviderStub:
    """OpenAI ``/v1/chat/completions`` and Anthropic ``/v1/messages`` on 127.0.0.1.

    Requests are validated as the real APIs do (see `openai_api` and `anthropic_api`); only
    valid ones reach ``responder``. ``exchanges`` holds every request in arrival order.
    """

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or _no_script
        self.exchanges: list[Exchange] = []
        self.script_errors: list[BaseException] = []
        self.cache = PromptCache()
        """What the APIs would have cached from this stub's requests (see ``caching``)."""
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProviderStub:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="provider-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def requests(self, api: ApiName | None = None) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if api is None or e.api == api]

    def rejected(self) -> list[Exchange]:
        """Every exchange answered with a 4xx status."""
        return [e for e in self.requests() if 400 <= e.status < 500]

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> Rendered:
        route = _ROUTES.get(urlsplit(path).path)
        if route is None:
            rendered = Rendered(404, (b'{"error": "not found"}',))
            self._record(Exchange("openai", path, headers, raw, 404, "no such route"))
            return rendered
        api, module = route
        try:
            module.check_auth(headers, API_KEY)
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise module.malformed_json(str(exc)) from None
            module.validate(body)
        except ApiRejection as rejection:
            self._record(Exchange(api, path, headers, raw, rejection.status, rejection.message))
            return module.error_response(rejection)  # type: ignore[no-any-return]
        try:
            reply = self.responder(api, body)
        except BaseException as exc:  # a broken script fails the test at teardown
            self.script_errors.append(exc)
            self._record(Exchange(api, path, headers, raw, 500, f"script: {exc}"))
            return Rendered(500, (b'{"error": "the test script raised"}',))
        use = self.cache.openai(body) if api == "openai" else self.cache.anthropic(body)
        rendered = _render(module, reply, body, use)
        self._record(Exchange(api, path, headers, raw, rendered.status))
        return rendered


def _render(module: ModuleType, reply: Reply, body: dict[str, Any], use: CacheUse) -> Rendered:
    if reply.raw is not None:
        raw = reply.raw
        return Rendered(raw.status, (raw.body,), raw.content_type, dict(raw.headers))
    if reply.error is not None:
        return module.http_error_response(reply.error)  # type: ignore[no-any-return]
    return module.render(reply, body, use)  # type: ignore[no-any-return]


def _no_script(api: ApiName, body: dict[str, Any]) -> Reply:
    raise ScriptError(f"no responder set for this {api} request")


def _handler_for(stub: ProviderStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            headers = {key.lower(): value for key, value in self.headers.items()}
            rendered = stub.handle(self.path, headers, raw)
            body = rendered.body
            self.send_response(rendered.status)
            self.send_header("content-type", rendered.content_type)
            self.send_header("content-length", str(len(body)))
            # No keep-alive: a client whose event loop has ended cannot leave a socket open.
            self.send_header("connection", "close")
            self.close_connection = True
            for key, value in rendered.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the exchanges list is the log."""

    return Handler


@contextmanager
def running_stub(responder: Responder | None = None) -> Iterator[ProviderStub]:
    """A started stub, stopped on exit; a script error is raised again at exit."""
    stub = ProviderStub(responder).start()
    try:
        yield stub
    finally:
        stub.stop()
    if stub.script_errors:
        raise stub.script_errors[0]
