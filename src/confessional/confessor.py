"""The Confessor: asks a chat model for a confession report about an episode."""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any, Literal, get_args

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig

from confessional._timeouts import await_with_timeout, run_with_timeout
from confessional.confession import Confession
from confessional.episode import Episode, MessageLike, extract_episode
from confessional.errors import ConfessionParseError, ConfigurationError
from confessional.parsing import parse_report
from confessional.request import RequestRole, build_request, resolve_request_role
from confessional.schema import ConfessionReport

__all__ = ["Confessor", "OutputMode", "init_model", "model_name_of"]

OutputMode = Literal["auto", "structured", "text"]
"""How the report is requested:

- ``structured``: ``model.with_structured_output(ConfessionReport)`` (provider-native
  JSON schema or tool calling). Most reliable, but binds a different tool set than the
  agent's, so the provider's prompt cache misses on the tool definitions.
- ``text``: the request asks for JSON in plain text and it is parsed robustly. The
  agent's prefix is reused as is: the cache-friendly choice for long episodes.
- ``auto`` (default): ``structured`` when the model supports it, else ``text``.
"""

CONFESSION_TAGS: tuple[str, ...] = ("nostream", "confessional")
"""Tags on the confession's own model call: ``nostream`` keeps its tokens out of
LangGraph's message stream, ``confessional`` lets callback handlers skip it."""

def model_name_of(model: BaseChatModel) -> str:
    """The model's name as providers report it, else its class name."""
    for attribute in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def init_model(spec: str) -> BaseChatModel:
    """``init_chat_model(spec)`` with errors that say which extra or setting is missing."""
    from confessional.models import load_chat_model

    return load_chat_model(spec)


def _internal_call_metadata() -> dict[str, Any]:
    try:
        from langchain.agents.middleware.internal_call_transformer import internal_call_metadata
    except ImportError:  # older langchain: the nostream tag alone hides the call
        return {}
    return internal_call_metadata()


def _call_config(config: RunnableConfig | None) -> RunnableConfig:
    """The caller's config (callbacks, so the call nests in its trace) plus hiding tags."""
    merged = RunnableConfig(**(config or {}))
    merged["tags"] = list(dict.fromkeys([*merged.get("tags", []), *CONFESSION_TAGS]))
    merged["metadata"] = {
        **merged.get("metadata", {}),
        **_internal_call_metadata(),
        "lc_source": "confession",
    }
    merged["run_name"] = "confession"
    return merged


def _retry_messages(request: list[BaseMessage], reply: Any, error: str) -> list[BaseMessage]:
    previous = reply if isinstance(reply, AIMessage) else AIMessage(content=str(reply or ""))
    if previous.tool_calls:  # an unanswered tool call would make the history invalid
        previous = AIMessage(content=str(previous.tool_calls[0].get("args", "")))
    return [
        *request,
        previous,
        HumanMessage(
            content=f"Your confession could not be used: {error}. Reply again with only the "
            "corrected JSON object."
        ),
    ]


class Confessor:
    """Asks a model for a :class:`ConfessionReport` about the latest episode.

    Args:
        model: any ``BaseChatModel``, an ``init_chat_model`` string such as
            ``"openai:gpt-4.1-mini"``, or ``None`` to use the model given per call (the
            surfaces pass the agent's own model, which is the paper's method).
        output_mode: see :data:`OutputMode`. Default ``"auto"``.
        request_role: see :data:`~confessional.request.RequestRole`. Default ``"auto"``:
            system role, user role for Anthropic-style APIs that reject a late system
            message.
        timeout_s: wall-clock limit for the whole confession, retry included. Default 60 s,
            above a normal reasoning-model reply but short enough not to stall the agent.
        parse_retries: extra attempts after an unparseable reply, with the error shown to
            the model. Default 1 (the paper's models rarely need more; each costs a call).
        token_budget: approximate token budget of the request; longer episodes are
            compacted (tool outputs first, instructions never). Default 100 000, under the
            context window of current frontier models with room for the reply.
    """

    def __init__(
        self,
        model: BaseChatModel | str | None = None,
        *,
        output_mode: OutputMode = "auto",
        request_role: RequestRole = "auto",
        timeout_s: float = 60.0,
        parse_retries: int = 1,
        token_budget: int = 100_000,
    ) -> None:
        for name, value, allowed in (
            ("output_mode", output_mode, get_args(OutputMode)),
            ("request_role", request_role, get_args(RequestRole)),
        ):
            if value not in allowed:
                raise ConfigurationError(
                    f"{name}={value!r} is not valid; choose one of: "
                    + ", ".join(map(repr, allowed))
                )
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be positive, got {timeout_s!r}")
        if parse_retries < 0:
            raise ConfigurationError(f"parse_retries must be >= 0, got {parse_retries!r}")
        if token_budget < 1000:
            raise ConfigurationError(f"token_budget must be >= 1000, got {token_budget!r}")
        if isinstance(model, str):
            model = init_model(model)
        if model is not None and not isinstance(model, BaseChatModel):
            raise ConfigurationError(
                f"model must be a BaseChatModel, an init_chat_model string or None, "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.output_mode: OutputMode = output_mode
        self.request_role: RequestRole = request_role
        self.timeout_s = timeout_s
        self.parse_retries = parse_retries
        self.token_budget = token_budget

    def __repr__(self) -> str:
        name = model_name_of(self.model) if self.model is not None else "agent's model"
        return f"Confessor(model={name!r}, output_mode={self.output_mode!r})"

    # -- shared preparation ------------------------------------------------------------

    def _prepare(
        self,
        messages: Sequence[MessageLike] | Episode,
        model: BaseChatModel | None,
        tools: Sequence[Any] | None,
    ) -> tuple[Episode, BaseChatModel | None, list[BaseMessage]]:
        episode = (
            messages if isinstance(messages, Episode) else extract_episode(messages, tools=tools)
        )
        chat = self.model or model
        role = resolve_request_role(self.request_role, chat)
        return episode, chat, build_request(episode, role=role, token_budget=self.token_budget)

    def _runnable(self, chat: BaseChatModel) -> tuple[Runnable[Any, Any], bool]:
        """The runnable to call, and whether it is the structured-output form."""
        if self.output_mode != "text":
            try:
                return chat.with_structured_output(ConfessionReport, include_raw=True), True
            except NotImplementedError:
                if self.output_mode == "structured":
                    raise
        return chat, False

    @staticmethod
    def _read(reply: Any, structured: bool) -> ConfessionReport:
        """The report in a reply, or ConfessionParseError."""
        if structured and isinstance(reply, Mapping):
            parsed, raw = reply.get("parsed"), reply.get("raw")
            if isinstance(parsed, ConfessionReport):
                return parsed
            return parse_report(raw if raw is not None else "")
        return parse_report(reply)

    def _result(
        self, episode: Episode, chat: BaseChatModel, started: float, **fields: Any
    ) -> Confession:
        return Confession(
            tool_call_count=len(episode.tool_calls),
            model_name=model_name_of(chat),
            duration_s=time.perf_counter() - started,
            **fields,
        )

    # -- the dialogue, shared by the sync and async drivers --------------------------

    def _dialogue(
        self, chat: BaseChatModel, request: list[BaseMessage]
    ) -> Generator[tuple[Runnable[Any, Any], list[BaseMessage]], Any, ConfessionReport]:
        """Yields ``(runnable, messages)`` to call and receives the reply; returns the report.

        Keeping the retry logic free of I/O lets ``confess`` and ``aconfess`` share it.
        """
        runnable, structured = self._runnable(chat)
        messages = request
        for attempt in range(self.parse_retries + 1):
            reply = yield runnable, messages
            try:
                return self._read(reply, structured)
            except ConfessionParseError as exc:
                if attempt == self.parse_retries:
                    raise
                raw = reply.get("raw") if structured and isinstance(reply, Mapping) else reply
                messages = _retry_messages(request, raw, str(exc))
        raise AssertionError("unreachable")

    def _drive(
        self, chat: BaseChatModel, request: list[BaseMessage], config: RunnableConfig
    ) -> ConfessionReport:
        dialogue = self._dialogue(chat, request)
        runnable, messages = next(dialogue)
        while True:
            try:
                runnable, messages = dialogue.send(runnable.invoke(messages, config=config))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def _adrive(
        self, chat: BaseChatModel, request: list[BaseMessage], config: RunnableConfig
    ) -> ConfessionReport:
        dialogue = self._dialogue(chat, request)
        runnable, messages = next(dialogue)
        while True:
            try:
                reply = await runnable.ainvoke(messages, config=config)
                runnable, messages = dialogue.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def confess(
        self,
        messages: Sequence[MessageLike] | Episode,
        *,
        model: BaseChatModel | None = None,
        tools: Sequence[Any] | None = None,
        model_settings: Mapping[str, Any] | None = None,
        config: RunnableConfig | None = None,
    ) -> Confession:
        """Confess the latest episode of ``messages``. Never raises for model failures.

        ``tools`` and ``model_settings``: the agent's own request (bound tools as given to
        the model, request parameters), so the confession call can replay it.
        """
        started = time.perf_counter()
        episode, chat, request = self._prepare(messages, model, tools)
        if chat is None:
            return Confession(
                status="error",
                error="no model: pass model= to the Confessor",
                error_type="no_model",
            )
        try:
            report = run_with_timeout(
                lambda: self._drive(chat, request, _call_config(config)), self.timeout_s
            )
        except Exception as exc:
            return self._result(episode, chat, started, status="error", **_describe(exc))
        return self._result(episode, chat, started, status="ok", report=report)

    async def aconfess(
        self,
        messages: Sequence[MessageLike] | Episode,
        *,
        model: BaseChatModel | None = None,
        tools: Sequence[Any] | None = None,
        model_settings: Mapping[str, Any] | None = None,
        config: RunnableConfig | None = None,
    ) -> Confession:
        """Async :meth:`confess`, with the same behaviour."""
        started = time.perf_counter()
        episode, chat, request = self._prepare(messages, model, tools)
        if chat is None:
            return Confession(
                status="error",
                error="no model: pass model= to the Confessor",
                error_type="no_model",
            )
        try:
            report = await await_with_timeout(
                self._adrive(chat, request, _call_config(config)), self.timeout_s
            )
        except Exception as exc:
            return self._result(episode, chat, started, status="error", **_describe(exc))
        return self._result(episode, chat, started, status="ok", report=report)


def _describe(exc: BaseException) -> dict[str, str]:
    """``error`` and ``error_type`` fields for a failed confession."""
    if isinstance(exc, ConfessionParseError):
        return {"error": str(exc), "error_type": "parse_error"}
    if isinstance(exc, TimeoutError):
        return {"error": str(exc), "error_type": "timeout"}
    # Provider exceptions can quote the prompt; keep only the type and a bounded message.
    return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "error_type": type(exc).__name__}
