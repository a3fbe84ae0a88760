"""The stub rejects what the real APIs reject, each in that API's error shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from confessional.schema import provider_report_schema
from provider_stub import API_KEY, Reply, ReplyQueue, running_stub, thinking_signature
from provider_stub.harness import make_model

OPENAI_HEADERS = {"authorization": f"Bearer {API_KEY}"}
ANTHROPIC_HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
TOOL = {"name": "run_tests", "description": "Run.", "input_schema": {"type": "object"}}
OPENAI_TOOL = {"type": "function", "function": {"name": "run_tests", "parameters": {}}}


def _anthropic(**body: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "max_tokens": 100, **body}


def _user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


def _tool_use(call_id: str = "toolu_01a") -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": call_id, "name": "run_tests", "input": {}}],
    }


def _tool_result(call_id: str = "toolu_01a") -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "ok"}],
    }


ANTHROPIC_REJECTIONS = {
    "tool_use_without_tools": (
        _anthropic(messages=[_user(), _tool_use(), _tool_result()]),
        "must define tools",
    ),
    "system_message_after_the_first": (
        _anthropic(messages=[_user(), {"role": "system", "content": "late"}]),
        'Unexpected role "system"',
    ),
    "roles_do_not_alternate": (
        _anthropic(messages=[_user(), _user("again")]),
        "roles must alternate",
    ),
    "tool_result_without_a_call": (
        _anthropic(
            messages=[_user(), {"role": "assistant", "content": "x"}, _tool_result()], tools=[TOOL]
        ),
        "unexpected `tool_use_id`",
    ),
    "tool_use_without_result": (
        _anthropic(messages=[_user(), _tool_use(), _user("next")], tools=[TOOL]),
        "without `tool_result` blocks",
    ),
    "unknown_top_level_field": (
        _anthropic(messages=[_user()], response_format={"type": "json"}),
        "response_format: Extra inputs are not permitted",
    ),
    "invalid_output_schema": (
        _anthropic(
            messages=[_user()],
            output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        ),
        "additionalProperties",
    ),
    "forced_tool_with_thinking": (
        _anthropic(
            max_tokens=4096,
            messages=[_user()],
            tools=[TOOL],
            tool_choice={"type": "any"},
            thinking={"type": "enabled", "budget_tokens": 1024},
        ),
        "Thinking may not be enabled when tool_choice forces tool use",
    ),
    "edited_thinking_block": (
        _anthropic(
            messages=[
                _user(),
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "thinking",
                            "thinking": "edited",
                            "signature": thinking_signature("original"),
                        },
                        {"type": "text", "text": "x"},
                    ],
                },
                _user("more"),
            ]
        ),
        "Invalid `signature`",
    ),
}

OPENAI_REJECTIONS = {
    "tool_message_without_a_call": (
        {
            "model": "gpt-4.1",
            "messages": [_user(), {"role": "tool", "tool_call_id": "c", "content": "x"}],
        },
        "must be a response to a preceeding message with 'tool_calls'",
    ),
    "unanswered_tool_call": (
        {
            "model": "gpt-4.1",
            "messages": [
                _user(),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "run_tests", "arguments": "{}"},
                        }
                    ],
                },
                _user("next"),
            ],
            "tools": [OPENAI_TOOL],
        },
        "did not have response messages: c1",
    ),
    "unknown_top_level_field": (
        {"model": "gpt-4.1", "messages": [_user()], "output_config": {}},
        "Unrecognized request argument supplied: output_config",
    ),
    "invalid_response_format_schema": (
        {
            "model": "gpt-4.1",
            "messages": [_user()],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "R",
                    "strict": True,
                    "schema": {"type": "object", "properties": {"a": {}}},
                },
            },
        },
        "Invalid schema for response_format 'R'",
    ),
    "tool_choice_without_tools": (
        {"model": "gpt-4.1", "messages": [_user()], "tool_choice": "none"},
        "'tool_choice' is only allowed when 'tools' are specified",
    ),
}


@pytest.mark.parametrize("case", list(ANTHROPIC_REJECTIONS))
def test_anthropic_rejections_use_its_error_shape(case: str) -> None:
    body, message = ANTHROPIC_REJECTIONS[case]
    with running_stub() as stub:
        response = httpx.post(
            stub.anthropic_base_url + "/v1/messages", json=body, headers=ANTHROPIC_HEADERS
        )
    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert message in payload["error"]["message"]
    assert payload["request_id"].startswith("req_")
    assert stub.rejected()[0].raw == response.request.content  # the raw body is recorded


@pytest.mark.parametrize("case", list(OPENAI_REJECTIONS))
def test_openai_rejections_use_its_error_shape(case: str) -> None:
    body, message = OPENAI_REJECTIONS[case]
    with running_stub() as stub:
        response = httpx.post(
            stub.openai_base_url + "/chat/completions", json=body, headers=OPENAI_HEADERS
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_missing_keys_get_each_apis_401() -> None:
    with running_stub() as stub:
        openai = httpx.post(stub.openai_base_url + "/chat/completions", json={})
        anthropic = httpx.post(stub.anthropic_base_url + "/v1/messages", json={})
    assert openai.status_code == anthropic.status_code == 401
    assert "You didn't provide an API key" in openai.json()["error"]["message"]
    assert anthropic.json()["error"]["type"] == "authentication_error"


def test_valid_requests_pass_including_the_report_schema() -> None:
    schema = {"type": "json_schema", "schema": provider_report_schema()}
    with running_stub(ReplyQueue([Reply.text("a"), Reply.text("b")])) as stub:
        anthropic = httpx.post(
            stub.anthropic_base_url + "/v1/messages",
            json=_anthropic(
                messages=[_user(), _tool_use(), _tool_result()],
                tools=[TOOL],
                tool_choice={"type": "none"},
                output_config={"format": schema},
            ),
            headers=ANTHROPIC_HEADERS,
        )
        openai = httpx.post(
            stub.openai_base_url + "/chat/completions",
            json={
                "model": "gpt-4.1",
                "messages": [_user(), {"role": "system", "content": "late system text is fine"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "ConfessionReport",
                        "strict": True,
                        "schema": provider_report_schema(),
                    },
                },
            },
            headers=OPENAI_HEADERS,
        )
    assert anthropic.status_code == 200, anthropic.text
    assert anthropic.json()["content"] == [{"type": "text", "text": "a"}]
    assert openai.status_code == 200, openai.text
    assert openai.json()["choices"][0]["message"]["content"] == "b"


def test_the_original_bug_is_caught_tool_blocks_sent_without_tools() -> None:
    """What the confession used to send on Anthropic in text mode: the stub says 400."""
    import anthropic

    call = AIMessage(content="", tool_calls=[{"name": "run_tests", "args": {}, "id": "toolu_01a"}])
    messages = [
        SystemMessage("Be careful."),
        HumanMessage("Run the tests."),
        call,
        ToolMessage("ok", tool_call_id="toolu_01a"),
        AIMessage("Done."),
        HumanMessage("CONFESSION REQUEST ..."),
    ]
    with running_stub() as stub:
        model = make_model(stub, "anthropic")
        with pytest.raises(anthropic.BadRequestError, match="must define tools"):
            model.invoke(messages)
