"""A worker process for CPU work that must not stall an event loop: the audit of a large
episode.

Why a process: the checks' regular expressions are C calls that hold the GIL for the whole
scan of a large text, so on a thread they would stall the loop all the same. Why not
``multiprocessing``: its ``spawn`` and ``forkserver`` start methods import the
application's ``__main__`` again in the child (a script without an ``if __name__ ==
"__main__"`` guard would run twice), and ``fork`` is unsafe in a process that runs
threads. So this is one plain Python child running :mod:`confessional._offload_worker`,
started on first use, fed length-prefixed pickles on its stdin, answering on its stdout,
and ended at exit.

:func:`call_off_process` raises :class:`OffloadUnavailable` when the work cannot go there
(the function or its arguments cannot be pickled or unpickled: a lambda, a check defined
in ``__main__``; the child died); the caller then runs it on a thread.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any, Final

__all__ = ["OffloadUnavailable", "call_off_process", "read_frame", "write_frame"]

_HEADER: Final = struct.Struct("!Q")
_BOOTSTRAP: Final = (
    "import json, sys; del sys.path[0]; "
    "sys.path.extend(p for p in json.loads(sys.argv[1]) if p not in sys.path); "
    "from confessional._offload_worker import main; main()"
)


class OffloadUnavailable(RuntimeError):
    """The work could not run in the worker process (see the module docs)."""


def read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            raise EOFError("the offload worker closed its pipe")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> bytes:
    (size,) = _HEADER.unpack(read_exact(stream, _HEADER.size))
    return read_exact(stream, size)


class _Worker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def _started(self) -> subprocess.Popen[bytes]:
        process = self._process
        if process is None or process.poll() is not None:
            # The child's own path first (the standard library must not be shadowed by
            # a file in the working directory, say a queue.py), then every entry of this
            # process's path, so it imports confessional and the checks as we do.
            paths = [entry for entry in sys.path if entry not in ("", os.getcwd())]
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, json.dumps(paths)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self._process = process
        return process

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            request = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a lambda, a local class, an open handle
            raise OffloadUnavailable(f"cannot send the work: {type(exc).__name__}") from exc
        with self._lock:
            process = self._started()
            assert process.stdin is not None
            assert process.stdout is not None
            try:
                write_frame(process.stdin, request)
                status, value = pickle.loads(read_frame(process.stdout))
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                self.close()
                raise OffloadUnavailable(f"the worker died: {type(exc).__name__}") from exc
        if status == "ok":
            return value
        if status == "raised":
            raise value
        raise OffloadUnavailable(str(value))

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()  # the worker ends at end of input
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


_worker = _Worker()
atexit.register(_worker.close)


def call_off_process(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in the worker process (blocking: call it from a thread).

    Raises what ``function`` raised, or :class:`OffloadUnavailable`."""
    return _worker.call(function, *args)
