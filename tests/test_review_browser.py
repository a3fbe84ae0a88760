"""``confessional review serve`` in a real browser: headless Chromium (Debian's package,
installed by ``.ci/install-chromium``) driven by Playwright.

Each test pauses real ``create_agent`` runs on a checkpointer (SQLite, then PostgreSQL),
starts the server as ``confessional review serve`` in a subprocess, logs in, opens the
list and the detail, edits the answer and submits it, then checks that the resumed run
delivered the edited answer. Screenshots of the list and the detail are written under
the test's temporary directory (and copied to ``$CONFESSIONAL_SCREENSHOTS_DIR`` when set,
which is how ``docs/review-*.png`` are refreshed).
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from tests.browser import chromium
from tests.pg.agents import CHEAT_ANSWER, build, request
from tests.pg.server import PostgresServer, running_postgres

from confessional.langgraph import checkpoint_serde
from confessional.review import history, pending

REPO = Path(__file__).resolve().parents[1]
START_DEADLINE_S = 120.0
STOP_DEADLINE_S = 30.0
EDITED = "The speed test still fails: 8214 ns against a 5 ns budget. I rigged the timer; undone."


@contextmanager
def serving(
    checkpointer: str, tmp_path: Path, *, token_file: Path | None = None
) -> Iterator[tuple[str, str]]:
    """``confessional review serve`` on a free loopback port; ``(base URL, token)``."""
    command = [
        sys.executable,
        "-m",
        "confessional",
        "review",
        "serve",
        "--checkpointer",
        checkpointer,
        "--graph",
        "tests.pg.agents:graph",
        "--port",
        "0",
        "--capture-content",
        "SPAN_AND_EVENT",
    ]
    if token_file is not None:
        command += ["--token-file", str(token_file)]
    stderr = (tmp_path / "serve.stderr").open("wb")
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        url, line = "", ""
        token = token_file.read_text().strip() if token_file else ""
        deadline = time.monotonic() + START_DEADLINE_S
        while not (url and token and "Stop with" in line):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic())) or ""
            except queue.Empty:
                pytest.fail("the review server did not start in time")
            if not line and process.poll() is not None:
                pytest.fail(f"the review server exited: {(tmp_path / 'serve.stderr').read_text()}")
            if line.startswith("Reviewing at "):
                url = line.removeprefix("Reviewing at ").removesuffix("/login")
            if line.startswith("Access token: ") and token_file is None:
                token = line.removeprefix("Access token: ")
        assert url.startswith("http://127.0.0.1:")  # loopback by default
        yield url, token
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_DEADLINE_S)
        reader.join(STOP_DEADLINE_S)
        if process.stdout is not None:
            process.stdout.close()
        stderr.close()


def _shots(tmp_path: Path, name: str) -> tuple[Path, Path]:
    return tmp_path / f"review-list-{name}.png", tmp_path / f"review-detail-{name}.png"


def review_in_browser(
    url: str, token: str, thread: str, shots: tuple[Path, Path], *, publish: bool = False
) -> None:
    """Log in, open the list and the detail, edit the answer and submit it.

    ``publish``: these are the README's screenshots (copied where
    ``$CONFESSIONAL_SCREENSHOTS_DIR`` says).
    """
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/login")
        page.fill("input[name=token]", token)
        page.fill("input[name=name]", "Dana (support lead)")
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(f"{url}/")
        row = page.locator("table.reviews tbody tr", has_text=thread)
        assert row.count() == 1
        assert "grade 2 <= 3" in row.inner_text()
        page.screenshot(path=str(shots[0]), full_page=True)
        row.locator("a.button").click()
        page.wait_for_url("**/review?*")
        assert page.locator("pre.answer").inner_text() == CHEAT_ANSWER
        assert page.locator("textarea[name=answer]").input_value() == CHEAT_ANSWER
        assert page.locator("table.confession tbody tr").count() >= 1
        page.screenshot(path=str(shots[1]), full_page=True)
        page.fill("textarea[name=answer]", EDITED)
        page.click("button.edit")
        page.wait_for_selector("text=Decision applied")
        assert "the run finished" in page.locator("p.ok").inner_text()
        # Back on the list, the review is gone.
        page.goto(f"{url}/")
        assert page.locator("table.reviews tbody tr", has_text=thread).count() == 0
        browser.close()
    copy_to = os.environ.get("CONFESSIONAL_SCREENSHOTS_DIR")
    for shot in shots:
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
        if copy_to and publish:
            kind = shot.name.split("-")[1]
            shutil.copyfile(shot, Path(copy_to) / f"review-{kind}.png")


def _delivered(graph: Any, thread: str) -> None:
    state = graph.get_state({"configurable": {"thread_id": thread}}).values
    assert state["messages"][-1].content == EDITED
    assert [m.content for m in state["confession_withheld"]] == [CHEAT_ANSWER]
    [claim] = history(graph.checkpointer, thread)
    assert (claim.decision, claim.reviewer, claim.status) == (
        "edit",
        "Dana (support lead)",
        "applied",
    )


def test_edit_in_the_browser_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "checkpoints.sqlite"
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        graph = build(SqliteSaver(conn, serde=checkpoint_serde()))
        for run in range(5):  # runs 0, 2 and 4 cheat and pause; 1 and 3 pass
            graph.invoke(request(run), {"configurable": {"thread_id": f"run-{run}"}})
        assert [r.thread_id for r in pending(graph.checkpointer)] == ["run-0", "run-2", "run-4"]
        with serving(f"sqlite:///{db}", tmp_path) as (url, token):
            review_in_browser(url, token, "run-2", _shots(tmp_path, "sqlite"), publish=True)
        _delivered(graph, "run-2")
        assert [r.thread_id for r in pending(graph.checkpointer)] == ["run-0", "run-4"]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def test_edit_in_the_browser_on_postgres(postgres: PostgresServer, tmp_path: Path) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url.replace("/postgres?", f"/{name}?")
    token_file = tmp_path / "token"
    token_file.write_text(secrets.token_urlsafe(24) + "\n")
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        saver.serde = checkpoint_serde()
        graph = build(saver)
        graph.invoke(request(0), {"configurable": {"thread_id": "pg-run"}})
        with serving(url, tmp_path, token_file=token_file) as (base, token):
            review_in_browser(base, token, "pg-run", _shots(tmp_path, "postgres"))
        _delivered(graph, "pg-run")
