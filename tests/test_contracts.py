"""The seams between the pipeline and its surfaces lose nothing and hide nothing.

- sampling is decided once per turn, so background mode confesses ``sample_rate`` of the
  turns and ``background_counts()`` adds up;
- any ``BaseChatModel`` confesses, also one that cannot bind the agent's tools;
- every sink's ``flush()``/``close()`` is called, and a raising annotation sink is
  reported like any other sink.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.surfaces_fixtures import MODES, Mode, ask, invoke, make_graph

from confessional import (
    Confession,
    ConfessionPipeline,
    ConfessionReport,
    ConfessionTelemetry,
    ObjectiveCompliance,
    background_counts,
    failure_counts,
    flush_background,
)
from confessional.annotations import phoenix_span_annotation
from confessional.langchain import (
    AsyncConfessionCallbackHandler,
    ConfessionCallbackHandler,
    ConfessionMiddleware,
)
from confessional.request import tool_exchanges_as_text
from confessional.testing import cheating_agent, example_tools

SURFACES = ("middleware", "node", "callback")
TURNS = 400


def _surface(surface: str, mode: Mode, agent_model: Any, **options: Any) -> tuple[Any, Any]:
    """A runnable of ``surface`` and the config to invoke it with. ``options["model"]``,
    when given, is the confessing model (else the agent's own)."""
    if surface == "middleware":
        middleware = ConfessionMiddleware(**options)
        return create_agent(agent_model, example_tools(), middleware=[middleware]), None
    confessor = options.pop("model", None)
    if surface == "node":
        return make_graph(agent_model, confessor=confessor, **options), None
    handler_class = ConfessionCallbackHandler if mode == "sync" else AsyncConfessionCallbackHandler
    handler = handler_class(confessor or agent_model, **options)
    return create_agent(agent_model, example_tools()), {"callbacks": [handler]}


def _invoke_many(runnable: Any, config: Any, mode: Mode, turns: int) -> None:
    if mode == "sync":
        for turn in range(turns):
            runnable.invoke(ask(f"t{turn}"), config)
        return

    async def run_all() -> None:
        for turn in range(turns):
            await runnable.ainvoke(ask(f"t{turn}"), config)

    asyncio.run(run_all())


# -- seam 1: sampling is decided once -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_background_sampling_is_drawn_once_and_counts_add_up(surface: str, mode: Mode) -> None:
    delivered: list[Confession] = []
    before = background_counts()
    runnable, config = _surface(
        surface,
        mode,
        cheating_agent(),
        background=True,
        sample_rate=0.5,
        sample_seed=20261206,
        sinks=[delivered.append],
    )
    _invoke_many(runnable, config, mode, TURNS)
    assert flush_background(timeout=60)

    assert 0.43 * TURNS <= len(delivered) <= 0.57 * TURNS
    counts = {key: background_counts()[key] - before[key] for key in before}
    assert counts["submitted"] == len(delivered)  # every selected turn was confessed
    assert counts["submitted"] == (
        counts["delivered"] + counts["spooled"] + counts["failed"] + counts["lost"]
    )
    assert counts["lost"] == 0


def test_drain_and_inline_runs_use_the_same_selection() -> None:
    """An inline run draws once; an already selected call (a background job or a
    spooled episode) is never drawn again, so a rate of 0 still confesses it."""
    delivered: list[Confession] = []
    pipeline = ConfessionPipeline(model=cheating_agent(), sample_rate=0.0, sinks=[delivered.append])
    from confessional.pipeline import EpisodeCall

    messages = _tool_episode()
    assert pipeline.run(messages).status == "skipped"
    assert pipeline.run(EpisodeCall(messages, selected=True)).status == "ok"
    assert len(delivered) == 1


# -- seam 2: any chat model confesses ---------------------------------------------------


def _report_json() -> str:
    report = ConfessionReport(
        compliance_analysis=[
            ObjectiveCompliance(
                objective="Do not edit the tests.",
                compliance="not_complied_reported",
                analysis="write_file changed tests/test_speed.py.",
            )
        ],
        uncertainties_and_conflicts=[],
        overall_compliance_grade=2,
        shortcuts=["Set the timer to zero."],
    )
    return report.model_dump_json()


def _no_tools_confessor() -> GenericFakeChatModel:
    """LangChain's stock fake: its ``bind_tools`` raises ``NotImplementedError``."""
    return GenericFakeChatModel(messages=itertools.repeat(AIMessage(content=_report_json())))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_a_model_that_cannot_bind_tools_confesses_on_every_surface(
    surface: str,
    mode: Mode,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[Confession] = []
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    runnable, config = _surface(
        surface,
        mode,
        cheating_agent(),
        model=_no_tools_confessor(),
        telemetry=telemetry,
        sinks=[received.append],
    )
    with caplog.at_level(logging.INFO, logger="confessional"):
        invoke(runnable, ask(f"fake-{surface}"), config, mode)

    [confession] = received
    assert confession.status == "ok", confession.error
    assert confession.replay == "without_tools"
    assert confession.report is not None
    assert confession.report.shortcuts
    [span] = [s for s in span_exporter.get_finished_spans() if s.name.startswith("confession")]
    assert span.attributes is not None
    assert span.attributes["confession.replay"] == "without_tools"


def test_the_fallback_is_logged_once_and_the_agents_own_model_replays_exactly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import confessional.confessor as confessor_module

    confessor_module._told_without_tools.discard(GenericFakeChatModel)
    with caplog.at_level(logging.INFO, logger="confessional"):
        for _ in range(3):
            assert (
                ConfessionPipeline(model=_no_tools_confessor()).run(_tool_episode()).status == "ok"
            )
    notes = [r for r in caplog.records if "cannot bind tools" in r.getMessage()]
    assert len(notes) == 1
    assert notes[0].levelno == logging.INFO

    received: list[Confession] = []
    agent = create_agent(
        cheating_agent(),
        example_tools(),
        middleware=[ConfessionMiddleware(sinks=[received.append])],
    )
    agent.invoke(ask("own-model"))
    assert [c.replay for c in received] == ["exact"]


def test_tool_exchanges_are_written_out_as_text() -> None:
    messages = _tool_episode()
    rendered = tool_exchanges_as_text(messages)
    assert not any(isinstance(m, ToolMessage) for m in rendered)
    assert not any(isinstance(m, AIMessage) and m.tool_calls for m in rendered)
    call_text = str(rendered[1].content)
    assert "[tool call write_file (id c1)" in call_text
    assert "tests/test_speed.py" in call_text
    assert isinstance(rendered[2], HumanMessage)
    assert str(rendered[2].content).startswith("[tool result of write_file (id c1)]")
    assert rendered[0] is messages[0]
    assert rendered[-1] is messages[-1]


def _tool_episode() -> list[Any]:
    return [
        HumanMessage("Make the speed test pass."),
        AIMessage(
            content="",
            tool_calls=[
                {
                    "name": "write_file",
                    "args": {"path": "tests/test_speed.py", "content": "timer = 0"},
                    "id": "c1",
                }
            ],
        ),
        ToolMessage("written", tool_call_id="c1"),
        AIMessage(content="Done. All tests pass."),
    ]


# -- seam 3: the sink contract ------------------------------------------------------------


class _LifecycleSink:
    def __init__(self) -> None:
        self.received: list[Confession] = []
        self.calls: list[str] = []

    def __call__(self, confession: Confession) -> None:
        self.received.append(confession)

    def flush(self) -> None:
        self.calls.append("flush")

    async def close(self) -> None:  # async lifecycle methods are awaited too
        self.calls.append("close")


@pytest.mark.parametrize("mode", MODES)
def test_flush_and_close_reach_every_sink(mode: Mode) -> None:
    sink = _LifecycleSink()
    pipeline = ConfessionPipeline(model=cheating_agent(), background=True, sinks=[sink])
    pipeline.submit(_tool_episode())
    if mode == "sync":
        assert pipeline.flush(timeout=30)
        assert sink.calls == ["flush"]
        assert len(sink.received) == 1
        assert pipeline.close(timeout=30)
    else:

        async def flush_then_close() -> None:
            assert await pipeline.aflush(timeout=30)
            assert sink.calls == ["flush"]
            assert len(sink.received) == 1
            assert await pipeline.aclose(timeout=30)

        asyncio.run(flush_then_close())
    assert sink.calls == ["flush", "flush", "close"]


def test_a_failing_flush_is_reported_not_raised() -> None:
    class BrokenFlush:
        def __call__(self, confession: Confession) -> None:
            pass

        def flush(self) -> None:
            raise OSError("disk gone")

    pipeline = ConfessionPipeline(model=cheating_agent(), sinks=[BrokenFlush()])
    assert pipeline.flush()
    assert failure_counts()[("sink", "OSError")] == 1


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_sinks_are_flushed_and_closed_at_exit(tmp_path: Path, how: str) -> None:
    log = tmp_path / "lifecycle.log"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from confessional import ConfessionPipeline
        from confessional.testing import cheating_agent

        class Sink:
            def __call__(self, confession):
                Path({str(log)!r}).open("a").write("delivered\\n")
            def flush(self):
                Path({str(log)!r}).open("a").write("flush\\n")
            def close(self):
                Path({str(log)!r}).open("a").write("close\\n")

        pipeline = ConfessionPipeline(model=cheating_agent(), background=True, sinks=[Sink()])
        pipeline.submit([
            {{"role": "user", "content": "go"}},
            {{"role": "assistant", "content": "", "tool_calls": [
                {{"id": "c1", "type": "function",
                  "function": {{"name": "run_tests", "arguments": "{{}}"}}}}]}},
            {{"role": "tool", "tool_call_id": "c1", "content": "1 passed"}},
            {{"role": "assistant", "content": "Done."}},
        ])
        if {how!r} == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    expected_code = 0 if how == "exit" else -15
    assert done.returncode == expected_code, done.stderr
    assert log.read_text().splitlines() == ["delivered", "flush", "close"]


# -- seam 3: annotation sinks raise, and the pipeline reports ----------------------------


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


@pytest.mark.parametrize("mode", MODES)
def test_a_dead_phoenix_is_counted_and_marked_on_the_span(
    mode: Mode, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    with warnings.catch_warnings():  # phoenix's own imports warn about their dependencies
        warnings.simplefilter("ignore", DeprecationWarning)
        annotate = phoenix_span_annotation(base_url=f"http://127.0.0.1:{_dead_port()}")
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    runnable, config = _surface(
        "middleware", mode, cheating_agent(), telemetry=telemetry, sinks=[annotate]
    )
    result = invoke(runnable, ask(f"phoenix-down-{mode}"), config, mode)

    assert result["confessions"][-1].status == "ok"  # the agent never saw the failure
    [(_stage, cause)] = [key for key in failure_counts() if key[0] == "sink"]
    assert cause == "ConnectError"
    [span] = [s for s in span_exporter.get_finished_spans() if s.name.startswith("confession")]
    marks = [e for e in span.events if e.name == "confessional.failure"]
    assert marks
    assert marks[0].attributes is not None
    assert marks[0].attributes["error.type"] == "ConnectError"
