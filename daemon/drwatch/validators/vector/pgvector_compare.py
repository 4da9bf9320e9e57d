"""The comparison of a pgvector drill: the restored table against production's (read-only session,
read-only repeatable-read transactions, bounded timeouts): dimensions, ids by a sorted merge, checksums of a
sample of vectors, exact top-k on both sides and the restored ANN index's recall@k."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from drwatch.core.errors import DrillFailed, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.validators.base import RunContext
from drwatch.validators.postgres import pgtools
from drwatch.validators.vector import vectormath
from drwatch.validators.vector.pgvector_sandbox import query_limit

if TYPE_CHECKING:
    from drwatch.validators.vector.config import PgvectorBackend, VectorRestoreConfig

_OPS = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}
_OPCLASS = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "inner_product": "vector_ip_ops"}
_BATCH = 5000  # rows per fetch of the id merge
LISTED = 5  # example ids in a finding


def _examples(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:LISTED])
    return shown + (", ..." if len(ids) > LISTED else "")


class Sides:
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

    async def ids(self, conn: Any, watermark: Any) -> AsyncGenerator[list[tuple[str, bool]], None]:
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


async def exact_topk(conn: Any, sql: str, queries: Sequence[Sequence[float]], k: int, extra: tuple[Any, ...],
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


class Comparison:
    """A restored pgvector table against production's: the findings and figures of one drill."""

    def __init__(self, ctx: RunContext, cfg: VectorRestoreConfig, be: PgvectorBackend) -> None:
        self.ctx, self.cfg, self.be = ctx, cfg, be
        self.sides = Sides(be, cfg.metric)
        self.findings: list[Finding] = []
        self.figures: dict[str, float] = {"k": float(cfg.k), "recall_threshold": cfg.min_recall}
        self.label = pgtools.table_label(self.sides.table)
        self.configured: list[list[float]] | None = None  # the query_vectors file's, when configured

    def bad(self, code: str, message: str, subject: str = "") -> None:
        self.findings.append(Finding(Severity.CRITICAL, code, message, subject or self.label))

    def report(self, recovery_point: float | None, outcome: Outcome | None = None) -> Report:
        if outcome is None:
            outcome = Outcome.FAILED if any(f.severity == Severity.CRITICAL for f in self.findings) else Outcome.OK
        return Report(outcome, tuple(self.findings), dict(self.figures), recovery_point=recovery_point)

    async def compare(self, prod: Any, restored: Any, prod_dims: int, parquet: bool, name: str) -> None:
        ctx, s = self.ctx, self.sides
        if await restored.fetchval("SELECT to_regclass($1)", s.q, timeout=query_limit(ctx)) is None:
            raise DrillFailed("table_missing", f"the recovery point {name} restores no table {self.label}")
        self.figures["rows_restored"] = float(await restored.fetchval(f"SELECT count(*) FROM {s.q}",
                                                                      timeout=query_limit(ctx)))
        dims = await s.dimensions(restored, query_limit(ctx))
        self.figures["dimensions"] = float(dims or 0)
        if dims != prod_dims:
            raise DrillFailed("dimension_mismatch", f"restored vectors have {dims} dimensions, production "
                              f"{prod_dims}: the index cannot answer production's queries")
        await self._ensure_index(restored, parquet)
        watermark = None
        if s.changed:
            watermark = await restored.fetchval(f"SELECT max({s.changed}) FROM {s.q}", timeout=query_limit(ctx))
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
            "AND i.indisvalid LIMIT 1", self.sides.q, opclass, timeout=query_limit(self.ctx))
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
                           f"({self.sides.vec} {opclass}) WITH ({opts})", timeout=query_limit(self.ctx))
        self.figures["index_build_seconds"] = time.monotonic() - started

    async def _merge(self, prod: Any, restored: Any, watermark: Any) -> tuple[list[str], list[str]]:
        """Sorted merge of both id lists: coverage figures and findings. Returns (a sample of the ids on both
        sides and unchanged since the backup, the restore's ids to leave out of exact comparisons)."""
        cfg = self.cfg
        want = max(cfg.sample, cfg.queries if self.configured is None else 0)
        sample: list[str] = []
        matched_batch: list[str] = []
        missing: list[str] = []
        extra: list[str] = []
        excluded: list[str] = []
        n_missing = n_extra = n_late = n_matched = 0
        merged = _side_by_side(self.sides.ids(prod, watermark), self.sides.ids(restored, None))
        async with contextlib.aclosing(merged):  # a cut-off run closes both cursors now, not at collection
            async for p, r in merged:
                if r is None:  # in production only
                    assert p is not None
                    if p[1]:
                        n_late += 1
                    else:
                        n_missing += 1
                        if len(missing) < LISTED + 1:
                            missing.append(p[0])
                elif p is None:  # in the restore only
                    n_extra += 1
                    excluded.append(r)
                    if len(extra) < LISTED + 1:
                        extra.append(r)
                elif p[1]:
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
        theirs = await self.sides.vectors(prod, ids, query_limit(ctx))
        ours = await self.sides.vectors(restored, ids, query_limit(ctx))

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
        if self.configured is not None:
            return self.configured
        chosen = sample[:self.cfg.queries]
        found = await self.sides.vectors(prod, chosen, query_limit(self.ctx))
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
        theirs = await exact_topk(prod, s.exact_sql(watermark=use_wm, exclude=False), queries, n,
                                  (watermark,) if use_wm else (), query_limit(ctx))
        truth = await exact_topk(restored, s.exact_sql(watermark=False, exclude=False), queries, n, (),
                                 query_limit(ctx))
        ours = truth if not excluded else await exact_topk(
            restored, s.exact_sql(watermark=False, exclude=True), queries, n, (excluded,), query_limit(ctx))
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
                                       timeout=query_limit(ctx))
            if "Index Scan" not in str(plan):
                raise ValidatorError("ann_index_unused", f"the ANN query on {self.label} does not use the index")
            for q in queries:
                rows = await conn.fetch(sql, list(q), self.cfg.k, timeout=query_limit(ctx))
                out.append([(str(r["id"]), float(r["d"])) for r in rows])
        return out


Pages = AsyncGenerator[list[tuple[str, bool]], None]  # batches of (id, changed after the watermark)


async def _side_by_side(prod_pages: Pages, rest_pages: Pages
                        ) -> AsyncGenerator[tuple[tuple[str, bool] | None, str | None], None]:
    """Two id-sorted streams of pages merged: ((id, changed since the backup), None) for an id in production
    only, (None, id) for one in the restore only, both for an id on both sides."""
    async with contextlib.aclosing(prod_pages), contextlib.aclosing(rest_pages):
        p_buf: list[tuple[str, bool]] = []
        r_buf: list[tuple[str, bool]] = []
        pi = ri = 0
        p_done = r_done = False
        while True:
            if pi >= len(p_buf) and not p_done:
                p_buf, pi = await anext(prod_pages, []), 0
                p_done = not p_buf
            if ri >= len(r_buf) and not r_done:
                r_buf, ri = await anext(rest_pages, []), 0
                r_done = not r_buf
            if p_done and r_done:
                return
            p = p_buf[pi] if not p_done else None
            r = r_buf[ri][0] if not r_done else None
            if p is not None and (r is None or p[0] < r):
                pi += 1
                yield p, None
            elif r is not None and (p is None or r < p[0]):
                ri += 1
                yield None, r
            else:
                pi += 1
                ri += 1
                yield p, r
