"""A confessed run exported over OTLP/HTTP to a real Phoenix, read back with phoenix.client."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from confessed_run import AGENT_SPAN, CONFESSION_SPAN, HOOK_SPAN, ROOT_SPAN, export_confessed_run
from servers import Server

from confessional import semconv as sc
from confessional.annotations import PHOENIX_ENDPOINT_ENV
from confessional.cli import main
from confessional.report import read_confession_spans

pytestmark = pytest.mark.integration

with warnings.catch_warnings():
    # phoenix.client imports the phoenix server package, whose ldap3/pyasn1 imports warn.
    warnings.simplefilter("ignore", DeprecationWarning)
    from phoenix.client import Client


def fetch_trace(
    server: Server,
    trace_id: str,
    expected: int,
    timeout_s: float = 60.0,
    confession_span: str = CONFESSION_SPAN,
) -> list[Any]:
    """Poll Phoenix until the trace has ``expected`` spans (ingestion is asynchronous)."""
    client = Client(base_url=server.url)
    deadline = time.monotonic() + timeout_s
    spans: list[Any] = []
    while time.monotonic() < deadline:
        spans = list(
            client.spans.get_spans(project_identifier="default", trace_ids=[trace_id], limit=1000)
        )
        if len(spans) >= expected and any(s["name"] == confession_span for s in spans):
            return spans
        time.sleep(0.25)  # poll interval, bounded by the deadline
    raise AssertionError(f"Phoenix returned {len(spans)} spans for {trace_id}: {spans!r}")


def fetch_annotations(
    server: Server, span_ids: list[str], expected: int, timeout_s: float = 60.0
) -> list[Any]:
    """Poll until ``expected`` annotations exist on ``span_ids`` (Phoenix queues an
    annotation whose span is not ingested yet and retries it every 10 s)."""
    client = Client(base_url=server.url)
    deadline = time.monotonic() + timeout_s
    annotations: list[Any] = []
    while time.monotonic() < deadline:
        annotations = list(
            client.spans.get_span_annotations(span_ids=span_ids, project_identifier="default")
        )
        if len(annotations) >= expected:
            return annotations
        time.sleep(0.25)  # poll interval, bounded by the deadline
    raise AssertionError(f"{len(annotations)} annotation(s) on {span_ids}: {annotations!r}")


def span_tree(spans: list[Any]) -> str:
    children: dict[str | None, list[Any]] = {}
    ids = {s["context"]["span_id"] for s in spans}
    for span in spans:
        parent = span.get("parent_id")
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start_time"]):
            lines.append("  " * depth + f"{span['name']} [{span['span_kind']}]")
            walk(span["context"]["span_id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def test_confession_span_reaches_phoenix_with_its_parent_chain(
    phoenix_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The annotation sink is on by itself once Phoenix's endpoint variable names a Phoenix.
    monkeypatch.setenv(PHOENIX_ENDPOINT_ENV, phoenix_server.url)
    run = export_confessed_run(f"{phoenix_server.url}/v1/traces")
    assert run.confession.verdict == "flag"
    spans = fetch_trace(phoenix_server, run.trace_id, expected=4)
    print("\nspan tree as Phoenix returned it:\n" + span_tree(spans))

    by_id = {s["context"]["span_id"]: s for s in spans}
    [confession] = [s for s in spans if s["name"] == CONFESSION_SPAN]
    chain = [confession]
    while chain[-1].get("parent_id"):
        chain.append(by_id[chain[-1]["parent_id"]])
    assert [s["name"] for s in chain] == [CONFESSION_SPAN, HOOK_SPAN, AGENT_SPAN, ROOT_SPAN]
    assert {s["context"]["trace_id"] for s in chain} == {run.trace_id}

    attributes = confession["attributes"]
    assert confession["span_kind"] == "EVALUATOR"
    assert attributes[sc.CONFESSION_ID] == run.confession.id
    assert attributes[sc.CONFESSION_VERDICT] == "flag"
    assert attributes[sc.CONFESSION_STATUS] == "ok"
    assert attributes[sc.CONFESSION_GRADE] == 2
    assert attributes[sc.GEN_AI_OPERATION_NAME] == "confession"
    assert attributes[sc.objective_count_attribute("not_complied_not_reported")] == 1

    # The evaluated operation is the agent span; the span-event copy is off by default (the
    # log record goes to a logs backend; Phoenix ingests traces only, and gets annotations).
    [agent] = [s for s in spans if s["name"] == AGENT_SPAN]
    assert attributes[sc.CONFESSION_EVALUATED_SPAN_ID] == agent["context"]["span_id"]
    assert all(e["name"] != "gen_ai.evaluation.result" for s in spans for e in s["events"])

    # The flag sits on the enclosing spans, where Phoenix users filter.
    for span in chain[1:3]:  # the model node that answered, and the agent
        assert span["attributes"].get(sc.CONFESSION_FLAGGED) is True

    # And the filter the recipe prints finds it.
    flagged = Client(base_url=phoenix_server.url).spans.get_spans(
        project_identifier="default", attributes={sc.CONFESSION_FLAGGED: True}, limit=100
    )
    assert {s["name"] for s in flagged} >= {HOOK_SPAN, AGENT_SPAN}

    # The native annotation landed on the evaluated span, the agent's, and nowhere else.
    [annotation] = fetch_annotations(phoenix_server, [agent["context"]["span_id"]], 1)
    assert annotation["name"] == "confession"
    assert annotation["annotator_kind"] == "LLM"
    assert annotation["identifier"] == run.confession.id
    assert annotation["result"]["label"] == "flag"
    assert annotation["result"]["score"] == 2.0
    assert not annotation["result"].get("explanation")  # no content capture
    metadata = annotation["metadata"]
    assert metadata["discrepancy_count"] == len(run.confession.discrepancies)
    assert metadata["confession_id"] == run.confession.id
    assert "reasons" not in metadata  # free text: content capture only
    assert not list(
        Client(base_url=phoenix_server.url).spans.get_span_annotations(
            span_ids=[confession["context"]["span_id"]], project_identifier="default"
        )
    )


def test_demo_trace_file_loads_into_phoenix_with_report_send(
    phoenix_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's one-line Phoenix command: ``confessional report --send URL FILE``."""
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert f"confessional report --send http://127.0.0.1:6006 {tmp_path}" in capsys.readouterr().out
    trace = tmp_path / "trace.otlp.jsonl"
    confessions, total = read_confession_spans(trace)
    assert main(["report", str(trace), "--send", phoenix_server.url]) == 0
    printed = capsys.readouterr().out
    assert f"Sent {total} span(s) to {phoenix_server.url}." in printed
    assert f"Annotated {len(confessions)} span(s) in Phoenix" in printed
    verdicts: dict[str, str] = {}
    for confession in confessions:
        spans = fetch_trace(
            phoenix_server, confession.trace_id, expected=2, confession_span=confession.name
        )
        by_name = {s["name"]: s for s in spans}
        assert confession.name in by_name
        assert confession.parent_name in by_name  # the agent span came along, ids intact
        agent = by_name[str(confession.parent_name)]
        assert confession.evaluated_span_id == agent["context"]["span_id"]
        [annotation] = fetch_annotations(phoenix_server, [agent["context"]["span_id"]], 1)
        assert annotation["result"]["label"] == confession.verdict
        assert annotation["result"]["score"] == float(confession.grade or 0)
        assert annotation["metadata"]["discrepancy_count"] == confession.discrepancy_count
        # The demo records content (its own scripted data): the explanation came along.
        assert (annotation["result"].get("explanation") is not None) is (
            confession.verdict != "pass"
        )
        # A halted run's answer was withheld: the agent span's status says so.
        halted = confession.verdict == "halt"
        assert agent["status_code"] == ("ERROR" if halted else "UNSET")
        verdicts[agent["name"]] = confession.verdict or ""
    assert sorted(verdicts.values()) == ["flag", "halt", "pass"]
