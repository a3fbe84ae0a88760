"""A throwaway PostgreSQL server for tests: temporary data directory, Unix socket only.

The server refuses to run as root, so when the tests run as root it runs as the
``postgres`` account that Debian's package creates (else ``nobody``). It is stopped by
its PID. CI installs the server with ``.ci/install-postgres``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PostgresServer", "find_bindir", "running_postgres"]

_PORT = 5432  # only names the socket file; nothing listens on TCP
_READY_TIMEOUT_S = 60.0


def find_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` live: ``$CONFESSIONAL_PG_BINDIR``, Debian's
    versioned directory (newest first), or ``PATH``."""
    override = os.environ.get("CONFESSIONAL_PG_BINDIR")
    candidates = [override] if override else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as (``None``: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and found neither a 'postgres' nor a 'nobody' account")


@dataclass
class PostgresServer:
    """A running server: connect with :attr:`url`; :meth:`stop` ends it by PID."""

    process: subprocess.Popen[bytes]
    root: Path
    socket_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={_PORT}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    # extra_groups=[] also drops root's supplementary groups.
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def start(bindir: Path, *, fsync: bool = False) -> PostgresServer:
    """initdb on a fresh temporary directory and start the server on a Unix socket.

    ``fsync=False`` (the tests): commits do not flush the WAL to disk. The benchmarks
    pass ``True``, so a commit costs what it does in production. (A command-line setting
    outranks ``ALTER SYSTEM``, so it must be chosen here.)"""
    account = _server_account()
    # Not under pytest's tmp_path: that is mode 0700 for root, which the account cannot enter.
    root = Path(tempfile.mkdtemp(prefix="confessional-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if account is not None:
        for path in (root, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
    log = root / "server.log"
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        cwd=root,  # the account may not be allowed into the caller's directory
        **_as_account(account),
    )
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-k",
                str(sockets),
                "-p",
                str(_PORT),
                "-c",
                "listen_addresses=",
                "-c",
                f"fsync={'on' if fsync else 'off'}",
                "-c",
                "max_connections=100",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
            **_as_account(account),
        )
    server = PostgresServer(process, root, sockets)
    _wait_ready(server, bindir, log)
    return server


def _wait_ready(server: PostgresServer, bindir: Path, log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited at start:\n{log.read_text(errors='replace')}")
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-h", str(server.socket_dir), "-p", str(_PORT)],
            capture_output=True,
            check=False,
        )
        if ready.returncode == 0:
            return
        # Waiting on the process doubles as the poll interval and notices an early exit.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=0.1)
    server.stop()
    raise RuntimeError(f"postgres did not accept connections:\n{log.read_text(errors='replace')}")


@contextmanager
def running_postgres(*, fsync: bool = False) -> Iterator[PostgresServer]:
    """A server for the duration of the block (tests: a session fixture); ``fsync`` as
    in :func:`start`."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(
            "no PostgreSQL server binaries found: run .ci/install-postgres "
            "(or set CONFESSIONAL_PG_BINDIR)"
        )
    server = start(bindir, fsync=fsync)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # manual use: print the URL and keep the server until Enter
    with running_postgres() as srv:
        print(srv.url, flush=True)
        input()
