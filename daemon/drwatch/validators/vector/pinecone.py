"""Validator ``vector_restore``, Pinecone backend: restore the newest backup of a Pinecone index into a
temporary index and prove that it answers like production.

Talks to Pinecone's REST API version 2025-10 through :mod:`drwatch.validators.vector.pinecone_api` (drwatch's own
aiohttp
client; the ``pinecone`` SDK is not needed). One run:

1. removes orphaned temporary indexes of earlier runs (:func:`sweep_project`);
2. lists the production index's backups: none finished → ``failed`` (``no_backup``); the newest older
   than the asset's RPO → ``failed`` (``backup_stale``, no drill: its outcome is already known);
3. applies the **cost guard** (below); a refusal is ``error`` (``cost_guard``): the backup was not checked;
4. creates ``drwatch-drill-<time>-<random>`` from the backup (tags name the owning host, PID and run),
   waits for the restore job to complete and the index to be ready (``restore_seconds``; a restore job
   that fails is ``failed``, ``restore_failed``; slower than the asset's RTO is a warning);
5. compares it with production (read-only: describe, stats, list, fetch, query), per the common options of
   ``vector_restore``: vectors restored against the backup's ``record_count`` (``count_mismatch``), id
   coverage of production's ids (``missing_rows``), checksums of a sample (``vector_mismatch``), the exact
   top-k on both sides (``exact_topk_mismatch``) and the restored index's recall@k against production
   (``recall_low``). The exact top-k needs every vector: it is computed (numpy, in a thread) when the
   namespace holds at most ``exact_scan_max_vectors`` on each side; above that the sample and queries are
   drawn from production's id listing, recall is the restored index's answers against production's, and
   the exact comparison is reported as skipped (``exact_check_skipped``, warning). With ``query_vectors``
   the queries are that file's vectors (read, and checked against the index's dimension, before the restore
   is started: a bad file is ``error`` and costs nothing);
6. deletes the temporary index: explicitly at the end, and from ``ctx.exit_stack`` on any failure, timeout
   or cancellation (shielded, with its own time budget).

**Cost guard** (a restore is billed: storage of the copy, write units of the restore, read units of the
comparison): ``max_records`` refuses a backup holding more vectors (bounds one drill's cost);
``max_temporary_indexes`` refuses while that many ``drwatch-drill-*`` indexes already exist in the project
(bounds parallel copies and keeps the project's index quota for production); ``max_drills_per_day`` counts
the project's restore jobs into ``drwatch-drill-*`` indexes over the last 24 h (read from Pinecone's own
``/restore-jobs``, so it survives restarts and holds across several drwatch processes).

**Orphans.** A temporary index is orphaned when its owner process (host + PID tags) is gone on this host,
or when it is older than the longest timeout of any Pinecone drill in the config plus 5 minutes (an owner
on another host). :func:`sweep_pinecone_orphans` does this at daemon start; each run repeats it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from drwatch.core.durations import format_duration
from drwatch.core.errors import ConfigError, DrillFailed, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.validators.base import RunContext
from drwatch.validators.vector.config import PineconeBackend
from drwatch.validators.vector.queries import configured_queries

if TYPE_CHECKING:
    from drwatch.validators.base import ConfigView
    from drwatch.validators.vector.config import VectorRestoreConfig
    from drwatch.validators.vector.pinecone_api import PineconeClient
    from drwatch.validators.vector.pinecone_model import Backup, IndexInfo

TEMP_PREFIX = "drwatch-drill-"  # the same as drwatch.validators.vector.pinecone_api.TEMP_PREFIX (kept import-free here)
ORPHAN_MARGIN = 300.0
REMOVE_BUDGET = 60.0  # seconds the deletion of a temporary index may take, after the run's deadline too
DAY = 86400.0
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def temp_index_name(now: float) -> str:
    """``drwatch-drill-<creation time, base 36>-<8 hex>`` (29 characters; Pinecone allows 45)."""
    stamp, digits = int(now), ""
    while True:
        stamp, rem = divmod(stamp, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rem] + digits
        if not stamp:
            break
    return f"{TEMP_PREFIX}{digits}-{secrets.token_hex(4)}"


def created_from_name(name: str) -> float | None:
    match = re.fullmatch(re.escape(TEMP_PREFIX) + r"([0-9a-z]{1,12})-[0-9a-f]{8}", name)
    return float(int(match.group(1), 36)) if match else None


def _tag(value: str) -> str:
    return _TAG_UNSAFE.sub("_", value)[:120]


def owner_tags(run_id: str) -> dict[str, str]:
    return {"drwatch_host": _tag(socket.gethostname()), "drwatch_pid": str(os.getpid()),
            "drwatch_run": _tag(run_id)}


def _owner_alive(tags: dict[str, str], created: float) -> bool:
    """The owning process runs on this host and is the one that created the index (not a reused PID)."""
    from drwatch.core.sandbox import _pid_alive, _process_start_time

    if tags.get("drwatch_host") != _tag(socket.gethostname()):
        return True  # another host's: only age tells
    try:
        pid = int(tags.get("drwatch_pid", ""))
    except ValueError:
        return False
    if pid <= 0 or not _pid_alive(pid):
        return False
    started = _process_start_time(pid)
    return started is None or started <= created + 2.0


def orphan_grace(config: ConfigView) -> float:
    """Longest timeout of any Pinecone drill in the config, plus a margin: no live run is older."""
    longest = 0.0
    for _asset, vcfg in _pinecone_validators(config):
        longest = max(longest, vcfg.effective_timeout(config))
    return (longest or config.limits.default_timeout.total_seconds()) + ORPHAN_MARGIN


def _pinecone_validators(config: ConfigView) -> list[tuple[str, Any]]:
    return [(name, v) for name, asset in config.assets.items() for v in asset.validators
            if v.kind == "vector_restore" and isinstance(getattr(v, "backend", None), PineconeBackend)]


async def sweep_project(client: PineconeClient, grace: float, now: float, log: Any = None) -> list[str]:
    """Delete this project's orphaned ``drwatch-drill-*`` indexes; returns their names."""
    removed = []
    for idx in await client.list_indexes():
        created = created_from_name(idx.name)
        if created is None:  # not a name drwatch makes: never touched
            continue
        if now - created <= grace and _owner_alive(idx.tags, created):
            continue
        if await client.delete_index(idx.name):
            removed.append(idx.name)
            if log is not None:
                log.warning("pinecone_orphan_deleted", index=idx.name, age_seconds=round(now - created))
    return removed


async def sweep_pinecone_orphans(config: ConfigView, log: Any = None, budget: float = 120.0) -> list[str]:
    """Start-up sweep for the daemon: every Pinecone project named by a ``vector_restore`` validator.

    Never raises for Pinecone or secret problems (they are logged; every run sweeps again); each project
    gets at most ``budget`` seconds.
    """
    projects: dict[tuple[str, str | None, str | None], PineconeBackend] = {}
    for _asset, vcfg in _pinecone_validators(config):
        b = vcfg.backend
        projects.setdefault((b.control_url, b.api_key_env, b.api_key_file), b)
    if not projects:
        return []
    from drwatch.core.secrets import read_secret
    from drwatch.validators.vector import pinecone_api as pc

    grace, removed = orphan_grace(config), []
    loop = asyncio.get_running_loop()
    for backend in projects.values():
        until = loop.time() + budget

        def remaining(until: float = until) -> float:
            return until - loop.time()

        try:
            key = await asyncio.to_thread(read_secret, "api_key", backend.api_key_env, backend.api_key_file,
                                          config.base_dir)
            async with pc.PineconeClient(key, control_url=backend.control_url,
                                         request_timeout=backend.request_timeout.total_seconds(),
                                         max_attempts=backend.max_attempts, remaining=remaining) as client:
                removed += await sweep_project(client, grace, time.time(), log)
        except (pc.PineconeUnavailable, ConfigError) as exc:
            if log is not None:
                log.warning("pinecone_orphan_sweep_failed", control_url=backend.control_url,
                            error=getattr(exc, "code", "secret_unavailable"))
    return removed


async def _api_key(ctx: RunContext, backend: PineconeBackend) -> str:
    from drwatch.core.secrets import read_secret

    try:
        return await asyncio.to_thread(read_secret, "backend.api_key", backend.api_key_env, backend.api_key_file,
                                       ctx.config.base_dir)
    except ConfigError as exc:
        raise ValidatorError("secret_unavailable", "; ".join(str(p) for p in exc.problems)) from None


async def _cost_guard(client: PineconeClient, backend: PineconeBackend, backup: Backup, now: float) -> None:
    if backup.record_count is not None and backup.record_count > backend.max_records:
        raise ValidatorError("cost_guard", f"backup {backup.backup_id} holds {backup.record_count} vectors, more "
                                           f"than max_records={backend.max_records}: drill refused")
    temps = [i.name for i in await client.list_indexes() if i.name.startswith(TEMP_PREFIX)]
    if len(temps) >= backend.max_temporary_indexes:
        raise ValidatorError("cost_guard", f"{len(temps)} temporary drwatch indexes exist (max_temporary_indexes="
                                           f"{backend.max_temporary_indexes}): drill refused")
    recent = [j for j in await client.list_restore_jobs()
              if j.target_index_name.startswith(TEMP_PREFIX) and j.created is not None and now - j.created < DAY]
    if len(recent) >= backend.max_drills_per_day:
        raise ValidatorError("cost_guard", f"{len(recent)} drills restored in the last 24 h (max_drills_per_day="
                                           f"{backend.max_drills_per_day}): drill refused")


async def _remove_temp(client: PineconeClient, name: str, log: Any) -> bool:
    """Delete the temporary index, shielded from cancellation and bounded; False when it could not be."""
    from drwatch.validators.vector.pinecone_api import PineconeUnavailable

    async def delete() -> bool:
        try:
            await client.delete_index(name, budget=REMOVE_BUDGET)
            return True
        except PineconeUnavailable as exc:
            log.warning("pinecone_temp_index_not_deleted", index=name, code=exc.code)
            return False

    task = asyncio.ensure_future(delete())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):  # a second cancellation stops the wait, not the delete
            await asyncio.wait_for(asyncio.shield(task), timeout=REMOVE_BUDGET)
        raise


async def _wait_ready(ctx: RunContext, client: PineconeClient, job_id: str, name: str, backup: Backup,
                      poll: float) -> IndexInfo:
    while True:
        job = await client.describe_restore_job(job_id)
        if job.failed:
            raise DrillFailed("restore_failed", f"restoring backup {backup.backup_id} ended {job.status!r}")
        if job.done:
            info = await client.describe_index(name)
            if info is None:
                raise ValidatorError("temp_index_vanished", f"temporary index {name} disappeared during restore")
            if info.ready:
                return info
        left = ctx.remaining()
        # Past the deadline rather than at it: the runner's timeout (outcome ``timeout``) fires first.
        await asyncio.sleep(poll if left > poll else left + 0.1)


async def _newest_backup(client: PineconeClient, index: str) -> tuple[Backup, float]:
    """The newest finished backup of the index and when it was made."""
    backups = await client.list_backups(index)
    usable = sorted((b for b in backups if b.usable), key=lambda b: b.created or 0.0)
    if not usable:
        raise DrillFailed("no_backup", f"index {index} has no finished backup ({len(backups)} listed)")
    newest = usable[-1]
    assert newest.created is not None
    return newest, newest.created


def _rto_exceeded(ctx: RunContext, restore_seconds: float, index: str) -> list[Finding]:
    rto = ctx.asset.rto
    if rto is None or restore_seconds <= rto.total_seconds():
        return []
    return [Finding(Severity.WARNING, "rto_exceeded", f"restore took {format_duration(restore_seconds)}"
                    f" (RTO {format_duration(rto.total_seconds())})", index)]


async def run_pinecone_drill(ctx: RunContext, cfg: VectorRestoreConfig) -> Report:
    from drwatch.validators.vector import pinecone_api as pc
    from drwatch.validators.vector.pinecone_compare import compare

    backend = cfg.backend
    assert isinstance(backend, PineconeBackend)
    findings: list[Finding] = []
    figures: dict[str, float] = {"k": float(cfg.k), "recall_threshold": cfg.min_recall}

    def bad(code: str, message: str) -> None:
        findings.append(Finding(Severity.CRITICAL, code, message, backend.index))

    key = await _api_key(ctx, backend)
    client = await ctx.exit_stack.enter_async_context(pc.PineconeClient(
        key, control_url=backend.control_url, request_timeout=backend.request_timeout.total_seconds(),
        max_attempts=backend.max_attempts, remaining=ctx.remaining))
    swept = await sweep_project(client, orphan_grace(ctx.config), ctx.clock(), ctx.log)
    if swept:
        findings.append(Finding(Severity.INFO, "orphans_deleted", f"deleted {len(swept)} orphaned temporary "
                                                                  "index(es) of earlier runs"))
    prod = await client.describe_index(backend.index)
    if prod is None:
        raise ValidatorError("production_not_found", f"Pinecone index {backend.index} does not exist")
    # Before anything is billed: a bad query file is our error, found without a restore.
    configured = await configured_queries(ctx, cfg, prod.dimension, f"index {backend.index}")
    newest, created = await _newest_backup(client, backend.index)
    now = ctx.clock()
    figures["backup_timestamp_seconds"] = created
    rpo = ctx.asset.rpo.total_seconds()
    if now - created > rpo:
        bad("backup_stale", f"newest backup {newest.name or newest.backup_id} is "
                            f"{format_duration(now - created)} old (RPO {format_duration(rpo)})")
        return Report(Outcome.FAILED, tuple(findings), figures, recovery_point=created)
    await _cost_guard(client, backend, newest, now)

    name = temp_index_name(now)
    removed = False

    async def fallback() -> None:
        if not removed:
            await _remove_temp(client, name, ctx.log)

    ctx.exit_stack.push_async_callback(fallback)  # before the create: a lost answer still gets cleaned up
    loop = asyncio.get_running_loop()
    started = loop.time()
    job = await client.create_index_from_backup(newest.backup_id, name, owner_tags(ctx.run_id))
    ctx.log.info("pinecone_restore_started", index=name, backup=newest.backup_id)
    temp = await _wait_ready(ctx, client, job, name, newest, backend.poll_interval.total_seconds())
    restore_seconds = loop.time() - started
    figures["restore_seconds"] = restore_seconds
    findings += _rto_exceeded(ctx, restore_seconds, backend.index)
    await compare(cfg, client, prod, temp, newest, bad, findings, figures, configured)
    removed = await _remove_temp(client, name, ctx.log)
    if not removed:
        findings.append(Finding(Severity.WARNING, "temp_index_not_deleted", f"temporary index {name} could not be "
                                "deleted; the next run's orphan sweep retries", name))
    removed = True  # one attempt from here; the fallback would only repeat it
    outcome = Outcome.FAILED if any(f.severity == Severity.CRITICAL for f in findings) else Outcome.OK
    return Report(outcome, tuple(findings), figures, recovery_point=created)
