"""The database a restore drill restores into, shared by ``postgres_restore`` and ``pgvector`` drills:

- ``ephemeral``: database ``drill`` of a throwaway cluster in the run's sandbox
  (:class:`drwatch.validators.postgres.pgcluster.EphemeralCluster`), stopped by the run's exit stack;
- ``target``: a database ``drwatch_drill_<run_id>`` created on a server you provide, always dropped
  (``WITH (FORCE)``), also on cancellation. A run holds a session advisory lock for its database, and each
  run first drops the drill databases on that server whose run holds no lock
  (:func:`drop_orphan_drill_databases`).

Every resource joins the run's exit stack the moment it exists; a cleanup step's failure is logged, never
raised (:func:`cleanup`).
"""

from __future__ import annotations

import asyncio
import functools
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drwatch.core.errors import ValidatorError
from drwatch.core.secrets import redact
from drwatch.core.subprocesses import unwind
from drwatch.validators.base import RunContext
from drwatch.validators.postgres import pgcluster, pgdump, pgtools

DRILL_DB = "drill"  # the database restored into, in an ephemeral cluster
DRILL_DB_PREFIX = "drwatch_drill_"
# Advisory lock keys (two int4 form): class 0x64727764 ("drwd"); a run's lock uses the run id's first 31 bits.
LOCK_CLASS_RUN = 0x64727764
LOCK_CLASS_SWEEP = 0x64727765


class EphemeralSandbox(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["ephemeral"]
    bin_dir: str | None = None  # initdb, pg_ctl, postgres, pg_restore, psql (default: PATH, then /usr/lib/postgresql)
    run_as: str | None = None  # OS user for the server when drwatch runs as root (default: postgres)


class TargetSandbox(pgtools.DsnRef):
    mode: Literal["target"]
    bin_dir: str | None = None  # pg_restore, psql


SandboxConfig = Annotated[EphemeralSandbox | TargetSandbox, Field(discriminator="mode")]


async def cleanup(ctx: RunContext, fn: Callable[[], Awaitable[Any]], within: float, what: str) -> None:
    """A cleanup step of the run's exit stack that runs to its end (shielded, bounded); its failure is
    logged, never raised."""
    try:
        await unwind(fn(), within)
    except Exception as exc:  # cleanup must not replace the run's result
        ctx.log.warning("drill_cleanup_failed", step=what, error=f"{type(exc).__name__}: {exc}")


def query_limit(ctx: RunContext) -> float:
    """Client-side bound of one query: what is left of the run (the server also has statement_timeout)."""
    return max(1.0, ctx.remaining())


def check_version(server_version: str, server_major: int, where: str, hint: str) -> None:
    """A dump from a newer PostgreSQL than the server it is restored into cannot be a fair drill:
    ValidatorError ``dump_newer_than_sandbox``; ``hint`` may name ``{dumped}`` (the dump's major)."""
    dumped = pgdump.major_of(server_version)
    if dumped is not None and dumped > server_major:
        raise ValidatorError("dump_newer_than_sandbox", f"the dump comes from PostgreSQL {server_version} but {where} "
                             f"runs PostgreSQL {server_major}: {hint.format(dumped=dumped)}")


async def add_owned_connection(ctx: RunContext, params: dict[str, str], *, code: str, what: str,
                               step: str, **kwargs: Any) -> Any:
    """A connection (:func:`pgtools.connect`) closed by the run's exit stack (step name ``step``)."""
    conn = await pgtools.connect(params, code=code, what=what, **kwargs)
    ctx.exit_stack.push_async_callback(cleanup, ctx, functools.partial(pgtools.close_connection, conn), 10, step)
    return conn


# --- ephemeral mode ---------------------------------------------------------------------------------


async def ephemeral_database(ctx: RunContext, bin_dir: Path, sandbox: Path,
                             run_as: str | None) -> tuple[Any, dict[str, str]]:
    """A throwaway cluster in ``sandbox``/pg (run as ``run_as``) holding an empty database ``drill``: the
    cluster is stopped and the admin connection closed by the run's exit stack. Returns the admin
    connection (database ``postgres``) and the drill database's parameters."""
    if run_as is not None:
        await asyncio.to_thread(pgcluster.open_sandbox_for, sandbox, run_as)
    # initdb'd once per PostgreSQL build, kept next to the sandboxes and copied (pgtemplate)
    cluster = pgcluster.EphemeralCluster(bin_dir, sandbox / "pg", run_as, templates=sandbox.parent)
    # Registered before anything starts: a run cancelled during pg_ctl start still stops the server.
    ctx.exit_stack.push_async_callback(cleanup, ctx, cluster.stop, 60, "stop sandbox server")
    t0 = time.monotonic()
    await cluster.init(limit=max(1.0, min(300.0, ctx.remaining())))
    t1 = time.monotonic()
    await cluster.start(limit=max(1.0, min(120.0, ctx.remaining())))
    t2 = time.monotonic()
    admin = await add_owned_connection(ctx, cluster.params(), code="sandbox_unavailable", what="sandbox server",
                                       step="close sandbox connection")
    await admin.execute(f"CREATE DATABASE {DRILL_DB} TEMPLATE template0", timeout=120)
    # Where a drill's time goes (benchmarks/pg_restore_bench.py reads these phases from the log).
    ctx.log.info("drill_sandbox_ready", initdb_seconds=round(t1 - t0, 3), start_seconds=round(t2 - t1, 3),
                 createdb_seconds=round(time.monotonic() - t2, 3), template=cluster.copied)
    return admin, cluster.params(DRILL_DB)


# --- target mode: drill databases and their advisory locks -----------------------------------------


async def target_database(ctx: RunContext, params: dict[str, str],
                          prepare: Callable[[Any], Awaitable[None]] | None = None,
                          populate: Callable[[dict[str, str]], Awaitable[None]] | None = None) -> dict[str, str]:
    """A database ``drwatch_drill_<run id>`` on the server of ``params``, dropped by the run's exit stack in
    every case (also on cancellation); returns its parameters. ``prepare(admin)`` checks the server first
    (its ValidatorError propagates), drill databases of runs no longer alive are dropped, and ``populate``
    gets the new database's parameters (e.g. to create an extension). Privilege errors are
    ``restore_permission_denied``, connection errors ``restore_target_unavailable``."""
    import asyncpg  # imported with the first drill, not with the config (start-up of `drwatch check`)

    admin = await add_owned_connection(ctx, params, code="restore_target_unavailable", what="restore target",
                                       step="close target connection")
    try:
        if prepare is not None:
            await prepare(admin)
        await hold_run_lock(admin, ctx.run_id)
        await drop_orphan_drill_databases(admin, ctx.log.warning)
        name = drill_db_name(ctx.run_id)
        # Registered before CREATE DATABASE: a cancellation between the two still drops it (IF EXISTS).
        ctx.exit_stack.push_async_callback(cleanup, ctx, functools.partial(drop_drill_database, admin, name), 130,
                                           "drop drill database")
        await admin.execute(f"CREATE DATABASE {pgtools.quote_ident(name)} TEMPLATE template0", timeout=120)
        if populate is not None:
            await populate({**params, "dbname": name})
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ValidatorError("restore_permission_denied", redact(f"restore target: {exc}")) from None
    except pgtools.CONNECT_ERRORS as exc:
        raise ValidatorError("restore_target_unavailable",
                             redact(f"restore target: {type(exc).__name__}: {exc}")) from None
    return {**params, "dbname": name}


def drill_db_name(run_id: str) -> str:
    return f"{DRILL_DB_PREFIX}{run_id}"[:63]


def run_lock_key(run_id: str) -> int:
    """An int4 key for a run's advisory lock (stable across processes)."""
    key: int = struct.unpack(">i", struct.pack(">I", zlib.crc32(run_id.encode())))[0]
    return key


async def hold_run_lock(conn: Any, run_id: str) -> None:
    """Mark ``run_id`` active on this server for as long as ``conn`` lives (a session advisory lock:
    released by the server when the connection ends, also after a SIGKILL of drwatch)."""
    await conn.execute("SELECT pg_advisory_lock($1, $2)", LOCK_CLASS_RUN, run_lock_key(run_id), timeout=30)


async def drop_drill_database(conn: Any, name: str) -> None:
    """DROP DATABASE IF EXISTS ... WITH (FORCE) (PostgreSQL 13+: ends sessions still using it)."""
    force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
    if not force:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name,
                           timeout=30)
    await conn.execute(f"DROP DATABASE IF EXISTS {pgtools.quote_ident(name)}{force}", timeout=120)


async def drop_orphan_drill_databases(conn: Any, log: Callable[..., Any] | None = None) -> list[str]:
    """Drop ``drwatch_drill_*`` databases on this server whose run is no longer active.

    A run is active while some connection holds its advisory lock (``hold_run_lock``), in this or any
    other drwatch process; a run whose process died (even by SIGKILL) lost it with its connection. The
    sweep itself runs under a separate advisory lock so two sweepers never race; one that finds it taken
    skips the sweep (the other one does it). Returns the names dropped.
    """
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1, 0)", LOCK_CLASS_SWEEP, timeout=30):
        return []
    dropped: list[str] = []
    try:
        names = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1",
                                 DRILL_DB_PREFIX.replace("_", r"\_") + "%", timeout=30)
        for row in names:
            name = str(row["datname"])
            key = run_lock_key(name[len(DRILL_DB_PREFIX):])
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS_RUN, key, timeout=30):
                continue  # its run is alive somewhere
            try:
                await drop_drill_database(conn, name)
                dropped.append(name)
                if log is not None:
                    log("orphaned_drill_database_dropped", database=name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS_RUN, key, timeout=30)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, 0)", LOCK_CLASS_SWEEP, timeout=30)
    return dropped
