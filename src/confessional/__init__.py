"""confessional: structured self-reports ("confessions") for LangChain and LangGraph agents.

After each tool-using episode the model is asked for a :class:`ConfessionReport` (the schema
of OpenAI's confessions paper), the episode is audited against evidence, a
:class:`ConfessionPolicy` decides pass / flag / halt, and everything is recorded on
OpenTelemetry spans.

Surfaces live in :mod:`confessional.langchain` (middleware, callback handler) and
:mod:`confessional.langgraph` (graph node); test doubles in :mod:`confessional.testing`.
"""

from confessional.audit import Auditor, Finding, FindingKind, Severity, discrepancies
from confessional.confession import Confession, ConfessionStatus, Verdict
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
from confessional.parsing import parse_report
from confessional.pipeline import ConfessionPipeline, ConfessionSink, flush_background
from confessional.policy import (
    ConfessionPolicy,
    FailMode,
    OnViolation,
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
from confessional.telemetry import CaptureMode, ConfessionTelemetry

__version__ = "0.1.0"

__all__ = [
    "COMPLIANCE_LABELS",
    "Auditor",
    "CaptureMode",
    "ComplianceLabel",
    "Confession",
    "ConfessionHalted",
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
    "FailMode",
    "Finding",
    "FindingKind",
    "Instruction",
    "MessageLike",
    "MissingExtraError",
    "ObjectiveCompliance",
    "OnViolation",
    "OutputMode",
    "RequestRole",
    "Severity",
    "ToolCallRecord",
    "ToolDefinition",
    "Verdict",
    "ViolationRule",
    "__version__",
    "build_request",
    "default_violation_rule",
    "discrepancies",
    "extract_episode",
    "flush_background",
    "parse_report",
    "report_json_schema",
    "to_messages",
]
