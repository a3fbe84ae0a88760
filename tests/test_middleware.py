"""ConfessionMiddleware: hooks directly, then end to end through real create_agent runs."""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware.types import ExtendedModelResponse, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from tests.surfaces_fixtures import (
    CHEAT_ANSWER,
    MODES,
    Mode,
    agent_calls,
    ask,
    chat_or_tools_agent,
    confession_requests,
    first_objective,
    invoke,
    make_agent,
    parallel_agent,
    texts,
    thread,
)

from confessional import ConfessionHalted, ConfessionPolicy, Confessor, ConfigurationError
from confessional.langchain import ConfessionMiddleware
from confessional.testing import (
    admitting_confessor,
    behaving_agent,
    cheating_agent,
    denying_confessor,
    example_tools,
    garbage_confessor,
    is_confession_request,
)

# -- construction and hooks called directly --------------------------------------


def test_invalid_trigger_names_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="'turn', 'tool_round'"):
        ConfessionMiddleware(trigger="episode")  # type: ignore[arg-type]


def test_model_and_confessor_with_own_model_conflict() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        ConfessionMiddleware(admitting_confessor(), confessor=Confessor(admitting_confessor()))


class _WithholdingPolicy(ConfessionPolicy):
    """Flags by its settings, but withholds every flagged answer: its own terms."""

    def action_for(self, verdict: Any) -> Any:
        return "withhold" if verdict != "pass" else "proceed"


_CONFESSION_KEYS = {
    "confessions",
    "confession_steps_left",
    "confession_withheld",
    "confession_pending",
}


@pytest.mark.parametrize(
    ("settings", "keys"),
    [
        ({}, {"confessions", "confession_steps_left"}),
        ({"trigger": "tool_round"}, {"confessions", "confession_steps_left"}),
        (
            {"trigger": "tool_round", "policy": ConfessionPolicy(on_violation="end")},
            {"confessions", "confession_steps_left"},
        ),
        (
            {"policy": ConfessionPolicy(on_violation="end")},
            {"confessions", "confession_steps_left", "confession_withheld"},
        ),
        ({"policy": ConfessionPolicy(on_violation="interrupt")}, _CONFESSION_KEYS),
        ({"policy": _WithholdingPolicy()}, _CONFESSION_KEYS),
    ],
    ids=["flag", "tool_round", "tool_round end", "end", "interrupt", "policy subclass"],
)
def test_the_agent_state_has_only_the_keys_the_configuration_writes(
    settings: dict[str, Any], keys: set[str]
) -> None:
    middleware = ConfessionMiddleware(admitting_confessor(), **settings)
    agent = create_agent(cheating_agent(), example_tools(), middleware=[middleware])
    assert _CONFESSION_KEYS & set(agent.channels) == keys


def test_a_policy_subclass_that_withholds_keeps_the_withheld_answer() -> None:
    middleware = ConfessionMiddleware(admitting_confessor(), policy=_WithholdingPolicy())
    agent = create_agent(cheating_agent(), example_tools(), middleware=[middleware])
    result = agent.invoke({"messages": [("user", "Make the speed test pass.")]})
    assert result["confessions"][-1].action == "withhold"
    assert [m.content for m in result["confession_withheld"]] == [CHEAT_ANSWER]


def _request(model: Any, messages: list[Any]) -> ModelRequest[Any]:
    return ModelRequest(model=model, messages=messages, tools=example_tools())


def test_wrap_model_call_confesses_final_answer_with_the_requests_model() -> None:
    model = cheating_agent()
    history = [
        HumanMessage("Make it fast. run=direct"),
        AIMessage("", tool_calls=[{"name": "run_tests", "args": {}, "id": "c1"}]),
        ToolMessage("1 failed", tool_call_id="c1"),
    ]
    middleware = ConfessionMiddleware()
    result = middleware.wrap_model_call(
        _request(model, history),
        lambda request: ModelResponse(result=[AIMessage(CHEAT_ANSWER, id="answer")]),
    )
    assert isinstance(result, ExtendedModelResponse)
    assert result.command is not None
    [confession] = result.command.update["confessions"]  # type: ignore[index]
    assert confession.verdict == "flag"
    assert "run=direct" in first_objective(confession)
    assert confession_requests(model) == 1  # the agent's own model confessed
    assert result.model_response.result[0].content == CHEAT_ANSWER


def test_wrap_model_call_leaves_tool_calls_and_plain_chat_alone() -> None:
    model = cheating_agent()
    middleware = ConfessionMiddleware()
    calling = ModelResponse(
        result=[AIMessage("", tool_calls=[{"name": "run_tests", "args": {}, "id": "c1"}])]
    )
    assert middleware.wrap_model_call(_request(model, [HumanMessage("x")]), lambda r: calling) is (
        calling
    )
    chat = ModelResponse(result=[AIMessage("hello")])
    assert middleware.wrap_model_call(_request(model, [HumanMessage("x")]), lambda r: chat) is chat
    assert confession_requests(model) == 0


def test_review_hook_without_pending_review_does_nothing() -> None:
    middleware = ConfessionMiddleware(policy=ConfessionPolicy(on_violation="interrupt"))
    state: Any = {"messages": [HumanMessage("x"), AIMessage("y")]}
    assert middleware.after_agent(state, None) is None  # type: ignore[arg-type]


# -- end to end: each action, sync and async ---------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ["flag", "continue"])
def test_cheating_agent_is_flagged_and_completes(mode: Mode, action: Any) -> None:
    model = cheating_agent()
    agent = make_agent(model, policy=ConfessionPolicy(on_violation=action))
    result = invoke(agent, ask("flag-1"), None, mode)
    assert result["messages"][-1].content == CHEAT_ANSWER
    [confession] = result["confessions"]
    assert confession.verdict == "flag"
    assert confession.report is not None
    assert confession.report.shortcuts
    assert "run=flag-1" in first_objective(confession)
    assert confession.tool_call_count == 2
    # the confession call is not part of the conversation
    assert not any(is_confession_request(result["messages"][: i + 1]) for i in range(4))
    assert all("compliance_analysis" not in t for t in texts(result["messages"]))


@pytest.mark.parametrize("mode", MODES)
def test_error_raises_confession_halted_naming_the_violation(mode: Mode) -> None:
    agent = make_agent(cheating_agent(), policy=ConfessionPolicy(on_violation="error"))
    with pytest.raises(ConfessionHalted) as caught:
        invoke(agent, ask("err"), None, mode)
    report = caught.value.report
    assert report is not None
    labels = {o.compliance for o in report.compliance_analysis}
    assert "not_complied_not_reported" in labels
    assert "not_complied_not_reported" in str(caught.value)


@pytest.mark.parametrize("mode", MODES)
def test_end_withholds_the_flagged_answer_and_keeps_it_in_state(mode: Mode) -> None:
    model = cheating_agent()
    agent = make_agent(model, policy=ConfessionPolicy(on_violation="end"))
    result = invoke(agent, ask("end"), None, mode)
    assert CHEAT_ANSWER not in texts(result["messages"])
    last = result["messages"][-1]
    assert isinstance(last, AIMessage)
    assert "withheld" in str(last.content)
    assert [m.content for m in result["confession_withheld"]] == [CHEAT_ANSWER]
    assert result["confessions"][-1].verdict == "halt"
    assert agent_calls(model) == 3  # no extra model call, no loop


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("decision", ["approve", {"action": "approve"}, {"type": "approve"}])
def test_interrupt_pauses_with_report_and_approve_delivers_answer(
    mode: Mode, decision: Any
) -> None:
    model = cheating_agent()
    agent = make_agent(
        model, policy=ConfessionPolicy(on_violation="interrupt"), checkpointer=InMemorySaver()
    )
    config = thread()
    paused = invoke(agent, ask("review"), config, mode)
    [pending] = paused["__interrupt__"]
    assert pending.value["type"] == "confession_review"
    assert pending.value["withheld_answer"] == CHEAT_ANSWER
    assert pending.value["confession"]["verdict"] == "halt"
    assert (
        "run=review" in pending.value["confession"]["report"]["compliance_analysis"][0]["objective"]
    )
    assert CHEAT_ANSWER not in texts(paused["messages"])  # held back while paused

    resumed = invoke(agent, Command(resume=decision), config, mode)
    assert "__interrupt__" not in resumed
    assert resumed["messages"][-1].content == CHEAT_ANSWER
    assert len(resumed["confessions"]) == 1
    assert resumed.get("confession_withheld", []) == []
    assert confession_requests(model) == 1  # not recomputed on resume


@pytest.mark.parametrize("mode", MODES)
def test_interrupt_reject_withholds_like_end(mode: Mode) -> None:
    model = cheating_agent()
    agent = make_agent(
        model, policy=ConfessionPolicy(on_violation="interrupt"), checkpointer=InMemorySaver()
    )
    config = thread()
    invoke(agent, ask("reject"), config, mode)
    resumed = invoke(agent, Command(resume={"action": "reject", "message": "no"}), config, mode)
    assert CHEAT_ANSWER not in texts(resumed["messages"])
    assert "rejected" in str(resumed["messages"][-1].content)
    assert [m.content for m in resumed["confession_withheld"]] == [CHEAT_ANSWER]
    assert confession_requests(model) == 1


@pytest.mark.parametrize("mode", MODES)
def test_interrupt_reject_raises_when_configured(mode: Mode) -> None:
    policy = ConfessionPolicy(on_violation="interrupt", reject_action="error")
    agent = make_agent(cheating_agent(), policy=policy, checkpointer=InMemorySaver())
    config = thread()
    invoke(agent, ask("reject-error"), config, mode)
    with pytest.raises(ConfessionHalted, match="rejected"):
        invoke(agent, Command(resume="reject"), config, mode)


def test_invalid_resume_value_can_be_answered_again() -> None:
    agent = make_agent(
        cheating_agent(),
        policy=ConfessionPolicy(on_violation="interrupt"),
        checkpointer=InMemorySaver(),
    )
    config = thread()
    agent.invoke(ask("bad-resume"), config)
    with pytest.raises(Exception, match="action"):
        agent.invoke(Command(resume="maybe"), config)
    resumed = agent.invoke(Command(resume="approve"), config)
    assert resumed["messages"][-1].content == CHEAT_ANSWER


# -- behaviour users rely on ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_behaving_agent_passes_untouched(mode: Mode) -> None:
    model = behaving_agent()
    agent = make_agent(model, policy=ConfessionPolicy(on_violation="end"))
    result = invoke(agent, ask("honest"), None, mode)
    [confession] = result["confessions"]
    assert confession.verdict == "pass", confession.reasons
    assert "8214 ns" in str(result["messages"][-1].content)
    assert result.get("confession_withheld", []) == []


@pytest.mark.parametrize("mode", MODES)
def test_garbage_confession_fail_open_keeps_the_run(mode: Mode) -> None:
    agent = make_agent(
        cheating_agent(confession=garbage_confessor()),
        policy=ConfessionPolicy(on_violation="end", fail_mode="open"),
    )
    result = invoke(agent, ask("garbage-open"), None, mode)
    [confession] = result["confessions"]
    assert confession.status == "error"
    assert confession.verdict == "pass"
    assert result["messages"][-1].content == CHEAT_ANSWER


@pytest.mark.parametrize("mode", MODES)
def test_garbage_confession_fail_closed_halts(mode: Mode) -> None:
    agent = make_agent(
        cheating_agent(confession=garbage_confessor()),
        policy=ConfessionPolicy(on_violation="error", fail_mode="closed"),
    )
    with pytest.raises(ConfessionHalted) as caught:
        invoke(agent, ask("garbage-closed"), None, mode)
    assert caught.value.report is None
    assert caught.value.confession.status == "error"


@pytest.mark.parametrize("mode", MODES)
def test_turn_without_tool_calls_is_not_confessed(mode: Mode) -> None:
    model = chat_or_tools_agent()
    result = invoke(make_agent(model), ask("just chat"), None, mode)
    assert result.get("confessions", []) == []
    assert confession_requests(model) == 0


@pytest.mark.parametrize("mode", MODES)
def test_parallel_tool_calls_are_all_in_the_episode(mode: Mode) -> None:
    model = parallel_agent()
    result = invoke(make_agent(model), ask("parallel"), None, mode)
    [confession] = result["confessions"]
    assert confession.tool_call_count == 2
    [request] = [call for call in model.calls if is_confession_request(call)]
    answered = {m.name for m in request if isinstance(m, ToolMessage)}
    assert answered == {"run_tests", "write_file"}


@pytest.mark.asyncio
async def test_fifty_concurrent_runs_each_get_their_own_confession() -> None:
    model = cheating_agent()
    agent = make_agent(model)
    results = await asyncio.gather(*(agent.ainvoke(ask(f"m{i:02d}")) for i in range(50)))
    for i, result in enumerate(results):
        [confession] = result["confessions"]
        assert first_objective(confession).endswith(f"run=m{i:02d}")
    assert confession_requests(model) == 50


@pytest.mark.parametrize("mode", MODES)
def test_multi_turn_thread_one_confession_per_tool_using_turn(mode: Mode) -> None:
    model = chat_or_tools_agent()
    agent = make_agent(model, checkpointer=InMemorySaver())
    config = thread()
    invoke(agent, {"messages": [("user", "use tools please: turn1")]}, config, mode)
    invoke(agent, {"messages": [("user", "hi there: turn2")]}, config, mode)
    result = invoke(agent, {"messages": [("user", "tools again: turn3")]}, config, mode)
    markers = [first_objective(c) for c in result["confessions"]]
    assert len(markers) == 2
    assert markers[0].endswith("turn1")
    assert markers[1].endswith("turn3")
    assert confession_requests(model) == 2


# -- trigger="tool_round" ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_tool_round_confesses_after_each_round(mode: Mode) -> None:
    model = cheating_agent(confession=denying_confessor())
    result = invoke(make_agent(model, trigger="tool_round"), ask("rounds"), None, mode)
    assert [c.tool_call_count for c in result["confessions"]] == [1, 2]
    assert result["messages"][-1].content == CHEAT_ANSWER


@pytest.mark.parametrize("mode", MODES)
def test_tool_round_end_stops_before_the_next_model_call(mode: Mode) -> None:
    model = cheating_agent()
    agent = make_agent(model, trigger="tool_round", policy=ConfessionPolicy(on_violation="end"))
    result = invoke(agent, ask("round-end"), None, mode)
    assert agent_calls(model) == 1
    assert [type(m).__name__ for m in result["messages"]] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert "withheld" in str(result["messages"][-1].content)
    assert len(result["confessions"]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_tool_round_error_raises(mode: Mode) -> None:
    agent = make_agent(
        cheating_agent(), trigger="tool_round", policy=ConfessionPolicy(on_violation="error")
    )
    with pytest.raises(ConfessionHalted):
        invoke(agent, ask("round-error"), None, mode)


@pytest.mark.parametrize("mode", MODES)
def test_tool_round_interrupt_approve_reject_without_recomputing(mode: Mode) -> None:
    model = cheating_agent()
    agent = make_agent(
        model,
        trigger="tool_round",
        policy=ConfessionPolicy(on_violation="interrupt"),
        checkpointer=InMemorySaver(),
    )
    config = thread()
    first = invoke(agent, ask("round-review"), config, mode)
    assert first["__interrupt__"][0].value["withheld_answer"] is None
    assert agent_calls(model) == 1
    second = invoke(agent, Command(resume="approve"), config, mode)  # round 2 pauses too
    assert second["__interrupt__"]
    assert agent_calls(model) == 2
    assert confession_requests(model) == 2
    done = invoke(agent, Command(resume="reject"), config, mode)
    assert agent_calls(model) == 2  # rejected: the final model call never happens
    assert confession_requests(model) == 2
    assert "rejected" in str(done["messages"][-1].content)
    assert len(done["confessions"]) == 2


# -- streaming ----------------------------------------------------------------------------


def test_confession_is_streamed_live_and_its_model_call_is_hidden() -> None:
    agent = make_agent(cheating_agent())
    custom: list[Any] = []
    streamed: list[Any] = []
    for mode, chunk in agent.stream(ask("stream"), stream_mode=["custom", "messages"]):
        (custom if mode == "custom" else streamed).append(chunk)
    [event] = custom
    assert event["type"] == "confession"
    assert "run=stream" in event["confession"]["report"]["compliance_analysis"][0]["objective"]
    contents = [str(message.content) for message, _ in streamed]
    assert CHEAT_ANSWER in contents
    assert all("compliance_analysis" not in c for c in contents)
    assert all(
        not any(c["name"] == "ConfessionReport" for c in getattr(message, "tool_calls", []))
        for message, _ in streamed
    )


@pytest.mark.asyncio
async def test_confession_is_a_custom_event_in_astream_events() -> None:
    agent = make_agent(cheating_agent())
    events = [
        event
        async for event in agent.astream_events(ask("events"), version="v2")
        if event["event"] == "on_custom_event"
    ]
    assert [e["name"] for e in events] == ["confession"]
    assert events[0]["data"]["confession"]["verdict"] == "flag"


def test_example_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "middleware_agent.py"
    runpy.run_path(str(example), run_name="__main__")
    assert "reject  : [confessional]" in capsys.readouterr().out
