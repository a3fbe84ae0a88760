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

pytestmark = pytest.mark.integration

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", FutureWarning)
    from mlflow import MlflowClient


def fetch_trace(
    client: MlflowClient, experiment_id: str, trace_hex: str, timeout_s: float = 60.0
) -> Any:
    """Poll until the trace with our OTel trace id is stored with its confession span."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traces = client.search_traces(experiment_ids=[experiment_id], max_results=50)
        seen = [t.info.trace_id for t in traces]
        for trace in traces:
            if trace_hex in trace.info.trace_id and any(
                s.name == CONFESSION_SPAN for s in trace.data.spans
            ):
                return trace
        time.sleep(0.25)  # poll interval, bounded by the deadline
    raise AssertionError(f"trace {trace_hex} not found in MLflow; saw {seen}")


def test_confession_span_reaches_mlflow_with_its_parent_chain(mlflow_server: Server) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiment_id = client.create_experiment(f"confessional-it-{uuid.uuid4().hex[:8]}")
    run = export_confessed_run(
        f"{mlflow_server.url}/v1/traces", headers={"x-mlflow-experiment-id": experiment_id}
    )
    assert run.confession.verdict == "flag"
    trace = fetch_trace(client, experiment_id, run.trace_id)
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

    # MLflow shows the evaluation result as a span event of the evaluated operation, the
    # agent span (MLflow's OTLP endpoint ingests traces; the log record needs a logs backend).
    [agent] = [s for s in spans if s.name == AGENT_SPAN]
    assert [e.name for e in confession.events] == []
    [event] = [e for e in agent.events if e.name == "gen_ai.evaluation.result"]
    assert event.attributes[sc.GEN_AI_EVALUATION_NAME] == "confession"
    assert event.attributes[sc.GEN_AI_EVALUATION_SCORE_VALUE] == 2.0
    assert event.attributes[sc.GEN_AI_EVALUATION_SCORE_LABEL] == "fail"
    assert event.attributes[sc.CONFESSION_VERDICT] == "flag"

    assert agent.attributes.get(sc.CONFESSION_FLAGGED) is True
