"""``python -m confessional.local_model prepare|info``: set up or describe the local model.

``prepare`` fetches and verifies the weights and builds ``llama-server`` into the cache (CI
calls it before the tests; a warm cache returns in well under a second). ``info`` prints
the cached artefacts and their identity as JSON, fetching or building nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from confessional.local_model import (
    LLAMA_CPP_BIN,
    QWEN25_CODER_1_5B,
    LocalModelError,
    default_cache_dir,
    prepare,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m confessional.local_model")
    parser.add_argument("command", choices=("prepare", "info"))
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    try:
        setup = prepare()
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"ready in {setup.seconds:.1f}s: {setup.weights.path} ({setup.weights.name}, "
        f"sha256 {setup.weights.sha256[:12]}...) and {setup.server.path} "
        f"(version {setup.server.version})"
    )
    return 0


def _info() -> int:
    root = default_cache_dir()
    manifest = root / "models" / QWEN25_CODER_1_5B.key / "manifest.json"
    server = root / "bin" / LLAMA_CPP_BIN.key / "manifest.json"
    info = {
        "cache_dir": str(root),
        "weights": json.loads(manifest.read_text()) if manifest.is_file() else None,
        "server": json.loads(server.read_text()) if server.is_file() else None,
    }
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
