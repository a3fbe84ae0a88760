"""The drivers: perform a review step's I/O with a sync or an async checkpointer.

A step (see :mod:`._io`) is written once; :class:`SyncDriver` runs it with
``graph.invoke`` and the saver's connection, :class:`AsyncDriver` with ``graph.ainvoke``
and an async saver (or a sync one for listing).
"""

from __future__ import annotations

from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver

from confessional._aio import adrive, drive
from confessional.review._io import Io, Query, Resume, State, Statement, Steps, Tuple
from confessional.review.claims import ClaimStore, as_row, claim_store
from confessional.review.errors import ReviewError

__all__ = ["AsyncDriver", "SyncDriver", "graph_saver"]

T = TypeVar("T")
_Rows = tuple[int, list[tuple[Any, ...]]]


def _refine(exc: Exception) -> Exception:
    """A database error as a one-line :class:`ReviewError`; anything else unchanged."""
    if isinstance(exc, ReviewError) or type(exc).__module__.split(".")[0] not in (
        "sqlite3",
        "psycopg",
    ):
        return exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ReviewError(f"the checkpointer's database refused the review query: {first}")


def graph_saver(graph: Any) -> BaseCheckpointSaver[Any]:
    """The checkpointer ``graph`` was compiled with; a :class:`ReviewError` without one."""
    saver = getattr(graph, "checkpointer", None)
    if not isinstance(saver, BaseCheckpointSaver):
        raise ReviewError(
            "the graph has no checkpointer: compile it with the checkpointer the paused "
            "runs were saved in (graph.compile(checkpointer=...) or create_agent(..., "
            "checkpointer=...))"
        )
    return saver


class SyncDriver:
    """Performs review steps with a sync checkpointer and ``graph.invoke``."""

    def __init__(self, saver: BaseCheckpointSaver[Any], graph: Any = None) -> None:
        self.saver = saver
        self.graph = graph
        self.store: ClaimStore
        self.store, self.dialect, is_async = claim_store(saver)
        if is_async:
            raise ReviewError(
                f"{type(saver).__name__} is async: use apending() / aresume() "
                "(or SqliteSaver / PostgresSaver here)"
            )

    def run(self, steps: Steps[T]) -> T:
        return drive(steps, self.operate)

    def operate(self, op: Io) -> Any:
        if isinstance(op, State):
            return self.graph.get_state(op.config)
        if isinstance(op, Resume):
            return self.graph.invoke(op.command, op.config)
        if isinstance(op, Tuple):
            return self.saver.get_tuple(op.config)
        try:
            return self._query(op)
        except Exception as exc:
            raise _refine(exc) from exc

    def _query(self, op: Query) -> _Rows:
        saver: Any = self.saver
        if self.dialect == "sqlite":
            with saver.lock:
                saver.setup()
                cursor = saver.conn.cursor()
                try:
                    for text, params in op.statements:
                        cursor.execute(text, params)
                    rows = cursor.fetchall()
                    saver.conn.commit()
                    return cursor.rowcount, [as_row(r) for r in rows]
                except BaseException:
                    saver.conn.rollback()
                    raise
                finally:
                    cursor.close()
        from psycopg_pool import ConnectionPool

        if isinstance(saver.conn, ConnectionPool):
            with saver.conn.connection() as conn:
                return self._postgres(conn, op.statements)
        with saver.lock:  # the saver's own single connection
            return self._postgres(saver.conn, op.statements)

    @staticmethod
    def _postgres(conn: Any, statements: list[Statement]) -> _Rows:
        with conn.transaction(), conn.cursor() as cursor:
            for text, params in statements:
                cursor.execute(text, params)
            rows = cursor.fetchall() if cursor.description else []
            return cursor.rowcount, [as_row(r) for r in rows]


class AsyncDriver:
    """Performs review steps with ``graph.ainvoke`` and an async (or sync) checkpointer."""

    def __init__(self, saver: BaseCheckpointSaver[Any], graph: Any = None) -> None:
        self.saver = saver
        self.graph = graph
        self.store: ClaimStore
        self.store, self.dialect, is_async = claim_store(saver)
        if graph is not None and not is_async and self.dialect != "memory":
            # ainvoke needs the saver's async methods, which sync SQL savers lack.
            raise ReviewError(
                f"{type(saver).__name__} is sync only: use resume(), or compile the graph "
                "with AsyncSqliteSaver / AsyncPostgresSaver for aresume()"
            )
        # Listing with a sync saver is fine: its calls simply do not await.
        self._sync = None if is_async else SyncDriver(saver, graph)
        if self._sync is not None:
            self.store = self._sync.store

    async def run(self, steps: Steps[T]) -> T:
        return await adrive(steps, self.operate)

    async def operate(self, op: Io) -> Any:
        if isinstance(op, State):
            return await self.graph.aget_state(op.config)
        if isinstance(op, Resume):
            return await self.graph.ainvoke(op.command, op.config)
        if self._sync is not None:
            return self._sync.operate(op)
        if isinstance(op, Tuple):
            return await self.saver.aget_tuple(op.config)
        try:
            return await self._query(op)
        except Exception as exc:
            raise _refine(exc) from exc

    async def _query(self, op: Query) -> _Rows:
        saver: Any = self.saver
        if self.dialect == "sqlite":
            await saver.setup()
            async with saver.lock, saver.conn.cursor() as cursor:
                try:
                    for text, params in op.statements:
                        await cursor.execute(text, params)
                    rows = await cursor.fetchall()
                    await saver.conn.commit()
                    return cursor.rowcount, [as_row(r) for r in rows]
                except BaseException:
                    await saver.conn.rollback()
                    raise
        from psycopg_pool import AsyncConnectionPool

        if isinstance(saver.conn, AsyncConnectionPool):
            async with saver.conn.connection() as conn:
                return await self._postgres(conn, op.statements)
        async with saver.lock:
            return await self._postgres(saver.conn, op.statements)

    @staticmethod
    async def _postgres(conn: Any, statements: list[Statement]) -> _Rows:
        async with conn.transaction(), conn.cursor() as cursor:
            for text, params in statements:
                await cursor.execute(text, params)
            rows = await cursor.fetchall() if cursor.description else []
            return cursor.rowcount, [as_row(r) for r in rows]
