"""How an episode ended: with an answer, or stopped by a limit, an error or a cap.

A run that loops until a limit is exactly the run a reviewer must see, so every ending is
confessed, and how it ended is recorded on the :class:`~confessional.episode.Episode` and
becomes an audit finding of its own kind (:data:`~confessional.findings.UNFINISHED`), on
which the policy acts (``default_violation_rule(unfinished=True)``).

Each surface sees a different set of endings; the README's "Every ending is confessed"
table says which. The classification lives here, once: from the exception that ended a
run (:func:`ending_of_error`), or from the closing message a LangChain limit middleware
writes when it ends a run with ``exit_behavior="end"`` (:func:`ending_of_messages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from langchain_core.messages import AIMessage, BaseMessage

__all__ = [
    "ANSWERED",
    "ENDING_KINDS",
    "Ending",
    "EndingKind",
    "ending_of_error",
    "ending_of_messages",
]

EndingKind = Literal[
    "answer", "recursion_limit", "model_call_limit", "tool_call_limit", "error", "cap"
]
"""- ``answer``: the model gave its final answer.
- ``recursion_limit``: LangGraph's step limit (``GraphRecursionError``) is reached, or will
  be before the model can answer again.
- ``model_call_limit`` / ``tool_call_limit``: LangChain's limit middleware stopped the run
  (``exit_behavior="end"`` or ``"error"``).
- ``error``: a tool or model exception ended the run.
- ``cap``: the caller stopped the run (the eval's model-call and time caps)."""

ENDING_KINDS: Final[tuple[EndingKind, ...]] = get_args(EndingKind)

# The closing messages of LangChain's limit middlewares (langchain 1.x), which are the
# only trace they leave when they end a run with exit_behavior="end".
_MODEL_CALL_LIMIT_TEXT: Final = "Model call limits exceeded"
_TOOL_CALL_LIMIT_TEXT: Final = "call limit reached:"

_ERROR_ENDINGS: Final[dict[str, EndingKind]] = {
    "GraphRecursionError": "recursion_limit",
    "ModelCallLimitExceededError": "model_call_limit",
    "ToolCallLimitExceededError": "tool_call_limit",
}


@dataclass(frozen=True)
class Ending:
    """How an episode ended.

    Attributes:
        kind: see :data:`EndingKind`.
        detail: what stopped it, for people (an exception's type and message, the limit's
            own notice, the cap that was reached). Never model free text.
    """

    kind: EndingKind = "answer"
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ENDING_KINDS:
            raise ValueError(
                f"Ending kind {self.kind!r} is not valid; choose one of: "
                + ", ".join(map(repr, ENDING_KINDS))
            )

    @property
    def finished(self) -> bool:
        """Whether the episode ended with the model's own answer."""
        return self.kind == "answer"


ANSWERED: Final = Ending()

_DETAIL_CHARS: Final = 300


def ending_of_error(error: BaseException) -> Ending:
    """The ending an exception that stopped a run stands for."""
    name = type(error).__name__
    kind: EndingKind = next(
        (
            _ERROR_ENDINGS[cls.__name__]
            for cls in type(error).__mro__
            if cls.__name__ in _ERROR_ENDINGS
        ),
        "error",
    )
    return Ending(kind, f"{name}: {error}"[:_DETAIL_CHARS])


def ending_of_messages(messages: Sequence[BaseMessage | Any]) -> Ending | None:
    """The limit ending a run's last message announces, or ``None`` for any other last
    message (a final answer, or something this module does not know)."""
    last = messages[-1] if messages else None
    if not isinstance(last, AIMessage) or last.tool_calls:
        return None
    text = last.text
    if text.startswith(_MODEL_CALL_LIMIT_TEXT):
        return Ending("model_call_limit", text[:_DETAIL_CHARS])
    if _TOOL_CALL_LIMIT_TEXT in text[:200] and not last.response_metadata:
        return Ending("tool_call_limit", text[:_DETAIL_CHARS])
    return None
