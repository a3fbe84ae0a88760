"""A confessed run exported over OTLP/HTTP to a real MLflow tracking server, read back with
MLflow's client. MLflow needs the ``x-mlflow-experiment-id`` header on /v1/traces."""

from __future__ import annotations

import time
import uuid
import warnings
from typing import Any

import pytest
from confessed_run import AGENT_SPAN, CONFESSION_SPAN, HOOK_SPAN, ROOT_SPAN, export_confessed_run
from servers import Server

from confessional import semconv as sc
from confessional.annotations import mlflow_feedback

pytestmark = pytest.mark.integration

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", FutureWarning)
    from mlflow import MlflowClient


def fetch_trace(
    client: MlflowClient,
    experiment_id: str,
    trace_hex: str,
    timeout_s: float = 60.0,
    assessments: int = 0,
) -> Any:
    """Poll until the trace with our OTel trace id is stored with its confession span (and
    at least ``assessments`` assessments)."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traces = client.search_traces(experiment_ids=[experiment_id], max_results=50)
        seen = [t.info.trace_id for t in traces]
        for trace in traces:
            if (
                trace_hex in trace.info.trace_id
                and any(s.name == CONFESSION_SPAN for s in trace.data.spans)
                and len(trace.info.assessments) >= assessments
            ):
                return trace
        time.sleep(0.25)  # poll interval, bounded by the deadline
    raise AssertionError(f"trace {trace_hex} not found in MLflow; saw {seen}")


def test_confession_span_reaches_mlflow_with_its_parent_chain(mlflow_server: Server) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiment_id = client.create_experiment(f"confessional-it-{uuid.uuid4().hex[:8]}")
    feedback = mlflow_feedback(tracking_uri=mlflow_server.url, wait_s=60)
    run = export_confessed_run(
        f"{mlflow_server.url}/v1/traces",
        headers={"x-mlflow-experiment-id": experiment_id},
        sinks=[feedback],
    )
    assert run.confession.verdict == "flag"
    feedback.flush()
    assert (feedback.pending, feedback.delivered) == (0, 1)
    trace = fetch_trace(client, experiment_id, run.trace_id, assessments=1)
    spans = list(trace.data.spans)
    by_id = {s.span_id: s for s in spans}
    [confession] = [s for s in spans if s.name == CONFESSION_SPAN]
    chain = [confession]
    while chain[-1].parent_id:
        chain.append(by_id[chain[-1].parent_id])
    assert [s.name for s in chain] == [CONFESSION_SPAN, HOOK_SPAN, AGENT_SPAN, ROOT_SPAN]

    attributes = confession.attributes
    assert attributes[sc.CONFESSION_ID] == run.confession.id
    assert attributes[sc.CONFESSION_VERDICT] == "flag"
    assert attributes[sc.CONFESSION_GRADE] == 2
    assert attributes[sc.OPENINFERENCE_SPAN_KIND] == "EVALUATOR"

    # The evaluated operation is the agent span; the span-event copy is off by default
    # (MLflow's OTLP endpoint ingests traces, and the verdict arrives as feedback instead).
    [agent] = [s for s in spans if s.name == AGENT_SPAN]
    assert attributes[sc.CONFESSION_EVALUATED_SPAN_ID] == format(int(agent.span_id, 16), "016x")
    assert all(e.name != "gen_ai.evaluation.result" for s in spans for e in s.events)
    assert agent.attributes.get(sc.CONFESSION_FLAGGED) is True

    # The confession is MLflow feedback on the trace, as MLflow's own client reads it.
    [assessment] = [a for a in trace.info.assessments if a.name == "confession"]
    assert assessment.value == "flag"
    assert assessment.source.source_type == "LLM_JUDGE"
    assert assessment.source.source_id == run.confession.model_name
    assert not assessment.rationale  # no content capture
    assert assessment.metadata["confession_id"] == run.confession.id
    assert assessment.metadata["discrepancy_count"] == str(len(run.confession.discrepancies))
    assert assessment.metadata["grade"] == "2"

    # A repeat delivery of the same confession (a queue retry after a worker died between
    # the sink's write and its acknowledgement) finds its feedback and adds none.
    feedback(run.confession)
    feedback.flush()
    assert (feedback.pending, feedback.delivered) == (0, 2)
    trace = fetch_trace(client, experiment_id, run.trace_id, assessments=1)
    assert [a.metadata["confession_id"] for a in trace.info.assessments] == [run.confession.id]
