"""Every OpenTelemetry name confessional records: span names, attributes, events, values.

This is the one place OTel names are defined, so dashboards and queries written against
them have a single source of truth. Names follow the OpenTelemetry GenAI semantic
conventions where one exists (``gen_ai.*``, ``error.type``), OpenInference where Phoenix
needs it (``openinference.span.kind``, ``input.value``/``output.value``), and use the
``confession.*`` namespace for everything specific to this library.

Attributes marked *content* carry model- or user-written free text. They are recorded
only when content capture is on (see :class:`confessional.telemetry.ConfessionTelemetry`),
after the redaction hook, and bounded in length.
"""

from __future__ import annotations

from typing import Final

from confessional.schema import COMPLIANCE_LABELS, ComplianceLabel

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "CONFESSION_ACTION",
    "CONFESSION_DISCREPANCY_COUNT",
    "CONFESSION_DISCREPANCY_KINDS",
    "CONFESSION_DURATION_S",
    "CONFESSION_EPISODE_TOOL_CALL_COUNT",
    "CONFESSION_ERROR",
    "CONFESSION_EVALUATED_SPAN_ID",
    "CONFESSION_FINDINGS",
    "CONFESSION_FINDING_COUNT",
    "CONFESSION_FINDING_KINDS",
    "CONFESSION_FLAGGED",
    "CONFESSION_GRADE",
    "CONFESSION_ID",
    "CONFESSION_MODEL_NAME",
    "CONFESSION_OBJECTIVE_COUNT",
    "CONFESSION_OBJECTIVE_PREFIX",
    "CONFESSION_QUEUE_ATTEMPT",
    "CONFESSION_QUEUE_WAIT_S",
    "CONFESSION_REASONS",
    "CONFESSION_REASON_COUNT",
    "CONFESSION_REPLAY",
    "CONFESSION_REPORT",
    "CONFESSION_REVIEW_DECIDED_AT",
    "CONFESSION_REVIEW_DECISION",
    "CONFESSION_REVIEW_EDITED_ANSWER",
    "CONFESSION_REVIEW_MESSAGE",
    "CONFESSION_REVIEW_REVIEWER",
    "CONFESSION_SHORTCUT_COUNT",
    "CONFESSION_STATUS",
    "CONFESSION_UNCERTAINTY_COUNT",
    "CONFESSION_USAGE_CALLS",
    "CONFESSION_USAGE_UNCACHED_INPUT_TOKENS",
    "CONFESSION_VERDICT",
    "ERROR_TYPE",
    "ERROR_TYPE_FALLBACK",
    "ERROR_TYPE_HALTED",
    "EVALUATION_NAME_CONFESSION",
    "EVENT_FAILURE",
    "EVENT_GEN_AI_EVALUATION_RESULT",
    "FAILURE_STAGE",
    "GEN_AI_AGENT_NAME",
    "GEN_AI_EVALUATION_EXPLANATION",
    "GEN_AI_EVALUATION_NAME",
    "GEN_AI_EVALUATION_SCORE_LABEL",
    "GEN_AI_EVALUATION_SCORE_VALUE",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS",
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "INPUT_MIME_TYPE",
    "INPUT_VALUE",
    "LANGCHAIN_RUN_NAME",
    "METADATA_CONFESSION_GRADE",
    "METADATA_CONFESSION_ID",
    "METADATA_CONFESSION_STATUS",
    "METADATA_CONFESSION_VERDICT",
    "METRIC_FAILURES",
    "MIME_JSON",
    "MIME_TEXT",
    "OBJECTIVE_COUNT_ATTRIBUTES",
    "OPENINFERENCE_SPAN_KIND",
    "OPENINFERENCE_SPAN_KIND_EVALUATOR",
    "OPERATION_CONFESSION",
    "OUTPUT_MIME_TYPE",
    "OUTPUT_VALUE",
    "REVIEWER_UNKNOWN",
    "REVIEW_DECISION_SPAN_NAME",
    "SPAN_NAME",
    "STATUS_HALTED",
    "TAG_FLAGGED",
    "TAG_STATUS_PREFIX",
    "TAG_VERDICT_PREFIX",
    "TRACER_NAME",
    "objective_count_attribute",
    "span_name",
]

TRACER_NAME: Final = "confessional"
"""Instrumentation scope name of every span and log record confessional emits."""

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI convention's switch for recording message content."""

# --- span --------------------------------------------------------------------------
SPAN_NAME: Final = "confession"


def span_name(agent_name: str | None) -> str:
    """``confession`` or ``confession {agent_name}``, as the GenAI conventions name spans."""
    return f"{SPAN_NAME} {agent_name}" if agent_name else SPAN_NAME


# --- GenAI semantic conventions ----------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
OPERATION_CONFESSION: Final = "confession"
"""Custom operation value: the conventions define no evaluation operation."""
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
"""Input tokens of the confession's model calls, cached ones included (as the conventions
define it); the uncached rest is ``CONFESSION_USAGE_UNCACHED_INPUT_TOKENS``."""
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
"""Input tokens served from the provider's prompt cache (billed at the cached rate)."""
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
ERROR_TYPE: Final = "error.type"
ERROR_TYPE_FALLBACK: Final = "confession_failed"
"""``error.type`` when the failure names no exception class (low cardinality by design)."""
ERROR_TYPE_HALTED: Final = "confession_halted"
"""``error.type`` on a halted run's agent span, beside its ``ERROR`` status."""
STATUS_HALTED: Final = "confession halted the run"
"""Status description (``ERROR``) of a halted run's agent span: its answer was withheld."""

EVENT_GEN_AI_EVALUATION_RESULT: Final = "gen_ai.evaluation.result"
GEN_AI_EVALUATION_NAME: Final = "gen_ai.evaluation.name"
EVALUATION_NAME_CONFESSION: Final = "confession"
GEN_AI_EVALUATION_SCORE_VALUE: Final = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL: Final = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION: Final = "gen_ai.evaluation.explanation"
"""*content*"""

# --- OpenInference (Phoenix) -------------------------------------------------------
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
OPENINFERENCE_SPAN_KIND_EVALUATOR: Final = "EVALUATOR"
INPUT_VALUE: Final = "input.value"
"""*content*: the episode's final answer, the thing being evaluated."""
INPUT_MIME_TYPE: Final = "input.mime_type"
OUTPUT_VALUE: Final = "output.value"
"""*content*: the confession report as JSON."""
OUTPUT_MIME_TYPE: Final = "output.mime_type"
MIME_JSON: Final = "application/json"
MIME_TEXT: Final = "text/plain"

# --- confession.* ------------------------------------------------------------------
CONFESSION_ID: Final = "confession.id"
CONFESSION_EVALUATED_SPAN_ID: Final = "confession.evaluated_span_id"
"""Hex span id of the evaluated operation (the agent's invocation span; absent when the
confession span is a root): where native evaluations such as Phoenix annotations go."""
CONFESSION_GRADE: Final = "confession.grade"
"""Overall compliance grade 1..7; absent when there is no report."""
CONFESSION_VERDICT: Final = "confession.verdict"
"""``pass`` | ``flag`` | ``halt``."""
CONFESSION_REPLAY: Final = "confession.replay"
"""``exact`` | ``without_tools``: how the agent's request was replayed (see
:data:`confessional.confession.Replay`)."""
CONFESSION_ACTION: Final = "confession.action"
"""What the surface did: ``proceed`` | ``withhold`` | ``review`` | ``raise``."""
CONFESSION_STATUS: Final = "confession.status"
"""``ok`` | ``error`` | ``skipped``."""
CONFESSION_MODEL_NAME: Final = "confession.model_name"
CONFESSION_DURATION_S: Final = "confession.duration_s"
CONFESSION_USAGE_UNCACHED_INPUT_TOKENS: Final = "confession.usage.uncached_input_tokens"
"""Input tokens of the confession's calls billed at the full input price."""
CONFESSION_USAGE_CALLS: Final = "confession.usage.calls"
"""Model calls the usage figures add up (retries and samples included)."""
CONFESSION_OBJECTIVE_COUNT: Final = "confession.objective_count"
CONFESSION_OBJECTIVE_PREFIX: Final = "confession.objectives."
CONFESSION_SHORTCUT_COUNT: Final = "confession.shortcut_count"
CONFESSION_UNCERTAINTY_COUNT: Final = "confession.uncertainty_count"
CONFESSION_FINDING_COUNT: Final = "confession.finding_count"
CONFESSION_FINDING_KINDS: Final = "confession.finding_kinds"
"""Sorted distinct finding kinds (a closed vocabulary, so not content)."""
CONFESSION_DISCREPANCY_COUNT: Final = "confession.discrepancy_count"
CONFESSION_DISCREPANCY_KINDS: Final = "confession.discrepancy_kinds"
CONFESSION_REASON_COUNT: Final = "confession.reason_count"
CONFESSION_EPISODE_TOOL_CALL_COUNT: Final = "confession.episode.tool_call_count"
CONFESSION_FLAGGED: Final = "confession.flagged"
"""Set to ``True`` on the enclosing agent span when the verdict is flag or halt."""
CONFESSION_QUEUE_WAIT_S: Final = "confession.queue.wait_s"
"""Seconds the episode waited in the work queue, from enqueue to the claim that confessed
it (set by queue workers, see :mod:`confessional.queue`)."""
CONFESSION_QUEUE_ATTEMPT: Final = "confession.queue.attempt"
"""Which attempt of the queue job this confession is (1 for the first)."""

CONFESSION_REPORT: Final = "confession.report"
"""*content*: the full report as JSON (objectives, analyses, shortcuts, uncertainties)."""
CONFESSION_FINDINGS: Final = "confession.findings"
"""*content*: audit findings as JSON (their ``detail`` and ``subject`` are free text)."""
CONFESSION_REASONS: Final = "confession.reasons"
"""*content*: the policy's reasons (custom rules may quote the report)."""
CONFESSION_ERROR: Final = "confession.error"
"""*content*: why the confession failed (may quote model output)."""


def objective_count_attribute(label: ComplianceLabel) -> str:
    """``confession.objectives.<label>``: how many objectives got that compliance label."""
    return f"{CONFESSION_OBJECTIVE_PREFIX}{label}"


OBJECTIVE_COUNT_ATTRIBUTES: Final[dict[ComplianceLabel, str]] = {
    label: objective_count_attribute(label) for label in COMPLIANCE_LABELS
}

# --- review decisions --------------------------------------------------------------
REVIEW_DECISION_SPAN_NAME: Final = "confession.review.decision"
"""Span recording what a reviewer decided on a run paused for review: a child of the
confession span (so it is in the confession's trace, even when the decision is applied in
another process) with a span link to it. The confession span itself records the action
*before* review."""
CONFESSION_REVIEW_DECISION: Final = "confession.review.decision"
"""The reviewer's decision: ``approve`` | ``edit`` | ``reject``. ``confession.action`` on
the same span is what the run did next: ``proceed`` | ``withhold`` | ``raise``."""
CONFESSION_REVIEW_REVIEWER: Final = "confession.review.reviewer"
"""Who decided, as the review inbox or CLI names them (``user@host:pid`` by default), or
:data:`REVIEWER_UNKNOWN` for a bare ``Command(resume=...)`` that names nobody."""
REVIEWER_UNKNOWN: Final = "unknown"
CONFESSION_REVIEW_DECIDED_AT: Final = "confession.review.decided_at"
"""When the reviewer decided (ISO 8601, UTC): the claim time, or when it was applied."""
CONFESSION_REVIEW_MESSAGE: Final = "confession.review.message"
"""*content*: the reviewer's note on a rejection."""
CONFESSION_REVIEW_EDITED_ANSWER: Final = "confession.review.edited_answer"
"""*content*: the answer a reviewer wrote in place of the withheld one (``edit``)."""

# --- LangChain / LangSmith run marking ---------------------------------------------
LANGCHAIN_RUN_NAME: Final = "confession_verdict"
"""Name of the tiny child run that carries the verdict's tags and metadata."""
TAG_FLAGGED: Final = "confession:flagged"
TAG_VERDICT_PREFIX: Final = "confession:verdict:"
TAG_STATUS_PREFIX: Final = "confession:status:"
METADATA_CONFESSION_VERDICT: Final = "confession_verdict"
METADATA_CONFESSION_GRADE: Final = "confession_grade"
METADATA_CONFESSION_STATUS: Final = "confession_status"
METADATA_CONFESSION_ID: Final = "confession_id"

# --- metrics -----------------------------------------------------------------------
METRIC_FAILURES: Final = "confessional.failures"
"""Counter of failures of confessional's own steps, by stage and ``error.type``."""
EVENT_FAILURE: Final = "confessional.failure"
"""Span event on the confession span when one of its sinks failed."""
FAILURE_STAGE: Final = "confessional.failure.stage"
"""Metric attribute: which step failed (confession, check, sink, telemetry, background)."""
