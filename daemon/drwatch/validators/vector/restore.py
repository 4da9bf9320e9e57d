"""Validator ``vector_restore``: restore a vector index from its recovery point and prove it answers like
production.

Backends (``backend.type``): ``pgvector`` (:mod:`drwatch.validators.vector.pgvector`: a pg_dump or a
Parquet export restored into a sandbox PostgreSQL with the ``vector`` extension) and ``pinecone``
(:mod:`drwatch.validators.vector.pinecone`). Both compare the restore with production (read-only):

- rows/vectors restored and **id coverage** (share of production's ids present in the restore; more than
  ``max_missing_ratio`` missing fails, ``missing_rows``);
- **vector checksums** (:func:`drwatch.validators.vector.vectormath.vector_digest`) on a deterministic sample of
  ``sample``
  ids; more than ``max_mismatch_ratio`` of them differing fails (``vector_mismatch``);
- for ``queries`` query vectors (drawn from stored vectors by ``seed``; or every vector of the
  ``query_vectors`` file, :mod:`drwatch.validators.vector.queries`), the **exact** top-``k`` on both
  sides must agree (ties within ``distance_tolerance`` are interchangeable): a ratio below
  ``min_exact_match`` fails (``exact_topk_mismatch``);
- the restored ANN index's **recall@k** against the exact top-k must be at least ``min_recall``
  (``recall_low``): a rebuilt HNSW graph legitimately returns slightly different lists, so ANN results are
  never required to be identical.

Figures every backend records: ``recall_at_k``, ``exact_match_ratio``, ``recall_threshold``, ``queries``,
``k``, ``rows_restored``, ``restore_seconds``, ``id_coverage_ratio``, ``vector_checksum_mismatches``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from drwatch.core.model import Report
from drwatch.validators.base import RunContext
from drwatch.validators.plugin import Family, Latest, Plugin, Sample
from drwatch.validators.postgres.orphans import stop_orphaned_servers
from drwatch.validators.vector.config import PgvectorBackend, VectorRestoreConfig
from drwatch.validators.vector.pgvector import run_pgvector_drill
from drwatch.validators.vector.pinecone import run_pinecone_drill
from drwatch.validators.vector.pinecone_temp import sweep_pinecone_orphans

if TYPE_CHECKING:
    pass

# Figure names shared by the backends (the metric families below project some of them).
FIGURES = ("recall_at_k", "exact_match_ratio", "recall_threshold", "queries", "k", "rows_restored",
           "restore_seconds", "id_coverage_ratio", "vector_checksum_mismatches")


class VectorRestoreValidator:
    kind: ClassVar[str] = "vector_restore"

    def __init__(self, cfg: VectorRestoreConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        if isinstance(self.cfg.backend, PgvectorBackend):
            return await run_pgvector_drill(ctx, self.cfg, self.cfg.backend)
        if self.cfg.backend.parquet is not None:
            from drwatch.validators.vector.pinecone_parquet import run_parquet_drill

            return await run_parquet_drill(ctx, self.cfg)
        return await run_pinecone_drill(ctx, self.cfg)


RECALL = Family("drwatch_vector_recall", "Recall@k of the restored vector index's ANN search against exact search at "
                "the latest vector restore drill (the lowest when several drills check the asset).", ("asset",))
RECALL_THRESHOLD = Family("drwatch_vector_recall_threshold", "The recall@k a vector restore drill requires "
                          "(min_recall).", ("asset",))
EXACT_MATCH = Family("drwatch_vector_exact_match_ratio", "Share of sample queries whose exact top-k on the restore "
                     "equals production's.", ("asset",))


def project(latest: Sequence[Latest]) -> Iterator[Sample]:
    """Per asset: the lowest recall and exact-match ratio of its drills, the highest recall they require."""
    recalls: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    exacts: dict[str, float] = {}
    for asset, _vcfg, result in latest:
        fig = result.figures
        if "recall_at_k" in fig:
            recalls[asset] = min(recalls.get(asset, fig["recall_at_k"]), fig["recall_at_k"])
        if "recall_threshold" in fig:
            thresholds[asset] = max(thresholds.get(asset, 0.0), fig["recall_threshold"])
        if "exact_match_ratio" in fig:
            exacts[asset] = min(exacts.get(asset, fig["exact_match_ratio"]), fig["exact_match_ratio"])
    for family, values in ((RECALL, recalls), (RECALL_THRESHOLD, thresholds), (EXACT_MATCH, exacts)):
        for asset, value in values.items():
            yield family.name, (asset,), value


PLUGIN = Plugin(VectorRestoreConfig, VectorRestoreValidator, (RECALL, RECALL_THRESHOLD, EXACT_MATCH), project,
                sweep=sweep_pinecone_orphans, orphans=stop_orphaned_servers)
