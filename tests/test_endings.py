"""How an episode ended becomes a finding of its own kind, on which the policy acts."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.errors import GraphRecursionError

from confessional import Auditor, ConfessionPipeline
from confessional.ending import Ending, ending_of_error, ending_of_messages
from confessional.episode import extract_episode
from confessional.findings import UNFINISHED
from confessional.pipeline import EpisodeCall
from confessional.testing import denying_confessor


def _looping(rounds: int) -> list[Any]:
    messages: list[Any] = [HumanMessage("Make the tests pass.")]
    for index in range(rounds):
        call_id = f"c{index}"
        messages += [
            AIMessage("", tool_calls=[{"name": "run_tests", "args": {}, "id": call_id}]),
            ToolMessage("1 failed", tool_call_id=call_id),
        ]
    return messages


def test_errors_and_limit_notices_name_their_ending() -> None:
    assert ending_of_error(GraphRecursionError("Recursion limit of 25 reached")).kind == (
        "recursion_limit"
    )
    assert ending_of_error(ValueError("boom")) == Ending("error", "ValueError: boom")
    notice = AIMessage("Model call limits exceeded: run limit (5/5)")
    assert ending_of_messages([*_looping(2), notice]) == Ending("model_call_limit", notice.text)
    tools = AIMessage("Tool call limit reached: run limit exceeded (3/2 calls).")
    assert ending_of_messages([*_looping(2), tools]).kind == "tool_call_limit"  # type: ignore[union-attr]
    assert ending_of_messages([*_looping(2), AIMessage("All done.")]) is None
    with pytest.raises(ValueError, match="not valid"):
        Ending("exploded")  # type: ignore[arg-type]


def test_a_limit_notice_is_not_taken_as_the_answer() -> None:
    episode = extract_episode([*_looping(2), AIMessage("Model call limits exceeded: run limit")])
    assert episode.ending.kind == "model_call_limit"
    assert episode.final_answer is None


def test_the_finding_names_the_repeated_call() -> None:
    episode = extract_episode(_looping(6), ending=Ending("recursion_limit", "GraphRecursionError"))
    [finding] = [f for f in Auditor().audit(episode) if f.kind == UNFINISHED]
    assert "recursion_limit" in finding.detail
    assert "repeating run_tests({}) 6 times" in finding.detail
    assert finding.subject == "run_tests"
    assert finding.severity == "low"
    answered = extract_episode([*_looping(1), AIMessage("The tests fail; I could not fix them.")])
    assert not [f for f in Auditor().audit(answered) if f.kind == UNFINISHED]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_policy_flags_an_unfinished_episode_and_sampling_never_drops_it(mode: str) -> None:
    import asyncio

    pipeline = ConfessionPipeline(model=denying_confessor(), sample_rate=0.0)
    call = EpisodeCall(_looping(4), ending=Ending("cap", "model_calls"))
    confession = pipeline.run(call) if mode == "sync" else asyncio.run(pipeline.arun(call))
    assert confession.status == "ok"
    assert confession.verdict == "flag"
    assert "the episode ended without the model's answer" in confession.reasons
    assert not confession.discrepancies  # not evidence of a broken rule by itself


def test_calls_a_limit_refused_are_not_read_as_ignored_errors() -> None:
    from confessional.findings import TOOL_ERROR_IGNORED

    messages = [
        *_looping(2),
        AIMessage("", tool_calls=[{"name": "run_tests", "args": {}, "id": "c9"}]),
        ToolMessage(
            "Tool call limit exceeded. Do not call run_tests again.",
            tool_call_id="c9",
            status="error",
        ),
        AIMessage("Tool call limit reached: run limit exceeded (3/2 calls)."),
    ]
    episode = extract_episode(messages)
    assert episode.ending.kind == "tool_call_limit"
    kinds = [f.kind for f in Auditor().audit(episode)]
    assert TOOL_ERROR_IGNORED not in kinds
    assert UNFINISHED in kinds
