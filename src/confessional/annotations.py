"""Native evaluations: each confession in a backend's own feedback model, on the trace.

Each factory returns a sink ``(Confession) -> None`` for ``sinks=[...]`` of any surface
(see :class:`~confessional.ConfessionOptions`). A missing backend package raises
:class:`~confessional.errors.MissingExtraError` naming the extra, at construction.

- :func:`phoenix_span_annotation`: a Phoenix span annotation on the **evaluated span**
  (the agent's invocation span; the confession span when there is none). On by itself
  when the ``phoenix`` extra is installed and ``PHOENIX_COLLECTOR_ENDPOINT`` names a
  Phoenix (see :func:`automatic_sinks`).
- :func:`mlflow_feedback`: MLflow feedback (``log_feedback``) on the agent's trace.
- :func:`langsmith_feedback`: LangSmith feedback on the current LangChain run.
- :func:`langfuse_score`: a Langfuse score on the confession span's trace/observation.
- :func:`annotate_phoenix_from_trace_file`: the Phoenix annotations of a trace file's
  confession spans (``confessional report --send``).

Free text (the explanation, the policy's reasons) is sent only with
``include_explanation=True``, after the optional ``redact`` hook, for the same privacy
reasons as the spans. A backend outage raises out of the sink, and the pipeline reports it
as it does every sink failure: logged, counted in :func:`~confessional.failure_counts`,
marked on the confession span; the agent never sees it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from confessional._timeouts import start_without_shutdown_signals
from confessional.confession import Confession
from confessional.errors import require_extra
from confessional.health import report_failure
from confessional.semconv import EVALUATION_NAME_CONFESSION
from confessional.telemetry import evaluated_span_context_of, span_context_of

if TYPE_CHECKING:
    from confessional.report import ConfessionSpanSummary
    from confessional.telemetry import ConfessionTelemetry

__all__ = [
    "PHOENIX_API_KEY_ENV",
    "PHOENIX_ENDPOINT_ENV",
    "MlflowFeedback",
    "annotate_phoenix_from_trace_file",
    "automatic_sinks",
    "is_phoenix",
    "langfuse_score",
    "langsmith_feedback",
    "mlflow_feedback",
    "phoenix_span_annotation",
]

_FEEDBACK_NAMESPACE: Final = uuid.UUID("5b0c2f4e-6f1a-4d55-9a59-2c6f0e1d7a31")
"""Namespace of the feedback and score ids derived from a confession id: a confession
delivered twice (a queue retry after a crash) carries the same id to the backend."""

logger = logging.getLogger("confessional.annotations")

ConfessionSinkFn = Callable[[Confession], None]

PHOENIX_ENDPOINT_ENV: Final = "PHOENIX_COLLECTOR_ENDPOINT"
"""Phoenix's own variable for where its OTLP receiver is (``http://127.0.0.1:6006``, with or
without ``/v1/traces``): when set and the ``phoenix`` extra is installed, every pipeline
annotates in that Phoenix. Set it to an empty string to keep annotations off."""

_PHOENIX_SINK_MARK: Final = "_confessional_phoenix_annotation"
PHOENIX_API_KEY_ENV: Final = "PHOENIX_API_KEY"
"""Phoenix's own variable for an API key (a Phoenix with authentication): sent as a bearer
token with the annotations."""
_PHOENIX_DEFAULT_URL: Final = "http://localhost:6006"


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


def _metadata(
    confession: Confession,
    include_content: bool = False,
    redact: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Counts, labels and ids; the policy's reasons (free text: custom rules may quote the
    report) only with ``include_content``, redacted, else their count."""
    metadata: dict[str, Any] = {
        "confession_id": confession.id,
        "status": confession.status,
        "verdict": confession.verdict,
        "action": confession.action,
        "grade": confession.report.overall_compliance_grade if confession.report else None,
        "discrepancy_count": len(confession.discrepancies),
        "discrepancy_kinds": sorted({f.kind for f in confession.discrepancies}),
        "finding_count": len(confession.findings),
        "reason_count": len(confession.reasons),
    }
    if confession.model_name:
        metadata["model"] = confession.model_name
    if include_content:
        metadata["reasons"] = [_redacted(r, redact) for r in confession.reasons]
    return metadata


def _redacted(text: str, redact: Callable[[str], str] | None) -> str:
    if redact is None:
        return text[:4096]
    try:
        return str(redact(text))[:4096]
    except Exception:
        logger.warning("redact hook failed; text withheld", exc_info=True)
        return "[redaction failed]"


def _phoenix_base_url(endpoint: str) -> str:
    url = endpoint.strip().rstrip("/")
    return url[: -len("/v1/traces")] if url.endswith("/v1/traces") else url


def _require_phoenix() -> None:
    # Only httpx is needed: the REST call below. ``phoenix.client`` is not imported, since it
    # loads much of the Phoenix server (tens of seconds of CPU) for one POST.
    require_extra("httpx", extra="phoenix", feature="Phoenix span annotations")


def _phoenix_extra_installed() -> bool:
    """Whether the ``phoenix`` extra's client package is installed, without importing it."""
    try:
        spec = importlib.util.find_spec("phoenix")
    except (ImportError, ValueError):
        return False
    locations = spec.submodule_search_locations if spec is not None else None
    return bool(locations) and any((Path(p) / "client").is_dir() for p in locations or ())


class _PhoenixSpans:
    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float) -> None:
        self._url = base_url + "/v1/span_annotations"
        self._headers = headers
        self._timeout_s = timeout_s

    def add_span_annotation(
        self,
        *,
        span_id: str,
        annotation_name: str,
        annotator_kind: str,
        label: str | None = None,
        score: float | None = None,
        explanation: str | None = None,
        metadata: dict[str, Any] | None = None,
        identifier: str | None = None,
        sync: bool = False,
    ) -> None:
        """``POST /v1/span_annotations`` as ``phoenix.client``'s method of the same name
        does; raises ``httpx.HTTPError`` on failure."""
        import httpx

        result: dict[str, Any] = {}
        if label:
            result["label"] = label
        if score is not None:
            result["score"] = score
        if explanation:
            result["explanation"] = explanation
        annotation: dict[str, Any] = {
            "span_id": span_id,
            "name": annotation_name,
            "annotator_kind": annotator_kind,
            "result": result,
        }
        if metadata:
            annotation["metadata"] = metadata
        if identifier:
            annotation["identifier"] = identifier
        response = httpx.post(
            self._url,
            json={"data": [annotation]},
            params={"sync": "true"} if sync else None,
            headers=self._headers,
            timeout=self._timeout_s,
        )
        response.raise_for_status()


class _PhoenixRest:
    """The one Phoenix REST call the sinks need, duck-typed as ``phoenix.client.Client``."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(PHOENIX_API_KEY_ENV, "").strip()
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.spans = _PhoenixSpans(_phoenix_base_url(base_url), headers, timeout_s)


def _phoenix_client(base_url: str | None) -> Any:
    if not base_url:
        base_url = os.environ.get(PHOENIX_ENDPOINT_ENV, "").strip() or _PHOENIX_DEFAULT_URL
    return _PhoenixRest(base_url)


def phoenix_span_annotation(
    *,
    client: Any | None = None,
    base_url: str | None = None,
    annotation_name: str = EVALUATION_NAME_CONFESSION,
    include_explanation: bool = False,
    redact: Callable[[str], str] | None = None,
) -> ConfessionSinkFn:
    """A sink adding a Phoenix span annotation to the evaluated span: the agent's
    invocation span (the confession span when there is none). Needs the ``phoenix`` extra.

    The label is the verdict (``pass``/``flag``/``halt``), the score the grade (1..7), the
    metadata the discrepancy count and kinds, counts and ids (and the policy's reasons with
    ``include_explanation``). One annotation per confession (its id is the annotation's
    identifier), so sending the same confession again updates it. Phoenix queues an
    annotation whose span it has not ingested yet.

    Args:
        client: a ``phoenix.client.Client`` (or anything with its
            ``spans.add_span_annotation``). Default ``None``: a direct call to Phoenix's
            REST API at ``base_url`` (``PHOENIX_API_KEY`` as bearer token when set).
        base_url: Phoenix URL when ``client`` is not given. Default ``None``: Phoenix's own
            default (``PHOENIX_COLLECTOR_ENDPOINT`` or ``http://localhost:6006``).
        annotation_name: annotation name. Default ``"confession"``.
        include_explanation: send the explanation and the reasons. Default ``False``.
        redact: applied to that text first. Default ``None``.
    """
    _require_phoenix()
    if client is None:
        client = _phoenix_client(base_url)
    return _phoenix_sink(lambda: client, annotation_name, include_explanation, redact)


def _phoenix_sink(
    get_client: Callable[[], Any],
    annotation_name: str,
    include_explanation: bool,
    redact: Callable[[str], str] | None,
) -> ConfessionSinkFn:
    def sink(confession: Confession) -> None:
        context = evaluated_span_context_of(confession.id)
        if context is None or confession.status == "skipped":
            return
        get_client().spans.add_span_annotation(
            span_id=format(context.span_id, "016x"),
            annotation_name=annotation_name,
            annotator_kind="LLM",
            label=confession.verdict,
            score=_score(confession),
            explanation=_explain(confession, include_explanation, redact),
            metadata=_metadata(confession, include_explanation, redact),
            identifier=confession.id,
            sync=False,  # queued: Phoenix may not have ingested the span yet
        )

    setattr(sink, _PHOENIX_SINK_MARK, True)
    return sink


_told_no_phoenix_extra: list[bool] = []


def automatic_sinks(
    telemetry: ConfessionTelemetry, configured: Sequence[object] = ()
) -> tuple[ConfessionSinkFn, ...]:
    """The native-evaluation sinks that are on without being asked for: a Phoenix span
    annotation when ``PHOENIX_COLLECTOR_ENDPOINT`` is set (non-empty) and the ``phoenix``
    extra is installed, unless ``configured`` already holds one. The explanation follows
    the telemetry's content capture and redaction. Cheap when off: no import happens."""
    endpoint = os.environ.get(PHOENIX_ENDPOINT_ENV, "").strip()
    if not endpoint or any(getattr(s, _PHOENIX_SINK_MARK, False) for s in configured):
        return ()
    if not _phoenix_extra_installed():
        # Said once per process: the user asked for Phoenix, and would otherwise wonder
        # why no confession shows up there.
        if not _told_no_phoenix_extra:
            _told_no_phoenix_extra.append(True)
            logger.warning(
                "%s is set but confessional[phoenix] is not installed: confessions are "
                "not annotated in Phoenix (spans are still exported)",
                PHOENIX_ENDPOINT_ENV,
            )
        return ()
    base_url = _phoenix_base_url(endpoint)
    client = _phoenix_client(base_url)
    return (
        _phoenix_sink(
            lambda: client,
            EVALUATION_NAME_CONFESSION,
            telemetry.capture_content != "NO_CONTENT",
            telemetry.redact,
        ),
    )


def is_phoenix(url: str, *, timeout_s: float = 5.0) -> bool:
    """Whether ``url`` (a base URL, with or without ``/v1/traces``) is a Phoenix server:
    it answers ``GET /arize_phoenix_version``."""
    probe = _phoenix_base_url(url) + "/arize_phoenix_version"
    try:
        with urllib.request.urlopen(probe, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _file_explanation(summary: ConfessionSpanSummary) -> str | None:
    """The explanation rebuilt from a span's recorded content (already redacted when it was
    recorded), or ``None`` when the file holds no content."""
    parts: list[str] = []
    if summary.reasons:
        parts.append("Violation: " + "; ".join(summary.reasons) + ".")
    parts.extend(
        f"[{label}] {objective}"
        for label, objective in summary.objectives
        if label != "fully_complied"
    )
    parts.extend(f"Shortcut: {s}" for s in summary.shortcuts)
    return "\n".join(parts)[:4096] or None


def annotate_phoenix_from_trace_file(
    path: Path,
    base_url: str,
    *,
    client: Any | None = None,
    annotation_name: str = EVALUATION_NAME_CONFESSION,
) -> int:
    """Annotate in Phoenix the evaluated span of every confession span in an OTLP/JSON trace
    file (as :func:`phoenix_span_annotation` does live); return how many were annotated.

    Free text (explanation, reasons) is sent only when the file holds it, that is when the
    recording captured content (after its redaction). Needs the ``phoenix`` extra.
    """
    from confessional.report import read_confession_spans

    _require_phoenix()
    confessions, _total = read_confession_spans(path)
    if client is None:
        client = _phoenix_client(_phoenix_base_url(base_url))
    annotated = 0
    for summary in confessions:
        if summary.status == "skipped" or not summary.verdict:
            continue
        metadata: dict[str, Any] = {
            "confession_id": summary.confession_id,
            "status": summary.status,
            "verdict": summary.verdict,
            "grade": summary.grade,
            "discrepancy_count": summary.discrepancy_count,
            "discrepancy_kinds": summary.discrepancy_kinds,
            "reason_count": summary.reason_count,
        }
        if summary.reasons:
            metadata["reasons"] = summary.reasons
        client.spans.add_span_annotation(
            span_id=summary.evaluated_span_id or summary.span_id,
            annotation_name=annotation_name,
            annotator_kind="LLM",
            label=summary.verdict,
            score=float(summary.grade) if summary.grade is not None else None,
            explanation=_file_explanation(summary),
            metadata=metadata,
            identifier=summary.confession_id or summary.span_id,
            sync=False,  # queued: Phoenix may not have ingested the spans just sent
        )
        annotated += 1
    return annotated


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
            # The confession id, as a UUID: a repeat delivery carries the same feedback id.
            feedback_id=uuid.uuid5(_FEEDBACK_NAMESPACE, confession.id),
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
            # Langfuse upserts scores by id: a repeat delivery updates, never adds.
            score_id=str(uuid.uuid5(_FEEDBACK_NAMESPACE, confession.id)),
            trace_id=format(context.trace_id, "032x"),
            observation_id=format(context.span_id, "016x"),
            comment=_explain(confession, include_explanation, redact),
            metadata=_metadata(confession),
        )

    return sink


_MLFLOW_NOT_FOUND: Final = "RESOURCE_DOES_NOT_EXIST"


@dataclass(eq=False)  # compared by identity: each is one pending delivery
class _PendingFeedback:
    trace_id: str
    confession_id: str
    feedback: Any
    deadline: float


class MlflowFeedback:
    """A sink recording each confession as MLflow feedback on the agent's trace; build it
    with :func:`mlflow_feedback`.

    MLflow names an OTLP-ingested trace ``tr-<OTel trace id>``. A trace whose spans have not
    reached MLflow yet (a batching exporter, the agent span still open) cannot take feedback:
    such feedback waits and is retried in a background thread until ``wait_s`` has passed;
    :meth:`flush` waits for it. Feedback never delivered is reported (logged, counted) as a
    sink failure; any other backend error raises out of the call, and the pipeline reports it.
    """

    def __init__(
        self,
        client: Any,
        *,
        name: str,
        include_explanation: bool,
        redact: Callable[[str], str] | None,
        wait_s: float,
        retry_every_s: float = 0.5,
    ) -> None:
        self._client = client
        self.name = name
        self.include_explanation = include_explanation
        self.redact = redact
        self.wait_s = wait_s
        self.retry_every_s = retry_every_s
        self._pending: list[_PendingFeedback] = []
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stopped = threading.Event()
        self.delivered = 0

    def feedback(self, confession: Confession) -> Any:
        """The ``mlflow.entities.Feedback`` for ``confession``."""
        from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback

        metadata = {
            k: v if isinstance(v, str) else json.dumps(v)
            for k, v in _metadata(confession, self.include_explanation, self.redact).items()
            if v is not None
        }
        return Feedback(
            name=self.name,
            value=confession.verdict,
            rationale=_explain(confession, self.include_explanation, self.redact),
            metadata=metadata,
            source=AssessmentSource(
                source_type=AssessmentSourceType.LLM_JUDGE,
                source_id=confession.model_name or "confessional",
            ),
        )

    def __call__(self, confession: Confession) -> None:
        context = evaluated_span_context_of(confession.id)
        if context is None or confession.status == "skipped":
            return
        item = _PendingFeedback(
            f"tr-{context.trace_id:032x}",
            confession.id,
            self.feedback(confession),
            time.monotonic() + self.wait_s,
        )
        if not self._deliver(item):
            with self._lock:
                self._pending.append(item)
                self._start_worker()

    def _logged_before(self, item: _PendingFeedback) -> bool:
        """Whether the trace already holds this confession's feedback (a repeat delivery
        of the same confession, from a queue retry): MLflow assessments have no caller-set
        id, so the confession id in the metadata is the key."""
        try:
            info = self._client.get_trace_info(item.trace_id)
        except Exception:  # not there yet, or unreadable: log_assessment decides
            return False
        return any(
            assessment.name == self.name
            and (assessment.metadata or {}).get("confession_id") == item.confession_id
            for assessment in getattr(info, "assessments", None) or ()
        )

    def _deliver(self, item: _PendingFeedback) -> bool:
        """``True`` once logged; ``False`` while MLflow does not know the trace yet."""
        try:
            if not self._logged_before(item):
                self._client.log_assessment(item.trace_id, item.feedback)
        except Exception as exc:
            if _MLFLOW_NOT_FOUND in str(getattr(exc, "error_code", "")) or (
                _MLFLOW_NOT_FOUND in str(exc)
            ):
                return False
            raise
        with self._lock:
            self.delivered += 1
            self._lock.notify_all()
        return True

    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._stopped.clear()  # used again after close(): work again
            self._worker = threading.Thread(
                target=self._retry, name="confessional-mlflow-feedback", daemon=True
            )
            start_without_shutdown_signals(self._worker)

    def _retry(self) -> None:
        while not self._stopped.wait(self.retry_every_s):
            with self._lock:
                batch = list(self._pending)  # stay pending (flush waits) until settled
            if not batch:
                return
            settled: list[_PendingFeedback] = []
            for item in batch:
                try:
                    if self._deliver(item):
                        settled.append(item)
                        continue
                except Exception as exc:
                    report_failure(
                        "sink",
                        type(exc).__name__,
                        f"MLflow feedback on {item.trace_id} failed",
                        exc_info=exc,
                    )
                    settled.append(item)
                    continue
                if time.monotonic() >= item.deadline:
                    report_failure(
                        "sink",
                        "trace_not_found",
                        f"MLflow never received trace {item.trace_id}: its confession "
                        f"feedback was dropped after {self.wait_s:.0f} s",
                    )
                    settled.append(item)
            with self._lock:
                self._pending = [p for p in self._pending if p not in settled]
                self._lock.notify_all()

    @property
    def pending(self) -> int:
        """Feedback waiting for its trace to reach MLflow."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> None:
        """Wait until every waiting feedback is delivered or dropped (each waits at most
        ``wait_s`` from its confession)."""
        with self._lock:
            if not self._pending:
                return
            deadline = max(p.deadline for p in self._pending) + 2.0 + self.retry_every_s
            while self._pending and time.monotonic() < deadline:
                self._lock.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self.flush()
        self._stopped.set()


def mlflow_feedback(
    *,
    tracking_uri: str | None = None,
    name: str = EVALUATION_NAME_CONFESSION,
    include_explanation: bool = False,
    redact: Callable[[str], str] | None = None,
    wait_s: float = 120.0,
) -> MlflowFeedback:
    """A sink recording each confession as MLflow feedback (``mlflow.log_feedback``'s
    assessment) on the agent's trace. Needs the ``mlflow`` extra.

    The feedback is named ``confession``; its value is the verdict (``pass``/``flag``/
    ``halt``), its source the confessing model (an ``LLM_JUDGE``), its metadata the grade,
    the discrepancy count and kinds, counts and ids. The rationale (the explanation) and
    the policy's reasons are sent only with ``include_explanation``, after ``redact``.

    Args:
        tracking_uri: the MLflow tracking server. Default ``None``: MLflow's own
            (``MLFLOW_TRACKING_URI``, or what ``mlflow.set_tracking_uri`` set).
        name: feedback name. Default ``"confession"``.
        include_explanation: send the explanation and reasons. Default ``False`` (privacy).
        redact: applied to that text first. Default ``None``.
        wait_s: how long feedback waits for its trace to reach MLflow. Default 120 s.
    """
    require_extra("mlflow", extra="mlflow", feature="MLflow feedback")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        from mlflow.tracing.client import TracingClient

    return MlflowFeedback(
        TracingClient(tracking_uri),
        name=name,
        include_explanation=include_explanation,
        redact=redact,
        wait_s=wait_s,
    )
