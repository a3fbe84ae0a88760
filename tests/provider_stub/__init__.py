"""A local stub of the OpenAI Chat Completions and Anthropic Messages HTTP APIs.

It validates requests as the real APIs do (each rejection in that API's error shape), records
every raw request body, and answers valid ones with scripted replies, so tests can drive the
real ``ChatOpenAI`` and ``ChatAnthropic`` classes without a network or a key.
"""

from .replies import Reply, ReplyQueue, Thinking, ToolCall, Usage, thinking_signature
from .server import API_KEY, Exchange, ProviderStub, running_stub

__all__ = [
    "API_KEY",
    "Exchange",
    "ProviderStub",
    "Reply",
    "ReplyQueue",
    "Thinking",
    "ToolCall",
    "Usage",
    "running_stub",
    "thinking_signature",
]
