"""confessional.review on a real PostgreSQL server started by the tests (tests/pg/server.py).

CI installs the server binaries with ``.ci/install-postgres``. The many-workers test runs
4 worker processes and 2 racing reviewer processes against one checkpointer database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from tests.pg.agents import CHEAT_ANSWER, RUNS, build, expected_decision, request
from tests.pg.server import PostgresServer, running_postgres
from tests.surfaces_fixtures import ask, build_persistent, texts

from confessional.cli import main
from confessional.langgraph import checkpoint_serde
from confessional.review import (
    AlreadyResolvedError,
    NotPausedError,
    apending,
    aresume,
    pending,
    resume,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One server for the whole session, stopped by PID at the end."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh database on the session's server, with the checkpointer's tables."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url.replace("/postgres?", f"/{name}?")
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
    return url


@pytest.fixture
def saver(pg_url: str) -> Iterator[PostgresSaver]:
    with PostgresSaver.from_conn_string(pg_url) as opened:
        opened.serde = checkpoint_serde()
        yield opened


def _thread(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": name}}


def test_server_runs_unprivileged_and_stops_by_pid() -> None:
    with running_postgres() as server:
        with psycopg.connect(server.url) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert row == (str(server.root / "data"),)
        assert os.stat(server.root / "data").st_uid != 0  # the server never runs as root
        pid = server.pid
    assert server.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_pending_and_resume_sync(saver: PostgresSaver) -> None:
    graphs = {kind: build_persistent(kind, saver)[0] for kind in ("middleware", "node")}
    for kind, graph in graphs.items():
        graph.invoke(ask(f"pg-{kind}"), _thread(f"pg-{kind}"))
    reviews = {r.thread_id: r for r in pending(saver)}
    assert set(reviews) == {"pg-middleware", "pg-node"}
    for review in reviews.values():
        assert review.grade == 2
        assert "1 shortcut(s) reported" in review.reasons
        assert review.answer is None  # content is opt-in
        assert review.allowed_decisions == ("approve", "edit", "reject")
    assert {r.answer for r in pending(saver, content=True)} == {CHEAT_ANSWER}

    approved = resume(
        graphs["middleware"],
        "pg-middleware",
        {"decisions": [{"type": "approve"}]},
        interrupt_id=reviews["pg-middleware"].interrupt_id,
    )
    assert approved.values["messages"][-1].content == CHEAT_ANSWER
    rejected = resume(graphs["node"], "pg-node", {"decisions": [{"type": "reject"}]})
    assert "rejected" in str(rejected.values["messages"][-1].content)
    assert rejected.values["published"] == []
    assert pending(saver) == []
    with pytest.raises(AlreadyResolvedError, match="already resolved"):
        resume(
            graphs["middleware"],
            "pg-middleware",
            "approve",
            interrupt_id=reviews["pg-middleware"].interrupt_id,
        )


@pytest.mark.asyncio
async def test_pending_and_resume_async(pg_url: str) -> None:
    async with AsyncPostgresSaver.from_conn_string(pg_url) as saver:
        saver.serde = checkpoint_serde()
        graph, _ = build_persistent("middleware", saver)
        await graph.ainvoke(ask("pg-async"), _thread("pg-async"))
        [review] = await apending(saver, content=True)
        assert review.thread_id == "pg-async"
        assert review.answer == CHEAT_ANSWER
        edit = {
            "type": "edit",
            "edited_action": {"name": "deliver_answer", "args": {"answer": "Edited."}},
        }
        done = await aresume(graph, "pg-async", {"decisions": [edit]})
        assert done.values["messages"][-1].content == "Edited."
        assert texts(done.values["confession_withheld"]) == [CHEAT_ANSWER]
        assert await apending(saver) == []
        with pytest.raises(NotPausedError):
            await aresume(graph, "pg-async", "approve")


def test_two_reviewers_at_once_exactly_one_wins(pg_url: str) -> None:
    with PostgresSaver.from_conn_string(pg_url) as first:
        first.serde = checkpoint_serde()
        build(first).invoke(request(0), _thread("race"))
        [review] = pending(first)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def approve(name: str) -> None:
        with PostgresSaver.from_conn_string(pg_url) as own:  # one connection per reviewer
            own.serde = checkpoint_serde()
            graph = build(own)
            barrier.wait()
            try:
                resume(graph, "race", "approve", interrupt_id=review.interrupt_id, reviewer=name)
            except AlreadyResolvedError as exc:
                outcomes.append(f"lost: {exc}")
            else:
                outcomes.append("won")

    reviewers = [threading.Thread(target=approve, args=(f"r{i}",)) for i in range(2)]
    for t in reviewers:
        t.start()
    for t in reviewers:
        t.join()
    assert sorted(o.split(":")[0] for o in outcomes) == ["lost", "won"]
    assert "already resolved" in next(o for o in outcomes if o.startswith("lost"))
    with PostgresSaver.from_conn_string(pg_url) as check:
        check.serde = checkpoint_serde()
        state = build(check).get_state(_thread("race")).values
    assert texts(state["messages"]).count(CHEAT_ANSWER) == 1
    assert len(state["confessions"]) == 1


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pg.processes", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], stdin: str | None = None) -> list[dict[str, Any]]:
    out, err = process.communicate(stdin, timeout=600)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


WORKERS = 4


def test_many_workers_one_checkpointer(pg_url: str) -> None:
    started = time.perf_counter()
    workers = [_spawn("worker", pg_url, *map(str, range(w, RUNS, WORKERS))) for w in range(WORKERS)]
    reports = [line for w in workers for line in _finish(w)]
    halted = {r["run"] for r in reports if r["paused"]}
    assert sorted(r["run"] for r in reports) == list(range(RUNS))
    assert halted == set(range(0, RUNS, 2))  # every cheating run, no other

    # Two reviewers list the same reviews, then race to decide each of them.
    reviewers = [_spawn("reviewer", pg_url, f"reviewer-{i}") for i in range(2)]
    ready = [json.loads(r.stdout.readline()) for r in reviewers if r.stdout is not None]
    assert ready == [{"ready": len(halted)}] * 2
    summaries = [_finish(r, "go\n")[-1] for r in reviewers]
    wall = time.perf_counter() - started

    applied = [a for s in summaries for a in s["applied"]]
    lost = [a for s in summaries for a in s["already_resolved"]]
    per_thread = {f"run-{run}": 0 for run in halted}
    for a in applied:
        per_thread[a["thread_id"]] += 1
    assert set(per_thread.values()) == {1}  # each review applied exactly once
    assert len(lost) == len(halted)  # the other reviewer was told, every time
    assert all("already resolved" in a["error"] for a in lost)

    with PostgresSaver.from_conn_string(pg_url) as check:
        check.serde = checkpoint_serde()
        graph = build(check)
        assert pending(check) == []
        finals: dict[str, int] = {"approved": 0, "rejected": 0, "passed": 0}
        for run in range(RUNS):
            snapshot = graph.get_state(_thread(f"run-{run}"))
            state = snapshot.values
            assert snapshot.next == ()  # finished, nothing left to run
            assert len(state["confessions"]) == 1  # never confessed twice
            last = str(state["messages"][-1].content)
            if run not in halted:
                assert state["confessions"][0].verdict == "pass"
                assert "8214 ns" in last
                finals["passed"] += 1
            elif expected_decision(run) == "approve":
                assert last == CHEAT_ANSWER
                assert texts(state["messages"]).count(CHEAT_ANSWER) == 1
                finals["approved"] += 1
            else:
                assert "rejected" in last
                assert CHEAT_ANSWER not in texts(state["messages"])
                assert texts(state["confession_withheld"]) == [CHEAT_ANSWER]
                finals["rejected"] += 1
        with psycopg.connect(pg_url) as conn:
            claims = conn.execute(
                "SELECT status, count(*) FROM confessional_review_claims GROUP BY status"
            ).fetchall()
    assert claims == [("applied", len(halted))]
    figures = {
        "runs": RUNS,
        "workers": WORKERS,
        "halted": len(halted),
        **finals,
        "lost": RUNS - sum(finals.values()),
        "double_applied": sum(n - 1 for n in per_thread.values() if n > 1),
        "already_resolved_errors": len(lost),
        "wall_s": round(wall, 1),
    }
    print("many-workers figures:", json.dumps(figures))
    assert figures["lost"] == 0
    assert figures["double_applied"] == 0


def test_cli_lists_and_approves_on_postgres(
    pg_url: str, saver: PostgresSaver, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = build(saver)
    for run in range(6):
        agent.invoke(request(run), _thread(f"run-{run}"))
    assert main(["review", "list", "--checkpointer", pg_url]) == 0
    table = capsys.readouterr().out
    with capsys.disabled():
        print(table)  # quoted in the report (run with -s)
    assert "3 pending confession review(s)" in table
    assert main(["review", "list", "--checkpointer", pg_url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["thread_id"] for r in listed] == ["run-0", "run-2", "run-4"]
    code = main(
        ["review", "approve", "run-0", "--checkpointer", pg_url, "--graph", "tests.pg.agents:graph",
         "--interrupt-id", listed[0]["interrupt_id"], "--json"]
    )  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "approve"
    assert build(saver).get_state(_thread("run-0")).values["messages"][-1].content == CHEAT_ANSWER
    assert [r.thread_id for r in pending(saver)] == ["run-2", "run-4"]


def test_cli_reports_an_unreachable_server_in_one_line(
    postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = postgres.url.replace("/postgres?", "/no_such_database?")
    assert main(["review", "list", "--checkpointer", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("confessional review: error: cannot connect to the PostgreSQL")
    assert err.count("\n") == 1


def test_a_saver_on_a_connection_pool(pg_url: str) -> None:
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    settings = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    with ConnectionPool(pg_url, kwargs=settings, open=True, min_size=1, max_size=2) as pool:
        saver = PostgresSaver(pool, serde=checkpoint_serde())  # type: ignore[arg-type]
        agent = build(saver)
        agent.invoke(request(0), _thread("pooled"))
        [review] = pending(saver)
        done = resume(agent, "pooled", {"decisions": [{"type": "reject"}]})
        assert texts(done.values["confession_withheld"]) == [CHEAT_ANSWER]
        with pytest.raises(AlreadyResolvedError):
            resume(agent, "pooled", "approve", interrupt_id=review.interrupt_id)
