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
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from drwatch.core.errors import ConfigProblem
from drwatch.core.extras import NUMPY, PARQUET_VECTORS, PINECONE_EXACT, Need
from drwatch.core.model import Report
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.plugin import Family, Latest, Plugin, Sample
from drwatch.validators.vector.pgvector import PgvectorBackend, run_pgvector_drill
from drwatch.validators.vector.pinecone import PineconeBackend, run_pinecone_drill, sweep_pinecone_orphans
from drwatch.validators.vector.vectormath import Metric

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

VectorBackend = Annotated[PgvectorBackend | PineconeBackend, Field(discriminator="type")]

# Figure names shared by the backends (the metric families below project some of them).
FIGURES = ("recall_at_k", "exact_match_ratio", "recall_threshold", "queries", "k", "rows_restored",
           "restore_seconds", "id_coverage_ratio", "vector_checksum_mismatches")


class VectorRestoreConfig(ValidatorConfigBase):
    kind: Literal["vector_restore"] = "vector_restore"
    backend: VectorBackend
    k: int = Field(default=10, ge=1, le=1000, description="neighbours per query")
    queries: int = Field(default=20, ge=1, le=10_000, description="query vectors drawn from stored vectors")
    query_vectors: str | None = Field(default=None, min_length=1,
                                      description="a JSON Lines or .npy file of query vectors used instead of "
                                                  "drawn ones (relative to the config file)")
    min_recall: float = Field(default=0.9, ge=0.0, le=1.0, description="least recall@k of the restored ANN index")
    min_exact_match: float = Field(default=1.0, ge=0.0, le=1.0,
                                   description="least share of queries whose exact top-k equal production's")
    sample: int = Field(default=1000, ge=0, le=1_000_000, description="vectors compared by checksum")
    metric: Metric = "cosine"
    seed: int = Field(default=0, ge=0, description="samples and query vectors are drawn deterministically")
    max_missing_ratio: float = Field(default=0.001, ge=0.0, le=1.0,
                                     description="share of production's ids the restore may lack")
    max_mismatch_ratio: float = Field(default=0.001, ge=0.0, le=1.0,
                                      description="share of sampled vectors whose checksum may differ")
    distance_tolerance: float = Field(default=1e-6, ge=0.0, le=1.0,
                                      description="distances closer than this are ties")

    def locations(self, asset: AssetView) -> list[str]:
        if isinstance(self.backend, PgvectorBackend):
            return [self.backend.location]
        return super().locations(asset)

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        problems = self.backend.cross_check(cfg) if isinstance(self.backend, PgvectorBackend) else []
        if self.query_vectors is not None and not cfg.resolve_path(self.query_vectors).is_file():
            problems.append(ConfigProblem("query_vectors", f"no such file: {cfg.resolve_path(self.query_vectors)}"))
        return problems

    def needs(self) -> list[Need]:
        out = []
        if self.query_vectors is not None and self.query_vectors.lower().endswith(".npy"):
            out.append(Need("query_vectors", NUMPY, "extra_missing", "a .npy matrix of query vectors"))
        if isinstance(self.backend, PgvectorBackend):
            if self.backend.pattern.lower().endswith(".parquet"):
                out.append(Need("backend.pattern", PARQUET_VECTORS, "extra_missing", "Parquet recovery points"))
        elif self.backend.exact_scan_max_vectors > 0:
            out.append(Need("backend.exact_scan_max_vectors", PINECONE_EXACT, "missing_extra",
                            "the exact top-k of namespaces up to this size"))
        return out


class VectorRestoreValidator:
    kind: ClassVar[str] = "vector_restore"

    def __init__(self, cfg: VectorRestoreConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        if isinstance(self.cfg.backend, PgvectorBackend):
            return await run_pgvector_drill(ctx, self.cfg, self.cfg.backend)
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
                sweep=sweep_pinecone_orphans)
