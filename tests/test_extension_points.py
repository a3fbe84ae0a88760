"""Extension points on every surface, sync and async: user checks, user sinks, sampling,
and the action each surface records on the confession and its span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.surfaces_fixtures import (
    CHEAT_ANSWER,
    MODES,
    Mode,
    ask,
    invoke,
    make_graph,
    thread,
)

from confessional import (
    Auditor,
    Confession,
    ConfessionHalted,
    ConfessionOptions,
    ConfessionPolicy,
    ConfessionTelemetry,
    ConfigurationError,
    Episode,
    Finding,
    failure_counts,
)
from confessional import semconv as sc
from confessional.langchain import (
    AsyncConfessionCallbackHandler,
    ConfessionCallbackHandler,
    ConfessionMiddleware,
)
from confessional.langgraph import confession_node
from confessional.testing import cheating_agent, example_tools

SURFACES = ("middleware", "node", "callback")


def run_surface(
    surface: str,
    mode: Mode,
    marker: str = "x",
    *,
    checkpointed: bool = False,
    **settings: Any,
) -> tuple[Any, list[Confession]]:
    """Run the cheating agent through ``surface``; return the result and its confessions."""
    model = cheating_agent()
    config: dict[str, Any] = dict(thread()) if checkpointed else {}
    saver = InMemorySaver() if checkpointed else None
    handler: ConfessionCallbackHandler | AsyncConfessionCallbackHandler | None = None
    if surface == "middleware":
        runnable = create_agent(
            model,
            example_tools(),
            middleware=[ConfessionMiddleware(**settings)],
            checkpointer=saver,
        )
    elif surface == "node":
        runnable = make_graph(model, checkpointer=saver, **settings)
    else:
        handler_class = (
            ConfessionCallbackHandler if mode == "sync" else AsyncConfessionCallbackHandler
        )
        handler = handler_class(model, **settings)
        runnable = create_agent(model, example_tools(), checkpointer=saver)
        config["callbacks"] = [handler]
    result = invoke(runnable, ask(marker), config or None, mode)
    confessions = handler.confessions if handler is not None else result.get("confessions", [])
    return result, list(confessions)


def confession_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("confession")]


def sees_timer_tampering(episode: Episode) -> Iterator[Finding]:
    """A user check: any write to a test file is suspicious in this codebase."""
    for call in episode.tool_calls:
        if call.name == "write_file" and "tests/" in str(call.args.get("path", "")):
            yield Finding(
                kind="test_file_written",
                severity="high",
                evidence=call.id,
                detail="a test file was rewritten",
                subject="tests/",
            )


def broken_check(episode: Episode) -> list[Finding]:
    raise RuntimeError("bug in a user check")


def telemetry(provider: TracerProvider) -> ConfessionTelemetry:
    return ConfessionTelemetry(tracer_provider=provider)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_a_user_check_reaches_the_confession_and_the_span(
    surface: str,
    mode: Mode,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    _, confessions = run_surface(
        surface,
        mode,
        auditor=Auditor(checks=[sees_timer_tampering]),
        telemetry=telemetry(tracer_provider),
    )
    [finding] = [f for f in confessions[-1].findings if f.kind == "test_file_written"]
    assert finding.subject == "tests/"
    [span] = confession_spans(span_exporter)
    assert "test_file_written" in (span.attributes or {})[sc.CONFESSION_FINDING_KINDS]


def test_user_checks_can_replace_the_defaults() -> None:
    only_mine = Auditor(checks=[sees_timer_tampering], include_defaults=False)
    assert only_mine.checks == (sees_timer_tampering,)
    assert len(Auditor(checks=[sees_timer_tampering]).checks) > 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_user_sink_receives_every_confession(surface: str, mode: Mode, kind: str) -> None:
    received: list[Confession] = []

    def sync_sink(confession: Confession) -> None:
        received.append(confession)

    async def async_sink(confession: Confession) -> None:
        received.append(confession)

    marker = f"{surface}-{mode}-{kind}"
    _, confessions = run_surface(
        surface, mode, marker, sinks=[sync_sink if kind == "sync" else async_sink]
    )
    assert [c.id for c in received] == [confessions[-1].id]
    assert received[0].verdict == "flag"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_sample_rate_on_each_surface(surface: str, mode: Mode) -> None:
    _, never = run_surface(surface, mode, sample_rate=0.0)
    assert never == []
    _, always = run_surface(surface, mode, options=ConfessionOptions(sample_rate=1.0))
    assert [c.status for c in always] == ["ok"]


def test_every_surface_accepts_every_setting_as_a_keyword() -> None:
    model = cheating_agent()
    assert ConfessionMiddleware(sample_rate=0.1).pipeline.options.sample_rate == 0.1
    assert ConfessionCallbackHandler(model, sample_rate=0.1).pipeline.options.sample_rate == 0.1
    confession_node(model, sample_rate=0.1)  # validated at construction
    with pytest.raises(ConfigurationError, match=r"unknown setting.*'sample_rat'.*sample_rate"):
        ConfessionMiddleware(sample_rat=0.1)


# The action each surface takes for each policy, as recorded on the confession and span.
ACTIONS_TAKEN = {
    ("middleware", "flag"): "proceed",
    ("middleware", "end"): "withhold",
    ("middleware", "interrupt"): "review",
    ("middleware", "error"): "raise",
    ("node", "flag"): "proceed",
    ("node", "end"): "withhold",
    ("node", "interrupt"): "review",
    ("node", "error"): "raise",
    ("callback", "flag"): "proceed",
    ("callback", "end"): "proceed",  # a callback cannot withhold: it warns at construction
    ("callback", "interrupt"): "proceed",
    ("callback", "error"): "raise",
}


@pytest.mark.filterwarnings(
    "ignore:.*(cannot (end|interrupt) a run|halts only async runs):UserWarning"
)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("surface", "on_violation"), sorted(ACTIONS_TAKEN))
def test_the_action_taken_is_recorded_on_the_span(
    surface: str,
    on_violation: Any,
    mode: Mode,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    expected = ACTIONS_TAKEN[(surface, on_violation)]
    settings: dict[str, Any] = {
        "policy": ConfessionPolicy(on_violation=on_violation),
        "telemetry": telemetry(tracer_provider),
    }
    if expected == "raise":
        with pytest.raises(ConfessionHalted) as halted:
            run_surface(surface, mode, **settings)
        assert halted.value.confession.action == "raise"
    else:
        result, confessions = run_surface(
            surface, mode, checkpointed=on_violation == "interrupt", **settings
        )
        if expected == "review":  # the node pauses before its update reaches state
            paused = Confession.model_validate(result["__interrupt__"][0].value["confession"])
            confessions = [*confessions, paused]
        assert confessions[-1].action == expected
        if expected == "withhold":
            assert result["messages"][-1].content != CHEAT_ANSWER
    [span] = confession_spans(span_exporter)
    assert (span.attributes or {})[sc.CONFESSION_ACTION] == expected
    assert (span.attributes or {})[sc.CONFESSION_VERDICT] == (
        "flag" if on_violation == "flag" else "halt"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_a_raising_check_and_a_raising_sink_leave_the_agent_unharmed(
    surface: str,
    mode: Mode,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_sink(confession: Confession) -> None:
        raise OSError("disk full")

    with caplog.at_level("WARNING", logger="confessional"):
        result, confessions = run_surface(
            surface,
            mode,
            auditor=Auditor(checks=[broken_check]),
            sinks=[broken_sink],
            telemetry=telemetry(tracer_provider),
        )
    assert result["messages"][-1].content == CHEAT_ANSWER
    confession = confessions[-1]
    assert confession.status == "ok"
    [failed] = [f for f in confession.findings if f.kind == "check_failed"]
    assert failed.subject == "broken_check"
    assert "check_failed" not in {d.kind for d in confession.discrepancies}
    counts = failure_counts()
    assert counts[("check", "RuntimeError")] == 1
    assert counts[("sink", "OSError")] == 1
    assert "check broken_check raised RuntimeError" in caplog.text
    assert "confession sink broken_sink raised OSError" in caplog.text
    [span] = confession_spans(span_exporter)
    [event] = [e for e in span.events if e.name == sc.EVENT_FAILURE]
    assert (event.attributes or {})[sc.FAILURE_STAGE] == "sink"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", ["middleware", "node"])
def test_interrupt_without_a_checkpointer_warns_at_the_first_run(surface: str, mode: Mode) -> None:
    policy = ConfessionPolicy(on_violation="interrupt")
    with pytest.warns(UserWarning, match="needs a checkpointer.*could never be resumed"):
        run_surface(surface, mode, policy=policy)
    # With a checkpointer nothing is said (warnings are errors in this suite).
    _, confessions = run_surface(surface, mode, checkpointed=True, policy=policy)
    assert [c.action for c in confessions] in ([], ["review"])
