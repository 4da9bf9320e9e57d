"""Prometheus exposition: a custom collector that projects the current snapshot (no I/O at scrape).

Every series that reflects past results comes from the store-backed snapshot, so values after a restart
equal those before it. Labels are bounded: asset, validator, copy, location, rule, state, outcome - never
paths, keys or error text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from drwatch import __version__
from drwatch.config.model import Config
from drwatch.core.model import DURATION_BUCKETS, OUTCOMES, bucket_label
from drwatch.engine.process import ProcessState as ProcessState  # noqa: PLC0414 (re-exported: its old home)
from drwatch.metrics.groups import group_families
from drwatch.metrics.restore import restore_families
from drwatch.metrics.verify import verify_asset_families, verify_location_families
from drwatch.state.compliance import RULES, STATES, AssetVerdict, evaluate, evaluate_asset
from drwatch.state.rto import AssetProjection, project_asset
from drwatch.state.snapshot import Snapshot
from drwatch.validators import PLUGINS
from drwatch.validators.plugin import Latest

COPY_OBJECT_STATES = ("verified", "missing", "mismatch", "corrupt", "extra")


def process_families(proc: ProcessState) -> list[Metric]:
    """The families of this process (not of results): build, reload, start time, store queue."""
    info = GaugeMetricFamily("drwatch_build_info", "drwatch build information.", labels=["version"])
    info.add_metric([__version__], 1)
    g_reload = GaugeMetricFamily("drwatch_config_last_reload_successful",
                                 "Whether the last configuration reload attempt succeeded.")
    g_reload.add_metric([], 1 if proc.reload_successful else 0)
    g_reload_at = GaugeMetricFamily("drwatch_config_last_reload_success_timestamp_seconds",
                                    "Timestamp of the last successful configuration reload.")
    g_reload_at.add_metric([], proc.reload_success_at or proc.started_at)
    g_start = GaugeMetricFamily("drwatch_start_time_seconds", "Start time of the drwatch process.")
    g_start.add_metric([], proc.started_at)
    c_errors = CounterMetricFamily("drwatch_store_write_errors", "Failed attempts to write a result to the store.")
    c_errors.add_metric([], proc.store_errors)
    g_pending = GaugeMetricFamily("drwatch_store_pending_results",
                                  "Results held in memory waiting for the store to accept them.")
    g_pending.add_metric([], proc.results_pending)
    c_dropped = CounterMetricFamily("drwatch_store_dropped_results",
                                    "Results dropped (oldest first) because the store stayed away while the memory "
                                    "queue was full (limits.pending_results).")
    c_dropped.add_metric([], proc.results_dropped)
    return [info, g_reload, g_reload_at, g_start, c_errors, g_pending, c_dropped]


@dataclass(frozen=True)
class AssetStanding:
    """What the metrics show of an asset's compliance verdict (its details are for the API)."""

    states: tuple[str, ...]  # per rule in RULES order
    compliant: bool
    copies_verified: int
    recovery_point: float | None
    restore: AssetProjection | None = None  # the projected restore time (drwatch.state.rto)

    @classmethod
    def of(cls, verdict: AssetVerdict, restore: AssetProjection | None = None) -> AssetStanding:
        return cls(tuple(verdict.rules[rule].state.value for rule in RULES), verdict.compliant,
                   verdict.copies_verified, verdict.recovery_point, restore)

    @classmethod
    def evaluate(cls, cfg: Config, snap: Snapshot, name: str, now: float) -> AssetStanding:
        verdict = evaluate_asset(cfg, snap, name, now)
        return cls.of(verdict, project_asset(cfg, snap, verdict, now))


def asset_families(cfg: Config, snap: Snapshot, assets: Sequence[str],
                   standings: Mapping[str, AssetStanding]) -> list[Metric]:
    """Every family with series per asset, holding the series of ``assets`` only (in this order).

    The families are the same, in the same order, whatever ``assets`` holds: the exposition of all assets is
    the concatenation, family by family, of the series of each asset (so each asset's can be rendered alone
    and cached until its results change).
    """
    return [*_validator_families(cfg, snap, assets), *_figure_families(cfg, snap, assets),
            *plugin_families(cfg, snap, assets), *verify_asset_families(cfg, snap, assets),
            *_compliance_families(cfg, assets, standings), *_copy_families(cfg, snap, assets),
            *restore_families(assets, {a: s.restore for a, s in standings.items()})]


def global_families(cfg: Config, snap: Snapshot, now: float) -> list[Metric]:
    """The families not per asset: consistency groups, per-location counters."""
    return [*group_families(cfg, snap, now), *verify_location_families(cfg, snap)]


def standings(cfg: Config, snap: Snapshot, now: float) -> dict[str, AssetStanding]:
    return {name: AssetStanding.of(verdict, project_asset(cfg, snap, verdict, now))
            for name, verdict in evaluate(cfg, snap, now).items()}


class SnapshotCollector(Collector):
    """The whole exposition through prometheus-client, every series at every collect (the reference that
    :class:`drwatch.metrics.incremental.SnapshotRenderer` renders incrementally, byte for byte)."""

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
        yield from process_families(self._process)
        yield from asset_families(cfg, snap, list(cfg.assets), standings(cfg, snap, now))
        yield from global_families(cfg, snap, now)


def _validator_families(cfg: Config, snap: Snapshot, assets: Sequence[str]) -> list[Metric]:
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
    all_buckets = cfg.metrics.duration_histograms  # otherwise le="+Inf" only: count and sum, 3 series, not 18
    for asset_name in assets:
        for vcfg in cfg.assets[asset_name].validators:
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
                if all_buckets or math.isinf(le):
                    buckets.append(("+Inf" if math.isinf(le) else str(float(le)), float(cumulative)))
            duration.add_metric(labels, buckets, stats.duration_sum)
    return [configured, interval, max_age, outcome, runs, last_run, last_ok, last_fail, last_dur, duration, acked]


def _compliance_families(cfg: Config, assets: Sequence[str], standings: Mapping[str, AssetStanding]) -> list[Metric]:
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
    for name in assets:
        standing = standings[name]
        for rule, current in zip(RULES, standing.states, strict=True):
            for st in STATES:
                rule_state.add_metric([name, rule, st], 1 if st == current else 0)
        compliant.add_metric([name], 1 if standing.compliant else 0)
        verified.add_metric([name], standing.copies_verified)
        if standing.recovery_point is not None:
            rp.add_metric([name], standing.recovery_point)
        acfg = cfg.assets[name]
        rpo.add_metric([name], acfg.rpo.total_seconds())
        if acfg.rto is not None:
            rto.add_metric([name], acfg.rto.total_seconds())
    return [rule_state, compliant, verified, rp, rpo, rto]


def _copy_families(cfg: Config, snap: Snapshot, assets: Sequence[str]) -> list[Metric]:
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
    for name in assets:
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
    return [objects, copy_verified, copy_info, retain, copy_bytes]


def _latest_figures(snap: Snapshot, asset: str, validator: str) -> dict[str, float]:
    stats = snap.stats(asset, validator)
    return dict(stats.last_result.figures) if stats is not None and stats.last_result is not None else {}


def _figure_families(cfg: Config, snap: Snapshot, assets: Sequence[str]) -> list[Metric]:
    """Measurements of restore drills (any kind), projected from the figures of each one's latest result."""
    av = ["asset", "validator"]
    drill_seconds = GaugeMetricFamily("drwatch_drill_restore_duration_seconds",
                                      "Restore time of the latest restore drill (fetch + restore).", labels=av)
    drill_rows = GaugeMetricFamily("drwatch_drill_rows_restored",
                                   "Rows in the database the latest restore drill restored.", labels=av)
    for asset_name in assets:
        for vcfg in cfg.assets[asset_name].validators:
            figures = _latest_figures(snap, asset_name, vcfg.label)
            if "restore_seconds" in figures:
                drill_seconds.add_metric([asset_name, vcfg.label], figures["restore_seconds"])
            if "rows_restored" in figures:
                drill_rows.add_metric([asset_name, vcfg.label], figures["rows_restored"])
    return [drill_seconds, drill_rows]


def plugin_families(cfg: Config, snap: Snapshot, assets: Sequence[str]) -> list[Metric]:
    """The families every validator plugin declares (in plugin order), filled by its own projection of the
    latest results of its validators among ``assets`` (nothing here knows any kind)."""
    latest: dict[str, list[Latest]] = {}
    for asset_name in assets:
        for vcfg in cfg.assets[asset_name].validators:
            stats = snap.stats(asset_name, vcfg.label)
            if stats is not None and stats.last_result is not None:
                latest.setdefault(vcfg.kind, []).append(Latest(asset_name, vcfg, stats.last_result))
    out: list[Metric] = []
    for plugin in PLUGINS:
        families = {f.name: GaugeMetricFamily(f.name, f.help, labels=list(f.labels)) for f in plugin.families}
        if plugin.project is not None and plugin.kind in latest:
            for name, labels, value in plugin.project(latest[plugin.kind]):
                families[name].add_metric(list(labels), value)
        out.extend(families.values())
    return out


def make_registry(snapshot: Callable[[], Snapshot], process: ProcessState,
                  clock: Callable[[], float] = time.time) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, process, clock))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
