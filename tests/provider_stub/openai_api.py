"""OpenAI Chat Completions (``POST /v1/chat/completions``): validation and wire format.

Validation follows the real API's 400s, each with its ``{"error": {"message", "type", "param",
"code"}}`` shape and, where known, its exact wording (including the API's own spelling, such as
"preceeding"). Rules:

- the body is a JSON object; ``model`` and ``messages`` (non-empty) are present; no top-level
  field outside the API's (the installed ``openai`` SDK's ``CompletionCreateParams``);
- roles are system, developer, user, assistant, tool or function. System and developer messages
  may appear anywhere;
- an assistant message with ``tool_calls`` is followed directly by one ``tool`` message per call
  id, and every ``tool`` message answers an id of the assistant message right before that run of
  tool messages. A system message between the call and its results therefore leaves the calls
  unanswered, as the real API treats it;
- ``tools`` is non-empty when given and names match ``^[a-zA-Z0-9_-]{1,64}$``; strict function
  tools pass the strict-schema rules (`schema_rules`);
- ``tool_choice`` and ``parallel_tool_calls`` need ``tools``; ``tool_choice`` is none, auto,
  required or a named function/custom tool that exists in ``tools``;
- ``response_format`` is text, json_object (the messages must mention "json") or json_schema
  with ``json_schema.name`` (pattern as for tools) and ``json_schema.schema``; strict schemas
  pass the strict-schema rules;
- ``stream_options`` needs ``stream: true``;
- an ``Authorization: Bearer <key>`` header (401 otherwise).

When the request sets ``response_format`` and the scripted reply is text, the text is returned as
``message.content`` unchanged, as the real API returns whatever the model produced.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

from openai.types.chat import completion_create_params

from .caching import CacheUse
from .replies import HttpError, Reply
from .schema_rules import openai_strict_problem
from .wire import ApiRejection, Rendered, estimate_tokens, json_response, random_id, sse_event

API = "openai"
ALLOWED_FIELDS = frozenset(
    completion_create_params.CompletionCreateParamsStreaming.__required_keys__
    | completion_create_params.CompletionCreateParamsStreaming.__optional_keys__
)
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
TOOL_CHOICE_MODES = ("none", "auto", "required")
_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_STREAM_PIECE = 12  # characters per streamed delta: enough pieces to exercise chunk merging


def _quoted_list(values: tuple[str, ...]) -> str:
    quoted = [f"'{value}'" for value in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def check_auth(headers: Mapping[str, str], expected_key: str | None) -> None:
    value = headers.get("authorization", "")
    key = value[len("Bearer ") :].strip() if value.startswith("Bearer ") else ""
    if not key:
        raise ApiRejection(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            status=401,
        )
    if expected_key is not None and key != expected_key:
        shown = f"{key[:3]}*****{key[-2:]}" if len(key) > 5 else "*****"
        raise ApiRejection(
            f"Incorrect API key provided: {shown}.", status=401, code="invalid_api_key"
        )


def malformed_json(detail: str) -> ApiRejection:
    return ApiRejection(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        f"sent was not valid JSON. {detail})"
    )


def validate(body: Any) -> None:
    """Raise `ApiRejection` for the first rule ``body`` breaks, in the API's order."""
    if not isinstance(body, dict):
        raise ApiRejection("Invalid type for request body: expected an object.")
    unknown = [name for name in body if name not in ALLOWED_FIELDS]
    if unknown:
        noun = "argument" if len(unknown) == 1 else "arguments"
        raise ApiRejection(f"Unrecognized request {noun} supplied: {', '.join(unknown)}")
    if not body.get("model"):
        raise ApiRejection("you must provide a model parameter")
    _validate_messages(body.get("messages"))
    tool_names = _validate_tools(body)
    _validate_tool_choice(body, tool_names)
    _validate_response_format(body)
    if "stream_options" in body and body.get("stream") is not True:
        raise ApiRejection(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )


def _validate_messages(messages: Any) -> None:
    if messages is None:
        raise ApiRejection(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise ApiRejection("Invalid type for 'messages': expected an array.", param="messages")
    if not messages:
        raise ApiRejection(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    open_calls: dict[str, bool] | None = None  # call id -> answered, for the open call window
    caller_index = -1
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiRejection(
                f"Invalid type for 'messages[{index}]': expected an object.",
                param=f"messages[{index}]",
            )
        role = message.get("role")
        if role not in ROLES:
            raise ApiRejection(
                f"Invalid value: '{role}'. Supported values are: {_quoted_list(ROLES)}.",
                param=f"messages[{index}].role",
                code="invalid_value",
            )
        if role == "tool":
            _check_tool_answer(message, index, open_calls)
            if open_calls is not None:
                open_calls[message["tool_call_id"]] = True
            continue
        if open_calls is not None:
            _require_all_answered(open_calls, caller_index)
            open_calls = None
        if role == "assistant":
            calls = message.get("tool_calls") or []
            if message.get("content") is None and not calls and not message.get("refusal"):
                raise ApiRejection(
                    "Invalid value for 'content': expected a string, got null.",
                    param=f"messages.[{index}].content",
                )
            if calls:
                open_calls = {
                    str(call.get("id")): False for call in calls if isinstance(call, dict)
                }
                caller_index = index
        elif message.get("content") is None:
            raise ApiRejection(
                f"Missing required parameter: 'messages[{index}].content'.",
                param=f"messages[{index}].content",
                code="missing_required_parameter",
            )
    if open_calls is not None:
        _require_all_answered(open_calls, caller_index)


def _check_tool_answer(
    message: dict[str, Any], index: int, open_calls: dict[str, bool] | None
) -> None:
    call_id = message.get("tool_call_id")
    if not call_id:
        raise ApiRejection(
            f"Missing required parameter: 'messages[{index}].tool_call_id'.",
            param=f"messages[{index}].tool_call_id",
            code="missing_required_parameter",
        )
    if open_calls is None:
        raise ApiRejection(
            "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
            "message with 'tool_calls'.",
            param=f"messages.[{index}].role",
        )
    if call_id not in open_calls:
        raise ApiRejection(
            f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
            "previous message.",
            param=f"messages.[{index}].tool_call_id",
        )


def _require_all_answered(open_calls: dict[str, bool], caller_index: int) -> None:
    unanswered = [call_id for call_id, answered in open_calls.items() if not answered]
    if unanswered:
        raise ApiRejection(
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            + ", ".join(unanswered),
            param=f"messages.[{caller_index}].role",
        )


def _validate_tools(body: dict[str, Any]) -> list[str]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list) or not tools:
        raise ApiRejection(
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            param="tools",
            code="empty_array",
        )
    names: list[str] = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in ("function", "custom"):
            raise ApiRejection(
                f"Invalid value: '{kind}'. Supported values are: 'function' and 'custom'.",
                param=f"tools[{index}].type",
                code="invalid_value",
            )
        spec = tool.get(kind)
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise ApiRejection(
                f"Missing required parameter: 'tools[{index}].{kind}.name'.",
                param=f"tools[{index}].{kind}.name",
                code="missing_required_parameter",
            )
        if not _NAME_PATTERN.match(name):
            raise ApiRejection(
                f"Invalid 'tools[{index}].{kind}.name': string does not match pattern. Expected "
                "a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"tools[{index}].{kind}.name",
                code="invalid_value",
            )
        if kind == "function" and spec.get("strict") is True:
            problem = openai_strict_problem(spec.get("parameters", {}))
            if problem:
                raise ApiRejection(
                    f"Invalid schema for function '{name}': {problem}",
                    param=f"tools[{index}].function.parameters",
                    code="invalid_function_parameters",
                )
        names.append(name)
    return names


def _validate_tool_choice(body: dict[str, Any], tool_names: list[str]) -> None:
    has_tools = "tools" in body
    if "parallel_tool_calls" in body and not has_tools:
        raise ApiRejection(
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed "
            "when 'tools' are specified.",
            param="parallel_tool_calls",
        )
    if "tool_choice" not in body:
        return
    choice = body["tool_choice"]
    if not has_tools:
        raise ApiRejection(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if isinstance(choice, str):
        if choice not in TOOL_CHOICE_MODES:
            raise ApiRejection(
                f"Invalid value: '{choice}'. Supported values are: "
                f"{_quoted_list(TOOL_CHOICE_MODES)}.",
                param="tool_choice",
                code="invalid_value",
            )
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("function", "custom"):
        spec = choice.get(kind)
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in tool_names:
            raise ApiRejection(
                f"Invalid value for 'tool_choice': tool choice '{name}' not found in 'tools' "
                "parameter.",
                param="tool_choice",
            )
        return
    if kind == "allowed_tools":
        return
    raise ApiRejection(
        f"Invalid value: '{kind}'. Supported values are: 'function', 'custom' and 'allowed_tools'.",
        param="tool_choice.type",
        code="invalid_value",
    )


def _mentions_json(messages: list[dict[str, Any]]) -> bool:
    return "json" in json.dumps([m.get("content") for m in messages]).lower()


def _validate_response_format(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        if not _mentions_json(body["messages"]):
            raise ApiRejection(
                "'messages' must contain the word 'json' in some form, to use 'response_format' "
                "of type 'json_object'.",
                param="messages",
            )
        return
    if kind != "json_schema":
        raise ApiRejection(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and "
            "'json_schema'.",
            param="response_format.type",
            code="invalid_value",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise ApiRejection(
            "Missing required parameter: 'response_format.json_schema'.",
            param="response_format.json_schema",
            code="missing_required_parameter",
        )
    for key in ("name", "schema"):
        if key not in spec:
            raise ApiRejection(
                f"Missing required parameter: 'response_format.json_schema.{key}'.",
                param=f"response_format.json_schema.{key}",
                code="missing_required_parameter",
            )
    name = spec["name"]
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ApiRejection(
            "Invalid 'response_format.json_schema.name': string does not match pattern. "
            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            param="response_format.json_schema.name",
            code="invalid_value",
        )
    if spec.get("strict") is True:
        problem = openai_strict_problem(spec["schema"])
        if problem:
            raise ApiRejection(
                f"Invalid schema for response_format '{name}': {problem}",
                param="response_format",
                code="invalid_json_schema",
            )


# --- responses -----------------------------------------------------------------------------


def error_response(rejection: ApiRejection) -> Rendered:
    return json_response(
        rejection.status,
        {
            "error": {
                "message": rejection.message,
                "type": rejection.error_type,
                "param": rejection.param,
                "code": rejection.code,
            }
        },
    )


def http_error_response(error: HttpError) -> Rendered:
    if error.status == 429:
        default_type, code = "requests", "rate_limit_exceeded"
    elif error.status >= 500:
        default_type, code = "server_error", None
    else:
        default_type, code = "invalid_request_error", None
    rejection = ApiRejection(
        error.message, status=error.status, error_type=error.error_type or default_type, code=code
    )
    rendered = error_response(rejection)
    return Rendered(rendered.status, rendered.chunks, headers=dict(error.headers))


def _usage(reply: Reply, use: CacheUse) -> dict[str, Any]:
    produced = (reply.content or "") + (reply.refusal_text or "")
    produced += "".join(call.name + call.arguments_json() for call in reply.calls)
    prompt = reply.usage.input_tokens or max(1, use.input_tokens)
    completion = reply.usage.output_tokens or estimate_tokens(produced)
    cached = reply.usage.cached_input_tokens
    cached = min(use.read, prompt) if cached is None else cached
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": cached,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(reply: Reply) -> str:
    if reply.finish == "length":
        return "length"
    return "tool_calls" if reply.calls else "stop"


def _call_ids(reply: Reply) -> list[str]:
    return [call.id or random_id("call_", 24) for call in reply.calls]


def render(reply: Reply, body: dict[str, Any], use: CacheUse) -> Rendered:
    """The chat completion for ``reply``: one JSON object, or SSE chunks if ``stream`` is set."""
    completion_id = random_id("chatcmpl-", 29)
    created = int(time.time())
    model = body["model"]
    if body.get("stream") is True:
        chunks = tuple(_stream_chunks(reply, body, use, completion_id, created))
        return Rendered(200, chunks, "text/event-stream; charset=utf-8", streamed=True)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content if reply.refusal_text is None else None,
        "refusal": reply.refusal_text,
        "annotations": [],
    }
    if reply.calls:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for call_id, call in zip(_call_ids(reply), reply.calls, strict=True)
        ]
    return json_response(
        200,
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(reply),
                }
            ],
            "usage": _usage(reply, use),
            "service_tier": "default",
            "system_fingerprint": "fp_provider_stub",
        },
    )


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), _STREAM_PIECE):
        yield text[start : start + _STREAM_PIECE]


def _stream_chunks(
    reply: Reply, body: dict[str, Any], use: CacheUse, completion_id: str, created: int
) -> Iterator[bytes]:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_provider_stub",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            payload["usage"] = None
        return sse_event(payload)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if reply.refusal_text is not None:
        for piece in _pieces(reply.refusal_text):
            yield chunk({"refusal": piece})
    elif reply.content:
        for piece in _pieces(reply.content):
            yield chunk({"content": piece})
    for index, (call_id, call) in enumerate(zip(_call_ids(reply), reply.calls, strict=True)):
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        for piece in _pieces(call.arguments_json()):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish_reason(reply))
    if include_usage:
        yield sse_event(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "service_tier": "default",
                "system_fingerprint": "fp_provider_stub",
                "choices": [],
                "usage": _usage(reply, use),
            }
        )
    yield b"data: [DONE]\n\n"
