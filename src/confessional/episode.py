"""Episodes: the latest tool-using turn of a conversation, and what governed it.

An episode runs from the last human message to the final answer. It records the
instructions in force, every tool call with its result, and the answer. Input can be
LangChain messages or OpenAI-format message dicts (as logged by most agent frameworks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

__all__ = [
    "Episode",
    "Instruction",
    "MessageLike",
    "ToolCallRecord",
    "ToolDefinition",
    "extract_episode",
    "message_text",
    "to_messages",
]

MessageLike = BaseMessage | Mapping[str, Any]
"""A LangChain message or an OpenAI-format chat message dict."""

InstructionSource = Literal["system", "developer", "user", "tool_definition"]


@dataclass(frozen=True)
class Instruction:
    """One source of instructions that was in force during the episode."""

    source: InstructionSource
    text: str


@dataclass(frozen=True)
class ToolDefinition:
    """A tool the agent could call, as far as it is known."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call of the episode, paired with its result."""

    id: str
    name: str
    args: Mapping[str, Any]
    result: str | None
    """Text of the tool's reply, ``None`` if no reply was seen."""
    error: bool
    """The tool reported an error (``ToolMessage.status == "error"`` or an error field)."""
    round: int
    """Index of the model response that issued it; parallel calls share a round."""


@dataclass(frozen=True)
class Episode:
    """The latest turn of a conversation: everything after the last human message.

    ``messages`` is the whole conversation exactly as given (the confession request
    reuses it verbatim, so provider prompt caches hit); ``start`` is the index of the
    turn's human message.
    """

    messages: tuple[BaseMessage, ...]
    start: int
    instructions: tuple[Instruction, ...]
    tool_calls: tuple[ToolCallRecord, ...]
    final_answer: str | None
    tools: tuple[ToolDefinition, ...] = ()

    @property
    def turn(self) -> tuple[BaseMessage, ...]:
        """Messages of this turn, from the human message on."""
        return self.messages[self.start :]

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.tool_calls)

    @property
    def rounds(self) -> int:
        """Number of model responses in the turn that called tools."""
        return len({c.round for c in self.tool_calls})


def message_text(message: BaseMessage | str | Sequence[Any]) -> str:
    """Visible text of a message or its content: text blocks only.

    Reasoning, thinking and tool blocks are left out, so neither episodes nor report
    parsing mistake a model's scratchpad for what it said.
    """
    content: Any = message.content if isinstance(message, BaseMessage) else message
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") in ("text", "output_text"):
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def _content_of(raw: Any) -> str | list[str | dict[Any, Any]]:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        return [b if isinstance(b, (str, dict)) else str(b) for b in raw]
    return json.dumps(raw, default=str)


def _tool_call_from_openai(raw: Mapping[str, Any], index: int) -> dict[str, Any]:
    function = raw.get("function") if isinstance(raw.get("function"), Mapping) else raw
    assert isinstance(function, Mapping)
    arguments: Any = function.get("arguments", function.get("args", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            arguments = {"__raw_arguments__": arguments}
    if not isinstance(arguments, Mapping):
        arguments = {"__value__": arguments}
    return {
        "id": str(raw.get("id") or f"call_{index}"),
        "name": str(function.get("name", "")),
        "args": dict(arguments),
        "type": "tool_call",
    }


def _from_openai_dict(raw: Mapping[str, Any], index: int) -> BaseMessage:
    role = raw.get("role")
    content = _content_of(raw.get("content"))
    if role == "system":
        return SystemMessage(content=content)
    if role == "developer":
        return SystemMessage(content=content, additional_kwargs={"__openai_role__": "developer"})
    if role in ("user", "human"):
        return HumanMessage(content=content)
    if role in ("assistant", "ai"):
        calls = [_tool_call_from_openai(c, i) for i, c in enumerate(raw.get("tool_calls") or [])]
        return AIMessage(content=content, tool_calls=calls)
    if role in ("tool", "function"):
        error = raw.get("error")
        return ToolMessage(
            content=content,
            tool_call_id=str(raw.get("tool_call_id") or f"call_{index}"),
            name=raw.get("name"),
            status="error" if error else "success",
            additional_kwargs={"error": error} if error else {},
        )
    raise ValueError(
        f"message {index}: unknown role {role!r}; expected system, developer, user, "
        "assistant or tool"
    )


def to_messages(messages: Sequence[MessageLike]) -> list[BaseMessage]:
    """Convert a mix of LangChain messages and OpenAI-format dicts to LangChain messages.

    LangChain messages are passed through unchanged (same objects), so a request built
    from them stays byte-identical to what the agent sent.
    """
    converted: list[BaseMessage] = []
    for index, message in enumerate(messages):
        if isinstance(message, BaseMessage):
            converted.append(message)
        elif isinstance(message, Mapping):
            converted.append(_from_openai_dict(message, index))
        else:
            raise TypeError(
                f"message {index}: expected a LangChain message or an OpenAI-format dict, "
                f"got {type(message).__name__}"
            )
    return converted


def _tool_definition(tool: BaseTool | Mapping[str, Any] | Any) -> ToolDefinition:
    if isinstance(tool, ToolDefinition):
        return tool
    try:
        spec = convert_to_openai_tool(tool)
    except Exception:  # unknown tool shapes still get a name
        return ToolDefinition(name=str(getattr(tool, "name", tool)))
    function = spec.get("function", spec)
    return ToolDefinition(
        name=str(function.get("name", "")),
        description=str(function.get("description", "") or ""),
        parameters=function.get("parameters", {}) or {},
    )


def _is_error(message: ToolMessage) -> bool:
    return message.status == "error" or bool(message.additional_kwargs.get("error"))


def extract_episode(
    messages: Sequence[MessageLike],
    *,
    tools: Sequence[BaseTool | Mapping[str, Any] | ToolDefinition | Any] | None = None,
) -> Episode:
    """Find the latest turn of ``messages`` and collect what governed it.

    Instructions are every system/developer message and every human message of the
    conversation (earlier user turns can still bind the answer), plus the tool
    definitions when ``tools`` is given.
    """
    converted = to_messages(messages)
    start = 0
    for index in range(len(converted) - 1, -1, -1):
        if isinstance(converted[index], HumanMessage):
            start = index
            break

    instructions: list[Instruction] = []
    for message in converted:
        if isinstance(message, SystemMessage):
            source: InstructionSource = (
                "developer"
                if message.additional_kwargs.get("__openai_role__") == "developer"
                else "system"
            )
            instructions.append(Instruction(source, message_text(message)))
        elif isinstance(message, HumanMessage):
            instructions.append(Instruction("user", message_text(message)))
        elif isinstance(message, ChatMessage) and message.role in ("system", "developer"):
            role: InstructionSource = "developer" if message.role == "developer" else "system"
            instructions.append(Instruction(role, message_text(message)))
    definitions = tuple(_tool_definition(t) for t in tools or ())
    for definition in definitions:
        if definition.description:
            instructions.append(
                Instruction("tool_definition", f"{definition.name}: {definition.description}")
            )

    # Pair each call with the first later reply carrying its id: real logs reuse ids.
    pending: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    final_answer: str | None = None
    round_index = 0
    for message in converted[start:]:
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                record = {
                    "id": str(call.get("id") or ""),
                    "name": call["name"],
                    "args": dict(call.get("args") or {}),
                    "result": None,
                    "error": False,
                    "round": round_index,
                }
                pending.append(record)
                records.append(record)
            round_index += 1
            final_answer = None
        elif isinstance(message, AIMessage):
            final_answer = message_text(message)
        elif isinstance(message, ToolMessage):
            for position, record in enumerate(pending):
                if record["id"] == message.tool_call_id:
                    record["result"] = message_text(message)
                    record["error"] = _is_error(message)
                    del pending[position]
                    break
    calls = [ToolCallRecord(**record) for record in records]

    return Episode(
        messages=tuple(converted),
        start=start,
        instructions=tuple(instructions),
        tool_calls=tuple(calls),
        final_answer=final_answer,
        tools=definitions,
    )
