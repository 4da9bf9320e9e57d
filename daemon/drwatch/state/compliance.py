"""3-2-1-1-0, as a pure function of (config, snapshot, now).

Each rule per asset is ``pass``, ``fail`` or ``unknown``. Unknown means the checks behind it errored,
never ran or are stale; it is never reported as pass. A rule passes when the proven count reaches the
requirement, fails when even counting every unknown copy as good cannot reach it, and is unknown between.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from drwatch.config.model import AssetConfig, Config
from drwatch.core.durations import format_duration
from drwatch.core.model import CopyState, Outcome
from drwatch.state.snapshot import CopyFact, Snapshot
from drwatch.storage.filesystem import VOLATILE_MEDIA

SAME_DOMAIN = "same_failure_domain"  # a copy dependency: observed on production's device or mount source
RULES: tuple[str, ...] = ("copies", "media", "offsite", "immutable", "restore_errors")


class RuleState(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


STATES: tuple[str, ...] = tuple(s.value for s in RuleState)


@dataclass(frozen=True)
class RuleVerdict:
    state: RuleState
    detail: str


@dataclass(frozen=True)
class CopyStatus:
    name: str
    status: str  # verified | failed | unknown | attested
    reason: str
    media: str
    site: str
    region: str
    provider: str
    immutable: bool
    could_be_immutable: bool
    region_observed: bool = False
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class AssetVerdict:
    asset: str
    rules: dict[str, RuleVerdict]
    copies: tuple[CopyStatus, ...]
    copies_verified: int
    recovery_point: float | None

    @property
    def compliant(self) -> bool:
        return all(v.state == RuleState.PASS for v in self.rules.values())


def _tri(proven: int, possible: int, required: int) -> RuleState:
    if proven >= required:
        return RuleState.PASS
    if possible < required:
        return RuleState.FAIL
    return RuleState.UNKNOWN


def _not_reported(snap: Snapshot, asset_name: str, asset: AssetConfig) -> str:
    """Why a copy has no report: never checked, or the latest runs ended without reporting it."""
    ran = [
        f"{v.label}: {res.outcome.value}"
        for v in asset.validators
        if (stats := snap.stats(asset_name, v.label)) is not None and (res := stats.last_result) is not None
    ]
    return f"not reported by the latest check ({', '.join(ran)})" if ran else "never checked"


def _copy_status(cfg: Config, asset: AssetConfig, name: str, location: str, fact: CopyFact | None,
                 snap: Snapshot, asset_name: str, now: float) -> CopyStatus:
    loc = cfg.locations[location]
    rpo = asset.rpo.total_seconds()
    offline_capable = loc.offline
    base = {"name": name, "media": loc.media or "unknown", "site": loc.site or "", "region": loc.region or "",
            "provider": loc.provider or ""}
    att = snap.attestations.get((asset_name, name))
    att_fresh = att is not None and now - att.created_at <= cfg.compliance.offline_attestation_max_age.total_seconds()

    observed = fact is not None and fact.report.region_observed
    deps = fact.report.dependencies if fact is not None else ()

    def status(kind: str, reason: str, immutable: bool = False, could: bool = False,
               over: dict[str, str] | None = None) -> CopyStatus:
        f = {**base, **(over or {})}
        return CopyStatus(name=f["name"], status=kind, reason=reason, media=f["media"], site=f["site"],
                          region=f["region"], provider=f["provider"], immutable=immutable,
                          could_be_immutable=could, region_observed=observed, dependencies=deps)

    stale: CopyStatus | None = None
    if fact is not None:
        rep = fact.report
        over: dict[str, str] = {"media": rep.media, "site": rep.site, "region": rep.region, "provider": rep.provider}
        horizon = cfg.compliance.min_retention_remaining.total_seconds()
        # Object Lock must still hold for the minimum horizon *now*, not only when it was observed.
        lock_holds = rep.retain_until_min is None or rep.retain_until_min - now >= horizon
        locked = (bool(rep.immutable) and lock_holds) or (rep.offline and att_fresh)
        if now > fact.fresh_until:
            # Stale: proves nothing, not even that it is not locked. A fresh attestation may stand in (below).
            stale = status("unknown", f"last check {format_duration(now - fact.observed_at)} ago is stale",
                           could=True, over=over)
        elif rep.state == CopyState.VERIFIED:
            if rep.recovery_point is None or now - rep.recovery_point > rpo:
                return status("failed", "holds a recovery point older than the RPO", immutable=locked, over=over)
            return status("verified", "verified", immutable=locked, over=over)
        elif rep.state == CopyState.FAILED:
            return status("failed", "latest check found it bad", over=over)
        elif rep.state == CopyState.ERROR:
            return status("unknown", "latest check could not prove it (error: see its findings)",
                          could=offline_capable or rep.immutable is not False, over=over)
        # OFFLINE: the attestation stands in.
    if offline_capable and att is not None and att_fresh:
        in_rpo = att.recovery_point is not None and now - att.recovery_point <= rpo
        return status("attested" if in_rpo else "attested-old",
                      f"offline, attested {format_duration(now - att.created_at)} ago", immutable=True)
    if offline_capable:
        return status("failed", "offline copy without a fresh attestation (drwatch attest)")
    if stale is not None:
        return stale
    # Not checked yet: nothing about it is known, its immutability included.
    return status("unknown", _not_reported(snap, asset_name, asset), could=True)


def _restore_errors(cfg: Config, snap: Snapshot, asset_name: str, asset: AssetConfig, now: float) -> RuleVerdict:
    if not asset.validators:
        return RuleVerdict(RuleState.UNKNOWN, "no validators configured")
    window = cfg.compliance.window.total_seconds()
    fails, unknowns, cleared = [], [], []
    for v in asset.validators:
        stats = snap.stats(asset_name, v.label)
        res = stats.last_result if stats is not None else None
        if stats is None or res is None:
            unknowns.append(f"{v.label}: never ran")
            continue
        failed_at = stats.last_failure_at
        if res.outcome == Outcome.FAILED:  # never cleared, not even by an ack: the newest evidence is bad
            fails.append(f"{v.label}: latest run failed")
            continue
        if failed_at is not None and now - failed_at <= window:
            # A failure in the window counts until it is proven fixed (a later `ok` of the same validator) or
            # acknowledged (`drwatch ack` after it); either way it stays in the detail while in the window.
            ago = format_duration(max(0.0, now - failed_at))
            ack = snap.acks.get((asset_name, v.label))
            if stats.last_success_at is not None and stats.last_success_at > failed_at:
                cleared.append(f"{v.label}: failed {ago} ago, ok since "
                               f"{format_duration(max(0.0, now - stats.last_success_at))} ago")
            elif ack is not None and ack.created_at >= failed_at:
                cleared.append(f"{v.label}: failed {ago} ago, acknowledged by {ack.by}: {ack.reason}")
            else:
                fails.append(f"{v.label}: failed {ago} ago (window {format_duration(window)}; not ok since)")
                continue
        if res.outcome != Outcome.OK:
            unknowns.append(f"{v.label}: latest run {res.outcome.value}")
        elif now - res.finished_at > v.effective_max_age(cfg):
            unknowns.append(f"{v.label}: stale (last run {format_duration(now - res.finished_at)} ago)")
    history = f"; history: {'; '.join(cleared)}" if cleared else ""
    if fails:
        return RuleVerdict(RuleState.FAIL, "; ".join(fails + unknowns) + history)
    if unknowns:
        return RuleVerdict(RuleState.UNKNOWN, "; ".join(unknowns) + history)
    return RuleVerdict(RuleState.PASS, f"{len(asset.validators)} validator(s) ok{history}")


def _names(items: list[CopyStatus]) -> str:
    return ", ".join(s.name for s in items) or "none"


def _reasons(items: list[CopyStatus]) -> str:
    return "".join(f"; {s.name}: {s.reason}" for s in items)


def evaluate_asset(cfg: Config, snap: Snapshot, asset_name: str, now: float) -> AssetVerdict:
    asset = cfg.assets[asset_name]
    req = cfg.compliance
    facts = snap.copy_facts(asset_name)
    refs = [("production", asset.production.location), *((c.label, c.location) for c in asset.copies)]
    statuses = [_copy_status(cfg, asset, name, loc, facts.get(name), snap, asset_name, now) for name, loc in refs]
    good = [s for s in statuses if s.status in ("verified", "attested")]
    unknown = [s for s in statuses if s.status == "unknown"]
    bad = [s for s in statuses if s.status not in ("verified", "attested")]
    rules: dict[str, RuleVerdict] = {}
    rules["copies"] = RuleVerdict(
        _tri(len(good), len(good) + len(unknown), req.copies),
        f"{len(good)}/{req.copies} verified ({_names(good)})" + _reasons(bad),
    )
    rules["media"] = _media_rule(req.media, good, unknown)
    independent = not req.require_independent_credentials
    rules["offsite"] = _offsite_rule(req.offsite, statuses[0], good, unknown, independent)
    imm = [s for s in statuses if s.immutable and s.status in ("verified", "attested", "attested-old")
           and (independent or not s.dependencies)]
    imm_unknown = [s for s in unknown if s.could_be_immutable]
    imm_state = _tri(len(imm), len(imm) + len(imm_unknown), req.immutable)
    rules["immutable"] = RuleVerdict(
        imm_state,
        f"{len(imm)}/{req.immutable} immutable or offline ({_names(imm)})"
        + (_reasons(imm_unknown) if imm_state == RuleState.UNKNOWN else ""),
    )
    rules["restore_errors"] = _restore_errors(cfg, snap, asset_name, asset, now)
    return AssetVerdict(asset_name, rules, tuple(statuses), len(good), snap.recovery_point(asset_name))


def _media_rule(required: int, good: list[CopyStatus], unknown: list[CopyStatus]) -> RuleVerdict:
    # A volatile filesystem (tmpfs, ramfs) is gone at the next reboot: it is no medium at all.
    media = {s.media for s in good if s.media != "unknown" and s.media not in VOLATILE_MEDIA}
    media_possible = media | {s.media for s in unknown if s.media != "unknown" and s.media not in VOLATILE_MEDIA}
    extra_unknown_media = sum(1 for s in unknown if s.media == "unknown")
    media_state = _tri(len(media), len(media_possible) + extra_unknown_media, required)
    unknown_media = [s.name for s in good if s.media == "unknown"]
    volatile = [s.name for s in good if s.media in VOLATILE_MEDIA]
    return RuleVerdict(
        media_state,
        f"{len(media)}/{required} media among verified copies ({', '.join(sorted(media)) or 'none'})"
        + (f"; media not known for: {', '.join(unknown_media)}" if unknown_media else "")
        + (f"; volatile (not a medium): {', '.join(volatile)}" if volatile else "")
        + (_reasons([s for s in unknown if s.media not in media]) if media_state == RuleState.UNKNOWN else ""),
    )


def _offsite(s: CopyStatus, prod: CopyStatus, independent: bool) -> bool:
    """A different failure domain: observed region (or provider) first, declared site otherwise. A copy
    observed on production's disk or mount source is never off-site, whatever it declares."""
    if s.name == "production" or (s.dependencies and not independent) or SAME_DOMAIN in s.dependencies:
        return False
    if s.region and prod.region and (s.region_observed or prod.region_observed):
        return s.region != prod.region or (s.provider != prod.provider and bool(s.provider and prod.provider))
    if s.region and prod.region and s.region != prod.region:
        return True
    return bool(s.site) and bool(prod.site) and s.site != prod.site


def is_offsite(s: CopyStatus, prod: CopyStatus, independent: bool) -> bool:
    """Whether the copy counts toward the off-site rule (the restore-time model names such copies)."""
    return _offsite(s, prod, independent)


def _offsite_rule(required: int, prod: CopyStatus, good: list[CopyStatus], unknown: list[CopyStatus],
                  independent: bool) -> RuleVerdict:
    off = [s for s in good if _offsite(s, prod, independent)]
    off_unknown = [s for s in unknown if _offsite(s, prod, independent)]
    dependent = [s for s in good if s.dependencies]
    off_state = _tri(len(off), len(off) + len(off_unknown), required)
    site_note = "" if prod.site or prod.region else "; production declares no site/region"
    return RuleVerdict(
        off_state,
        f"{len(off)}/{required} verified off-site ({_names(off)}){site_note}"
        + (_reasons(off_unknown) if off_state == RuleState.UNKNOWN else "")
        + "".join(f"; {s.name} depends on production ({', '.join(s.dependencies)})"
                  + ("" if independent and SAME_DOMAIN not in s.dependencies else ", not counted")
                  for s in dependent),
    )


def evaluate(cfg: Config, snap: Snapshot, now: float) -> dict[str, AssetVerdict]:
    """Verdicts for every configured asset. Pure: no I/O, no clock."""
    return {name: evaluate_asset(cfg, snap, name, now) for name in cfg.assets}
