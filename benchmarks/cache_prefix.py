"""What share of the agent's last request the confession reads from the provider's cache.

Runs a three-round tool-using agent (real ``ChatOpenAI`` / ``ChatAnthropic`` through
``create_agent`` and the ConfessionMiddleware, Anthropic with LangChain's
``AnthropicPromptCachingMiddleware``, as its users cache) against the local validating stub
in ``tests/provider_stub``, whose ``caching`` module applies each provider's documented
cache rules (OpenAI: longest identical prefix, a response schema first; Anthropic: tools,
system, messages up to a breakpoint, the messages dropped when ``tool_choice`` or thinking
change). For each provider and output mode it prints the cached share of the agent's
prompt as the confession's ``usage`` reports it (the figure that is billed), beside the
byte-equality share (which hides the cache keys), and the same for a confession whose first
reply is a tool call (the retry). It then prints the request sizes of the two budget cases
(a 5 MB bad reply, 1 000 calls with 1 KB arguments).

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

from confessional import Confession, Confessor  # noqa: E402
from confessional.langchain import ConfessionMiddleware  # noqa: E402
from provider_stub import Reply, running_stub  # noqa: E402
from provider_stub.caching import PromptCache  # noqa: E402
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


# A system prompt long enough for both providers to cache (over 1 024 tokens).
POLICY = (
    SYSTEM_PROMPT
    + "\n"
    + "".join(
        f"Rule {n}: keep the benchmark, its timer and its budget as the team set them.\n"
        for n in range(80)
    )
)


def _run(
    provider: str, mode: str, *, retry: bool = False
) -> tuple[dict[str, Any], dict[str, Any], Confession]:
    agent_replies = [
        Reply.tool_call("run_tests", {"target": "speed"}),
        Reply.tool_call("write_file", {"path": "tests/test_speed.py", "content": "timer = 0"}),
        Reply.tool_call("run_tests", {"target": "speed"}),
        Reply.text("Done. All tests pass."),
    ]
    confessions = [Reply.json(HONEST)]
    if retry:
        confessions.insert(0, Reply.tool_call("run_tests", {"target": "speed"}))
    with running_stub(Script(agent_replies, confessions)) as stub:
        model = make_model(stub, provider, temperature=0.2)  # type: ignore[arg-type]
        middleware: list[Any] = []
        if provider == "anthropic":
            from langchain_anthropic.middleware import AnthropicPromptCachingMiddleware

            middleware.append(AnthropicPromptCachingMiddleware())
        confessor = Confessor(output_mode=mode)  # type: ignore[arg-type]
        middleware.append(ConfessionMiddleware(confessor=confessor))
        agent = create_agent(model, make_tools(), system_prompt=POLICY, middleware=middleware)
        state = agent.invoke({"messages": [{"role": "user", "content": TASK}]})
    assert not stub.rejected(), stub.rejected()
    confession: Confession = state["confessions"][-1]
    assert confession.status == "ok", confession.error
    return agent_requests(stub)[-1].body, confession_requests(stub)[0].body, confession


def _prompt_tokens(provider: str, body: dict[str, Any]) -> int:
    cache = PromptCache()
    return (cache.openai(body) if provider == "openai" else cache.anthropic(body)).input_tokens


def prefix_table() -> None:
    print("Prompt cache: share of the agent's last request the confession reads from the cache")
    print("(by rules = usage's cache read over the agent's prompt, per call, as billed;")
    print(" bytes = the byte-equal prefix, which ignores the providers' cache keys;")
    print(" written = cache creation, uncached = the rest of the input, billed in full)")
    header = f"{'provider':10} {'mode':11} {'calls':>5} {'agent tok':>9} {'cached':>7} "
    print(header + f"{'by rules':>8} {'bytes':>7} {'written':>7} {'uncached':>8}")
    for provider in PROVIDERS:
        for mode, retry in [(m, False) for m in MODES] + [("auto", True)]:
            agent, confession_body, confession = _run(provider, mode, retry=retry)
            usage = confession.usage
            assert usage is not None
            tokens = _prompt_tokens(provider, agent)
            before = "".join(_segments(provider, agent, schema_first=True))
            after = "".join(_segments(provider, confession_body, schema_first=True))
            shared = _shared_prefix(before, after) / len(before)
            share = usage.cache_read_input_tokens / (tokens * usage.calls)
            label = mode + (" +retry" if retry else "")
            print(
                f"{provider:10} {label:11} {usage.calls:5} {tokens:9} "
                f"{usage.cache_read_input_tokens:7} {share:8.1%} {shared:7.1%} "
                f"{usage.cache_creation_input_tokens:7} {usage.uncached_input_tokens:8}"
            )


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
