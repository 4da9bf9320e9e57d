"""The comparison of a restored Pinecone index with production (read-only: describe, stats, list, fetch,
query): vector count against the backup, id coverage, checksums of a sample, the exact top-k on both sides
where the namespace is small enough to read whole (else the sample and queries are drawn from production's id
listing), and the restored index's recall@k against production."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drwatch.core.cancels import TaskGroup
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Severity

if TYPE_CHECKING:
    from array import array

    from drwatch.validators.vector.config import PineconeBackend, VectorRestoreConfig
    from drwatch.validators.vector.pinecone_api import PineconeClient
    from drwatch.validators.vector.pinecone_model import Backup, IndexInfo
    from drwatch.validators.vector.vectormath import Hit, Metric

_METRICS: dict[str, Metric] = {"cosine": "cosine", "dotproduct": "inner_product", "euclidean": "l2"}
Bad = Callable[[str, str], None]


@dataclass
class _Side:
    """What one way of comparing read: the sample's vectors on both sides, the id coverage, the queries and
    the restored index's recall."""

    sample: list[str]
    prod: dict[str, array[float]]
    temp: dict[str, array[float]]
    coverage: float
    queries: Sequence[Sequence[float]]
    recall: float


async def _read_all(client: PineconeClient, host: str, namespace: str) -> dict[str, array[float]]:
    out: dict[str, array[float]] = {}
    async for page in client.list_ids(host, namespace):
        out.update(await client.fetch(host, page, namespace))
    return out


async def _stream_samples(client: PineconeClient, host: str, namespace: str, sizes: Sequence[tuple[int, int]]
                          ) -> list[list[str]]:
    """Deterministic samples (n, seed) of every id in a namespace, in memory bounded by the sample sizes."""
    from drwatch.validators.vector.vectormath import sample_ids

    samples: list[list[str]] = [[] for _ in sizes]
    async for page in client.list_ids(host, namespace):
        samples = [sample_ids([*cur, *page], n, seed) for cur, (n, seed) in zip(samples, sizes, strict=True)]
    return samples


async def _query_all(client: PineconeClient, host: str, vectors: Sequence[Sequence[float]], k: int,
                     namespace: str) -> list[list[str]]:
    sem = asyncio.Semaphore(4)

    async def one(vec: Sequence[float]) -> list[str]:
        async with sem:
            return [m.id for m in await client.query(host, vec, k, namespace)]

    async with TaskGroup() as tg:  # 3.11: its own cancel withdrawn (core.cancels)
        tasks = [tg.create_task(one(v)) for v in vectors]
    return [t.result() for t in tasks]


def _digests(vectors: dict[str, array[float]], ids: Sequence[str]) -> dict[str, str]:
    from drwatch.validators.vector.vectormath import vector_digest

    return {i: vector_digest(vectors[i]) for i in ids if i in vectors}


async def compare(cfg: VectorRestoreConfig, client: PineconeClient, prod: IndexInfo, temp: IndexInfo,
                  backup: Backup, bad: Bad, findings: list[Finding], figures: dict[str, float],
                  configured: list[list[float]] | None) -> None:
    backend: PineconeBackend = cfg.backend  # type: ignore[assignment]
    ns = backend.namespace
    metric = _METRICS.get(prod.metric)
    if metric is None:
        raise ValidatorError("unsupported_metric", f"index {prod.name} uses metric {prod.metric!r}")
    if "metric" in cfg.model_fields_set and cfg.metric != metric:
        findings.append(Finding(Severity.WARNING, "metric_mismatch", f"configured metric {cfg.metric} differs from "
                                f"the index's {prod.metric}; the index's is used", prod.name))
    pstats, tstats = await asyncio.gather(client.describe_index_stats(prod.host),
                                          client.describe_index_stats(temp.host))
    figures["rows_restored"] = float(tstats.total)
    expected = backup.record_count
    if expected is not None and abs(tstats.total - expected) > cfg.max_missing_ratio * expected:
        bad("count_mismatch", f"restored index holds {tstats.total} vectors, the backup {expected}")
    prod_n, temp_n = pstats.namespaces.get(ns, 0), tstats.namespaces.get(ns, 0)
    if prod_n == 0:
        raise ValidatorError("production_empty", f"namespace {ns!r} of index {prod.name} holds no vectors")
    if max(prod_n, temp_n) <= backend.exact_scan_max_vectors:
        side = await _exact(cfg, client, prod, temp, metric, bad, figures, configured)
    else:
        side = await _sampled(cfg, client, prod, temp, configured)
        findings.append(Finding(Severity.WARNING, "exact_check_skipped",
                                f"namespace holds {max(prod_n, temp_n)} vectors, more than exact_scan_max_vectors="
                                f"{backend.exact_scan_max_vectors}: exact top-k not compared; recall is the "
                                "restored index's answers against production's", prod.name))
    await _judge(cfg, side, bad, figures)


async def _exact(cfg: VectorRestoreConfig, client: PineconeClient, prod: IndexInfo, temp: IndexInfo,
                 metric: Metric, bad: Bad, figures: dict[str, float], configured: list[list[float]] | None) -> _Side:
    """Both namespaces read whole: the exact top-k on both sides, recall with ties within the tolerance."""
    from drwatch.validators.vector import vectormath as vm

    ns, k = cfg.backend.namespace, cfg.k  # type: ignore[union-attr]
    try:
        import numpy  # noqa: F401  (exact_topk needs it: fail before reading everything)
    except ImportError:
        from drwatch.core.extras import PINECONE_EXACT

        raise ValidatorError("extra_missing", f"exact top-k needs numpy: {PINECONE_EXACT.install}") from None
    pv, tv = await _read_all(client, prod.host, ns), await _read_all(client, temp.host, ns)
    prod_ids = sorted(pv)
    coverage = len(set(prod_ids) & tv.keys()) / len(prod_ids)
    sample, qids = await asyncio.to_thread(lambda: (vm.sample_ids(prod_ids, cfg.sample, cfg.seed),
                                                     vm.sample_ids(prod_ids, cfg.queries, cfg.seed + 1)))
    qvecs: Sequence[Sequence[float]] = configured if configured is not None else [pv[i] for i in qids]
    ann = await _query_all(client, temp.host, qvecs, k, ns)
    temp_ids = sorted(tv)

    def exact() -> tuple[list[list[Hit]], list[list[Hit]], list[list[Hit]]]:
        pe = vm.exact_topk(list(pv.values()), list(pv), qvecs, k + 1, metric)
        te = vm.exact_topk([tv[i] for i in temp_ids], temp_ids, qvecs, k + 1, metric) if tv else \
            [[] for _ in qvecs]
        hits = [[(i, vm.distance(q, tv[i], metric)) for i in ids if i in tv] for q, ids in zip(qvecs, ann,
                                                                                          strict=True)]
        return pe, te, hits

    prod_exact, temp_exact, ann_hits = await asyncio.to_thread(exact)
    ratio, _ = vm.exact_topk_match(prod_exact, temp_exact, k, cfg.distance_tolerance)
    recall = vm.recall_at_k_ties(ann_hits, [h[:k] for h in prod_exact], k, cfg.distance_tolerance)
    figures["exact_match_ratio"] = ratio
    if ratio < cfg.min_exact_match:
        bad("exact_topk_mismatch", f"exact top-{k} agree with production for {ratio:.1%} of {len(qvecs)} "
                                   f"queries (at least {cfg.min_exact_match:.1%} required)")
    return _Side(sample, pv, tv, coverage, qvecs, recall)


async def _sampled(cfg: VectorRestoreConfig, client: PineconeClient, prod: IndexInfo, temp: IndexInfo,
                   configured: list[list[float]] | None) -> _Side:
    """Too many vectors to read whole: a sample and queries drawn from production's id listing; recall is the
    restored index's answers against production's."""
    from drwatch.validators.vector import vectormath as vm

    ns, k = cfg.backend.namespace, cfg.k  # type: ignore[union-attr]
    sample, qids = await _stream_samples(client, prod.host, ns, [
        (cfg.sample, cfg.seed), (cfg.queries if configured is None else 0, cfg.seed + 1)])
    pv, tv = await client.fetch(prod.host, sample, ns), await client.fetch(temp.host, sample, ns)
    coverage = len(pv.keys() & tv.keys()) / len(pv) if pv else 1.0
    qvecs: Sequence[Sequence[float]]
    if configured is not None:
        qvecs = configured
    else:
        qsrc = await client.fetch(prod.host, qids, ns)
        qvecs = [qsrc[i] for i in qids if i in qsrc]
    prod_ann = await _query_all(client, prod.host, qvecs, k, ns)
    ann = await _query_all(client, temp.host, qvecs, k, ns)
    recall = vm.recall_at_k(ann, prod_ann, k) if qvecs else 1.0
    return _Side(sample, pv, tv, coverage, qvecs, recall)


async def _judge(cfg: VectorRestoreConfig, side: _Side, bad: Bad, figures: dict[str, float]) -> None:
    pd = await asyncio.to_thread(_digests, side.prod, side.sample)
    td = await asyncio.to_thread(_digests, side.temp, side.sample)
    both = [i for i in side.sample if i in pd and i in td]
    mismatches = sum(1 for i in both if pd[i] != td[i])
    coverage, recall = side.coverage, side.recall
    figures.update({"id_coverage_ratio": coverage, "vector_checksum_mismatches": float(mismatches),
                    "recall_at_k": recall, "queries": float(len(side.queries))})
    if 1.0 - coverage > cfg.max_missing_ratio:
        bad("missing_rows", f"{1.0 - coverage:.2%} of production's vectors are missing from the restore "
                            f"(at most {cfg.max_missing_ratio:.2%} allowed)")
    if both and mismatches / len(both) > cfg.max_mismatch_ratio:
        bad("vector_mismatch", f"{mismatches} of {len(both)} sampled vectors differ from production")
    if recall < cfg.min_recall:
        bad("recall_low", f"recall@{cfg.k} of the restored index is {recall:.3f} (at least {cfg.min_recall} "
                          "required)")
