"""The I/O a review step asks for: performed by the sync or the async driver."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

T = TypeVar("T")

Statement = tuple[str, tuple[Any, ...]]
"""SQL text with ``%s`` placeholders (or ``?`` for SQLite) and its parameters."""


@dataclass(frozen=True)
class State:
    """``graph.get_state(config)``."""

    config: RunnableConfig


@dataclass(frozen=True)
class Resume:
    """``graph.invoke(command, config)``."""

    command: Command[Any]
    config: RunnableConfig


@dataclass(frozen=True)
class Query:
    """Run SQL statements in one transaction; answers ``(rowcount, rows)`` of the last."""

    statements: list[Statement]


@dataclass(frozen=True)
class Tuple:
    """``checkpointer.get_tuple(config)``."""

    config: RunnableConfig


Io = State | Resume | Query | Tuple
Steps = Generator[Io, Any, T]
"""A review step: yields I/O operations, returns its answer."""


def immediate(value: T) -> Steps[T]:
    """A step that needs no I/O (in-process stores): answers ``value`` at once."""
    return value
    yield  # a generator, so callers ``yield from`` every store alike


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}
