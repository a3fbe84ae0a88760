"""Optional native annotations: push each confession into a backend's own feedback model.

Each factory returns a plain sink ``(Confession) -> None`` for
``sinks=[...]`` of any surface (see :class:`~confessional.ConfessionOptions`). None is
on by default: add the ones you want. A missing backend package raises
:class:`~confessional.errors.MissingExtraError` naming the extra, at construction.

- :func:`phoenix_span_annotation`: a Phoenix span annotation on the confession span.
- :func:`langsmith_feedback`: LangSmith feedback on the current LangChain run.
- :func:`langfuse_score`: a Langfuse score on the confession span's trace/observation.

Free text (the explanation) is sent only with ``include_explanation=True``, after the
optional ``redact`` hook, for the same privacy reasons as the spans. A backend outage
raises out of the sink, and the pipeline reports it as it does every sink failure:
logged, counted in :func:`~confessional.failure_counts`, marked on the confession span;
the agent never sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confessional.confession import Confession
from confessional.errors import require_extra
from confessional.semconv import EVALUATION_NAME_CONFESSION
from confessional.telemetry import span_context_of

__all__ = ["langfuse_score", "langsmith_feedback", "phoenix_span_annotation"]

logger = logging.getLogger("confessional.annotations")

ConfessionSinkFn = Callable[[Confession], None]


def _score(confession: Confession) -> float | None:
    return float(confession.report.overall_compliance_grade) if confession.report else None


def _explain(
    confession: Confession, include: bool, redact: Callable[[str], str] | None
) -> str | None:
    if not include:
        return None
    text = confession.explanation()
    if redact is not None:
        try:
            text = redact(text)
        except Exception:
            logger.warning("redact hook failed; explanation withheld", exc_info=True)
            return None
    return text[:4096] or None


def _metadata(confession: Confession) -> dict[str, Any]:
    return {
        "confession_id": confession.id,
        "status": confession.status,
        "verdict": confession.verdict,
        "discrepancy_count": len(confession.discrepancies),
        "finding_count": len(confession.findings),
    }


def phoenix_span_annotation(
    *,
    client: Any | None = None,
    base_url: str | None = None,
    annotation_name: str = EVALUATION_NAME_CONFESSION,
    include_explanation: bool = False,
    redact: Callable[[str], str] | None = None,
) -> ConfessionSinkFn:
    """A sink adding a Phoenix span annotation (label = verdict, score = grade) to the
    confession span. Needs the ``phoenix`` extra.

    Args:
        client: a ``phoenix.client.Client``. Default ``None``: one for ``base_url``.
        base_url: Phoenix URL when ``client`` is not given. Default ``None``: Phoenix's own
            default (``PHOENIX_COLLECTOR_ENDPOINT`` or ``http://localhost:6006``).
        annotation_name: annotation name. Default ``"confession"``.
        include_explanation: send the explanation text. Default ``False`` (privacy).
        redact: applied to the explanation first. Default ``None``.
    """
    require_extra("phoenix.client", extra="phoenix", feature="Phoenix span annotations")
    if client is None:
        from phoenix.client import Client

        client = Client(base_url=base_url) if base_url else Client()

    def sink(confession: Confession) -> None:
        context = span_context_of(confession.id)
        if context is None or confession.status == "skipped":
            return
        client.spans.add_span_annotation(
            span_id=format(context.span_id, "016x"),
            annotation_name=annotation_name,
            annotator_kind="LLM",
            label=confession.verdict,
            score=_score(confession),
            explanation=_explain(confession, include_explanation, redact),
            metadata=_metadata(confession),
            sync=False,  # queued: Phoenix may not have ingested the span yet
        )

    return sink


def langsmith_feedback(
    *,
    client: Any | None = None,
    key: str = EVALUATION_NAME_CONFESSION,
    include_explanation: bool = False,
    redact: Callable[[str], str] | None = None,
) -> ConfessionSinkFn:
    """A sink adding LangSmith feedback (score = grade, value = verdict) to the LangChain
    run the confession ran in (LangSmith tracing must be on). Needs ``langsmith``.

    Args:
        client: a ``langsmith.Client``. Default ``None``: ``langsmith.Client()`` from env.
        key: feedback key. Default ``"confession"``.
        include_explanation: send the explanation as the feedback comment. Default ``False``.
        redact: applied to the explanation first. Default ``None``.
    """
    require_extra("langsmith", extra="langsmith", feature="LangSmith feedback")
    from langsmith.run_helpers import get_current_run_tree

    if client is None:
        from langsmith import Client

        client = Client()

    def sink(confession: Confession) -> None:
        if confession.status == "skipped":
            return
        run = get_current_run_tree()
        if run is None:
            logger.debug("no current LangSmith run; feedback not sent")
            return
        client.create_feedback(
            run.id,
            key=key,
            score=_score(confession),
            value=confession.verdict,
            comment=_explain(confession, include_explanation, redact),
            trace_id=getattr(run, "trace_id", None),
            extra=_metadata(confession),
        )

    return sink


def langfuse_score(
    *,
    client: Any | None = None,
    name: str = EVALUATION_NAME_CONFESSION,
    include_explanation: bool = False,
    redact: Callable[[str], str] | None = None,
) -> ConfessionSinkFn:
    """A sink creating a Langfuse score (value = grade) on the confession span's trace and
    observation (Langfuse v3 ingests OTel, so span ids match). Needs the ``langfuse`` extra.

    Args:
        client: a Langfuse client. Default ``None``: ``langfuse.get_client()`` from env.
        name: score name. Default ``"confession"``.
        include_explanation: send the explanation as the score comment. Default ``False``.
        redact: applied to the explanation first. Default ``None``.
    """
    require_extra("langfuse", extra="langfuse", feature="Langfuse scores")
    if client is None:
        import langfuse  # type: ignore[import-not-found,unused-ignore]

        client = langfuse.get_client()

    def sink(confession: Confession) -> None:
        context = span_context_of(confession.id)
        score = _score(confession)
        if context is None or score is None:
            return
        client.create_score(
            name=name,
            value=score,
            trace_id=format(context.trace_id, "032x"),
            observation_id=format(context.span_id, "016x"),
            comment=_explain(confession, include_explanation, redact),
            metadata=_metadata(confession),
        )

    return sink
