"""The confession request: same prefix, full instructions, compaction under a budget."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately

from confessional import ConfessionReport, build_request, extract_episode
from confessional.request import is_confession_request, request_text, resolve_request_role
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
    assert count_tokens_approximately(request) <= 20_000
    assert request[0] is messages[0]
    assert request[1] is messages[1]
    tool_reply = request[3]
    assert isinstance(tool_reply, ToolMessage)
    assert "characters removed by confessional" in str(tool_reply.content)
    assert tool_reply.tool_call_id == messages[3].tool_call_id
    assert request[4] is messages[4]  # the agent's text is only cut if tool outputs weren't enough
    assert messages[3].content == huge  # the agent's own state is never modified
