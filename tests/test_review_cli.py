"""``confessional review list|show|approve|reject`` over a SQLite checkpointer."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from tests.pg.agents import CHEAT_ANSWER, build, request

from confessional.cli import main
from confessional.langgraph import checkpoint_serde

AGENTS_FILE = Path(__file__).parent / "pg" / "agents.py"
GRAPH = "tests.pg.agents:graph"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Six runs on one file: runs 0, 2 and 4 paused for review, the others finished."""
    path = tmp_path / "checkpoints.sqlite"
    conn = sqlite3.connect(path, check_same_thread=False)
    agent = build(SqliteSaver(conn, serde=checkpoint_serde()))
    for run in range(6):
        agent.invoke(request(run), {"configurable": {"thread_id": f"run-{run}"}})
    conn.close()
    return path


def _state(db: Path, thread_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        agent = build(SqliteSaver(conn, serde=checkpoint_serde()))
        return agent.get_state({"configurable": {"thread_id": thread_id}}).values
    finally:
        conn.close()


def _review(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["review", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_a_table_of_pending_reviews(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _review(capsys, "list", "--checkpointer", f"sqlite:///{db}")
    with capsys.disabled():
        print(out)  # quoted in the report (run with -s)
    assert (code, err) == (0, "")
    assert "3 pending confession review(s)" in out
    for thread in ("run-0", "run-2", "run-4"):
        assert thread in out
    assert "run-1" not in out
    assert "1 shortcut(s) reported" in out
    assert CHEAT_ANSWER not in out  # the withheld answer is opt-in


def test_list_json_and_content(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _review(capsys, "list", "--checkpointer", f"sqlite:///{db}", "--json")
    assert code == 0
    reviews = json.loads(out)
    assert [r["thread_id"] for r in reviews] == ["run-0", "run-2", "run-4"]
    assert {r["grade"] for r in reviews} == {2}
    assert all(r["answer"] is None for r in reviews)
    _, out, _ = _review(capsys, "list", "--checkpointer", f"sqlite:///{db}", "--json", "--content")
    assert {r["answer"] for r in json.loads(out)} == {CHEAT_ANSWER}


def test_show_one_thread(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{db}"
    code, out, _ = _review(capsys, "show", "run-2", "--checkpointer", url)
    assert code == 0
    assert "thread run-2" in out
    assert "deliver_answer" in out
    assert "grade 2/7" in out
    assert CHEAT_ANSWER not in out
    _, out, _ = _review(capsys, "show", "run-2", "--checkpointer", url, "--content")
    assert CHEAT_ANSWER in out
    assert "Shortcut: Set the benchmark timer to zero" in out
    _, out, _ = _review(capsys, "show", "run-2", "--checkpointer", url, "--json")
    assert json.loads(out)["thread_id"] == "run-2"


def test_approve_reject_and_edit_resume_the_runs(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{db}"
    _, listed, _ = _review(capsys, "list", "--checkpointer", url, "--json")
    interrupt = {r["thread_id"]: r["interrupt_id"] for r in json.loads(listed)}
    code, out, err = _review(
        capsys, "approve", "run-0", "--checkpointer", url, "--graph", GRAPH,
        "--interrupt-id", interrupt["run-0"],
    )  # fmt: skip
    assert (code, err) == (0, "")
    expected = f"approve: thread run-0 resumed (review {interrupt['run-0']}); the run finished."
    assert expected in " ".join(out.split())  # wrapped at the terminal's width
    assert _state(db, "run-0")["messages"][-1].content == CHEAT_ANSWER

    code, out, _ = _review(
        capsys, "reject", "run-2", "--checkpointer", url, "--graph", f"{AGENTS_FILE}:graph",
        "--message", "timer rigged", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == {
        "thread_id": "run-2",
        "interrupt_id": interrupt["run-2"],
        "decision": "reject",
        "paused_again": False,
    }
    assert "Reviewer note: timer rigged" in _state(db, "run-2")["messages"][-1].content

    code, _, _ = _review(
        capsys, "approve", "run-4", "--checkpointer", url, "--graph", GRAPH,
        "--answer", "The budget cannot be met.",
    )  # fmt: skip
    assert code == 0
    assert _state(db, "run-4")["messages"][-1].content == "The budget cannot be met."
    _, out, _ = _review(capsys, "list", "--checkpointer", url)
    assert "No confession reviews pending." in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--checkpointer", "mysql://x"], "is not supported; use sqlite:///PATH"),
        (["list", "--checkpointer", "sqlite:///nowhere/x.sqlite"], "no SQLite checkpoint"),
        (["show", "run-1", "--checkpointer", "{url}"], "not paused on a confession review"),
        (["approve", "run-1", "--checkpointer", "{url}", "--graph", GRAPH], "not paused"),
        (
            ["approve", "run-0", "--checkpointer", "{url}", "--graph", GRAPH,
             "--interrupt-id", "x"],
            "not on 'x'; nothing was changed",
        ),
        (["approve", "run-0", "--checkpointer", "{url}", "--graph", "tests.pg.agents"], "is not"),
        (["approve", "run-0", "--checkpointer", "{url}", "--graph", "no_such_mod:g"], "no module"),
        (["approve", "run-0", "--checkpointer", "{url}", "--graph", f"{GRAPH}x"], "has no"),
        (["approve", "run-0", "--checkpointer", "{url}", "--graph", "tests.pg.agents:request"],
         "must take no arguments"),
        (["approve", "run-0", "--checkpointer", "{url}", "--graph", "tests.pg.agents:RUNS"],
         "not a compiled graph"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_change_nothing(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    url = f"sqlite:///{db}"
    code, out, err = _review(capsys, *(a.replace("{url}", url) for a in args))
    assert code == 2
    assert out == ""
    assert err.startswith("confessional review: error: ")
    assert message in err
    assert err.count("\n") == 1
    _, listed, _ = _review(capsys, "list", "--checkpointer", url, "--json")
    assert len(json.loads(listed)) == 3


def test_a_second_approval_is_already_resolved(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{db}"
    _, listed, _ = _review(capsys, "show", "run-0", "--checkpointer", url, "--json")
    review = ["--interrupt-id", json.loads(listed)["interrupt_id"]]
    assert (
        _review(capsys, "approve", "run-0", "--checkpointer", url, "--graph", GRAPH, *review)[0]
        == 0
    )
    code, _, err = _review(
        capsys, "approve", "run-0", "--checkpointer", url, "--graph", GRAPH, *review
    )
    assert code == 2
    assert "already resolved by another reviewer: approve by" in err


def test_a_missing_postgres_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres", None)  # not installed
    code, _, err = _review(capsys, "list", "--checkpointer", "postgresql://u@localhost/db")
    assert code == 2
    assert "pip install 'confessional[postgres]'" in err
