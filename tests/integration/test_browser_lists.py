"""The demo's runs as a user sees them: Phoenix's and MLflow's list views in headless Chromium.

Real servers (the module fixtures), the demo's three scenarios (honest, halted, flagged), then
the page each backend opens on. Asserted from the list view alone: the halted run by its
status, the flagged one by its confession annotation or assessment. Screenshots go to the
test's temporary directory; with ``CONFESSIONAL_SCREENSHOTS=DIR`` they are also written to
DIR (``CONFESSIONAL_SCREENSHOTS=docs`` refreshes the README's images).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from servers import Server
from test_phoenix import fetch_annotations

from browser import chromium
from confessional import ConfessionPolicy, ConfessionTelemetry
from confessional.annotations import mlflow_feedback
from confessional.cli import main
from confessional.demo import DEMO_RUNS
from confessional.evaluation import run_scenario
from confessional.report import read_confession_spans
from confessional.scenarios import get_scenario

pytestmark = pytest.mark.integration

UI_TIMEOUT_MS = 120_000
"""Generous: both UIs are large JavaScript bundles on a loaded 2-core machine."""

HALTED = "demo-impossible_timing"
FLAGGED = "demo-sandbagging"
HONEST = "demo-instruction_following"


def keep_screenshot(path: Path) -> None:
    target = os.environ.get("CONFESSIONAL_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / path.name)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A page; what it showed last is kept as ``last-page.png`` (for failures)."""
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1500, "height": 560})
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = context.new_page()
        try:
            yield page
        finally:
            page.screenshot(path=tmp_path / "last-page.png", full_page=True)
            print(f"\nlast page: {tmp_path / 'last-page.png'}")
            context.close()


def test_phoenix_list_shows_the_halted_and_the_flagged_run(
    phoenix_server: Server, page: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The README's commands: the demo, then `confessional report --send URL FILE`.
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    trace = tmp_path / "demo" / "trace.otlp.jsonl"
    assert main(["report", str(trace), "--send", phoenix_server.url]) == 0
    assert "Annotated 3 span(s) in Phoenix" in capsys.readouterr().out
    confessions, _total = read_confession_spans(trace)
    agent_ids = [str(c.evaluated_span_id) for c in confessions]
    fetch_annotations(phoenix_server, agent_ids, expected=3)  # the UI will have them too

    page.goto(f"{phoenix_server.url}/projects", wait_until="domcontentloaded")
    page.get_by_role("link", name="default").first.click()
    rows = {name: page.get_by_role("row").filter(has_text=name) for name in (HALTED, FLAGGED)}
    rows[HONEST] = page.get_by_role("row").filter(has_text=HONEST)
    for row in rows.values():
        row.get_by_text("confession", exact=True).wait_for()  # the annotation, on every run
    # Room for the columns that matter: no aside panel, no side navigation, no input,
    # output or user columns (empty here), and a name column wide enough for the names.
    page.get_by_role("button", name="Hide aside panel").click()
    page.get_by_role("button", name="Collapse side navigation").click()
    page.get_by_role("button", name="Columns").click()
    for column in ("input", "output", "user"):
        page.locator("li").filter(
            has=page.get_by_role("checkbox", name=column, exact=True)
        ).first.click()
    page.keyboard.press("Escape")
    header = page.get_by_role("columnheader", name="name").bounding_box()
    assert header is not None
    middle = header["y"] + header["height"] / 2
    page.mouse.move(header["x"] + header["width"] - 2, middle)
    page.mouse.down()
    page.mouse.move(header["x"] + header["width"] + 150, middle, steps=5)
    page.mouse.up()

    # The halted run's status is an error, with its description; the others have none.
    assert rows[HALTED].get_by_text("confession halted the run").count() == 1
    for name in (FLAGGED, HONEST):
        assert rows[name].get_by_text("confession halted the run").count() == 0
    screenshot = tmp_path / "phoenix-traces.png"
    page.screenshot(path=screenshot)
    keep_screenshot(screenshot)
    # The flagged run's annotation reads "flag" (label = verdict, score = grade).
    page.set_viewport_size({"width": 1500, "height": 760})  # room for its details
    rows[FLAGGED].get_by_role("button", name="View annotation details").click()
    details = page.get_by_role("dialog").filter(has_text="confession")
    details.get_by_text("flag", exact=True).wait_for()
    page.screenshot(path=tmp_path / "phoenix-flagged-details.png", animations="disabled")
    page.keyboard.press("Escape")

    # Filtering on the annotation finds exactly the flagged run, then the halted one.
    editor = page.locator(".cm-content").first
    for label, expected in (("flag", FLAGGED), ("halt", HALTED)):
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(f"annotations['confession'].label == '{label}'")
        page.keyboard.press("Enter")
        body = page.get_by_role("row").filter(has_text="invoke_agent")
        body.filter(has_text=expected).wait_for()
        others = {HALTED, FLAGGED, HONEST} - {expected}
        page.wait_for_function(
            "([names]) => !names.some(n => document.querySelector('tbody')?.innerText.includes(n))",
            arg=[sorted(others)],
        )
        assert body.count() == 1
    page.screenshot(path=tmp_path / "phoenix-filtered-halt.png")


def test_mlflow_list_shows_the_halted_and_the_flagged_run(
    mlflow_server: Server, page: Any, tmp_path: Path
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_server.url)
        experiment_id = client.create_experiment(f"confessional-demo-{uuid.uuid4().hex[:6]}")
    provider = TracerProvider(resource=Resource.create({"service.name": "confessional-demo"}))
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(
                f"{mlflow_server.url}/v1/traces",
                headers={"x-mlflow-experiment-id": experiment_id},
                timeout=10,
            )
        )
    )
    # The demo's scenarios, with the MLflow recipe's feedback sink, each in an agent span.
    telemetry = ConfessionTelemetry(tracer_provider=provider, capture_content=True)
    feedback = mlflow_feedback(tracking_uri=mlflow_server.url, include_explanation=True)
    tracer = provider.get_tracer("confessional.demo")
    trace_ids: dict[str, str] = {}
    try:
        for run in DEMO_RUNS:
            scenario = get_scenario(run.scenario)
            name = f"demo-{scenario.name}"
            with tracer.start_as_current_span(
                f"invoke_agent {name}",
                attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name},
            ) as agent:
                outcome = run_scenario(
                    scenario,
                    scenario.scripted_agent(run.behaviour),
                    policy=ConfessionPolicy(on_violation=run.on_violation),
                    telemetry=telemetry,
                    agent_name=name,
                    sinks=[feedback],
                )
            assert outcome.confession is not None
            assert outcome.confession.verdict == run.expected
            trace_ids[name] = f"tr-{agent.get_span_context().trace_id:032x}"
    finally:
        provider.force_flush()
        provider.shutdown()
    feedback.flush()
    assert (feedback.pending, feedback.delivered) == (0, 3)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traces = client.search_traces(experiment_ids=[experiment_id])
        if len(traces) == 3 and all(t.info.assessments for t in traces):
            break
        time.sleep(0.25)  # poll interval, bounded by the deadline
    verdicts = {t.info.trace_id: t.info.assessments[0].value for t in traces}
    assert verdicts == {
        trace_ids[HONEST]: "pass",
        trace_ids[HALTED]: "halt",
        trace_ids[FLAGGED]: "flag",
    }

    page.goto(
        f"{mlflow_server.url}/#/experiments/{experiment_id}/traces", wait_until="domcontentloaded"
    )
    page.get_by_text("3 of 3", exact=True).wait_for()  # the table's footer: three traces
    # A first-visit tip covers the toolbar; the assistant panel takes a third of the width.
    with contextlib.suppress(PlaywrightTimeout):  # no tip this time
        page.get_by_role("button", name="Got it").click(timeout=15_000)
    assistant = page.get_by_role("button", name="Close")
    if assistant.count() == 1:
        assistant.click()
    page.get_by_role("button", name="Display").click()
    page.get_by_text("Columns", exact=True).hover()
    for column, shown in (
        ("Trace ID", True),
        ("Input", False),
        ("Output", False),
        ("Tokens", False),
        ("Tags", False),
    ):
        item = page.get_by_role("menuitemcheckbox", name=column, exact=True).first
        if (item.get_attribute("aria-checked") == "true") != shown:
            item.click()
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")

    # Each run's row: its state, and the 'confession' assessment column with the verdict.
    def row(name: str) -> Any:
        # The Trace ID cell shows a prefix of the id.
        return page.get_by_role("row").filter(has_text=trace_ids[name][:10])

    for name, state, verdict in (
        (HALTED, "Error", "halt"),
        (FLAGGED, "OK", "flag"),
        (HONEST, "OK", "pass"),
    ):
        cells = row(name).get_by_role("cell")
        cells.filter(has_text=state).first.wait_for()
        cells.get_by_text(verdict, exact=False).first.wait_for()
    assert page.get_by_role("columnheader", name="confession").count() == 1
    table = page.get_by_role("table").first.bounding_box()
    toolbar = page.get_by_role("button", name="Display").bounding_box()
    assert table is not None
    assert toolbar is not None
    screenshot = tmp_path / "mlflow-traces.png"
    top = toolbar["y"] - 12
    page.screenshot(
        path=screenshot,
        clip={"x": 0, "y": top, "width": 1500, "height": table["y"] + table["height"] + 24 - top},
    )
    keep_screenshot(screenshot)
