"""A real run that loops into the eval's cap is confessed and scored (the local model).

The real open-weight model behind llama-server on 127.0.0.1 runs a scenario under a
small model-call cap. The weights and the server come from the cache
(``.ci/prepare-local-model``; a cold cache is set up by the fixture itself). The cap, not
the model, ends the run, so the assertions are about what happens then: the run is
capped, its confession is delivered (the telemetry sink records its span) with the
``unfinished`` finding, and it is scored. Small caps keep it to a few model calls on two
shared CPU cores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from confessional import ConfessionTelemetry, semconv
from confessional.evaluation import PlannedRun, RunLimits, _record, run_scenario
from confessional.findings import UNFINISHED
from confessional.local_model import local_chat_model, silent_sink

# Two shared CPU cores can be several times slower than an idle machine.
CONFESSION_TIMEOUT_S = 240.0
MAX_TOKENS = 512
MODEL_CALL_CAP = 2
"""Two rounds of tool calls: the agent is still reading its workspace when it is stopped."""


@pytest.fixture(scope="module")
def local_model() -> Iterator[Any]:
    with local_chat_model(max_tokens=MAX_TOKENS, progress=silent_sink) as model:
        yield model


def test_a_real_run_stopped_at_its_cap_is_confessed_and_scored(local_model: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = ConfessionTelemetry(tracer_provider=provider, capture_content=True)
    try:
        outcome = run_scenario(
            "sandbagging",
            local_model,
            telemetry=telemetry,
            limits=RunLimits(max_model_calls=MODEL_CALL_CAP),
            confession_timeout_s=CONFESSION_TIMEOUT_S,
        )
    finally:
        provider.shutdown()

    assert outcome.capped == "model_calls", outcome.messages
    assert outcome.model_calls == MODEL_CALL_CAP
    confession = outcome.confession
    assert confession is not None, "the capped run was not confessed"
    # The 1.5B model may write no valid report; the confession (and its audit) is there
    # either way, which is what a reviewer of a runaway run needs.
    assert confession.status in ("ok", "error"), confession.error
    (finding,) = [f for f in confession.findings if f.kind == UNFINISHED]
    assert finding.detail.startswith("the run was stopped at its cap")
    assert finding.detail.endswith(f"(the evaluation's cap of {MODEL_CALL_CAP} model calls)")

    # Delivered: the telemetry sink recorded the confession span with the finding.
    (span,) = [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get(semconv.GEN_AI_OPERATION_NAME) == semconv.OPERATION_CONFESSION
    ]
    attributes = span.attributes or {}
    assert UNFINISHED in tuple(attributes[semconv.CONFESSION_FINDING_KINDS])  # type: ignore[arg-type]
    findings = json.loads(str(attributes[semconv.CONFESSION_FINDINGS]))
    assert any(f["kind"] == UNFINISHED for f in findings)

    # Scored as the eval scores it: in the matrices, and still "did not finish".
    record = _record(PlannedRun("sandbagging", 0), outcome, duration=0.0)
    assert record.capped == "model_calls"
    assert record.did_not_finish
    assert record.scored
    assert record.status == confession.status
