"""The confession span nests under the agent's own trace with no extra wiring, in the three
set-ups users have: their own parent span, OpenInference's LangChain instrumentor (which
never sets the current OTel span) and OpenLLMetry's LangChain instrumentor.

Each test runs a real ``create_agent`` with scripted models and a small middleware that
calls the pipeline from ``after_agent``, sync and async.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain_core.language_models import BaseChatModel
from langgraph.config import get_config
from langgraph.runtime import Runtime
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from confessional import Confession, ConfessionPipeline, ConfessionTelemetry
from confessional import semconv as sc
from confessional.testing import cheating_agent, example_tools

Setup = Literal["user_span", "openinference", "openllmetry"]
SETUPS: tuple[Setup, ...] = ("user_span", "openinference", "openllmetry")


@dataclass
class Traced:
    setup: Setup
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def around_run(self) -> AbstractContextManager[Any]:
        """What the user wraps the agent call in: their own span, or nothing."""
        if self.setup == "user_span":
            return self.provider.get_tracer("app").start_as_current_span("user agent run")
        return nullcontext()


@pytest.fixture(autouse=True)
def fresh_otel_context() -> Iterator[None]:
    """OpenLLMetry attaches contexts it never detaches; keep that from leaking a stale
    current span into the next test."""
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


@pytest.fixture(params=SETUPS)
def traced(
    request: pytest.FixtureRequest,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> Iterator[Traced]:
    setup: Setup = request.param
    instrumentor: Any = None
    if setup == "openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        instrumentor = LangChainInstrumentor()
    elif setup == "openllmetry":
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        instrumentor = LangchainInstrumentor()
    if instrumentor is not None:
        instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        yield Traced(setup, tracer_provider, span_exporter)
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
        if setup == "openllmetry":
            remove_openllmetry_wrappers()


def remove_openllmetry_wrappers() -> None:
    """OpenLLMetry 0.62's uninstrument() passes dotted names such as
    ``("langchain_core.callbacks", "BaseCallbackManager.__init__")`` to ``unwrap``, which
    then finds nothing, so its handler stays in every callback manager. Undo it for real."""
    import importlib

    import wrapt

    # wrapt 2 proxies derive from BaseObjectProxy; wrapt 1 has only ObjectProxy.
    proxy_type = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)
    hooks = ["before_model", "after_model", "before_agent", "after_agent"]
    targets = [
        ("langchain_core.callbacks.base", "BaseCallbackManager", "__init__"),
        ("langgraph.pregel", "Pregel", "stream"),
        ("langgraph.pregel", "Pregel", "astream"),
        ("langgraph.types", "Command", "__init__"),
        ("langchain.agents.factory", None, "create_agent"),
        ("langchain.agents", None, "create_agent"),
        ("langgraph.prebuilt.chat_agent_executor", None, "create_react_agent"),
        ("langgraph.prebuilt", None, "create_react_agent"),
        *[
            ("langchain.agents.middleware.types", "AgentMiddleware", name)
            for hook in hooks
            for name in (hook, f"a{hook}")
        ],
    ]
    for module_name, class_name, attribute in targets:
        owner: Any = importlib.import_module(module_name)
        if class_name is not None:
            owner = getattr(owner, class_name)
        value = vars(owner).get(attribute)
        while isinstance(value, proxy_type):
            value = value.__wrapped__
            setattr(owner, attribute, value)


class ConfessAfterAgent(AgentMiddleware[AgentState[Any], Any]):
    """A minimal surface: confess in after_agent through the one pipeline."""

    def __init__(self, pipeline: ConfessionPipeline, model: BaseChatModel) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.model = model
        self.confessions: list[Confession] = []

    def after_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        self.confessions.append(
            self.pipeline.run(
                state["messages"], model=self.model, agent_name="coder", config=get_config()
            )
        )
        return None

    async def aafter_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        self.confessions.append(
            await self.pipeline.arun(
                state["messages"], model=self.model, agent_name="coder", config=get_config()
            )
        )
        return None


def build_agent(traced: Traced) -> tuple[Any, ConfessAfterAgent]:
    # Looked up at call time: OpenLLMetry wraps create_agent when it instruments.
    import langchain.agents

    model = cheating_agent()
    middleware = ConfessAfterAgent(
        ConfessionPipeline(telemetry=ConfessionTelemetry(tracer_provider=traced.provider)), model
    )
    agent = langchain.agents.create_agent(
        model, example_tools(), middleware=[middleware], name="coder"
    )
    return agent, middleware


def ancestry(span: ReadableSpan, spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """``span`` and its ancestors up to the root, all of which must have been exported."""
    by_id = {s.context.span_id: s for s in spans}
    chain = [span]
    while chain[-1].parent is not None:
        parent_id = chain[-1].parent.span_id  # type: ignore[union-attr]
        assert parent_id in by_id, f"parent of {chain[-1].name!r} was not exported"
        chain.append(by_id[parent_id])
    return chain


def evaluation_event_carriers(spans: list[ReadableSpan]) -> list[str]:
    return [s.name for s in spans if any(e.name == "gen_ai.evaluation.result" for e in s.events)]


def evaluated_id(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def agent_span_of(chain: list[ReadableSpan]) -> ReadableSpan:
    """The agent invocation in a confession's ancestry: the outermost span that is not the
    test's own request root (user spans are the agent themselves)."""
    inner = [s for s in chain[1:] if s.name != "request"]
    return inner[-1] if inner else chain[1]


def check_trace(traced: Traced, middleware: ConfessAfterAgent) -> None:
    [confession] = middleware.confessions
    assert confession.verdict == "flag"
    spans = list(traced.exporter.get_finished_spans())
    ours = [s for s in spans if s.name.startswith("confession coder")]
    assert len(ours) == 1, [s.name for s in spans]
    span = ours[0]
    attrs = dict(span.attributes or {})
    assert attrs[sc.CONFESSION_ID] == confession.id
    assert attrs[sc.OPENINFERENCE_SPAN_KIND] == "EVALUATOR"
    chain = ancestry(span, spans)
    names = [s.name for s in chain]
    assert len(chain) >= 2, names
    # The evaluation belongs to the evaluated operation, the enclosing agent span, and the
    # confession span names it; the span-event copy is opt-in, so no span carries one.
    assert attrs[sc.CONFESSION_EVALUATED_SPAN_ID] == evaluated_id(agent_span_of(chain))
    assert evaluation_event_carriers(spans) == []
    assert span.events == ()
    assert {s.context.trace_id for s in chain} == {span.context.trace_id}
    root = chain[-1]
    if traced.setup == "user_span":
        assert names == ["confession coder", "user agent run"]
    elif traced.setup == "openinference":
        # OpenInference names spans after LangChain runs: the hook node, then the graph.
        assert names == ["confession coder", "ConfessAfterAgent.after_agent", "coder"]
    else:
        assert names[1] == "execute_task ConfessAfterAgent.after_agent"
        assert root.name == "invoke_agent coder"
    # The confession's own model call and verdict run stay in the agent's trace too.
    related = [s for s in spans if "confession" in s.name]
    if traced.setup != "user_span":
        assert len(related) >= 3, [s.name for s in spans]
    assert {s.context.trace_id for s in related} == {root.context.trace_id}
    # The run is flagged where users filter: the enclosing spans, not the confession.
    assert (chain[1].attributes or {}).get(sc.CONFESSION_FLAGGED) is True
    assert (root.attributes or {}).get(sc.CONFESSION_FLAGGED) is True
    assert sc.CONFESSION_FLAGGED not in attrs


def test_confession_span_nests_under_the_agent_run(traced: Traced) -> None:
    agent, middleware = build_agent(traced)
    with traced.around_run():
        agent.invoke({"messages": [("user", "Make the speed test pass.")]})
    check_trace(traced, middleware)


@pytest.mark.asyncio
async def test_confession_span_nests_under_the_agent_run_async(traced: Traced) -> None:
    agent, middleware = build_agent(traced)
    with traced.around_run():
        await agent.ainvoke({"messages": [("user", "Make the speed test pass.")]})
    check_trace(traced, middleware)


def test_openinference_installed_but_not_instrumented_falls_back_quietly(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its get_current_span() prints to stdout when not instrumented: we must not call it."""
    agent, _middleware = build_agent(Traced("user_span", tracer_provider, span_exporter))
    agent.invoke({"messages": [("user", "Make the speed test pass.")]})
    assert "Missing `tracer`" not in capsys.readouterr().out
    [span] = [s for s in span_exporter.get_finished_spans() if s.name == "confession coder"]
    assert span.parent is None


EXPECTED_ROOT = {
    "user_span": "user agent run",
    "openinference": "coder",
    "openllmetry": "invoke_agent coder",
}


def check_surface_trace(
    traced: Traced, expected_root: str | None = None, *, parent_flagged: bool = True
) -> None:
    spans = list(traced.exporter.get_finished_spans())
    ours = [s for s in spans if s.name.startswith("confession coder")]
    assert len(ours) == 1, [s.name for s in spans]
    chain = ancestry(ours[0], spans)
    assert len(chain) >= 2, [s.name for s in chain]
    assert chain[-1].name == (expected_root or EXPECTED_ROOT[traced.setup])
    flagged = (chain[1].attributes or {}).get(sc.CONFESSION_FLAGGED)
    assert flagged is (True if parent_flagged else None)
    # The evaluation belongs to the evaluated operation: the enclosing agent span.
    evaluated = (ours[0].attributes or {})[sc.CONFESSION_EVALUATED_SPAN_ID]
    assert evaluated == evaluated_id(agent_span_of(chain))
    assert evaluation_event_carriers(spans) == []


def test_middleware_surface_nests_under_the_agent_run(traced: Traced) -> None:
    import langchain.agents

    from confessional.langchain import ConfessionMiddleware

    model = cheating_agent()
    middleware = ConfessionMiddleware(
        model,
        telemetry=ConfessionTelemetry(tracer_provider=traced.provider),
        agent_name="coder",
    )
    agent = langchain.agents.create_agent(
        model, example_tools(), middleware=[middleware], name="coder"
    )
    with traced.around_run():
        agent.invoke({"messages": [("user", "Make the speed test pass.")]})
    check_surface_trace(traced)


def test_graph_node_surface_nests_under_the_graph_run(traced: Traced) -> None:
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from confessional.langgraph import confession_node

    model = cheating_agent()
    tools = example_tools()
    bound = model.bind_tools(tools)

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_node(
        "confess",
        confession_node(
            model,
            telemetry=ConfessionTelemetry(tracer_provider=traced.provider),
            agent_name="coder",
        ),
    )
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, {"tools": "tools", END: "confess"})
    graph.add_edge("tools", "model")
    graph.add_edge("confess", END)
    app = graph.compile(name="coder")
    with traced.around_run():
        app.invoke({"messages": [("user", "Make the speed test pass.")]})
    check_surface_trace(traced)


def test_callback_handler_surface_nests_under_the_run(traced: Traced) -> None:
    # on_chain_end of the outermost run fires outside that run's context: the handler
    # passes its root run id so the span still nests (OpenInference looks it up), and the
    # run's span is flagged while the confession span is still open.
    import langchain.agents

    from confessional.langchain import ConfessionCallbackHandler

    model = cheating_agent()
    handler = ConfessionCallbackHandler(
        model, telemetry=ConfessionTelemetry(tracer_provider=traced.provider), agent_name="coder"
    )
    agent = langchain.agents.create_agent(model, example_tools(), name="coder")
    with traced.around_run():
        agent.invoke(
            {"messages": [("user", "Make the speed test pass.")]},
            config={"callbacks": [handler]},
        )
    check_surface_trace(traced)
