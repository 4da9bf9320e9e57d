"""Metric families of the verification economy, projected from the snapshot (no I/O at scrape).

Coverage and oldest read come from each copy's ledger summary as of its latest replica run (production's
too, ``copy="production"``, when a seal is the reference and production is verified under the ledger); the
request and egress counters from the store's persisted totals; the monthly cost from the summary and the
price table of the copy's location (:mod:`drwatch.state.pricing`; for production only the verification's egress
and requests: its storage is not a cost of the recovery posture). Labels: asset, copy, evidence, location,
operation, kind — all bounded by the configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from drwatch.config.model import Config
from drwatch.state.pricing import verified_copies
from drwatch.state.snapshot import Snapshot
from drwatch.validators.copies.ledger import EVIDENCE


def verify_asset_families(cfg: Config, snap: Snapshot, assets: Sequence[str]) -> list[Metric]:
    """The per-copy families, holding the series of ``assets`` only (copies in name order)."""
    coverage = GaugeMetricFamily(
        "drwatch_verify_coverage_ratio",
        "Share of the copy's bytes proven within the asset's read_every period, by evidence (read, checksum, "
        "etag), at its latest replica run.", labels=["asset", "copy", "evidence"])
    oldest = GaugeMetricFamily(
        "drwatch_verify_oldest_read_timestamp_seconds",
        "Earliest last read-and-hash of any object of the copy (0 while some object was never read).",
        labels=["asset", "copy"])
    cost = GaugeMetricFamily("drwatch_cost_monthly_dollars",
                             "Monthly cost of the copy from the location's price table: storage, verification "
                             "egress and requests at the current pace.", labels=["asset", "copy", "kind"])
    for asset, copy, summary, costs in verified_copies(cfg, snap.verify, assets):
        for evidence in EVIDENCE:
            coverage.add_metric([asset, copy, evidence], summary.coverage(evidence))
        oldest.add_metric([asset, copy], summary.oldest_read)
        for kind, dollars in (costs[0] if costs is not None else {}).items():
            cost.add_metric([asset, copy, kind], dollars)
    return [coverage, oldest, cost]


def verify_location_families(cfg: Config, snap: Snapshot) -> list[Metric]:
    """The persisted request and egress counters per location."""
    egress = CounterMetricFamily("drwatch_verify_egress_bytes",
                                 "Object bytes verification read from the location (persisted).", labels=["location"])
    requests = CounterMetricFamily("drwatch_verify_requests",
                                   "HTTP requests verification sent to the location, retries included (persisted).",
                                   labels=["location", "operation"])
    for (location, name), value in sorted(snap.verify_counters.items()):
        if location not in cfg.locations:
            continue
        if name == "egress_bytes":
            egress.add_metric([location], float(value))
        elif name.startswith("requests:"):
            requests.add_metric([location, name.removeprefix("requests:")], float(value))
    return [egress, requests]


def verify_families(cfg: Config, snap: Snapshot) -> list[Metric]:
    """Every verification-economy family, for all assets."""
    return [*verify_asset_families(cfg, snap, list(cfg.assets)), *verify_location_families(cfg, snap)]
