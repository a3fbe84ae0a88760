"""Episodes: the latest task of a conversation, and what governed it.

An episode runs from the user message that gave the current task to the final answer.
It records the instructions in force, every tool call with its reply, and the answer.
Input can be LangChain messages, OpenAI-format message dicts (as logged by most agent
frameworks) or any other form LangChain's ``convert_to_messages`` accepts.
"""

from __future__ import annotations

import functools
import json
import weakref
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
    convert_to_messages,
    messages_from_dict,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from confessional.ending import ANSWERED, Ending, ending_of_messages

__all__ = [
    "Episode",
    "Instruction",
    "MessageLike",
    "ToolCallRecord",
    "ToolDefinition",
    "extract_episode",
    "message_text",
    "task_start",
    "to_messages",
]

MessageLike = BaseMessage | Mapping[str, Any] | tuple[str, Any] | list[Any] | str
"""A LangChain message, an OpenAI-format chat message dict, or another form LangChain's
``convert_to_messages`` accepts: a ``(role, content)`` tuple, a bare string (a human
message) or a ``type``-keyed message dict."""

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
    """One tool call of the episode, paired with its reply."""

    id: str
    """The call's id as the model gave it; ``""`` when it had none (never invented)."""
    name: str
    args: Mapping[str, Any]
    result: str | None
    """Text of the tool's reply, ``None`` if no reply was seen."""
    error: bool
    """The tool reported an error (``ToolMessage.status == "error"`` or an error field)."""
    round: int
    """Index of the model response that issued it; parallel calls share a round."""
    message_index: int = -1
    """Index in :attr:`Episode.messages` of the model response that issued the call."""
    reply_index: int | None = None
    """Index in :attr:`Episode.messages` of the paired reply, ``None`` if unanswered."""
    position: int = -1
    """Index of this call in :attr:`Episode.tool_calls`."""

    @property
    def evidence(self) -> str:
        """How findings name the call: its id, else ``call:<position>`` (display only)."""
        return self.id or f"call:{self.position}"


@dataclass(frozen=True)
class Episode:
    """The current task of a conversation: every tool call since the task was given.

    ``messages`` is the whole conversation exactly as given (the confession request
    reuses it verbatim, so provider prompt caches hit); ``start`` is the index of the
    user message that gave the task.

    Scope rule: a user message starts a new task unless it

    - sits between a tool reply and the next model response (an interjection, or a
      defence that re-sends the prompt between tool rounds), or
    - repeats, after folding case and whitespace, a user message of the current task
      while that task is still open (no final answer yet).

    A repeated prompt after a final answer is a new task: the user asked again. With no
    user message at all, the episode starts at message 0.
    """

    messages: tuple[BaseMessage, ...]
    start: int
    instructions: tuple[Instruction, ...]
    tool_calls: tuple[ToolCallRecord, ...]
    final_answer: str | None
    tools: tuple[ToolDefinition, ...] = ()
    ending: Ending = ANSWERED
    """How the episode ended (see :mod:`confessional.ending`)."""

    @property
    def turn(self) -> tuple[BaseMessage, ...]:
        """Messages of this task, from the user message that gave it on."""
        return self.messages[self.start :]

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.tool_calls)

    @functools.cached_property
    def text_size(self) -> int:
        """Characters of text in the episode's messages (content only), to tell a large
        episode, whose CPU-heavy steps leave the event loop, from an ordinary one."""
        return sum(_content_size(m.content) for m in self.messages)

    @property
    def rounds(self) -> int:
        """Number of model responses in the task that called tools."""
        return len({c.round for c in self.tool_calls})


def _content_size(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(_content_size(block) for block in content)
    if isinstance(content, Mapping):
        return sum(_content_size(value) for value in content.values())
    return 0


LARGE_EPISODE_CHARS = 250_000
"""From this many characters of text (:attr:`Episode.text_size`) on, async paths run the
episode's CPU-heavy steps (the audit's checks, building the request) on a worker thread:
at about 1 ms per 10 kB for the audit, a larger episode would stall the event loop for
longer than a tick of a busy server, and a smaller one costs less than the hand-off."""


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


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw, strict=False) if raw.strip() else {}
        except json.JSONDecodeError:
            return {"__raw_arguments__": raw}
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        return {"__value__": raw}
    return dict(raw)


def _optional_id(raw: Any) -> str | None:
    """An id as given: ``None`` stays ``None``, anything else becomes text. Never invented."""
    return None if raw is None else str(raw)


def _tool_call_from_openai(raw: Any, index: int) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"message {index}: a tool call must be a dict, got {type(raw).__name__}")
    function = raw.get("function") if isinstance(raw.get("function"), Mapping) else raw
    assert isinstance(function, Mapping)
    return {
        "id": _optional_id(raw.get("id")),
        "name": str(function.get("name") or ""),
        "args": _arguments(function.get("arguments", function.get("args"))),
        "type": "tool_call",
    }


def _from_openai_dict(raw: Mapping[str, Any], index: int) -> BaseMessage:
    role = raw.get("role")
    content = _content_of(raw.get("content"))
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    named: dict[str, Any] = {"name": name} if name else {}
    if role == "system":
        return SystemMessage(content=content, **named)
    if role == "developer":
        return SystemMessage(
            content=content, additional_kwargs={"__openai_role__": "developer"}, **named
        )
    if role in ("user", "human"):
        return HumanMessage(content=content, **named)
    if role in ("assistant", "ai"):
        raw_calls = raw.get("tool_calls") or []
        if not isinstance(raw_calls, Sequence) or isinstance(raw_calls, str):
            raise ValueError(f"message {index}: tool_calls must be a list")
        calls = [_tool_call_from_openai(c, index) for c in raw_calls]
        legacy = raw.get("function_call")  # the pre-tools OpenAI functions API
        if isinstance(legacy, Mapping):
            calls.append(_tool_call_from_openai({"function": legacy}, index))
        return AIMessage(content=content, tool_calls=calls, **named)
    if role in ("tool", "function"):
        error = raw.get("error")
        return ToolMessage(
            content=content,
            tool_call_id=str(raw.get("tool_call_id") or ""),
            name=name,
            status="error" if error else "success",
            additional_kwargs={"error": error} if error else {},
        )
    raise ValueError(
        f"message {index}: unknown role {role!r}; expected system, developer, user, "
        "assistant or tool"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _from_langchain_form(message: Any, index: int) -> BaseMessage:
    """Tuples, strings and ``type``-keyed dicts, converted as LangChain converts them."""
    try:
        if isinstance(message, Mapping) and "data" in message and "type" in message:
            return messages_from_dict([dict(message)])[0]
        item = dict(message) if isinstance(message, Mapping) else message
        return convert_to_messages([item])[0]
    except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise ValueError(f"message {index}: {_first_line(exc)}") from exc


def to_messages(messages: Sequence[MessageLike]) -> list[BaseMessage]:
    """Convert message-like values to LangChain messages.

    Accepted: LangChain messages (returned as the very same objects, so a request built
    from them stays identical to what the agent sent); OpenAI-format dicts (``role``,
    ``tool_calls`` whose ``function.arguments`` is a JSON string or a dict,
    ``tool_call_id``, the ``developer`` role, ``null`` content); and every other form
    :func:`langchain_core.messages.convert_to_messages` accepts: ``(role, content)``
    tuples, bare strings (human messages), ``type``-keyed dicts and serialised
    messages. Raises ``TypeError`` or ``ValueError`` naming the index of a bad message.
    """
    if isinstance(messages, (str, Mapping, BaseMessage)):
        raise TypeError("messages must be a list of messages, not a single message")
    converted: list[BaseMessage] = []
    for index, message in enumerate(messages):
        if isinstance(message, BaseMessage):
            converted.append(message)
        elif isinstance(message, Mapping) and "role" in message:
            converted.append(_from_openai_dict(message, index))
        elif isinstance(message, Mapping):
            if "type" not in message and "lc" not in message:
                raise ValueError(
                    f"message {index}: a message dict needs a 'role' (OpenAI format) or a "
                    f"'type' (LangChain format); got keys {sorted(map(str, message))}"
                )
            converted.append(_from_langchain_form(message, index))
        elif isinstance(message, str) or (isinstance(message, (tuple, list)) and len(message) == 2):
            converted.append(_from_langchain_form(message, index))
        elif isinstance(message, (tuple, list)):
            raise ValueError(
                f"message {index}: a message tuple must be (role, content), "
                f"got {len(message)} items"
            )
        else:
            raise TypeError(
                f"message {index}: expected a LangChain message, an OpenAI-format dict, "
                f"a (role, content) tuple or a string, got {type(message).__name__}"
            )
    return converted


_converted: dict[int, tuple[weakref.ref[Any], tuple[object, object], dict[str, Any]]] = {}


def openai_tool_spec(tool: Any) -> dict[str, Any]:
    """``convert_to_openai_tool(tool)``, converted once per tool object.

    A turn's tools are converted by the episode, the token budget and the provider's own
    ``bind_tools``; the first two share this. A tool object is cached while it lives and
    while its name and description stay the same (a tool edited in place is converted
    again); plain dicts are converted each time (cheap: they are specs already). The
    returned dict is shared: read it, do not change it.
    """
    key = id(tool)
    fingerprint = (getattr(tool, "name", None), getattr(tool, "description", None))
    cached = _converted.get(key)
    if cached is not None and cached[0]() is tool and cached[1] == fingerprint:
        return cached[2]
    spec = convert_to_openai_tool(tool)
    try:
        # The entry goes when the tool does, so its id cannot be reused while cached.
        alive = weakref.ref(tool, lambda _, key=key: _converted.pop(key, None))  # type: ignore[misc]
    except TypeError:  # dicts and other shapes without weak references
        return spec
    _converted[key] = (alive, fingerprint, spec)
    return spec


def _tool_definition(tool: BaseTool | Mapping[str, Any] | Any) -> ToolDefinition:
    if isinstance(tool, ToolDefinition):
        return tool
    try:
        spec = openai_tool_spec(tool)
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


def _folded(text: str) -> str:
    return " ".join(text.casefold().split())


def task_start(messages: Sequence[BaseMessage]) -> int:
    """Index of the user message that gave the current task (see :class:`Episode`)."""
    start = 0
    found = False
    prompts: set[str] = set()
    answered = False
    after_tool_reply = False
    for index, message in enumerate(messages):
        if isinstance(message, HumanMessage):
            text = _folded(message_text(message))
            repeated = text in prompts and not answered
            if found and (after_tool_reply or repeated):
                prompts.add(text)
                continue
            start, found, prompts, answered = index, True, {text}, False
        elif isinstance(message, AIMessage):
            after_tool_reply = False
            if not (message.tool_calls or message.invalid_tool_calls):
                answered = True
        elif isinstance(message, ToolMessage):
            after_tool_reply = True
    return start


@dataclass
class _PendingCall:
    id: str
    name: str
    args: dict[str, Any]
    message_index: int
    round: int
    result: str | None = None
    error: bool = False
    reply_index: int | None = None


def _calls_of(message: AIMessage) -> list[tuple[str, str, dict[str, Any]]]:
    calls = [
        (str(c.get("id") or ""), str(c.get("name") or ""), dict(c.get("args") or {}))
        for c in message.tool_calls
    ]
    # Calls whose arguments did not parse are still calls: their replies must not be
    # paired with the next call.
    calls.extend(
        (str(c.get("id") or ""), str(c.get("name") or ""), {"__raw_arguments__": c.get("args")})
        for c in message.invalid_tool_calls
    )
    return calls


def _take_pending(pending: list[_PendingCall], reply: ToolMessage) -> _PendingCall | None:
    """The call a reply answers: the oldest unanswered call with its id; without a
    matching id, first in first out (calls without an id first, same tool name first)."""
    if not pending:
        return None
    reply_id = str(reply.tool_call_id or "")
    if reply_id:
        for position, call in enumerate(pending):
            if call.id == reply_id:
                return pending.pop(position)
    pool = [i for i, c in enumerate(pending) if not c.id] or list(range(len(pending)))
    if reply.name:
        same_name = [i for i in pool if pending[i].name == reply.name]
        pool = same_name or pool
    return pending.pop(pool[0])


def _paired_calls(messages: Sequence[BaseMessage], start: int) -> list[_PendingCall]:
    pending: list[_PendingCall] = []
    calls: list[_PendingCall] = []
    round_index = 0
    for index, message in enumerate(messages):
        if isinstance(message, AIMessage):
            issued = _calls_of(message)
            if not issued:
                continue
            for call_id, name, args in issued:
                call = _PendingCall(call_id, name, args, index, round_index)
                pending.append(call)
                if index >= start:
                    calls.append(call)
            if index >= start:
                round_index += 1
        elif isinstance(message, ToolMessage):
            answered = _take_pending(pending, message)
            if answered is not None:
                answered.result = message_text(message)
                answered.error = _is_error(message)
                answered.reply_index = index
    return calls


def extract_episode(
    messages: Sequence[MessageLike],
    *,
    tools: Sequence[BaseTool | Mapping[str, Any] | ToolDefinition | Any] | None = None,
    ending: Ending | None = None,
) -> Episode:
    """Find the current task of ``messages`` and collect what governed it.

    ``ending``: how the run ended, when the caller knows (an exception, a cap). Default
    ``None``: read from the messages (the closing notice of a LangChain limit middleware,
    else an answer). A limit's notice is not taken as the model's final answer.

    The task starts at the user message :func:`task_start` finds (the scope rule is in
    :class:`Episode`). Calls pair with replies by id when the id is present and matches
    an unanswered call, else first in first out with the oldest unanswered call; ids are
    never invented.

    Instructions are every system/developer message and every human message of the
    conversation (earlier user turns can still bind the answer), plus the tool
    definitions when ``tools`` is given.
    """
    converted = to_messages(messages)
    start = task_start(converted)

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

    calls = tuple(
        ToolCallRecord(
            id=call.id,
            name=call.name,
            args=call.args,
            result=call.result,
            error=call.error,
            round=call.round,
            message_index=call.message_index,
            reply_index=call.reply_index,
            position=position,
        )
        for position, call in enumerate(_paired_calls(converted, start))
    )
    final_answer: str | None = None
    for message in converted[start:]:
        if isinstance(message, AIMessage):
            if message.tool_calls or message.invalid_tool_calls:
                final_answer = None
            else:
                final_answer = message_text(message)
    announced = ending_of_messages(converted)
    if announced is not None:
        final_answer = None  # the limit's notice, not the model's answer
    return Episode(
        messages=tuple(converted),
        start=start,
        instructions=tuple(instructions),
        tool_calls=calls,
        final_answer=final_answer,
        tools=definitions,
        ending=ending or announced or ANSWERED,
    )
