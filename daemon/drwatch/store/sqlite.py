"""SQLite store (default): WAL, synchronous=FULL, one dedicated thread so the event loop never blocks.

The connection stays bound to the file it opened. If that file is removed or replaced under the running
daemon (a restore, a careless ``mv``), SQLite would go on writing into the detached inode and a restart
would lose every result since; writes are refused instead (``StoreFileReplacedError``, an ``OSError``) so
the runner keeps results pending until the original is back.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Ack, Attestation, Result, bucket_for
from drwatch.store import chain, rates
from drwatch.store import history as h
from drwatch.store import verify as v
from drwatch.store.base import (
    REVISION_QUERY,
    StoredState,
    assemble_state,
    copy_byte_increments,
    result_from_row,
    result_params,
    stamp_sql,
    stamps,
)
from drwatch.store.history import RESULT_COLUMNS
from drwatch.store.rates import samples_of
from drwatch.store.sqlite_schema import migrate
from drwatch.store.sqlite_schema import rollback as _rollback
from drwatch.validators.copies.ledger import CopySummary, LedgerBatch, LedgerEntry, LedgerRow, Totals

T = TypeVar("T")

_UPSERT_STATE = f"""
INSERT INTO validator_state (asset, validator, last_run_at, last_success_at, last_failure_at,
                             duration_sum, duration_count, last_result_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)
ON CONFLICT (asset, validator) DO UPDATE SET
  {stamp_sql("last_run_at", "?8", "MAX")}, {stamp_sql("last_success_at", "?8", "MAX")},
  {stamp_sql("last_failure_at", "?8", "MAX")},
  duration_sum = validator_state.duration_sum + excluded.duration_sum,
  duration_count = validator_state.duration_count + 1,
  last_result_id = excluded.last_result_id
"""


class StoreFileReplacedError(OSError):
    """The database file at the store's path is not the one the store opened (removed or replaced)."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.ESTALE, "the store file was removed or replaced since drwatch opened it; "
                         "not writing to the detached file (put the original back, or restart drwatch)", str(path))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class SqliteStore:
    backend = "sqlite"

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout  # how long a write waits for another process's lock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drwatch-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file the connection opened

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, conn)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                migrate(conn)
                self._identity = _identity(self.path)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._pool, connect)
        except sqlite3.Error as exc:  # not a database, locked past the timeout, read-only, corrupt...
            raise ValidatorError("store_unavailable", f"cannot open the SQLite store {self.path}: {exc}") from None
        except OSError as exc:  # the directory cannot be created
            raise ValidatorError("store_unavailable",
                                 f"cannot open the SQLite store {self.path}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        self._pool.shutdown(wait=True)

    def _check_file(self) -> None:
        """Refuse to write unless the path still holds the file this connection opened."""
        if _identity(self.path) != self._identity:
            raise StoreFileReplacedError(self.path)

    async def ping(self) -> None:
        def check(conn: sqlite3.Connection) -> None:
            self._check_file()
            conn.execute("SELECT 1").fetchone()

        await self._call(check)

    async def record(self, result: Result, config_hash: str = "") -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time: the chain head is read and moved here
            try:
                self._check_file()
                params = (*result_params(result), config_hash)
                _last, prev = chain.head_of(conn.execute(chain.SELECT_HEAD).fetchone())
                link = chain.digest(prev, params)
                cur = conn.execute(
                    f"INSERT INTO results ({RESULT_COLUMNS}, config_hash, prev_digest, digest) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (run_id) DO NOTHING",
                    (*params, prev, link),
                )
                if cur.rowcount == 1:  # a retried write of the same run changes nothing
                    conn.execute("UPDATE result_chain SET last_id = ?, head = ? WHERE id = 1", (cur.lastrowid, link))
                    conn.execute(
                        _UPSERT_STATE,
                        (result.asset, result.validator, *stamps(result), result.duration, cur.lastrowid,
                         time.time()),
                    )
                    conn.execute(
                        "INSERT INTO run_counts VALUES (?,?,?,1) ON CONFLICT (asset, validator, outcome) "
                        "DO UPDATE SET count = run_counts.count + 1",
                        (result.asset, result.validator, result.outcome.value),
                    )
                    conn.execute(
                        "INSERT INTO duration_buckets VALUES (?,?,?,1) ON CONFLICT (asset, validator, le) "
                        "DO UPDATE SET count = duration_buckets.count + 1",
                        (result.asset, result.validator, bucket_for(result.duration)),
                    )
                    conn.executemany(
                        "INSERT INTO copy_counters VALUES (?,?,?) ON CONFLICT (asset, copy) "
                        "DO UPDATE SET bytes_verified = copy_counters.bytes_verified + excluded.bytes_verified",
                        copy_byte_increments(result),
                    )
                    if samples := samples_of(result):
                        conn.executemany(rates.INSERT, [s.params() for s in samples])
                        conn.executemany(rates.PRUNE, rates.prune_params(samples))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

        await self._call(write)

    async def load_state(self) -> StoredState:
        def read(conn: sqlite3.Connection) -> StoredState:
            conn.execute("BEGIN")  # one read transaction: counters and latest results of the same moment
            try:
                return read_all(conn)
            finally:
                _rollback(conn)

        def read_all(conn: sqlite3.Connection) -> StoredState:
            states = conn.execute(
                "SELECT asset, validator, last_run_at, last_success_at, last_failure_at, duration_sum, "
                "duration_count FROM validator_state"
            ).fetchall()
            counts = conn.execute("SELECT asset, validator, outcome, count FROM run_counts").fetchall()
            buckets = conn.execute("SELECT asset, validator, le, count FROM duration_buckets").fetchall()
            results = conn.execute(
                f"SELECT {RESULT_COLUMNS} FROM results WHERE id IN "
                "(SELECT last_result_id FROM validator_state)"
            ).fetchall()
            attestations = conn.execute(
                "SELECT asset, copy, note, created_at, recovery_point FROM attestations a WHERE id = "
                "(SELECT MAX(id) FROM attestations b WHERE b.asset = a.asset AND b.copy = a.copy)"
            ).fetchall()
            copies = conn.execute("SELECT asset, copy, bytes_verified FROM copy_counters").fetchall()
            verify = conn.execute(v.LOAD_SUMMARIES).fetchall()
            counters = conn.execute(v.LOAD_COUNTERS).fetchall()
            acks = conn.execute(
                "SELECT asset, validator, acked_by, reason, created_at FROM acks a WHERE id = "
                "(SELECT MAX(id) FROM acks b WHERE b.asset = a.asset AND b.validator = a.validator)"
            ).fetchall()
            rate_rows = conn.execute(rates.LOAD).fetchall()
            return assemble_state(states, counts, buckets, results, attestations, copies, verify, counters, acks,
                                  rate_rows)

        return await self._call(read)

    async def add_attestation(self, attestation: Attestation) -> None:
        def write(conn: sqlite3.Connection) -> None:
            self._check_file()
            conn.execute(
                "INSERT INTO attestations (asset, copy, note, created_at, recovery_point) VALUES (?,?,?,?,?)",
                (attestation.asset, attestation.copy, attestation.note, attestation.created_at,
                 attestation.recovery_point),
            )

        await self._call(write)

    async def add_ack(self, ack: Ack) -> None:
        def write(conn: sqlite3.Connection) -> None:
            self._check_file()
            conn.execute("INSERT INTO acks (asset, validator, acked_by, reason, created_at) VALUES (?,?,?,?,?)",
                         (ack.asset, ack.validator, ack.by, ack.reason, ack.created_at))

        await self._call(write)

    async def history(self, asset: str, validator: str | None = None, limit: int = 50) -> list[Result]:
        def read(conn: sqlite3.Connection) -> list[Result]:
            if validator is None:
                rows = conn.execute(
                    f"SELECT {RESULT_COLUMNS} FROM results WHERE asset = ? ORDER BY id DESC LIMIT ?",
                    (asset, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {RESULT_COLUMNS} FROM results WHERE asset = ? AND validator = ? "
                    "ORDER BY id DESC LIMIT ?",
                    (asset, validator, limit),
                ).fetchall()
            return [result_from_row(r) for r in rows]

        return await self._call(read)

    async def prune(self, before: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_file()
                # A pruned result leaves its chain link (a tombstone), so the chain still proves the rest.
                conn.execute(chain.TOMBSTONE_INSERT, (time.time(), before))
                cur = conn.execute(f"DELETE FROM results WHERE {chain.PRUNE_CONDITION}", (before,))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return cur.rowcount

        return await self._call(delete)

    # --- the verification ledger ---

    async def ledger_totals(self, asset: str, stale_before: float) -> dict[str, Totals]:
        def read(conn: sqlite3.Connection) -> dict[str, Totals]:
            rows = conn.execute(v.TOTALS, (stale_before, asset)).fetchall()
            return {str(c): Totals(int(n), int(b), int(d)) for c, n, b, d in rows}

        return await self._call(read)

    async def ledger_queue(self, asset: str, limit: int, offset: int) -> list[LedgerRow]:
        def read(conn: sqlite3.Connection) -> list[LedgerRow]:
            return [v.queue_row(r) for r in conn.execute(v.QUEUE, (asset, limit, offset)).fetchall()]

        return await self._call(read)

    async def ledger_page(self, asset: str, copy: str, after: str, limit: int) -> list[LedgerEntry]:
        def read(conn: sqlite3.Connection) -> list[LedgerEntry]:
            return [v.entry_from_row(r) for r in conn.execute(v.PAGE, (asset, copy, after, limit)).fetchall()]

        return await self._call(read)

    async def ledger_write(self, batch: LedgerBatch) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_file()
                conn.executemany(v.UPSERT_LEDGER, batch.upsert_params())
                conn.executemany(v.DELETE_LEDGER, batch.delete_params())
                if batch.egress_bytes or batch.requests:
                    conn.execute(v.ADD_SPENT, (batch.asset, batch.day, batch.egress_bytes, batch.requests))
                    conn.execute(v.PRUNE_SPENT, (batch.asset, batch.day - 1))
                conn.executemany(v.ADD_COUNTER, batch.counter_params())
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

        await self._call(write)

    async def ledger_spent(self, asset: str, day: int) -> tuple[int, int]:
        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            b, r = conn.execute(v.GET_SPENT, (asset, day)).fetchone()
            return int(b), int(r)

        return await self._call(read)

    async def ledger_summary(self, asset: str, copy: str, since: float, base: CopySummary) -> CopySummary:
        def compute(conn: sqlite3.Connection) -> CopySummary:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_file()
                agg = conn.execute(v.SUMMARY, (since, since, since, asset, copy)).fetchone()
                classes = conn.execute(v.BY_CLASS, (asset, copy)).fetchall()
                summary = v.summary_from_rows(agg, classes, base)
                conn.execute(v.PUT_SUMMARY, (asset, copy, json.dumps(summary.to_dict(), sort_keys=True)))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return summary

        return await self._call(compute)

    async def revision(self) -> tuple[int, int]:
        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            results, attestations = conn.execute(REVISION_QUERY).fetchone()
            return int(results), int(attestations)

        return await self._call(read)

    # --- reports (drwatch.reporting) ---

    async def history_rows(self, since: float, until: float) -> h.HistoryRows:
        def read(conn: sqlite3.Connection) -> h.HistoryRows:
            conn.execute("BEGIN")  # one read transaction: the period and the head of the same moment
            try:
                return h.HistoryRows(
                    period=conn.execute(h.PERIOD, (since, until)).fetchall(),
                    before=conn.execute(h.BEFORE, (since,)).fetchall(),
                    stamps=conn.execute(h.STAMPS, (since,)).fetchall(),
                    attestations=conn.execute(h.ATTESTATIONS, (until,)).fetchall(),
                    acks=conn.execute(h.ACKS, (until,)).fetchall(),
                    head=chain.head_or_genesis(conn.execute(chain.SELECT_HEAD).fetchone()),
                )
            finally:
                _rollback(conn)

        return await self._call(read)

    async def chain_check(self) -> chain.ChainCheck:
        def read(conn: sqlite3.Connection) -> chain.ChainCheck:
            conn.execute("BEGIN")
            try:
                return chain.check(conn.execute(chain.SELECT_ALL), conn.execute(chain.SELECT_TOMBSTONES).fetchall(),
                                   conn.execute(chain.SELECT_HEAD).fetchone())
            finally:
                _rollback(conn)

        return await self._call(read)

    def raw(self) -> Any:  # for tests and `drwatch status --debug`
        return self._conn
