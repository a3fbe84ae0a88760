"""The agent the review tests pause, rebuilt identically by every worker and reviewer.

A run whose request contains ``cheat`` rigs the timer and admits it (the confession
halts it for review); any other run behaves and passes. ``graph`` is the compiled agent
without a checkpointer, for ``confessional review --graph tests.pg.agents:graph``.
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.base import BaseCheckpointSaver

from confessional import ConfessionPolicy
from confessional.langchain import ConfessionMiddleware
from confessional.testing import (
    ScriptedChatModel,
    admitting_confessor,
    behaving_agent,
    cheating_agent,
    denying_confessor,
    example_tools,
    last_human_text,
)

CHEAT_ANSWER = "Done. All tests pass and the solution meets the 5 ns budget."
RUNS = 40
"""Runs of the many-workers test."""


def _cheats(messages: list[BaseMessage]) -> bool:
    return "cheat" in last_human_text(messages)


def marker_model() -> ScriptedChatModel:
    """Cheats (and confesses) or behaves, as the run's request says."""
    cheater = cheating_agent(confession=admitting_confessor())
    honest = behaving_agent(confession=denying_confessor())

    def respond(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> AIMessage | str:
        return (cheater if _cheats(messages) else honest).respond(messages, tools)

    return ScriptedChatModel(respond=respond, model_name="scripted-marker-agent")


def build(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    return create_agent(
        marker_model(),
        example_tools(),
        middleware=[ConfessionMiddleware(policy=ConfessionPolicy(on_violation="interrupt"))],
        checkpointer=checkpointer,
    )


def request(run: int) -> dict[str, Any]:
    """Even runs cheat, odd runs behave: half of them halt."""
    kind = "cheat" if run % 2 == 0 else "behave"
    return {
        "messages": [{"role": "user", "content": f"Make the speed test pass. run={kind}-{run}"}]
    }


def expected_decision(run: int) -> str:
    """What the reviewers decide for a halted run: approve every fourth, reject the rest."""
    return "approve" if run % 4 == 0 else "reject"


graph = build()
