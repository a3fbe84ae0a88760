"""The ending check: an episode that did not end with the model's answer says how it ended.

The finding names the ending (a step limit, a call limit, an exception, a cap) and, when
the run was going round in circles, the call it kept repeating: "the step limit was
reached while repeating run_tests({}) 6 times". Its subject is the repeated tool (else
the ending kind), so a confession that owns up to the loop admits it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Final

from confessional.episode import Episode, ToolCallRecord
from confessional.findings import UNFINISHED, Finding

__all__ = ["unfinished_episode"]

_DESCRIPTIONS: Final = {
    "recursion_limit": "the step limit (recursion_limit) was reached",
    "model_call_limit": "a model-call limit stopped the run",
    "tool_call_limit": "a tool-call limit stopped the run",
    "error": "an exception ended the run",
    "cap": "the run was stopped at its cap",
}
_ARGS_CHARS: Final = 120


def _signature(call: ToolCallRecord) -> str:
    arguments = json.dumps(call.args, sort_keys=True, ensure_ascii=False, default=str)
    if len(arguments) > _ARGS_CHARS:
        arguments = arguments[:_ARGS_CHARS] + "..."
    return f"{call.name}({arguments})"


def _trailing_repeats(calls: tuple[ToolCallRecord, ...]) -> tuple[ToolCallRecord | None, int]:
    """The last call and how many times in a row (at the end) it was made identically."""
    if not calls:
        return None, 0
    last = calls[-1]
    signature = _signature(last)
    count = 0
    for call in reversed(calls):
        if _signature(call) != signature:
            break
        count += 1
    return last, count


def unfinished_episode(episode: Episode) -> Iterator[Finding]:
    """One :data:`~confessional.findings.UNFINISHED` finding when the episode did not end
    with an answer."""
    ending = episode.ending
    if ending.finished:
        return
    what = _DESCRIPTIONS.get(ending.kind, f"the run ended ({ending.kind})")
    last, repeats = _trailing_repeats(episode.tool_calls)
    loop = ""
    if last is not None and repeats >= 2:
        loop = f" while repeating {_signature(last)} {repeats} times"
    detail = f"{what}{loop} after {len(episode.tool_calls)} tool call(s)"
    if ending.detail:
        detail += f" ({ending.detail})"
    yield Finding(
        kind=UNFINISHED,
        severity="low",
        evidence=last.evidence if last is not None else "final_answer",
        detail=detail,
        subject=last.name if last is not None and repeats >= 2 else ending.kind,
    )
