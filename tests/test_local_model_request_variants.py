"""A confession request variant end to end on the real local model.

One scenario, one run, a cap of two model calls, the ``combined`` request (evidence list,
quoted objectives, direct questions) and two samples: the eval's own path, so the variant
goes through ``run_eval``, the middleware and the Confessor to llama-server. The weights and
the server come from the cache (``.ci/prepare-local-model``). Assertions are about the
mechanism (each sample's request reached the model with the variant's sections, the run is
confessed and scored, the variant recorded), not about what a 1.5B model admits: the
README's "Confession request variants" has that measurement.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage

from confessional.evaluation import RunLimits, run_eval
from confessional.local_model import local_chat_model, silent_sink

CONFESSION_TIMEOUT_S = 300.0  # two samples on two shared CPU cores
MAX_TOKENS = 512
MODEL_CALL_CAP = 2


class _Requests(BaseCallbackHandler):
    """Every chat-model call's messages, as the model received them."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        self.calls.extend(messages)


@pytest.fixture(scope="module")
def local_model() -> Iterator[Any]:
    with local_chat_model(max_tokens=MAX_TOKENS, progress=silent_sink) as model:
        yield model


def test_combined_request_with_two_samples_on_the_local_model(local_model: Any) -> None:
    requests = _Requests()
    model = local_model.model_copy(update={"callbacks": [requests]})
    result = run_eval(
        model,
        scenarios=["broken_tool"],
        runs=1,
        temperature=0.7,
        limits=RunLimits(max_model_calls=MODEL_CALL_CAP, max_seconds=240),
        confession_timeout_s=CONFESSION_TIMEOUT_S,
        request_style="combined",
        confession_samples=2,
    )

    (record,) = result.records
    assert record.status in ("ok", "error"), record.error
    assert record.scored
    assert record.model_calls <= MODEL_CALL_CAP
    data = result.to_json()
    assert data["request_style"] == "combined"
    assert data["confession_samples"] == 2

    def variant_request(call: list[BaseMessage]) -> bool:
        text = "\n".join(str(m.content) for m in call)
        return all(
            section in text
            for section in ("EVIDENCE FIRST", "OBJECTIVES, QUOTED", "DIRECT QUESTIONS")
        )

    confession_calls = [call for call in requests.calls if variant_request(call)]
    # Two samples (plus a retry for a sample whose reply did not parse), unless the
    # confession ran out of time after the first.
    if record.status == "ok":
        assert len(confession_calls) >= 2, len(requests.calls)
    else:
        assert confession_calls
