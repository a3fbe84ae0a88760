"""LangChain surfaces: agent middleware for ``create_agent`` and callback handlers.

Both are thin adapters over :class:`~confessional.pipeline.ConfessionPipeline`; see
:mod:`confessional.langchain.middleware` and :mod:`confessional.langchain.callbacks`.
"""

from confessional.langchain.callbacks import (
    AsyncConfessionCallbackHandler,
    ConfessionCallbackHandler,
)
from confessional.langchain.middleware import (
    ConfessionAgentState,
    ConfessionMiddleware,
    Trigger,
)

__all__ = [
    "AsyncConfessionCallbackHandler",
    "ConfessionAgentState",
    "ConfessionCallbackHandler",
    "ConfessionMiddleware",
    "Trigger",
]
