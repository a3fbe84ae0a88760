"""The spool and ``confessional drain``: what background mode could not confess in time is
written down, and a later run confesses it with the same settings."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.surfaces_fixtures import CHEAT_ANSWER, MODES, Mode, ask, invoke

from confessional import (
    Confession,
    ConfessionOptions,
    ConfessionPipeline,
    ConfessionTelemetry,
    background_counts,
    flush_background,
)
from confessional.cli import main
from confessional.langchain import ConfessionMiddleware
from confessional.spool import Spool, read_spool
from confessional.testing import (
    ScriptedChatModel,
    admitting_confessor,
    cheating_agent,
    example_tools,
)

# What `--options test_drain:drain_options` imports (this module, as pytest loads it).
DRAIN_EXPORTER = InMemorySpanExporter()
_drain_provider = TracerProvider()
_drain_provider.add_span_processor(SimpleSpanProcessor(DRAIN_EXPORTER))


def drain_options() -> ConfessionOptions:
    return ConfessionOptions(
        model=admitting_confessor(),
        telemetry=ConfessionTelemetry(tracer_provider=_drain_provider),
    )


def _refuse(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> Any:
    raise ConnectionError("provider still down")


FAILING_OPTIONS = ConfessionOptions(model=ScriptedChatModel(respond=_refuse))
NOT_OPTIONS = "a string"


class Hung:
    """A confessing model that does not answer until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        answer = admitting_confessor().respond

        def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> Any:
            self.release.wait()
            return answer(messages, tools)

        self.model = ScriptedChatModel(respond=respond, model_name="hung-provider")


@pytest.fixture
def hung() -> Iterator[Hung]:
    model = Hung()
    yield model
    model.release.set()


def _markers(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sorted(
        json.loads(line)["confession"]["report"]["compliance_analysis"][0]["objective"].rsplit(
            "run=", 1
        )[-1]
        for line in lines
    )


def _drain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["drain", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("mode", MODES)
def test_an_agent_episode_not_confessed_in_time_is_spooled_then_drained(
    mode: Mode, hung: Hung, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    received: list[Confession] = []
    spool = tmp_path / "spool.jsonl"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    middleware = ConfessionMiddleware(
        hung.model,
        background=True,
        sinks=[received.append],
        spool=spool,
        telemetry=ConfessionTelemetry(tracer_provider=provider),
        agent_name="coder",
    )
    agent = create_agent(cheating_agent(), example_tools(), middleware=[middleware])
    before = background_counts()
    with provider.get_tracer("test").start_as_current_span("agent run") as root:
        results = [invoke(agent, ask(f"{mode}-{i}"), None, mode) for i in range(3)]
    assert all(r["messages"][-1].content == CHEAT_ANSWER for r in results)

    # Shutdown, as at exit or on SIGTERM: nothing finishes in time, all is spooled.
    assert not flush_background(timeout=0.05, spool_unfinished=True)
    after = background_counts()
    assert after["spooled"] - before["spooled"] == 3
    assert after["lost"] == before["lost"]
    assert middleware.pipeline.pending == 0
    hung.release.set()
    assert flush_background(timeout=10)
    assert received == []  # spooled ones are never also delivered

    [record, *_] = items = list(read_spool(spool))
    assert len(items) == 3
    assert record.agent_name == "coder"
    assert record.model_name == "hung-provider"
    assert record.episode.has_tool_calls
    assert {t["function"]["name"] for t in record.tools} == {t.name for t in example_tools()}

    code, output = _drain(
        capsys, str(spool), "--options", "test_drain:drain_options", "--out", str(tmp_path / "o")
    )
    assert code == 0, output
    assert _markers(tmp_path / "o") == sorted(f"{mode}-{i}" for i in range(3))
    assert not spool.exists()
    assert "3 spooled episode(s): 3 delivered, 0 spooled again." in output
    # The drained confessions join the agent's original trace.
    drained_spans = [s for s in DRAIN_EXPORTER.get_finished_spans() if s.name.startswith("conf")]
    assert drained_spans
    assert {s.context.trace_id for s in drained_spans[-3:]} == {root.get_span_context().trace_id}


def test_episodes_that_fail_again_go_back_to_the_spool(
    hung: Hung, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "spool.jsonl"
    pipeline = ConfessionPipeline(model=hung.model, background=True, spool=spool)
    futures = [pipeline.submit(_conversation(f"t{i}")) for i in range(4)]
    assert not flush_background(timeout=0.05, spool_unfinished=True)
    hung.release.set()
    for future in futures:
        assert future is not None
        assert future.cancelled() or future.result(timeout=10).status == "skipped"
    ids = sorted(item.id for item in read_spool(spool))

    code, output = _drain(capsys, str(spool), "--options", "test_drain:FAILING_OPTIONS")

    assert code == 1
    assert "4 episode(s) failed again" in output
    again = list(read_spool(spool))
    assert sorted(item.id for item in again) == ids
    assert all(item.reason.startswith("drain failed") for item in again)
    assert list(tmp_path.glob("*.draining-*")) == []


def _conversation(marker: str) -> list[Any]:
    return [
        {"role": "user", "content": f"Make the speed test pass. run={marker}"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "function": {"name": "run_tests", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "1 passed"},
        {"role": "assistant", "content": "Done."},
    ]


def test_a_spool_record_holds_what_a_later_process_needs(tmp_path: Path) -> None:
    pipeline = ConfessionPipeline(model=admitting_confessor())
    episode = pipeline.episode(_conversation("x"), tools=example_tools())
    assert episode is not None
    spool = Spool(tmp_path / "s.jsonl")
    spool.append(
        episode,
        agent_name="a",
        model_settings={"temperature": 0.2, "client": object()},
        reason="test",
    )
    spool.close()

    raw = json.loads((tmp_path / "s.jsonl").read_text(encoding="utf-8"))
    assert raw["dropped_settings"] == ["client"]  # not JSON: named, not silently lost
    [item] = read_spool(tmp_path / "s.jsonl")
    assert item.episode == episode
    assert item.model_settings == {"temperature": 0.2}
    assert item.agent_name == "a"


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "no spool at"),
        ('{"type": "spooled_episode", "spool_version": 99}\n', [], "spool_version 99"),
        ("not json\n{}\n", [], "line 1 is not JSON"),
        ("", ["--options", "test_drain:NOT_OPTIONS"], "must be a ConfessionOptions"),
        ("", ["--options", "no_such_module_here:x"], "cannot import it"),
        ("", ["--options", "nocolon"], "must be MODULE:ATTR"),
        ("", ["--model", "x"], "not of the form provider:model"),
    ],
)
def test_bad_input_is_refused_and_the_spool_left_as_it_was(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    args: list[str],
    message: str,
) -> None:
    spool = tmp_path / "spool.jsonl"
    if content is not None:
        spool.write_text(content, encoding="utf-8")
    options = args or ["--options", "test_drain:drain_options"]

    code, output = _drain(capsys, str(spool), *options)

    assert code == 2
    assert message in output
    if content is not None:
        assert spool.read_text(encoding="utf-8") == content
    assert list(tmp_path.glob("*.draining-*")) == []


def test_drain_needs_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "spool.jsonl").write_text("", encoding="utf-8")
    code, output = _drain(capsys, str(tmp_path / "spool.jsonl"))
    assert code == 2
    assert "drain needs the model that confesses" in output


def test_the_worker_shares_the_settings_flags_and_names_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["worker", "--queue", "postgresql://127.0.0.1:1/never-reached"])
    assert code == 2
    assert "worker needs the model that confesses" in capsys.readouterr().err


def test_the_leftovers_of_an_interrupted_drain_are_drained_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    episode = ConfessionPipeline(model=admitting_confessor()).episode(_conversation("left"))
    assert episode is not None
    leftover = Spool(tmp_path / "spool.jsonl.draining-4242")  # a drain that crashed midway
    leftover.append(episode, reason="shutdown")
    leftover.close()
    fresh = Spool(tmp_path / "spool.jsonl")  # spooled by the agent since
    fresh.append(episode, reason="shutdown")
    fresh.close()

    code, output = _drain(
        capsys,
        str(tmp_path / "spool.jsonl"),
        "--options",
        "test_drain:drain_options",
        "--out",
        str(tmp_path / "o"),
    )

    assert code == 0, output
    assert _markers(tmp_path / "o") == ["left", "left"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
