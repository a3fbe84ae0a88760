"""How much of the agent's last request the confession request reuses as a cacheable prefix.

Runs a three-round tool-using agent (real ``ChatOpenAI`` / ``ChatAnthropic`` through
``create_agent`` and the ConfessionMiddleware) against the local validating stub in
``tests/provider_stub``, takes the raw JSON of the agent's last request and of the
confession request, lays each out in the order the provider reads its prompt (OpenAI: tools,
messages; Anthropic: tools, system, messages), and prints the fraction of the agent's input
that the confession request repeats byte for byte as its prefix. It then prints the request
sizes of the two budget cases (a 5 MB bad reply, 1 000 calls with 1 KB arguments).

Run: ``.venv/bin/python benchmarks/cache_prefix.py``. No network, no API key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from langchain.agents import create_agent  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from confessional import Confessor  # noqa: E402
from confessional.langchain import ConfessionMiddleware  # noqa: E402
from provider_stub import Reply, running_stub  # noqa: E402
from provider_stub.harness import (  # noqa: E402
    HONEST,
    PROVIDERS,
    SYSTEM_PROMPT,
    TASK,
    Script,
    agent_requests,
    confession_requests,
    make_model,
    make_tools,
)

MODES = ("auto", "structured", "text")
BUDGET = 100_000


def _segments(provider: str, body: dict[str, Any], *, schema_first: bool = False) -> list[str]:
    """The prompt as the provider reads it, one canonical JSON text per element."""
    parts: list[Any] = []
    if schema_first and "response_format" in body:
        parts.append(body["response_format"])  # OpenAI: "a prefix to the system message"
    parts.extend(body.get("tools") or [])
    if provider == "anthropic" and "system" in body:
        parts.append(body["system"])
    parts.extend(body["messages"])
    return [json.dumps(part, separators=(",", ":")) + "\n" for part in parts]


def _shared_prefix(agent: str, confession: str) -> int:
    limit = min(len(agent), len(confession))
    index = 0
    while index < limit and agent[index] == confession[index]:
        index += 1
    return index


def _run(provider: str, mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    agent_replies = [
        Reply.tool_call("run_tests", {"target": "speed"}),
        Reply.tool_call("write_file", {"path": "tests/test_speed.py", "content": "timer = 0"}),
        Reply.tool_call("run_tests", {"target": "speed"}),
        Reply.text("Done. All tests pass."),
    ]
    script = Script(agent_replies, [Reply.json(HONEST)])
    with running_stub(script) as stub:
        model = make_model(stub, provider, temperature=0.2)  # type: ignore[arg-type]
        middleware = ConfessionMiddleware(confessor=Confessor(output_mode=mode))  # type: ignore[arg-type]
        agent = create_agent(
            model, make_tools(), system_prompt=SYSTEM_PROMPT, middleware=[middleware]
        )
        agent.invoke({"messages": [{"role": "user", "content": TASK}]})
    assert not stub.rejected(), stub.rejected()
    return agent_requests(stub)[-1].body, confession_requests(stub)[0].body


def prefix_table() -> None:
    print("Cache prefix: share of the agent's last request input repeated byte for byte")
    print(
        f"{'provider':10} {'mode':11} {'agent B':>8} {'confess B':>9} {'prefix B':>8} {'share':>7}"
    )
    for provider in PROVIDERS:
        for mode in MODES:
            agent, confession = _run(provider, mode)
            views = [("", False)]
            if provider == "openai" and "response_format" in confession:
                views.append((" (schema counted as a system prefix)", True))
            for label, schema_first in views:
                before = "".join(_segments(provider, agent, schema_first=schema_first))
                after = "".join(_segments(provider, confession, schema_first=schema_first))
                shared = _shared_prefix(before, after)
                print(
                    f"{provider:10} {mode:11} {len(before):8} {len(after):9} {shared:8} "
                    f"{shared / len(before):7.1%}{label}"
                )
            extra = {k: confession[k] for k in ("tool_choice",) if k in confession}
            native = "response_format" in confession or "output_config" in confession
            print(f"{'':10} {'':11} request fields changed: {extra}, native schema: {native}")


def _episode(rounds: int, args_size: int) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(SYSTEM_PROMPT), HumanMessage(TASK)]
    for index in range(rounds):
        call_id = f"toolu_01call{index:06d}"
        args = {"path": f"src/file_{index}.py", "content": "x" * args_size}
        messages.append(
            AIMessage(content="", tool_calls=[{"name": "write_file", "args": args, "id": call_id}])
        )
        messages.append(ToolMessage("ok", tool_call_id=call_id))
    messages.append(AIMessage("Done. All tests pass."))
    return messages


def budget_table() -> None:
    print(f"\nBudgets (token_budget={BUDGET:,}; tokens = request bytes / 4)")
    huge = "I refuse to format this. " * (5_000_000 // 25)
    for provider in PROVIDERS:
        script = Script(confession=[Reply.text(huge), Reply.json(HONEST)])
        with running_stub(script) as stub:
            model = make_model(stub, provider)  # type: ignore[arg-type]
            Confessor(model, token_budget=BUDGET).confess(_episode(1, 10), tools=make_tools())
        first, retry = confession_requests(stub)
        print(
            f"{provider:10} 5 MB bad reply: first request {len(first.raw) // 4:,} tokens, "
            f"retry {len(retry.raw) // 4:,} tokens"
        )
        messages = _episode(1000, 1000)
        with running_stub(Script(confession=[Reply.json(HONEST)])) as stub:
            model = make_model(stub, provider)  # type: ignore[arg-type]
            Confessor(model, token_budget=BUDGET).confess(messages, tools=make_tools())
        (request,) = confession_requests(stub)
        uncompacted = len(json.dumps([m.model_dump() for m in messages])) // 4
        print(
            f"{provider:10} 1,000 calls x 1 KB args: request {len(request.raw) // 4:,} tokens "
            f"(episode uncompacted ~{uncompacted:,})"
        )


if __name__ == "__main__":
    prefix_table()
    budget_table()
