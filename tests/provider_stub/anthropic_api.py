"""Anthropic Messages (``POST /v1/messages``): validation and wire format.

Validation follows the real API's 400s, each in its ``{"type": "error", "error": {"type",
"message"}, "request_id"}`` shape and, where known, its wording. Rules:

- the body is a JSON object with only the API's top-level fields (the installed ``anthropic``
  SDK's ``MessageCreateParams``, beta included, plus ``stream`` and the sampling parameters);
  ``model``, ``max_tokens`` (>= 1) and a non-empty ``messages`` are present;
- ``messages[].role`` is ``user`` or ``assistant``: system text goes in the top-level
  ``system``, so a system message after the first has no place in the request;
- the first message is from the user and roles alternate;
- ``tool_use`` or ``tool_result`` blocks need ``tools``;
- every ``tool_use`` block is answered by a ``tool_result`` in the next message, and every
  ``tool_result`` answers a ``tool_use`` of the previous message;
- ``tool_choice`` is auto, any, tool (naming a defined tool) or none, and needs ``tools``;
  with ``thinking`` enabled it may not force tool use;
- ``thinking.budget_tokens`` is >= 1024 and below ``max_tokens``; thinking blocks sent back
  carry the signature the stub issued for their text;
- ``output_config.format`` is a JSON schema whose object schemas set
  ``additionalProperties: false``;
- an ``x-api-key`` header (401 otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from anthropic.types import message_create_params
from anthropic.types.beta import message_create_params as beta_message_create_params

from .caching import CacheUse
from .replies import HttpError, Reply, signature_is_valid
from .schema_rules import anthropic_output_schema_problem
from .wire import ApiRejection, Rendered, estimate_tokens, json_response, random_id, sse_event

API = "anthropic"


def _keys(params: Any) -> frozenset[str]:
    return frozenset(params.__required_keys__ | params.__optional_keys__)


ALLOWED_FIELDS = (
    _keys(message_create_params.MessageCreateParamsBase)
    | _keys(beta_message_create_params.MessageCreateParamsBase)
    | {"stream", "temperature", "top_k", "top_p"}
) - {"betas"}  # the SDK sends betas as a header
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
_STREAM_PIECE = 12


def check_auth(headers: Mapping[str, str], expected_key: str | None) -> None:
    key = headers.get("x-api-key", "")
    if not key or (expected_key is not None and key != expected_key):
        raise ApiRejection("invalid x-api-key", status=401, error_type="authentication_error")


def malformed_json(detail: str) -> ApiRejection:
    return ApiRejection(f"There was an error parsing the body: {detail}")


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def validate(body: Any) -> None:
    """Raise `ApiRejection` for the first rule ``body`` breaks."""
    if not isinstance(body, dict):
        raise ApiRejection("Input should be a valid dictionary")
    for name in body:
        if name not in ALLOWED_FIELDS:
            raise ApiRejection(f"{name}: Extra inputs are not permitted")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise ApiRejection(f"{name}: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise ApiRejection("max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ApiRejection("messages: at least one message is required")
    has_tools = bool(body.get("tools"))
    _validate_messages(messages, has_tools)
    _validate_tools(body)
    _validate_thinking(body)
    _validate_output_config(body)


def _validate_messages(messages: list[Any], has_tools: bool) -> None:
    previous_role: str | None = None
    open_calls: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiRejection(f"messages.{index}: Input should be a valid dictionary")
        role = message.get("role")
        if role == "system":
            raise ApiRejection(
                f'messages.{index}: Unexpected role "system". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            raise ApiRejection(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        if index == 0 and role != "user":
            raise ApiRejection('messages: first message must use the "user" role')
        if role == previous_role:
            raise ApiRejection(
                f'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row'
            )
        blocks = _blocks(message.get("content"))
        if not blocks:
            raise ApiRejection(f"messages.{index}: all messages must have non-empty content")
        kinds = {block.get("type") for block in blocks}
        if kinds & {"tool_use", "tool_result"} and not has_tools:
            raise ApiRejection(
                "Requests which include `tool_use` or `tool_result` blocks must define tools."
            )
        answered = {
            str(block.get("tool_use_id")) for block in blocks if block.get("type") == "tool_result"
        }
        if role == "user":
            stray = sorted(answered - open_calls)
            if stray:
                raise ApiRejection(
                    f"messages.{index}.content.0: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {stray[0]}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        if open_calls and not open_calls <= answered:
            missing = sorted(open_calls - answered)
            raise ApiRejection(
                f"messages.{index - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        open_calls = set()
        for position, block in enumerate(blocks):
            kind = block.get("type")
            if role == "assistant" and kind == "tool_use":
                open_calls.add(str(block.get("id")))
            if kind == "thinking" and not signature_is_valid(
                str(block.get("thinking", "")), str(block.get("signature", ""))
            ):
                raise ApiRejection(
                    f"messages.{index}.content.{position}: Invalid `signature` in `thinking` block"
                )
        previous_role = role
    if open_calls:
        raise ApiRejection(
            f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` "
            f"blocks immediately after: {', '.join(sorted(open_calls))}. Each `tool_use` block "
            "must have a corresponding `tool_result` block in the next message."
        )


def _validate_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools") or []
    names = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise ApiRejection(f"tools.{index}.name: Field required")
        custom = "type" not in tool or tool.get("type") == "custom"
        if custom and not isinstance(tool.get("input_schema"), dict):
            raise ApiRejection(f"tools.{index}.custom.input_schema: Field required")
        names.append(tool["name"])
    if "tool_choice" not in body:
        return
    choice = body["tool_choice"]
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in TOOL_CHOICE_TYPES:
        raise ApiRejection(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    if not tools and kind != "none":
        raise ApiRejection("tool_choice may only be specified while providing tools.")
    if kind == "tool" and choice.get("name") not in names:
        raise ApiRejection(f"Tool '{choice.get('name')}' not found in 'tools'.")
    if kind == "none" and set(choice) - {"type"}:
        extra = sorted(set(choice) - {"type"})[0]
        raise ApiRejection(f"tool_choice.none.{extra}: Extra inputs are not permitted")
    thinking = body.get("thinking") or {}
    if thinking.get("type") in ("enabled", "adaptive") and kind in ("any", "tool"):
        raise ApiRejection("Thinking may not be enabled when tool_choice forces tool use.")


def _validate_thinking(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        raise ApiRejection(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if budget >= body["max_tokens"]:
        raise ApiRejection("`max_tokens` must be greater than `thinking.budget_tokens`.")


def _validate_output_config(body: dict[str, Any]) -> None:
    config = body.get("output_config")
    if config is None:
        return
    if not isinstance(config, dict):
        raise ApiRejection("output_config: Input should be a valid dictionary")
    output_format = config.get("format")
    if output_format is None:
        return
    if not isinstance(output_format, dict) or output_format.get("type") != "json_schema":
        raise ApiRejection("output_config.format.type: Input should be 'json_schema'")
    problem = anthropic_output_schema_problem(output_format.get("schema"))
    if problem:
        raise ApiRejection(f"output_config.format.{problem}")


# --- responses -----------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_response(rejection: ApiRejection) -> Rendered:
    error_type = rejection.error_type
    if error_type == "invalid_request_error":
        error_type = _ERROR_TYPES.get(rejection.status, "api_error")
    return json_response(
        rejection.status,
        {
            "type": "error",
            "error": {"type": error_type, "message": rejection.message},
            "request_id": random_id("req_011", 24),
        },
    )


def http_error_response(error: HttpError) -> Rendered:
    default = _ERROR_TYPES.get(error.status, "api_error")
    rendered = error_response(
        ApiRejection(error.message, status=error.status, error_type=error.error_type or default)
    )
    return Rendered(rendered.status, rendered.chunks, headers=dict(error.headers))


def _stop_reason(reply: Reply) -> str:
    if reply.refusal_text is not None:
        return "refusal"
    if reply.finish == "length":
        return "max_tokens"
    return "tool_use" if reply.calls else "end_turn"


def _content(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for thought in reply.thinking:
        signature = thought.signature
        if signature is None:
            from .replies import thinking_signature

            signature = thinking_signature(thought.text)
        blocks.append({"type": "thinking", "thinking": thought.text, "signature": signature})
    text = reply.refusal_text if reply.refusal_text is not None else reply.content
    if text:
        blocks.append({"type": "text", "text": text})
    for call in reply.calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id or random_id("toolu_01", 22),
                "name": call.name,
                "input": call.arguments_object(),
            }
        )
    return blocks


def _usage(reply: Reply, use: CacheUse, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    total = reply.usage.input_tokens or max(1, use.input_tokens)
    read, written = use.read, use.written
    if reply.usage.cached_input_tokens is not None:
        read, written = reply.usage.cached_input_tokens, 0
    return {
        "input_tokens": max(total - read - written, 0),
        "output_tokens": reply.usage.output_tokens or estimate_tokens(json.dumps(blocks)),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def render(reply: Reply, body: dict[str, Any], use: CacheUse) -> Rendered:
    """The message for ``reply``: one JSON object, or SSE events if ``stream`` is set."""
    blocks = _content(reply)
    message = {
        "id": random_id("msg_01", 22),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": blocks,
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": _usage(reply, use, blocks),
    }
    if body.get("stream") is True:
        events = tuple(_stream_events(message))
        return Rendered(200, events, "text/event-stream; charset=utf-8", streamed=True)
    return json_response(200, message)


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), _STREAM_PIECE):
        yield text[start : start + _STREAM_PIECE]


def _stream_events(message: dict[str, Any]) -> Iterator[bytes]:
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**usage, "output_tokens": 1},
    }
    yield sse_event({"type": "message_start", "message": start}, "message_start")
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "thinking":
            empty: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "text":
            empty = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        else:
            empty = {**block, "input": {}}
            arguments = json.dumps(block["input"], separators=(",", ":"))
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(arguments)]
        yield sse_event(
            {"type": "content_block_start", "index": index, "content_block": empty},
            "content_block_start",
        )
        for delta in deltas:
            yield sse_event(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
        yield sse_event({"type": "content_block_stop", "index": index}, "content_block_stop")
    yield sse_event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
        "message_delta",
    )
    yield sse_event({"type": "message_stop"}, "message_stop")
