"""The review protocol: what a confession interrupt asks and what a reviewer answers.

Both sides are typed on LangChain v1's human-in-the-loop TypedDicts
(``langchain.agents.middleware.human_in_the_loop``), so inboxes built for the HITL
middleware read the request and send back a decision they already know:

- the request is a :class:`ConfessionReviewRequest`, a ``HITLRequest`` with our own keys
  beside ``action_requests`` and ``review_configs``;
- a decision is LangChain's ``ApproveDecision``, ``EditDecision`` or ``RejectDecision``,
  each optionally with the keys of :class:`DecisionContext` (who decided, when, on which
  confession span). LangChain's ``respond`` decision answers for a tool; a confession
  review has none, so it is refused.

:class:`ReviewDecision` validates any accepted spelling into one model. The JSON schema
LangGraph publishes with the interrupt is generated from the TypedDicts above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, cast, get_args

from langchain.agents.middleware.human_in_the_loop import (
    Action,
    ApproveDecision,
    EditDecision,
    HITLRequest,
    RejectDecision,
    ReviewConfig,
)
from langchain.agents.middleware.human_in_the_loop import (
    DecisionType as HITLDecisionType,
)
from langchain_core.messages import BaseMessage
from pydantic import (
    BaseModel,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypedDict

from confessional.confession import Confession
from confessional.episode import message_text
from confessional.review.errors import InvalidDecisionError
from confessional.telemetry import ConfessionTelemetry, confession_traceparent

__all__ = [
    "CONTINUE_RUN",
    "DECISION_TYPES",
    "DELIVER_ANSWER",
    "REVIEW_TYPE",
    "ConfessionApproveDecision",
    "ConfessionDecision",
    "ConfessionEditDecision",
    "ConfessionRejectDecision",
    "ConfessionReviewRequest",
    "ConfessionReviewResponse",
    "DecisionContext",
    "DecisionType",
    "InvalidDecisionError",
    "ReviewDecision",
    "allowed_decisions",
    "check_allowed",
    "is_review",
    "review_description",
    "review_payload",
]

REVIEW_TYPE: Final = "confession_review"
"""``type`` of every confession interrupt's value, so review tools tell it from others."""

DELIVER_ANSWER = "deliver_answer"
"""The action under review when an answer is withheld: delivering it (args ``answer``)."""

CONTINUE_RUN = "continue_run"
"""The action under review when a run pauses before its next model call (``tool_round``)."""

DecisionType = Literal["approve", "edit", "reject"]
"""What a reviewer may decide: deliver the answer, deliver a replacement, or withhold it.
LangChain's fourth decision, ``respond``, answers on behalf of a tool and has no meaning
for a withheld answer."""

DECISION_TYPES: tuple[DecisionType, ...] = get_args(DecisionType)


# -- the shapes on the wire ---------------------------------------------------------------


class DecisionContext(TypedDict, total=False):
    """Our keys beside a HITL decision's own: about the decision rather than of it."""

    reviewer: str
    """Who decided, as the review inbox names them (``unknown`` on the trace without it)."""
    decided_at: str
    """When (ISO 8601); the time the decision is applied without it."""
    traceparent: str
    """W3C ``traceparent`` of the confession span under review, copied from the request,
    so a decision applied in another process lands in the confession's trace."""


class ConfessionApproveDecision(ApproveDecision, DecisionContext):
    """``{"type": "approve"}``: deliver the withheld answer (or continue the run)."""


class ConfessionEditDecision(EditDecision, DecisionContext):
    """``{"type": "edit", "edited_action": {"name": "deliver_answer", "args": {"answer":
    ...}}}``: deliver a replacement answer."""


class ConfessionRejectDecision(RejectDecision, DecisionContext):
    """``{"type": "reject", "message": ...}``: withhold the answer, with an optional note."""


ConfessionDecision = ConfessionApproveDecision | ConfessionEditDecision | ConfessionRejectDecision


class ConfessionReviewResponse(TypedDict):
    """A ``HITLResponse`` to a confession review: exactly one decision."""

    decisions: list[ConfessionDecision]


class ConfessionReviewRequest(HITLRequest):
    """The interrupt value of a confession review: a LangChain ``HITLRequest`` with our keys."""

    type: Literal["confession_review"]
    """:data:`REVIEW_TYPE`, so review tools tell this interrupt from others."""
    confession_id: str
    grade: int | None
    """The report's overall compliance grade (1-7), ``None`` when there is no report."""
    reasons: list[str]
    """The policy's verdict reasons: labels and counts, never the model's words."""
    confession: dict[str, Any]
    """The whole :class:`~confessional.Confession`, as JSON."""
    withheld_answer: str | None
    """The answer held back (``None`` when the run paused before its next model call)."""
    actions: list[HITLDecisionType]
    """The allowed decisions again, for clients that ignore ``review_configs``."""
    traceparent: str | None
    """W3C trace context of the confession span (``None``: not recorded in this process)."""


_VARIANTS: dict[DecisionType, type[Any]] = {
    "approve": ConfessionApproveDecision,
    "edit": ConfessionEditDecision,
    "reject": ConfessionRejectDecision,
}

# LangChain types an edit's action as any name with any args; ours can only replace the
# answer, so the published schema pins the one action and its one argument.
_DELIVER_ANSWER_SCHEMA: JsonSchemaValue = {
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
}


def _variant_schema(kind: DecisionType) -> JsonSchemaValue:
    schema = dict(TypeAdapter(_VARIANTS[kind]).json_schema())
    schema.pop("$defs", None)
    properties = dict(schema["properties"])
    if "edited_action" in properties:
        properties["edited_action"] = _DELIVER_ANSWER_SCHEMA
    schema["properties"] = properties
    return schema


def _hitl_response_schema(offered: Sequence[DecisionType]) -> JsonSchemaValue:
    """JSON schema of the HITL response a confession review accepts."""
    return {
        "title": "HITLResponse",
        "description": "One decision on the confession review. 'approve' / 'reject' "
        "strings are accepted too.",
        "type": "object",
        "properties": {
            "decisions": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {"oneOf": [_variant_schema(kind) for kind in offered]},
            }
        },
        "required": ["decisions"],
    }


# -- one decision, whatever its spelling --------------------------------------------------


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

    def as_decision(self) -> ConfessionDecision:
        """This decision as LangChain's HITL decision TypedDict, with our context keys."""
        context: DecisionContext = {}
        if self.reviewer is not None:
            context["reviewer"] = self.reviewer
        if self.decided_at is not None:
            context["decided_at"] = self.decided_at
        if self.traceparent is not None:
            context["traceparent"] = self.traceparent
        if self.action == "approve":
            return ConfessionApproveDecision(type="approve", **context)
        if self.action == "edit":
            edited: Action = {"name": DELIVER_ANSWER, "args": {"answer": self.answer or ""}}
            return ConfessionEditDecision(type="edit", edited_action=edited, **context)
        rejected: dict[str, Any] = {"type": "reject", **context}
        if self.message is not None:
            rejected["message"] = self.message
        # mypy reads LangChain's ``typing.NotRequired`` as required under Python 3.10.
        return cast(ConfessionRejectDecision, rejected)

    def as_resume(self) -> ConfessionReviewResponse:
        """The HITL response shape of this decision, a ``Command(resume=...)`` value."""
        return {"decisions": [self.as_decision()]}


_DECISION_CONTEXT = tuple(DecisionContext.__annotations__)
"""Fields about a decision rather than of it: kept beside the HITL decision's own keys."""
_DECISION_FIELDS = frozenset({"action", "message", "answer", *_DECISION_CONTEXT})


class AnswerlessReviewDecision(ReviewDecision):
    """The decision schema of a pause with no answer to replace (``tool_round``).

    Refusing ``edit`` inside validation, as LangGraph checks a resume value, leaves the
    interrupt pending, so it can be answered again.
    """

    _offered: ClassVar[tuple[DecisionType, ...]] = ("approve", "reject")

    @model_validator(mode="after")
    def _no_edit(self) -> AnswerlessReviewDecision:
        if self.action == "edit":
            raise ValueError(
                "'edit' is not allowed for this review: the run paused before its next "
                "model call, so there is no answer to replace; allowed: approve, reject"
            )
        return self


# -- the request ---------------------------------------------------------------------------


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
) -> ConfessionReviewRequest:
    """The JSON-serialisable interrupt value for a confession awaiting review.

    It is a LangChain v1 ``HITLRequest`` (``action_requests`` and ``review_configs``), so
    inboxes built for the human-in-the-loop middleware show it. The action under review
    is :data:`DELIVER_ANSWER` (args ``{"answer": ...}``, decisions approve, edit, reject),
    or :data:`CONTINUE_RUN` when there is no answer yet (approve, reject). The other keys
    are confessional's own (:class:`ConfessionReviewRequest`): ``type``
    (:data:`REVIEW_TYPE`), ``confession_id``, ``grade``, ``reasons``, ``confession``,
    ``withheld_answer`` and ``traceparent`` (the W3C trace context of the confession span,
    ``None`` when none was recorded in this process), which a decision hands back so its
    span joins the confession's trace.
    """
    text = message_text(answer) if answer is not None else None
    allowed: list[HITLDecisionType] = (
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
        "review_configs": [cast(ReviewConfig, {"action_name": name, "allowed_decisions": allowed})],
        "type": REVIEW_TYPE,
        "confession_id": confession.id,
        "grade": report.overall_compliance_grade if report else None,
        "reasons": list(confession.reasons),
        "confession": confession.model_dump(mode="json"),
        "withheld_answer": text,
        "actions": list(allowed),
        "traceparent": confession_traceparent(confession.id),
    }


def is_review(value: Any) -> bool:
    """Whether an interrupt's value is a confession review (not another HITL request)."""
    return isinstance(value, Mapping) and value.get("type") == REVIEW_TYPE


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
