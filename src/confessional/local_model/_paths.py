"""Where the managed local model keeps weights, binaries, logs and locks."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CACHE_DIR_ENV = "CONFESSIONAL_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$CONFESSIONAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/confessional``, else ``~/.cache/...``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "confessional"


def resolve_cache_dir(cache_dir: Path | str | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def scratch_dir(cache_dir: Path) -> Path:
    """Temporary work lives inside the cache so the final rename stays on one file system."""
    path = cache_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def logs_dir(cache_dir: Path) -> Path:
    path = cache_dir / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / "locks" / f"{name}.lock"


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON so readers see either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
