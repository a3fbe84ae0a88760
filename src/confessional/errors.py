"""One exception hierarchy for everything confessional raises on purpose."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confessional.confession import Confession
    from confessional.findings import Finding
    from confessional.schema import ConfessionReport

__all__ = [
    "ConfessionHalted",
    "ConfessionParseError",
    "ConfessionalError",
    "ConfigurationError",
    "MissingExtraError",
]


class ConfessionalError(Exception):
    """Base class of every error raised by confessional."""


class ConfigurationError(ConfessionalError, ValueError):
    """A configuration value is invalid; raised at construction, never mid-run."""


class MissingExtraError(ConfessionalError, ImportError):
    """An optional dependency is missing; the message names the extra that installs it.

    Attributes:
        extra: confessional's extra that installs it, or ``None`` when there is none and
            the message names the package itself.
        missing: the missing package or module.
    """

    def __init__(self, extra: str | None, feature: str, missing: str) -> None:
        install = f"'confessional[{extra}]'" if extra else missing
        super().__init__(
            f"{feature} needs the optional dependency {missing!r}. "
            f"Install it with: pip install {install}"
        )
        self.extra = extra
        self.missing = missing


class ConfessionParseError(ConfessionalError, ValueError):
    """Model output could not be turned into a :class:`ConfessionReport`."""


class ConfessionHalted(ConfessionalError):
    """The policy halted the run. Carries the confession that caused it.

    Attributes:
        confession: the full result (status, report, findings, verdict reasons).
        report: the model's report, or ``None`` when a failed confession halted a
            fail-closed run.
        findings: evidence-audit findings for the episode.
    """

    def __init__(self, confession: Confession, message: str | None = None) -> None:
        self.confession = confession
        self.report: ConfessionReport | None = confession.report
        self.findings: list[Finding] = list(confession.findings)
        super().__init__(message or f"run halted by confession policy: {confession.summary()}")


def require_extra(module: str, *, extra: str, feature: str) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, feature, module) from exc
