"""The ``redis_restore`` comparison of the restored server with production, with read-only commands only
(``INFO``, ``RANDOMKEY``, ``TYPE`` and the size commands): the key count of each database within the tolerance,
and a random sample of production's keys, which must be in the restore with the same type. Production keeps
changing while it is watched, so the sample fails only when the share of missing or retyped keys is above the
tolerance with 99.9 % confidence (Wilson bound)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Outcome, Severity
from drwatch.core.secrets import redact
from drwatch.core.textsafe import escape
from drwatch.validators.base import RunContext
from drwatch.validators.redisdb import server
from drwatch.validators.redisdb.config import RedisRestoreConfig

Z_SAMPLE = 3.09  # one-sided 99.9 %: a sample fails only when the bad share is above tolerance with that confidence
_SIZE_COMMANDS = {b"string": "STRLEN", b"list": "LLEN", b"hash": "HLEN", b"set": "SCARD", b"zset": "ZCARD",
                  b"stream": "XLEN"}
_SHOWN = 3  # example keys named in a finding


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


async def compare(ctx: RunContext, cfg: RedisRestoreConfig, restored: server.Sandboxed, findings: list[Finding],
                  figures: dict[str, float]) -> Outcome:
    """The restored key count (``restore_empty`` without production), then production's counts and sample."""
    from redis.exceptions import RedisError

    try:
        ours = _keyspace(await restored.client.info("keyspace"))
    except (RedisError, OSError) as exc:
        raise ValidatorError("sandbox_server_failed", f"the sandbox server: {type(exc).__name__}: {exc}") \
            from None
    figures["keys_restored"] = float(sum(ours.values()))
    if cfg.production is None:
        if not ours and not cfg.allow_empty:
            findings.append(Finding(Severity.CRITICAL, "restore_empty", "the snapshot holds no key (set "
                                    "allow_empty if an empty snapshot is what the backup should hold)",
                                    "restore"))
        return Outcome.OK
    try:
        await _production(ctx, cfg, restored, ours, findings, figures)
    except ValidatorError as exc:
        findings.append(Finding(Severity.WARNING, exc.code, exc.message, "production"))
        return Outcome.ERROR
    return Outcome.OK


async def _production(ctx: RunContext, cfg: RedisRestoreConfig, restored: server.Sandboxed, ours: dict[int, int],
                      findings: list[Finding], figures: dict[str, float]) -> None:
    """Key counts per database and a sample of production's keys, with read-only commands only."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    assert cfg.production is not None
    url = await asyncio.to_thread(cfg.production.url, ctx.config)
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
            allowed = cfg.allowed(live)
            if got < live - allowed:
                findings.append(Finding(Severity.CRITICAL, "key_count_low", f"{got} keys restored, production "
                                        f"has {live} (tolerance {allowed:.0f})", f"db{db}"))
            elif got > live + allowed:
                findings.append(Finding(Severity.WARNING, "production_shrank", f"the snapshot holds {got} keys, "
                                        f"production only {live}: keys were removed or expired since", f"db{db}"))
        total = sum(theirs.values())
        if cfg.sample and total:
            await _sample(cfg, theirs, total, client, restored.connect, findings, figures)
    except (RedisError, OSError) as exc:
        raise ValidatorError("production_unavailable", redact(f"production: {type(exc).__name__}: {exc}")) \
            from None


async def _sample(cfg: RedisRestoreConfig, theirs: dict[int, int], total: int, client: Callable[[int], Any],
                  restored: Callable[[int], Any], findings: list[Finding], figures: dict[str, float]) -> None:
    """RANDOMKEY in production per database (in proportion to its keys), then each key's type and size on
    both sides. A key missing from the restore or of another type counts against the snapshot."""
    from redis.exceptions import RedisError

    n = bad_missing = bad_type = 0
    sizes = [0, 0]  # restored, production (elements or bytes of the keys present on both sides)
    examples: list[str] = []
    for db, keys in sorted(theirs.items()):
        want = min(keys, max(1, math.ceil(cfg.sample * keys / total)))
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
        except (RedisError, OSError) as exc:  # our sandbox server, not production
            raise ValidatorError("sandbox_server_failed", f"the sandbox server: {type(exc).__name__}: {exc}") \
                from None
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
    share = cfg.tolerance if isinstance(cfg.tolerance, float) else cfg.allowed(total) / total
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


async def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):  # closing must not replace the run's result
        await asyncio.wait_for(conn.aclose(), 5)
