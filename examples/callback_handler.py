"""ConfessionCallbackHandler on any Runnable: here a ``create_agent`` graph.

A callback can only halt by raising from a sync handler (``on_violation="error"``); it
cannot withhold an answer or pause the run. Runs offline with scripted models.

    python examples/callback_handler.py
"""

from __future__ import annotations

import uuid
from typing import Any

from langchain.agents import create_agent
from langchain_core.runnables import RunnableConfig

from confessional import ConfessionHalted, ConfessionPolicy
from confessional.langchain import ConfessionCallbackHandler
from confessional.testing import admitting_confessor, cheating_agent, example_tools


def main() -> None:
    agent = create_agent(cheating_agent(), example_tools())
    task: Any = {"messages": [("user", "Make the speed test pass.")]}

    # Record: the handler keeps each outermost run's confession, keyed by its run id.
    recorder = ConfessionCallbackHandler(admitting_confessor())
    run_id = uuid.uuid4()
    config: RunnableConfig = {"callbacks": [recorder], "run_id": run_id}
    agent.invoke(task, config)
    confession = recorder.confession_for(run_id)
    assert confession is not None
    print("recorded:", confession.summary())

    # Halt: raise ConfessionHalted when the run ends with an admitted violation.
    halting = ConfessionCallbackHandler(
        admitting_confessor(), policy=ConfessionPolicy(on_violation="error")
    )
    try:
        agent.invoke(task, RunnableConfig(callbacks=[halting]))
    except ConfessionHalted as halted:
        print("halted  :", halted.report.shortcuts if halted.report else halted.confession.error)


if __name__ == "__main__":
    main()
