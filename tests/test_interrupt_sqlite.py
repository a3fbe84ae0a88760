"""Interrupt round trips through the SQLite checkpointer: new graph objects, new processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command
from tests.surfaces_fixtures import (
    CHEAT_ANSWER,
    ask,
    build_persistent,
    confession_requests,
    texts,
    thread,
)

from confessional import Confession
from confessional.langgraph import checkpoint_serde

REPO = Path(__file__).resolve().parents[1]
KINDS = ("middleware", "tool_round", "node")

RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sqlite3, sys, warnings
    warnings.simplefilter("error")
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.types import Command
    from confessional import Confession
    from confessional.langgraph import checkpoint_serde
    from confessional.testing import is_confession_request
    from tests.surfaces_fixtures import build_persistent

    kind, db, thread_id, decision = sys.argv[1:]
    if decision.startswith("{"):  # a HITL response, as an inbox UI sends it
        decision = json.loads(decision)
    saver = SqliteSaver(sqlite3.connect(db, check_same_thread=False), serde=checkpoint_serde())
    graph, model = build_persistent(kind, saver)
    config = {"configurable": {"thread_id": thread_id}}
    result = graph.invoke(Command(resume=decision), config)
    while "__interrupt__" in result:  # tool_round pauses once per round
        result = graph.invoke(Command(resume=decision), config)
    print(json.dumps({
        "last": str(result["messages"][-1].content),
        "types": [type(c).__name__ for c in result["confessions"]],
        "grade": result["confessions"][-1].report.overall_compliance_grade,
        "withheld": [str(m.content) for m in result.get("confession_withheld", [])],
        "published": result.get("published"),
        "confession_calls": sum(1 for c in model.calls if is_confession_request(c)),
    }))
    """
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints.sqlite"


@pytest.fixture
def saver(db: Path) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(db, check_same_thread=False)
    yield SqliteSaver(conn, serde=checkpoint_serde())
    conn.close()


def _pause(kind: str, saver: SqliteSaver) -> tuple[dict[str, Any], str, Any]:
    graph, model = build_persistent(kind, saver)
    config = thread()
    paused = graph.invoke(ask(f"sqlite-{kind}"), config)
    [pending] = paused["__interrupt__"]
    assert pending.value["type"] == "confession_review"
    assert pending.value["confession"]["verdict"] == "halt"
    if kind == "node":  # the agent node already wrote it; nothing downstream has run
        assert paused["published"] == []
    else:  # the middleware holds the answer back while paused
        assert CHEAT_ANSWER not in texts(paused["messages"])
    assert confession_requests(model) == 1
    return paused, config["configurable"]["thread_id"], model


def _resume_in_new_process(kind: str, db: Path, thread_id: str, decision: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    done = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, kind, str(db), thread_id, decision],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", KINDS)
def test_approve_in_a_new_process(kind: str, db: Path, saver: SqliteSaver) -> None:
    _, thread_id, _ = _pause(kind, saver)
    out = _resume_in_new_process(kind, db, thread_id, "approve")
    assert out["last"] == CHEAT_ANSWER
    assert set(out["types"]) == {"Confession"}
    assert out["grade"] == 2
    assert out["withheld"] == []
    # the paused confession is replayed, never recomputed; tool_round confesses its 2nd round
    assert out["confession_calls"] == (1 if kind == "tool_round" else 0)
    if kind == "node":
        assert out["published"] == [CHEAT_ANSWER]


@pytest.mark.parametrize("kind", KINDS)
def test_reject_in_a_new_process(kind: str, db: Path, saver: SqliteSaver) -> None:
    _, thread_id, _ = _pause(kind, saver)
    out = _resume_in_new_process(kind, db, thread_id, "reject")
    assert CHEAT_ANSWER not in out["last"]
    assert "rejected" in out["last"]
    assert out["confession_calls"] == 0
    if kind != "tool_round":
        assert out["withheld"] == [CHEAT_ANSWER]
    if kind == "node":
        assert out["published"] == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_resume_from_a_new_graph_object_on_the_same_file(
    kind: str, decision: str, db: Path, saver: SqliteSaver
) -> None:
    _, thread_id, _ = _pause(kind, saver)
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        fresh, model = build_persistent(kind, SqliteSaver(conn))  # default serde on purpose
        config = {"configurable": {"thread_id": thread_id}}
        result = fresh.invoke(Command(resume=decision), config)
        if kind == "tool_round" and decision == "approve":
            result = fresh.invoke(Command(resume=decision), config)
    finally:
        conn.close()
    confession = result["confessions"][0]
    assert isinstance(confession, Confession)
    assert confession.report is not None
    assert confession.report.shortcuts
    delivered = result["messages"][-1].content == CHEAT_ANSWER
    assert delivered is (decision == "approve")
    assert confession_requests(model) == (
        1 if kind == "tool_round" and decision == "approve" else 0
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_async_pause_and_resume_with_async_sqlite(kind: str, db: Path) -> None:
    async with AsyncSqliteSaver.from_conn_string(str(db)) as first:
        first.serde = checkpoint_serde()
        graph, model = build_persistent(kind, first)
        config = thread()
        paused = await graph.ainvoke(ask(f"async-{kind}"), config)
        assert paused["__interrupt__"][0].value["type"] == "confession_review"
    async with AsyncSqliteSaver.from_conn_string(str(db)) as second:
        second.serde = checkpoint_serde()
        fresh, fresh_model = build_persistent(kind, second)
        result = await fresh.ainvoke(Command(resume="reject"), config)
    assert "rejected" in str(result["messages"][-1].content)
    assert isinstance(result["confessions"][-1], Confession)
    assert confession_requests(model) == 1
    assert confession_requests(fresh_model) == 0


HITL_DECISIONS = {
    "approve": {"decisions": [{"type": "approve"}]},
    "reject": {"decisions": [{"type": "reject", "message": "rigged"}]},
}


@pytest.mark.parametrize("kind", ["middleware", "node"])
@pytest.mark.parametrize("decision", list(HITL_DECISIONS))
def test_hitl_response_in_a_new_process(
    kind: str, decision: str, db: Path, saver: SqliteSaver
) -> None:
    paused, thread_id, _ = _pause(kind, saver)
    assert paused["__interrupt__"][0].value["action_requests"][0]["name"] == "deliver_answer"
    out = _resume_in_new_process(kind, db, thread_id, json.dumps(HITL_DECISIONS[decision]))
    assert out["confession_calls"] == 0
    if decision == "approve":
        assert out["last"] == CHEAT_ANSWER
        assert out["withheld"] == []
    else:
        assert "Reviewer note: rigged" in out["last"]
        assert out["withheld"] == [CHEAT_ANSWER]


def test_transcript_of_one_round_trip(db: Path, saver: SqliteSaver) -> None:
    """Prints the round trip quoted in the docs (run with -s to see it)."""
    paused, thread_id, _ = _pause("middleware", saver)
    payload = paused["__interrupt__"][0].value
    out = _resume_in_new_process("middleware", db, thread_id, "approve")
    print(json.dumps({"pause_payload": payload, "resumed_in_new_process": out}, indent=2))
    assert out["last"] == CHEAT_ANSWER
