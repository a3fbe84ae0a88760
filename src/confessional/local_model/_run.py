"""Run a set-up command with its output in a log file and selected lines shown as progress."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from confessional.local_model._errors import LocalModelError

_TAIL_LINES = 15


def run_logged(
    command: Sequence[str],
    *,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str,
) -> None:
    """Run ``command``, append its merged output to ``log_path``, pass each line to ``on_line``.

    Raises:
        LocalModelError: the program is missing or exits non-zero; the message names the
            command, the log and the last lines of output.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8", errors="replace") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        try:
            process = subprocess.Popen(
                list(command),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except FileNotFoundError as exc:
            raise LocalModelError(
                f"{what}: program not found ({exc.filename})", command=command, log_path=log_path
            ) from exc
        tail: list[str] = []
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\n")
                log.write(raw if raw.endswith("\n") else raw + "\n")
                tail = [*tail[-(_TAIL_LINES - 1) :], line]
                if on_line is not None:
                    on_line(line)
            code = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        log.write(f"# exit code {code}\n")
    if code != 0:
        shown = "\n".join(f"  | {line}" for line in tail)
        raise LocalModelError(
            f"{what} failed with exit code {code}; last output:\n{shown}",
            command=command,
            log_path=log_path,
        )
