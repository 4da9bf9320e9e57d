"""Validator ``postgres_restore``: restore a PostgreSQL dump into a sandbox and prove the data is there.

Recovery points are the dumps under ``location``/``prefix`` whose name matches ``pattern``: ``pg_dump -Fc``
files, ``-Fd`` directories (or their S3 prefixes) holding ``toc.dat``, ``-Ft`` tar files and plain SQL. The
format is read from the content, not the name. One is picked (``newest``, or ``random`` among those of the
last ``random_window``), fetched (S3: streamed to the sandbox, bounded memory) and restored with
``pg_restore --exit-on-error --no-owner --no-privileges -j N`` (plain SQL: ``psql -v ON_ERROR_STOP=1``) into

- ``ephemeral``: a throwaway cluster in the run's sandbox (initdb + pg_ctl as ``run_as`` when drwatch runs
  as root, fsync off, 127.0.0.1 on a free port, random password), stopped (``-m immediate``) and removed in
  every case; a crash leaves nothing for long: the start-up sweep stops the postmaster and removes the
  sandbox;
- ``target``: a database ``drwatch_drill_<run_id>`` created on a server you provide, always dropped
  (``WITH (FORCE)``), also on cancellation. A run holds a session advisory lock for its database, and each
  run first drops the drill databases on that server whose run holds no lock (see
  :func:`drwatch.validators.postgres.pgtools.drop_orphan_drill_databases`).

Then the restored database is checked: expected tables, row counts against ``expect.row_counts`` and the
production database (read-only session and transaction), per-table checksums (ordered md5 of the rows on
both sides, small tables only) and SQL assertions. With ``production``, every production table that holds
rows must come back (``table_missing``; ``expect.exclude_tables`` names those a backup may leave out), so
a dump of the wrong or an empty database fails without any ``expect`` list. A restore with no tables or no
rows fails (``restore_empty``) unless production is empty too or, without production, ``expect.allow_empty``
says so. Which side is which: the backup may lag production
(rows added since the dump are expected), so only a restored count *below* production beyond the
tolerance fails (``row_count_low``; ``table_empty`` when restored empty and production not). A restored
count above production means production lost rows since the backup: a warning (``production_shrank``),
never a failure - the backup is what would save you.

Outcomes: ``failed`` when the dump is missing, truncated/corrupt, does not restore, or a check fails;
``error`` when it could not be checked (tools missing, the dump needs newer PostgreSQL tools than the
sandbox has, restore target or production down). Restore time above the asset's RTO adds ``rto_exceeded``
(warning) without changing the outcome.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.core.secrets import redact
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.plugin import Plugin
from drwatch.validators.postgres import pgcluster, pgdump, pgtools

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

DRILL_DB = "drill"  # the database restored into, in an ephemeral cluster
_LISTED = 10  # error lines of a failed restore reported one by one


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EphemeralSandbox(_Model):
    mode: Literal["ephemeral"]
    bin_dir: str | None = None  # initdb, pg_ctl, postgres, pg_restore, psql (default: PATH, then /usr/lib/postgresql)
    run_as: str | None = None  # OS user for the server when drwatch runs as root (default: postgres)


class TargetSandbox(pgtools.DsnRef):
    mode: Literal["target"]
    bin_dir: str | None = None  # pg_restore, psql


SandboxConfig = Annotated[EphemeralSandbox | TargetSandbox, Field(discriminator="mode")]


def _table(value: str) -> str:
    pgtools.split_table(value)
    return value


class ChecksumsConfig(_Model):
    tables: list[str] = Field(min_length=1)
    max_rows: int = Field(default=100_000, ge=1)

    @field_validator("tables")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return [_table(t) for t in value]


class AssertionExpect(_Model):
    op: Literal["==", "!=", ">", ">=", "<", "<="] = ">="
    value: bool | int | float | str


class AssertionConfig(_Model):
    query: str = Field(min_length=1)
    expect: AssertionExpect
    name: str | None = None


class ExpectConfig(_Model):
    tables: list[str] = Field(default_factory=list)
    row_counts: dict[str, int] = Field(default_factory=dict)
    tolerance: float | str = 0.05  # a fraction of the reference count, or "N rows"
    checksums: ChecksumsConfig | None = None
    assertions: list[AssertionConfig] = Field(default_factory=list)
    # Production tables the backup need not hold (with a production DSN every table with rows is required).
    exclude_tables: list[str] = Field(default_factory=list)
    # A restore with no tables or no rows is a bad backup unless this says an empty database is expected.
    allow_empty: bool = False

    @field_validator("tables", "exclude_tables")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return [_table(t) for t in value]

    @field_validator("row_counts")
    @classmethod
    def _counts(cls, value: dict[str, int]) -> dict[str, int]:
        for name, n in value.items():
            _table(name)
            if n < 0:
                raise ValueError(f"row count of {name!r} cannot be negative")
        return value

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: Any) -> float | str:
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*rows?\s*", value):
            return value.strip()
        raise ValueError("tolerance is a fraction of the reference count (0.05 = 5%) or a row count ('100 rows')")

    def allowed(self, reference: int) -> float:
        """Rows a count may differ from ``reference`` by."""
        if isinstance(self.tolerance, str):
            return float(re.sub(r"\D", "", self.tolerance))
        return self.tolerance * reference


class PostgresRestoreConfig(ValidatorConfigBase):
    kind: Literal["postgres_restore"] = "postgres_restore"
    location: str
    prefix: pgdump.DumpPrefix = ""
    pattern: pgdump.DumpPattern = "*"
    pick: Literal["newest", "random"] = "newest"
    random_window: Duration = timedelta(days=7)
    sandbox: SandboxConfig = Field(default_factory=lambda: EphemeralSandbox(mode="ephemeral"))
    jobs: int = Field(default=2, ge=1, le=64)
    production: pgtools.DsnRef | None = None
    expect: ExpectConfig = Field(default_factory=ExpectConfig)

    def locations(self, asset: AssetView) -> list[str]:
        return [self.location]

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        problems = []
        if self.location not in cfg.locations:
            problems.append(ConfigProblem("location", f"unknown location {self.location!r} "
                                                      f"(known: {', '.join(sorted(cfg.locations)) or 'none'})"))
        if self.expect.checksums is not None and self.production is None:
            problems.append(ConfigProblem("expect.checksums", "checksums compare with production: set 'production'"))
        return problems


def _compare(op: str, actual: Any, expected: bool | int | float | str) -> bool:
    if actual is None:
        return False
    if isinstance(expected, bool):
        a: Any = bool(actual)
    elif isinstance(expected, int | float):
        if not isinstance(actual, int | float | Decimal) or isinstance(actual, bool):
            return False
        a = float(actual)
        expected = float(expected)
    else:
        a = str(actual)
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda x, y: x == y, "!=": lambda x, y: x != y, ">": lambda x, y: x > y,
        ">=": lambda x, y: x >= y, "<": lambda x, y: x < y, "<=": lambda x, y: x <= y}
    try:
        return ops[op](a, expected)
    except TypeError:
        return False


async def _cleanup(fn: Callable[[], Awaitable[Any]], within: float, ctx: RunContext, what: str) -> None:
    """A cleanup step that runs to its end (shielded, bounded); its failure is logged, never raised."""
    try:
        await pgtools.unwind(fn(), within)
    except Exception as exc:  # cleanup must not replace the run's result
        ctx.log.warning("drill_cleanup_failed", step=what, error=f"{type(exc).__name__}: {exc}")


class PostgresRestoreValidator:
    kind: ClassVar[str] = "postgres_restore"

    def __init__(self, cfg: PostgresRestoreConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        cfg = self.cfg
        dumps = pgdump.dumps_at(ctx.config, ctx.s3, cfg.location, cfg.prefix, cfg.pattern)
        points = await dumps.list()
        where = f"{cfg.location}:{cfg.prefix or '/'}"
        if not points:
            why = "does not exist" if points is None else f"holds no dump matching {cfg.pattern!r}"
            return Report(Outcome.FAILED, (Finding(Severity.CRITICAL, "no_recovery_point", f"{where} {why}"),))
        findings: list[Finding] = []
        future = FutureTimes.at(ctx)  # a dump dated ahead of the clock never makes the recovery point fresh
        points = [p for p in points if future.believe(p.name, p.mtime)]
        if (ahead := future.finding(where, "dump(s)")) is not None:
            findings.append(ahead)
        if not points:
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, "no_recovery_point",
                                                              f"{where} holds no dump with a believable time")))
        newest, chosen = pgdump.choose(points, cfg.pick, cfg.random_window.total_seconds())
        age = max(0.0, ctx.clock() - newest.mtime)
        if age > ctx.asset.rpo.total_seconds():
            findings.append(Finding(Severity.CRITICAL, "rpo_exceeded",
                                    f"newest dump {newest.name} is {format_duration(age)} old "
                                    f"(RPO {format_duration(ctx.asset.rpo.total_seconds())})", where))
        figures = {"bytes": float(chosen.size), "recovery_point_age_seconds": age}
        ctx.log.info("drill_recovery_point", dump=chosen.name, size=chosen.size, candidates=len(points))

        sandbox = await ctx.exit_stack.enter_async_context(ctx.sandboxes.directory(ctx.run_id))
        started = time.monotonic()
        path = await dumps.fetch(chosen, sandbox)
        figures["fetch_seconds"] = time.monotonic() - started
        info = await asyncio.to_thread(pgdump.inspect_dump, path)
        if info.format == "gzip":  # a backup this validator cannot restore, not a bad one
            raise ValidatorError("dump_format_unsupported", f"{chosen.name} is gzip-compressed plain SQL: restore "
                                 "drills need pg_dump's custom (-Fc), directory or tar format, or uncompressed SQL")
        if info.format in ("empty", "unknown"):
            code = "dump_empty" if info.format == "empty" else "dump_unreadable"
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, code, "not a pg_dump archive or SQL "
                          "dump" if code == "dump_unreadable" else "the dump is empty", chosen.name)), figures,
                          recovery_point=chosen.mtime)
        if info.format == "plain" and not info.complete:
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, "dump_truncated",
                          "the SQL dump lacks pg_dump's closing 'dump complete' line: it was cut off", chosen.name)),
                          figures, recovery_point=chosen.mtime)

        target = cfg.sandbox
        needed = ("pg_restore", "psql") if isinstance(target, TargetSandbox) else \
            ("initdb", "pg_ctl", "postgres", "pg_restore", "psql")
        bin_dir = await asyncio.to_thread(pgtools.find_bin_dir, target.bin_dir, needed)
        if info.format != "plain":
            # Reads only the archive's table of contents: an archive this pg_restore cannot read (newer
            # format, damaged TOC) is found in milliseconds, before any server is started.
            listing = await pgtools.run_tool([str(bin_dir / "pg_restore"), "--list", str(path)], env=pgtools.tool_env(),
                                             limit=max(1.0, min(300.0, ctx.remaining())), keep_stdout=False)
            if listing.returncode != 0:
                return self._restore_failed(listing, info, chosen, findings, figures)
        if isinstance(target, TargetSandbox):
            params = await self._target(ctx, target, info)
        else:
            params = await self._ephemeral(ctx, target, bin_dir, sandbox, info, path)
        restore = await self._restore(ctx, bin_dir, params, info, path)
        figures["restore_seconds"] = figures["fetch_seconds"] + restore.seconds
        if restore.returncode != 0:
            return self._restore_failed(restore, info, chosen, findings, figures)
        ctx.log.info("drill_restored", seconds=round(restore.seconds, 3), format=info.format)

        checked = time.monotonic()
        try:
            outcome = await self._check(ctx, params, findings, figures)
        except pgtools.CONNECT_ERRORS as exc:
            raise ValidatorError("check_failed", redact(f"checking the restored database failed: "
                                                        f"{type(exc).__name__}: {exc}")) from None
        ctx.log.info("drill_checked", seconds=round(time.monotonic() - checked, 3))
        rto = ctx.asset.rto.total_seconds() if ctx.asset.rto is not None else None
        if rto is not None and figures["restore_seconds"] > rto:
            findings.append(Finding(Severity.WARNING, "rto_exceeded",
                                    f"restore took {format_duration(figures['restore_seconds'])} "
                                    f"(RTO {format_duration(rto)})", chosen.name))
        if any(f.severity == Severity.CRITICAL for f in findings):
            outcome = Outcome.FAILED
        return Report(outcome, tuple(findings), figures, recovery_point=chosen.mtime)

    @staticmethod
    def _restore_failed(res: pgtools.ToolResult, info: pgdump.DumpInfo, chosen: pgdump.RecoveryPoint,
                        findings: list[Finding], figures: dict[str, float]) -> Report:
        """A restore (or archive listing) that failed: the backup's fault (failed) or the sandbox's (error)."""
        code, backup_fault = pgdump.classify_restore_error(res.stderr)
        lines = pgdump.error_lines(res.stderr)
        if code == "dump_newer_than_tools":
            raise ValidatorError(code, f"{res.tool} cannot read this archive (format {info.archive_version or '?'}, "
                                 f"written by pg_dump {info.dump_version or '?'}): it needs newer PostgreSQL tools; "
                                 "set sandbox.bin_dir to a PostgreSQL at least as new as that pg_dump")
        if not backup_fault:
            raise ValidatorError(code, f"{res.tool}: {lines[0]}")
        findings += [Finding(Severity.CRITICAL, code, line, f"{chosen.name}:{res.tool}") for line in lines[:_LISTED]]
        return Report(Outcome.FAILED, tuple(findings), figures, recovery_point=chosen.mtime)

    @staticmethod
    def _version_check(info: pgdump.DumpInfo, server_major: int, where: str) -> None:
        dumped = pgdump.major_of(info.server_version)
        if dumped is not None and dumped > server_major:
            raise ValidatorError("dump_newer_than_sandbox", f"the dump comes from PostgreSQL {info.server_version} "
                                 f"but {where} runs PostgreSQL {server_major}: restore it with PostgreSQL {dumped} "
                                 "or newer (sandbox.bin_dir)")

    async def _ephemeral(self, ctx: RunContext, sb: EphemeralSandbox, bin_dir: Path, sandbox: Path,
                         info: pgdump.DumpInfo, path: Path) -> dict[str, str]:
        self._version_check(info, await pgtools.tool_major(bin_dir, "postgres"), "the sandbox")
        run_as = await asyncio.to_thread(pgcluster.sandbox_user, sb.run_as)  # NSS lookups may block
        if run_as is not None:
            await asyncio.to_thread(pgcluster.open_sandbox_for, sandbox, run_as)
        cluster = pgcluster.EphemeralCluster(bin_dir, sandbox / "pg", run_as)
        # Registered before anything starts: a run cancelled during pg_ctl start still stops the server.
        ctx.exit_stack.push_async_callback(_cleanup, cluster.stop, 60, ctx, "stop sandbox server")
        t0 = time.monotonic()
        await cluster.init(limit=max(1.0, min(300.0, ctx.remaining())))
        t1 = time.monotonic()
        await cluster.start(limit=max(1.0, min(120.0, ctx.remaining())))
        t2 = time.monotonic()
        admin = await pgtools.connect(cluster.params(), code="sandbox_unavailable", what="sandbox server")
        ctx.exit_stack.push_async_callback(_cleanup, functools.partial(pgtools.close_connection, admin), 10, ctx,
                                           "close sandbox connection")
        await admin.execute(f"CREATE DATABASE {DRILL_DB} TEMPLATE template0", timeout=120)
        # Where a drill's time goes (benchmarks/pg_restore_bench.py reads these phases from the log).
        ctx.log.info("drill_sandbox_ready", initdb_seconds=round(t1 - t0, 3), start_seconds=round(t2 - t1, 3),
                     createdb_seconds=round(time.monotonic() - t2, 3))
        if info.format == "plain":  # owners/grantees must exist (archives are restored with --no-owner)
            for role in await asyncio.to_thread(pgdump.plain_dump_roles, path):
                await admin.execute(f"DO $$BEGIN CREATE ROLE {pgtools.quote_ident(role)}; "
                                    "EXCEPTION WHEN duplicate_object THEN NULL; END$$", timeout=30)
        return cluster.params(DRILL_DB)

    async def _target(self, ctx: RunContext, sb: TargetSandbox, info: pgdump.DumpInfo) -> dict[str, str]:
        params = await asyncio.to_thread(sb.params, "sandbox", ctx.config)
        import asyncpg  # imported with the first drill, not with the config (start-up of `drwatch check`)

        admin = await pgtools.connect(params, code="restore_target_unavailable", what="restore target")
        ctx.exit_stack.push_async_callback(_cleanup, functools.partial(pgtools.close_connection, admin), 10, ctx,
                                           "close target connection")
        self._version_check(info, admin.get_server_version().major, "the restore target")
        try:
            await pgtools.hold_run_lock(admin, ctx.run_id)
            await pgtools.drop_orphan_drill_databases(admin, ctx.log.warning)
            name = pgtools.drill_db_name(ctx.run_id)
            # Registered before CREATE DATABASE: a cancellation between the two still drops it (IF EXISTS).
            ctx.exit_stack.push_async_callback(
                _cleanup, functools.partial(pgtools.drop_drill_database, admin, name), 130, ctx, "drop drill database")
            await admin.execute(f"CREATE DATABASE {pgtools.quote_ident(name)} TEMPLATE template0", timeout=120)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ValidatorError("restore_permission_denied", redact(f"restore target: {exc}")) from None
        except pgtools.CONNECT_ERRORS as exc:
            raise ValidatorError("restore_target_unavailable",
                                 redact(f"restore target: {type(exc).__name__}: {exc}")) from None
        return {**params, "dbname": name}

    async def _restore(self, ctx: RunContext, bin_dir: Path, params: dict[str, str], info: pgdump.DumpInfo,
                       path: Path) -> pgtools.ToolResult:
        env = pgtools.libpq_env({k: v for k, v in params.items() if k != "dbname"})
        db = params["dbname"]
        if info.format == "plain":
            argv = [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", str(path)]
        else:
            argv = [str(bin_dir / "pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges", "-d", db]
            if self.cfg.jobs > 1 and info.format in ("custom", "directory"):
                argv += ["-j", str(self.cfg.jobs)]
            argv.append(str(path))
        ctx.log.info("drill_restore_started", tool=Path(argv[0]).name, format=info.format)
        # The run's own deadline ends it first (outcome timeout); this bound is only a backstop.
        return await pgtools.run_tool(argv, env=env, limit=ctx.remaining() + 5, keep_stdout=False)

    async def _check(self, ctx: RunContext, params: dict[str, str], findings: list[Finding],
                     figures: dict[str, float]) -> Outcome:
        import asyncpg

        exp = self.cfg.expect
        conn = await pgtools.connect(params, code="restore_target_unavailable", what="restored database",
                                     read_only=True, statement_timeout=max(1.0, ctx.remaining()))
        ctx.exit_stack.push_async_callback(_cleanup, functools.partial(pgtools.close_connection, conn), 10, ctx,
                                           "close restored connection")
        counts, rows = await pgtools.table_counts(conn, _limit(ctx))
        figures["rows_restored"] = float(rows)
        figures["tables_restored"] = float(len(counts))
        excluded = {pgtools.split_table(t) for t in exp.exclude_tables}
        empty = ("the restored database holds no tables" if not counts else
                 f"the restored database holds no rows in its {len(counts)} table(s)") if rows == 0 else None

        def bad(code: str, message: str, subject: str) -> None:
            findings.append(Finding(Severity.CRITICAL, code, message, subject))

        listed = [pgtools.split_table(t) for t in exp.tables]
        listed += [t for t in map(pgtools.split_table, exp.row_counts) if t not in listed]
        for table in listed:
            if table not in counts:
                bad("table_missing", "expected table is not in the restored database", pgtools.table_label(table))
        for name, n in exp.row_counts.items():
            table = pgtools.split_table(name)
            got = counts.get(table)
            if got is not None and got < n - exp.allowed(n):
                bad("row_count_low", f"{got} rows restored, expected at least ~{n}", pgtools.table_label(table))

        for a in exp.assertions:
            label = a.name or a.query[:60]
            try:
                async with conn.transaction(readonly=True):
                    value = await conn.fetchval(a.query, timeout=_limit(ctx))
            except asyncpg.PostgresSyntaxError as exc:
                raise ValidatorError("assertion_invalid", f"assertion {label!r}: {exc}") from None
            except asyncpg.PostgresError as exc:
                bad("assertion_failed", f"query failed on the restored database: {exc}", label)
                continue
            if not _compare(a.expect.op, value, a.expect.value):
                bad("assertion_failed", f"got {value!r}, expected {a.expect.op} {a.expect.value!r}", label)

        if self.cfg.production is None:
            if empty is not None and not exp.allow_empty:
                bad("restore_empty", f"{empty}: a dump of an empty or the wrong database, or no dump at all "
                    "(set expect.allow_empty if an empty database is what the backup should hold)", "restore")
            return Outcome.OK
        # Row counts of every restored table (or of the listed ones), plus checksum tables; production's
        # tables with rows that the restore lacks are looked for separately.
        compare = list(listed or counts)
        if exp.checksums is not None:
            compare += [t for t in map(pgtools.split_table, exp.checksums.tables) if t not in compare]
        compare = [t for t in compare if t in counts and t not in excluded]
        try:
            production_rows = await self._production(ctx, conn, counts, compare, excluded, findings)
        except ValidatorError as exc:
            findings.append(Finding(Severity.WARNING, exc.code, exc.message, "production"))
            return Outcome.ERROR
        if empty is not None and production_rows:
            bad("restore_empty", f"{empty}, production has rows: a dump of an empty or the wrong database",
                "restore")
        return Outcome.OK

    async def _production(self, ctx: RunContext, restored: Any, counts: dict[tuple[str, str], int],
                          tables: list[tuple[str, str]], excluded: set[tuple[str, str]],
                          findings: list[Finding]) -> bool:
        """Compare with production over a read-only session, in one read-only snapshot: every production
        table with rows (less ``excluded``) must have been restored; ``tables`` are compared by row count
        (and checksum). Returns whether production holds rows in a table that is not excluded."""
        assert self.cfg.production is not None
        exp = self.cfg.expect
        params = await asyncio.to_thread(self.cfg.production.params, "production", ctx.config)
        prod = await pgtools.connect(params, code="production_unavailable", what="production", read_only=True,
                                     statement_timeout=max(1.0, min(600.0, ctx.remaining())))
        ctx.exit_stack.push_async_callback(_cleanup, functools.partial(pgtools.close_connection, prod), 10, ctx,
                                           "close production connection")
        sums = {pgtools.split_table(t) for t in (exp.checksums.tables if exp.checksums else [])}
        production_rows = False
        try:
            async with prod.transaction(readonly=True, isolation="repeatable_read"):
                unreadable = []
                for table in await pgtools.user_tables(prod, _limit(ctx)):
                    if table in excluded:
                        continue
                    if not await pgtools.can_select(prod, table, _limit(ctx)):
                        unreadable.append(pgtools.table_label(table))  # whether it has rows is not known
                        continue
                    if not await pgtools.has_rows(prod, table, _limit(ctx)):
                        continue
                    production_rows = True
                    label = pgtools.table_label(table)
                    if table not in counts and ("table_missing", label) not in {(f.code, f.subject) for f in findings}:
                        findings.append(Finding(Severity.CRITICAL, "table_missing", "production has rows in "
                                                "this table, the backup does not hold it (expect.exclude_tables "
                                                "lists tables a backup may leave out)", label))
                if unreadable:
                    shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5
                                                         else "")
                    findings.append(Finding(Severity.WARNING, "production_table_unreadable",
                                            f"production's role may not read {shown}: not required in the backup "
                                            "(GRANT SELECT, or list them in expect.exclude_tables)", "production"))
                for table in tables:
                    label = pgtools.table_label(table)
                    if await prod.fetchval("SELECT to_regclass($1)", pgtools.qualified(table),
                                           timeout=_limit(ctx)) is None:
                        findings.append(Finding(Severity.WARNING, "production_table_missing",
                                                "table restored from the backup does not exist in production", label))
                        continue
                    live = int(await prod.fetchval(f"SELECT count(*) FROM {pgtools.qualified(table)}",
                                                   timeout=_limit(ctx)))
                    got = counts[table]
                    if got == 0 and live > 0:
                        findings.append(Finding(Severity.CRITICAL, "table_empty",
                                                f"restored empty, production has {live} rows", label))
                    elif got < live - exp.allowed(live):
                        findings.append(Finding(Severity.CRITICAL, "row_count_low",
                                                f"{got} rows restored, production has {live}", label))
                    elif got > live + exp.allowed(live):
                        findings.append(Finding(Severity.WARNING, "production_shrank",
                                                f"the backup holds {got} rows, production only {live}: rows were "
                                                "deleted in production since the backup", label))
                    if table in sums and exp.checksums is not None:
                        if max(got, live) > exp.checksums.max_rows:
                            findings.append(Finding(Severity.INFO, "checksum_skipped",
                                                    f"more than {exp.checksums.max_rows} rows", label))
                            continue
                        # Both sides at once (two servers, two connections): the slower one sets the time.
                        keys = await pgtools.primary_key(restored, table, _limit(ctx))
                        ours, theirs = await _both(pgtools.table_checksum(restored, table, _limit(ctx), keys=keys),
                                                   pgtools.table_checksum(prod, table, _limit(ctx), keys=keys))
                        if ours != theirs:
                            findings.append(Finding(Severity.CRITICAL, "checksum_mismatch",
                                                    "the restored rows differ from production's", label))
        except pgtools.CONNECT_ERRORS as exc:
            raise ValidatorError("production_unavailable", redact(f"production: {type(exc).__name__}: {exc}")) \
                from None
        return production_rows


async def _both(first: Awaitable[str], second: Awaitable[str]) -> tuple[str, str]:
    """Run two queries concurrently; when one fails (or the run is cancelled) the other is cancelled and
    awaited before the error propagates: nothing is left running on a connection."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        a, b = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return a, b


def _limit(ctx: RunContext) -> float:
    """Client-side bound of one query: what is left of the run (the server also has statement_timeout)."""
    return max(1.0, ctx.remaining())


PLUGIN = Plugin(PostgresRestoreConfig, PostgresRestoreValidator)
