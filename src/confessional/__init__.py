"""confessional: structured self-reports ("confessions") for LangChain and LangGraph agents.

After each tool-using episode the model is asked for a :class:`ConfessionReport` (the schema
of OpenAI's confessions paper), the episode is audited against evidence, a
:class:`ConfessionPolicy` decides pass / flag / halt, and everything is recorded on
OpenTelemetry spans.

Every setting lives in one :class:`ConfessionOptions`. Surfaces live in
:mod:`confessional.langchain` (middleware, callback handlers) and
:mod:`confessional.langgraph` (graph node); test doubles in :mod:`confessional.testing`.
"""

from confessional.audit import Auditor, Check, default_checks, discrepancies
from confessional.background import background_counts, flush_background, install_signal_handlers
from confessional.confession import (
    ACTIONS,
    Action,
    Confession,
    ConfessionStatus,
    TokenUsage,
    Verdict,
)
from confessional.confessor import Confessor, OutputMode
from confessional.episode import (
    Episode,
    Instruction,
    MessageLike,
    ToolCallRecord,
    ToolDefinition,
    extract_episode,
    to_messages,
)
from confessional.errors import (
    ConfessionalError,
    ConfessionHalted,
    ConfessionParseError,
    ConfigurationError,
    MissingExtraError,
)
from confessional.findings import Finding, FindingKind, Severity
from confessional.health import failure_counts
from confessional.options import ConfessionOptions
from confessional.parsing import parse_report
from confessional.pipeline import ConfessionPipeline, EpisodeCall
from confessional.policy import (
    ConfessionPolicy,
    FailMode,
    OnViolation,
    RejectAction,
    ReviewOutcome,
    ViolationRule,
    default_violation_rule,
)
from confessional.request import RequestRole, build_request
from confessional.schema import (
    COMPLIANCE_LABELS,
    ComplianceLabel,
    ConfessionReport,
    ObjectiveCompliance,
    report_json_schema,
)
from confessional.sinks import ConfessionSink, JsonlSink
from confessional.telemetry import CaptureMode, ConfessionTelemetry

__version__ = "0.2.0"

__all__ = [
    "ACTIONS",
    "COMPLIANCE_LABELS",
    "Action",
    "Auditor",
    "CaptureMode",
    "Check",
    "ComplianceLabel",
    "Confession",
    "ConfessionHalted",
    "ConfessionOptions",
    "ConfessionParseError",
    "ConfessionPipeline",
    "ConfessionPolicy",
    "ConfessionReport",
    "ConfessionSink",
    "ConfessionStatus",
    "ConfessionTelemetry",
    "ConfessionalError",
    "Confessor",
    "ConfigurationError",
    "Episode",
    "EpisodeCall",
    "FailMode",
    "Finding",
    "FindingKind",
    "Instruction",
    "JsonlSink",
    "MessageLike",
    "MissingExtraError",
    "ObjectiveCompliance",
    "OnViolation",
    "OutputMode",
    "RejectAction",
    "RequestRole",
    "ReviewOutcome",
    "Severity",
    "TokenUsage",
    "ToolCallRecord",
    "ToolDefinition",
    "Verdict",
    "ViolationRule",
    "__version__",
    "background_counts",
    "build_request",
    "default_checks",
    "default_violation_rule",
    "discrepancies",
    "extract_episode",
    "failure_counts",
    "flush_background",
    "install_signal_handlers",
    "parse_report",
    "report_json_schema",
    "to_messages",
]
