"""The one error the managed local model raises on purpose."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from confessional.errors import ConfigurationError


class LocalModelError(ConfigurationError):
    """Setting up or running the managed local model failed.

    Attributes:
        command: the command that failed, when one did (as an argument list).
        log_path: the file holding that command's output, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        details = [message]
        if command is not None:
            details.append(f"command: {' '.join(command)}")
        if log_path is not None:
            details.append(f"log: {log_path}")
        super().__init__("\n".join(details))
        self.command: tuple[str, ...] | None = tuple(command) if command is not None else None
        self.log_path = log_path
