"""PostgreSQL store (asyncpg) for teams and HA: the same schema and semantics as the SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Ack, Attestation, Result, bucket_for
from drwatch.store import chain, rates
from drwatch.store import history as h
from drwatch.store import verify as v
from drwatch.store.base import (
    ACKS_TABLE,
    REVISION_QUERY,
    SCHEMA_VERSION,
    StoredState,
    StoreSchemaError,
    assemble_state,
    copy_byte_increments,
    result_from_row,
    result_params,
    stamp_sql,
    stamps,
)
from drwatch.store.history import RESULT_COLUMNS
from drwatch.store.rates import samples_of
from drwatch.validators.copies.ledger import CopySummary, LedgerBatch, LedgerEntry, LedgerRow, Totals

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE results (
            id BIGSERIAL PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            asset TEXT NOT NULL, validator TEXT NOT NULL, kind TEXT NOT NULL, outcome TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION NOT NULL,
            recovery_point DOUBLE PRECISION,
            figures TEXT NOT NULL, findings TEXT NOT NULL, copies TEXT NOT NULL)""",
        "CREATE INDEX results_asset_validator ON results (asset, validator, finished_at)",
        "CREATE INDEX results_finished ON results (finished_at)",
        """CREATE TABLE validator_state (
            asset TEXT NOT NULL, validator TEXT NOT NULL,
            last_run_at DOUBLE PRECISION, last_success_at DOUBLE PRECISION,
            last_failure_at DOUBLE PRECISION,
            duration_sum DOUBLE PRECISION NOT NULL DEFAULT 0, duration_count BIGINT NOT NULL DEFAULT 0,
            last_result_id BIGINT,
            PRIMARY KEY (asset, validator))""",
        """CREATE TABLE run_counts (
            asset TEXT NOT NULL, validator TEXT NOT NULL, outcome TEXT NOT NULL, count BIGINT NOT NULL,
            PRIMARY KEY (asset, validator, outcome))""",
        """CREATE TABLE duration_buckets (
            asset TEXT NOT NULL, validator TEXT NOT NULL, le TEXT NOT NULL, count BIGINT NOT NULL,
            PRIMARY KEY (asset, validator, le))""",
        """CREATE TABLE attestations (
            id BIGSERIAL PRIMARY KEY, asset TEXT NOT NULL, copy TEXT NOT NULL,
            note TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, recovery_point DOUBLE PRECISION)""",
    ],
    2: [
        """CREATE TABLE copy_counters (
            asset TEXT NOT NULL, copy TEXT NOT NULL, bytes_verified BIGINT NOT NULL,
            PRIMARY KEY (asset, copy))""",
    ],
    3: v.SCHEMA_V3_POSTGRES,
    4: [ACKS_TABLE.format(id="BIGSERIAL", auto="", real="DOUBLE PRECISION")],
    # Schema 5: the result chain (drwatch.store.chain); existing rows are chained by _chain_existing.
    5: [*chain.ADD_COLUMNS, chain.HEAD_TABLE.format(bigint="BIGINT"),
        chain.TOMBSTONES_TABLE.format(bigint="BIGINT", real="DOUBLE PRECISION")],
    # Schema 6: the restore-time model's rate samples (drwatch.store.rates).
    6: [rates.TABLE.format(id="BIGSERIAL", auto="", real="DOUBLE PRECISION", bigint="BIGINT"), rates.INDEX],
}


async def _chain_existing(conn: asyncpg.Connection) -> None:
    """Schema 5: chain the results stored so far, in id order, and write the head. In batches: a big store is
    never held in memory at once, each statement stays within the command timeout (one UPDATE per row of
    millions did not), and the hashing runs off the event loop."""
    last_id, head = 0, chain.GENESIS
    while rows := await conn.fetch(v.pg(chain.SELECT_UNCHAINED), last_id, chain.MIGRATE_BATCH):
        updates, last_id, head = await asyncio.to_thread(chain.link_existing, [tuple(r) for r in rows], head,
                                                         last_id)
        prevs, digests, ids = zip(*updates, strict=True)
        await conn.execute("UPDATE results r SET prev_digest = u.p, digest = u.d FROM unnest($1::text[], "
                           "$2::text[], $3::bigint[]) AS u(p, d, id) WHERE r.id = u.id", prevs, digests, ids)
    await conn.execute("INSERT INTO result_chain (id, last_id, head) VALUES (1, $1, $2)", last_id, head)

_MIGRATION_LOCK = 0x64727761  # advisory lock key ("drwa"): one node migrates at a time

_UPSERT_STATE = f"""
INSERT INTO validator_state (asset, validator, last_run_at, last_success_at, last_failure_at,
                             duration_sum, duration_count, last_result_id)
VALUES ($1, $2, $3, $4, $5, $6, 1, $7)
ON CONFLICT (asset, validator) DO UPDATE SET
  {stamp_sql("last_run_at", "$8::double precision", "GREATEST")},
  {stamp_sql("last_success_at", "$8::double precision", "GREATEST")},
  {stamp_sql("last_failure_at", "$8::double precision", "GREATEST")},
  duration_sum = validator_state.duration_sum + excluded.duration_sum,
  duration_count = validator_state.duration_count + 1,
  last_result_id = excluded.last_result_id
"""


class PostgresStore:
    backend = "postgres"

    def __init__(self, dsn: str, pool_max: int = 5, connect_timeout: float = 10.0,
                 command_timeout: float = 60.0) -> None:
        self._dsn = dsn
        self._pool_max = pool_max
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:  # never show the DSN (it may hold a password)
        return "PostgresStore(<dsn hidden>)"

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_max, timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            # The message of a connection error never carries the password; still, name only the type.
            raise ValidatorError("store_unavailable",
                                 f"cannot connect to the PostgreSQL store ({type(exc).__name__})") from None
        try:
            await self._migrate(self._pool)
        except BaseException as exc:
            await self.close()  # a store that failed to open holds no connections
            if isinstance(exc, asyncpg.PostgresError):  # the server's reason (no DSN, no password in it)
                raise ValidatorError("store_unavailable",
                                     f"cannot prepare the PostgreSQL store schema: {exc}") from None
            if isinstance(exc, (OSError, asyncpg.InterfaceError, TimeoutError)):
                raise ValidatorError("store_unavailable",
                                     f"lost the PostgreSQL store while opening it ({type(exc).__name__})") from None
            raise

    @staticmethod
    async def _migrate(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS drwatch_schema (version INTEGER NOT NULL)")
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM drwatch_schema")
            if current > SCHEMA_VERSION:
                raise StoreSchemaError(current, SCHEMA_VERSION)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
                if version == 5:
                    await _chain_existing(conn)
                await conn.execute("INSERT INTO drwatch_schema (version) VALUES ($1)", version)

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except TimeoutError:
                pool.terminate()

    async def ping(self) -> None:
        await self._p().fetchval("SELECT 1")

    async def record(self, result: Result, config_hash: str = "") -> None:
        async with self._p().acquire() as conn, conn.transaction():
            # The head row is locked until commit: writers (every node of a cluster) chain one at a time, and
            # ids are drawn under the lock, so id order is chain order.
            _last, prev = chain.head_of(await conn.fetchrow(f"{chain.SELECT_HEAD} FOR UPDATE"))
            params = (*result_params(result), config_hash)
            link = chain.digest(prev, params)
            rid = await conn.fetchval(
                f"INSERT INTO results ({RESULT_COLUMNS}, config_hash, prev_digest, digest) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) ON CONFLICT (run_id) DO NOTHING RETURNING id",
                *params, prev, link,
            )
            if rid is None:  # a retried write of the same run changes nothing
                return
            await conn.execute("UPDATE result_chain SET last_id = $1, head = $2 WHERE id = 1", rid, link)
            await conn.execute(
                _UPSERT_STATE, result.asset, result.validator, *stamps(result), result.duration, rid, time.time(),
            )
            await conn.execute(
                "INSERT INTO run_counts VALUES ($1,$2,$3,1) ON CONFLICT (asset, validator, outcome) "
                "DO UPDATE SET count = run_counts.count + 1",
                result.asset, result.validator, result.outcome.value,
            )
            await conn.execute(
                "INSERT INTO duration_buckets VALUES ($1,$2,$3,1) ON CONFLICT (asset, validator, le) "
                "DO UPDATE SET count = duration_buckets.count + 1",
                result.asset, result.validator, bucket_for(result.duration),
            )
            increments = copy_byte_increments(result)
            if increments:
                await conn.executemany(
                    "INSERT INTO copy_counters VALUES ($1,$2,$3) ON CONFLICT (asset, copy) "
                    "DO UPDATE SET bytes_verified = copy_counters.bytes_verified + excluded.bytes_verified",
                    increments,
                )
            if samples := samples_of(result):
                await conn.executemany(v.pg(rates.INSERT), [s.params() for s in samples])
                await conn.executemany(v.pg(rates.PRUNE), rates.prune_params(samples))

    async def load_state(self) -> StoredState:
        async with self._p().acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            states = await conn.fetch(
                "SELECT asset, validator, last_run_at, last_success_at, last_failure_at, duration_sum, "
                "duration_count FROM validator_state"
            )
            counts = await conn.fetch("SELECT asset, validator, outcome, count FROM run_counts")
            buckets = await conn.fetch("SELECT asset, validator, le, count FROM duration_buckets")
            results = await conn.fetch(
                f"SELECT {RESULT_COLUMNS} FROM results WHERE id IN "
                "(SELECT last_result_id FROM validator_state)"
            )
            attestations = await conn.fetch(
                "SELECT DISTINCT ON (asset, copy) asset, copy, note, created_at, recovery_point "
                "FROM attestations ORDER BY asset, copy, id DESC"
            )
            copies = await conn.fetch("SELECT asset, copy, bytes_verified FROM copy_counters")
            verify = await conn.fetch(v.LOAD_SUMMARIES)
            counters = await conn.fetch(v.LOAD_COUNTERS)
            acks = await conn.fetch(
                "SELECT DISTINCT ON (asset, validator) asset, validator, acked_by, reason, created_at "
                "FROM acks ORDER BY asset, validator, id DESC"
            )
            rate_rows = await conn.fetch(rates.LOAD)
        return assemble_state(
            [tuple(r) for r in states], [tuple(r) for r in counts], [tuple(r) for r in buckets],
            [tuple(r) for r in results], [tuple(r) for r in attestations], [tuple(r) for r in copies],
            [tuple(r) for r in verify], [tuple(r) for r in counters], [tuple(r) for r in acks],
            [tuple(r) for r in rate_rows],
        )

    async def add_attestation(self, attestation: Attestation) -> None:
        await self._p().execute(
            "INSERT INTO attestations (asset, copy, note, created_at, recovery_point) VALUES ($1,$2,$3,$4,$5)",
            attestation.asset, attestation.copy, attestation.note, attestation.created_at,
            attestation.recovery_point,
        )

    async def add_ack(self, ack: Ack) -> None:
        await self._p().execute(
            "INSERT INTO acks (asset, validator, acked_by, reason, created_at) VALUES ($1,$2,$3,$4,$5)",
            ack.asset, ack.validator, ack.by, ack.reason, ack.created_at,
        )

    async def history(self, asset: str, validator: str | None = None, limit: int = 50) -> list[Result]:
        if validator is None:
            rows = await self._p().fetch(
                f"SELECT {RESULT_COLUMNS} FROM results WHERE asset = $1 ORDER BY id DESC LIMIT $2",
                asset, limit,
            )
        else:
            rows = await self._p().fetch(
                f"SELECT {RESULT_COLUMNS} FROM results WHERE asset = $1 AND validator = $2 "
                "ORDER BY id DESC LIMIT $3",
                asset, validator, limit,
            )
        return [result_from_row(tuple(r)) for r in rows]

    async def prune(self, before: float) -> int:
        async with self._p().acquire() as conn, conn.transaction():
            # A pruned result leaves its chain link (a tombstone), so the chain still proves the rest. The head
            # row is locked first, as record() does: each statement below reads a fresh snapshot (READ
            # COMMITTED), and a writer committing between them (moving last_result_id) or another node's prune
            # would otherwise have rows deleted without a tombstone, or tombstoned twice (a unique violation).
            await conn.execute("SELECT 1 FROM result_chain WHERE id = 1 FOR UPDATE")
            await conn.execute(v.pg(chain.TOMBSTONE_INSERT), time.time(), before)
            status: str = await conn.execute(v.pg(f"DELETE FROM results WHERE {chain.PRUNE_CONDITION}"), before)
        return int(status.rsplit(maxsplit=1)[-1])

    # --- reports (drwatch.reporting) ---

    async def history_rows(self, since: float, until: float) -> h.HistoryRows:
        async with self._p().acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            period = await conn.fetch(v.pg(h.PERIOD), since, until)
            before = await conn.fetch(v.pg(h.BEFORE), since)
            stamps_ = await conn.fetch(v.pg(h.STAMPS), since)
            attestations = await conn.fetch(v.pg(h.ATTESTATIONS), until)
            acks = await conn.fetch(v.pg(h.ACKS), until)
            head = await conn.fetchrow(chain.SELECT_HEAD)
        return h.HistoryRows([tuple(r) for r in period], [tuple(r) for r in before], [tuple(r) for r in stamps_],
                             [tuple(r) for r in attestations], [tuple(r) for r in acks],
                             (int(head[0]), str(head[1])) if head is not None else (0, chain.GENESIS))

    async def chain_check(self) -> chain.ChainCheck:
        # Page by page in one snapshot: a big store is never in memory at once (only each result's link), no
        # statement runs long (one SELECT of millions of rows ran past the command timeout), hashing off the loop.
        links: list[chain.Link] = []
        async with self._p().acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            after = -(2**63)
            while rows := await conn.fetch(v.pg(chain.SELECT_PAGE), after, chain.MIGRATE_BATCH):
                links += await asyncio.to_thread(chain.links_of, [tuple(r) for r in rows])
                after = links[-1][0]
            tombstones = await conn.fetch(chain.SELECT_TOMBSTONES)
            head = await conn.fetchrow(chain.SELECT_HEAD)
        return await asyncio.to_thread(chain.check_links, links, [tuple(r) for r in tombstones],
                                       None if head is None else tuple(head))

    # --- the verification ledger ---

    async def ledger_totals(self, asset: str, stale_before: float) -> dict[str, Totals]:
        rows = await self._p().fetch(v.pg(v.TOTALS), stale_before, asset)
        return {str(r[0]): Totals(int(r[1]), int(r[2]), int(r[3])) for r in rows}

    async def ledger_queue(self, asset: str, limit: int, offset: int) -> list[LedgerRow]:
        return [v.queue_row(tuple(r)) for r in await self._p().fetch(v.pg(v.QUEUE), asset, limit, offset)]

    async def ledger_page(self, asset: str, copy: str, after: str, limit: int) -> list[LedgerEntry]:
        rows = await self._p().fetch(v.pg(v.PAGE), asset, copy, after, limit)
        return [v.entry_from_row(tuple(r)) for r in rows]

    async def ledger_write(self, batch: LedgerBatch) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            if batch.upserts:
                await conn.executemany(v.pg(v.UPSERT_LEDGER), batch.upsert_params())
            if batch.deletes:
                await conn.executemany(v.pg(v.DELETE_LEDGER), batch.delete_params())
            if batch.egress_bytes or batch.requests:
                await conn.execute(v.pg(v.ADD_SPENT), batch.asset, batch.day, batch.egress_bytes, batch.requests)
                await conn.execute(v.pg(v.PRUNE_SPENT), batch.asset, batch.day - 1)
            params = batch.counter_params()
            if params:
                await conn.executemany(v.pg(v.ADD_COUNTER), params)

    async def ledger_spent(self, asset: str, day: int) -> tuple[int, int]:
        row = await self._p().fetchrow(v.pg(v.GET_SPENT), asset, day)
        assert row is not None
        return int(row[0]), int(row[1])

    async def ledger_summary(self, asset: str, copy: str, since: float, base: CopySummary) -> CopySummary:
        async with self._p().acquire() as conn, conn.transaction():
            agg = await conn.fetchrow(v.pg(v.SUMMARY), since, since, since, asset, copy)
            classes = await conn.fetch(v.pg(v.BY_CLASS), asset, copy)
            summary = v.summary_from_rows(tuple(agg or ()), [tuple(r) for r in classes], base)
            await conn.execute(v.pg(v.PUT_SUMMARY), asset, copy, json.dumps(summary.to_dict(), sort_keys=True))
        return summary

    async def revision(self) -> tuple[int, int]:
        row = await self._p().fetchrow(REVISION_QUERY)
        assert row is not None
        return int(row[0]), int(row[1])

    def raw(self) -> Any:
        return self._pool
