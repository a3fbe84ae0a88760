"""Control flow shared by the surfaces: review pauses, withheld-answer notices, and the
durable confession task that makes a paused run resume without confessing twice.

Surfaces map the core's :data:`~confessional.confession.Action` to their framework with
these pieces; none of them decides anything.
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
from pydantic import BaseModel, model_validator

from confessional.confession import Action, Confession
from confessional.episode import message_text
from confessional.errors import ConfessionHalted
from confessional.pipeline import ConfessionPipeline, EpisodeCall
from confessional.policy import ConfessionPolicy

__all__ = [
    "NoticeReason",
    "Resolution",
    "ReviewDecision",
    "aconfess_durably",
    "as_confession",
    "ask_review",
    "confess_durably",
    "is_notice",
    "node_config",
    "resolve",
    "review_payload",
    "withheld_notice",
]

_TASK_NAME = "confessional_confession"


class ReviewDecision(BaseModel):
    """What a reviewer answers to a confession interrupt.

    Accepted resume values: ``"approve"`` / ``"reject"``, ``{"action": ...}`` or
    ``{"type": ...}`` (the shape LangChain's human-in-the-loop middleware uses). Anything
    else fails validation and the interrupt can simply be answered again.
    """

    action: Literal["approve", "reject"]
    message: str | None = None
    """Optional reviewer note, kept in the rejection notice."""

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"action": value.strip().lower()}
        if isinstance(value, Mapping) and "action" not in value and "type" in value:
            return {**value, "action": value["type"]}
        return value


def review_payload(confession: Confession, answer: BaseMessage | None = None) -> dict[str, Any]:
    """The JSON-serialisable interrupt payload for a confession awaiting review."""
    return {
        "type": "confession_review",
        "confession": confession.model_dump(mode="json"),
        "reasons": list(confession.reasons),
        "withheld_answer": message_text(answer) if answer is not None else None,
        "actions": ["approve", "reject"],
    }


def ask_review(confession: Confession, answer: BaseMessage | None = None) -> ReviewDecision:
    """Pause the graph for review; returns the decision once resumed."""
    decision = interrupt(review_payload(confession, answer), response_schema=ReviewDecision)
    return (
        decision
        if isinstance(decision, ReviewDecision)
        else ReviewDecision.model_validate(decision)
    )


@dataclass(frozen=True)
class Resolution:
    """What a surface finally does: ``proceed`` or ``withhold`` (``raise`` has raised)."""

    action: Action
    decision: ReviewDecision | None = None
    """The reviewer's decision, when the run paused for review."""

    def answer(self, original: AIMessage) -> AIMessage:
        """The answer to deliver when the run proceeds: the original, or a reviewer's edit
        of it (same message id, so it replaces the original in ``messages``)."""
        return original

    def notice(self, confession: Confession, message_id: str | None) -> AIMessage:
        """The notice that stands in for the withheld answer."""
        if self.decision is None:
            return withheld_notice(confession, message_id=message_id)
        return withheld_notice(
            confession, message_id=message_id, reason="rejected", note=self.decision.message or ""
        )


def resolve(
    policy: ConfessionPolicy, confession: Confession, answer: BaseMessage | None = None
) -> Resolution:
    """Carry out ``confession.action`` up to what the surface must do itself.

    ``review`` pauses the graph (a LangGraph interrupt) and follows the decision through
    ``policy.follow_up``; ``raise`` raises :class:`~confessional.ConfessionHalted`.
    """
    action, decision = confession.action, None
    if action == "review":
        decision = ask_review(confession, answer)
        action = policy.follow_up(decision.action)
    if action == "raise":
        raise ConfessionHalted(
            confession, "the reviewer rejected the flagged answer" if decision else None
        )
    return Resolution(action, decision)


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
