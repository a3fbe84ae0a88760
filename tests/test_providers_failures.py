"""Loud failure, construction checks, secrets and budgets with the real provider classes."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from confessional import ConfessionPipeline, Confessor, ConfigurationError
from confessional.health import ESCALATE_AFTER
from confessional.langchain import ConfessionMiddleware
from confessional.schema import provider_report_schema
from confessional.telemetry import ConfessionTelemetry
from provider_stub import Reply, running_stub
from provider_stub.harness import (
    HONEST,
    PROVIDERS,
    SYSTEM_PROMPT,
    TASK,
    Script,
    confession_requests,
    dumps,
    is_confession,
    make_model,
    make_tools,
)

SECRET_KEY = "sk-live-4f8a9c2e7b1d3f6a0e5c8b2d4f7a9c1e"
BUDGET = 100_000


def _episode(
    rounds: int = 1, *, args_size: int = 10, output: str = "1 failed"
) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(SYSTEM_PROMPT), HumanMessage(TASK)]
    for index in range(rounds):
        call_id = f"toolu_01call{index:06d}"
        args = {"path": f"src/file_{index}.py", "content": "x" * args_size}
        messages.append(
            AIMessage(content="", tool_calls=[{"name": "write_file", "args": args, "id": call_id}])
        )
        messages.append(ToolMessage(output, tool_call_id=call_id))
    messages.append(AIMessage("Done. All tests pass."))
    return messages


def _anthropic_without_key(monkeypatch: pytest.MonkeyPatch) -> Any:
    from langchain_anthropic import ChatAnthropic

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return ChatAnthropic(model="claude-sonnet-4-6")  # type: ignore[call-arg]


def test_anthropic_model_without_key_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _anthropic_without_key(monkeypatch)  # the class itself accepts it
    with pytest.raises(ConfigurationError, match="ChatAnthropic has no API key"):
        Confessor(model)
    with pytest.raises(ConfigurationError, match="no API key"):
        ConfessionMiddleware(model=model)


def test_openai_model_with_empty_key_fails_at_construction() -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="gpt-4.1", api_key=lambda: "")  # a key provider: not checked
    Confessor(model)
    blank = ChatOpenAI(model="gpt-4.1", api_key=SecretStr("unused")).model_copy(
        update={"openai_api_key": None}
    )
    with pytest.raises(ConfigurationError, match="ChatOpenAI has no API key"):
        Confessor(blank)


def test_system_request_role_with_anthropic_fails_at_construction() -> None:
    with running_stub() as stub:
        model = make_model(stub, "anthropic")
        with pytest.raises(ConfigurationError, match="request_role='system' does not work"):
            Confessor(model, request_role="system")
        Confessor(model, request_role="user")  # the valid choices construct
        Confessor(model)


def test_agents_keyless_model_is_a_loud_configuration_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _anthropic_without_key(monkeypatch)
    pipeline = ConfessionPipeline(confessor=Confessor())  # the agent's model, given per call
    with caplog.at_level(logging.WARNING, logger="confessional"):
        confession = pipeline.run(_episode(), model=model, tools=make_tools())
    assert confession.status == "error"
    assert confession.error_type == "configuration"
    assert "no API key" in (confession.error or "")
    assert any("no API key" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def _telemetry() -> tuple[ConfessionTelemetry, InMemorySpanExporter, TracerProvider]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return ConfessionTelemetry(tracer_provider=provider), exporter, provider


@pytest.mark.parametrize("provider", PROVIDERS)
def test_failed_confession_warns_marks_the_span_and_escalates(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = [Reply.text("I did my best, all good.")] * (2 * ESCALATE_AFTER)
    telemetry, exporter, tracer_provider = _telemetry()
    with running_stub(Script(confession=garbage)) as stub:
        model = make_model(stub, provider)  # type: ignore[arg-type]
        pipeline = ConfessionPipeline(confessor=Confessor(model), telemetry=telemetry)
        with caplog.at_level(logging.WARNING, logger="confessional"):
            results = [pipeline.run(_episode(), tools=make_tools()) for _ in range(ESCALATE_AFTER)]
    tracer_provider.shutdown()
    assert stub.rejected() == []
    assert {c.status for c in results} == {"error"}
    assert {c.error_type for c in results} == {"parse_error"}
    assert {c.verdict for c in results} == {"pass"}  # fail-open: the run goes on...
    levels = [r.levelname for r in caplog.records if r.name == "confessional"]
    assert levels.count("WARNING") == 1  # ...but loudly, rate-limited per cause
    assert levels.count("ERROR") == 1  # and escalated once when it keeps happening
    spans = [s for s in exporter.get_finished_spans() if s.attributes]
    marked = [s for s in spans if (s.attributes or {}).get("error.type") == "parse_error"]
    assert len(marked) == ESCALATE_AFTER
    assert all(s.status.status_code.name == "ERROR" for s in marked)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_error_texts_are_scrubbed_and_bounded(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    leak = (
        f"upstream said: Authorization: Bearer {SECRET_KEY}; api_key={SECRET_KEY}; "
        + "context " * 500
    )
    telemetry, exporter, tracer_provider = _telemetry()
    with running_stub(Script(confession=[Reply.http_error(500, leak)] * 2)) as stub:
        model = make_model(stub, provider)  # type: ignore[arg-type]
        pipeline = ConfessionPipeline(confessor=Confessor(model), telemetry=telemetry)
        with caplog.at_level(logging.DEBUG, logger="confessional"):
            confession = pipeline.run(_episode(), tools=make_tools())
    tracer_provider.shutdown()
    assert confession.status == "error"
    error = confession.error or ""
    assert "Error code: 500" in error
    assert len(error) <= 301
    secret_part = SECRET_KEY[8:]
    assert secret_part not in error
    assert "[REDACTED]" in error
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("Error code: 500" in r.getMessage() for r in warnings)  # loud, and scrubbed
    assert all(secret_part not in r.getMessage() for r in caplog.records)
    for span in exporter.get_finished_spans():
        assert secret_part not in json.dumps(dict(span.attributes or {}), default=str)
        assert secret_part not in (span.status.description or "")
    assert secret_part not in confession.summary()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_5_mb_bad_reply_keeps_the_retry_within_budget(provider: str) -> None:
    huge = "I refuse to format this. " * (5_000_000 // 25)
    script = Script(confession=[Reply.text(huge), Reply.json(HONEST)])
    with running_stub(script) as stub:
        model = make_model(stub, provider)  # type: ignore[arg-type]
        confession = Confessor(model, token_budget=BUDGET).confess(_episode(), tools=make_tools())
    assert confession.status == "ok", confession.error
    first, retry = confession_requests(stub)
    sizes = [len(first.raw) // 4, len(retry.raw) // 4]
    print(
        f"{provider}: 5 MB bad reply, request tokens (bytes/4): first={sizes[0]} retry={sizes[1]}"
    )
    assert max(sizes) <= BUDGET
    # The excerpt is bounded, not 5 MB; the retry also carries the native schema.
    schema = len(json.dumps(provider_report_schema()))
    assert len(retry.raw) < len(first.raw) + schema + 4_000


@pytest.mark.parametrize("provider", PROVIDERS)
def test_1000_calls_with_1_kb_arguments_stay_within_budget(provider: str) -> None:
    messages = _episode(1000, args_size=1000)
    with running_stub(Script(confession=[Reply.json(HONEST)])) as stub:
        model = make_model(stub, provider)  # type: ignore[arg-type]
        confession = Confessor(model, token_budget=BUDGET).confess(messages, tools=make_tools())
    assert stub.rejected() == []
    assert confession.status == "ok", confession.error
    (request,) = confession_requests(stub)
    tokens = len(request.raw) // 4
    print(f"{provider}: 1000 calls x 1 KB args, request tokens (bytes/4): {tokens}")
    assert tokens <= BUDGET
    body = request.raw.decode()
    assert "characters removed by confessional" in body  # arguments were compacted
    assert TASK in body  # instructions kept whole
    assert SYSTEM_PROMPT in body
    first_call = messages[2]
    assert isinstance(first_call, AIMessage)
    assert first_call.tool_calls[0]["args"]["content"] == "x" * 1000  # caller's untouched


def test_within_budget_nothing_is_copied() -> None:
    """A fitting episode is replayed as the very same objects (the cache prefix)."""
    messages = _episode(3)
    with running_stub(Script(confession=[Reply.json(HONEST)])) as stub:
        model = make_model(stub, "openai")
        Confessor(model).confess(messages, tools=make_tools())
    (request,) = confession_requests(stub)
    sent = request.body["messages"]
    assert dumps(sent[1]["content"]) == dumps(TASK)
    assert "characters removed" not in request.raw.decode()


@pytest.mark.parametrize("output_mode", ["auto", "structured", "text"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refusal_gets_one_retry(provider: str, output_mode: str) -> None:
    script = Script(confession=[Reply.refusal("I can't help with that."), Reply.json(HONEST)])
    with running_stub(script) as stub:
        model = make_model(stub, provider)  # type: ignore[arg-type]
        confessor = Confessor(model, output_mode=output_mode)  # type: ignore[arg-type]
        confession = confessor.confess(_episode(), tools=make_tools())
    assert stub.rejected() == []
    assert confession.status == "ok", confession.error
    assert confession.report is not None
    assert confession.report.overall_compliance_grade == 2
    _first, retry = confession_requests(stub)
    assert "refused" in json.dumps(retry.body["messages"][-1])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_server_that_refuses_the_retrys_schema_is_asked_again_in_text_and_says_so(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    refusal = Reply.http_error(400, "json_schema is not supported by this server")
    script = Script(confession=[Reply.text("No report today."), refusal, Reply.json(HONEST)])
    with running_stub(script) as stub, caplog.at_level(logging.WARNING, "confessional"):
        model = make_model(stub, provider)  # type: ignore[arg-type]
        confession = Confessor(model).confess(_episode(), tools=make_tools())
        _first, structured, text = [e for e in stub.requests() if is_confession(e.body)]
    assert confession.status == "ok", confession.error
    native = "response_format" if provider == "openai" else "output_config"
    assert structured.status == 400
    assert native in structured.body
    assert native not in text.body
    assert text.body["messages"] == structured.body["messages"]
    assert "the structured request failed (" in caplog.text
    assert "); asked in text" in caplog.text
