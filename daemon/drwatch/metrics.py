"""Prometheus exposition: a custom collector that projects the current snapshot (no I/O at scrape).

Every series that reflects past results comes from the store-backed snapshot, so values after a restart
equal those before it. Labels are bounded: asset, validator, copy, location, rule, state, outcome - never
paths, keys or error text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from drwatch import __version__
from drwatch.compliance import RULES, STATES, evaluate
from drwatch.config import Config
from drwatch.metrics_ml import ml_families
from drwatch.metrics_verify import verify_families
from drwatch.model import OUTCOMES
from drwatch.snapshot import Snapshot
from drwatch.store.base import DURATION_BUCKETS, bucket_label

COPY_OBJECT_STATES = ("verified", "missing", "mismatch", "corrupt", "extra")


@dataclass
class ProcessState:
    """Live, in-memory facts about this process (not results): reload status, start time."""

    started_at: float
    reload_successful: bool = True
    reload_success_at: float | None = None
    store_errors: int = 0
    results_pending: int = 0
    results_dropped: int = 0


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot], process: ProcessState,
                 clock: Callable[[], float] = time.time) -> None:
        self._snapshot = snapshot
        self._process = process
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # dynamic collector: skip the registry's duplicate check at registration

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        cfg = snap.config
        now = self._clock()
        proc = self._process

        info = GaugeMetricFamily("drwatch_build_info", "drwatch build information.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        g = GaugeMetricFamily("drwatch_config_last_reload_successful",
                              "Whether the last configuration reload attempt succeeded.")
        g.add_metric([], 1 if proc.reload_successful else 0)
        yield g
        g = GaugeMetricFamily("drwatch_config_last_reload_success_timestamp_seconds",
                              "Timestamp of the last successful configuration reload.")
        g.add_metric([], proc.reload_success_at or proc.started_at)
        yield g
        g = GaugeMetricFamily("drwatch_start_time_seconds", "Start time of the drwatch process.")
        g.add_metric([], proc.started_at)
        yield g
        c = CounterMetricFamily("drwatch_store_write_errors", "Failed attempts to write a result to the store.")
        c.add_metric([], proc.store_errors)
        yield c
        g = GaugeMetricFamily("drwatch_store_pending_results",
                              "Results held in memory waiting for the store to accept them.")
        g.add_metric([], proc.results_pending)
        yield g
        c = CounterMetricFamily("drwatch_store_dropped_results",
                                "Results dropped (oldest first) because the store stayed away while the memory "
                                "queue was full (limits.pending_results).")
        c.add_metric([], proc.results_dropped)
        yield c

        av = ["asset", "validator"]
        configured = GaugeMetricFamily("drwatch_validator_info", "A configured validator (1).",
                                       labels=[*av, "kind"])
        interval = GaugeMetricFamily("drwatch_validator_interval_seconds",
                                     "Nominal schedule period of the validator.", labels=av)
        max_age = GaugeMetricFamily("drwatch_validator_max_age_seconds",
                                    "Age after which the validator's latest result is stale.", labels=av)
        outcome = GaugeMetricFamily("drwatch_validator_outcome",
                                    "Outcome of the latest run (1 for the latest outcome, 0 for the others).",
                                    labels=[*av, "outcome"])
        runs = CounterMetricFamily("drwatch_validator_runs", "Validator runs by outcome.",
                                   labels=[*av, "outcome"])
        last_run = GaugeMetricFamily("drwatch_validator_last_run_timestamp_seconds",
                                     "When the latest run finished.", labels=av)
        last_ok = GaugeMetricFamily("drwatch_validator_last_success_timestamp_seconds",
                                    "When the latest successful (ok) run finished.", labels=av)
        last_fail = GaugeMetricFamily("drwatch_validator_last_failure_timestamp_seconds",
                                      "When the latest failed run (bad backup) finished.", labels=av)
        last_dur = GaugeMetricFamily("drwatch_validator_last_duration_seconds",
                                     "Duration of the latest run.", labels=av)
        duration = HistogramMetricFamily("drwatch_validator_duration_seconds", "Duration of validator runs.",
                                         labels=av)
        acked = GaugeMetricFamily("drwatch_validator_ack_timestamp_seconds",
                                  "When the validator's failures were last acknowledged (drwatch ack); who and "
                                  "why are in drwatch status.", labels=av)
        for asset_name, vcfg in cfg.iter_validators():
            labels = [asset_name, vcfg.label]
            configured.add_metric([*labels, vcfg.kind], 1)
            interval.add_metric(labels, vcfg.schedule.interval_seconds())
            max_age.add_metric(labels, vcfg.effective_max_age(cfg))
            if (ack := snap.acks.get((asset_name, vcfg.label))) is not None:
                acked.add_metric(labels, ack.created_at)
            stats = snap.stats(asset_name, vcfg.label)
            latest = stats.last_result.outcome.value if stats and stats.last_result else None
            for o in OUTCOMES:
                runs.add_metric([*labels, o], float(stats.runs.get(o, 0)) if stats else 0.0)
                if latest is not None:
                    outcome.add_metric([*labels, o], 1 if o == latest else 0)
            if stats is None:
                continue
            if stats.last_run_at is not None:
                last_run.add_metric(labels, stats.last_run_at)
            if stats.last_success_at is not None:
                last_ok.add_metric(labels, stats.last_success_at)
            if stats.last_failure_at is not None:
                last_fail.add_metric(labels, stats.last_failure_at)
            if stats.last_result is not None:
                last_dur.add_metric(labels, stats.last_result.duration)
            cumulative = 0
            buckets = []
            for le in DURATION_BUCKETS:
                cumulative += stats.buckets.get(bucket_label(le), 0)
                buckets.append(("+Inf" if math.isinf(le) else str(float(le)), float(cumulative)))
            duration.add_metric(labels, buckets, stats.duration_sum)
        yield from (configured, interval, max_age, outcome, runs, last_run, last_ok, last_fail, last_dur,
                    duration, acked)
        yield from _figure_families(cfg, snap)
        yield from ml_families(cfg, snap, now)
        yield from verify_families(cfg, snap)

        verdicts = evaluate(cfg, snap, now)
        rule_state = GaugeMetricFamily("drwatch_asset_rule_state",
                                       "3-2-1-1-0 rule state per asset (1 for the current state).",
                                       labels=["asset", "rule", "state"])
        compliant = GaugeMetricFamily("drwatch_asset_compliant",
                                      "1 when every 3-2-1-1-0 rule passes for the asset.", labels=["asset"])
        verified = GaugeMetricFamily("drwatch_asset_copies_verified",
                                     "Copies (production included) proven to hold the newest recovery point.",
                                     labels=["asset"])
        rp = GaugeMetricFamily("drwatch_asset_recovery_point_timestamp_seconds",
                               "Time of the newest recovery point observed.", labels=["asset"])
        rpo = GaugeMetricFamily("drwatch_asset_rpo_seconds", "Recovery point objective.", labels=["asset"])
        rto = GaugeMetricFamily("drwatch_asset_rto_seconds", "Recovery time objective.", labels=["asset"])
        for name, verdict in verdicts.items():
            for rule in RULES:
                current = verdict.rules[rule].state.value
                for st in STATES:
                    rule_state.add_metric([name, rule, st], 1 if st == current else 0)
            compliant.add_metric([name], 1 if verdict.compliant else 0)
            verified.add_metric([name], verdict.copies_verified)
            if verdict.recovery_point is not None:
                rp.add_metric([name], verdict.recovery_point)
            acfg = cfg.assets[name]
            rpo.add_metric([name], acfg.rpo.total_seconds())
            if acfg.rto is not None:
                rto.add_metric([name], acfg.rto.total_seconds())
        yield from (rule_state, compliant, verified, rp, rpo, rto)

        objects = GaugeMetricFamily("drwatch_copy_objects", "Objects (files) of a copy by state at the last check.",
                                    labels=["asset", "copy", "state"])
        copy_verified = GaugeMetricFamily("drwatch_copy_verified",
                                          "1 when the copy's latest check proved the recovery point.",
                                          labels=["asset", "copy"])
        retain = GaugeMetricFamily("drwatch_copy_lock_retain_until_min_timestamp_seconds",
                                   "Earliest Object Lock retain-until among the objects of the copy's recovery point.",
                                   labels=["asset", "copy"])
        copy_bytes = CounterMetricFamily("drwatch_copy_bytes_verified",
                                         "Bytes of the copy proven equal to the recovery point (persisted).",
                                         labels=["asset", "copy"])
        copy_info = GaugeMetricFamily("drwatch_copy_info", "Observed facts about a copy (1).",
                                      labels=["asset", "copy", "location", "region", "provider", "media"])
        for name in cfg.assets:
            for copy, fact in sorted(snap.copy_facts(name).items()):
                rep = fact.report
                for st in COPY_OBJECT_STATES:
                    if st in rep.objects:
                        objects.add_metric([name, copy, st], rep.objects[st])
                copy_verified.add_metric([name, copy], 1 if rep.state.value == "verified" else 0)
                copy_info.add_metric([name, copy, rep.location, rep.region, rep.provider, rep.media], 1)
                if rep.retain_until_min is not None:
                    retain.add_metric([name, copy], rep.retain_until_min)
            for copy_ref in ["production", *(c.label for c in cfg.assets[name].copies)]:
                verified_bytes = snap.copy_bytes.get((name, copy_ref))
                if verified_bytes is not None:
                    copy_bytes.add_metric([name, copy_ref], float(verified_bytes))
        yield from (objects, copy_verified, copy_info, retain, copy_bytes)


def _latest_figures(snap: Snapshot, asset: str, validator: str) -> dict[str, float]:
    stats = snap.stats(asset, validator)
    return dict(stats.last_result.figures) if stats is not None and stats.last_result is not None else {}


def _figure_families(cfg: Config, snap: Snapshot) -> Iterator[Metric]:
    """Measurements of validators (restore drills, ...), projected from the figures of each one's latest result."""
    av = ["asset", "validator"]
    drill_seconds = GaugeMetricFamily("drwatch_drill_restore_duration_seconds",
                                      "Restore time of the latest restore drill (fetch + restore).", labels=av)
    drill_rows = GaugeMetricFamily("drwatch_drill_rows_restored",
                                   "Rows in the database the latest restore drill restored.", labels=av)
    replica_lag = GaugeMetricFamily("drwatch_replica_lag_seconds",
                                    "Replication lag of the asset's standby at the latest check (the largest when "
                                    "several are checked).", labels=["asset"])
    rds = GaugeMetricFamily("drwatch_rds_snapshot_timestamp_seconds",
                            "Creation time of the newest available RDS snapshot per region at the latest check.",
                            labels=["asset", "region"])
    lags: dict[str, float] = {}
    snapshots: dict[tuple[str, str], float] = {}
    for asset_name, vcfg in cfg.iter_validators():
        figures = _latest_figures(snap, asset_name, vcfg.label)
        if "restore_seconds" in figures:
            drill_seconds.add_metric([asset_name, vcfg.label], figures["restore_seconds"])
        if "rows_restored" in figures:
            drill_rows.add_metric([asset_name, vcfg.label], figures["rows_restored"])
        if vcfg.kind == "postgres_replica_lag" and "lag_seconds" in figures:
            lags[asset_name] = max(lags.get(asset_name, 0.0), figures["lag_seconds"])
        if vcfg.kind == "rds_snapshot":
            for key, value in figures.items():
                name, _, region = key.partition(".")
                if name == "snapshot_timestamp_seconds" and region:
                    snapshots[(asset_name, region)] = max(snapshots.get((asset_name, region), 0.0), value)
    for asset_name, lag in lags.items():
        replica_lag.add_metric([asset_name], lag)
    for (asset_name, region), ts in sorted(snapshots.items()):
        rds.add_metric([asset_name, region], ts)
    yield from (drill_seconds, drill_rows, replica_lag, rds)


def make_registry(snapshot: Callable[[], Snapshot], process: ProcessState,
                  clock: Callable[[], float] = time.time) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, process, clock))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
