"""Start ``llama-server`` on loopback, wait until it answers, and stop it by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

from confessional.local_model._errors import LocalModelError
from confessional.local_model._paths import logs_dir
from confessional.local_model._progress import Step

LOOPBACK = "127.0.0.1"
_POLL_SECONDS = 0.1
_TERM_GRACE_SECONDS = 3.0
_LOG_TAIL_LINES = 20


def tool_chat_template() -> Path:
    """The project's chat template, which makes tool calls parseable (see the file's header)."""
    traversable = resources.files("confessional.local_model").joinpath("templates/tool_calls.jinja")
    return Path(str(traversable))


THREADS_ENV = "CONFESSIONAL_LOCAL_THREADS"


def default_threads() -> int:
    """``$CONFESSIONAL_LOCAL_THREADS``, else 2 (the cores of the machines this targets).

    On a CPU shared with other busy processes one thread generates several times faster
    than two: llama.cpp's threads wait for each other at every step, so one descheduled
    thread stalls both.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return 2
    if not value.isdigit() or int(value) < 1:
        raise LocalModelError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ServerSettings:
    """How ``llama-server`` is started. The caps guard against runaway generation."""

    context_tokens: int = 8192
    threads: int = field(default_factory=default_threads)
    max_generated_tokens: int = 1024
    """``-n``: the server-side cap on any completion, whatever the request asks for."""
    seed: int = 1234
    startup_timeout_s: float = 180.0
    extra_args: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class RunningServer:
    """A started server: its process, address and log."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    alias: str

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{LOOPBACK}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def props(self) -> dict[str, Any]:
        """The server's ``/props`` document (build info, default generation settings)."""
        return _get_json(f"{self.root_url}/props", timeout=10.0)


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(
    binary: Path, model: Path, port: int, alias: str, settings: ServerSettings
) -> list[str]:
    return [
        str(binary),
        "--model",
        str(model),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--alias",
        alias,
        "--jinja",
        "--chat-template-file",
        str(tool_chat_template()),
        "--ctx-size",
        str(settings.context_tokens),
        "--threads",
        str(settings.threads),
        "--n-predict",
        str(settings.max_generated_tokens),
        "--seed",
        str(settings.seed),
        # one slot: the whole context for the one request in flight, and no interleaving
        "--parallel",
        "1",
        "--no-webui",
        *settings.extra_args,
    ]


@contextlib.contextmanager
def running_server(
    binary: Path,
    model: Path,
    *,
    alias: str,
    cache_dir: Path,
    settings: ServerSettings,
    step: Step,
) -> Iterator[RunningServer]:
    """Start the server, yield it once ``/health`` says ok, stop it on exit (SIGKILL fallback)."""
    port = free_port()
    log_path = logs_dir(cache_dir) / f"llama-server-{port}.log"
    command = server_command(binary, model, port, alias, settings)
    with log_path.open("wb") as log:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # its own process group: a Ctrl-C meant for us does not race our shutdown
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise LocalModelError(
                f"could not start llama-server: {exc}", command=command, log_path=log_path
            ) from exc
        server = RunningServer(process, port, log_path, alias)
        try:
            step.say(f"starting llama-server pid {process.pid} on {server.root_url}")
            _wait_ready(server, command, settings.startup_timeout_s, log)
            step.say(f"ready on {server.base_url} (log: {log_path})")
            yield server
        finally:
            stop_process(process)
            step.say(f"stopped llama-server pid {process.pid}")


def _wait_ready(
    server: RunningServer, command: Sequence[str], timeout: float, log: IO[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            log.flush()
            raise LocalModelError(
                f"llama-server exited with code {code} before it was ready; last output:\n"
                + _tail(server.log_path),
                command=command,
                log_path=server.log_path,
            )
        try:
            health = _get_json(f"{server.root_url}/health", timeout=2.0)
        except (OSError, ValueError) as exc:  # not listening yet, or still loading (503)
            last_problem = str(exc)
        else:
            if health.get("status") == "ok":
                return
            last_problem = f"health: {health}"
        time.sleep(_POLL_SECONDS)
    log.flush()
    raise LocalModelError(
        f"llama-server was not ready after {timeout:.0f}s ({last_problem}); last output:\n"
        + _tail(server.log_path),
        command=command,
        log_path=server.log_path,
    )


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGKILL when the parent dies.

    A parent killed without running its ``finally`` (SIGTERM, SIGKILL) would otherwise leave
    a server holding 2 GB of RAM and a CPU. Elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def stop_process(process: subprocess.Popen[bytes], grace: float = _TERM_GRACE_SECONDS) -> None:
    """SIGTERM by PID, then SIGKILL if it is still alive after ``grace`` seconds.

    A server in the middle of a generation can ignore SIGTERM, hence the fallback.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


def _get_json(url: str, *, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code} from {url}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not return a JSON object")
    return data


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "  | (no log)"
    return "\n".join(f"  | {line}" for line in lines[-_LOG_TAIL_LINES:])
