"""A reviewer's decision on the trace: a ``confession.review.decision`` span in the
confession's trace, a child of the confession span and linked to it, for approve, edit and
reject, sync and async, through ``create_agent`` and a ``StateGraph``, resumed in this
process or by ``confessional review`` in another one."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.pg.agents import marker_model, request
from tests.surfaces_fixtures import ask, make_agent, make_graph, thread

from confessional import ConfessionPolicy, ConfessionTelemetry, semconv
from confessional.langchain import ConfessionMiddleware
from confessional.langgraph import checkpoint_serde
from confessional.review import aresume, resume
from confessional.testing import cheating_agent, example_tools

REPO = Path(__file__).resolve().parents[1]
INTERRUPT = ConfessionPolicy(on_violation="interrupt")
KINDS = ("middleware", "node")
EDITED = "Tests still fail."
DECISIONS: dict[str, dict[str, Any]] = {
    "approve": {"type": "approve"},
    "edit": {
        "type": "edit",
        "edited_action": {"name": "deliver_answer", "args": {"answer": EDITED}},
    },
    "reject": {"type": "reject", "message": "rigged timer, secret ticket 42"},
}
FOLLOW_UP = {"approve": "proceed", "edit": "proceed", "reject": "withhold"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints.sqlite"


@pytest.fixture
def saver(db: Path) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(db, check_same_thread=False)
    yield SqliteSaver(conn, serde=checkpoint_serde())
    conn.close()


def _graph(kind: str, checkpointer: Any, telemetry: ConfessionTelemetry) -> Any:
    if kind == "node":
        return make_graph(
            cheating_agent(), policy=INTERRUPT, checkpointer=checkpointer, telemetry=telemetry
        )
    trigger = "tool_round" if kind == "tool_round" else "turn"
    return make_agent(
        cheating_agent(),
        policy=INTERRUPT,
        checkpointer=checkpointer,
        telemetry=telemetry,
        trigger=trigger,
    )


def _confession_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes is not None and semconv.CONFESSION_VERDICT in s.attributes
    ]
    return span


def _decision_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == semconv.REVIEW_DECISION_SPAN_NAME]


def _traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _assert_recorded(
    exporter: InMemorySpanExporter, decision: str, reviewer: str
) -> dict[str, Any]:
    """The one decision span is in the confession's trace, under it and linked to it."""
    confession = _confession_span(exporter)
    [span] = _decision_spans(exporter)
    assert confession.context is not None
    assert span.context is not None
    assert span.context.trace_id == confession.context.trace_id
    assert span.parent is not None
    assert span.parent.span_id == confession.context.span_id
    assert [link.context.span_id for link in span.links] == [confession.context.span_id]
    attributes = dict(span.attributes or {})
    assert attributes[semconv.CONFESSION_REVIEW_DECISION] == decision
    assert attributes[semconv.CONFESSION_REVIEW_REVIEWER] == reviewer
    assert attributes[semconv.CONFESSION_ACTION] == FOLLOW_UP[decision]
    assert attributes[semconv.CONFESSION_ID] == (confession.attributes or {})[semconv.CONFESSION_ID]
    assert datetime.fromisoformat(str(attributes[semconv.CONFESSION_REVIEW_DECIDED_AT])).tzinfo
    return attributes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("decision", list(DECISIONS))
def test_each_decision_is_a_span_linked_to_the_confession(
    kind: str,
    decision: str,
    saver: SqliteSaver,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider, capture_content=False)
    graph = _graph(kind, saver, telemetry)
    config = thread()
    [paused] = graph.invoke(ask(f"trace-{kind}-{decision}"), config)["__interrupt__"]
    assert paused.value["traceparent"] == _traceparent(_confession_span(span_exporter))
    assert _decision_spans(span_exporter) == []  # nothing decided yet

    done = resume(
        graph,
        config["configurable"]["thread_id"],
        DECISIONS[decision],
        interrupt_id=paused.id,
        reviewer="alice",
    )

    assert done.decision.reviewer == "alice"
    attributes = _assert_recorded(span_exporter, decision, "alice")
    # Reviewer-written text is content: off by default.
    assert semconv.CONFESSION_REVIEW_MESSAGE not in attributes
    assert semconv.CONFESSION_REVIEW_EDITED_ANSWER not in attributes


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("decision", list(DECISIONS))
async def test_each_decision_is_recorded_on_the_async_path(
    kind: str,
    decision: str,
    db: Path,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider, capture_content=False)
    async with AsyncSqliteSaver.from_conn_string(str(db)) as checkpointer:
        checkpointer.serde = checkpoint_serde()
        graph = _graph(kind, checkpointer, telemetry)
        config = thread()
        [paused] = (await graph.ainvoke(ask(f"async-{kind}"), config))["__interrupt__"]
        await aresume(
            graph,
            config["configurable"]["thread_id"],
            {"decisions": [DECISIONS[decision]]},
            interrupt_id=paused.id,
            reviewer="bob",
        )
    _assert_recorded(span_exporter, decision, "bob")


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_tool_round_pause_records_its_decision(
    decision: str,
    saver: SqliteSaver,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider, capture_content=False)
    graph = _graph("tool_round", saver, telemetry)
    config = thread()
    graph.invoke(ask("tool-round"), config)
    resume(graph, config["configurable"]["thread_id"], decision, reviewer="carol")
    # Approving confesses the next round too (a second confession span): take the first.
    first_confession = min(
        (
            s
            for s in span_exporter.get_finished_spans()
            if semconv.CONFESSION_VERDICT in (s.attributes or {})
        ),
        key=lambda s: s.start_time or 0,
    )
    [span] = _decision_spans(span_exporter)
    assert first_confession.context is not None
    assert span.parent is not None
    assert span.parent.span_id == first_confession.context.span_id
    assert [link.context.span_id for link in span.links] == [first_confession.context.span_id]
    assert (span.attributes or {})[semconv.CONFESSION_REVIEW_REVIEWER] == "carol"


@pytest.mark.parametrize("kind", KINDS)
def test_a_bare_command_resume_names_no_reviewer_and_content_is_redacted(
    kind: str,
    saver: SqliteSaver,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    telemetry = ConfessionTelemetry(
        tracer_provider=tracer_provider,
        capture_content="SPAN_ONLY",
        redact=lambda text: text.replace("secret ticket 42", "[redacted]"),
    )
    graph = _graph(kind, saver, telemetry)
    config = thread()
    graph.invoke(ask(f"bare-{kind}"), config)
    graph.invoke(Command(resume=DECISIONS["reject"]), config)
    attributes = _assert_recorded(span_exporter, "reject", semconv.REVIEWER_UNKNOWN)
    assert attributes[semconv.CONFESSION_REVIEW_MESSAGE] == "rigged timer, [redacted]"


def test_a_decision_can_name_its_reviewer_and_an_edit_records_the_answer(
    saver: SqliteSaver, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider, capture_content=True)
    graph = _graph("middleware", saver, telemetry)
    config = thread()
    graph.invoke(ask("named"), config)
    graph.invoke(Command(resume={"decisions": [{**DECISIONS["edit"], "reviewer": "erin"}]}), config)
    attributes = _assert_recorded(span_exporter, "edit", "erin")
    assert attributes[semconv.CONFESSION_REVIEW_EDITED_ANSWER] == EDITED


# -- resumed by the CLI, in a process of its own ----------------------------------------

# The reviewed application's graph module: the application, not the library, configures the
# OTel SDK, here to an OTLP JSON file the test reads back.
APP_MODULE = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from confessional.demo import OTLPJsonFileExporter
    from tests.pg.agents import build

    provider = TracerProvider()
    exporter = OTLPJsonFileExporter(Path(os.environ["REVIEW_TRACE_FILE"]))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    graph = build()
    """
)

CLI_ARGS = {
    "approve": ["approve"],
    "edit": ["approve", "--answer", EDITED],
    "reject": ["reject", "--message", "rigged timer"],
}


def _otlp_spans(path: Path) -> list[dict[str, Any]]:
    return [
        span
        for line in path.read_text(encoding="utf-8").splitlines()
        for resource in json.loads(line)["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]


def _otlp_attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


@pytest.mark.parametrize("decision", list(DECISIONS))
def test_a_decision_applied_by_the_cli_in_another_process_joins_the_trace(
    decision: str,
    db: Path,
    saver: SqliteSaver,
    tmp_path: Path,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    # Paused here: the same agent as tests.pg.agents.build, recording to this test's SDK.
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider)
    agent: Any = create_agent(
        marker_model(),
        example_tools(),
        middleware=[ConfessionMiddleware(policy=INTERRUPT, telemetry=telemetry)],
        checkpointer=saver,
    )
    config = thread()
    assert "__interrupt__" in agent.invoke(request(0), config)
    confession = _confession_span(span_exporter)
    assert confession.context is not None

    app = tmp_path / "reviewed_app.py"
    app.write_text(APP_MODULE, encoding="utf-8")
    trace_file = tmp_path / "review.otlp.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]),
        "REVIEW_TRACE_FILE": str(trace_file),
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "confessional", "review", *CLI_ARGS[decision],
            config["configurable"]["thread_id"], "--checkpointer", f"sqlite:///{db}",
            "--graph", f"{app}:graph", "--reviewer", "dana", "--json",
        ],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["decision"] == decision

    [span] = [s for s in _otlp_spans(trace_file) if s["name"] == semconv.REVIEW_DECISION_SPAN_NAME]
    confession_trace = f"{confession.context.trace_id:032x}"
    confession_span = f"{confession.context.span_id:016x}"
    assert span["traceId"] == confession_trace
    assert span["parentSpanId"] == confession_span
    assert [(link["traceId"], link["spanId"]) for link in span["links"]] == [
        (confession_trace, confession_span)
    ]
    attributes = _otlp_attributes(span)
    assert attributes[semconv.CONFESSION_REVIEW_DECISION] == decision
    assert attributes[semconv.CONFESSION_REVIEW_REVIEWER] == "dana"
    assert attributes[semconv.CONFESSION_ACTION] == FOLLOW_UP[decision]
    assert attributes[semconv.CONFESSION_ID] == (confession.attributes or {})[semconv.CONFESSION_ID]
