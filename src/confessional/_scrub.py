"""Scrub secrets from provider error texts before they reach results, logs or spans.

Provider SDK errors can quote request headers, echo a (masked or not) key, or include the
prompt. Anything that leaves the Confessor as text goes through :func:`scrub_error`, which
redacts key- and token-looking strings and bounds the length.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ERROR_TEXT_LIMIT", "REDACTED", "scrub_error", "scrub_secrets"]

REDACTED: Final = "[REDACTED]"
ERROR_TEXT_LIMIT: Final = 300
"""Characters of a provider error text kept: enough for the status and the API's reason."""

# Values that follow a credential-like name: `api_key=...`, `"x-api-key": "..."`.
_NAMED = re.compile(
    r"(?i)\b((?:[a-z_-]*api[_-]?key|authorization|access[_-]?token|auth[_-]?token|secret"
    r"|password|x-api-key)[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?[^\s\"',;}]{4,}"
)
_PATTERNS: Final = (
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_*-]{6,}"),  # OpenAI, Anthropic (sk-ant-...)
    re.compile(r"\b(?:xai|gsk|hf|ghp|gho|ghs|ghu|github_pat|glpat|r8)_[A-Za-z0-9_-]{10,}"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"),  # Google API keys
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
    # Long opaque tokens mixing letters and digits (session tokens, unknown key formats).
    re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{40,}\b"),
)


def scrub_secrets(text: str) -> str:
    """``text`` with key-, bearer- and token-looking strings replaced by ``[REDACTED]``."""
    text = _NAMED.sub(lambda match: match.group(1) + REDACTED, text)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def scrub_error(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """Scrubbed, single-line and at most ``limit`` characters (plus an ellipsis)."""
    # Cut generously before scrubbing (a 5 MB error text stays cheap), and truncate exactly
    # after it, so a key cut at the limit cannot leave a readable prefix.
    flat = " ".join(scrub_secrets(text[: limit * 4]).split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
