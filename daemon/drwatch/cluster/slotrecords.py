"""A cluster slot's record in PostgreSQL: whether it is done, its start under the fence (attempts, run id; a
result the previous owner stored completes it), its completion (run row, per-node counter), a cancelled run."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import structlog

from drwatch.cluster.schema import SCHEMA
from drwatch.core.model import Outcome, Result

log = structlog.get_logger("drwatch.cluster")


async def slot_done(pool: asyncpg.Pool | None, asset: str, label: str, slot: int) -> bool:
    assert pool is not None
    done = await pool.fetchval(f"SELECT last_done >= $3 FROM {SCHEMA}.slots "
                               "WHERE asset = $1 AND validator = $2", asset, label, slot)
    return bool(done)


async def begin_slot(pool: asyncpg.Pool | None, node: str, asset: str, label: str, slot: int,
                     due: float) -> tuple[int, str] | None:
    """Under the fence: None if the slot is done, else (how many times it has been started, the run id
    of this start).

    The run id is written before the run starts. If the previous start of this slot stored its result
    under its run id and its node died before marking the slot done, that result is the slot's run: the
    slot is completed here (run row and counter credited to that node) instead of running it again."""
    assert pool is not None
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"SELECT last_done, attempt_slot, attempts, running_run_id, running_node "
                                  f"FROM {SCHEMA}.slots WHERE asset = $1 AND validator = $2 FOR UPDATE",
                                  asset, label)
        if row is None or row["last_done"] >= slot:
            return None
        previous = row["running_run_id"] if row["attempt_slot"] == slot else None
        if previous is not None:
            stored = await conn.fetchrow("SELECT outcome, started_at, finished_at FROM results WHERE run_id = $1",
                                         previous)
            if stored is not None:
                owner = str(row["running_node"] or node)
                await _complete(conn, asset, label, slot, due, previous, owner, str(stored["outcome"]),
                                float(stored["started_at"]), float(stored["finished_at"]))
                log.info("slot_completed_from_stored_result", asset=asset, validator=label, slot=slot,
                         run_id=previous, node=owner,
                         message="the previous owner stored this run's result and died before marking the "
                                 "slot done; not run again")
                return None
        run_id = uuid.uuid4().hex
        attempts = int(row["attempts"]) + 1 if row["attempt_slot"] == slot else 1
        await conn.execute(f"UPDATE {SCHEMA}.slots SET attempts = $3, attempt_slot = $4, running_node = $5, "
                           "running_since = now(), running_run_id = $6 WHERE asset = $1 AND validator = $2",
                           asset, label, attempts, slot, node, run_id)
    return attempts, run_id


async def finish_slot(pool: asyncpg.Pool | None, node: str, asset: str, label: str, slot: int, due: float,
                      result: Result) -> None:
    assert pool is not None
    async with pool.acquire() as conn, conn.transaction():
        await _complete(conn, asset, label, slot, due, result.run_id, node, result.outcome.value,
                        result.started_at, result.finished_at)


async def _complete(conn: asyncpg.Connection, asset: str, label: str, slot: int, due: float,
                    run_id: str, node: str, outcome: str, started_at: float, finished_at: float) -> None:
    """Mark the slot done with its run row and the per-node counter (inside the caller's transaction)."""
    await conn.execute(f"UPDATE {SCHEMA}.slots SET last_done = GREATEST(last_done, $3), running_node = NULL, "
                       "running_since = NULL, running_run_id = NULL WHERE asset = $1 AND validator = $2",
                       asset, label, slot)
    await conn.execute(f"INSERT INTO {SCHEMA}.runs (run_id, asset, validator, slot, node, outcome, due, "
                       "started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                       "ON CONFLICT (run_id) DO NOTHING", run_id, asset, label, slot, node, outcome, due,
                       started_at, finished_at)
    await _count(conn, outcome, node)


async def finish_cancelled(pool: asyncpg.Pool | None, node: str, asset: str, label: str, slot: int) -> None:
    """A cancelled run (shutdown, lost fence) is recorded by the runner; its slot is over."""
    if pool is None:
        return
    try:
        async with asyncio.timeout(5), pool.acquire() as conn, conn.transaction():
            await conn.execute(f"UPDATE {SCHEMA}.slots SET last_done = GREATEST(last_done, $3), "
                               "running_node = NULL, running_since = NULL, running_run_id = NULL "
                               "WHERE asset = $1 AND validator = $2 AND running_node = $4",
                               asset, label, slot, node)
            await _count(conn, Outcome.CANCELLED.value, node)
    except Exception as exc:
        log.warning("cancelled_slot_not_recorded", error_type=type(exc).__name__)


async def _count(conn: asyncpg.Connection, outcome: str, node: str) -> None:
    await conn.execute(f"INSERT INTO {SCHEMA}.node_runs (node, outcome, count) VALUES ($1, $2, 1) "
                       "ON CONFLICT (node, outcome) DO UPDATE SET count = node_runs.count + 1", node, outcome)
