"""The cluster's tables, in their own schema ``drwatch_cluster`` (never touched by the result store).

- ``nodes``: one row per node: heartbeat (database time, so host clocks do not matter) and config hashes;
- ``slots``: per validator, the last slot taken (enqueued) and done: the compare-and-set that makes each
  slot run once, the attempt counter that stops a run which kills its node from looping forever, and the
  run id of the attempt in progress (a node killed after storing that run's result but before marking the
  slot done leaves it there: the next owner finds the stored result and completes the slot without a re-run);
- ``runs``: one row per completed run (run id of the stored result, slot, node, due and start times);
- ``node_runs``: per-node run counters (``drwatch_node_runs_total``), kept beside the run rows.

The job engine's own tables (pgqueuer's queue, log and statistics) are installed in the same schema.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg
    from pgqueuer.adapters.persistence.queries import Queries
    from pgqueuer.domain.settings import DBSettings
    from pgqueuer.ports.driver import Driver

SCHEMA = "drwatch_cluster"
SCHEMA_VERSION = 2
INSTALL_LOCK = (0x64727763, 0)  # advisory lock ("drwc", 0): one node installs or upgrades at a time

DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (version INTEGER NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.nodes (
        node TEXT PRIMARY KEY, instance TEXT NOT NULL, pid INTEGER NOT NULL,
        started_at TIMESTAMPTZ NOT NULL, last_seen TIMESTAMPTZ NOT NULL,
        loaded_hash TEXT NOT NULL, active_hash TEXT NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.slots (
        asset TEXT NOT NULL, validator TEXT NOT NULL,
        last_taken BIGINT NOT NULL, last_done BIGINT NOT NULL DEFAULT 0,
        attempt_slot BIGINT NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
        running_node TEXT, running_since TIMESTAMPTZ,
        PRIMARY KEY (asset, validator))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.runs (
        run_id TEXT PRIMARY KEY, asset TEXT NOT NULL, validator TEXT NOT NULL, slot BIGINT NOT NULL,
        node TEXT NOT NULL, outcome TEXT NOT NULL, due DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION NOT NULL)""",
    f"ALTER TABLE {SCHEMA}.slots ADD COLUMN IF NOT EXISTS running_run_id TEXT",  # version 2
    f"CREATE INDEX IF NOT EXISTS runs_finished ON {SCHEMA}.runs (finished_at)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.node_runs (
        node TEXT NOT NULL, outcome TEXT NOT NULL, count BIGINT NOT NULL, PRIMARY KEY (node, outcome))""",
]


@functools.cache
def queue_settings() -> DBSettings:
    """pgqueuer's settings: its objects in the ``drwatch_cluster`` schema."""
    from pgqueuer.domain.settings import DBSettings
    from pgqueuer.domain.types import Channel

    return DBSettings(db_schema=SCHEMA, channel=Channel(f"{SCHEMA}_jobs"), prefix="")


def make_queries(driver: Driver) -> Queries:
    """pgqueuer's queries over ``driver``, with its objects in the ``drwatch_cluster`` schema."""
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment, QueryQueueBuilder, QuerySchedulerBuilder
    from pgqueuer.adapters.persistence.queries import Queries

    settings = queue_settings()
    return Queries(driver, qbe=QueryBuilderEnvironment(settings), qbq=QueryQueueBuilder(settings),
                   qbs=QuerySchedulerBuilder(settings))


async def install(conn: asyncpg.Connection) -> None:
    """Create or upgrade the cluster schema and the engine's tables; safe when nodes start together."""
    from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver


    await conn.execute("SELECT pg_advisory_lock($1, $2)", *INSTALL_LOCK)
    try:
        for statement in DDL:
            await conn.execute(statement)
        version = await conn.fetchval(f"SELECT max(version) FROM {SCHEMA}.meta")
        if version is None:
            await conn.execute(f"INSERT INTO {SCHEMA}.meta (version) VALUES ($1)", SCHEMA_VERSION)
        elif version > SCHEMA_VERSION:
            raise RuntimeError(f"the cluster schema is version {version}, newer than this drwatch "
                               f"({SCHEMA_VERSION}): upgrade drwatch on this node")
        elif version < SCHEMA_VERSION:  # the DDL above is additive and idempotent: record the upgrade
            await conn.execute(f"UPDATE {SCHEMA}.meta SET version = $1", SCHEMA_VERSION)
        queries = make_queries(AsyncpgDriver(conn))
        if await queries.schema_is_installed():
            await queries.apply_upgrade()
        else:
            await queries.install(create_schema=False)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, $2)", *INSTALL_LOCK)
