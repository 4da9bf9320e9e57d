"""Metric families of the verification economy, projected from the snapshot (no I/O at scrape).

Coverage and oldest read come from each copy's ledger summary as of its latest replica run (production's
too, ``copy="production"``, when a seal is the reference and production is verified under the ledger); the
request and egress counters from the store's persisted totals; the monthly cost from the summary and the
price table of the copy's location (:mod:`drwatch.pricing`; for production only the verification's egress
and requests: its storage is not a cost of the recovery posture). Labels: asset, copy, evidence, location,
operation, kind — all bounded by the configuration.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from drwatch.config import Config
from drwatch.ledger import EVIDENCE, CopySummary
from drwatch.pricing import COST_KINDS, monthly_cost
from drwatch.snapshot import Snapshot

PRODUCTION = "production"  # the ledger's name for production (a copy label can never be this)


def copy_costs(cfg: Config, summary: CopySummary) -> tuple[dict[str, float], str] | None:
    """Monthly cost by kind and the currency, when the copy's location has a price table."""
    loc = cfg.locations.get(summary.location)
    prices = getattr(loc, "pricing", None) if loc is not None else None
    if prices is None:
        return None
    return monthly_cost(prices, summary.bytes_by_class, summary.egress_bytes_per_day,
                        summary.requests_per_day), prices.currency


def verify_families(cfg: Config, snap: Snapshot) -> Iterator[Metric]:
    coverage = GaugeMetricFamily(
        "drwatch_verify_coverage_ratio",
        "Share of the copy's bytes proven within the asset's read_every period, by evidence (read, checksum, "
        "etag), at its latest replica run.", labels=["asset", "copy", "evidence"])
    oldest = GaugeMetricFamily(
        "drwatch_verify_oldest_read_timestamp_seconds",
        "Earliest last read-and-hash of any object of the copy (0 while some object was never read).",
        labels=["asset", "copy"])
    egress = CounterMetricFamily("drwatch_verify_egress_bytes",
                                 "Object bytes verification read from the location (persisted).", labels=["location"])
    requests = CounterMetricFamily("drwatch_verify_requests",
                                   "HTTP requests verification sent to the location, retries included (persisted).",
                                   labels=["location", "operation"])
    cost = GaugeMetricFamily("drwatch_cost_monthly_dollars",
                             "Monthly cost of the copy from the location's price table: storage, verification "
                             "egress and requests at the current pace.", labels=["asset", "copy", "kind"])
    for (asset, copy), summary in sorted(snap.verify.items()):
        acfg = cfg.assets.get(asset)
        if acfg is None or acfg.verification is None or (
                copy != PRODUCTION and copy not in {c.label for c in acfg.copies}):
            continue
        for evidence in EVIDENCE:
            coverage.add_metric([asset, copy, evidence], summary.coverage(evidence))
        oldest.add_metric([asset, copy], summary.oldest_read)
        costs = copy_costs(cfg, summary)
        if costs is not None:
            for kind in COST_KINDS:
                if copy != PRODUCTION or kind != "storage":
                    cost.add_metric([asset, copy, kind], costs[0][kind])
    for (location, name), value in sorted(snap.verify_counters.items()):
        if location not in cfg.locations:
            continue
        if name == "egress_bytes":
            egress.add_metric([location], float(value))
        elif name.startswith("requests:"):
            requests.add_metric([location, name.removeprefix("requests:")], float(value))
    yield from (coverage, oldest, egress, requests, cost)
