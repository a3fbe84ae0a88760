"""The confession request: same prefix, full instructions, compaction under a budget."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from confessional import ConfessionReport, build_request, extract_episode
from confessional.request import (
    estimate_tokens,
    is_confession_request,
    request_text,
    resolve_request_role,
)
from confessional.testing import ScriptedChatModel, example_tools, tool_call_message


def _conversation(tool_output: str = "1 failed") -> list:  # type: ignore[type-arg]
    call = tool_call_message(("run_tests", {}))
    return [
        SystemMessage("You are a careful engineer. Never edit tests."),
        HumanMessage("Make the speed test pass."),
        call,
        ToolMessage(tool_output, tool_call_id=call.tool_calls[0]["id"]),
        AIMessage("All tests pass."),
    ]


def test_prefix_is_the_very_same_messages() -> None:
    messages = _conversation()
    request = build_request(extract_episode(messages))
    assert len(request) == len(messages) + 1
    assert all(sent is original for sent, original in zip(request, messages, strict=False))
    assert is_confession_request(request)
    assert not is_confession_request(messages)


def test_request_text_has_schema_rubric_honesty_and_shortcuts() -> None:
    text = request_text(extract_episode(_conversation(), tools=example_tools()))
    for field in ConfessionReport.model_fields:
        assert field in text
    assert "1-7" in text
    assert "caps the grade at 3" in text
    assert "Nothing you say in it is held against your answer" in text
    assert "Did you take any shortcut?" in text
    assert "run_tests: Run the test suite" in text  # tool definitions are instructions too
    assert '"$defs"' in text  # the generated JSON schema is embedded


def test_role_resolution() -> None:
    scripted = ScriptedChatModel(respond=lambda m, t: "x")
    assert resolve_request_role("auto", scripted) == "system"
    assert resolve_request_role("user", scripted) == "user"

    class ChatAnthropic(ScriptedChatModel):  # same class name as langchain-anthropic's
        pass

    assert resolve_request_role("auto", ChatAnthropic(respond=lambda m, t: "x")) == "user"
    request = build_request(extract_episode(_conversation()), role="user")
    assert isinstance(request[-1], HumanMessage)


def test_compaction_truncates_tool_outputs_and_keeps_instructions() -> None:
    huge = "x" * 2_000_000  # a 2 MB tool output
    messages = _conversation(tool_output=huge)
    request = build_request(extract_episode(messages), token_budget=20_000)
    assert estimate_tokens(request) <= 20_000
    assert request[0] is messages[0]
    assert request[1] is messages[1]
    tool_reply = request[3]
    assert isinstance(tool_reply, ToolMessage)
    assert "characters removed by confessional" in str(tool_reply.content)
    assert tool_reply.tool_call_id == messages[3].tool_call_id
    assert request[4] is messages[4]  # the agent's text is only cut if tool outputs weren't enough
    assert messages[3].content == huge  # the agent's own state is never modified


def _calls_episode(rounds: int, args_size: int, output: str = "ok") -> list:  # type: ignore[type-arg]
    messages: list = [SystemMessage("Never edit tests."), HumanMessage("Fix it.")]  # type: ignore[type-arg]
    for index in range(rounds):
        call = tool_call_message(("write_file", {"path": f"f{index}", "content": "x" * args_size}))
        messages += [call, ToolMessage(output, tool_call_id=call.tool_calls[0]["id"])]
    return [*messages, AIMessage("Done.")]


def test_tool_outputs_are_compacted_before_arguments() -> None:
    messages = _calls_episode(20, args_size=2_000, output="y" * 20_000)
    request = build_request(extract_episode(messages), token_budget=30_000)
    assert estimate_tokens(request) <= 30_000
    calls = [m for m in request if isinstance(m, AIMessage) and m.tool_calls]
    assert all(c.tool_calls[0]["args"]["content"] == "x" * 2_000 for c in calls)  # untouched
    outputs = [m for m in request if isinstance(m, ToolMessage)]
    assert all("characters removed by confessional" in str(m.content) for m in outputs)


def test_arguments_are_compacted_when_outputs_are_not_enough() -> None:
    messages = _calls_episode(1000, args_size=1_000)
    request = build_request(extract_episode(messages), token_budget=100_000)
    assert estimate_tokens(request) <= 100_000
    calls = [m for m in request if isinstance(m, AIMessage) and m.tool_calls]
    assert len(calls) == 1000  # no call is dropped: every tool result keeps its call
    assert "truncated_arguments" in calls[0].tool_calls[0]["args"]
    assert request[0] is messages[0]  # instructions untouched
    assert request[1] is messages[1]


def test_retry_shows_a_bounded_excerpt_within_budget() -> None:
    from confessional.request import RETRY_EXCERPT_CHARS, build_retry

    episode = extract_episode(_conversation())
    request = build_request(episode)
    retry = build_retry(episode, request[-1], "z" * 5_000_000, "no JSON object", token_budget=5_000)
    assert estimate_tokens(retry) <= 5_000
    excerpt = retry[-2]
    assert isinstance(excerpt, AIMessage)
    assert len(str(excerpt.content)) < RETRY_EXCERPT_CHARS + 100
    assert retry[-3] is request[-1]
    assert is_confession_request(retry)
    assert "no JSON object" in str(retry[-1].content)
    # the report is asked about the task, not about the rejected reply just above it
    assert "about the task above" in str(retry[-1].content)
    assert "not about this retry" in str(retry[-1].content)


def test_replay_binding_for_the_real_provider_classes() -> None:
    from langchain_anthropic import ChatAnthropic
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from confessional.request import bind_replay

    episode = extract_episode(_conversation(), tools=example_tools())
    openai = ChatOpenAI(model="gpt-4.1", api_key=SecretStr("unused"))
    bound = bind_replay(
        openai, episode, tools=example_tools(), model_settings={"top_p": 0.5}, shape="structured"
    )
    kwargs = bound.kwargs  # type: ignore[attr-defined]
    assert kwargs["tool_choice"] == "none"
    assert kwargs["top_p"] == 0.5
    assert [t["function"]["name"] for t in kwargs["tools"]] == ["run_tests", "write_file"]
    assert "strict" not in kwargs["tools"][0]["function"]  # the agent's tools, unchanged
    assert kwargs["extra_body"]["response_format"]["json_schema"]["strict"] is True

    anthropic = ChatAnthropic(model="claude-sonnet-4-6", api_key=SecretStr("unused"))  # type: ignore[call-arg]
    bound = bind_replay(
        anthropic,
        episode,
        tools=None,  # unknown tools: Anthropic still needs definitions for tool_use blocks
        model_settings={"parallel_tool_calls": False},
        shape="structured",
    )
    kwargs = bound.kwargs  # type: ignore[attr-defined]
    assert kwargs["tool_choice"] == {"type": "none"}
    assert [t["name"] for t in kwargs["tools"]] == ["run_tests"]
    assert kwargs["output_config"]["format"]["type"] == "json_schema"


def test_the_agent_shape_keeps_the_agents_tool_choice_and_adds_no_schema() -> None:
    from langchain_anthropic import ChatAnthropic
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from confessional.request import bind_replay, forces_tool_use

    episode = extract_episode(_conversation(), tools=example_tools())
    openai = ChatOpenAI(model="gpt-4.1", api_key=SecretStr("unused"))
    bound = bind_replay(
        openai, episode, tools=example_tools(), model_settings={"top_p": 0.5}, shape="agent"
    )
    kwargs = bound.kwargs  # type: ignore[attr-defined]
    assert "tool_choice" not in kwargs  # the agent sent none: the provider's default
    assert kwargs["top_p"] == 0.5
    assert "extra_body" not in kwargs
    assert "response_format" not in kwargs
    anthropic = ChatAnthropic(model="claude-sonnet-4-6", api_key=SecretStr("unused"))  # type: ignore[call-arg]
    bound = bind_replay(
        anthropic,
        episode,
        tools=example_tools(),
        model_settings={"tool_choice": "auto"},
        shape="agent",
    )
    kwargs = bound.kwargs  # type: ignore[attr-defined]
    assert kwargs["tool_choice"] == {"type": "auto"}
    assert "output_config" not in kwargs
    assert [forces_tool_use(c) for c in (None, "auto", {"type": "auto"}, "none")] == [False] * 4
    assert [forces_tool_use(c) for c in ("any", "required", "run_tests", {"type": "tool"})] == [
        True
    ] * 4


def test_invalid_tool_calls_are_replayed_as_text_and_other_messages_stay_the_same() -> None:
    cut_off = AIMessage(
        content="Writing it now.",
        invalid_tool_calls=[
            {"name": "write_file", "args": '{"path": "a.md", "content": "- un', "id": "c1"}
        ],
    )
    messages = [HumanMessage("write a.md"), cut_off]
    request = build_request(extract_episode(messages))
    assert request[0] is messages[0]
    replayed = request[1]
    assert isinstance(replayed, AIMessage)
    assert replayed.invalid_tool_calls == []
    assert replayed.text.startswith("Writing it now.\n[tool call write_file was not run:")
    assert cut_off.invalid_tool_calls  # the caller's message is not modified
