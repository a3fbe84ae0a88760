"""Whether a LangChain tracer is watching the current run, and whether anyone listens for
custom events.

Two things exist only for callback-based tracers (LangSmith, OpenInference, OpenLLMetry):
the run named ``confession`` around the confession's model call and the verdict run that
carries the tags. Both cost a child run each, so they are made only when someone would
see them.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config

__all__ = ["custom_event_listeners", "tracer_watching"]

# LangGraph's handler for stream_mode="messages" streams model tokens and ignores chain
# runs, so it does not count as a tracer.
_STREAM_ONLY_HANDLERS = frozenset({"StreamMessagesHandler"})


def _handlers(config: RunnableConfig | None) -> list[Any] | None:
    """The callback handlers runs made with ``config`` reach (default: the current run's
    config); ``None`` when they cannot be read."""
    try:
        callbacks: Any = (config or {}).get("callbacks") or ensure_config().get("callbacks")
    except Exception:  # a config we cannot read
        return None
    if callbacks is None:
        return []
    if isinstance(callbacks, list):
        return callbacks
    if hasattr(callbacks, "handlers"):
        return [*callbacks.handlers, *getattr(callbacks, "inheritable_handlers", [])]
    return None


def tracer_watching(config: RunnableConfig | None = None) -> bool:
    """Whether a callback handler other than LangGraph's token streamer sees runs made
    with ``config`` (default: the current run's config)."""
    handlers = _handlers(config)
    if handlers is None:
        return True  # something we cannot read: assume someone watches
    return any(type(h).__name__ not in _STREAM_ONLY_HANDLERS for h in handlers)


_DEFAULT_CUSTOM_EVENT = (BaseCallbackHandler.on_custom_event, AsyncCallbackHandler.on_custom_event)


def custom_event_listeners(config: RunnableConfig | None = None) -> bool:
    """Whether a callback handler of ``config`` (default: the current run's) would receive
    a custom event (``dispatch_custom_event``): one that overrides ``on_custom_event`` and
    does not ignore custom events (``astream_events`` has one). Dispatching costs a
    callback manager per event, so nobody listening means nothing to dispatch."""
    handlers = _handlers(config)
    if handlers is None:
        return True  # something we cannot read: assume someone listens
    return any(
        type(h).on_custom_event not in _DEFAULT_CUSTOM_EVENT
        and not getattr(h, "ignore_custom_event", False)
        for h in handlers
    )
