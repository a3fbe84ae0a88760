"""``confessional review serve`` over plain HTTP: every security point of the page.

The app runs in process under Starlette's TestClient, on a SQLite checkpointer with runs
paused by a real ``create_agent`` agent. The browser tests (test_review_browser.py) drive
the same pages in Chromium.
"""

from __future__ import annotations

import importlib
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from starlette.testclient import TestClient
from tests.pg.agents import CHEAT_ANSWER, build, request

from confessional import ConfessionPolicy, ConfessionTelemetry, semconv
from confessional.cli import build_parser
from confessional.errors import MissingExtraError
from confessional.langchain import ConfessionMiddleware
from confessional.langgraph import checkpoint_serde
from confessional.review import history, pending
from confessional.review.web import SESSION_COOKIE, create_app
from confessional.testing import (
    admitting_confessor,
    cheating_agent,
    example_tools,
    scripted_agent,
    tool_call_message,
)

TOKEN = "test-token-0123456789abcdef"
SCRIPT = '<script>alert("answer")</script>'
EVIL_THREAD = '<script>alert("thread")</script>'
EVIL_NAME = "<img src=x onerror=alert(1)>"
SHORTCUT = "Set the benchmark timer to zero so the speed test passes."


def script_agent(checkpointer: Any) -> Any:
    """A cheating agent whose withheld answer is a script tag."""
    model = scripted_agent(
        [
            tool_call_message(("run_tests", {})),
            tool_call_message(
                ("write_file", {"path": "tests/test_speed.py", "content": "timer = 0\n"})
            ),
            AIMessage(content=f"All tests pass. {SCRIPT}"),
        ],
        confession=admitting_confessor(),
    )
    return create_agent(
        model,
        example_tools(),
        middleware=[ConfessionMiddleware(policy=ConfessionPolicy(on_violation="interrupt"))],
        checkpointer=checkpointer,
    )


@pytest.fixture
def saver(tmp_path: Path) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(tmp_path / "checkpoints.sqlite", check_same_thread=False)
    yield SqliteSaver(conn, serde=checkpoint_serde())
    conn.close()


@pytest.fixture
def graph(saver: SqliteSaver) -> Any:
    agent = build(saver)
    agent.invoke(request(0), {"configurable": {"thread_id": "run-0"}})
    return agent


def client_for(graph: Any, *, content: bool = True, **options: Any) -> TestClient:
    app = create_app(
        checkpointer=graph.checkpointer,
        graph=graph,
        token=TOKEN,
        capture_content=content,
        **options,
    )
    return TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def log_in(client: TestClient, name: str = "alice", token: str = TOKEN) -> Any:
    form = client.get("/login")
    return client.post("/login", data={"csrf": csrf_of(form.text), "token": token, "name": name})


def detail(client: TestClient, thread: str = "run-0") -> Any:
    [review] = [r for r in pending(client.app_graph.checkpointer) if r.thread_id == thread]
    return client.get("/review", params={"thread": thread, "interrupt": review.interrupt_id})


def logged_in(graph: Any, name: str = "alice", **options: Any) -> TestClient:
    client = client_for(graph, **options)
    client.app_graph = graph  # type: ignore[attr-defined]
    assert log_in(client, name).status_code == 303
    return client


def decide(client: TestClient, page: Any, decision: str, **fields: str) -> Any:
    [review] = pending(client.app_graph.checkpointer, thread_id=fields.pop("thread", "run-0"))
    data = {
        "csrf": csrf_of(page.text),
        "thread": review.thread_id,
        "interrupt": review.interrupt_id,
        "decision": decision,
        **fields,
    }
    return client.post("/decide", data=data)


# -- no token, no page ----------------------------------------------------------------------


def test_every_page_needs_a_login(graph: Any) -> None:
    client = client_for(graph)
    for path in ("/", "/review?thread=run-0&interrupt=x"):
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    refused = client.post("/decide", data={"thread": "run-0", "decision": "approve"})
    assert refused.status_code == 403
    assert len(pending(graph.checkpointer)) == 1


def test_a_wrong_token_gives_no_session(graph: Any) -> None:
    client = client_for(graph)
    refused = log_in(client, token="not-the-token-at-all")
    assert refused.status_code == 403
    assert "Wrong access token" in refused.text
    assert client.get("/").status_code == 303  # still not logged in


def test_the_token_becomes_an_httponly_samesite_strict_session_cookie(graph: Any) -> None:
    client = client_for(graph)
    form = client.get("/login")
    before = client.cookies.get(SESSION_COOKIE)
    done = client.post("/login", data={"csrf": csrf_of(form.text), "token": TOKEN, "name": "a"})
    assert (done.status_code, done.headers["location"]) == (303, "/")
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert TOKEN not in cookie  # the cookie holds a session id, never the token
    assert client.cookies.get(SESSION_COOKIE) != before  # a new id at login
    assert client.get("/").status_code == 200


def test_logging_out_ends_the_session(graph: Any) -> None:
    client = logged_in(graph)
    page = client.get("/")
    assert client.post("/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert client.get("/").status_code == 303


# -- CSRF ----------------------------------------------------------------------------------


def test_the_login_form_needs_its_csrf_token(graph: Any) -> None:
    client = client_for(graph)
    client.get("/login")
    refused = client.post("/login", data={"csrf": "forged", "token": TOKEN, "name": "a"})
    assert refused.status_code == 403
    assert client.get("/").status_code == 303


@pytest.mark.parametrize("csrf", ["forged", "", None])
def test_a_bad_csrf_token_is_refused_and_changes_nothing(graph: Any, csrf: str | None) -> None:
    client = logged_in(graph)
    page = detail(client)
    [review] = pending(graph.checkpointer)
    data = {"thread": "run-0", "interrupt": review.interrupt_id, "decision": "approve"}
    if csrf is not None:
        data["csrf"] = csrf
    refused = client.post("/decide", data=data)
    assert refused.status_code == 403
    assert "did not come from this page" in refused.text
    assert pending(graph.checkpointer) == [review]
    assert history(graph.checkpointer, "run-0") == []
    assert page.status_code == 200


def test_another_sessions_csrf_token_is_refused(graph: Any) -> None:
    alice, mallory = logged_in(graph, "alice"), logged_in(graph, "mallory")
    refused = decide(alice, detail(mallory), "approve")
    assert refused.status_code == 403
    assert len(pending(graph.checkpointer)) == 1


def test_a_form_posted_from_another_origin_is_refused(graph: Any) -> None:
    client = logged_in(graph)
    page = detail(client)
    client.headers["origin"] = "http://evil.example"
    refused = decide(client, page, "approve")
    assert (refused.status_code, "another site" in refused.text) == (403, True)
    assert len(pending(graph.checkpointer)) == 1


# -- escaping, the reviewer's name, errors ---------------------------------------------------


def test_every_value_is_escaped(saver: SqliteSaver) -> None:
    agent = script_agent(saver)
    agent.invoke(request(0), {"configurable": {"thread_id": EVIL_THREAD}})
    client = logged_in(agent, EVIL_NAME)
    listing = client.get("/")
    page = detail(client, EVIL_THREAD)
    for html in (listing.text, page.text):
        assert "<script>" not in html
        assert "<img" not in html
        assert "&lt;script&gt;alert(&#34;thread&#34;)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the reviewer's name
    assert "All tests pass. &lt;script&gt;alert(&#34;answer&#34;)&lt;/script&gt;" in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # The answer edited in the text area comes back exactly as the reviewer wrote it.
    done = decide(client, page, "edit", thread=EVIL_THREAD, answer=f"Fixed {SCRIPT}")
    assert done.status_code == 200
    assert "<script>" not in done.text
    state = agent.get_state({"configurable": {"thread_id": EVIL_THREAD}}).values
    assert state["messages"][-1].content == f"Fixed {SCRIPT}"


def test_the_reviewer_is_the_session_never_the_form(graph: Any) -> None:
    client = logged_in(graph, "alice")
    done = decide(client, detail(client), "reject", reviewer="mallory", message="rigged")
    assert done.status_code == 200
    [claim] = history(graph.checkpointer, "run-0")
    assert (claim.reviewer, claim.decision) == ("alice", "reject")


class _Broken:
    """The paused graph, failing with an internal error when resumed."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.checkpointer = graph.checkpointer

    def get_state(self, config: Any) -> Any:
        return self.graph.get_state(config)

    def invoke(self, value: Any, config: Any) -> Any:
        raise RuntimeError("secret internals at /srv/app/agent.py line 42")


def test_no_stack_trace_reaches_the_page(graph: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = logged_in(_Broken(graph))
    client.app_graph = graph  # type: ignore[attr-defined]
    with caplog.at_level("ERROR", logger="confessional.review.web"):
        failed = decide(client, detail(client), "approve")
    assert failed.status_code == 500
    for leak in ("Traceback", "secret internals", "agent.py", "RuntimeError"):
        assert leak not in failed.text
    assert "Something went wrong" in failed.text
    assert "secret internals" in caplog.text  # the operator still sees it
    assert len(pending(graph.checkpointer)) == 1  # the claim was given back


def test_a_malformed_form_gets_a_short_refusal(graph: Any) -> None:
    client = logged_in(graph)
    page = detail(client)
    for fields in ({"decision": "respond"}, {"decision": "edit", "answer": "  "}):
        data = {"csrf": csrf_of(page.text), "thread": "run-0", "interrupt": "x", **fields}
        refused = client.post("/decide", data=data)
        assert refused.status_code == 400
        assert "Traceback" not in refused.text


def test_a_rejection_that_halts_the_run_is_reported_as_applied(saver: SqliteSaver) -> None:
    policy = ConfessionPolicy(on_violation="interrupt", reject_action="error")
    agent = create_agent(
        cheating_agent(),
        example_tools(),
        middleware=[ConfessionMiddleware(policy=policy)],
        checkpointer=saver,
    )
    agent.invoke(request(0), {"configurable": {"thread_id": "run-0"}})
    client = logged_in(agent)
    done = decide(client, detail(client), "reject")
    assert done.status_code == 200
    assert "the run was halted" in done.text
    assert [c.status for c in history(saver, "run-0")] == ["applied"]


# -- two browsers, one review ---------------------------------------------------------------


def test_two_reviewers_racing_on_one_review(graph: Any) -> None:
    alice, bob = logged_in(graph, "alice"), logged_in(graph, "bob")
    alice_page, bob_page = detail(alice), detail(bob)  # both read it before deciding
    [review] = pending(graph.checkpointer)
    first = decide(alice, alice_page, "approve")
    assert first.status_code == 200
    assert "resumed; the run finished" in first.text
    data = {
        "csrf": csrf_of(bob_page.text),
        "thread": "run-0",
        "interrupt": review.interrupt_id,
        "decision": "reject",
    }
    late = bob.post("/decide", data=data)
    assert late.status_code == 409
    [claim] = history(graph.checkpointer, "run-0")
    assert f"Already resolved by alice at {claim.claimed_at}." in late.text
    state = graph.get_state({"configurable": {"thread_id": "run-0"}}).values
    assert state["messages"][-1].content == CHEAT_ANSWER


def test_a_decision_on_the_page_is_recorded_on_the_trace(
    saver: SqliteSaver, tracer_provider: Any, span_exporter: Any
) -> None:
    telemetry = ConfessionTelemetry(tracer_provider=tracer_provider, capture_content=False)
    agent = create_agent(
        cheating_agent(),
        example_tools(),
        middleware=[
            ConfessionMiddleware(
                policy=ConfessionPolicy(on_violation="interrupt"), telemetry=telemetry
            )
        ],
        checkpointer=saver,
    )
    agent.invoke(request(0), {"configurable": {"thread_id": "run-0"}})
    [confession] = [
        s for s in span_exporter.get_finished_spans() if semconv.CONFESSION_VERDICT in s.attributes
    ]
    client = logged_in(agent, "alice")
    assert decide(client, detail(client), "edit", answer="Tests still fail.").status_code == 200
    [span] = [
        s for s in span_exporter.get_finished_spans() if s.name == semconv.REVIEW_DECISION_SPAN_NAME
    ]
    assert span.parent.span_id == confession.context.span_id
    assert span.attributes[semconv.CONFESSION_REVIEW_DECISION] == "edit"
    assert span.attributes[semconv.CONFESSION_REVIEW_REVIEWER] == "alice"


# -- what the pages show ---------------------------------------------------------------------


def test_the_list_filters_by_thread_and_sorts_by_age(graph: Any) -> None:
    for run in (2, 4):
        graph.invoke(request(run), {"configurable": {"thread_id": f"run-{run}"}})
    client = logged_in(graph)
    oldest = client.get("/").text
    assert oldest.index("run-0") < oldest.index("run-2") < oldest.index("run-4")
    newest = client.get("/", params={"sort": "newest"}).text
    assert newest.index("run-4") < newest.index("run-2") < newest.index("run-0")
    only = client.get("/", params={"thread": "run-2"}).text
    assert "run-2" in only
    assert "run-4" not in only
    for column in ("Paused at", "Grade", "Verdict", "Reasons", "grade 2 &lt;= 3", "halt"):
        assert column in oldest


def test_the_detail_page_shows_the_confession(graph: Any) -> None:
    page = detail(logged_in(graph)).text
    for shown in (
        "not complied claimed compliance",  # a label of the confession table
        SHORTCUT,
        "unverified_claim",  # an audit finding
        "final_answer",  # its evidence
        CHEAT_ANSWER,  # the withheld answer, prefilled in the edit box too
        "Transcript",
        "Make the speed test pass. run=cheat-0",
    ):
        assert shown in page, shown
    assert page.count(CHEAT_ANSWER) >= 2


def test_without_content_capture_the_models_words_stay_hidden(graph: Any) -> None:
    page = detail(logged_in(graph, content=False)).text
    for hidden in (CHEAT_ANSWER, SHORTCUT, "Transcript", "run=cheat-0"):
        assert hidden not in page, hidden
    assert "not complied claimed compliance" in page  # labels are not content
    assert "Content capture is off" in page


def test_the_decision_history_records_who_decided(graph: Any) -> None:
    client = logged_in(graph, "alice")
    decide(client, detail(client), "reject", message="rigged timer")
    page = client.get("/review", params={"thread": "run-0", "interrupt": "gone"})
    assert page.status_code == 404
    assert "No pending review" in page.text
    assert "alice" in page.text
    assert "reject" in page.text


# -- serving ----------------------------------------------------------------------------------


def test_serve_binds_to_loopback_by_default() -> None:
    args = build_parser().parse_args(
        ["review", "serve", "--checkpointer", "sqlite:///x", "--graph", "m:g"]
    )
    assert (args.host, args.token_file) == ("127.0.0.1", None)


def test_a_short_token_and_a_bad_session_lifetime_are_refused(graph: Any) -> None:
    with pytest.raises(ValueError, match="16 characters"):
        create_app(checkpointer=graph.checkpointer, graph=graph, token="short")
    for ttl in (0, -1, True, "8h"):
        with pytest.raises(ValueError, match="session_ttl_s"):
            create_app(checkpointer=graph.checkpointer, graph=graph, token=TOKEN, session_ttl_s=ttl)


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.delitem(sys.modules, "confessional.review.web", raising=False)
    with pytest.raises(MissingExtraError, match=r"confessional\[review-web\]"):
        importlib.import_module("confessional.review.web")
