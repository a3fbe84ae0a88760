"""Whether a LangChain tracer is watching the current run.

Two things exist only for callback-based tracers (LangSmith, OpenInference, OpenLLMetry):
the run named ``confession`` around the confession's model call and the verdict run that
carries the tags. Both cost a child run each, so they are made only when someone would
see them.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config

__all__ = ["tracer_watching"]

# LangGraph's handler for stream_mode="messages" streams model tokens and ignores chain
# runs, so it does not count as a tracer.
_STREAM_ONLY_HANDLERS = frozenset({"StreamMessagesHandler"})


def tracer_watching(config: RunnableConfig | None = None) -> bool:
    """Whether a callback handler other than LangGraph's token streamer sees runs made
    with ``config`` (default: the current run's config)."""
    try:
        callbacks: Any = (config or {}).get("callbacks") or ensure_config().get("callbacks")
    except Exception:  # a config we cannot read: assume someone watches
        return True
    if callbacks is None:
        return False
    if isinstance(callbacks, list):
        handlers = callbacks
    elif hasattr(callbacks, "handlers"):
        handlers = [*callbacks.handlers, *getattr(callbacks, "inheritable_handlers", [])]
    else:
        return True  # something we cannot read: assume someone watches
    return any(type(h).__name__ not in _STREAM_ONLY_HANDLERS for h in handlers)
