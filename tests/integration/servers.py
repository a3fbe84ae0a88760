"""Start and stop real tracing backends (Phoenix, MLflow) on 127.0.0.1 for tests and recipes.

Each server runs as a subprocess in its own process group, so stopping it by PID also
stops the workers it forks. Readiness is polled over HTTP with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Server", "free_port", "start_mlflow", "start_phoenix", "stop"]

READY_TIMEOUT_S = 120.0


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    started_in_s: float

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _executable(name: str) -> str:
    # Prefer the interpreter's own environment, so a venv works without being activated.
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name!r} is not installed in this environment")
    return found


def _start(
    name: str, argv: list[str], env: dict[str, str], url: str, ready_path: str, workdir: Path
) -> Server:
    log_path = workdir / f"{name}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,  # its own process group: stop() kills workers too
        )
    server = Server(name, process, url, log_path, 0.0)
    deadline = started + READY_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} before it was ready:\n"
                    + server.log_tail()
                )
            try:
                with urllib.request.urlopen(url + ready_path, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} not ready after {READY_TIMEOUT_S:.0f}s:\n" + server.log_tail()
                )
            time.sleep(0.2)  # poll interval of the readiness loop, bounded by the deadline
    except BaseException:
        stop(server)
        raise
    server.started_in_s = time.monotonic() - started
    return server


def stop(server: Server, timeout_s: float = 15.0) -> None:
    """Stop the server's whole process group by its PID: SIGTERM, then SIGKILL."""
    process = server.process
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait(timeout=timeout_s)
    # Workers of the group may outlive the leader by a moment; make sure none stays.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    # No proxy for loopback, whatever the machine's settings.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def start_phoenix(workdir: Path) -> Server:
    """``phoenix serve`` on loopback, gRPC moved off 4317, telemetry and CDNs off."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, grpc_port = free_port(), free_port()
    env = _base_env()
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        # Phoenix's gRPC receiver binds every interface; at least keep it off 4317.
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        PHOENIX_WORKING_DIR=str(workdir),
    )
    url = f"http://127.0.0.1:{port}"
    return _start("phoenix", [_executable("phoenix"), "serve"], env, url, "/healthz", workdir)


def start_mlflow(workdir: Path) -> Server:
    """``mlflow server`` on loopback with a SQLite store (one worker: fast to start)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        _executable("mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--default-artifact-root",
        str(workdir / "artifacts"),
    ]
    url = f"http://127.0.0.1:{port}"
    return _start("mlflow", argv, _base_env(), url, "/health", workdir)
