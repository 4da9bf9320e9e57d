"""``vector_restore`` on the Pinecone backend from a Parquet export (``backend.parquet``), the do-it-yourself backup
(e.g. ``pinecone/latest.parquet`` in S3): the newest file matching ``pattern`` under the export's location (a
filesystem, or S3 streamed into the run's sandbox) is read (``id``, ``values``, optional ``metadata`` columns),
upserted into a temporary ``drwatch-drill-*`` index and compared with production exactly as a backup restored
through the backups API is (:func:`drwatch.validators.vector.pinecone_compare.compare`).

The export's time is the file's modification time (the recovery point; older than the RPO: ``backup_stale``,
without a drill). A file that is no Parquet or is damaged (``recovery_point_unreadable``), without the id or
values column (``parquet_column_missing``), with null or duplicate ids (``invalid_ids``, ``duplicate_ids``), a
value that is no finite number (``invalid_values``), values of another dimension than production's
(``dimension_mismatch``) or no row (``recovery_point_empty``) fails before anything is billed. The cost guard
applies as to a restore: more rows than ``max_records``, or ``max_temporary_indexes`` temporary indexes already
there, refuse the drill (``error``). The temporary index is deleted on every path, cancellation and timeout
included (the clean-up is registered before the create), and swept by the next run otherwise.

The whole export is held in memory while it is upserted (``max_records`` bounds it).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.durations import format_duration
from drwatch.core.errors import DrillFailed, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.validators.postgres import pgdump
from drwatch.validators.vector.config import PineconeBackend, PineconeParquetExport
from drwatch.validators.vector.pinecone_temp import (
    TempIndex,
    connect,
    owner_tags,
    rto_exceeded,
    temp_index_guard,
    temp_index_name,
)
from drwatch.validators.vector.queries import configured_queries

if TYPE_CHECKING:
    from drwatch.validators.base import RunContext
    from drwatch.validators.postgres.pgdump import FilesystemDumps, RecoveryPoint, S3Dumps
    from drwatch.validators.vector.config import VectorRestoreConfig
    from drwatch.validators.vector.pinecone_api import PineconeClient
    from drwatch.validators.vector.pinecone_model import IndexInfo

Row = tuple[str, list[float], dict[str, Any] | None]


def read_export(path: Path, cols: PineconeParquetExport, dimension: int | None, name: str) -> list[Row]:
    """The export's rows (blocking: run in a thread). Raises :class:`DrillFailed` for a bad export."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        from drwatch.core.extras import PARQUET_VECTORS

        raise ValidatorError("extra_missing", f"a Pinecone Parquet export needs pyarrow: "
                             f"{PARQUET_VECTORS.install}") from None
    try:
        fh = path.open("rb")  # the place unreadable (gone since listed, denied, I/O error): could not check
    except OSError as exc:
        raise ValidatorError("location_unavailable", f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        pf = pq.ParquetFile(fh)
        names = pf.schema_arrow.names
        for col in (cols.id_column, cols.values_column):
            if col not in names:
                raise DrillFailed("parquet_column_missing", f"{name} has no column {col!r} "
                                  f"(columns: {', '.join(names)})")
        wanted = [cols.id_column, cols.values_column]
        if cols.metadata_column is not None and cols.metadata_column in names:
            wanted.append(cols.metadata_column)
        table = pf.read(columns=wanted)
    except DrillFailed:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for damaged files
        raise DrillFailed("recovery_point_unreadable", f"{name}: {exc}") from None
    finally:
        fh.close()
    ids = table.column(cols.id_column).to_pylist()
    values = table.column(cols.values_column).to_pylist()
    metas = table.column(wanted[2]).to_pylist() if len(wanted) == 3 else [None] * len(ids)
    rows: list[Row] = []
    seen: set[str] = set()
    for n, (i, v, m) in enumerate(zip(ids, values, metas, strict=True)):
        if i is None or i == "" or v is None:
            raise DrillFailed("invalid_ids", f"{name}: row {n} has no id or no values")
        key = str(i)
        if key in seen:
            raise DrillFailed("duplicate_ids", f"{name}: id {key!r} appears more than once")
        seen.add(key)
        rows.append((key, _values(v, key, name, dimension), _metadata(m, key, name)))
    return rows


def _values(v: Any, key: str, name: str, dimension: int | None) -> list[float]:
    """A row's vector: a list of finite numbers of production's dimension (else the export is bad)."""
    if not isinstance(v, list):
        raise DrillFailed("invalid_values", f"{name}: id {key!r} holds {type(v).__name__}, not a list of numbers")
    if dimension is not None and len(v) != dimension:
        raise DrillFailed("dimension_mismatch", f"{name}: id {key!r} has {len(v)} values, production's index "
                          f"{dimension}")
    try:
        floats = [float(x) for x in v]
    except (TypeError, ValueError):
        floats = [math.nan]
    if not all(math.isfinite(x) for x in floats):
        raise DrillFailed("invalid_values", f"{name}: id {key!r} has a value that is not a finite number")
    return floats


def _metadata(m: Any, key: str, name: str) -> dict[str, Any] | None:
    if isinstance(m, dict):
        return m
    if not isinstance(m, str) or not m:
        return None
    try:
        meta = json.loads(m)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise DrillFailed("invalid_metadata", f"{name}: id {key!r} has metadata that is not a JSON object")
    return meta


async def _cost_guard(client: PineconeClient, backend: PineconeBackend, rows: int, name: str) -> None:
    if rows > backend.max_records:
        raise ValidatorError("cost_guard", f"export {name} holds {rows} vectors, more than "
                                           f"max_records={backend.max_records}: drill refused")
    await temp_index_guard(client, backend)


async def _ready(ctx: RunContext, client: PineconeClient, name: str, poll: float) -> IndexInfo:
    while True:
        info = await client.describe_index(name)
        if info is None:
            raise ValidatorError("temp_index_vanished", f"temporary index {name} disappeared after its creation")
        if info.ready:
            return info
        left = ctx.remaining()
        await asyncio.sleep(poll if left > poll else left + 0.1)  # past the deadline: the runner's timeout fires


async def _settled(ctx: RunContext, client: PineconeClient, host: str, count: int, poll: float) -> None:
    """Pinecone's writes are eventually consistent: wait until the index counts every upserted vector."""
    while (await client.describe_index_stats(host)).total < count:
        left = ctx.remaining()
        await asyncio.sleep(poll if left > poll else left + 0.1)


async def run_parquet_drill(ctx: RunContext, cfg: VectorRestoreConfig) -> Report:
    backend = cfg.backend
    assert isinstance(backend, PineconeBackend) and backend.parquet is not None
    findings: list[Finding] = []
    figures: dict[str, float] = {"k": float(cfg.k), "recall_threshold": cfg.min_recall}

    def bad(code: str, message: str) -> None:
        findings.append(Finding(Severity.CRITICAL, code, message, backend.index))

    client, prod = await connect(ctx, backend, findings)
    configured = await configured_queries(ctx, cfg, prod.dimension, f"index {backend.index}")
    exports, newest = await _newest_export(ctx, backend.parquet)
    now = ctx.clock()
    figures["backup_timestamp_seconds"] = newest.mtime
    rpo = ctx.asset.rpo.total_seconds()
    if now - newest.mtime > rpo:
        bad("backup_stale", f"newest export {newest.name} is {format_duration(now - newest.mtime)} old "
                            f"(RPO {format_duration(rpo)})")
        return Report(Outcome.FAILED, tuple(findings), figures, recovery_point=newest.mtime)
    sandbox = await ctx.exit_stack.enter_async_context(ctx.sandboxes.directory(ctx.run_id))
    path = await exports.fetch(newest, sandbox)
    rows = await asyncio.to_thread(read_export, path, backend.parquet, prod.dimension, newest.name)
    if not rows:
        raise DrillFailed("recovery_point_empty", f"export {newest.name} holds no vector")
    await _cost_guard(client, backend, len(rows), newest.name)
    await _drill(ctx, cfg, _Restored(client, prod, newest, rows, temp_index_name(now)), bad, findings, figures,
                 configured)
    outcome = Outcome.FAILED if any(f.severity == Severity.CRITICAL for f in findings) else Outcome.OK
    return Report(outcome, tuple(findings), figures, recovery_point=newest.mtime)


async def _newest_export(ctx: RunContext,
                         export: PineconeParquetExport) -> tuple[FilesystemDumps | S3Dumps, RecoveryPoint]:
    exports = pgdump.dumps_at(ctx.config, ctx.s3, export.location, export.prefix, export.pattern)
    points = [p for p in await exports.list() or [] if not p.directory]
    if not points:
        raise DrillFailed("no_backup", f"no Parquet export matching {export.pattern!r} under "
                                       f"{export.location}/{export.prefix}")
    return exports, max(points, key=lambda p: p.mtime)


@dataclass(frozen=True)
class _Restored:
    """What the drill restores: the export's rows into a temporary index ``name`` next to production's."""

    client: PineconeClient
    prod: IndexInfo
    newest: RecoveryPoint
    rows: list[Row]
    name: str


async def _drill(ctx: RunContext, cfg: VectorRestoreConfig, r: _Restored, bad: Callable[[str, str], None],
                 findings: list[Finding], figures: dict[str, float], configured: list[list[float]] | None) -> None:
    """Create the temporary index, upsert the rows, compare it with production, delete it (the run's exit stack
    deletes it when a step fails)."""
    from drwatch.validators.vector.pinecone_compare import compare
    from drwatch.validators.vector.pinecone_model import Backup

    backend = cfg.backend
    assert isinstance(backend, PineconeBackend)
    client, prod, newest, rows, name = r.client, r.prod, r.newest, r.rows, r.name
    temp_index = TempIndex(ctx, client, name)
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = backend.poll_interval.total_seconds()
    await client.create_index(name, prod.dimension or len(rows[0][1]), prod.metric, owner_tags(ctx.run_id))
    ctx.log.info("pinecone_upsert_started", index=name, export=newest.name, rows=len(rows))
    temp = await _ready(ctx, client, name, poll)
    await client.upsert(temp.host, rows, backend.namespace)
    await _settled(ctx, client, temp.host, len(rows), poll)
    restore_seconds = loop.time() - started
    figures["restore_seconds"] = restore_seconds
    findings += rto_exceeded(ctx, restore_seconds, backend.index)
    backup = Backup(backup_id=newest.name, name=newest.name, source_index_name=backend.index, status="Ready",
                    created=newest.mtime, record_count=len(rows), namespace_count=1, dimension=prod.dimension,
                    metric=prod.metric, size_bytes=newest.size)
    await compare(cfg, client, prod, temp, backup, bad, findings, figures, configured)
    await temp_index.delete(findings)
