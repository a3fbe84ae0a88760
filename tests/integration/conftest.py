"""Real Phoenix and MLflow servers on 127.0.0.1, started once per module, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import Server, start_mlflow, start_phoenix, stop


@pytest.fixture(scope="module")
def phoenix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_phoenix(Path(tmp_path_factory.mktemp("phoenix")))
    print(f"\nphoenix ready at {server.url} in {server.started_in_s:.1f}s")
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_mlflow(Path(tmp_path_factory.mktemp("mlflow")))
    print(f"\nmlflow ready at {server.url} in {server.started_in_s:.1f}s")
    try:
        yield server
    finally:
        stop(server)
