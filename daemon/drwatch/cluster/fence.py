"""A validator never runs concurrently with itself, also when its owner is frozen rather than dead.

Each run holds a PostgreSQL *session* advisory lock keyed by its validator, on one connection dedicated
to fences (never a pooled one: a pool resets sessions and would drop the locks). A killed process's
connection closes and the server releases its locks at once; a frozen process keeps its connection, and
so its locks, until it resumes and finishes. Heartbeats and leases cannot tell those two apart; the fence
can.

If the fence connection itself is lost, exclusivity can no longer be proven: every run holding a fence
on it is cancelled (recorded ``cancelled`` by the runner), and the next acquisition reconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    import asyncpg

log = structlog.get_logger("drwatch.cluster.fence")
FENCE_CLASS = 0x64727766  # first key of the two-int advisory lock ("drwf"); the second names the validator
QUERY_TIMEOUT = 10.0


def fence_key(asset: str, label: str) -> int:
    """A signed 32-bit key per validator. Two validators sharing a key only serialize each other."""
    digest = hashlib.blake2b(f"{asset}\x1f{label}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class FenceLost(Exception):
    """The fence connection broke while the run held it."""


class Fence:
    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one operation at a time on the connection
        self._holders: dict[int, asyncio.Task[object] | None] = {}

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._holders)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await self._connect()
            conn.add_termination_listener(self._on_terminated)
            self._conn = conn
        return self._conn

    def _on_terminated(self, conn: object) -> None:
        if conn is self._conn:
            self._lost()

    def _lost(self) -> None:
        self._conn = None
        if not self._holders:
            return
        log.error("fence_connection_lost", running=len(self._holders),
                  message="exclusivity cannot be proven: cancelling the runs that held a fence")
        for task in self._holders.values():
            if task is not None and not task.done():
                task.cancel("drwatch lost its fence connection")
        self._holders.clear()

    async def try_acquire(self, asset: str, label: str) -> bool:
        """Take the validator's fence without waiting; False while another session holds it."""
        key = fence_key(asset, label)
        if key in self._holders:
            return False  # this node already runs it (or a validator with the same key)
        async with self._lock:
            try:
                conn = await self._connection()
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", FENCE_CLASS, key,
                                          timeout=QUERY_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self._drop_connection()
                raise FenceLost(f"fence connection failed ({type(exc).__name__})") from None
            except Exception as exc:
                if _connection_error(exc):
                    self._drop_connection()
                    raise FenceLost(f"fence connection failed ({type(exc).__name__})") from None
                raise
        if got:
            self._holders[key] = asyncio.current_task()
        return bool(got)

    async def release(self, asset: str, label: str) -> None:
        key = fence_key(asset, label)
        if key not in self._holders:
            return  # lost with its connection: the server released it already
        del self._holders[key]
        async with self._lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", FENCE_CLASS, key, timeout=QUERY_TIMEOUT)
            except Exception as exc:
                # Not knowing whether the lock is still held is worse than reconnecting: a new session
                # holds nothing.
                log.warning("fence_release_failed", error_type=type(exc).__name__)
                self._drop_connection()

    async def ping(self) -> bool:
        """Prove the fence connection is alive (called with every heartbeat); a dead one cancels holders."""
        if self._conn is None:
            return True
        async with self._lock:
            conn = self._conn
            if conn is None:
                return True
            try:
                await conn.fetchval("SELECT 1", timeout=QUERY_TIMEOUT)
            except Exception as exc:
                log.warning("fence_ping_failed", error_type=type(exc).__name__)
                self._drop_connection()
                return False
        return True

    def _drop_connection(self) -> None:
        conn = self._conn
        self._lost()
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self._holders.clear()
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (TimeoutError, OSError):
                conn.terminate()


def _connection_error(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.InterfaceError | asyncpg.exceptions.ConnectionDoesNotExistError
                      | asyncpg.exceptions.AdminShutdownError | asyncpg.exceptions.CannotConnectNowError)
