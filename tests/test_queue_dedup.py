"""The built-in sinks deduplicate on ``Confession.id`` (the queue's idempotency key)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from confessional import Confession, ConfessionTelemetry, JsonlSink


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["confession"]["id"] for line in path.read_text().splitlines()]


def test_jsonl_sink_skips_an_id_the_file_holds_even_written_by_another_sink(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.jsonl"
    first, second = JsonlSink(path), JsonlSink(path)  # as two processes would
    confession = Confession(status="ok")
    first(confession)
    second(confession)  # a redelivery elsewhere: the file already holds the id
    first(confession)
    other = Confession(status="ok")
    second(other)
    first(other)
    assert _ids(path) == [confession.id, other.id]
    first.close()
    first(Confession(status="ok"))  # reopens, and reads the file again
    first(confession)
    assert len(_ids(path)) == 3


def test_jsonl_sink_races_write_one_line_per_id(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sinks = [JsonlSink(path) for _ in range(4)]
    confessions = [Confession(status="ok") for _ in range(25)]
    threads = [
        threading.Thread(target=lambda s=sink: [s(c) for c in confessions]) for sink in sinks
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(_ids(path)) == sorted(c.id for c in confessions)


def test_jsonl_sink_can_keep_every_delivery(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path, deduplicate=False)
    confession = Confession(status="ok")
    sink(confession)
    sink(confession)
    assert _ids(path) == [confession.id, confession.id]


def test_span_sink_records_an_id_once(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    confession = Confession(status="ok")
    telemetry(confession)
    telemetry(confession)
    telemetry(Confession(status="ok"))
    assert len(span_exporter.get_finished_spans()) == 2
