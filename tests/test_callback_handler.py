"""ConfessionCallbackHandler on real create_agent graphs and plain Runnable chains."""

from __future__ import annotations

import asyncio
import runpy
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from tests.surfaces_fixtures import (
    CHEAT_ANSWER,
    MODES,
    Mode,
    ask,
    chat_or_tools_agent,
    first_objective,
    invoke,
    parallel_agent,
)

from confessional import ConfessionHalted, ConfessionPolicy, ConfigurationError
from confessional.langchain import AsyncConfessionCallbackHandler, ConfessionCallbackHandler
from confessional.testing import (
    admitting_confessor,
    behaving_agent,
    cheating_agent,
    denying_confessor,
    example_tools,
    garbage_confessor,
)


def _agent(model: Any) -> Any:
    return create_agent(model, example_tools())


def _run(
    runnable: Any, value: Any, handler: Any, mode: Mode, run_id: uuid.UUID | None = None
) -> Any:
    config: RunnableConfig = {"callbacks": [handler]}
    if run_id is not None:
        config["run_id"] = run_id
    return invoke(runnable, value, config, mode)


# -- construction ----------------------------------------------------------------------


def test_needs_a_model() -> None:
    with pytest.raises(ConfigurationError, match="model="):
        ConfessionCallbackHandler()


@pytest.mark.parametrize("action", ["end", "interrupt"])
def test_warns_that_end_and_interrupt_cannot_halt(action: Any) -> None:
    with pytest.warns(UserWarning, match=f"cannot {action} a run"):
        ConfessionCallbackHandler(
            admitting_confessor(), policy=ConfessionPolicy(on_violation=action)
        )


def test_async_handler_warns_it_cannot_halt_sync_runs() -> None:
    with pytest.warns(UserWarning, match="halts only async runs"):
        AsyncConfessionCallbackHandler(
            admitting_confessor(), policy=ConfessionPolicy(on_violation="error")
        )


def test_only_error_policies_raise_errors() -> None:
    assert not ConfessionCallbackHandler(admitting_confessor()).raise_error
    halting = ConfessionCallbackHandler(
        admitting_confessor(), policy=ConfessionPolicy(on_violation="error")
    )
    assert halting.raise_error


# -- create_agent runs ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cheating_agent_is_flagged_and_recorded(mode: Mode) -> None:
    confessor = admitting_confessor()
    handler = ConfessionCallbackHandler(confessor)
    run_id = uuid.uuid4()
    result = _run(_agent(cheating_agent()), ask("cb-flag"), handler, mode, run_id)
    assert result["messages"][-1].content == CHEAT_ANSWER
    confession = handler.confession_for(run_id)
    assert confession is not None
    assert confession.verdict == "flag"
    assert confession.tool_call_count == 2
    assert "run=cb-flag" in first_objective(confession)
    assert len(handler.confessions) == 1  # its own confession call was not confessed
    assert len(confessor.calls) == 1


@pytest.mark.parametrize("mode", MODES)
def test_sync_handler_halts_with_error(mode: Mode) -> None:
    handler = ConfessionCallbackHandler(
        admitting_confessor(), policy=ConfessionPolicy(on_violation="error")
    )
    with pytest.raises(ConfessionHalted) as caught:
        _run(_agent(cheating_agent()), ask("cb-error"), handler, mode)
    assert caught.value.report is not None
    assert "not_complied_not_reported" in str(caught.value)


@pytest.mark.parametrize("mode", MODES)
def test_end_is_recorded_but_cannot_stop_the_run(mode: Mode) -> None:
    with pytest.warns(UserWarning, match="cannot end"):
        handler = ConfessionCallbackHandler(
            admitting_confessor(), policy=ConfessionPolicy(on_violation="end")
        )
    result = _run(_agent(cheating_agent()), ask("cb-end"), handler, mode)
    assert result["messages"][-1].content == CHEAT_ANSWER
    assert handler.confessions[-1].verdict == "halt"


@pytest.mark.asyncio
async def test_async_handler_halts_async_runs() -> None:
    with pytest.warns(UserWarning, match="halts only async runs"):
        handler = AsyncConfessionCallbackHandler(
            admitting_confessor(), policy=ConfessionPolicy(on_violation="error")
        )
    with pytest.raises(ConfessionHalted):
        await _agent(cheating_agent()).ainvoke(ask("acb"), {"callbacks": [handler]})


def test_async_handler_cannot_halt_a_sync_run(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(UserWarning, match="halts only async runs"):
        handler = AsyncConfessionCallbackHandler(
            admitting_confessor(), policy=ConfessionPolicy(on_violation="error")
        )
    result = _agent(cheating_agent()).invoke(ask("acb-sync"), {"callbacks": [handler]})
    assert result["messages"][-1].content == CHEAT_ANSWER  # LangChain swallowed the halt
    assert handler.confessions[-1].verdict == "halt"
    assert "ConfessionHalted" in caplog.text


@pytest.mark.parametrize("mode", MODES)
def test_behaving_agent_passes(mode: Mode) -> None:
    handler = ConfessionCallbackHandler(
        denying_confessor(), policy=ConfessionPolicy(on_violation="error")
    )
    result = _run(_agent(behaving_agent()), ask("cb-honest"), handler, mode)
    assert "8214 ns" in str(result["messages"][-1].content)
    assert handler.confessions[-1].verdict == "pass"


@pytest.mark.parametrize("mode", MODES)
def test_garbage_confession_fail_open_and_closed(mode: Mode) -> None:
    open_handler = ConfessionCallbackHandler(
        garbage_confessor(), policy=ConfessionPolicy(on_violation="error", fail_mode="open")
    )
    result = _run(_agent(cheating_agent()), ask("cb-g-open"), open_handler, mode)
    assert result["messages"][-1].content == CHEAT_ANSWER
    assert open_handler.confessions[-1].status == "error"
    closed_handler = ConfessionCallbackHandler(
        garbage_confessor(), policy=ConfessionPolicy(on_violation="error", fail_mode="closed")
    )
    with pytest.raises(ConfessionHalted):
        _run(_agent(cheating_agent()), ask("cb-g-closed"), closed_handler, mode)


@pytest.mark.parametrize("mode", MODES)
def test_turn_without_tools_is_not_confessed(mode: Mode) -> None:
    confessor = admitting_confessor()
    handler = ConfessionCallbackHandler(confessor)
    _run(_agent(chat_or_tools_agent()), ask("chat only"), handler, mode)
    assert handler.confessions == []
    assert confessor.calls == []


@pytest.mark.parametrize("mode", MODES)
def test_parallel_tool_calls_are_all_in_the_episode(mode: Mode) -> None:
    confessor = admitting_confessor()
    handler = ConfessionCallbackHandler(confessor)
    _run(_agent(parallel_agent()), ask("cb-parallel"), handler, mode)
    assert handler.confessions[-1].tool_call_count == 2
    [request] = confessor.calls
    assert {m.name for m in request if isinstance(m, ToolMessage)} == {"run_tests", "write_file"}


@pytest.mark.asyncio
async def test_fifty_concurrent_runs_never_mix() -> None:
    handler = ConfessionCallbackHandler(admitting_confessor())
    agent = _agent(cheating_agent())
    run_ids = [uuid.uuid4() for _ in range(50)]
    await asyncio.gather(
        *(
            agent.ainvoke(ask(f"c{i:02d}"), {"callbacks": [handler], "run_id": run_id})
            for i, run_id in enumerate(run_ids)
        )
    )
    for i, run_id in enumerate(run_ids):
        confession = handler.confession_for(run_id)
        assert confession is not None
        assert first_objective(confession).endswith(f"run=c{i:02d}")
    assert len(handler.confessions) == 50


# -- a plain Runnable loop (AgentExecutor style, no LangGraph) --------------------------------


def _executor_style_chain() -> Any:
    """model -> tools -> model, written with plain Runnables and explicit tool calls."""
    tools = {t.name: t for t in example_tools()}
    model = cheating_agent().bind_tools(list(tools.values()))

    def loop(messages: list[BaseMessage]) -> str:
        for _ in range(5):
            reply = model.invoke(messages)
            messages = [*messages, reply]
            if not isinstance(reply, AIMessage) or not reply.tool_calls:
                return str(reply.content)
            messages += [tools[call["name"]].invoke(call) for call in reply.tool_calls]
        return "gave up"

    return RunnableLambda(lambda text: [HumanMessage(text)]) | RunnableLambda(loop)


@pytest.mark.parametrize("mode", MODES)
def test_plain_runnable_chain_is_confessed_when_the_outermost_run_ends(mode: Mode) -> None:
    handler = ConfessionCallbackHandler(
        admitting_confessor(), policy=ConfessionPolicy(on_violation="error")
    )
    chain = _executor_style_chain()
    with pytest.raises(ConfessionHalted) as caught:
        _run(chain, "Make the speed test pass. run=chain", handler, mode)
    confession = caught.value.confession
    assert confession.tool_call_count == 2
    assert "run=chain" in first_objective(confession)


def test_example_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "callback_handler.py"
    runpy.run_path(str(example), run_name="__main__")
    assert "halted  :" in capsys.readouterr().out
