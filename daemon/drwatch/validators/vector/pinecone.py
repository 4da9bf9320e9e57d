"""Validator ``vector_restore``, Pinecone backend: restore the newest backup of a Pinecone index into a
temporary index and prove that it answers like production.

Talks to Pinecone's REST API version 2025-10 through :mod:`drwatch.validators.vector.pinecone_api` (drwatch's own
aiohttp
client; the ``pinecone`` SDK is not needed). One run:

1. removes orphaned temporary indexes of earlier runs (:func:`.pinecone_temp.sweep_project`);
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
on another host). ``pinecone_temp.sweep_pinecone_orphans`` does this at daemon start; each run repeats it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from drwatch.core.durations import format_duration
from drwatch.core.errors import DrillFailed, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.validators.base import RunContext
from drwatch.validators.vector.config import PineconeBackend
from drwatch.validators.vector.pinecone_temp import (
    TEMP_PREFIX,
    TempIndex,
    connect,
    owner_tags,
    rto_exceeded,
    temp_index_guard,
    temp_index_name,
)
from drwatch.validators.vector.queries import configured_queries

if TYPE_CHECKING:
    from drwatch.validators.vector.config import VectorRestoreConfig
    from drwatch.validators.vector.pinecone_api import PineconeClient
    from drwatch.validators.vector.pinecone_model import Backup, IndexInfo

DAY = 86400.0


async def _cost_guard(client: PineconeClient, backend: PineconeBackend, backup: Backup, now: float) -> None:
    if backup.record_count is not None and backup.record_count > backend.max_records:
        raise ValidatorError("cost_guard", f"backup {backup.backup_id} holds {backup.record_count} vectors, more "
                                           f"than max_records={backend.max_records}: drill refused")
    await temp_index_guard(client, backend)
    recent = [j for j in await client.list_restore_jobs()
              if j.target_index_name.startswith(TEMP_PREFIX) and j.created is not None and now - j.created < DAY]
    if len(recent) >= backend.max_drills_per_day:
        raise ValidatorError("cost_guard", f"{len(recent)} drills restored in the last 24 h (max_drills_per_day="
                                           f"{backend.max_drills_per_day}): drill refused")

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

async def run_pinecone_drill(ctx: RunContext, cfg: VectorRestoreConfig) -> Report:
    from drwatch.validators.vector.pinecone_compare import compare

    backend = cfg.backend
    assert isinstance(backend, PineconeBackend)
    findings: list[Finding] = []
    figures: dict[str, float] = {"k": float(cfg.k), "recall_threshold": cfg.min_recall}

    def bad(code: str, message: str) -> None:
        findings.append(Finding(Severity.CRITICAL, code, message, backend.index))

    client, prod = await connect(ctx, backend, findings)
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
    temp_index = TempIndex(ctx, client, name)
    loop = asyncio.get_running_loop()
    started = loop.time()
    job = await client.create_index_from_backup(newest.backup_id, name, owner_tags(ctx.run_id))
    ctx.log.info("pinecone_restore_started", index=name, backup=newest.backup_id)
    temp = await _wait_ready(ctx, client, job, name, newest, backend.poll_interval.total_seconds())
    restore_seconds = loop.time() - started
    figures["restore_seconds"] = restore_seconds
    findings += rto_exceeded(ctx, restore_seconds, backend.index)
    await compare(cfg, client, prod, temp, newest, bad, findings, figures, configured)
    await temp_index.delete(findings)
    outcome = Outcome.FAILED if any(f.severity == Severity.CRITICAL for f in findings) else Outcome.OK
    return Report(outcome, tuple(findings), figures, recovery_point=created)
