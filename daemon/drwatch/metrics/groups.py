"""Metric families of consistency groups, projected from the snapshot (no I/O).

Each value comes from the figures of the group's latest stored result, so after a restart the families are the
same as before it. (The families of the AI/ML drills are their plugins': drwatch.validators.vector.restore and
drwatch.validators.model.weights.)
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily, Metric

from drwatch.config.model import Config
from drwatch.state.consistency import GROUP_STATES, group_state
from drwatch.state.snapshot import Snapshot


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
