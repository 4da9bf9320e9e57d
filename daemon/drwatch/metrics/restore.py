"""The restore-time model's series (:mod:`drwatch.state.rto`): projected restore time per asset and per copy,
with its inputs as figures. Labels: asset, copy (bounded by the configuration)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from drwatch.config.model import Config
from drwatch.state.rto import AssetProjection, drill_location
from drwatch.state.rto_drills import settled, throughput
from drwatch.state.snapshot import Snapshot

_AC = ["asset", "copy"]


def restore_families(assets: Sequence[str], projections: Mapping[str, AssetProjection | None]) -> list[Metric]:
    asset_seconds = GaugeMetricFamily(
        "drwatch_asset_restore_projected_seconds",
        "Projected time to restore the newest recovery point from the fastest copy that counts for the "
        "copies rule (drwatch_copy_restore_best names it).", labels=["asset"])
    size = GaugeMetricFamily("drwatch_asset_restore_size_bytes",
                             "Bytes of the newest recovery point the projection restores.", labels=["asset"])
    error = GaugeMetricFamily("drwatch_asset_restore_projection_error_ratio",
                              "(projected - measured) / measured restore time of the latest restore drill, "
                              "projected from the samples recorded before it.", labels=["asset"])
    measured = GaugeMetricFamily("drwatch_asset_restore_measured_seconds",
                                 "Restore time the latest compared restore drill measured.", labels=["asset"])
    copy_seconds = GaugeMetricFamily("drwatch_copy_restore_projected_seconds",
                                     "Projected time to restore the newest recovery point from this copy.", labels=_AC)
    best = GaugeMetricFamily("drwatch_copy_restore_best",
                             "1 for the copy the asset's projected restore time is judged by (only that copy).",
                             labels=_AC)
    rate = GaugeMetricFamily("drwatch_copy_restore_throughput_bytes_per_second",
                             "Read throughput of the copy's location (measured, else declared).", labels=_AC)
    retrieval = GaugeMetricFamily("drwatch_copy_restore_retrieval_seconds",
                                  "Time before the first byte: storage class retrieval plus declared retrieval.",
                                  labels=_AC)
    judged = GaugeMetricFamily("drwatch_asset_restore_judged",
                               "For an asset with an RTO: 1 when its projected restore time is judged against it, "
                               "0 when it cannot be (a counted copy without a projection; finding rto_not_judged).",
                               labels=["asset"])
    fixed = GaugeMetricFamily("drwatch_asset_restore_fixed_seconds",
                              "Restore work beyond reading (measured by the asset's drills), scaled to the size.",
                              labels=["asset"])
    for name in assets:
        p = projections.get(name)
        if p is None:
            continue
        if p.seconds is not None:
            asset_seconds.add_metric([name], p.seconds)
        if p.rto is not None and any(c.counted for c in p.copies):
            judged.add_metric([name], 1.0 if p.seconds is not None else 0.0)
        sizes = [c.size_bytes for c in p.copies if c.size_bytes is not None]
        if sizes:
            size.add_metric([name], sizes[0])
        if any(c.fixed_seconds for c in p.copies):
            fixed.add_metric([name], max(c.fixed_seconds for c in p.copies))
        if (latest := p.drills.latest) is not None:
            error.add_metric([name], latest.error)
            measured.add_metric([name], latest.measured)
        for c in p.copies:  # series only where there is something to say (the series budget)
            labels = [name, c.copy]
            if c.copy == p.copy:
                best.add_metric(labels, 1)
            if c.retrieval_seconds:
                retrieval.add_metric(labels, c.retrieval_seconds)
            if c.seconds is not None:
                copy_seconds.add_metric(labels, c.seconds)
            if c.throughput is not None:
                rate.add_metric(labels, c.throughput)
    return [asset_seconds, judged, size, fixed, error, measured, copy_seconds, best, rate, retrieval]


def _locations(cfg: Config, asset: str) -> set[str]:
    """Locations whose throughput an asset's projection reads: its copies', and its drills' dump locations."""
    acfg = cfg.assets[asset]
    out = {c.location for c in acfg.copies}
    out.update(loc for v in acfg.validators if (loc := drill_location(cfg, asset, v.label)) is not None)
    return out


def rates_changed(cfg: Config, old: Snapshot, new: Snapshot, old_now: float, now: float) -> set[str]:
    """Assets whose projection may change since the last render: a location's throughput is shared by every asset
    with a copy (or a drill) there, so they change when that figure does (new samples join it once a minute,
    :func:`~drwatch.state.rto_drills.throughput`); an asset's own drills change its projection."""
    keys = ({k for k, v in new.rates.items() if old.rates.get(k) is not v} | (old.rates.keys() - new.rates.keys())
            if old.rates is not new.rates else set())
    touched = {asset for kind, asset, _n in keys if kind == "drill"}
    locations: set[str | None]
    if settled(old_now) != settled(now):  # a minute ended: the samples recorded in it join the figures
        locations = set(cfg.locations)
    else:
        locations = {name if kind == "read" else drill_location(cfg, asset, name) for kind, asset, name in keys}
    moved = {loc for loc in locations if loc is not None
             and throughput(cfg, old, loc, old_now)[0] != throughput(cfg, new, loc, now)[0]}
    return touched | {a for a in cfg.assets if a not in touched and _locations(cfg, a) & moved}


def rate_inputs(snap: Snapshot, asset: str, now: float) -> tuple[object, ...]:
    """What of the rate samples an asset's projection reads: its locations' throughput figures and its drills."""
    if asset not in snap.config.assets:
        return ()
    cfg = snap.config
    return (*(throughput(cfg, snap, loc, now)[0] for loc in sorted(_locations(cfg, asset))), snap.drills_of(asset))


def rate_expiries(cfg: Config, snap: Snapshot, asset: str) -> list[float]:
    """Times at which a sample the asset's projection reads grows older than ``restore_time.sample_max_age``: the
    newest ``restore_time.samples`` of each location and of its drills (an older sample is never read again: the
    newer ones expire after it), not the thousands a location shared by many assets holds."""
    if asset not in cfg.assets:
        return []
    age, n = cfg.restore_time.sample_max_age.total_seconds(), cfg.restore_time.samples
    rows = [*(s for loc in _locations(cfg, asset) for s in snap.samples_at(loc)[-n:]), *snap.drills_of(asset)[-n:]]
    return [s.at + age for s in rows]
