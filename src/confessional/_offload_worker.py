"""The worker process of :mod:`confessional._offload` (its :func:`main`).

Reads length-prefixed pickles of ``(function, args)`` on stdin, answers each with
``("ok", result)``, ``("raised", exception)`` or ``("unavailable", why)`` on stdout, and
ends at end of input.
"""

from __future__ import annotations

import pickle
import sys
from typing import IO, Any

from confessional._offload import read_frame, write_frame


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    while True:
        try:
            request = read_frame(stdin)
        except EOFError:
            return
        try:
            function, args = pickle.loads(request)
        except Exception as exc:  # e.g. a check defined in the parent's __main__
            reply: tuple[str, Any] = ("unavailable", f"{type(exc).__name__}: {exc}")
        else:
            try:
                reply = ("ok", function(*args))
            except Exception as exc:
                reply = ("raised", exc)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            payload = pickle.dumps(("unavailable", f"cannot send the result: {exc}"))
        write_frame(stdout, payload)


def main() -> None:
    serve(sys.stdin.buffer, sys.stdout.buffer)
