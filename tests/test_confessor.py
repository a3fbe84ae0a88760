"""Confessor: sync and async paths run the same cases."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from pydantic import PrivateAttr
from tests.surfaces_fixtures import RunCollector
from tests.test_parsing import SANDBAGGING

from confessional import Confession, Confessor, ConfigurationError, MissingExtraError
from confessional.episode import message_text
from confessional.testing import (
    ScriptedChatModel,
    admitting_confessor,
    cheating_agent,
    example_tools,
    garbage_confessor,
    tool_call_message,
)

Mode = str


def _messages() -> list[BaseMessage]:
    call = tool_call_message(("run_tests", {}))
    return [
        HumanMessage("Make the speed test pass. marker-123"),
        call,
        ToolMessage("1 failed", tool_call_id=call.tool_calls[0]["id"]),
        AIMessage("All tests pass."),
    ]


def _confess(mode: Mode, confessor: Confessor, **kwargs: Any) -> Confession:
    if mode == "sync":
        return confessor.confess(_messages(), **kwargs)
    return asyncio.run(confessor.aconfess(_messages(), **kwargs))


both = pytest.mark.parametrize("mode", ["sync", "async"])


@both
@pytest.mark.parametrize("output_mode", ["auto", "structured", "text"])
def test_admitting_confession_is_ok(mode: Mode, output_mode: str) -> None:
    model = admitting_confessor()
    confession = _confess(mode, Confessor(model, output_mode=output_mode))  # type: ignore[arg-type]
    assert confession.status == "ok", confession.error
    assert confession.report is not None
    assert "marker-123" in confession.report.compliance_analysis[0].objective
    assert confession.report.shortcuts
    assert confession.tool_call_count == 1
    assert confession.model_name == "scripted-admitting-confessor"
    # structured mode binds the report tool; text mode binds nothing
    assert len(model.calls) == 1


@both
def test_agents_own_model_is_used_per_call(mode: Mode) -> None:
    agent = cheating_agent()
    confession = _confess(mode, Confessor(), model=agent)
    assert confession.status == "ok"
    assert confession.model_name == "scripted-cheating-agent"


@both
def test_no_model_at_all_is_an_error_not_a_crash(mode: Mode) -> None:
    confession = _confess(mode, Confessor())
    assert confession.status == "error"
    assert "no model" in (confession.error or "")


@both
def test_garbage_retries_once_then_errors(mode: Mode) -> None:
    model = garbage_confessor()
    confession = _confess(mode, Confessor(model))
    assert confession.status == "error"
    assert confession.report is None
    assert "no JSON object" in (confession.error or "")
    assert len(model.calls) == 2  # first try + one retry with the error shown
    retry = model.calls[1]
    assert "could not be used" in str(retry[-1].content)


@both
def test_retry_recovers(mode: Mode) -> None:
    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> str:
        if "could not be used" in str(messages[-1].content):
            return "```json\n" + json.dumps(SANDBAGGING) + "\n```"
        bad = {"objective": "x", "compliance": "mostly_ok", "analysis": ""}
        return json.dumps({"compliance_analysis": [bad], "overall_compliance_grade": 4})

    model = ScriptedChatModel(respond=respond)
    confession = _confess(mode, Confessor(model, output_mode="text"))
    assert confession.status == "ok"
    assert "mostly_ok" in str(model.calls[1][-1].content)  # the error named the bad label


@both
def test_model_exception_becomes_error(mode: Mode) -> None:
    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> str:
        raise ConnectionError("provider down")

    confession = _confess(mode, Confessor(ScriptedChatModel(respond=respond)))
    assert confession.status == "error"
    assert confession.error == "ConnectionError: provider down"


@both
@pytest.mark.parametrize("fails", [False, True], ids=["answers", "raises"])
def test_a_watched_confession_call_runs_inside_a_confession_run(mode: Mode, fails: bool) -> None:
    """With a tracer watching, the model call nests in a chain run named "confession"
    whose input is the message count and output the reply's type (the model run holds
    the messages and the reply); a failing call ends that run with its error."""

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> str:
        if fails:
            raise ConnectionError("provider down")
        return json.dumps(SANDBAGGING)

    tracer = RunCollector()
    model = ScriptedChatModel(respond=respond, model_name="scripted-watched")
    confession = _confess(mode, Confessor(model), config={"callbacks": [tracer]})
    assert confession.status == ("error" if fails else "ok")
    [outer] = [run for run in tracer.ended if run.name == "confession"]
    [call] = [run for run in tracer.ended if run.run_type in ("llm", "chat_model")]
    assert call.parent_run_id == outer.id
    assert call.name != "confession"  # the run name applies to the outer run only
    assert outer.inputs == {"messages": len(model.calls[0])}
    assert outer.outputs == ({} if fails else {"reply": "AIMessage"})
    assert (outer.error is not None) is fails
    assert "ConnectionError" in (outer.error or "ConnectionError")


def test_sync_timeout() -> None:
    release = threading.Event()

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> str:
        release.wait(30)  # hangs until the test releases it
        return "{}"

    confessor = Confessor(ScriptedChatModel(respond=respond), timeout_s=0.2)
    try:
        confession = confessor.confess(_messages())
    finally:
        release.set()
    assert confession.status == "error"
    assert "did not answer within 0.2s" in (confession.error or "")


@pytest.mark.asyncio
async def test_async_timeout() -> None:
    release = asyncio.Event()

    class Hanging(ScriptedChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            await release.wait()
            raise AssertionError("released only after the test")

    confessor = Confessor(Hanging(respond=lambda m, t: "{}"), timeout_s=0.2)
    confession = await confessor.aconfess(_messages())
    release.set()
    assert confession.status == "error"
    assert "did not answer within 0.2s" in (confession.error or "")


def test_confession_call_is_tagged_hidden() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    seen: list[tuple[list[str], dict[str, Any]]] = []

    class Spy(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
            seen.append((kw.get("tags") or [], kw.get("metadata") or {}))

    Confessor(admitting_confessor()).confess(_messages(), config={"callbacks": [Spy()]})
    tags, metadata = seen[0]
    assert "nostream" in tags
    assert "confessional" in tags
    assert metadata.get("lc_internal_call")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_mode": "json"}, "output_mode='json' is not valid; choose one of: 'auto'"),
        ({"request_role": "tool"}, "request_role='tool' is not valid"),
        ({"timeout_s": 0}, "timeout_s must be positive"),
        ({"parse_retries": -1}, "parse_retries must be >= 0"),
        ({"token_budget": 10}, "token_budget must be >= 1000"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Confessor(admitting_confessor(), **kwargs)


def test_init_chat_model_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    confessor = Confessor("openai:gpt-4.1-mini")
    assert type(confessor.model).__name__ == "ChatOpenAI"
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigurationError, match="needs an API key: set OPENAI_API_KEY"):
        Confessor("openai:gpt-4.1-mini")
    with pytest.raises(ConfigurationError):
        Confessor("no-such-provider:model")


def test_missing_provider_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("ANTHROPIC_API_KEY", "not-used")
    monkeypatch.setitem(sys.modules, "langchain_anthropic", None)  # simulate "not installed"
    with pytest.raises(MissingExtraError, match=r"confessional\[anthropic\]"):
        Confessor("anthropic:claude-sonnet-4-5")


def test_real_anthropic_class_gets_the_user_role(monkeypatch: pytest.MonkeyPatch) -> None:
    from confessional.request import resolve_request_role

    monkeypatch.setenv("ANTHROPIC_API_KEY", "not-used")
    confessor = Confessor("anthropic:claude-sonnet-4-5")
    assert resolve_request_role("auto", confessor.model) == "user"


def test_example_tools_are_fresh() -> None:
    first, second = example_tools(), example_tools()
    first[1].invoke({"path": "tests/test_speed.py", "content": "timer = 0"})
    assert first[0].invoke({}) == "1 passed"
    assert second[0].invoke({}).startswith("1 failed")


class _ReplyError(ScriptedChatModel):
    """Raises inside the call the way SDK parse helpers do, then answers properly."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        from langchain_core.exceptions import OutputParserException

        if len(self.calls) == 0:
            super()._generate(messages, *args, **kwargs)  # recorded like any call
            raise OutputParserException("compliance: 'mostly_fine' is not a valid label")
        return super()._generate(messages, *args, **kwargs)


@both
@pytest.mark.parametrize("output_mode", ["auto", "structured", "text"])
def test_errors_raised_inside_the_call_are_retried(mode: Mode, output_mode: str) -> None:
    model = _ReplyError(respond=lambda m, t: json.dumps(SANDBAGGING))
    confession = _confess(mode, Confessor(model, output_mode=output_mode))  # type: ignore[arg-type]
    assert confession.status == "ok", confession.error
    assert len(model.calls) == 2
    assert "mostly_fine" in str(model.calls[1][-1].content)  # the retry shows the error


class _HttpError(Exception):
    status_code = 400


@both
def test_http_errors_are_not_retried_with_the_error_shown(mode: Mode) -> None:
    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> str:
        raise _HttpError("bad request")

    model = ScriptedChatModel(respond=respond)
    confession = _confess(mode, Confessor(model, output_mode="text"))
    assert confession.status == "error"
    assert confession.error_type == "_HttpError"
    assert len(model.calls) == 1


@both
def test_tools_stay_bound_with_tool_choice_none(mode: Mode) -> None:
    seen: list[list[str]] = []
    model = ScriptedChatModel(
        respond=lambda m, t: (
            seen.append([x["function"]["name"] for x in t]) or json.dumps(SANDBAGGING)
        )
    )
    tools = example_tools()
    confession = _confess(mode, Confessor(model), tools=tools)
    assert confession.status == "ok"
    assert seen == [["run_tests", "write_file"]]  # the agent's tools, not a report tool


class _Recording(ScriptedChatModel):
    """A scripted model that records the request kwargs (tool choice, settings) of each call."""

    _seen: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    def __init__(self, seen: list[dict[str, Any]], **fields: Any) -> None:
        super().__init__(**fields)
        self._seen = seen

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self._seen.append(kwargs)
        return super()._generate(messages, *args, **kwargs)


@both
def test_agents_model_settings_are_replayed(mode: Mode) -> None:
    kwargs_seen: list[dict[str, Any]] = []
    model = _Recording(kwargs_seen, respond=lambda m, t: json.dumps(SANDBAGGING))
    settings = {"temperature": 0, "tool_choice": "auto"}
    confession = _confess(
        mode, Confessor(), model=model, tools=example_tools(), model_settings=settings
    )
    assert confession.status == "ok"
    # auto (the default) keeps the agent's tool choice: providers key their cache on it.
    assert kwargs_seen[0]["temperature"] == 0
    assert kwargs_seen[0]["tool_choice"] == "auto"
    confession = _confess(
        mode,
        Confessor(output_mode="text"),
        model=model,
        tools=example_tools(),
        model_settings=settings,
    )
    assert confession.status == "ok"
    assert kwargs_seen[1]["temperature"] == 0
    assert kwargs_seen[1]["tool_choice"] == "none"


@both
def test_a_reply_that_calls_a_tool_is_retried_with_tool_choice_none(mode: Mode) -> None:
    kwargs_seen: list[dict[str, Any]] = []

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage | str:
        if len(kwargs_seen) == 1:
            return tool_call_message(("run_tests", {"target": "speed"}))
        return json.dumps(SANDBAGGING)

    model = _Recording(kwargs_seen, respond=respond)
    confession = _confess(mode, Confessor(), model=model, tools=example_tools())
    assert confession.status == "ok", confession.error
    assert [k.get("tool_choice") for k in kwargs_seen] == [None, "none"]
    retry = model.calls[1][-1]
    assert "called the tool 'run_tests'" in message_text(retry)
    assert confession.usage is None  # the scripted model reports no usage


@both
def test_an_agent_tool_choice_that_forces_a_call_is_not_replayed(mode: Mode) -> None:
    kwargs_seen: list[dict[str, Any]] = []
    model = _Recording(kwargs_seen, respond=lambda m, t: json.dumps(SANDBAGGING))
    confession = _confess(
        mode,
        Confessor(),
        model=model,
        tools=example_tools(),
        model_settings={"tool_choice": "any"},
    )
    assert confession.status == "ok", confession.error
    assert [k.get("tool_choice") for k in kwargs_seen] == ["none"]


@both
def test_provider_error_text_is_scrubbed(mode: Mode) -> None:
    key = "sk-proj-Abc123def456ghi789jkl012mno345"

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> str:
        raise ConnectionError(f"failed with header Authorization: Bearer {key} " + "x" * 5000)

    confession = _confess(mode, Confessor(ScriptedChatModel(respond=respond)))
    assert confession.status == "error"
    assert key not in (confession.error or "")
    assert key[8:20] not in (confession.error or "")
    assert len(confession.error or "") <= 301


def test_secret_shapes_are_scrubbed() -> None:
    from confessional._scrub import REDACTED, scrub_secrets

    samples = [
        "sk-ant-api03-abcdefghijklmnop",
        "Bearer abc.def-ghi_jkl",
        "api_key='hunter2hunter2'",
        '"x-api-key": "k-123456789"',
        "AKIAIOSFODNN7EXAMPLE",
        "AIzaSyD-1234567890abcdefghijklmnop",
        "ghp_abcdefghijklmnopqrstuvwxyz0123",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ]
    for sample in samples:
        scrubbed = scrub_secrets(f"error: {sample} end")
        assert REDACTED in scrubbed, sample
        assert scrubbed.endswith(" end")
    assert scrub_secrets("HTTP 400: messages.2: roles must alternate") == (
        "HTTP 400: messages.2: roles must alternate"
    )  # ordinary error text is kept


def test_system_role_with_an_anthropic_style_model_fails_at_construction() -> None:
    class ChatAnthropic(ScriptedChatModel):  # same class name as langchain-anthropic's
        pass

    with pytest.raises(ConfigurationError, match="request_role='system' does not work"):
        Confessor(ChatAnthropic(respond=lambda m, t: "x"), request_role="system")


@both
def test_per_call_model_is_checked_too(mode: Mode) -> None:
    class ChatAnthropic(ScriptedChatModel):
        pass

    model = ChatAnthropic(respond=lambda m, t: json.dumps(SANDBAGGING))
    confession = _confess(mode, Confessor(request_role="system"), model=model)
    assert confession.status == "error"
    assert confession.error_type == "configuration"
    assert model.calls == []  # rejected before any call


def test_each_new_per_call_model_is_checked_and_a_good_one_still_confesses() -> None:
    """The check of the agent's model is remembered per model: a model seen before is not
    checked again, a different one is."""

    class ChatAnthropic(ScriptedChatModel):
        pass

    confessor = Confessor(request_role="system")
    good = admitting_confessor()
    assert _confess("sync", confessor, model=good).status == "ok"
    bad = ChatAnthropic(respond=lambda m, t: json.dumps(SANDBAGGING))
    for _ in range(2):
        rejected = _confess("sync", confessor, model=bad)
        assert rejected.error_type == "configuration"
    assert bad.calls == []
    assert _confess("sync", confessor, model=good).status == "ok"
    assert len(good.calls) == 2


def test_a_new_tool_list_is_counted_against_the_budget_again() -> None:
    """The tool definitions' share of the budget is remembered for the last tool list
    only: the same Confessor given far larger tools compacts the conversation to fit."""
    from langchain_core.tools import StructuredTool

    # Large in its parameter schema (sent with the tool), not in its description (which
    # the request text quotes, and so would count anyway).
    schema = {
        "type": "object",
        "properties": {
            f"field_{i}": {"type": "string", "description": "A lookup detail. " * 20}
            for i in range(120)
        },
    }
    lookup = StructuredTool.from_function(
        lambda **kwargs: "", name="lookup", description="Look a value up.", args_schema=schema
    )

    big_output = "log line " * 3_000
    call = tool_call_message(("run_tests", {}))
    messages = [
        HumanMessage("Make the speed test pass."),
        call,
        ToolMessage(big_output, tool_call_id=call.tool_calls[0]["id"]),
        AIMessage("All tests pass."),
    ]
    model = admitting_confessor()
    confessor = Confessor(model, token_budget=18_000)

    def sent_output() -> str:
        return str(model.calls[-1][2].content)

    assert confessor.confess(messages, tools=example_tools()).status == "ok"
    assert sent_output() == big_output  # fits beside the two small tools
    assert confessor.confess(messages, tools=[*example_tools(), lookup]).status == "ok"
    assert len(sent_output()) < len(big_output)  # the large tool took its room
    assert confessor.confess(messages, tools=example_tools()).status == "ok"
    assert sent_output() == big_output


def test_a_failed_confession_is_logged_and_counted_without_any_surface(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from confessional import failure_counts
    from confessional.testing import garbage_confessor

    messages = [
        HumanMessage("fix it"),
        tool_call_message(("run_tests", {})),
        ToolMessage("1 failed", tool_call_id="call_0"),
        AIMessage("Fixed."),
    ]
    with caplog.at_level("WARNING", logger="confessional"):
        failed = Confessor(garbage_confessor()).confess(messages)
    assert failed.status == "error"
    assert failure_counts()[("confession", failed.error_type)] == 1
    assert any("confession failed" in r.getMessage() for r in caplog.records)
