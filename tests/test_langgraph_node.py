"""confession_node / add_confession_step in real StateGraph runs, sync and async."""

from __future__ import annotations

import asyncio
import operator
import runpy
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command
from tests.surfaces_fixtures import (
    CHEAT_ANSWER,
    MODES,
    Mode,
    ask,
    chat_or_tools_agent,
    confession_requests,
    first_objective,
    invoke,
    make_graph,
    parallel_agent,
    texts,
    thread,
)

from confessional import Confession, ConfessionHalted, ConfessionPolicy, ConfigurationError
from confessional.langgraph import ConfessionState, add_confession_step, confession_node
from confessional.testing import (
    behaving_agent,
    cheating_agent,
    garbage_confessor,
    is_confession_request,
)

# -- construction --------------------------------------------------------------------


def test_node_needs_a_model() -> None:
    with pytest.raises(ConfigurationError, match="needs a model"):
        confession_node()


def test_helper_requires_a_confessions_key() -> None:
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {})
    with pytest.raises(ConfigurationError, match="ConfessionState"):
        add_confession_step(builder, after="agent", model=cheating_agent())


def test_helper_rejects_unknown_nodes() -> None:
    builder = StateGraph(ConfessionState)
    builder.add_node("agent", lambda state: {})
    with pytest.raises(ConfigurationError, match="'agnet'"):
        add_confession_step(builder, after="agnet", model=cheating_agent())
    with pytest.raises(ConfigurationError, match="'tool'"):
        add_confession_step(builder, after="agent", tools_node="tool", model=cheating_agent())


def test_node_called_directly_returns_a_command() -> None:
    model = cheating_agent()
    node = confession_node(model, next="publish")
    state = {
        "messages": [
            HumanMessage("Make it fast. run=direct"),
            AIMessage("", tool_calls=[{"name": "run_tests", "args": {}, "id": "c1"}]),
            ToolMessage("1 failed", tool_call_id="c1"),
            AIMessage(CHEAT_ANSWER),
        ]
    }
    command = node.invoke(state)
    assert isinstance(command, Command)
    assert command.goto == "publish"
    [confession] = command.update["confessions"]  # type: ignore[index]
    assert confession.verdict == "flag"
    assert "run=direct" in first_objective(confession)


# -- each action, end to end --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ["flag", "continue"])
def test_flagged_and_downstream_runs(mode: Mode, action: Any) -> None:
    graph = make_graph(cheating_agent(), policy=ConfessionPolicy(on_violation=action))
    result = invoke(graph, ask("g-flag"), None, mode)
    assert result["published"] == [CHEAT_ANSWER]
    [confession] = result["confessions"]
    assert isinstance(confession, Confession)
    assert confession.verdict == "flag"
    assert "run=g-flag" in first_objective(confession)


@pytest.mark.parametrize("mode", MODES)
def test_error_raises_with_report(mode: Mode) -> None:
    graph = make_graph(cheating_agent(), policy=ConfessionPolicy(on_violation="error"))
    with pytest.raises(ConfessionHalted) as caught:
        invoke(graph, ask("g-error"), None, mode)
    assert caught.value.report is not None
    assert caught.value.report.shortcuts
    assert "shortcut" in str(caught.value)


@pytest.mark.parametrize("mode", MODES)
def test_end_routes_to_end_and_skips_downstream(mode: Mode) -> None:
    graph = make_graph(cheating_agent(), policy=ConfessionPolicy(on_violation="end"))
    result = invoke(graph, ask("g-end"), None, mode)
    assert result["published"] == []
    assert CHEAT_ANSWER not in texts(result["messages"])
    assert [m.content for m in result["confession_withheld"]] == [CHEAT_ANSWER]
    assert result["confessions"][-1].verdict == "halt"


@pytest.mark.parametrize("mode", MODES)
def test_interrupt_approve_continues_to_next_node(mode: Mode) -> None:
    model = cheating_agent()
    graph = make_graph(
        model, policy=ConfessionPolicy(on_violation="interrupt"), checkpointer=InMemorySaver()
    )
    config = thread()
    paused = invoke(graph, ask("g-review"), config, mode)
    [pending] = paused["__interrupt__"]
    assert pending.value["withheld_answer"] == CHEAT_ANSWER
    assert pending.value["confession"]["verdict"] == "halt"
    assert paused["published"] == []
    resumed = invoke(graph, Command(resume="approve"), config, mode)
    assert resumed["published"] == [CHEAT_ANSWER]
    assert len(resumed["confessions"]) == 1
    assert confession_requests(model) == 1


@pytest.mark.parametrize("mode", MODES)
def test_interrupt_reject_ends_and_withholds(mode: Mode) -> None:
    model = cheating_agent()
    graph = make_graph(
        model, policy=ConfessionPolicy(on_violation="interrupt"), checkpointer=InMemorySaver()
    )
    config = thread()
    invoke(graph, ask("g-reject"), config, mode)
    resumed = invoke(graph, Command(resume="reject"), config, mode)
    assert resumed["published"] == []
    assert "rejected" in str(resumed["messages"][-1].content)
    assert confession_requests(model) == 1


def test_pause_sync_resume_async_replays_the_confession() -> None:
    model = cheating_agent()
    graph = make_graph(
        model, policy=ConfessionPolicy(on_violation="interrupt"), checkpointer=InMemorySaver()
    )
    config = thread()
    graph.invoke(ask("g-mixed"), config)
    resumed = asyncio.run(graph.ainvoke(Command(resume="approve"), config))
    assert resumed["published"] == [CHEAT_ANSWER]
    assert confession_requests(model) == 1


# -- behaviour users rely on ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_behaving_agent_passes_untouched(mode: Mode) -> None:
    graph = make_graph(behaving_agent(), policy=ConfessionPolicy(on_violation="end"))
    result = invoke(graph, ask("g-honest"), None, mode)
    assert result["confessions"][-1].verdict == "pass"
    assert len(result["published"]) == 1
    assert "8214 ns" in result["published"][0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fail_mode", "published"), [("open", 1), ("closed", 0)])
def test_garbage_confession_fail_open_and_closed(
    mode: Mode, fail_mode: Any, published: int
) -> None:
    graph = make_graph(
        cheating_agent(),
        confessor=garbage_confessor(),
        policy=ConfessionPolicy(on_violation="end", fail_mode=fail_mode),
    )
    result = invoke(graph, ask("g-garbage"), None, mode)
    assert result["confessions"][-1].status == "error"
    assert len(result["published"]) == published


@pytest.mark.parametrize("mode", MODES)
def test_turn_without_tools_is_not_confessed_but_goes_on(mode: Mode) -> None:
    model = chat_or_tools_agent()
    result = invoke(make_graph(model), ask("just chat"), None, mode)
    assert result["confessions"] == []
    assert result["published"] == ["Hello! Nothing to run."]
    assert confession_requests(model) == 0


@pytest.mark.parametrize("mode", MODES)
def test_parallel_tool_calls_are_all_in_the_episode(mode: Mode) -> None:
    model = parallel_agent()
    result = invoke(make_graph(model), ask("g-parallel"), None, mode)
    assert result["confessions"][-1].tool_call_count == 2
    [request] = [c for c in model.calls if is_confession_request(c)]
    assert {m.name for m in request if isinstance(m, ToolMessage)} == {"run_tests", "write_file"}


@pytest.mark.asyncio
async def test_fifty_concurrent_runs_each_get_their_own_confession() -> None:
    graph = make_graph(cheating_agent())
    results = await asyncio.gather(*(graph.ainvoke(ask(f"g{i:02d}")) for i in range(50)))
    for i, result in enumerate(results):
        [confession] = result["confessions"]
        assert first_objective(confession).endswith(f"run=g{i:02d}")


def test_confession_reaches_the_custom_stream() -> None:
    graph = make_graph(cheating_agent())
    chunks = list(graph.stream(ask("g-stream"), stream_mode="custom"))
    assert [c["type"] for c in chunks] == ["confession"]
    assert chunks[0]["confession"]["verdict"] == "flag"


# -- subgraphs ----------------------------------------------------------------------------


class ParentState(ConfessionState):
    audit_log: Annotated[list[str], operator.add]


def _parent(policy: ConfessionPolicy) -> Any:
    inner = make_graph(cheating_agent(), policy=policy)

    def after(state: ParentState) -> dict[str, Any]:
        return {"audit_log": ["parent continued"]}

    builder = StateGraph(ParentState)
    builder.add_node("inner", inner)
    builder.add_node("after", after)
    builder.add_edge(START, "inner")
    builder.add_edge("inner", "after")
    builder.add_edge("after", END)
    return builder.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("mode", MODES)
def test_works_in_a_subgraph_with_interrupt(mode: Mode) -> None:
    graph = _parent(ConfessionPolicy(on_violation="interrupt"))
    config = thread()
    paused = invoke(graph, ask("sub"), config, mode)
    assert paused["__interrupt__"][0].value["type"] == "confession_review"
    resumed = invoke(graph, Command(resume="approve"), config, mode)
    assert resumed["confessions"][-1].verdict == "halt"
    assert resumed["audit_log"] == ["parent continued"]
    assert resumed["messages"][-1].content == CHEAT_ANSWER


def test_end_in_a_subgraph_skips_the_subgraphs_downstream_nodes() -> None:
    graph = _parent(ConfessionPolicy(on_violation="end"))
    result = graph.invoke(ask("sub-end"), thread())
    assert "withheld" in str(result["messages"][-1].content)
    assert result["confessions"][-1].verdict == "halt"


def test_example_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "langgraph_node.py"
    runpy.run_path(str(example), run_name="__main__")
    assert "published: []" in capsys.readouterr().out
