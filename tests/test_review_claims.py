"""Claims expire: a claim never applied is taken over after ``claim_ttl_s``, the takeover
is recorded, and the first claimer's late apply is refused. The protocol's shapes are
LangChain's HITL TypedDicts."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain.agents.middleware.human_in_the_loop import Decision, HITLRequest, HITLResponse
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from pydantic import TypeAdapter
from tests.pg.agents import CHEAT_ANSWER, build, request
from tests.pg.server import PostgresServer, running_postgres
from tests.surfaces_fixtures import texts

from confessional.errors import ConfigurationError
from confessional.langgraph import checkpoint_serde
from confessional.review import (
    DEFAULT_CLAIM_TTL_S,
    AlreadyResolvedError,
    Claim,
    ReviewDecision,
    history,
    pending,
    resume,
)
from confessional.review.drivers import SyncDriver

DEADLINE_S = 60.0
OLD_CLAIMS_TABLE = (  # the table as the first release created it
    "CREATE TABLE confessional_review_claims (thread_id TEXT NOT NULL, interrupt_id TEXT "
    "NOT NULL, checkpoint_id TEXT NOT NULL, decision TEXT NOT NULL, reviewer TEXT NOT "
    "NULL, status TEXT NOT NULL, claimed_at TEXT NOT NULL, "
    "PRIMARY KEY (thread_id, interrupt_id))"
)


@pytest.fixture(params=["sqlite", "memory"])
def saver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemorySaver(serde=checkpoint_serde())
        return
    conn = sqlite3.connect(tmp_path / "claims.sqlite", check_same_thread=False)
    yield SqliteSaver(conn, serde=checkpoint_serde())
    conn.close()


def _paused(saver: Any, thread_id: str) -> tuple[Any, str]:
    graph = build(saver)
    graph.invoke(request(0), {"configurable": {"thread_id": thread_id}})
    [review] = pending(saver, thread_id=thread_id)
    return graph, review.interrupt_id


def _abandoned_claim(saver: Any, thread_id: str, interrupt_id: str) -> Claim:
    """A claim left by a reviewer that died between claiming and applying."""
    stale = Claim(
        thread_id=thread_id,
        interrupt_id=interrupt_id,
        checkpoint_id="whatever",
        decision="reject",
        reviewer="alice",
        claimed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        token="alice-token",
    )
    driver = SyncDriver(saver)
    assert driver.run(driver.store.claim(stale))
    return stale


def test_an_abandoned_claim_holds_until_it_expires_then_is_taken_over(saver: Any) -> None:
    graph, interrupt_id = _paused(saver, "abandoned")
    stale = _abandoned_claim(saver, "abandoned", interrupt_id)
    with pytest.raises(AlreadyResolvedError, match="still being applied") as held:
        resume(graph, "abandoned", "approve", reviewer="bob")
    assert (held.value.reviewer, held.value.decided_at) == ("alice", stale.claimed_at)
    assert len(pending(saver)) == 1  # refused before anything ran
    done = resume(graph, "abandoned", "approve", reviewer="bob", claim_ttl_s=0)
    assert done.values["messages"][-1].content == CHEAT_ANSWER
    assert done.took_over == f"reject by alice at {stale.claimed_at}"
    [claim] = history(saver, "abandoned")
    assert (claim.reviewer, claim.decision, claim.status) == ("bob", "approve", "applied")
    assert claim.took_over == done.took_over  # the takeover is recorded with the claim
    assert pending(saver) == []


def test_the_takeover_is_logged(saver: Any, caplog: pytest.LogCaptureFixture) -> None:
    graph, interrupt_id = _paused(saver, "logged")
    _abandoned_claim(saver, "logged", interrupt_id)
    with caplog.at_level("WARNING", logger="confessional.review"):
        resume(graph, "logged", "approve", reviewer="bob", claim_ttl_s=0)
    [record] = caplog.records
    assert "took over the expired claim (reject by alice" in record.getMessage()


def test_an_applied_claim_never_expires(saver: Any) -> None:
    graph, interrupt_id = _paused(saver, "applied")
    resume(graph, "applied", "reject", reviewer="alice")
    with pytest.raises(AlreadyResolvedError, match="reject by alice"):
        resume(
            graph, "applied", "approve", interrupt_id=interrupt_id, reviewer="bob", claim_ttl_s=0
        )
    assert [c.reviewer for c in history(saver, "applied")] == ["alice"]


class _Stalls:
    """The paused graph, stopping in its ``at``-th call of ``method`` until released."""

    def __init__(self, graph: Any, method: str, at: int) -> None:
        self.graph, self.method, self.at = graph, method, at
        self.checkpointer = graph.checkpointer
        self.calls = 0
        self.reached, self.release = threading.Event(), threading.Event()

    def _call(self, method: str, *args: Any) -> Any:
        if method == self.method:
            self.calls += 1
            if self.calls == self.at:
                self.reached.set()
                assert self.release.wait(DEADLINE_S)
        return getattr(self.graph, method)(*args)

    def get_state(self, config: Any) -> Any:
        return self._call("get_state", config)

    def invoke(self, value: Any, config: Any) -> Any:
        return self._call("invoke", value, config)


def test_the_first_claimers_late_apply_is_refused(saver: Any) -> None:
    graph, interrupt_id = _paused(saver, "late")
    # Alice claims, then stalls before applying (her second look at the thread).
    alice = _Stalls(graph, "get_state", at=2)
    bob = _Stalls(graph, "invoke", at=1)
    outcome: dict[str, Any] = {}

    def decide(name: str, stalled: _Stalls, **options: Any) -> None:
        try:
            outcome[name] = resume(stalled, "late", "approve", reviewer=name, **options)
        except AlreadyResolvedError as exc:
            outcome[name] = exc

    first = threading.Thread(target=decide, args=("alice", alice))
    first.start()
    assert alice.reached.wait(DEADLINE_S)
    # Bob finds her claim expired (a zero TTL here), takes it over and starts applying.
    second = threading.Thread(target=decide, args=("bob", bob), kwargs={"claim_ttl_s": 0})
    second.start()
    assert bob.reached.wait(DEADLINE_S)
    alice.release.set()
    first.join(DEADLINE_S)
    refused = outcome["alice"]
    assert isinstance(refused, AlreadyResolvedError)
    assert "expired and was taken over" in str(refused)
    assert refused.reviewer == "bob"
    bob.release.set()
    second.join(DEADLINE_S)
    assert outcome["bob"].took_over.startswith("approve by alice at ")
    state = graph.get_state({"configurable": {"thread_id": "late"}}).values
    assert texts(state["messages"]).count(CHEAT_ANSWER) == 1
    [claim] = history(saver, "late")
    assert (claim.reviewer, claim.status) == ("bob", "applied")
    assert interrupt_id == claim.interrupt_id


@pytest.mark.parametrize("ttl", [-1, "300", True, float("nan")])
def test_claim_ttl_is_validated(ttl: Any) -> None:
    with pytest.raises(ConfigurationError, match="claim_ttl_s"):
        resume(build(InMemorySaver()), "t", "approve", claim_ttl_s=ttl)


def test_the_default_ttl_is_documented() -> None:
    assert DEFAULT_CLAIM_TTL_S == 300.0
    assert "claim_ttl_s" in (resume.__doc__ or "")


def test_an_old_claims_table_gains_the_new_columns(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.sqlite", check_same_thread=False)
    conn.execute(OLD_CLAIMS_TABLE)
    saver = SqliteSaver(conn, serde=checkpoint_serde())
    graph, _ = _paused(saver, "old")
    resume(graph, "old", "approve", reviewer="carol")
    assert [(c.reviewer, c.status) for c in history(saver, "old")] == [("carol", "applied")]
    conn.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def test_takeover_and_an_old_claims_table_on_postgres(postgres: PostgresServer) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url.replace("/postgres?", f"/{name}?")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_CLAIMS_TABLE)
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        saver.serde = checkpoint_serde()
        graph, interrupt_id = _paused(saver, "pg-abandoned")
        stale = _abandoned_claim(saver, "pg-abandoned", interrupt_id)
        with pytest.raises(AlreadyResolvedError, match="still being applied"):
            resume(graph, "pg-abandoned", "approve", reviewer="bob")
        done = resume(graph, "pg-abandoned", "approve", reviewer="bob", claim_ttl_s=0)
        assert done.took_over == f"reject by alice at {stale.claimed_at}"
        [claim] = history(saver, "pg-abandoned")
        assert (claim.reviewer, claim.status, claim.took_over) == ("bob", "applied", done.took_over)


# -- the protocol is LangChain's ------------------------------------------------------------


@pytest.mark.parametrize(
    "decision",
    [
        ReviewDecision(action="approve", reviewer="r", decided_at="t", traceparent="p"),
        ReviewDecision(action="reject", message="why"),
        ReviewDecision(action="edit", answer="instead"),
    ],
)
def test_decisions_are_langchain_hitl_decisions(decision: ReviewDecision) -> None:
    response = decision.as_resume()
    TypeAdapter(HITLResponse).validate_python(response)
    [one] = response["decisions"]
    TypeAdapter(Decision).validate_python(one)
    assert ReviewDecision.parse(response) == decision


def test_the_published_schema_is_generated_from_the_typed_dicts() -> None:
    schema = ReviewDecision.model_json_schema()
    variants = schema["properties"]["decisions"]["items"]["oneOf"]
    by_type = {v["properties"]["type"]["const"]: v for v in variants}
    assert set(by_type) == {"approve", "edit", "reject"}
    for variant in variants:  # our keys, from DecisionContext
        assert {"reviewer", "decided_at", "traceparent"} <= set(variant["properties"])
    assert by_type["reject"]["required"] == ["type"]
    edit = by_type["edit"]["properties"]["edited_action"]
    assert edit["properties"]["name"] == {"const": "deliver_answer"}
    assert edit["properties"]["args"]["required"] == ["answer"]


def test_the_request_is_a_hitl_request(saver: Any) -> None:
    graph, _ = _paused(saver, "typed")
    [paused] = graph.get_state({"configurable": {"thread_id": "typed"}}).interrupts
    TypeAdapter(HITLRequest).validate_python(paused.value)
    assert paused.value["type"] == "confession_review"
