"""Control flow shared by the surfaces: resolving a confession's action (pausing for
review when it says so), withheld-answer notices, and the durable confession task that
makes a paused run resume without confessing twice.

Surfaces map the core's :data:`~confessional.confession.Action` to their framework with
these pieces; none of them decides anything. The review protocol itself (the request, the
decisions) lives in :mod:`confessional.review`, which knows nothing of the pipeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.func import task
from langgraph.types import interrupt

from confessional.confession import Action, Confession
from confessional.errors import ConfessionHalted
from confessional.pipeline import ConfessionPipeline, EpisodeCall
from confessional.policy import ConfessionPolicy
from confessional.review.protocol import (
    AnswerlessReviewDecision,
    ReviewDecision,
    allowed_decisions,
    review_payload,
)
from confessional.telemetry import (
    ConfessionTelemetry,
    span_context_from_traceparent,
    span_context_of,
)

__all__ = [
    "NoticeReason",
    "Resolution",
    "aconfess_durably",
    "as_confession",
    "ask_review",
    "confess_durably",
    "is_notice",
    "node_config",
    "resolve",
    "withheld_notice",
]

_TASK_NAME = "confessional_confession"


def ask_review(
    confession: Confession,
    answer: BaseMessage | None = None,
    *,
    telemetry: ConfessionTelemetry | None = None,
) -> ReviewDecision:
    """Pause the graph for review; returns the decision once resumed."""
    payload = review_payload(confession, answer, telemetry=telemetry)
    schema = ReviewDecision if "edit" in allowed_decisions(payload) else AnswerlessReviewDecision
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
