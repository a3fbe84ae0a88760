"""Real ``ChatOpenAI`` and ``ChatAnthropic`` against the validating stub, through create_agent.

The provider matrix (provider x output mode x variant) runs the whole product: the agent's
tool loop, the ConfessionMiddleware, the confession call replaying the agent's request, and
the parsed report. Every cell must see zero 4xx responses and a parsed report. The replay
tests compare the confession request's JSON with the agent's last request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain.agents import create_agent

from confessional import Confessor
from confessional.langchain import ConfessionMiddleware
from provider_stub import Reply, running_stub
from provider_stub.harness import (
    HONEST,
    PROVIDERS,
    SYSTEM_PROMPT,
    TASK,
    Script,
    agent_requests,
    confession_requests,
    dumps,
    make_model,
    make_tools,
)

MODES = ("auto", "structured", "text")
VARIANTS = (
    "plain",
    "thinking",
    "parallel",
    "retry",
    "truncated",
    "off_enum",
    "streaming",
    "async",
)
RETRIED = frozenset({"retry", "truncated", "off_enum"})
FINAL_ANSWER = "Done. All tests pass."


def _settings(provider: str, variant: str) -> dict[str, Any]:
    if variant == "streaming":
        return {"streaming": True}
    if variant == "thinking":
        if provider == "anthropic":
            return {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 4096}
        return {"model": "o4-mini", "reasoning_effort": "low"}  # OpenAI's reasoning models
    return {"temperature": 0.2}


def _script(provider: str, variant: str) -> Script:
    thinking = (
        ["The user wants the test to pass; let me run it first."]
        if variant == "thinking" and provider == "anthropic"
        else []
    )
    if variant == "parallel":
        first = Reply.tool_calls(
            [("run_tests", {"target": "speed"}), ("write_file", {"path": "a.py", "content": "x"})]
        )
    else:
        first = Reply.tool_call("run_tests", {"target": "speed"}, thinking=thinking)
    agent = [first, Reply.text(FINAL_ANSWER, thinking=thinking)]
    good = Reply.json(HONEST, thinking=thinking)
    if variant == "retry":
        confession = [Reply.text("Sure! I ran the tests and then finished the task."), good]
    elif variant == "truncated":
        confession = [Reply.truncated(dumps(HONEST)[:150]), good]
    elif variant == "off_enum":
        bad = json.loads(dumps(HONEST))
        bad["compliance_analysis"][0]["compliance"] = "mostly_fine"
        confession = [Reply.json(bad), good]
    else:
        confession = [good]
    return Script(agent, confession)


def _run(agent: Any, variant: str) -> dict[str, Any]:
    state = {"messages": [{"role": "user", "content": TASK}]}
    if variant == "async":
        return asyncio.run(agent.ainvoke(state))  # type: ignore[no-any-return]
    return agent.invoke(state)  # type: ignore[no-any-return]


def _agent(model: Any, output_mode: str) -> Any:
    confessor = Confessor(output_mode=output_mode)  # type: ignore[arg-type]
    middleware = ConfessionMiddleware(confessor=confessor)
    return create_agent(model, make_tools(), system_prompt=SYSTEM_PROMPT, middleware=[middleware])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("output_mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_matrix(provider: str, output_mode: str, variant: str) -> None:
    script = _script(provider, variant)
    with running_stub(script) as stub:
        model = make_model(stub, provider, **_settings(provider, variant))  # type: ignore[arg-type]
        state = _run(_agent(model, output_mode), variant)
    assert stub.rejected() == []  # zero 4xx: every request is one the real API accepts
    assert [e.status for e in stub.requests()] == [200] * len(stub.requests())
    (confession,) = state["confessions"]
    assert confession.status == "ok", confession.error
    assert confession.report is not None
    assert confession.report.overall_compliance_grade == 2
    assert confession.verdict == "flag"
    calls = confession_requests(stub)
    assert len(calls) == (2 if variant in RETRIED else 1)
    if variant in RETRIED:
        retry = calls[1].body["messages"]
        assert "could not be used" in json.dumps(retry[-1])
    if variant == "parallel":
        assert confession.tool_call_count == 2
    assert not script.agent  # every scripted reply was used
    assert not script.confession


def _params(body: dict[str, Any], *ignored: str) -> dict[str, Any]:
    skip = {"messages", "tools", "system", "tool_choice", "stream", "stream_options", *ignored}
    return {key: value for key, value in body.items() if key not in skip}


@pytest.mark.parametrize("output_mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_confession_request_is_the_agents_last_request_plus_one_message(
    provider: str, output_mode: str
) -> None:
    with running_stub(_script(provider, "plain")) as stub:
        model = make_model(stub, provider, temperature=0.2)  # type: ignore[arg-type]
        _run(_agent(model, output_mode), "plain")
    agent_last = agent_requests(stub)[-1].body
    (confession,) = (e.body for e in confession_requests(stub))
    sent, replayed = confession["messages"], agent_last["messages"]
    count = len(replayed)
    # The agent's messages, byte for byte, then its own final answer, then the request.
    assert dumps(sent[:count]) == dumps(replayed)
    assert len(sent) == count + 2
    assert sent[count]["role"] == "assistant"
    assert FINAL_ANSWER in json.dumps(sent[count]["content"])
    assert "CONFESSION REQUEST" in json.dumps(sent[-1]["content"])
    # The same tool definitions, byte for byte, kept bound.
    assert dumps(confession["tools"]) == dumps(agent_last["tools"])
    structured = output_mode == "structured"
    schema_field = "response_format" if provider == "openai" else "output_config"
    assert (schema_field in confession) is structured
    # Every other parameter is the agent's, tool choice included in auto (the default,
    # which keeps the providers' cache keys); the other modes set tool choice "none".
    assert _params(confession, schema_field) == _params(agent_last)
    if output_mode == "auto":
        assert confession.get("tool_choice") == agent_last.get("tool_choice")
    else:
        none = "none" if provider == "openai" else {"type": "none"}
        assert confession["tool_choice"] == none
    if provider == "openai":
        assert sent[-1]["role"] == "system"
        if structured:
            assert confession["response_format"]["json_schema"]["strict"] is True
    else:
        assert dumps(confession["system"]) == dumps(agent_last["system"])
        assert sent[-1]["role"] == "user"
    assert _params(agent_last)["temperature"] == 0.2  # the parameters compared are real ones


@pytest.mark.parametrize("provider", PROVIDERS)
def test_thinking_agent_is_replayed_with_its_signed_thinking_blocks(provider: str) -> None:
    with running_stub(_script(provider, "thinking")) as stub:
        model = make_model(stub, provider, **_settings(provider, "thinking"))  # type: ignore[arg-type]
        _run(_agent(model, "auto"), "thinking")
    agent_last = agent_requests(stub)[-1].body
    (confession,) = (e.body for e in confession_requests(stub))
    count = len(agent_last["messages"])
    assert dumps(confession["messages"][:count]) == dumps(agent_last["messages"])
    if provider == "anthropic":
        assert confession["thinking"] == agent_last["thinking"]
        replayed = json.dumps(confession["messages"])
        assert '"type": "thinking"' in replayed  # the stub checked each signature
    else:
        assert confession["reasoning_effort"] == agent_last["reasoning_effort"] == "low"
