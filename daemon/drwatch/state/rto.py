"""Projected restore time per asset and copy: a pure function of (config, snapshot, compliance verdict, now).

For each copy, the time to bring the asset's newest recovery point back from it::

    projected = size / throughput(location) + retrieval latency + fixed part (drills)

- **size**: the newest recovery point's bytes: the latest restore drill's dump (``bytes``), else the reference
  bytes of the newest copy check (``bytes_reference``: the seal or the production listing);
- **throughput**: the bytes per second the location delivered to drwatch's own reads, over the newest
  ``restore_time.samples`` persisted samples not older than ``sample_max_age`` (the replica's timed
  verification reads of every asset on that location, and drills' dump fetches from it); without any, the
  location's declared ``restore.bytes_per_second``; without that, no projection;
- **retrieval latency**: the slowest observed storage class of the copy's objects (``restore_time.retrieval``,
  e.g. DEEP_ARCHIVE 12 h) plus the location's declared ``restore.retrieval_time`` (an offline vault's courier);
- **fixed part**: what the asset's own drills spent beyond fetching, per byte (``pg_restore``, index builds),
  times the size.

The asset is judged against the fastest copy that counts for the 3-2-1-1-0 copies rule (verified or attested;
production never: a restore is for when it is gone). Where drills measured real restores, each is compared with
the projection made from the samples before it; the error is reported, and a model that keeps missing is a
finding (:mod:`drwatch.state.rto_drills`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from drwatch.config.model import AssetConfig, Config
from drwatch.core.durations import format_duration
from drwatch.core.model import Finding, Outcome, Severity
from drwatch.core.sizes import format_size
from drwatch.state.compliance import AssetVerdict, CopyStatus, is_offsite
from drwatch.state.rto_drills import DrillCheck, check_drills, drill_location, restore_work, throughput
from drwatch.state.snapshot import CopyFact, Snapshot

COUNTED = ("verified", "attested")


@dataclass(frozen=True)
class CopyProjection:
    copy: str
    location: str
    seconds: float | None  # None: not projectable (no throughput known, or no size)
    size_bytes: float | None
    throughput: float | None  # bytes per second
    throughput_from: str  # "measured" | "declared" | ""
    samples: int  # samples behind a measured throughput
    retrieval_seconds: float
    storage_class: str  # the slowest observed storage class ("" when none is known)
    fixed_seconds: float  # the drills' part beyond fetching, scaled to the size
    counted: bool  # counts for the copies rule now (verified / attested)
    offsite: bool
    immutable: bool
    why: str
    lower_bound: bool = False  # no throughput known: retrieval and fixed part only (the read is not included)


@dataclass(frozen=True)
class AssetProjection:
    asset: str
    rto: float | None
    seconds: float | None  # the best counted copy's projection
    copy: str | None  # which copy that is
    copies: tuple[CopyProjection, ...]
    drills: DrillCheck
    findings: tuple[Finding, ...]
    why: str


def _size(snap: Snapshot, asset_name: str, asset: AssetConfig) -> tuple[float | None, str]:
    """The newest recovery point's bytes and where that figure comes from: a drill's dump is the recovery point
    itself (preferred); a copy check's reference is the whole prefix or seal (may hold several dumps)."""
    found: dict[str, tuple[float, float, str]] = {}  # figure -> (finished_at, bytes, validator)
    for v in asset.validators:
        res = snap.last_result(asset_name, v.label)
        for key in ("bytes", "bytes_reference"):
            if res is None or key not in res.figures:
                continue
            value = res.figures[key]
            # 0 bytes is a size only from a run that proved it (an empty recovery point restores in no time)
            if (value > 0 or (value == 0 and res.outcome == Outcome.OK)) and \
                    (key not in found or res.finished_at > found[key][0]):
                found[key] = (res.finished_at, value, v.label)
    if "bytes" in found:
        return found["bytes"][1], f"dump {found['bytes'][2]} restored"
    if "bytes_reference" in found:
        return found["bytes_reference"][1], f"recovery point {found['bytes_reference'][2]} checked"
    return None, ""


def _retrieval(cfg: Config, location: str, classes: tuple[str, ...]) -> tuple[float, str]:
    """The copy's retrieval latency: its slowest storage class plus the location's declared retrieval time."""
    rt = cfg.restore_time
    slowest = max(classes, key=rt.retrieval_seconds, default="")
    seconds = rt.retrieval_seconds(slowest) if slowest else 0.0
    declared = cfg.locations[location].restore
    if declared is not None and declared.retrieval_time is not None:
        seconds += declared.retrieval_time.total_seconds()
    return seconds, slowest


def _copy(cfg: Config, snap: Snapshot, asset_name: str, status: CopyStatus, prod: CopyStatus, location: str,
          size: float | None, now: float, fact: CopyFact | None) -> CopyProjection:
    classes = fact.report.storage_classes if fact is not None else ()
    retrieval, slowest = _retrieval(cfg, location, classes)
    rate, n = throughput(cfg, snap, location, now)
    source = "measured" if rate is not None else ""
    declared = cfg.locations[location].restore
    if rate is None and declared is not None and declared.bytes_per_second is not None:
        rate, source = declared.bytes_per_second, "declared"
    work = restore_work(cfg, snap, asset_name, size, now) if size is not None else None
    fixed = work or 0.0
    independent = not cfg.compliance.require_independent_credentials
    base = CopyProjection(
        copy=status.name, location=location, seconds=None, size_bytes=size, throughput=rate, throughput_from=source,
        samples=n, retrieval_seconds=retrieval, storage_class=slowest, fixed_seconds=fixed,
        counted=status.status in COUNTED, offsite=is_offsite(status, prod, independent),
        immutable=status.immutable and (independent or not status.dependencies), why="")
    if size is None:
        return replace(base, why="size of the recovery point not known yet")
    if rate is None:
        unknown = f"no read of location {location!r} measured (and no restore.bytes_per_second declared)"
        if retrieval <= 0:
            return replace(base, why=unknown)
        return replace(base, seconds=retrieval + fixed, lower_bound=True,
                       why=f"at least {format_duration(retrieval)} retrieval ({slowest or 'declared'}) + "
                           f"{format_duration(fixed)} restore work; {unknown}: the read itself is not included")
    seconds = size / rate + retrieval + fixed
    parts = [f"{format_size(size)} at {format_size(rate)}/s ({source}"
             + (f", {n} sample(s))" if source == "measured" else ")")]
    if retrieval:
        parts.append(f"+ {format_duration(retrieval)} retrieval" + (f" ({slowest})" if slowest else ""))
    parts.append(f"+ {format_duration(fixed)} restore work (drills)" if work is not None
                 else "(no drill: restore work beyond reading not measured)")
    return replace(base, seconds=seconds, why=" ".join(parts))


def _undecided(c: CopyProjection, rto: float | None) -> bool:
    """A counted copy whose restore time may be within the RTO or not: not projected, or only bounded below by
    a bound within it (the read is not measured: a lower bound can show an RTO missed, never met)."""
    return c.counted and (c.seconds is None or (c.lower_bound and rto is not None and c.seconds <= rto))


def _findings(asset_name: str, rto: float | None, best: CopyProjection | None,
              copies: tuple[CopyProjection, ...]) -> list[Finding]:
    if rto is None or best is None or best.seconds is None:
        return []
    out: list[Finding] = []
    unknown = [c.copy for c in copies if _undecided(c, rto)]
    if best.seconds > rto and not unknown:  # a counted copy not projected yet may be the fast one
        out.append(Finding(Severity.CRITICAL, "rto_at_risk",
                           f"the fastest counted copy {best.copy!r} is projected to restore in "
                           f"{format_duration(best.seconds)} (RTO {format_duration(rto)}): {best.why}", best.copy))
    for role, label in (("offsite", "off-site"), ("immutable", "immutable/offline")):
        group = [c for c in copies if c.counted and getattr(c, role)]
        if group and all(c.seconds is not None and c.seconds > rto for c in group):
            fastest = min(group, key=lambda c: c.seconds or 0.0)
            out.append(Finding(Severity.WARNING, f"rto_{role}_slow",
                               f"no {label} copy can be restored within the RTO {format_duration(rto)}: the "
                               f"fastest, {fastest.copy!r}, is projected at "
                               f"{format_duration(fastest.seconds or 0.0)} ({fastest.why})", fastest.copy))
    return out


def project_asset(cfg: Config, snap: Snapshot, verdict: AssetVerdict, now: float) -> AssetProjection:
    name = verdict.asset
    asset = cfg.assets[name]
    rto = asset.rto.total_seconds() if asset.rto is not None else None
    size, size_from = _size(snap, name, asset)
    locations = {c.label: c.location for c in asset.copies}
    prod = verdict.copies[0]
    facts = snap.copy_facts(name)
    copies = tuple(_copy(cfg, snap, name, s, prod, locations[s.name], size, now, facts.get(s.name))
                   for s in verdict.copies if s.name in locations)
    ranked = sorted((c for c in copies if c.counted and c.seconds is not None and not _undecided(c, rto)),
                    key=lambda c: c.seconds or 0.0)
    best = ranked[0] if ranked else None
    drills = check_drills(cfg, snap, name, now)
    findings = _findings(name, rto, best, copies) + drills.findings(cfg)
    unknown = [c for c in copies if _undecided(c, rto)]
    missing = "".join(f"; {c.copy} {'only bounded below' if c.seconds is not None else 'not projected'}: {c.why}"
                      for c in unknown)
    if best is not None and unknown and rto is not None and (best.seconds or 0.0) > rto:
        # The copies projected cannot meet the RTO, but one not projected may: the asset cannot be judged.
        why = (f"fastest projected copy {best.copy!r} ({format_duration(best.seconds or 0.0)}) is over the RTO, "
               f"but not every counted copy is projected{missing}")
        best = None
    elif best is not None:
        why = f"fastest counted copy {best.copy!r}: {best.why}; size from the {size_from}{missing}"
    elif not copies:
        why = "the asset has no copies"
    elif not any(c.counted for c in copies):
        why = "no copy counts now (none verified or attested)"
    else:
        why = "; ".join(f"{c.copy}: {c.why}" for c in copies if c.counted)
    if rto is not None and best is None and any(c.counted for c in copies):
        # An RTO nobody can check is a declaration again: say so (a configuration to complete, not a bad backup).
        findings.append(Finding(Severity.WARNING, "rto_not_judged", f"the RTO {format_duration(rto)} cannot be "
                                f"judged: {why} (an offline copy needs restore.bytes_per_second declared)"))
    return AssetProjection(name, rto, best.seconds if best else None, best.copy if best else None, copies, drills,
                           tuple(findings), why)


def project(cfg: Config, snap: Snapshot, verdicts: dict[str, AssetVerdict], now: float) -> dict[str, AssetProjection]:
    """Projections for every asset with a verdict. Pure: no I/O, no clock."""
    return {name: project_asset(cfg, snap, v, now) for name, v in verdicts.items() if name in cfg.assets}


__all__ = ["AssetProjection", "CopyProjection", "drill_location", "project", "project_asset"]
