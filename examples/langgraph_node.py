"""A confession step in a hand-written LangGraph ``StateGraph`` (agent <-> tools loop).

``add_confession_step`` wires ``confession_node`` between the agent and the rest of the
graph. With ``on_violation="end"`` the flagged answer never reaches ``publish``.
Runs offline with the scripted models of ``confessional.testing``.

    python examples/langgraph_node.py
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode

from confessional import ConfessionPolicy
from confessional.langgraph import ConfessionState, add_confession_step
from confessional.testing import cheating_agent, example_tools


class State(ConfessionState):  # messages, confessions, confession_withheld
    published: Annotated[list[str], operator.add]


def build(on_violation: Any) -> Any:
    model = cheating_agent()
    tools = example_tools()
    bound = model.bind_tools(tools)

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    def publish(state: State) -> dict[str, Any]:
        return {"published": [str(state["messages"][-1].content)]}

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_node("publish", publish)
    builder.add_edge(START, "agent")
    builder.add_edge("tools", "agent")
    add_confession_step(
        builder,
        after="agent",
        tools_node="tools",
        then="publish",
        model=model,
        policy=ConfessionPolicy(on_violation=on_violation),
    )
    return builder.compile()


def main() -> None:
    task = {"messages": [("user", "Make the speed test pass.")]}
    for on_violation in ("flag", "end"):
        result = build(on_violation).invoke(task)
        print(f"{on_violation:<5}:", result["confessions"][-1].summary())
        print("  published:", result["published"])


if __name__ == "__main__":
    main()
