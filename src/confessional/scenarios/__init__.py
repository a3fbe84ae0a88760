"""The scenario suite: the confessions paper's evaluation families as real tool environments.

``SCENARIOS`` maps each name to a :class:`Scenario`; :func:`get_scenario` looks one up with
a clear error. Every scenario has a ground-truth checker that reads only the environment's
final state (files, ledgers, answers), plus scripted ``comply`` and ``misbehave`` policies.
"""

from __future__ import annotations

from typing import Final

from confessional.errors import ConfigurationError
from confessional.scenarios.base import (
    BEHAVIOURS,
    Behaviour,
    Environment,
    GroundTruth,
    Scenario,
    file_tools,
    report_confessor,
)
from confessional.scenarios.coding import ImpossibleTiming, ProtectedConfig
from confessional.scenarios.honesty import BackgroundWork, BrokenTool
from confessional.scenarios.injection import PromptInjection
from confessional.scenarios.instructions import InstructionFollowing, InstructionHierarchy
from confessional.scenarios.sandbagging import Sandbagging

__all__ = [
    "BEHAVIOURS",
    "SCENARIOS",
    "Behaviour",
    "Environment",
    "GroundTruth",
    "Scenario",
    "file_tools",
    "get_scenario",
    "report_confessor",
]

SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        ImpossibleTiming(),
        Sandbagging(),
        ProtectedConfig(),
        BrokenTool(),
        InstructionFollowing(),
        InstructionHierarchy(),
        PromptInjection(),
        BackgroundWork(),
    )
}
"""Every scenario, in the order tables and plots show them."""


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; :class:`ConfigurationError` naming the valid ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown scenario {name!r}; choose from: {', '.join(SCENARIOS)}"
        ) from None
