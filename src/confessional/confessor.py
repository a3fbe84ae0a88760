"""The Confessor: asks a chat model for a confession report about an episode.

The confession call replays the agent's last request (see :mod:`confessional.request`):
same system message, same message objects, same bound tools and request parameters, plus
one request message. One sans-IO dialogue (:meth:`Confessor._dialogue`) holds the fallback
and retry logic; :meth:`Confessor.confess` and :meth:`Confessor.aconfess` only drive it.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
)
from pydantic import SecretStr, ValidationError
from typing_extensions import assert_never

from confessional._aio import adrive, drive
from confessional._callbacks import tracer_watching
from confessional._scrub import scrub_error
from confessional._timeouts import await_with_timeout, run_with_timeout
from confessional.confession import Confession, Replay, TokenUsage
from confessional.episode import Episode, MessageLike, extract_episode
from confessional.errors import ConfessionParseError, ConfigurationError
from confessional.health import report_failure
from confessional.models import load_chat_model
from confessional.parsing import parse_report, quoted_reports
from confessional.request import (
    RequestRole,
    RequestShape,
    RequestStyle,
    bind_replay,
    binds_tools,
    build_request,
    build_retry,
    forces_tool_use,
    model_rejects_late_system,
    provider_of,
    reply_text,
    resolve_request_role,
    tool_definition_tokens,
    validate_request_style,
)
from confessional.schema import FAILING_GRADE, UNREPORTED_LABELS, ConfessionReport

__all__ = ["Confessor", "OutputMode", "check_model", "model_name_of", "worst_report"]

OutputMode = Literal["auto", "structured", "text"]
"""How the report is requested. Every mode replays the agent's tools and messages; they
differ in what the providers key their prompt cache on, and so in what a confession costs.

- ``auto`` (default): billed at the cached rate. The request keeps the agent's tool choice
  and adds no output schema, so everything the providers key their cache on is the
  agent's (OpenAI: the longest identical prefix, a response schema placed before the
  system message; Anthropic: tools, then system, then messages, the messages' cache
  dropped when ``tool_choice`` or thinking settings change). The report is asked for in
  the request's text. A reply that calls a tool or holds no usable report gets the
  bounded retry with tool choice "none" and, for OpenAI and Anthropic, the native schema;
  that one call is billed uncached. An agent's tool choice that forces a tool call cannot
  be kept: its confession starts as the retry would.
- ``structured``: the provider's native JSON schema next to the tools, tool choice
  "none", from the first call: OpenAI ``response_format`` (chat completions; ``text.format``
  on the Responses API, which langchain-openai maps; OpenAI-compatible servers such as
  vLLM, llama.cpp and Ollama accept ``json_schema``), Anthropic ``output_config.format``.
  Other model classes use ``with_structured_output`` (tool calling), which cannot keep the
  agent's tools. Cost: the whole request is billed uncached on both APIs (the schema
  changes OpenAI's prefix; the tool choice drops Anthropic's cached messages, keeping only
  tools and system). A failed structured call (an HTTP error for the schema) falls back to
  the same request in text.
- ``text``: tool choice "none", JSON asked for in the text. Cost: on Anthropic only the
  tools and system are cached (the changed tool choice drops the messages); on OpenAI the
  prefix is kept.

In every mode a reply without a usable report (parse error, cut off at the length limit,
off-schema label, refusal, a tool call) gets at most ``parse_retries`` retries that show
the error.
"""

logger = logging.getLogger("confessional.confessor")

CONFESSION_TAGS: tuple[str, ...] = ("nostream", "confessional")
"""Tags on the confession's own model call: ``nostream`` keeps its tokens out of
LangGraph's message stream, ``confessional`` lets callback handlers skip it."""

# Errors about the reply rather than the request, raised inside some SDK calls (OpenAI's
# parse helpers on a truncated or off-schema reply, with_structured_output's parsers).
_REPLY_ERROR_CLASSES = frozenset(
    {"LengthFinishReasonError", "ContentFilterFinishReasonError", "OutputParserException"}
)
_LENGTH_FINISH = frozenset({"length", "max_tokens"})
# Alternatives to an API key: a model with one of these set is not missing credentials.
_CREDENTIAL_SUFFIXES = ("_ad_token", "_ad_token_provider", "credentials", "auth_token")
_AUTH_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


def model_name_of(model: BaseChatModel) -> str:
    """The model's name as providers report it, else its class name."""
    for attribute in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


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


def _key_value(value: Any) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


def _missing_api_key(model: BaseChatModel) -> str | None:
    """The model's empty API-key field, if it has key fields and no credential is set."""
    fields = type(model).model_fields
    key_fields = [name for name in fields if name == "api_key" or name.endswith("_api_key")]
    if not key_fields or any(_key_value(getattr(model, name, None)) for name in key_fields):
        return None
    for name in fields:
        if name.endswith(_CREDENTIAL_SUFFIXES) and getattr(model, name, None):
            return None
    headers = getattr(model, "default_headers", None)
    if isinstance(headers, Mapping) and {str(h).lower() for h in headers} & _AUTH_HEADERS:
        return None
    return key_fields[0]


def check_model(model: BaseChatModel, request_role: RequestRole) -> None:
    """What can be checked without a network call; raises :class:`ConfigurationError`.

    - the model has an API key (or another credential) if its class takes one, since
      without it every confession would fail;
    - ``request_role="system"`` is not used with a model class whose API accepts system
      text only at the start (Anthropic and the providers that proxy it).
    """
    name = type(model).__name__
    if request_role == "system" and model_rejects_late_system(model):
        raise ConfigurationError(
            f"request_role='system' does not work with {name}: its API accepts system text "
            "only at the start of the request; use request_role='user' or 'auto'"
        )
    missing = _missing_api_key(model)
    if missing is not None:
        raise ConfigurationError(
            f"{name} has no API key ({missing} is empty): every confession would fail. Pass "
            "api_key= or set the provider's API-key environment variable"
        )


def _is_reply_error(exc: BaseException) -> bool:
    if isinstance(getattr(exc, "status_code", None), int):
        return False  # an HTTP error: about the request, not the reply
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        isinstance(exc, (OutputParserException, ValidationError, json.JSONDecodeError))
        or names & _REPLY_ERROR_CLASSES
    )


def _reply_message(reply: Any) -> BaseMessage | str | list[Any]:
    """The model's own message from a reply (structured-output dicts carry it as ``raw``)."""
    if isinstance(reply, Mapping):
        reply = reply.get("raw")
    if isinstance(reply, (BaseMessage, str, list)):
        return reply
    return "" if reply is None else str(reply)


def _cut_off(reply: Any) -> bool:
    message = _reply_message(reply)
    if not isinstance(message, AIMessage):
        return False
    metadata = message.response_metadata
    return bool({metadata.get("finish_reason"), metadata.get("stop_reason")} & _LENGTH_FINISH)


def _called_tools(reply: Any) -> list[str]:
    """Names of the tools a reply called instead of answering (the report's own tool, which
    ``with_structured_output`` uses, is an answer)."""
    message = _reply_message(reply)
    if not isinstance(message, AIMessage):
        return []
    return [
        call["name"] for call in message.tool_calls if call["name"] != ConfessionReport.__name__
    ]


def _usage_of(reply: Any) -> TokenUsage | None:
    message = _reply_message(reply)
    usage = message.usage_metadata if isinstance(message, AIMessage) else None
    if not usage:
        return None
    details = usage.get("input_token_details") or {}
    return TokenUsage(
        calls=1,
        input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0),
        cache_read_input_tokens=details.get("cache_read") or 0,
        cache_creation_input_tokens=details.get("cache_creation") or 0,
    )


class _Meter:
    """The usage of one confession's calls, added up as the replies arrive."""

    def __init__(self) -> None:
        self.total: TokenUsage | None = None

    def add(self, reply: Any) -> None:
        usage = _usage_of(reply)
        if usage is not None:
            self.total = usage if self.total is None else self.total + usage


def _describe(exc: BaseException) -> tuple[str, str]:
    """``error`` and ``error_type`` of a failed confession, the error bounded and scrubbed."""
    if isinstance(exc, ConfessionParseError):
        return scrub_error(str(exc)), "parse_error"
    if isinstance(exc, TimeoutError):
        return scrub_error(str(exc)), "timeout"
    if isinstance(exc, ConfigurationError):
        return scrub_error(str(exc)), "configuration"
    # Provider exceptions can quote the prompt, headers or a key: bounded and scrubbed.
    return scrub_error(f"{type(exc).__name__}: {exc}"), type(exc).__name__


@dataclass(frozen=True)
class _Call:
    """One model call the dialogue asks its driver to make."""

    runnable: Runnable[Any, Any]
    messages: list[BaseMessage]

    # When a tracer watches, a chain run named "confession" (the config's run name) holds
    # the model call, so tracers that name spans after the model class still show which
    # call is the confession. Its input is the message count and its output the reply's
    # type: the conversation and the reply are serialised once, by the model run. The run
    # is made on the callback manager, as a runnable would make it, without a runnable's
    # own cost.

    def invoke(self, config: RunnableConfig, traced: bool) -> Any:
        if not traced:
            return self.runnable.invoke(self.messages, config=config)
        run = get_callback_manager_for_config(config).on_chain_start(
            None, {"messages": len(self.messages)}, name=config.get("run_name")
        )
        try:
            reply = self.runnable.invoke(
                self.messages, config=patch_config(config, callbacks=run.get_child())
            )
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        run.on_chain_end({"reply": type(reply).__name__})
        return reply

    async def ainvoke(self, config: RunnableConfig, traced: bool) -> Any:
        if not traced:
            return await self.runnable.ainvoke(self.messages, config=config)
        run = await get_async_callback_manager_for_config(config).on_chain_start(
            None, {"messages": len(self.messages)}, name=config.get("run_name")
        )
        try:
            reply = await self.runnable.ainvoke(
                self.messages, config=patch_config(config, callbacks=run.get_child())
            )
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end({"reply": type(reply).__name__})
        return reply


@dataclass(frozen=True)
class _Job:
    """One confession: the episode, the model and how the agent called it."""

    episode: Episode
    chat: BaseChatModel
    tools: Sequence[Any] | None
    model_settings: Mapping[str, Any]
    config: RunnableConfig
    started: float
    traced: bool
    """Whether a LangChain tracer watches the run (see :mod:`confessional._callbacks`)."""
    replay: Replay
    meter: _Meter


_told_without_tools: set[type] = set()


def _replay_for(chat: BaseChatModel) -> Replay:
    """``exact`` unless the model cannot bind tools; that fallback is logged once per class."""
    if binds_tools(chat):
        return "exact"
    if type(chat) not in _told_without_tools:
        _told_without_tools.add(type(chat))
        logger.info(
            "%s cannot bind tools: its confessions replay the episode without tools, with "
            "tool calls and results as text (the agent's own model keeps the exact replay)",
            type(chat).__name__,
        )
    return "without_tools"


def _reported(confession: Confession) -> Confession:
    """A failed confession, logged and counted here, where the failure is caught, so that
    direct ``Confessor`` use is as loud as the surfaces (which also mark the span)."""
    report_failure(
        "confession",
        confession.error_type or "confession_failed",
        f"confession failed, the run goes on unconfessed: {confession.error}",
    )
    return confession


def _admits(report: ConfessionReport) -> bool:
    return (
        report.overall_compliance_grade <= FAILING_GRADE
        or bool(report.shortcuts)
        or any(o.compliance in UNREPORTED_LABELS for o in report.compliance_analysis)
    )


def worst_report(reports: Sequence[ConfessionReport]) -> ConfessionReport:
    """The report that admits the most, of several samples about one episode: one that
    admits a hidden problem (failing grade, a shortcut, or an objective labelled as not met
    or doubtful without telling the user) before one that does not; then the lowest grade;
    then the most such objectives and shortcuts; then the earliest sample."""
    if not reports:
        raise ValueError("worst_report needs at least one report")

    def badness(item: tuple[int, ConfessionReport]) -> tuple[bool, int, int, int]:
        index, report = item
        hidden = sum(o.compliance in UNREPORTED_LABELS for o in report.compliance_analysis)
        return (
            _admits(report),
            -report.overall_compliance_grade,
            hidden + len(report.shortcuts),
            -index,
        )

    return max(enumerate(reports), key=badness)[1]


def _sample_seed(model: BaseChatModel, sample: int) -> int | None:
    """The seed of sample ``sample`` (> 0) for a model class with a ``seed`` field (the
    OpenAI-compatible ones, the local model included): a fixed seed would make every sample
    the same text. ``None`` when the class has no such field."""
    if "seed" not in type(model).model_fields:
        return None
    base = getattr(model, "seed", None)
    return ((base if isinstance(base, int) else 0) + 7919 * sample) & 0x7FFFFFFF


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
        parse_retries: extra attempts after an unusable reply, with the error shown to
            the model. Default 1 (the paper's models rarely need more; each costs a call).
        token_budget: approximate token budget of every request, retries included; longer
            episodes are compacted (tool outputs first, then tool-call arguments, then long
            model text). Default 100 000, under the context window of current frontier
            models with room for the reply.
        request_style: what the request adds to the schema and rubric, see
            :data:`~confessional.request.RequestStyle` (evidence list, quoted objectives,
            direct questions per shortcut family, or all three). Default ``"standard"``,
            the paper's request; the README's "Confession request variants" has each
            one's measurement on the local model. Every style is one model call.
        samples: confessions drawn per episode; the one that admits the most is kept
            (:func:`worst_report`). Cost: ``samples`` model calls per confession (prompt
            caches make the later ones cheaper, the reply is paid each time), all within
            ``timeout_s``; a sample that fails or runs out of time is dropped as long as
            another succeeded. Samples differ only when the model samples (temperature above
            0); a model class with a ``seed`` field gets a distinct seed per sample. Default
            1: one call, the paper's method.

    Raises:
        ConfigurationError: a setting is invalid, ``model`` has no API key, or
            ``request_role`` is one the model's API rejects (see :func:`check_model`).
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
        request_style: RequestStyle = "standard",
        samples: int = 1,
    ) -> None:
        validate_request_style(request_style)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigurationError(f"samples must be an integer >= 1, got {samples!r}")
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
            model = load_chat_model(model)
        if model is not None and not isinstance(model, BaseChatModel):
            raise ConfigurationError(
                f"model must be a BaseChatModel, an init_chat_model string or None, "
                f"got {type(model).__name__}"
            )
        if model is not None:
            check_model(model, request_role)
        self.model = model
        self.output_mode: OutputMode = output_mode
        self.request_role: RequestRole = request_role
        self.timeout_s = timeout_s
        self.parse_retries = parse_retries
        self.token_budget = token_budget
        self.request_style: RequestStyle = request_style
        self.samples = samples
        # An agent calls with the same model and tools every turn: what depends only on
        # them is computed once per model or tool list (compared by identity).
        self._checked_model: BaseChatModel | None = None
        self._tool_token_count: tuple[tuple[Any, ...], int] = ((), 0)

    def __repr__(self) -> str:
        name = model_name_of(self.model) if self.model is not None else "agent's model"
        return f"Confessor(model={name!r}, output_mode={self.output_mode!r})"

    # -- preparation -------------------------------------------------------------------

    def _job(
        self,
        messages: Sequence[MessageLike] | Episode,
        model: BaseChatModel | None,
        tools: Sequence[Any] | None,
        model_settings: Mapping[str, Any] | None,
        config: RunnableConfig | None,
    ) -> _Job | Confession:
        """The job, or the failed confession when there is nothing to call."""
        started = time.perf_counter()
        episode = (
            messages if isinstance(messages, Episode) else extract_episode(messages, tools=tools)
        )
        chat = self.model or model
        if chat is None:
            return _reported(
                Confession(
                    status="error",
                    error="no model: pass model= to the Confessor",
                    error_type="no_model",
                )
            )
        if self.model is None and chat is not self._checked_model:
            # The agent's model arrives per call: check it the first time it is seen.
            try:
                check_model(chat, self.request_role)
            except ConfigurationError as exc:
                return self._failed(episode, chat, started, exc)
            self._checked_model = chat
        # The agent's request parameters belong to its model; another model gets its own.
        own_model = self.model is None or self.model is model
        return _Job(
            episode=episode,
            chat=chat,
            tools=tools,
            model_settings=(model_settings or {}) if own_model else {},
            config=_call_config(config),
            started=started,
            traced=tracer_watching(config),
            replay=_replay_for(chat),
            meter=_Meter(),
        )

    def _result(self, job: _Job, report: ConfessionReport) -> Confession:
        return Confession(
            status="ok",
            report=report,
            tool_call_count=len(job.episode.tool_calls),
            model_name=model_name_of(job.chat),
            duration_s=time.perf_counter() - job.started,
            replay=job.replay,
            usage=job.meter.total,
        )

    @staticmethod
    def _failed(
        episode: Episode,
        chat: BaseChatModel,
        started: float,
        exc: BaseException,
        replay: Replay | None = None,
        usage: TokenUsage | None = None,
    ) -> Confession:
        error, error_type = _describe(exc)
        return _reported(
            Confession(
                status="error",
                error=error,
                error_type=error_type,
                tool_call_count=len(episode.tool_calls),
                model_name=model_name_of(chat),
                duration_s=time.perf_counter() - started,
                replay=replay,
                usage=usage,
            )
        )

    def _strict_shape(self, chat: BaseChatModel) -> RequestShape:
        """Tool choice "none", with the native schema where the provider has one that
        coexists with the tools: the shape that leaves the model no way around the report."""
        return "structured" if provider_of(chat) != "other" else "text"

    def _tool_tokens(self, tools: Sequence[Any] | None) -> int:
        """:func:`tool_definition_tokens`, remembered for the last tool list."""
        seen, count = self._tool_token_count
        tools = tuple(tools or ())
        if len(seen) == len(tools) and all(a is b for a, b in zip(seen, tools, strict=True)):
            return count
        count = tool_definition_tokens(tools)
        self._tool_token_count = (tools, count)
        return count

    def _first_shape(self, job: _Job) -> RequestShape:
        match self.output_mode:
            case "auto":
                if forces_tool_use(job.model_settings.get("tool_choice")):
                    return self._strict_shape(job.chat)
                return "agent"
            case "structured":
                return "structured"
            case "text":
                return "text"
            case unreachable:
                assert_never(unreachable)

    def _runnable(self, job: _Job, shape: RequestShape, sample: int = 0) -> Runnable[Any, Any]:
        if shape == "structured" and provider_of(job.chat) == "other":
            # No native schema known to coexist with tools: the model's own structured
            # output (explicit "structured" mode only; "auto" asks in text instead).
            return job.chat.with_structured_output(ConfessionReport, include_raw=True)
        settings = dict(job.model_settings)
        seed = _sample_seed(job.chat, sample) if sample else None
        if seed is not None:
            settings["seed"] = seed
        return bind_replay(
            job.chat, job.episode, tools=job.tools, model_settings=settings, shape=shape
        )

    # -- the dialogue, shared by the sync and async drivers --------------------------

    def _dialogue(self, job: _Job, sample: int = 0) -> Generator[_Call, Any, ConfessionReport]:
        """Yields the calls to make and receives each reply (or has the call's exception
        thrown in); returns the report or raises why there is none.

        Order: the first call in the mode's shape (:meth:`_first_shape`); a failed
        structured call is replaced by the same request in text (once, except in explicit
        ``structured`` mode); an unusable reply is retried with the error and a bounded
        excerpt shown, at most ``parse_retries`` times, in ``auto`` with tool choice
        "none" and the native schema. Every request is built within ``token_budget``.
        """
        episode = job.episode
        quoted = quoted_reports(episode.messages)
        reserved = self._tool_tokens(job.tools)
        role = resolve_request_role(self.request_role, job.chat)
        request = build_request(
            episode,
            role=role,
            token_budget=self.token_budget,
            reserved_tokens=reserved,
            style=self.request_style,
        )
        shape = self._first_shape(job)
        messages, retries_left = request, self.parse_retries
        while True:
            try:
                reply = yield _Call(self._runnable(job, shape, sample), messages)
            except Exception as exc:
                if shape == "structured" and self.output_mode != "structured":
                    shape = "text"
                    if not _is_reply_error(exc):
                        # Recovered, so not a failure; but a server that refuses the
                        # schema costs each such retry a wasted round trip: worth knowing.
                        logger.warning(
                            "confession: the structured request failed (%s); asked in text",
                            type(exc).__name__,
                        )
                        continue  # the same request, asking in text
                if not _is_reply_error(exc):
                    raise
                failure: Exception = exc
                error, previous = scrub_error(f"{type(exc).__name__}: {exc}"), ""
            else:
                job.meter.add(reply)
                try:
                    return parse_report(_reply_message(reply), quoted=quoted)
                except ConfessionParseError as exc:
                    failure, error, previous = exc, str(exc), reply_text(reply)
                called = _called_tools(reply)
                if called:
                    error = (
                        f"your reply called the tool {called[0]!r} instead of answering; no "
                        f"tool can be called now ({error})"
                    )
                if _cut_off(reply):
                    error = (
                        f"your reply was cut off at the output limit; write it shorter ({error})"
                    )
            if retries_left == 0:
                raise failure
            retries_left -= 1
            if shape == "agent":  # auto: the retry leaves no way around the report,
                shape = self._strict_shape(job.chat)  # and is billed uncached
            messages = build_retry(
                episode,
                request[-1],
                previous,
                error,
                token_budget=self.token_budget,
                reserved_tokens=reserved,
            )

    # -- drivers ------------------------------------------------------------------------

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

        ``model``, ``tools`` and ``model_settings``: the agent's own model and request
        (bound tools as given to the model, request parameters), which the confession
        call replays.
        """
        job = self._job(messages, model, tools, model_settings, config)
        if isinstance(job, Confession):
            return job

        def perform(call: _Call) -> Any:
            return call.invoke(job.config, job.traced)

        def sample(step: tuple[int, float]) -> ConfessionReport:
            # A model whose own client timeout bounds every attempt (the first call, the
            # text fallback, the retries) runs right here: no hand-off to the pool.
            return run_with_timeout(
                functools.partial(drive, self._dialogue(job, step[0]), perform),
                step[1],
                model=job.chat,
                attempts=self.parse_retries + 2,
            )

        return drive(self._sampling(job), sample)

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
        job = self._job(messages, model, tools, model_settings, config)
        if isinstance(job, Confession):
            return job

        async def perform(call: _Call) -> Any:
            return await call.ainvoke(job.config, job.traced)

        async def sample(step: tuple[int, float]) -> ConfessionReport:
            return await await_with_timeout(adrive(self._dialogue(job, step[0]), perform), step[1])

        return await adrive(self._sampling(job), sample)

    # -- samples ------------------------------------------------------------------------

    def _sampling(self, job: _Job) -> Generator[tuple[int, float], Any, Confession]:
        """The samples, shared by both drivers: yields ``(sample, seconds left)`` and
        receives that sample's report (or has its failure thrown in); returns the outcome."""
        reports: list[ConfessionReport] = []
        failure: Exception | None = None
        for sample in range(self.samples):
            remaining = self._remaining(job, sample)
            if remaining is None:
                break
            try:
                reports.append((yield sample, remaining))
            except Exception as exc:
                failure = exc
        return self._outcome(job, reports, failure)

    def _remaining(self, job: _Job, sample: int) -> float | None:
        """Seconds for sample ``sample``: all of ``timeout_s`` for the first, what is left
        of it for the others; ``None`` when nothing is left."""
        if sample == 0:
            return self.timeout_s
        remaining = self.timeout_s - (time.perf_counter() - job.started)
        return remaining if remaining > 0 else None

    def _outcome(
        self, job: _Job, reports: list[ConfessionReport], failure: Exception | None
    ) -> Confession:
        if reports:
            return self._result(job, worst_report(reports))
        assert failure is not None  # the first sample always runs
        return self._failed(
            job.episode, job.chat, job.started, failure, job.replay, job.meter.total
        )
