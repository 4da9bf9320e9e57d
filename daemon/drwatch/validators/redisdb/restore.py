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
import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drwatch.core.durations import format_duration
from drwatch.core.errors import ConfigError, ConfigProblem, ValidatorError
from drwatch.core.extras import REDIS, Need
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.core.secrets import read_secret, redact, register_dsn_password
from drwatch.core.subprocesses import run_tool, unwind
from drwatch.core.textsafe import escape
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.plugin import Family, Latest, Plugin, Sample
from drwatch.validators.postgres import pgdump, pgtools
from drwatch.validators.redisdb import server, snapshot

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

Z_SAMPLE = 3.09  # one-sided 99.9 %: a sample fails only when the bad share is above tolerance with that confidence
_SIZE_COMMANDS = {b"string": "STRLEN", b"list": "LLEN", b"hash": "HLEN", b"set": "SCARD", b"zset": "ZCARD",
                  b"stream": "XLEN"}
_SHOWN = 3  # example keys named in a finding


class RedisRef(BaseModel):
    """Where production's URL is: ``url_env`` (an environment variable) or ``url_file``; never inline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url_env: str | None = None
    url_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> RedisRef:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("set exactly one of url_env (environment variable) or url_file (file path)")
        return self

    def url(self, cfg: ConfigView) -> str:
        try:
            url = read_secret("production", env=self.url_env, file=self.url_file, base_dir=cfg.base_dir).strip()
        except ConfigError as exc:
            raise ValidatorError("secret_unavailable", "; ".join(str(p) for p in exc.problems)) from None
        register_dsn_password(url)
        if not re.match(r"(rediss?|unix)://", url):
            raise ValidatorError("url_invalid", "production: a redis://, rediss:// or unix:// URL is expected")
        return url


class RedisRestoreConfig(ValidatorConfigBase):
    kind: Literal["redis_restore"] = "redis_restore"
    location: str
    prefix: pgdump.DumpPrefix = ""
    pattern: pgdump.DumpPattern = "*"
    production: RedisRef | None = None
    tolerance: float | str = 0.05  # a fraction of production's keys, or "N keys"
    sample: int = Field(default=200, ge=0, le=100_000)  # production keys sampled (0: counts only)
    allow_empty: bool = False  # a snapshot holding no key passes (without production)
    databases: int = Field(default=16, ge=1, le=100_000)  # the sandbox server's (production's ``databases``)
    bin_dir: str | None = None  # redis-server, redis-check-rdb, redis-check-aof (default: PATH)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: Any) -> float | str:
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*keys?\s*", value):
            return value.strip()
        raise ValueError("tolerance is a fraction of production's keys (0.05 = 5%) or a key count ('100 keys')")

    def allowed(self, reference: int) -> float:
        """Keys a count may differ from ``reference`` by."""
        if isinstance(self.tolerance, str):
            return float(re.sub(r"\D", "", self.tolerance))
        return self.tolerance * reference

    def locations(self, asset: AssetView) -> list[str]:
        return [self.location]

    def needs(self) -> list[Need]:
        return [Need("", REDIS, "extra_missing", "the restored server and production are read with redis-py")]

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        if self.location not in cfg.locations:
            return [ConfigProblem("location", f"unknown location {self.location!r} "
                                              f"(known: {', '.join(sorted(cfg.locations)) or 'none'})")]
        return []


def wilson_lower(bad: int, n: int, z: float = Z_SAMPLE) -> float:
    """Lower bound of the share of bad keys given ``bad`` of ``n`` sampled (Wilson score interval)."""
    if n == 0:
        return 0.0
    p = bad / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def _keyspace(info: dict[str, Any]) -> dict[int, int]:
    out = {}
    for name, value in info.items():
        if re.fullmatch(r"db\d+", str(name)) and isinstance(value, dict):
            out[int(str(name)[2:])] = int(value.get("keys", 0))
    return out


def _show(key: bytes) -> str:
    text = escape(key.decode("utf-8", errors="backslashreplace"))
    return text if len(text) <= 60 else text[:57] + "..."


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
        info = await asyncio.to_thread(snapshot.inspect_snapshot, path)
        recovery_point = self._recovery_point(ctx, info, chosen, figures, findings)
        if info.format not in ("rdb", "aof"):
            what = "the file is empty" if info.format == "empty" else \
                (f"an AOF directory with {info.problem}" if info.problem else "not an RDB file (no REDIS header)")
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, "snapshot_unreadable", what,
                                                              chosen.name)), figures, recovery_point=recovery_point)

        checker = "redis-check-aof" if info.format == "aof" else "redis-check-rdb"
        bin_dir = await asyncio.to_thread(server.find_tools, cfg.bin_dir, ("redis-server", checker))
        target = path / info.manifest if info.format == "aof" else path
        checked = await run_tool([str(bin_dir / checker), str(target)], env=pgtools.tool_env(),
                                         limit=max(1.0, ctx.remaining()), cwd=sandbox)
        figures["check_seconds"] = checked.seconds
        output = checked.stdout + checked.stderr
        if checked.returncode != 0:
            code, fault = server.check_verdict(output)
            if not fault:
                raise ValidatorError(code, f"{checker} cannot read {chosen.name}: {server.error_lines(output)}")
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, code, f"{checker}: "
                          f"{server.error_lines(output)}", chosen.name)), figures, recovery_point=recovery_point)
        if (n := server.keys_read(output)) is not None and info.format == "rdb":
            figures["keys_checked"] = float(n)

        await self._memory_guard(info)
        try:
            restored, load = await self._load(ctx, bin_dir, sandbox, chosen, path, info)
        except _LoadFailed as exc:
            return Report(Outcome.FAILED, (*findings, Finding(Severity.CRITICAL, exc.code, exc.message, chosen.name)),
                          figures, recovery_point=recovery_point)
        figures["restore_seconds"] = figures["fetch_seconds"] + figures["check_seconds"] + load
        ctx.log.info("redis_restored", seconds=round(load, 3), format=info.format)
        outcome = await self._compare(ctx, restored, findings, figures)
        rto = ctx.asset.rto.total_seconds() if ctx.asset.rto is not None else None
        if rto is not None and figures["restore_seconds"] > rto:
            findings.append(Finding(Severity.WARNING, "rto_exceeded", f"restore took "
                                    f"{format_duration(figures['restore_seconds'])} (RTO {format_duration(rto)})",
                                    chosen.name))
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
                raise _LoadFailed(code, message) from None
            raise ValidatorError("sandbox_server_failed", message) from None
        return srv, time.monotonic() - started

    async def _compare(self, ctx: RunContext, restored: server.Sandboxed, findings: list[Finding],
                       figures: dict[str, float]) -> Outcome:
        from redis.exceptions import RedisError

        try:
            ours = _keyspace(await restored.client.info("keyspace"))
        except (RedisError, OSError) as exc:
            raise ValidatorError("sandbox_server_failed", f"the sandbox server: {type(exc).__name__}: {exc}") \
                from None
        figures["keys_restored"] = float(sum(ours.values()))
        if self.cfg.production is None:
            if not ours and not self.cfg.allow_empty:
                findings.append(Finding(Severity.CRITICAL, "restore_empty", "the snapshot holds no key (set "
                                        "allow_empty if an empty snapshot is what the backup should hold)",
                                        "restore"))
            return Outcome.OK
        try:
            await self._production(ctx, restored, ours, findings, figures)
        except ValidatorError as exc:
            findings.append(Finding(Severity.WARNING, exc.code, exc.message, "production"))
            return Outcome.ERROR
        return Outcome.OK

    async def _production(self, ctx: RunContext, restored: server.Sandboxed, ours: dict[int, int],
                          findings: list[Finding], figures: dict[str, float]) -> None:
        """Key counts per database and a sample of production's keys, with read-only commands only."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        assert self.cfg.production is not None
        url = await asyncio.to_thread(self.cfg.production.url, ctx.config)
        limit = max(1.0, min(30.0, ctx.remaining()))

        def client(db: int) -> Any:
            return aioredis.Redis.from_url(url, db=db, socket_timeout=limit, socket_connect_timeout=min(limit, 10.0),
                                           single_connection_client=True, **server.quiet_client())

        try:
            prod = client(0)
            ctx.exit_stack.push_async_callback(_close, prod)
            if int((await prod.info("cluster")).get("cluster_enabled", 0)) == 1:
                raise ValidatorError("production_cluster_unsupported", "production is a Redis Cluster node: "
                                     "point production at one node of a non-clustered server")
            theirs = _keyspace(await prod.info("keyspace"))
            figures["keys_production"] = float(sum(theirs.values()))
            for db in sorted(set(ours) | set(theirs)):
                got, live = ours.get(db, 0), theirs.get(db, 0)
                allowed = self.cfg.allowed(live)
                if got < live - allowed:
                    findings.append(Finding(Severity.CRITICAL, "key_count_low", f"{got} keys restored, production "
                                            f"has {live} (tolerance {allowed:.0f})", f"db{db}"))
                elif got > live + allowed:
                    findings.append(Finding(Severity.WARNING, "production_shrank", f"the snapshot holds {got} keys, "
                                            f"production only {live}: keys were removed or expired since", f"db{db}"))
            total = sum(theirs.values())
            if self.cfg.sample and total:
                await self._sample(theirs, total, client, restored.connect, findings, figures)
        except (RedisError, OSError) as exc:
            raise ValidatorError("production_unavailable", redact(f"production: {type(exc).__name__}: {exc}")) \
                from None

    async def _sample(self, theirs: dict[int, int], total: int, client: Callable[[int], Any],
                      restored: Callable[[int], Any], findings: list[Finding], figures: dict[str, float]) -> None:
        """RANDOMKEY in production per database (in proportion to its keys), then each key's type and size on
        both sides. A key missing from the restore or of another type counts against the snapshot."""
        n = bad_missing = bad_type = 0
        sizes = [0, 0]  # restored, production (elements or bytes of the keys present on both sides)
        examples: list[str] = []
        for db, keys in sorted(theirs.items()):
            want = min(keys, max(1, math.ceil(self.cfg.sample * keys / total)))
            prod = client(db)
            try:
                async with prod.pipeline(transaction=False) as pipe:
                    for _ in range(want):
                        pipe.randomkey()
                    picked = list(dict.fromkeys(k for k in await pipe.execute() if k is not None))
                prod_types = await _types_and_sizes(prod, picked)
            finally:
                await _close(prod)
            ours_conn = restored(db)
            try:
                ours = await _types_and_sizes(ours_conn, picked)
            finally:
                await _close(ours_conn)
            for key, (ptype, psize), (rtype, rsize) in zip(picked, prod_types, ours, strict=True):
                if ptype == b"none":
                    continue  # expired or deleted between RANDOMKEY and TYPE
                n += 1
                if rtype != ptype:
                    if rtype == b"none":
                        bad_missing += 1
                    else:
                        bad_type += 1
                    if len(examples) < _SHOWN:
                        examples.append(f"db{db}:{_show(key)}")
                elif psize >= 0 and rsize >= 0:
                    sizes[0] += rsize
                    sizes[1] += psize
        figures.update(sample_keys=float(n), sample_missing=float(bad_missing), sample_type_mismatch=float(bad_type))
        if sizes[1]:
            figures["sample_size_ratio"] = sizes[0] / sizes[1]
        share = self.cfg.tolerance if isinstance(self.cfg.tolerance, float) else self.cfg.allowed(total) / total
        bad = bad_missing + bad_type
        if bad and wilson_lower(bad, n) > share:
            findings.append(Finding(Severity.CRITICAL, "sample_keys_missing", f"{bad_missing} of {n} keys sampled in "
                                    f"production are not in the snapshot, {bad_type} have another type (more than "
                                    f"{share:.1%} with 99.9% confidence), e.g. {', '.join(examples)}", "sample"))
        elif bad:
            findings.append(Finding(Severity.INFO, "sample_keys_changed", f"{bad} of {n} keys sampled in production "
                                    "differ from the snapshot (within tolerance: written since it was taken)",
                                    "sample"))


async def _types_and_sizes(conn: Any, keys: Sequence[bytes]) -> list[tuple[bytes, int]]:
    """(type, size) of each key, in two pipelined round trips; size -1 for types without a size command."""
    if not keys:
        return []
    async with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        types = [t if isinstance(t, bytes) else str(t).encode() for t in await pipe.execute()]
    async with conn.pipeline(transaction=False) as pipe:
        sized = []
        for key, kind in zip(keys, types, strict=True):
            if (command := _SIZE_COMMANDS.get(kind)) is not None:
                pipe.execute_command(command, key)
                sized.append(True)
            else:
                sized.append(False)
        values = iter(await pipe.execute(raise_on_error=False) if any(sized) else [])
    out = []
    for kind, has in zip(types, sized, strict=True):
        value = next(values) if has else -1
        out.append((kind, value if isinstance(value, int) else -1))
    return out


class _LoadFailed(ValidatorError):
    """redis-server rejected a snapshot the check tool passed: a bad backup."""


async def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):  # closing must not replace the run's result
        await asyncio.wait_for(conn.aclose(), 5)


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
