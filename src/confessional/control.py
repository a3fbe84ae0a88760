"""Control flow shared by the surfaces: review pauses, withheld-answer notices, and the
durable confession task that makes a paused run resume without confessing twice.

Surfaces map the core's :data:`~confessional.confession.Action` to their framework with
these pieces; none of them decides anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, cast, get_args

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.func import task
from langgraph.types import interrupt
from pydantic import BaseModel, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from confessional.confession import Action, Confession
from confessional.episode import message_text
from confessional.errors import ConfessionalError, ConfessionHalted
from confessional.pipeline import ConfessionPipeline, EpisodeCall
from confessional.policy import ConfessionPolicy
from confessional.telemetry import (
    ConfessionTelemetry,
    confession_traceparent,
    span_context_from_traceparent,
    span_context_of,
)

__all__ = [
    "CONTINUE_RUN",
    "DECISION_TYPES",
    "DELIVER_ANSWER",
    "REVIEW_TYPE",
    "DecisionType",
    "InvalidDecisionError",
    "NoticeReason",
    "Resolution",
    "ReviewDecision",
    "aconfess_durably",
    "allowed_decisions",
    "as_confession",
    "ask_review",
    "check_allowed",
    "confess_durably",
    "is_notice",
    "node_config",
    "resolve",
    "review_description",
    "review_payload",
    "withheld_notice",
]

_TASK_NAME = "confessional_confession"


REVIEW_TYPE = "confession_review"
"""``type`` of every confession interrupt's value, so review tools tell it from others."""

DELIVER_ANSWER = "deliver_answer"
"""The action under review when an answer is withheld: delivering it (args ``answer``)."""

CONTINUE_RUN = "continue_run"
"""The action under review when a run pauses before its next model call (``tool_round``)."""

DecisionType = Literal["approve", "edit", "reject"]
"""What a reviewer may decide: deliver the answer, deliver a replacement, or withhold it."""

DECISION_TYPES: tuple[DecisionType, ...] = get_args(DecisionType)


class InvalidDecisionError(ConfessionalError, ValueError):
    """A review decision is malformed or not allowed for the paused review."""


def _hitl_response_schema(offered: Sequence[DecisionType]) -> JsonSchemaValue:
    """JSON schema of the HITL response a confession review accepts."""
    variants: dict[DecisionType, dict[str, Any]] = {
        "approve": {"properties": {"type": {"const": "approve"}}},
        "reject": {"properties": {"type": {"const": "reject"}, "message": {"type": "string"}}},
        "edit": {
            "properties": {
                "type": {"const": "edit"},
                "edited_action": {
                    "type": "object",
                    "properties": {
                        "name": {"const": DELIVER_ANSWER},
                        "args": {
                            "type": "object",
                            "properties": {"answer": {"type": "string"}},
                            "required": ["answer"],
                        },
                    },
                    "required": ["name", "args"],
                },
            },
            "required": ["type", "edited_action"],
        },
    }
    # Optional on every decision: who decided, recorded on the trace ("unknown" without it).
    reviewer = {"reviewer": {"type": "string"}}
    items = [
        {
            "type": "object",
            "required": ["type"],
            **variants[kind],
            "properties": {**variants[kind]["properties"], **reviewer},
        }
        for kind in offered
    ]
    return {
        "title": "HITLResponse",
        "description": "One decision on the confession review. 'approve' / 'reject' "
        "strings are accepted too.",
        "type": "object",
        "properties": {
            "decisions": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"oneOf": items}}
        },
        "required": ["decisions"],
    }


class ReviewDecision(BaseModel):
    """What a reviewer answers to a confession interrupt.

    Accepted resume values:

    - LangChain's human-in-the-loop response, ``{"decisions": [decision]}`` with exactly
      one decision (one action is under review), or a bare decision:
      ``{"type": "approve"}``, ``{"type": "reject", "message": "why"}``,
      ``{"type": "edit", "edited_action": {"name": "deliver_answer", "args":
      {"answer": "replacement"}}}``;
    - ``"approve"`` / ``"reject"``, ``{"action": ...}`` and this model itself.

    A decision may also say who decided, when, and on which confession span
    (``reviewer``, ``decided_at``, ``traceparent``): :func:`confessional.review.resume`
    adds them, and the decision's span on the trace records them.

    Anything else fails validation and the interrupt can simply be answered again.
    """

    action: DecisionType
    message: str | None = None
    """Optional reviewer note, kept in the rejection notice."""
    answer: str | None = None
    """The replacement answer of an ``edit`` (required then, refused otherwise)."""
    reviewer: str | None = None
    """Who decided, as the review inbox names them; ``None``: nobody said."""
    decided_at: str | None = None
    """When the reviewer decided (ISO 8601); ``None``: when the decision is applied."""
    traceparent: str | None = None
    """W3C ``traceparent`` of the confession span under review, copied from the review
    payload, so a decision applied in another process lands in the confession's trace."""

    _offered: ClassVar[tuple[DecisionType, ...]] = DECISION_TYPES

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The schema LangGraph publishes with the interrupt (``response_schema``): what
        # a HITL client should send, rather than this model's own fields.
        return _hitl_response_schema(cls._offered)

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"action": value.strip().lower()}
        if isinstance(value, list):  # a bare list of decisions
            value = {"decisions": value}
        if not isinstance(value, Mapping):
            return value
        if "decisions" in value and "action" not in value and "type" not in value:
            decisions = value["decisions"]
            if not isinstance(decisions, list) or len(decisions) != 1:
                count = len(decisions) if isinstance(decisions, list) else "no list of"
                raise ValueError(
                    "a confession review has exactly one action under review, so "
                    f"'decisions' must hold exactly one decision, got {count}"
                )
            value = decisions[0]
            if not isinstance(value, Mapping):
                return value
        if "action" not in value and "type" in value:
            value = {**value, "action": value["type"]}
        edited = value.get("edited_action")
        if isinstance(edited, Mapping) and edited.get("name", DELIVER_ANSWER) != DELIVER_ANSWER:
            raise ValueError(
                f"an edit can only replace the answer: edited_action.name must be "
                f"{DELIVER_ANSWER!r}, got {edited.get('name')!r}"
            )
        if isinstance(edited, Mapping) and "answer" not in value:
            args = edited.get("args")
            if isinstance(args, Mapping) and "answer" in args:
                value = {**value, "answer": args["answer"]}
        return {k: v for k, v in value.items() if k in _DECISION_FIELDS}

    @model_validator(mode="after")
    def _edit_has_answer(self) -> ReviewDecision:
        if self.action == "edit" and not isinstance(self.answer, str):
            raise ValueError(
                "an 'edit' decision needs the replacement answer: "
                '{"type": "edit", "edited_action": {"name": "deliver_answer", '
                '"args": {"answer": "..."}}}'
            )
        if self.action != "edit" and self.answer is not None:
            raise ValueError(f"only an 'edit' decision carries an answer, not {self.action!r}")
        return self

    @classmethod
    def parse(cls, value: Any) -> ReviewDecision:
        """``value`` as a decision, or :class:`InvalidDecisionError` naming what is wrong."""
        if isinstance(value, ReviewDecision):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(str(e.get("msg", e)) for e in exc.errors())
            raise InvalidDecisionError(
                f"not a review decision ({problems}); use approve, reject (with an optional "
                "message) or edit (with a replacement answer)"
            ) from None

    def as_resume(self) -> dict[str, Any]:
        """The HITL response shape of this decision, a ``Command(resume=...)`` value."""
        decision: dict[str, Any] = {"type": self.action}
        if self.message is not None:
            decision["message"] = self.message
        if self.action == "edit":
            decision["edited_action"] = {"name": DELIVER_ANSWER, "args": {"answer": self.answer}}
        for key in _DECISION_CONTEXT:
            if getattr(self, key) is not None:
                decision[key] = getattr(self, key)
        return {"decisions": [decision]}


_DECISION_CONTEXT = ("reviewer", "decided_at", "traceparent")
"""Fields about a decision rather than of it: kept beside the HITL decision's own keys."""
_DECISION_FIELDS = frozenset({"action", "message", "answer", *_DECISION_CONTEXT})


class _AnswerlessReviewDecision(ReviewDecision):
    """The decision schema of a pause with no answer to replace (``tool_round``).

    Refusing ``edit`` inside validation, as LangGraph checks a resume value, leaves the
    interrupt pending, so it can be answered again.
    """

    _offered: ClassVar[tuple[DecisionType, ...]] = ("approve", "reject")

    @model_validator(mode="after")
    def _no_edit(self) -> _AnswerlessReviewDecision:
        if self.action == "edit":
            raise ValueError(
                "'edit' is not allowed for this review: the run paused before its next "
                "model call, so there is no answer to replace; allowed: approve, reject"
            )
        return self


def _content_allowed(telemetry: ConfessionTelemetry | None) -> bool:
    return telemetry is not None and telemetry.capture_content != "NO_CONTENT"


def review_description(confession: Confession, telemetry: ConfessionTelemetry | None = None) -> str:
    """What a reviewer reads about the action: grade, verdict reasons and shortcuts.

    Reasons are labels and counts written by the policy. The model's own words (shortcut
    text, objectives) are included only where ``telemetry`` captures content, redacted
    and bounded as on a span.
    """
    report = confession.report
    grade = f"grade {report.overall_compliance_grade}/7" if report else "no report"
    lines = [f"The confession flagged this run ({grade}, verdict {confession.verdict})."]
    if confession.reasons:
        lines.append("Reasons: " + "; ".join(confession.reasons) + ".")
    if _content_allowed(telemetry) and telemetry is not None:
        details = confession.explanation()
        if details:
            lines.append(telemetry.text(details))
    elif report is not None and report.shortcuts:
        lines.append(
            f"Shortcuts: {len(report.shortcuts)} reported (their text is shown where "
            "content capture is on)."
        )
    return "\n".join(lines)


def review_payload(
    confession: Confession,
    answer: BaseMessage | None = None,
    *,
    telemetry: ConfessionTelemetry | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable interrupt value for a confession awaiting review.

    It is a LangChain v1 ``HITLRequest`` (``action_requests`` and ``review_configs``), so
    inboxes built for the human-in-the-loop middleware show it. The action under review
    is :data:`DELIVER_ANSWER` (args ``{"answer": ...}``, decisions approve, edit, reject),
    or :data:`CONTINUE_RUN` when there is no answer yet (approve, reject). The other keys
    are confessional's own: ``type`` (:data:`REVIEW_TYPE`), ``confession_id``, ``grade``,
    ``reasons``, ``confession``, ``withheld_answer`` and ``traceparent`` (the W3C trace
    context of the confession span, ``None`` when none was recorded in this process), which
    a decision hands back so its span joins the confession's trace.
    """
    text = message_text(answer) if answer is not None else None
    allowed: list[DecisionType] = (
        ["approve", "edit", "reject"] if text is not None else ["approve", "reject"]
    )
    name = DELIVER_ANSWER if text is not None else CONTINUE_RUN
    report = confession.report
    return {
        "action_requests": [
            {
                "name": name,
                "args": {"answer": text} if text is not None else {},
                "description": review_description(confession, telemetry),
            }
        ],
        "review_configs": [{"action_name": name, "allowed_decisions": allowed}],
        "type": REVIEW_TYPE,
        "confession_id": confession.id,
        "grade": report.overall_compliance_grade if report else None,
        "reasons": list(confession.reasons),
        "confession": confession.model_dump(mode="json"),
        "withheld_answer": text,
        "actions": allowed,
        "traceparent": confession_traceparent(confession.id),
    }


def allowed_decisions(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """The decisions a review payload allows (older payloads: approve and reject)."""
    configs = payload.get("review_configs")
    if isinstance(configs, list) and configs and isinstance(configs[0], Mapping):
        return tuple(configs[0].get("allowed_decisions") or ())
    return ("approve", "reject")


def check_allowed(decision: ReviewDecision, allowed: tuple[str, ...]) -> None:
    """Refuse a decision the paused review does not offer (``edit`` with no answer)."""
    if decision.action not in allowed:
        raise InvalidDecisionError(
            f"{decision.action!r} is not allowed for this review; allowed: " + ", ".join(allowed)
        )


def ask_review(
    confession: Confession,
    answer: BaseMessage | None = None,
    *,
    telemetry: ConfessionTelemetry | None = None,
) -> ReviewDecision:
    """Pause the graph for review; returns the decision once resumed."""
    payload = review_payload(confession, answer, telemetry=telemetry)
    schema = ReviewDecision if "edit" in allowed_decisions(payload) else _AnswerlessReviewDecision
    return ReviewDecision.parse(interrupt(payload, response_schema=schema))


@dataclass(frozen=True)
class Resolution:
    """What a surface finally does: ``proceed`` or ``withhold`` (``raise`` has raised)."""

    action: Action
    decision: ReviewDecision | None = None
    """The reviewer's decision, when the run paused for review."""

    @property
    def edited(self) -> bool:
        """A reviewer replaced the answer (the original belongs in ``confession_withheld``)."""
        return self.decision is not None and self.decision.action == "edit"

    def answer(self, original: AIMessage) -> AIMessage:
        """The answer to deliver when the run proceeds: the original, or a reviewer's edit
        of it (same message id, so it replaces the original in ``messages``)."""
        if not self.edited or self.decision is None:
            return original
        meta = {**original.response_metadata, "confessional": {"edited": True}}
        return original.model_copy(
            update={
                "content": self.decision.answer or "",
                "tool_calls": [],
                "response_metadata": meta,
            }
        )

    def notice(self, confession: Confession, message_id: str | None) -> AIMessage:
        """The notice that stands in for the withheld answer."""
        if self.decision is None:
            return withheld_notice(confession, message_id=message_id)
        return withheld_notice(
            confession, message_id=message_id, reason="rejected", note=self.decision.message or ""
        )


def resolve(
    policy: ConfessionPolicy,
    confession: Confession,
    answer: BaseMessage | None = None,
    *,
    telemetry: ConfessionTelemetry | None = None,
) -> Resolution:
    """Carry out ``confession.action`` up to what the surface must do itself.

    ``review`` pauses the graph (a LangGraph interrupt) and follows the decision through
    ``policy.follow_up``; ``raise`` raises :class:`~confessional.ConfessionHalted`.
    ``telemetry`` decides whether the review's description may quote the report, and
    records the reviewer's decision on the trace.
    """
    action, decision = confession.action, None
    if action == "review":
        decision = ask_review(confession, answer, telemetry=telemetry)
        action = policy.follow_up(decision.action)
        if telemetry is not None:
            _record_decision(telemetry, confession, decision, action)
    if action == "raise":
        raise ConfessionHalted(
            confession, "the reviewer rejected the flagged answer" if decision else None
        )
    return Resolution(action, decision)


def _record_decision(
    telemetry: ConfessionTelemetry, confession: Confession, decision: ReviewDecision, action: Action
) -> None:
    # The decision's own traceparent comes from the payload the reviewer answered, so it
    # holds in any process; the in-process record covers a bare Command(resume=...).
    confession_span = span_context_from_traceparent(decision.traceparent) or span_context_of(
        confession.id
    )
    telemetry.review_decision(
        confession_id=confession.id,
        decision=decision.action,
        action=action,
        reviewer=decision.reviewer,
        decided_at=decision.decided_at,
        message=decision.message,
        edited_answer=decision.answer if decision.action == "edit" else None,
        confession_span=confession_span,
    )


NoticeReason = Literal["violation", "rejected", "review"]


def withheld_notice(
    confession: Confession,
    *,
    message_id: str | None,
    reason: NoticeReason = "violation",
    note: str = "",
) -> AIMessage:
    """The AI message that stands in for a withheld answer (same id: it replaces it)."""
    why = "; ".join(confession.reasons) or confession.summary()
    if reason == "review":
        text = f"[confessional] The answer is held for human review ({why})."
    else:
        cause = (
            "a reviewer rejected it"
            if reason == "rejected"
            else "its confession reported a violation"
        )
        text = f"[confessional] The answer was withheld because {cause} ({why})."
    if note:
        text += f" Reviewer note: {note}"
    return AIMessage(
        content=text,
        id=message_id or f"confessional-{uuid.uuid4().hex}",
        response_metadata={
            "confessional": {"withheld": True, "confession_id": confession.id, "reason": reason}
        },
    )


def is_notice(message: BaseMessage) -> bool:
    """Whether ``message`` is a notice written by confessional (never confessed itself)."""
    meta = message.response_metadata.get("confessional") if isinstance(message, AIMessage) else None
    return isinstance(meta, Mapping) and bool(meta.get("withheld"))


def as_confession(value: Any) -> Confession:
    """A state entry as a :class:`Confession` (checkpoint serialisers may hand back dicts)."""
    return value if isinstance(value, Confession) else Confession.model_validate(value)


def node_config() -> RunnableConfig | None:
    """The running graph node's config, or ``None`` outside a runnable (hooks called directly)."""
    try:
        return get_config()
    except RuntimeError:
        return None


class _Job:
    """One confession handed to the durable task (never checkpointed itself)."""

    def __init__(self, pipeline: ConfessionPipeline, request: EpisodeCall) -> None:
        self.pipeline = pipeline
        self.request = request

    def call(self) -> EpisodeCall:
        return replace(self.request, config=node_config())


# Both tasks share one name: a run paused with invoke() may be resumed with ainvoke(), and
# the task id (hence the replayed result) depends on the name only. Results are plain JSON
# so any checkpointer serialiser stores them without registering types.
def _confess(job: _Job) -> dict[str, Any]:
    return job.pipeline.run(job.call()).model_dump(mode="json")


async def _aconfess(job: _Job) -> dict[str, Any]:
    return (await job.pipeline.arun(job.call())).model_dump(mode="json")


# langgraph's task typing does not express these signatures; the calls below are checked.
_confess_task: Any = cast(Any, task)(name=_TASK_NAME)(_confess)
_aconfess_task: Any = cast(Any, task)(name=_TASK_NAME)(_aconfess)


def _durable(pipeline: ConfessionPipeline, request: EpisodeCall) -> bool:
    # Only a run that may pause must replay its confession on resume; a task also needs a
    # running graph (a config).
    return pipeline.policy.on_violation == "interrupt" and request.config is not None


def confess_durably(pipeline: ConfessionPipeline, request: EpisodeCall) -> Confession:
    """Run the pipeline; once per graph task (replayed on resume) when it may interrupt."""
    if _durable(pipeline, request):
        return Confession.model_validate(_confess_task(_Job(pipeline, request)).result())
    return pipeline.run(request)


async def aconfess_durably(pipeline: ConfessionPipeline, request: EpisodeCall) -> Confession:
    """Async :func:`confess_durably`."""
    if _durable(pipeline, request):
        return Confession.model_validate(await _aconfess_task(_Job(pipeline, request)))
    return await pipeline.arun(request)
