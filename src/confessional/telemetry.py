"""OpenTelemetry recording of confessions: one span per confession, an evaluation event,
and a flag on the enclosing agent run.

The library uses the OpenTelemetry **API** only; the application configures the SDK
(exporters, processors). Without an SDK every call here is a cheap no-op.

Parent resolution, in order:

1. OpenInference's LangChain ``get_current_span()``: its instrumentor keeps spans per
   LangChain run and never makes them the current OTel span, so the OTel context alone
   would put the confession in a trace of its own.
2. Else the current OTel span (a user span, OpenLLMetry's spans, any OTel instrumentation).
3. Else a new root span.

Nothing model-written or user-written is recorded unless content capture is on.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Literal, get_args
from uuid import UUID

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import (
    Logger,
    LoggerProvider,
    LogRecord,
    NoOpLogger,
    NoOpLoggerProvider,
    get_logger,
    get_logger_provider,
)
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from confessional import semconv
from confessional.confession import Confession
from confessional.episode import Episode
from confessional.errors import ConfigurationError
from confessional.health import report_failure
from confessional.schema import FAILING_GRADE

__all__ = [
    "SCORE_LABELS",
    "CaptureMode",
    "ConfessionSpan",
    "ConfessionTelemetry",
    "SpanEventPlacement",
    "confession_traceparent",
    "evaluated_span_context_of",
    "resolve_parent_span",
    "score_label",
    "span_context_from_traceparent",
    "span_context_of",
]

logger = logging.getLogger("confessional.telemetry")

try:  # the API's stand-in until an SDK provider is set
    from opentelemetry._logs._internal import ProxyLoggerProvider

    _API_LOGGER_PROVIDERS: tuple[type, ...] = (NoOpLoggerProvider, ProxyLoggerProvider)
except ImportError:  # pragma: no cover - another API layout: assume an SDK listens
    _API_LOGGER_PROVIDERS = ()

CaptureMode = Literal["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]
"""Where free text may be recorded, as in the GenAI conventions' capture switch:

- ``NO_CONTENT`` (default): counts, labels and ids only.
- ``SPAN_ONLY``: text on the span (report JSON, explanation on the span event).
- ``EVENT_ONLY``: text only in the log-based event (needs ``log_events=True``).
- ``SPAN_AND_EVENT``: both.
"""

CAPTURE_MODES: tuple[CaptureMode, ...] = get_args(CaptureMode)

SpanEventPlacement = Literal["agent", "confession", "off"]
"""Where the span-event copy of ``gen_ai.evaluation.result`` goes (``"off"``: none, the
default; the log record is the primary form)."""

SCORE_LABELS: tuple[str, ...] = ("pass", "fail")
"""Values of ``gen_ai.evaluation.score.label``: a reading of the grade (the paper's rubric:
3 or below fails). The policy's verdict is in ``confession.verdict``."""


def score_label(grade: int) -> str:
    """``pass`` above the failing grade (3), else ``fail``."""
    return "pass" if grade > FAILING_GRADE else "fail"


_SPAN_CONTENT: frozenset[str] = frozenset({"SPAN_ONLY", "SPAN_AND_EVENT"})
_EVENT_CONTENT: frozenset[str] = frozenset({"EVENT_ONLY", "SPAN_AND_EVENT"})
_TRUNCATED = "…[truncated]"
_REDACTION_FAILED = "[redaction failed]"
_MIN_ATTRIBUTE_LENGTH = 32
_ERROR_CLASS = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Timeout|Exceeded))\b")

_ACTIVE: contextvars.ContextVar[ConfessionSpan | None] = contextvars.ContextVar(
    "confessional_active_confession_span", default=None
)
"""The confession span being recorded in this context, so :meth:`mark_run` called inside
``span()`` flags the agent span and not the confession span itself."""


_RECENT_SPANS: OrderedDict[str, trace.SpanContext] = OrderedDict()
_RECENT_EVALUATED: OrderedDict[str, trace.SpanContext] = OrderedDict()
_RECENT_SPANS_MAX = 4096
_RECENT_LOCK = threading.Lock()


def span_context_of(confession_id: str) -> trace.SpanContext | None:
    """The span context of a recently recorded confession (by ``Confession.id``), so sinks
    such as native annotations can point at the span. Bounded: the oldest are forgotten."""
    with _RECENT_LOCK:
        return _RECENT_SPANS.get(confession_id)


def evaluated_span_context_of(confession_id: str) -> trace.SpanContext | None:
    """The span context of the operation a recently recorded confession evaluated: the
    agent's invocation span (the outermost agent span in view), or the confession span
    when there was none. Where native evaluations (Phoenix annotations, MLflow feedback)
    belong. Bounded like :func:`span_context_of`."""
    with _RECENT_LOCK:
        return _RECENT_EVALUATED.get(confession_id) or _RECENT_SPANS.get(confession_id)


def _remember(
    confession_id: str,
    context: trace.SpanContext,
    store: OrderedDict[str, trace.SpanContext] = _RECENT_SPANS,
) -> None:
    if not context.is_valid:
        return
    with _RECENT_LOCK:
        store[confession_id] = context
        store.move_to_end(confession_id)
        while len(store) > _RECENT_SPANS_MAX:
            store.popitem(last=False)


_DELIVERED: OrderedDict[str, None] = OrderedDict()
_DELIVERED_MAX = 4096


def _first_delivery(confession_id: str) -> bool:
    """``False`` when this process recorded a confession with this id lately (bounded,
    like :data:`_RECENT_SPANS`): the recording sink deduplicates on ``Confession.id``."""
    with _RECENT_LOCK:
        if confession_id in _DELIVERED:
            return False
        _DELIVERED[confession_id] = None
        while len(_DELIVERED) > _DELIVERED_MAX:
            _DELIVERED.popitem(last=False)
        return True


_TRACE_CONTEXT = TraceContextTextMapPropagator()
_TRACEPARENT = "traceparent"


def confession_traceparent(confession_id: str) -> str | None:
    """The W3C ``traceparent`` of a confession span recorded in this process, or ``None``.

    A review payload carries it, so the process that applies the decision (maybe another
    one, resuming from the checkpointer) can put the decision in the confession's trace.
    """
    context = span_context_of(confession_id)
    if context is None:
        return None
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(context)))
    return carrier.get(_TRACEPARENT)


def span_context_from_traceparent(value: str | None) -> trace.SpanContext | None:
    """The span context a W3C ``traceparent`` names, or ``None`` if absent or malformed."""
    if not value:
        return None
    extracted = _TRACE_CONTEXT.extract({_TRACEPARENT: value})
    context = trace.get_current_span(extracted).get_span_context()
    return context if context.is_valid else None


def _capture_mode(value: CaptureMode | bool | None) -> CaptureMode:
    if value is None:
        raw = os.environ.get(semconv.CAPTURE_CONTENT_ENV, "").strip()
        if not raw:
            return "NO_CONTENT"
        upper = raw.upper()
        # The convention's older boolean spelling is still common in deployments.
        if upper in ("TRUE", "1"):
            return "SPAN_AND_EVENT"
        if upper in ("FALSE", "0"):
            return "NO_CONTENT"
        if upper not in CAPTURE_MODES:
            raise ConfigurationError(
                f"{semconv.CAPTURE_CONTENT_ENV}={raw!r} is not valid; choose one of: "
                + ", ".join(CAPTURE_MODES)
            )
        return upper  # type: ignore[return-value]
    if value is True:
        return "SPAN_AND_EVENT"
    if value is False:
        return "NO_CONTENT"
    if value not in CAPTURE_MODES:
        raise ConfigurationError(
            f"capture_content={value!r} is not valid; choose one of: "
            + ", ".join(map(repr, CAPTURE_MODES))
            + ", True, False or None"
        )
    return value


_OI_LOOKUP: tuple[Callable[[], Span | None], Callable[[], list[Span]]] | bool | None = False
"""Cached OpenInference hooks: ``False`` not looked up yet, ``None`` not installed."""


def _openinference() -> tuple[Callable[[], Span | None], Callable[[], list[Span]]] | None:
    global _OI_LOOKUP
    if _OI_LOOKUP is False:
        try:
            from openinference.instrumentation.langchain import (
                LangChainInstrumentor,
                get_ancestor_spans,
                get_current_span,
            )
        except ImportError:
            _OI_LOOKUP = None
        else:

            def current() -> Span | None:
                # Not instrumented: its get_current_span() would print a warning to stdout.
                if not LangChainInstrumentor().is_instrumented_by_opentelemetry:
                    return None
                span: Span | None = get_current_span()
                return span

            def ancestors() -> list[Span]:
                if not LangChainInstrumentor().is_instrumented_by_opentelemetry:
                    return []
                spans: list[Span] = get_ancestor_spans()
                return spans

            _OI_LOOKUP = (current, ancestors)
    return _OI_LOOKUP if isinstance(_OI_LOOKUP, tuple) else None


def _valid(span: Span | None) -> bool:
    return span is not None and span.get_span_context().is_valid


def _openinference_span_of_run(run_id: UUID) -> Span | None:
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor
    except ImportError:
        return None
    instrumentor = LangChainInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        return None
    span: Span | None = instrumentor.get_span(run_id)
    return span


def resolve_parent_span(run_id: UUID | None = None) -> Span | None:
    """The span a confession made here would nest under, or ``None`` for a new root.

    ``run_id``: a LangChain run the confession belongs to, for callers outside that run's
    context (a callback handler's ``on_chain_end``); its OpenInference span comes first.
    Then OpenInference's current LangChain span, then the current OTel span.
    """
    if run_id is not None:
        try:
            by_run = _openinference_span_of_run(run_id)
        except Exception:
            logger.debug("OpenInference get_span(run_id) failed", exc_info=True)
            by_run = None
        if _valid(by_run):
            return by_run
    hooks = _openinference()
    if hooks is not None:
        try:
            span = hooks[0]()
        except Exception:
            logger.debug("OpenInference get_current_span() failed", exc_info=True)
            span = None
        if _valid(span):
            return span
    current = trace.get_current_span()
    return current if _valid(current) else None


def _agent_spans(parent: Span | None) -> list[Span]:
    """The enclosing spans to flag: the parent and the outermost agent/graph span we can see."""
    spans: list[Span] = [parent] if parent is not None and _valid(parent) else []
    hooks = _openinference()
    if hooks is not None:
        try:
            ancestors = hooks[1]()
        except Exception:
            logger.debug("OpenInference get_ancestor_spans() failed", exc_info=True)
            ancestors = []
        if ancestors:
            spans.append(ancestors[-1])
    # OpenLLMetry keeps its "invoke_agent <graph>" span in the context under this key.
    holder = otel_context.get_value("langgraph_graph_span")
    graph_span = getattr(holder, "span", None)
    if isinstance(graph_span, Span):
        spans.append(graph_span)
    unique: dict[int, Span] = {}
    for span in spans:
        if _valid(span):
            unique.setdefault(id(span), span)
    return list(unique.values())


class ConfessionTelemetry:
    """Records confessions on OpenTelemetry. One instance can serve many agents and threads.

    Args:
        tracer_provider: OTel API tracer provider. Default ``None``: the global provider
            (a no-op until the application installs an SDK), so a library never forces
            an exporter on anyone.
        capture_content: where free text may be recorded, see :data:`CaptureMode`. ``True``
            means ``SPAN_AND_EVENT``, ``False`` ``NO_CONTENT``. Default ``None``: follow
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, itself defaulting to
            ``NO_CONTENT``, because reports quote user data. Invalid values raise
            :class:`~confessional.errors.ConfigurationError`.
        redact: applied to every free-text string before it is recorded (PII scrubbing).
            Default ``None``: no redaction. If it raises, the text is replaced by a
            placeholder and never recorded unredacted.
        max_attribute_length: upper bound in characters on every recorded string.
            Default 4096: large enough for a report, small enough for every backend's limit.
        log_events: emit ``gen_ai.evaluation.result`` as a log record through the OTel Logs
            API, in the GenAI conventions' event form, with the evaluated agent span's
            context. Default ``True``: that is where current conventions put events (a
            no-op until the application installs a logs SDK).
        logger_provider: OTel API logger provider for ``log_events``. Default ``None``: global.
        span_event: a span-event copy of the result, for backends that show only span
            events (trace-only stores: Phoenix, MLflow, Jaeger, Zipkin):
            ``"off"`` (default: OpenTelemetry is deprecating span events in favour of log
            records correlated with the span, and Phoenix and MLflow get native
            evaluations from :mod:`confessional.annotations`), ``"agent"`` (the evaluated
            agent span, falling back to the confession span once the agent span has
            ended), or ``"confession"`` (the confession span).
        flag_enclosing_span: set ``confession.flagged`` on the enclosing agent span for
            ``flag``/``halt`` verdicts, and mark a halted run's agent span with status
            ``ERROR`` (description ``confession halted the run``, ``error.type``
            ``confession_halted``): its answer was withheld, and the status is what trace
            lists show. Default ``True``: that is where users filter runs.
        tag_langchain_run: for ``flag``/``halt`` verdicts, add a tiny ``confession_verdict``
            child run carrying tags and metadata so LangSmith users can filter. Default ``True``.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        capture_content: CaptureMode | bool | None = None,
        redact: Callable[[str], str] | None = None,
        max_attribute_length: int = 4096,
        log_events: bool = True,
        logger_provider: LoggerProvider | None = None,
        span_event: SpanEventPlacement = "off",
        flag_enclosing_span: bool = True,
        tag_langchain_run: bool = True,
    ) -> None:
        if redact is not None and not callable(redact):
            raise ConfigurationError(f"redact must be a callable str -> str, got {redact!r}")
        if isinstance(max_attribute_length, bool) or not isinstance(max_attribute_length, int):
            raise ConfigurationError("max_attribute_length must be an int")
        if max_attribute_length < _MIN_ATTRIBUTE_LENGTH:
            raise ConfigurationError(
                f"max_attribute_length must be at least {_MIN_ATTRIBUTE_LENGTH}, "
                f"got {max_attribute_length}"
            )
        self.capture_content: CaptureMode = _capture_mode(capture_content)
        self.redact = redact
        self.max_attribute_length = max_attribute_length
        if span_event not in get_args(SpanEventPlacement):
            raise ConfigurationError(
                f"span_event={span_event!r} is not valid; choose one of: "
                + ", ".join(map(repr, get_args(SpanEventPlacement)))
            )
        self.log_events = log_events
        self.span_event: SpanEventPlacement = span_event
        self.flag_enclosing_span = flag_enclosing_span
        self.tag_langchain_run = tag_langchain_run
        from confessional import __version__

        # get_tracer on the global provider returns a proxy that follows a provider set
        # later, so creating it once here is safe.
        self._tracer = trace.get_tracer(
            semconv.TRACER_NAME, __version__, tracer_provider=tracer_provider
        )
        self._logger: Logger | None = (
            get_logger(semconv.TRACER_NAME, __version__, logger_provider=logger_provider)
            if log_events
            else None
        )
        self._global_logs = logger_provider is None

    def _logs_recorded(self) -> bool:
        """Whether an evaluation log record would reach a logs SDK. Until an application
        sets one, the global provider is the API's, which drops every record: building
        one would be wasted work on every confession."""
        if self._logger is None or isinstance(self._logger, NoOpLogger):
            return False
        if self._global_logs:
            return not isinstance(get_logger_provider(), _API_LOGGER_PROVIDERS)
        return True

    @property
    def content_on_span(self) -> bool:
        return self.capture_content in _SPAN_CONTENT

    @property
    def content_on_event(self) -> bool:
        return self.capture_content in _EVENT_CONTENT

    def text(self, value: str) -> str:
        """``value`` redacted and bounded: the only way free text reaches a trace."""
        if self.redact is not None:
            try:
                value = str(self.redact(value))
            except Exception:
                logger.warning("redact hook failed; recording a placeholder", exc_info=True)
                value = _REDACTION_FAILED
        return self.bound(value)

    def bound(self, value: str) -> str:
        if len(value) <= self.max_attribute_length:
            return value
        return value[: self.max_attribute_length - len(_TRUNCATED)] + _TRUNCATED

    def json(self, value: Any) -> str:
        """JSON of ``value`` with the redaction applied to every string leaf first."""
        return self.bound(json.dumps(self._redact_tree(value), ensure_ascii=False))

    def _redact_tree(self, value: Any) -> Any:
        if isinstance(value, str):
            if self.redact is None:
                return value
            try:
                return str(self.redact(value))
            except Exception:
                logger.warning("redact hook failed; recording a placeholder", exc_info=True)
                return _REDACTION_FAILED
        if isinstance(value, dict):
            return {k: self._redact_tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_tree(v) for v in value]
        return value

    def current_parent(self, run_id: UUID | None = None) -> Context:
        """Capture the context a confession should nest under, e.g. at episode end for a
        confession that will run in the background; pass it to :meth:`span` as ``parent``.
        ``run_id`` as in :meth:`span`."""
        parent = resolve_parent_span(run_id)
        return trace.set_span_in_context(parent) if parent is not None else Context()

    @contextmanager
    def span(
        self,
        *,
        agent_name: str | None = None,
        parent: Context | None = None,
        run_id: UUID | None = None,
        episode: Episode | None = None,
    ) -> Iterator[ConfessionSpan]:
        """Start the confession span (kind INTERNAL) under the resolved parent and make it
        current. Exceptions inside mark it as an error and propagate. Works across ``await``.

        ``parent``: a context from :meth:`current_parent`; default: resolve it now.
        ``run_id``: the LangChain run being confessed, when called from outside its context
        (callback handlers); see :func:`resolve_parent_span`. ``episode``: what is being
        confessed, for the tool-call count and (with content capture) the answer.
        """
        handle: ConfessionSpan
        token: object | None = None
        try:
            if parent is None:
                parent_span = resolve_parent_span(run_id)
                ctx = trace.set_span_in_context(parent_span) if parent_span is not None else None
            else:
                parent_span = trace.get_current_span(parent)
                parent_span = parent_span if _valid(parent_span) else None
                ctx = parent
            otel_span = self._tracer.start_span(
                self.bound(semconv.span_name(agent_name)),
                context=ctx,
                kind=SpanKind.INTERNAL,
                attributes=self._base_attributes(agent_name),
            )
            handle = ConfessionSpan(self, otel_span, parent_span, agent_name, episode)
            token = otel_context.attach(trace.set_span_in_context(otel_span))
        except Exception as exc:
            report_failure(
                "telemetry", type(exc).__name__, "could not start the confession span", exc_info=exc
            )
            handle = ConfessionSpan(self, trace.INVALID_SPAN, None, agent_name, episode)
        active_token = _ACTIVE.set(handle)
        try:
            yield handle
        except BaseException as exc:
            handle._fail(exc)
            raise
        finally:
            _ACTIVE.reset(active_token)
            if token is not None:
                try:
                    otel_context.detach(token)  # type: ignore[arg-type]
                except Exception:
                    logger.debug("context detach failed", exc_info=True)
            try:
                handle.span.end()
            except Exception:
                logger.warning("could not end the confession span", exc_info=True)

    def _base_attributes(self, agent_name: str | None) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CONFESSION,
            semconv.OPENINFERENCE_SPAN_KIND: semconv.OPENINFERENCE_SPAN_KIND_EVALUATOR,
        }
        if agent_name:
            attributes[semconv.GEN_AI_AGENT_NAME] = self.bound(agent_name)
        return attributes

    def __call__(self, confession: Confession) -> None:
        """The recording sink: fill in the confession span and flag the agent's span.

        Inside the pipeline this records onto the span :meth:`span` opened for the
        episode; called on its own (a drained spool, a replayed confession) it records a
        span of its own. Never raises.
        """
        if not _first_delivery(confession.id):
            return  # a redelivery (a queue job retried after a crash): recorded already
        active = _ACTIVE.get()
        if active is not None:
            active.record(confession)
        else:
            with self.span(agent_name=confession.agent_name) as handle:
                handle.record(confession)
        self._flag_enclosing(confession, active)

    def review_decision(
        self,
        *,
        confession_id: str,
        decision: str,
        action: str,
        reviewer: str | None,
        decided_at: str | None = None,
        message: str | None = None,
        edited_answer: str | None = None,
        confession_span: trace.SpanContext | None = None,
    ) -> None:
        """Record a reviewer's decision as a ``confession.review.decision`` span. Never raises.

        The confession span has ended by the time anyone decides, and the decision may be
        applied in another process, so the decision is a span of its own: a child of
        ``confession_span`` (hence in the confession's trace) with a link to it. Without
        ``confession_span`` it nests under the current span, as a confession would.
        ``message`` and ``edited_answer`` are reviewer-written text: recorded only where
        content capture allows, redacted and bounded.
        """
        try:
            attributes: dict[str, AttributeValue] = {
                semconv.CONFESSION_ID: self.bound(confession_id),
                semconv.CONFESSION_REVIEW_DECISION: decision,
                semconv.CONFESSION_ACTION: action,
                semconv.CONFESSION_REVIEW_REVIEWER: self.bound(
                    reviewer or semconv.REVIEWER_UNKNOWN
                ),
                semconv.CONFESSION_REVIEW_DECIDED_AT: self.bound(
                    decided_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
                ),
            }
            if self.content_on_span:
                if message:
                    attributes[semconv.CONFESSION_REVIEW_MESSAGE] = self.text(message)
                if edited_answer is not None:
                    attributes[semconv.CONFESSION_REVIEW_EDITED_ANSWER] = self.text(edited_answer)
            if confession_span is not None and confession_span.is_valid:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(confession_span))
                links = [Link(confession_span)]
            else:
                parent, links = self.current_parent(), []
            span = self._tracer.start_span(
                semconv.REVIEW_DECISION_SPAN_NAME,
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                links=links,
            )
            span.end()
        except Exception as exc:
            report_failure(
                "telemetry",
                type(exc).__name__,
                "could not record the review decision on the trace",
                exc_info=exc,
            )

    def _flag_enclosing(self, confession: Confession, active: ConfessionSpan | None) -> None:
        """Mark the enclosing agent span (it must still be open) for filtering: flagged or
        halted runs get ``confession.flagged``, failed confessions ``confession.status``."""
        if not self.flag_enclosing_span:
            return
        attributes: dict[str, AttributeValue] = {}
        if confession.verdict in ("flag", "halt"):
            attributes[semconv.CONFESSION_FLAGGED] = True
            attributes[semconv.CONFESSION_VERDICT] = confession.verdict
        if confession.status == "error":
            attributes[semconv.CONFESSION_STATUS] = confession.status
        if not attributes:
            return
        try:
            parent = active.parent if active is not None else resolve_parent_span()
            spans = _agent_spans(parent)
            for span in spans:
                if span.is_recording():
                    span.set_attributes(attributes)
            # A halted run's answer was withheld: its invocation span (the evaluated one)
            # says so in the status, which trace lists show. Flag verdicts deliver: no status.
            if confession.verdict == "halt" and spans and spans[-1].is_recording():
                spans[-1].set_attribute(semconv.ERROR_TYPE, semconv.ERROR_TYPE_HALTED)
                spans[-1].set_status(Status(StatusCode.ERROR, semconv.STATUS_HALTED))
        except Exception as exc:
            report_failure(
                "telemetry", type(exc).__name__, "could not flag the enclosing span", exc_info=exc
            )


class ConfessionSpan:
    """Handle on one confession span; :meth:`record` fills it in. Never raises."""

    def __init__(
        self,
        telemetry: ConfessionTelemetry,
        span: Span,
        parent: Span | None,
        agent_name: str | None,
        episode: Episode | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.span = span
        self.parent = parent
        """The enclosing span resolved at start (``None`` for a root)."""
        self.agent_name = agent_name
        self.episode = episode
        self._errored = False

    def record(self, confession: Confession, episode: Episode | None = None) -> None:
        """Set every attribute and the ``gen_ai.evaluation.result`` event from ``confession``."""
        try:
            self._record(confession, episode or self.episode)
        except Exception as exc:
            report_failure(
                "telemetry",
                type(exc).__name__,
                "could not record the confession on its span",
                exc_info=exc,
            )

    def note_failure(self, stage: str, cause: str) -> None:
        """Mark a failure of one of this confession's steps (a sink, say) on the span."""
        try:
            self.span.add_event(
                semconv.EVENT_FAILURE,
                attributes={semconv.FAILURE_STAGE: stage, semconv.ERROR_TYPE: cause},
            )
        except Exception:  # the failure itself was already reported by the caller
            logger.debug("could not mark a failure on the confession span", exc_info=True)

    def evaluated_span(self) -> Span:
        """The evaluated operation: the outermost agent span in view, else this span."""
        enclosing = _agent_spans(self.parent)
        return enclosing[-1] if enclosing else self.span

    def _record(self, confession: Confession, episode: Episode | None) -> None:
        t = self.telemetry
        span = self.span
        evaluated = self.evaluated_span()
        _remember(confession.id, span.get_span_context())
        _remember(confession.id, evaluated.get_span_context(), _RECENT_EVALUATED)
        if span.is_recording():  # a span without an SDK drops attributes: build none
            attributes = self.attributes(confession, episode)
            evaluated_context = evaluated.get_span_context()
            if evaluated is not span and evaluated_context.is_valid:
                attributes[semconv.CONFESSION_EVALUATED_SPAN_ID] = format(
                    evaluated_context.span_id, "016x"
                )
            span.set_attributes(attributes)

        if confession.status == "error":
            error_type = confession.error_type or _error_type(confession.error)
            span.set_attribute(semconv.ERROR_TYPE, error_type)
            detail = t.text(confession.error or "") if t.content_on_span else error_type
            span.set_status(Status(StatusCode.ERROR, detail or error_type))
            self._errored = True

        self._evaluation_event(confession, evaluated)

    def _evaluation_event(self, confession: Confession, evaluated: Span) -> None:
        """``gen_ai.evaluation.result``, parented to the evaluated operation (the agent's
        span) as the GenAI conventions ask: a log record through the Logs API, plus an
        opt-in span-event copy for backends that read only span events."""
        t = self.telemetry
        logs = t._logs_recorded()
        if t.span_event == "off" and not logs:
            return
        event: dict[str, AttributeValue] = {
            semconv.GEN_AI_EVALUATION_NAME: semconv.EVALUATION_NAME_CONFESSION,
            semconv.CONFESSION_VERDICT: confession.verdict,
            semconv.CONFESSION_ID: t.bound(confession.id),
        }
        if confession.report is not None:
            grade = confession.report.overall_compliance_grade
            event[semconv.GEN_AI_EVALUATION_SCORE_VALUE] = float(grade)
            event[semconv.GEN_AI_EVALUATION_SCORE_LABEL] = score_label(grade)
        if confession.status == "error":
            event[semconv.ERROR_TYPE] = confession.error_type or _error_type(confession.error)
        explanation = confession.explanation() if t.capture_content != "NO_CONTENT" else ""

        if t.span_event != "off":
            target = evaluated if t.span_event == "agent" else self.span
            if not target.is_recording():  # the agent span has ended: keep the copy anyway
                target = self.span
            span_event = dict(event)
            if t.content_on_span and explanation:
                span_event[semconv.GEN_AI_EVALUATION_EXPLANATION] = t.text(explanation)
            target.add_event(semconv.EVENT_GEN_AI_EVALUATION_RESULT, attributes=span_event)

        if logs and t._logger is not None:
            log_attributes = dict(event)
            if t.content_on_event and explanation:
                log_attributes[semconv.GEN_AI_EVALUATION_EXPLANATION] = t.text(explanation)
            t._logger.emit(
                LogRecord(
                    context=trace.set_span_in_context(evaluated),
                    event_name=semconv.EVENT_GEN_AI_EVALUATION_RESULT,
                    attributes=log_attributes,
                )
            )

    def attributes(
        self, confession: Confession, episode: Episode | None = None
    ) -> dict[str, AttributeValue]:
        """The span attributes for ``confession`` (content ones only with capture on)."""
        t = self.telemetry
        agent_name = confession.agent_name or self.agent_name
        tool_calls = len(episode.tool_calls) if episode is not None else confession.tool_call_count
        attributes: dict[str, AttributeValue] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_CONFESSION,
            semconv.OPENINFERENCE_SPAN_KIND: semconv.OPENINFERENCE_SPAN_KIND_EVALUATOR,
            semconv.CONFESSION_ID: t.bound(confession.id),
            semconv.CONFESSION_VERDICT: confession.verdict,
            semconv.CONFESSION_ACTION: confession.action,
            semconv.CONFESSION_STATUS: confession.status,
            semconv.CONFESSION_EPISODE_TOOL_CALL_COUNT: tool_calls,
            semconv.CONFESSION_FINDING_COUNT: len(confession.findings),
            semconv.CONFESSION_DISCREPANCY_COUNT: len(confession.discrepancies),
            semconv.CONFESSION_REASON_COUNT: len(confession.reasons),
            semconv.CONFESSION_DURATION_S: float(confession.duration_s),
        }
        if agent_name:
            attributes[semconv.GEN_AI_AGENT_NAME] = t.bound(agent_name)
        if confession.replay is not None:
            attributes[semconv.CONFESSION_REPLAY] = confession.replay
        if confession.usage is not None:
            usage = confession.usage
            attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
            attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
            attributes[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_input_tokens
            attributes[semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = (
                usage.cache_creation_input_tokens
            )
            attributes[semconv.CONFESSION_USAGE_UNCACHED_INPUT_TOKENS] = usage.uncached_input_tokens
            attributes[semconv.CONFESSION_USAGE_CALLS] = usage.calls
        if confession.model_name:
            attributes[semconv.GEN_AI_REQUEST_MODEL] = t.bound(confession.model_name)
            attributes[semconv.CONFESSION_MODEL_NAME] = t.bound(confession.model_name)
        if confession.findings:
            attributes[semconv.CONFESSION_FINDING_KINDS] = sorted(
                {f.kind for f in confession.findings}
            )
        if confession.discrepancies:
            attributes[semconv.CONFESSION_DISCREPANCY_KINDS] = sorted(
                {f.kind for f in confession.discrepancies}
            )
        report = confession.report
        if report is not None:
            attributes[semconv.CONFESSION_GRADE] = report.overall_compliance_grade
            attributes[semconv.CONFESSION_OBJECTIVE_COUNT] = len(report.compliance_analysis)
            for label, count in report.label_counts().items():
                attributes[semconv.OBJECTIVE_COUNT_ATTRIBUTES[label]] = count
            attributes[semconv.CONFESSION_SHORTCUT_COUNT] = len(report.shortcuts)
            attributes[semconv.CONFESSION_UNCERTAINTY_COUNT] = len(
                report.uncertainties_and_conflicts
            )

        if t.content_on_span:
            if report is not None:
                report_json = t.json(report.model_dump(mode="json"))
                attributes[semconv.CONFESSION_REPORT] = report_json
                attributes[semconv.OUTPUT_VALUE] = report_json
                attributes[semconv.OUTPUT_MIME_TYPE] = semconv.MIME_JSON
            if episode is not None and episode.final_answer:
                attributes[semconv.INPUT_VALUE] = t.text(episode.final_answer)
                attributes[semconv.INPUT_MIME_TYPE] = semconv.MIME_TEXT
            if confession.findings:
                attributes[semconv.CONFESSION_FINDINGS] = t.json(
                    [f.model_dump(mode="json") for f in confession.findings]
                )
            if confession.reasons:
                attributes[semconv.CONFESSION_REASONS] = [t.text(r) for r in confession.reasons]
            if confession.error:
                attributes[semconv.CONFESSION_ERROR] = t.text(confession.error)
        return attributes

    def _fail(self, exc: BaseException) -> None:
        """An exception escaped the ``span()`` block: mark the span, never raise."""
        try:
            if self._errored:
                return
            error_type = type(exc).__qualname__
            self.span.set_attribute(semconv.ERROR_TYPE, error_type)
            # The message may quote model output, so it is content.
            detail = self.telemetry.text(str(exc)) if self.telemetry.content_on_span else error_type
            self.span.set_status(Status(StatusCode.ERROR, detail))
            if self.telemetry.content_on_span:
                self.span.record_exception(exc)
        except Exception:
            logger.warning("could not mark the confession span as failed", exc_info=True)


def _error_type(error: str | None) -> str:
    """A low-cardinality ``error.type``: a leading exception class name, else a fixed value."""
    match = _ERROR_CLASS.match((error or "").strip())
    return match.group(1) if match else semconv.ERROR_TYPE_FALLBACK
