"""The callback-event recorder: rebuilds each outermost run's episode from LangChain
callback events (``on_chat_model_start``, ``on_llm_end``, ``on_tool_*``), keyed by run id
and parent run id so concurrent runs never mix. Used by the callback handlers."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from confessional import semconv
from confessional.confession import Confession
from confessional.confessor import CONFESSION_TAGS
from confessional.errors import ConfigurationError

__all__ = ["RunRecorder", "RunTrace"]


@dataclass
class _ToolRun:
    name: str
    args: dict[str, Any]
    call_id: str | None
    seq: int
    output: str | None = None
    error: bool = False


@dataclass
class RunTrace:
    """What one outermost run has shown through callbacks so far."""

    model_run: UUID | None = None
    model_input: list[BaseMessage] = field(default_factory=list)
    model_output: AIMessage | None = None
    model_end_seq: int = -1
    tools: list[Any] = field(default_factory=list)
    tool_runs: dict[UUID, _ToolRun] = field(default_factory=dict)


_IGNORED_TAGS = frozenset({*CONFESSION_TAGS[1:], semconv.TAG_FLAGGED})


def _own_run(tags: Sequence[str] | None, metadata: Mapping[str, Any] | None, name: Any) -> bool:
    """A run confessional itself started: its confession call or its verdict marker."""
    if tags and _IGNORED_TAGS.intersection(tags):
        return True
    if metadata and semconv.METADATA_CONFESSION_ID in metadata:
        return True
    return bool(name == semconv.LANGCHAIN_RUN_NAME)


def _unreturned(aborted_by: str) -> str:
    return f"[no result: the run ended before this call returned ({aborted_by})]"


def _closing_tail(
    model_output: AIMessage | None, closing: Sequence[BaseMessage], answered: set[str]
) -> list[BaseMessage]:
    """The run's output messages after its last model response, minus tool replies the
    callbacks already gave (found by the response's id; nothing when it is not there)."""
    if model_output is None or model_output.id is None:
        return []
    position = next(
        (i for i, m in enumerate(closing) if m.id == model_output.id and isinstance(m, AIMessage)),
        None,
    )
    if position is None:
        return []
    tail: list[BaseMessage] = []
    for message in closing[position + 1 :]:
        if isinstance(message, ToolMessage):
            if message.tool_call_id in answered:
                continue
            answered.add(message.tool_call_id)
        tail.append(message)
    return tail


def _text(output: Any) -> tuple[str, bool]:
    if isinstance(output, ToolMessage):
        return str(output.content), output.status == "error"
    if isinstance(output, BaseMessage):
        return str(output.content), False
    return str(output), False


class RunRecorder:
    """Rebuilds each outermost run's episode from callback events, keyed by root run id,
    and keeps the latest confessions per run (bounded)."""

    def __init__(self, *, max_history: int) -> None:
        if max_history < 1:
            raise ConfigurationError("max_history must be at least 1")
        self.max_history = max_history
        self._lock = threading.Lock()
        self._root: dict[UUID, UUID] = {}
        self._members: dict[UUID, set[UUID]] = {}
        self._ignored: set[UUID] = set()
        self._traces: dict[UUID, RunTrace] = {}
        self._history: OrderedDict[UUID, Confession] = OrderedDict()
        self._seq = 0

    # -- bookkeeping (thread-safe; sync handlers run in executor threads under ainvoke)

    def _enter(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        own: bool,
    ) -> RunTrace | None:
        with self._lock:
            if own or (parent_run_id is not None and parent_run_id in self._ignored):
                self._ignored.add(run_id)
                return None
            if parent_run_id is None:
                root = run_id
                self._traces[root] = RunTrace()
                self._members[root] = {root}
            else:
                root = self._root.get(parent_run_id, parent_run_id)
                self._members.setdefault(root, set()).add(run_id)
            self._root[run_id] = root
            return self._traces.get(root)

    def _trace_of(self, run_id: UUID) -> RunTrace | None:
        root = self._root.get(run_id)
        return self._traces.get(root) if root is not None else None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def chain_start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        name: Any,
    ) -> None:
        self._enter(run_id, parent_run_id, _own_run(tags, metadata, name))

    def chat_model_start(
        self,
        messages: list[list[BaseMessage]],
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        invocation_params: Mapping[str, Any] | None,
    ) -> None:
        trace = self._enter(run_id, parent_run_id, _own_run(tags, metadata, None))
        if trace is None or not messages:
            return
        with self._lock:
            trace.model_run = run_id
            trace.model_input = list(messages[0])
            trace.model_output = None
            tools = (invocation_params or {}).get("tools")
            if tools:
                trace.tools = list(tools)

    def llm_end(self, response: LLMResult, run_id: UUID) -> None:
        with self._lock:
            trace = self._trace_of(run_id)
            if trace is None or trace.model_run != run_id or not response.generations:
                return
            generation = response.generations[0][0] if response.generations[0] else None
            if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
                trace.model_output = generation.message
                trace.model_end_seq = self._next_seq()

    def tool_start(
        self,
        serialized: Mapping[str, Any] | None,
        input_str: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        inputs: Mapping[str, Any] | None,
        extra: Mapping[str, Any],
    ) -> None:
        trace = self._enter(run_id, parent_run_id, _own_run(tags, metadata, None))
        if trace is None:
            return
        name = str(extra.get("name") or (serialized or {}).get("name") or "tool")
        call_id = extra.get("tool_call_id")
        with self._lock:
            trace.tool_runs[run_id] = _ToolRun(
                name=name,
                args=dict(inputs) if inputs is not None else {"input": input_str},
                call_id=str(call_id) if call_id else None,
                seq=self._next_seq(),
            )

    def tool_end(self, output: Any, run_id: UUID, error: bool = False) -> None:
        with self._lock:
            trace = self._trace_of(run_id)
            tool_run = trace.tool_runs.get(run_id) if trace is not None else None
            if tool_run is None:
                return
            tool_run.output, failed = _text(output)
            tool_run.error = error or failed
            tool_run.seq = self._next_seq()

    def finish(self, run_id: UUID, parent_run_id: UUID | None) -> RunTrace | None:
        """The finished root run's trace, or ``None`` when this is not a root we track."""
        if parent_run_id is not None:
            return None
        with self._lock:
            self._ignored.discard(run_id)
            trace = self._traces.pop(run_id, None)
            for member in self._members.pop(run_id, set()):
                self._root.pop(member, None)
                self._ignored.discard(member)
            return trace

    # -- episode and verdict ------------------------------------------------------

    @staticmethod
    def episode_messages(
        trace: RunTrace,
        *,
        closing: Sequence[BaseMessage] = (),
        aborted_by: str | None = None,
    ) -> list[BaseMessage]:
        """The conversation as the last model call saw it, its answer, and later tools.

        ``closing``: the run's own output messages, when it returned some. What follows
        the last model response there (a limit middleware's artificial tool replies and
        closing notice) never passed through a model or tool callback, so it is taken
        from the output.

        ``aborted_by``: the run ended with this exception (its description). A call the
        model made that never returned (a tool still running, a call a limit refused
        before it ran) gets a reply saying so, marked as an error: the history stays
        valid for providers that require a reply to every call, as LangChain's own limit
        middleware keeps it.
        """
        messages: list[BaseMessage] = list(trace.model_input)
        if trace.model_output is not None:
            messages.append(trace.model_output)
        answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
        requested = [
            c.get("id") for c in (trace.model_output.tool_calls if trace.model_output else [])
        ]
        later = sorted(
            (r for r in trace.tool_runs.values() if r.seq > trace.model_end_seq),
            key=lambda r: r.seq,
        )
        for index, tool_run in enumerate(later):
            if tool_run.call_id and tool_run.call_id in answered:
                continue
            output, failed = tool_run.output, tool_run.error
            if output is None:
                if aborted_by is None:
                    continue
                output, failed = _unreturned(aborted_by), True
            call_id = tool_run.call_id or f"callback_tool_{index}"
            if call_id not in requested:  # a tool no model call asked for (plain chains)
                messages.append(
                    AIMessage(
                        content="",
                        tool_calls=[
                            {
                                "name": tool_run.name,
                                "args": tool_run.args,
                                "id": call_id,
                                "type": "tool_call",
                            }
                        ],
                    )
                )
            messages.append(
                ToolMessage(
                    content=output,
                    tool_call_id=call_id,
                    name=tool_run.name,
                    status="error" if failed else "success",
                )
            )
            answered.add(call_id)
        messages.extend(_closing_tail(trace.model_output, closing, answered))
        if aborted_by is not None and trace.model_output is not None:
            for call in trace.model_output.tool_calls:
                if call.get("id") and call["id"] not in answered:
                    messages.append(
                        ToolMessage(
                            content=_unreturned(aborted_by),
                            tool_call_id=call["id"],
                            name=call["name"],
                            status="error",
                        )
                    )
        return messages

    def record(self, run_id: UUID, confession: Confession) -> None:
        with self._lock:
            self._history[run_id] = confession
            while len(self._history) > self.max_history:
                self._history.popitem(last=False)

    @property
    def confessions(self) -> list[Confession]:
        with self._lock:
            return list(self._history.values())

    def confession_for(self, run_id: UUID) -> Confession | None:
        with self._lock:
            return self._history.get(run_id)
