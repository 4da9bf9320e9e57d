"""Validator ``redis_restore``: restore the newest Redis snapshot into a throwaway redis-server and compare it with
production.

Recovery points are the entries under ``location``/``prefix`` whose name matches ``pattern``: RDB files, and
Redis 7 multi-part AOF directories (an ``appendonlydir`` copied as a folder, or an S3 prefix, holding one
``*.manifest``). The newest is fetched (S3: streamed into the run's sandbox), checked with ``redis-check-rdb`` /
``redis-check-aof`` (never ``--fix``) and loaded into a throwaway ``redis-server`` started in the sandbox (no
TCP port: a unix socket; persistence off; killed, and the sandbox removed, on success, failure, timeout and
cancellation; the start-up sweep kills one a crashed daemon left). The recovery point is the snapshot's own
creation time: the RDB aux field ``ctime`` (an AOF: its newest ``#TS:`` annotation, else its base's ``ctime``),
the file time only for a snapshot that records none.

With ``production`` (a ``redis://``, ``rediss://`` or ``unix://`` URL from a secret), production is read with
read-only commands only (``INFO``, ``RANDOMKEY``, ``TYPE``, ``STRLEN``/``LLEN``/``HLEN``/``SCARD``/``ZCARD``/
``XLEN``): the key count of each database against ``INFO keyspace`` within ``tolerance``, and a random sample of
production's keys, which must be in the restore with the same type. Production keeps changing while it is
watched: keys written since the snapshot are legitimately missing from it, so the sample fails only when the
share of missing or retyped keys is above ``tolerance`` with 99.9 % confidence (Wilson bound: a sample never
pages by chance), and sizes differing are reported, never failed.

Outcomes: ``failed`` when no snapshot is there, the snapshot is truncated or corrupt (the check tool or the load
rejects it), empty (``allow_empty`` aside), older than the RPO, or holds too few keys; ``error`` when it could not
be checked (tools missing, a snapshot format newer than the tools, the location, the sandbox or production
unavailable, not enough memory to load it).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from drwatch.core.durations import format_duration
from drwatch.core.errors import ValidatorError
from drwatch.core.extras import REDIS
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.core.subprocesses import run_tool, unwind
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.validators.base import RunContext
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.plugin import Family, Latest, Plugin, Sample
from drwatch.validators.postgres import pgdump, pgtools
from drwatch.validators.redisdb import production, server, snapshot
from drwatch.validators.redisdb.config import RedisRestoreConfig


class RedisRestoreValidator:
    kind: ClassVar[str] = "redis_restore"

    def __init__(self, cfg: RedisRestoreConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        cfg = self.cfg
        if missing := await asyncio.to_thread(REDIS.missing):
            raise ValidatorError("extra_missing", f"Redis drills need {', '.join(missing)} (redis-py): install the "
                                 f"`{REDIS.name}` extra: {REDIS.install}")
        where_ = snapshot.snapshots_at(ctx.config, ctx.s3, cfg.location, cfg.prefix, cfg.pattern)
        points = await snapshot.list_points(where_)
        where = f"{cfg.location}:{cfg.prefix or '/'}"
        if not points:
            why = "does not exist" if points is None else f"holds no snapshot matching {cfg.pattern!r}"
            return Report(Outcome.FAILED, (Finding(Severity.CRITICAL, "no_recovery_point", f"{where} {why}"),))
        findings: list[Finding] = []
        future = FutureTimes.at(ctx)
        points = [p for p in points if future.believe(p.name, p.mtime)]
        if (ahead := future.finding(where, "snapshot(s)")) is not None:
            findings.append(ahead)
        if not points:
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, "no_recovery_point",
                                                              f"{where} holds no snapshot with a believable time")))
        chosen = max(points, key=lambda p: (p.mtime, p.name))
        figures: dict[str, float] = {"bytes": float(chosen.size)}
        ctx.log.info("redis_recovery_point", snapshot=chosen.name, size=chosen.size, candidates=len(points))

        sandbox = await ctx.exit_stack.enter_async_context(ctx.sandboxes.directory(ctx.run_id))
        started = time.monotonic()
        path = await where_.fetch(chosen, sandbox)
        figures["fetch_seconds"] = time.monotonic() - started
        try:
            info = await asyncio.to_thread(snapshot.inspect_snapshot, path)
        except OSError as exc:  # denied, gone since listed, an I/O error: the place, not the backup
            raise ValidatorError("location_unavailable", f"cannot read {where}/{chosen.name}: "
                                 f"{exc.strerror or exc}") from None
        recovery_point = self._recovery_point(ctx, info, chosen, figures, findings)
        if info.format not in ("rdb", "aof"):
            what = "the file is empty" if info.format == "empty" else \
                (f"an AOF directory with {info.problem}" if info.problem else "not an RDB file (no REDIS header)")
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, "snapshot_unreadable", what,
                                                              chosen.name)), figures, recovery_point=recovery_point)

        try:
            bin_dir = await self._check(ctx, sandbox, chosen, path, info, figures)
            await self._memory_guard(info)
            restored, load = await self._load(ctx, bin_dir, sandbox, chosen, path, info)
        except _Rejected as exc:
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, exc.code, exc.message, chosen.name)),
                          figures, recovery_point=recovery_point)
        figures["restore_seconds"] = figures["fetch_seconds"] + figures["check_seconds"] + load
        ctx.log.info("redis_restored", seconds=round(load, 3), format=info.format)
        outcome = await production.compare(ctx, cfg, restored, findings, figures)
        self._rto(ctx, figures["restore_seconds"], chosen, findings)
        if any(f.severity == Severity.CRITICAL for f in findings):
            outcome = Outcome.FAILED
        return Report(outcome, tuple(findings), figures, recovery_point=recovery_point)

    def _recovery_point(self, ctx: RunContext, info: snapshot.SnapshotInfo, chosen: pgdump.RecoveryPoint,
                        figures: dict[str, float], findings: list[Finding]) -> float | None:
        """The snapshot's own creation time (its file time when it records none), judged against the RPO."""
        future = FutureTimes.at(ctx)
        when = info.created if info.created is not None else chosen.mtime
        if not future.believe(chosen.name, when):
            findings.append(Finding(Severity.CRITICAL, "time_in_future", "the snapshot says it was made "
                                    f"{format_duration(when - ctx.clock())} in the future: no believable recovery "
                                    "point", chosen.name))
            return None
        if info.format in ("rdb", "aof") and info.created is None:
            findings.append(Finding(Severity.INFO, "snapshot_time_from_file", "the snapshot records no creation "
                                    "time: its file time stands for it", chosen.name))
        age = max(0.0, ctx.clock() - when)
        figures["recovery_point_age_seconds"] = age
        if age > ctx.asset.rpo.total_seconds():
            rpo = format_duration(ctx.asset.rpo.total_seconds())
            findings.append(Finding(Severity.CRITICAL, "rpo_exceeded", f"newest snapshot {chosen.name} was made "
                                    f"{format_duration(age)} ago (RPO {rpo})", chosen.name))
        return when

    async def _check(self, ctx: RunContext, sandbox: Path, chosen: pgdump.RecoveryPoint, path: Path,
                     info: snapshot.SnapshotInfo, figures: dict[str, float]) -> Path:
        """``redis-check-rdb`` / ``redis-check-aof`` on the snapshot (never ``--fix``); the tools' directory."""
        checker = "redis-check-aof" if info.format == "aof" else "redis-check-rdb"
        bin_dir = await asyncio.to_thread(server.find_tools, self.cfg.bin_dir, ("redis-server", checker))
        target = path / info.manifest if info.format == "aof" else path
        checked = await run_tool([str(bin_dir / checker), str(target)], env=pgtools.tool_env(),
                                 limit=max(1.0, ctx.remaining()), cwd=sandbox)
        figures["check_seconds"] = checked.seconds
        output = checked.stdout + checked.stderr
        if checked.returncode != 0:
            code, fault = server.check_verdict(output)
            if not fault:
                raise ValidatorError(code, f"{checker} cannot read {chosen.name}: {server.error_lines(output)}")
            raise _Rejected(code, f"{checker}: {server.error_lines(output)}")
        if (n := server.keys_read(output)) is not None and info.format == "rdb":
            figures["keys_checked"] = float(n)
        return bin_dir

    @staticmethod
    def _rto(ctx: RunContext, seconds: float, chosen: pgdump.RecoveryPoint, findings: list[Finding]) -> None:
        rto = ctx.asset.rto.total_seconds() if ctx.asset.rto is not None else None
        if rto is not None and seconds > rto:
            findings.append(Finding(Severity.WARNING, "rto_exceeded", f"restore took {format_duration(seconds)} "
                                    f"(RTO {format_duration(rto)})", chosen.name))

    @staticmethod
    async def _memory_guard(info: snapshot.SnapshotInfo) -> None:
        need, free = info.used_memory, await asyncio.to_thread(snapshot.memory_available)
        if need is not None and free is not None and need > free:
            raise ValidatorError("sandbox_memory", f"the snapshot was taken from a server using {need} bytes, this "
                                 f"host has {free} available: it cannot be loaded here")

    async def _load(self, ctx: RunContext, bin_dir: Path, sandbox: Path, chosen: pgdump.RecoveryPoint, path: Path,
                    info: snapshot.SnapshotInfo) -> tuple[server.Sandboxed, float]:
        """Start the throwaway server on the snapshot; (the server, loaded, and the seconds it took)."""
        local = isinstance(ctx.config.locations[self.cfg.location], FilesystemLocationConfig)
        data_dir = await snapshot.stage(chosen, path, sandbox, local)
        srv = server.Sandboxed(bin_dir, sandbox)
        # Registered before the server starts: a run cut off at any point kills it.
        ctx.exit_stack.push_async_callback(_cleanup, srv.stop, 30, ctx)
        argv = srv.argv(data_dir, chosen.name, info.manifest if info.format == "aof" else "", self.cfg.databases)
        started = time.monotonic()
        await srv.start(argv, data_dir)
        loop = asyncio.get_running_loop()
        try:
            await srv.wait_loaded(loop.time() + max(1.0, ctx.remaining()))
        except server.ServerExited as exc:
            log = await asyncio.to_thread(srv.log_tail)
            code, fault = server.check_verdict(log)
            message = f"redis-server could not load {chosen.name} ({exc}): {server.error_lines(log)}"
            if code == "databases_too_few":
                raise ValidatorError(code, f"{message} (set `databases` to production's)") from None
            if fault and re.search(r"load|RDB|AOF|Bad file format|Short read|checksum", log, re.I):
                raise _Rejected(code, message) from None
            raise ValidatorError("sandbox_server_failed", message) from None
        return srv, time.monotonic() - started


class _Rejected(ValidatorError):
    """The check tool, or redis-server loading a snapshot the check tool passed, rejected it: a bad backup."""


async def _cleanup(fn: Any, within: float, ctx: RunContext) -> None:
    try:
        await unwind(fn(), within)
    except Exception as exc:  # cleanup must not replace the run's result
        ctx.log.warning("drill_cleanup_failed", step="stop sandbox redis-server", error=f"{type(exc).__name__}: {exc}")


KEYS = Family("drwatch_redis_keys", "Keys in the Redis snapshot restored by the latest drill (source=snapshot) and "
              "in production at that time (source=production).", ("asset", "validator", "source"))
SAMPLE_BAD = Family("drwatch_redis_sample_bad_ratio", "Share of production keys sampled by the latest Redis restore "
                    "drill that were missing from the snapshot or of another type.", ("asset", "validator"))


def project(latest: Sequence[Latest]) -> Iterator[Sample]:
    """Per validator: the keys restored and in production, the share of bad sampled keys."""
    for asset, vcfg, result in latest:
        fig = result.figures
        for source, name in (("snapshot", "keys_restored"), ("production", "keys_production")):
            if name in fig:
                yield KEYS.name, (asset, vcfg.label, source), fig[name]
        if fig.get("sample_keys"):
            bad = fig.get("sample_missing", 0.0) + fig.get("sample_type_mismatch", 0.0)
            yield SAMPLE_BAD.name, (asset, vcfg.label), bad / fig["sample_keys"]


PLUGIN = Plugin(RedisRestoreConfig, RedisRestoreValidator, (KEYS, SAMPLE_BAD), project)
