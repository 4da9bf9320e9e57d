"""Metric families of the AI/ML drills and consistency groups, projected from the snapshot (no I/O).

Each value comes from the figures or copy reports of a validator's latest stored result, so after a restart
the families are the same as before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from drwatch.config.model import Config
from drwatch.core.model import Result
from drwatch.state.consistency import GROUP_STATES, group_state
from drwatch.state.snapshot import Snapshot

MODEL_FILE_STATES = ("verified", "missing", "mismatch", "corrupt", "extra")


def _latest(snap: Snapshot, asset: str, validator: str) -> Result | None:
    stats = snap.stats(asset, validator)
    return stats.last_result if stats is not None else None


def _lowest(values: dict[str, float], asset: str, value: float) -> None:
    values[asset] = min(values.get(asset, value), value)


def ml_asset_families(cfg: Config, snap: Snapshot, assets: Sequence[str]) -> list[Metric]:
    """The per-asset families of the AI/ML drills, holding the series of ``assets`` only."""
    recall = GaugeMetricFamily("drwatch_vector_recall",
                               "Recall@k of the restored vector index's ANN search against exact search at the "
                               "latest vector restore drill (the lowest when several drills check the asset).",
                               labels=["asset"])
    recall_min = GaugeMetricFamily("drwatch_vector_recall_threshold",
                                   "The recall@k a vector restore drill requires (min_recall).", labels=["asset"])
    exact = GaugeMetricFamily("drwatch_vector_exact_match_ratio",
                              "Share of sample queries whose exact top-k on the restore equals production's.",
                              labels=["asset"])
    golden = GaugeMetricFamily("drwatch_model_golden_similarity",
                               "Lowest cosine similarity between the restored model's outputs and the recorded "
                               "goldens at the latest inference smoke test.", labels=["asset"])
    golden_min = GaugeMetricFamily("drwatch_model_golden_similarity_threshold",
                                   "The golden similarity an inference smoke test requires.", labels=["asset"])
    files = GaugeMetricFamily("drwatch_model_files", "Files of a model copy by state at the latest model check.",
                              labels=["asset", "copy", "state"])
    recalls: dict[str, float] = {}
    recall_thresholds: dict[str, float] = {}
    exacts: dict[str, float] = {}
    goldens: dict[str, float] = {}
    golden_thresholds: dict[str, float] = {}
    for asset, vcfg in ((a, v) for a in assets for v in cfg.assets[a].validators):
        res = _latest(snap, asset, vcfg.label)
        if res is None:
            continue
        fig = res.figures
        kind: str = vcfg.kind
        if kind == "vector_restore":
            if "recall_at_k" in fig:
                _lowest(recalls, asset, fig["recall_at_k"])
            if "recall_threshold" in fig:
                recall_thresholds[asset] = max(recall_thresholds.get(asset, 0.0), fig["recall_threshold"])
            if "exact_match_ratio" in fig:
                _lowest(exacts, asset, fig["exact_match_ratio"])
        elif kind == "model_weights":
            if "golden_similarity" in fig:
                _lowest(goldens, asset, fig["golden_similarity"])
            if "golden_similarity_threshold" in fig:
                golden_thresholds[asset] = max(golden_thresholds.get(asset, -1.0), fig["golden_similarity_threshold"])
            for rep in res.copies:
                for state in MODEL_FILE_STATES:
                    if state in rep.objects:
                        files.add_metric([asset, rep.copy, state], rep.objects[state])
    for asset in assets:
        for family, values in ((recall, recalls), (recall_min, recall_thresholds), (exact, exacts),
                               (golden, goldens), (golden_min, golden_thresholds)):
            if asset in values:
                family.add_metric([asset], values[asset])
    return [recall, recall_min, exact, golden, golden_min, files]


def group_families(cfg: Config, snap: Snapshot, now: float) -> list[Metric]:
    state = GaugeMetricFamily("drwatch_consistency_group_state",
                              "State of a consistency group (1 for the current state): consistent, skewed, "
                              "inconsistent (model stamp or documents), unknown (not checked, could not check, "
                              "stale).", labels=["group", "state"])
    skew = GaugeMetricFamily("drwatch_consistency_group_skew_seconds",
                             "Spread of the members' newest proven recovery points at the latest check.",
                             labels=["group"])
    max_skew = GaugeMetricFamily("drwatch_consistency_group_max_skew_seconds",
                                 "The skew a consistency group allows.", labels=["group"])
    point = GaugeMetricFamily("drwatch_consistency_group_recovery_point_timestamp_seconds",
                              "Point in time of the newest consistent set of the members' recovery points.",
                              labels=["group"])
    for name, gcfg in sorted(cfg.consistency_groups.items()):
        current, res = group_state(cfg, snap, name, now)
        for st in GROUP_STATES:
            state.add_metric([name, st], 1 if st == current.value else 0)
        max_skew.add_metric([name], gcfg.max_skew.total_seconds())
        if res is not None:
            if "skew_seconds" in res.figures:
                skew.add_metric([name], res.figures["skew_seconds"])
            if "consistent_set_timestamp_seconds" in res.figures:
                point.add_metric([name], res.figures["consistent_set_timestamp_seconds"])
    return [state, skew, max_skew, point]
