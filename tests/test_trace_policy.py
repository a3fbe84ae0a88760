"""The middleware's hook spans record no state payload, as LangChain's own middleware do."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.tracers.schemas import Run
from tests.surfaces_fixtures import RunCollector, ask

from confessional.langchain import ConfessionMiddleware
from confessional.testing import cheating_agent, example_tools


class _TracedInFull(ConfessionMiddleware):
    trace_policy = None


def _hook_inputs(middleware: ConfessionMiddleware) -> tuple[dict[str, object], list[Run]]:
    tracer = RunCollector()
    agent = create_agent(cheating_agent(), example_tools(), middleware=[middleware])
    agent.invoke(ask("traced"), {"callbacks": [tracer]})
    [hook] = [run for run in tracer.started if run.name.endswith(".after_agent")]
    return hook.inputs, [run for run in tracer.started if run.name == "model"]


def test_hook_spans_omit_the_conversation() -> None:
    inputs, model_runs = _hook_inputs(ConfessionMiddleware())
    assert "messages" not in inputs
    assert model_runs
    assert all("messages" in run.inputs for run in model_runs)  # kept on the model's span

    unshaped, _ = _hook_inputs(_TracedInFull())  # what a hook span records without it
    assert "messages" in unshaped
