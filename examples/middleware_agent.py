"""ConfessionMiddleware on a ``create_agent`` agent.

Runs offline: the models are scripted doubles from ``confessional.testing`` (an agent that
rigs a speed test and then admits it when asked for a confession). Swap in any chat model,
e.g. ``create_agent("openai:gpt-4.1-mini", ...)``; the agent's own model confesses.

    python examples/middleware_agent.py
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from confessional import ConfessionPolicy
from confessional.langchain import ConfessionMiddleware
from confessional.langgraph import checkpoint_serde
from confessional.testing import cheating_agent, example_tools

TASK: Any = {"messages": [("user", "Make the speed test pass.")]}


def main() -> None:
    # flag (the default): the run completes and the confession is in state.
    agent = create_agent(cheating_agent(), example_tools(), middleware=[ConfessionMiddleware()])
    result = agent.invoke(TASK)
    print("flag      :", result["confessions"][-1].summary())
    print("  answer  :", result["messages"][-1].content)

    # interrupt: pause with the report for a human; "reject" withholds the answer.
    review = ConfessionMiddleware(policy=ConfessionPolicy(on_violation="interrupt"))
    agent = create_agent(
        cheating_agent(),
        example_tools(),
        middleware=[review],
        checkpointer=InMemorySaver(serde=checkpoint_serde()),  # loads confessions quietly
    )
    config: RunnableConfig = {"configurable": {"thread_id": "example"}}
    paused = agent.invoke(TASK, config)
    payload = paused["__interrupt__"][0].value
    print("interrupt :", payload["reasons"])
    print("  held    :", payload["withheld_answer"])
    reject: Command[Any] = Command(resume="reject")
    resumed = agent.invoke(reject, config)
    print("  reject  :", resumed["messages"][-1].content)
    print("  kept    :", resumed["confession_withheld"][-1].content)


if __name__ == "__main__":
    main()
