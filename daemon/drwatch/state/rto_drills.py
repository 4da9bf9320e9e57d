"""The restore-time model's rates from the persisted samples, and its check against real restores.

``throughput``: bytes per second a location delivered (verification reads of every asset on it, drills' dump
fetches from it); ``restore_work``: what an asset's drills spent beyond fetching, per byte (and a fixed cost, once
drills of different sizes tell the two apart). A drill is then
projected *from the samples recorded before it* (never its own) and compared with the restore it measured: the
model's error. When the newest ``restore_time.error_drills`` comparable drills all missed by more than
``restore_time.tolerance``, the projection is not to be trusted: ``rto_projection_unreliable``.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from drwatch.config.model import Config
from drwatch.core.model import Finding, Severity
from drwatch.state.snapshot import Snapshot
from drwatch.store.rates import RateSample


def drill_location(cfg: Config, asset: str, validator: str) -> str | None:
    """The location a drill fetches its dumps from (its config's ``location``), if it has one."""
    return Snapshot(cfg).drill_location(asset, validator)


def _usable(cfg: Config, samples: Sequence[RateSample], now: float, before: float | None) -> Sequence[RateSample]:
    """The newest ``samples`` (oldest first, as the snapshot keeps them) not older than ``sample_max_age`` (and,
    for a drill's check, recorded before it). Found by bisection: a location shared by thousands of assets holds
    64 samples of each, and every asset's projection reads it (a scan per projection made a status of 2,000
    assets take 40 s of CPU)."""
    lo = bisect_left(samples, now - cfg.restore_time.sample_max_age.total_seconds(), key=_at)
    hi = len(samples) if before is None else bisect_left(samples, before, key=_at)
    return samples[max(lo, hi - cfg.restore_time.samples):hi]


def _at(s: RateSample) -> float:
    return s.at


RATE_STEP = 60.0  # seconds: a location's throughput figure takes in new samples once per such step


def settled(now: float) -> float:
    """The start of the current rate step: samples recorded since are not yet in the throughput figure."""
    return math.floor(now / RATE_STEP) * RATE_STEP


def throughput(cfg: Config, snap: Snapshot, location: str, now: float,
               before: float | None = None) -> tuple[float | None, int]:
    """Bytes per second the location delivered (total bytes over total busy seconds), and the samples behind it.

    Samples recorded in the current minute (:data:`RATE_STEP`) join the figure when the minute ends, unless there
    is no older one (a location's first reads count at once). Every read of a shared location adds a sample: a
    figure that moved with each would change the projection, and the series, of every asset there on every run
    (at 10,000 assets, every asset re-rendered on every scrape); this way it moves at most once a minute and
    stays a function of the store and the time (the same after a restart). A drill's own check (``before``) uses
    the samples recorded before it."""
    samples = snap.samples_at(location)
    rows = _usable(cfg, samples, now, before if before is not None else settled(now))
    if before is None and not rows:
        rows = _usable(cfg, samples, now, None)
    seconds = sum(s.seconds for s in rows)
    if not rows or seconds <= 0:
        return None, 0
    return sum(s.bytes for s in rows) / seconds, len(rows)


def _work(s: RateSample) -> float:
    return max(0.0, (s.total or 0.0) - s.seconds)


SPREAD = 1.5  # the largest drilled dump at least this many times the smallest: fit a fixed cost and a rate


def restore_work(cfg: Config, snap: Snapshot, asset: str, size: float, now: float,
                 before: float | None = None) -> float | None:
    """Seconds the asset's restore spends beyond reading ``size`` bytes, from its drills (None: no drill).

    Drills of one size give seconds per byte: the median of the drills' own, so one drill slowed by a busy host
    (a backup job beside it) does not move the projection of every later one. Drills whose dumps differ in size
    (``SPREAD``) separate the fixed cost of a restore (tool start, schema, sandbox database) from the per-byte work:
    a least-squares line through (bytes, seconds), its intercept and slope kept non-negative, so a small drill does
    not make a large restore look cheap and a large one does not make a small one look dear."""
    rows = _usable(cfg, snap.drills_of(asset), now, before)
    if not rows or sum(s.bytes for s in rows) <= 0:
        return None
    xs = [float(s.bytes) for s in rows]
    ys = [_work(s) for s in rows]
    if min(xs) <= 0 or max(xs) < SPREAD * min(xs):
        return statistics.median(y / x for x, y in zip(xs, ys, strict=True)) * size
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    slope = max(0.0, slope)
    fixed = max(0.0, my - slope * mx)
    if fixed == 0.0:
        slope = sum(ys) / sum(xs)
    return fixed + slope * size


@dataclass(frozen=True)
class DrillComparison:
    validator: str
    at: float
    measured: float  # the drill's restore seconds (fetch + restore)
    projected: float  # from the samples before it

    @property
    def error(self) -> float:
        """(projected - measured) / measured: positive when the model is pessimistic."""
        return (self.projected - self.measured) / self.measured


@dataclass(frozen=True)
class DrillCheck:
    comparisons: tuple[DrillComparison, ...]  # oldest first

    @property
    def latest(self) -> DrillComparison | None:
        return self.comparisons[-1] if self.comparisons else None

    def findings(self, cfg: Config) -> list[Finding]:
        rt = cfg.restore_time
        recent = self.comparisons[-rt.error_drills:]
        if len(recent) < rt.error_drills or not all(abs(c.error) > rt.tolerance for c in recent):
            return []
        errors = ", ".join(f"{c.error:+.0%}" for c in recent)
        return [Finding(Severity.WARNING, "rto_projection_unreliable",
                        f"the last {len(recent)} restore drill(s) differed from the projected restore time by "
                        f"more than {rt.tolerance:.0%} ({errors}): the projection is not to be trusted",
                        recent[-1].validator)]


def check_drills(cfg: Config, snap: Snapshot, asset: str, now: float) -> DrillCheck:
    """Each stored drill of the asset against the projection from the samples before it (where there were any)."""
    out = []
    for d in snap.drills_of(asset):
        location = drill_location(cfg, asset, d.name)
        if location is None or d.total is None or d.total <= 0:
            continue
        rate, _n = throughput(cfg, snap, location, now, before=d.at)
        work = restore_work(cfg, snap, asset, d.bytes, now, before=d.at)
        if rate is None or work is None:
            continue
        out.append(DrillComparison(d.name, d.at, d.total, d.bytes / rate + work))
    return DrillCheck(tuple(out))
