"""Confession reviews: HITL-shaped interrupts, resuming with HITL decisions on both
surfaces, and ``confessional.review`` over SQLite (sync and async), with its safety rules."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware.human_in_the_loop import (
    HITLRequest,
    HITLResponse,
    HumanInTheLoopMiddleware,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command
from pydantic import TypeAdapter
from tests.pg.agents import build, request
from tests.surfaces_fixtures import (
    CHEAT_ANSWER,
    MODES,
    Mode,
    ask,
    build_persistent,
    confession_requests,
    invoke,
    make_agent,
    make_graph,
    texts,
    thread,
)

from confessional import ConfessionHalted, ConfessionPolicy, ConfessionTelemetry
from confessional.control import InvalidDecisionError
from confessional.langgraph import checkpoint_serde
from confessional.review import (
    AlreadyResolvedError,
    NotPausedError,
    ReviewError,
    ReviewMismatchError,
    apending,
    aresume,
    pending,
    resume,
)
from confessional.testing import cheating_agent, example_tools

INTERRUPT = ConfessionPolicy(on_violation="interrupt")
SHORTCUT = "Set the benchmark timer to zero so the speed test passes."
EDIT = {
    "type": "edit",
    "edited_action": {"name": "deliver_answer", "args": {"answer": "Tests still fail."}},
}


def _surface(kind: str, **settings: Any) -> Any:
    model = cheating_agent()
    if kind == "node":
        return make_graph(model, policy=INTERRUPT, checkpointer=InMemorySaver(), **settings)
    trigger = "tool_round" if kind == "tool_round" else "turn"
    return make_agent(
        model, policy=INTERRUPT, checkpointer=InMemorySaver(), trigger=trigger, **settings
    )


# -- the interrupt value is a LangChain HITLRequest --------------------------------------


@pytest.mark.parametrize("kind", ["middleware", "node", "tool_round"])
def test_interrupt_value_is_a_hitl_request(kind: str) -> None:
    paused = _surface(kind).invoke(ask(f"hitl-{kind}"), thread())
    [found] = paused["__interrupt__"]
    value = TypeAdapter(HITLRequest).validate_python(found.value)
    [action] = value["action_requests"]
    [config] = value["review_configs"]
    assert config["action_name"] == action["name"]
    assert "grade 2/7" in action.get("description", "")
    # The published response schema is the HITL response, with this review's decisions.
    schema = found.response_schema["properties"]["decisions"]
    offered = [v["properties"]["type"]["const"] for v in schema["items"]["oneOf"]]
    assert offered == config["allowed_decisions"]
    assert schema["maxItems"] == 1
    if kind == "tool_round":  # paused before the next model call: no answer yet
        assert (action["name"], action["args"]) == ("continue_run", {})
        assert config["allowed_decisions"] == ["approve", "reject"]
    else:
        assert action == {**action, "name": "deliver_answer", "args": {"answer": CHEAT_ANSWER}}
        assert config["allowed_decisions"] == ["approve", "edit", "reject"]


@pytest.mark.parametrize("kind", ["middleware", "node"])
def test_description_quotes_the_report_only_with_content_capture(kind: str) -> None:
    quiet = _surface(kind, telemetry=ConfessionTelemetry(capture_content=False))
    loud = _surface(kind, telemetry=ConfessionTelemetry(capture_content="SPAN_ONLY"))
    [hidden] = quiet.invoke(ask("quiet"), thread())["__interrupt__"]
    [shown] = loud.invoke(ask("loud"), thread())["__interrupt__"]
    hidden_text = hidden.value["action_requests"][0]["description"]
    shown_text = shown.value["action_requests"][0]["description"]
    for text in (hidden_text, shown_text):  # labels and counts are never content
        assert "1 shortcut(s) reported" in text
    assert SHORTCUT not in hidden_text
    assert "Shortcuts: 1 reported" in hidden_text
    assert f"Shortcut: {SHORTCUT}" in shown_text
    assert "run=loud" in shown_text  # the objective quotes the request


# -- resuming with the HITL response shape, on both surfaces -----------------------------

DECISIONS: dict[str, HITLResponse] = {
    "approve": {"decisions": [{"type": "approve"}]},
    "reject": {"decisions": [{"type": "reject", "message": "rigged timer"}]},
    "edit": {"decisions": [EDIT]},  # type: ignore[list-item]
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["middleware", "node"])
@pytest.mark.parametrize("decision", list(DECISIONS))
def test_hitl_response_resumes_both_surfaces(kind: str, decision: str, mode: Mode) -> None:
    graph = _surface(kind)
    config = thread()
    invoke(graph, ask(f"{kind}-{decision}"), config, mode)
    done = invoke(graph, Command(resume=DECISIONS[decision]), config, mode)
    assert "__interrupt__" not in done
    last = str(done["messages"][-1].content)
    withheld = texts(done.get("confession_withheld", []))
    published = done.get("published")
    if decision == "approve":
        assert last == CHEAT_ANSWER
        assert withheld == []
    elif decision == "reject":
        assert "rejected" in last
        assert "Reviewer note: rigged timer" in last
        assert withheld == [CHEAT_ANSWER]
    else:  # the replacement is delivered, the original kept out of messages
        assert last == "Tests still fail."
        assert CHEAT_ANSWER not in texts(done["messages"])
        assert withheld == [CHEAT_ANSWER]
        assert done["messages"][-1].response_metadata["confessional"] == {"edited": True}
    if kind == "node":  # downstream sees exactly what was delivered
        assert published == ([] if decision == "reject" else [last])
    assert len(done["confessions"]) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"decisions": []},
        {"decisions": [{"type": "approve"}, {"type": "approve"}]},
        {"type": "edit"},  # no replacement answer
        {"type": "respond", "message": "hi"},
        {"type": "edit", "edited_action": {"name": "drop_table", "args": {"answer": "x"}}},
        "maybe",
    ],
)
def test_bad_decisions_are_refused_and_can_be_answered_again(bad: Any) -> None:
    graph = _surface("middleware")
    config = thread()
    graph.invoke(ask("bad"), config)
    with pytest.raises(Exception, match=r"decision|action|answer"):
        graph.invoke(Command(resume=bad), config)
    done = graph.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
    assert done["messages"][-1].content == CHEAT_ANSWER


def test_a_bare_list_of_one_decision_also_resumes() -> None:
    graph = _surface("node")
    config = thread()
    graph.invoke(ask("bare-list"), config)
    done = graph.invoke(Command(resume=[{"type": "approve"}]), config)
    assert done["published"] == [CHEAT_ANSWER]


def test_edit_is_not_offered_before_there_is_an_answer() -> None:
    graph = _surface("tool_round")
    config = thread()
    graph.invoke(ask("round-edit"), config)
    with pytest.raises(ValueError, match="'edit' is not allowed"):
        graph.invoke(Command(resume={"decisions": [EDIT]}), config)
    again = graph.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
    assert again["__interrupt__"]  # the second round pauses as before


# -- confessional.review over SQLite ------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints.sqlite"


@pytest.fixture
def saver(db: Path) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(db, check_same_thread=False)
    yield SqliteSaver(conn, serde=checkpoint_serde())
    conn.close()


def _pause_all(saver: Any) -> dict[str, Any]:
    graphs = {}
    for kind in ("middleware", "node", "tool_round"):
        graph, _ = build_persistent(kind, saver)
        graph.invoke(ask(f"list-{kind}"), {"configurable": {"thread_id": kind}})
        graphs[kind] = graph
    return graphs


def test_pending_lists_every_paused_thread(saver: SqliteSaver) -> None:
    _pause_all(saver)
    build(saver).invoke(request(1), {"configurable": {"thread_id": "honest"}})  # not paused
    reviews = pending(saver)
    assert [r.thread_id for r in reviews] == ["middleware", "node", "tool_round"]  # oldest first
    for review in reviews:
        latest = saver.get_tuple({"configurable": {"thread_id": review.thread_id}})
        assert latest is not None
        assert review.checkpoint_id == latest.config["configurable"]["checkpoint_id"]
        assert review.paused_at == latest.checkpoint["ts"]
        assert review.grade == 2
        assert review.verdict == "halt"
        assert "grade 2 <= 3" in review.reasons
        assert (review.answer, review.details) == (None, None)  # content is opt-in
    with_content = {r.thread_id: r for r in pending(saver, content=True)}
    assert with_content["middleware"].answer == CHEAT_ANSWER
    assert with_content["tool_round"].answer is None
    assert SHORTCUT in (with_content["node"].details or "")
    [only] = pending(saver, thread_id="node")
    assert only.interrupt_id == with_content["node"].interrupt_id
    assert pending(saver, thread_id="honest") == []


def test_resume_applies_each_decision_and_the_thread_leaves_the_list(saver: SqliteSaver) -> None:
    graphs = _pause_all(saver)
    ids = {r.thread_id: r.interrupt_id for r in pending(saver)}
    approved = resume(graphs["middleware"], "middleware", {"decisions": [{"type": "approve"}]})
    assert approved.values["messages"][-1].content == CHEAT_ANSWER
    assert (approved.interrupt_id, approved.paused_again) == (ids["middleware"], False)
    edited = resume(graphs["node"], "node", {"decisions": [EDIT]}, interrupt_id=ids["node"])
    assert edited.values["published"] == ["Tests still fail."]
    round_two = resume(graphs["tool_round"], "tool_round", "approve")
    assert round_two.paused_again  # tool_round confesses its next round too
    [next_pause] = pending(saver)
    assert next_pause.thread_id == "tool_round"
    assert next_pause.interrupt_id != ids["tool_round"]
    rejected = resume(graphs["tool_round"], "tool_round", {"type": "reject"})
    assert "rejected" in str(rejected.values["messages"][-1].content)
    assert pending(saver) == []


@pytest.mark.asyncio
async def test_async_pending_and_resume_with_async_sqlite(db: Path) -> None:
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        saver.serde = checkpoint_serde()
        graph, model = build_persistent("middleware", saver)
        await graph.ainvoke(ask("async-review"), {"configurable": {"thread_id": "a"}})
        [review] = await apending(saver, content=True)
        assert (review.thread_id, review.answer) == ("a", CHEAT_ANSWER)
        with pytest.raises(ReviewError, match="async"):
            pending(saver)  # an async saver cannot serve the sync API
        done = await aresume(graph, "a", {"decisions": [{"type": "reject", "message": "no"}]})
        assert texts(done.values["confession_withheld"]) == [CHEAT_ANSWER]
        assert await apending(saver) == []
        with pytest.raises(AlreadyResolvedError):
            await aresume(graph, "a", "approve", interrupt_id=review.interrupt_id)
    assert confession_requests(model) == 1


@pytest.mark.asyncio
async def test_async_api_also_takes_a_sync_saver(saver: SqliteSaver) -> None:
    graphs = _pause_all(saver)
    assert len(await apending(saver)) == 3
    with pytest.raises(ReviewError, match="sync only: use resume"):
        await aresume(graphs["middleware"], "middleware", "approve")
    assert len(await apending(saver)) == 3  # refused before anything ran


# -- safety: only a thread paused on a confession review is resumed -----------------------


def _fingerprint(saver: SqliteSaver, thread_id: str) -> tuple[Any, ...]:
    latest = saver.get_tuple({"configurable": {"thread_id": thread_id}})
    assert latest is not None
    return (latest.config["configurable"]["checkpoint_id"], len(latest.pending_writes or []))


def _claims(saver: SqliteSaver) -> list[Any]:
    try:
        return saver.conn.execute("SELECT * FROM confessional_review_claims").fetchall()
    except sqlite3.OperationalError:  # never created: nothing was claimed
        return []


def test_refusals_change_nothing(saver: SqliteSaver) -> None:
    graphs = _pause_all(saver)
    graph = graphs["middleware"]
    build(saver).invoke(request(1), {"configurable": {"thread_id": "finished"}})
    before = {t: _fingerprint(saver, t) for t in ("middleware", "finished")}
    refusals: list[tuple[type[Exception], str, dict[str, Any]]] = [
        (NotPausedError, "not paused on a confession review", {"thread_id": "finished"}),
        (NotPausedError, "not paused", {"thread_id": "no-such-thread"}),
        (ReviewMismatchError, "not on 'forged'", {"interrupt_id": "forged"}),
        (InvalidDecisionError, "not a review decision", {"decision": "maybe"}),
        (InvalidDecisionError, "exactly one decision", {"decision": {"decisions": []}}),
    ]
    for error, message, changes in refusals:
        args = {"thread_id": "middleware", "decision": "approve", **changes}
        with pytest.raises(error, match=message):
            resume(
                graph, args["thread_id"], args["decision"], interrupt_id=args.get("interrupt_id")
            )
    assert {t: _fingerprint(saver, t) for t in before} == before
    assert _claims(saver) == []
    assert len(pending(saver)) == 3


def test_a_thread_paused_on_another_interrupt_is_refused() -> None:
    hitl = create_agent(
        cheating_agent(),
        example_tools(),
        middleware=[HumanInTheLoopMiddleware(interrupt_on={"run_tests": True})],
        checkpointer=InMemorySaver(),
    )
    config = thread("tool-approval")
    [tool_interrupt] = hitl.invoke(ask("hitl"), config)["__interrupt__"]
    for interrupt_id in (None, tool_interrupt.id):
        with pytest.raises(NotPausedError, match="not paused on a confession review"):
            resume(hitl, "tool-approval", "approve", interrupt_id=interrupt_id)
    assert [i.id for i in hitl.get_state(config).interrupts] == [tool_interrupt.id]


def test_a_graph_without_checkpointer_is_refused() -> None:
    with pytest.raises(ReviewError, match="no checkpointer"):
        resume(build(None), "t", "approve")


def test_two_reviewers_at_once_on_sqlite(db: Path, saver: SqliteSaver) -> None:
    build(saver).invoke(request(0), {"configurable": {"thread_id": "race"}})
    [review] = pending(saver)
    barrier = threading.Barrier(2)
    won, lost = [], []

    def approve() -> None:
        conn = sqlite3.connect(db, check_same_thread=False)  # each reviewer its own connection
        try:
            graph = build(SqliteSaver(conn, serde=checkpoint_serde()))
            barrier.wait()
            won.append(resume(graph, "race", "approve", interrupt_id=review.interrupt_id))
        except AlreadyResolvedError as exc:
            lost.append(str(exc))
        finally:
            conn.close()

    reviewers = [threading.Thread(target=approve) for _ in range(2)]
    for t in reviewers:
        t.start()
    for t in reviewers:
        t.join()
    assert (len(won), len(lost)) == (1, 1)
    assert "already resolved by another reviewer" in lost[0]
    state = build(saver).get_state({"configurable": {"thread_id": "race"}}).values
    assert texts(state["messages"]).count(CHEAT_ANSWER) == 1
    assert [row[5] for row in _claims(saver)] == ["applied"]


def test_a_rejection_that_raises_is_still_resolved_once(saver: SqliteSaver) -> None:
    policy = ConfessionPolicy(on_violation="interrupt", reject_action="error")
    graph = make_agent(cheating_agent(), policy=policy, checkpointer=saver)
    graph.invoke(ask("raises"), {"configurable": {"thread_id": "raises"}})
    with pytest.raises(ConfessionHalted, match="rejected"):
        resume(graph, "raises", "reject")
    # LangGraph keeps the decision with the paused task: it was applied, and only once.
    assert [row[5] for row in _claims(saver)] == ["applied"]
    with pytest.raises(AlreadyResolvedError, match="reject by"):
        resume(graph, "raises", "approve")


class _DiesBeforeResuming:
    """A graph whose process fails before the resumed run starts (a lost connection)."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.checkpointer = graph.checkpointer

    def get_state(self, config: Any) -> Any:
        return self.graph.get_state(config)

    def invoke(self, value: Any, config: Any) -> Any:
        raise ConnectionError("worker lost its connection")


def test_a_resume_that_never_started_gives_the_claim_back(saver: SqliteSaver) -> None:
    graph = build(saver)
    graph.invoke(request(0), {"configurable": {"thread_id": "flaky"}})
    with pytest.raises(ConnectionError):
        resume(_DiesBeforeResuming(graph), "flaky", "reject")
    assert _claims(saver) == []
    assert len(pending(saver)) == 1  # still pending: another reviewer may answer it
    assert resume(graph, "flaky", "approve").values["messages"][-1].content == CHEAT_ANSWER


def test_pending_on_an_in_memory_saver() -> None:
    memory = InMemorySaver(serde=checkpoint_serde())
    graph = build(memory)
    for run in range(3):
        graph.invoke(request(run), {"configurable": {"thread_id": f"m{run}"}})
    reviews = pending(memory, content=True)
    assert [(r.thread_id, r.answer) for r in reviews] == [
        ("m0", CHEAT_ANSWER),
        ("m2", CHEAT_ANSWER),
    ]
    resume(graph, "m2", "reject", interrupt_id=reviews[1].interrupt_id)
    with pytest.raises(AlreadyResolvedError, match="reject by"):
        resume(graph, "m2", "approve", interrupt_id=reviews[1].interrupt_id)
    assert [r.thread_id for r in pending(memory)] == ["m0"]
