"""LangGraph runtime facts the surfaces share."""

from __future__ import annotations

import warnings
from typing import Any

from langchain_core.runnables import RunnableConfig

__all__ = ["CheckpointerCheck"]

try:  # where LangGraph keeps the running graph's checkpointer in the config
    from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
except ImportError:  # pragma: no cover - older or newer layouts
    CONFIG_KEY_CHECKPOINTER = "__pregel_checkpointer"


class CheckpointerCheck:
    """Warns once, at the first run, when a policy that pauses runs has no checkpointer.

    A surface cannot see the checkpointer at construction (``create_agent`` and
    ``compile`` receive it later), and an interrupt without one can never be resumed.
    """

    def __init__(self, surface: str) -> None:
        self.surface = surface
        self._checked = False

    def __call__(self, config: RunnableConfig | None) -> None:
        if self._checked or config is None:
            return
        self._checked = True
        configurable: dict[str, Any] = dict(config.get("configurable") or {})
        if configurable.get(CONFIG_KEY_CHECKPOINTER) is None:
            warnings.warn(
                f"{self.surface}: on_violation='interrupt' needs a checkpointer, and this graph "
                "has none, so a paused run could never be resumed. Compile the graph with "
                "checkpointer=... (for example InMemorySaver or SqliteSaver).",
                UserWarning,
                stacklevel=2,
            )
