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
  :mod:`drwatch.validators.postgres.drill`).

Then the restored database is checked (:mod:`drwatch.validators.postgres.proofs`): expected tables, row
counts against ``expect.row_counts`` and the production database, per-table checksums and SQL assertions;
with ``production``, every production table that holds rows must come back, so a dump of the wrong or an
empty database fails without any ``expect`` list.

Outcomes: ``failed`` when the dump is missing, truncated/corrupt, does not restore, or a check fails;
``error`` when it could not be checked (tools missing, the dump needs newer PostgreSQL tools than the
sandbox has, restore target or production down). Restore time above the asset's RTO adds ``rto_exceeded``
(warning) without changing the outcome.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.core.secrets import redact
from drwatch.core.subprocesses import ToolResult, run_tool
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.plugin import Plugin
from drwatch.validators.postgres import drill, pgcluster, pgdump, pgtools, restore_errors
from drwatch.validators.postgres.drill import EphemeralSandbox, SandboxConfig, TargetSandbox
from drwatch.validators.postgres.orphans import stop_orphaned_servers
from drwatch.validators.postgres.proofs import ExpectConfig, Proof

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

_LISTED = 10  # error lines of a failed restore reported one by one


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


class PostgresRestoreValidator:
    kind: ClassVar[str] = "postgres_restore"

    def __init__(self, cfg: PostgresRestoreConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        cfg = self.cfg
        dumps = pgdump.dumps_at(ctx.config, ctx.s3, cfg.location, cfg.prefix, cfg.pattern)
        picked = await self._pick(ctx, dumps)
        if isinstance(picked, Report):
            return picked
        chosen, findings, figures = picked
        fetched = await self._fetch(ctx, dumps, chosen, findings, figures)
        if isinstance(fetched, Report):
            return fetched
        sandbox, path, info = fetched
        prepared = await self._prepare(ctx, sandbox, path, info, chosen, findings, figures)
        if isinstance(prepared, Report):
            return prepared
        bin_dir, params = prepared
        restore = await self._restore(ctx, bin_dir, params, info, path)
        figures["restore_seconds"] = figures["fetch_seconds"] + restore.seconds
        if restore.returncode != 0:
            return self._restore_failed(restore, info, chosen, findings, figures)
        ctx.log.info("drill_restored", seconds=round(restore.seconds, 3), format=info.format)

        checked = time.monotonic()
        try:
            outcome = await Proof(ctx, cfg.expect, cfg.production, findings, figures).check(params)
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

    async def _pick(self, ctx: RunContext, dumps: pgdump.FilesystemDumps | pgdump.S3Dumps) -> \
            tuple[pgdump.RecoveryPoint, list[Finding], dict[str, float]] | Report:
        """The dump to restore (``pick``), with the findings and figures of the listing (RPO, future times)."""
        cfg = self.cfg
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
        ctx.log.info("drill_recovery_point", dump=chosen.name, size=chosen.size, candidates=len(points))
        return chosen, findings, {"bytes": float(chosen.size), "recovery_point_age_seconds": age}

    async def _fetch(self, ctx: RunContext, dumps: pgdump.FilesystemDumps | pgdump.S3Dumps,
                     chosen: pgdump.RecoveryPoint, findings: list[Finding],
                     figures: dict[str, float]) -> tuple[Path, Path, pgdump.DumpInfo] | Report:
        """The dump in the run's sandbox and its format; a dump that is no restorable dump is ``failed``."""
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
        return sandbox, path, info

    async def _prepare(self, ctx: RunContext, sandbox: Path, path: Path, info: pgdump.DumpInfo,
                       chosen: pgdump.RecoveryPoint, findings: list[Finding],
                       figures: dict[str, float]) -> tuple[Path, dict[str, str]] | Report:
        """The tools, a readable archive, and the empty database to restore into."""
        target = self.cfg.sandbox
        needed = ("pg_restore", "psql") if isinstance(target, TargetSandbox) else \
            ("initdb", "pg_ctl", "postgres", "pg_restore", "psql")
        bin_dir = await asyncio.to_thread(pgtools.find_bin_dir, target.bin_dir, needed)
        if info.format != "plain":
            # Reads only the archive's table of contents: an archive this pg_restore cannot read (newer
            # format, damaged TOC) is found in milliseconds, before any server is started.
            listing = await run_tool([str(bin_dir / "pg_restore"), "--list", str(path)], env=pgtools.tool_env(),
                                     limit=max(1.0, min(300.0, ctx.remaining())), keep_stdout=False)
            if listing.returncode != 0:
                return self._restore_failed(listing, info, chosen, findings, figures)
        if isinstance(target, TargetSandbox):
            return bin_dir, await self._target(ctx, target, info)
        return bin_dir, await self._ephemeral(ctx, target, bin_dir, sandbox, info, path)

    @staticmethod
    def _restore_failed(res: ToolResult, info: pgdump.DumpInfo, chosen: pgdump.RecoveryPoint,
                        findings: list[Finding], figures: dict[str, float]) -> Report:
        """A restore (or archive listing) that failed: the backup's fault (failed) or the sandbox's (error)."""
        code, backup_fault = restore_errors.classify_restore_error(res.stderr)
        lines = restore_errors.error_lines(res.stderr)
        if code == "dump_newer_than_tools":
            raise ValidatorError(code, f"{res.tool} cannot read this archive (format {info.archive_version or '?'}, "
                                 f"written by pg_dump {info.dump_version or '?'}): it needs newer PostgreSQL tools; "
                                 "set sandbox.bin_dir to a PostgreSQL at least as new as that pg_dump")
        if not backup_fault:
            raise ValidatorError(code, f"{res.tool}: {lines[0]}")
        findings += [Finding(Severity.CRITICAL, code, line, f"{chosen.name}:{res.tool}") for line in lines[:_LISTED]]
        return Report(Outcome.FAILED, tuple(findings), figures, recovery_point=chosen.mtime)

    async def _ephemeral(self, ctx: RunContext, sb: EphemeralSandbox, bin_dir: Path, sandbox: Path,
                         info: pgdump.DumpInfo, path: Path) -> dict[str, str]:
        drill.check_version(info.server_version, await pgtools.tool_major(bin_dir, "postgres"), "the sandbox",
                            _NEWER_HINT)
        run_as = await asyncio.to_thread(pgcluster.sandbox_user, sb.run_as)  # NSS lookups may block
        admin, params = await drill.ephemeral_database(ctx, bin_dir, sandbox, run_as)
        if info.format == "plain":  # owners/grantees must exist (archives are restored with --no-owner)
            for role in await asyncio.to_thread(pgdump.plain_dump_roles, path):
                await admin.execute(f"DO $$BEGIN CREATE ROLE {pgtools.quote_ident(role)}; "
                                    "EXCEPTION WHEN duplicate_object THEN NULL; END$$", timeout=30)
        return params

    async def _target(self, ctx: RunContext, sb: TargetSandbox, info: pgdump.DumpInfo) -> dict[str, str]:
        params = await asyncio.to_thread(sb.params, "sandbox", ctx.config)

        async def new_enough(admin: Any) -> None:
            drill.check_version(info.server_version, admin.get_server_version().major, "the restore target",
                                _NEWER_HINT)

        return await drill.target_database(ctx, params, prepare=new_enough)

    async def _restore(self, ctx: RunContext, bin_dir: Path, params: dict[str, str], info: pgdump.DumpInfo,
                       path: Path) -> ToolResult:
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
        return await run_tool(argv, env=env, limit=ctx.remaining() + 5, keep_stdout=False)


_NEWER_HINT = "restore it with PostgreSQL {dumped} or newer (sandbox.bin_dir)"


PLUGIN = Plugin(PostgresRestoreConfig, PostgresRestoreValidator, orphans=stop_orphaned_servers)
