"""Shared fixtures: an in-memory OpenTelemetry pipeline and the AgentDojo transcripts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from confessional.health import reset_failure_counts

REPO = Path(__file__).resolve().parents[1]
# A copy of ../shared/data/agentdojo (MIT, ethz-spylab) so a plain clone is self-contained.
AGENTDOJO = REPO / "tests" / "data" / "agentdojo"


@pytest.fixture(autouse=True)
def _fresh_failure_counts() -> Iterator[None]:
    """Each test starts with no failure counted, so rate-limited warnings show up."""
    reset_failure_counts()
    yield
    reset_failure_counts()


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


def load_agentdojo() -> list[tuple[str, dict[str, Any]]]:
    """Every episode of both AgentDojo files as ``(file name, episode)``."""
    episodes: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(AGENTDOJO.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        episodes.extend((path.name, json.loads(line)) for line in lines[1:] if line.strip())
    return episodes
