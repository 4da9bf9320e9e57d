"""The posture of a copy, shared by the validators that prove copies against a recovery point (``replica``,
``dataset``, ``model_weights``).

Besides its content, a copy is judged by where it is and what can destroy it: how its location is opened
and probed, the Object Lock state of every object of the recovery point and the verdict on it, its media,
region and provider, its independence from production (the same credentials, a KMS key in production's
region) and the :class:`~drwatch.core.model.CopyReport` that carries all of it to the compliance rules. Each
validator keeps what is its own: how content is proven, which state a copy ends in, and the words of its
Object Lock findings (:class:`LockText`); the codes and severities are the same for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from drwatch.core.durations import format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import CopyReport, CopyState, Finding, Severity
from drwatch.storage.config import FilesystemLocationConfig, S3LocationConfig
from drwatch.storage.readclock import ReadClock
from drwatch.storage.s3 import ObjectHead, S3Unavailable
from drwatch.storage.sources import Facts, FilesystemSource, Probe, S3Source, Source
from drwatch.validators.base import RunContext

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView

# --- locations ---------------------------------------------------------------------------------------


def open_source(ctx: RunContext, name: str, role: str, location: str, prefix: str) -> Source:
    """One location of the asset (production or a copy) as a :class:`~drwatch.storage.sources.Source`."""
    loc = ctx.config.locations[location]
    if isinstance(loc, FilesystemLocationConfig):
        return FilesystemSource(name, role, location, loc, ctx.config.resolve_path(loc.path), prefix, ctx.hashes)
    if ctx.s3 is None:
        raise ValidatorError("no_s3_pool", "S3 locations need the daemon's client pool")
    src = S3Source(name, role, location, loc, ctx.s3.get(location, loc), prefix)
    if loc.inventory is not None:  # per-object facts from the S3 Inventory report that covers the location
        from drwatch.storage.inventory import InventorySource

        dest_name = loc.inventory.location or location
        dest = ctx.config.locations[dest_name]
        assert isinstance(dest, S3LocationConfig)  # checked when the config loads
        base = prefix.strip("/")
        src.inventory = InventorySource(ctx.s3.get(dest_name, dest), loc.inventory,
                                        loc.inventory.source_bucket or loc.bucket, f"{base}/" if base else "", name)
    return src


def production_source(ctx: RunContext) -> Source:
    prod = ctx.asset.production
    return open_source(ctx, "production", "production", prod.location, prod.prefix)


def copy_sources(ctx: RunContext, wanted: list[str] | None) -> list[Source]:
    """The asset's copies in configured order; only those named in ``wanted`` unless it is None.

    A filesystem copy knows production's directory and those of the copies before it (its peers): on every
    run its probe checks that its directory is none of theirs, and its listing passes over files that are
    their inodes (hard links), so the identity of a copy is observed, not only checked when the config loads.
    """
    names = set(wanted) if wanted is not None else None
    prod = ctx.asset.production
    peers: list[tuple[str, Path]] = []
    if isinstance(ctx.config.locations[prod.location], FilesystemLocationConfig):
        src = open_source(ctx, "production", "production", prod.location, prod.prefix)
        assert isinstance(src, FilesystemSource)
        peers.append(("production", src.root))
    out: list[Source] = []
    for c in ctx.asset.copies:
        src = open_source(ctx, c.label, "copy", c.location, c.prefix)
        if isinstance(src, FilesystemSource):
            src.peers = list(peers)
            peers.append((c.label, src.root))
        if names is None or c.label in names:
            out.append(src)
    return out


async def probe_location(src: Source) -> tuple[CopyState | None, Finding | None]:
    """(None, None) when the location can be checked; else the state it ends in and the finding saying why."""
    code = "location_unavailable"
    try:
        state, message = await src.probe()
    except S3Unavailable as exc:
        # Keep the S3 reason (access_denied, unreachable, throttled...): it says what to fix.
        state, message, code = Probe.UNAVAILABLE, exc.message, exc.code
    if state == Probe.OFFLINE:
        return CopyState.OFFLINE, Finding(Severity.INFO, "offline", message, src.name)
    if state == Probe.ALIAS:
        return CopyState.FAILED, Finding(Severity.CRITICAL, "copy_aliases_production", message, src.name)
    if state == Probe.UNAVAILABLE:
        return CopyState.ERROR, Finding(Severity.WARNING, code, message, src.name)
    if state == Probe.ROOT_MISSING:
        if src.role == "copy":
            return CopyState.FAILED, Finding(Severity.CRITICAL, "copy_missing", message, src.name)
        return CopyState.ERROR, Finding(Severity.WARNING, "production_missing", message, src.name)
    return None, None


# --- Object Lock -------------------------------------------------------------------------------------


class LockTally(Protocol):
    """What a validator's per-location tally holds about the objects' lock state (its own fields)."""

    lock: dict[str, int]  # objects by lock: compliance / governance / legal_hold / none
    retain_until_min: float | None
    storage_classes: set[str]


def record_lock(t: LockTally, head: ObjectHead) -> None:
    """Count one object's lock state (and storage class) from its HEAD."""
    mode = (head.lock_mode or "").upper()
    kind = "compliance" if mode == "COMPLIANCE" else "governance" if mode == "GOVERNANCE" else "none"
    if head.legal_hold and kind == "none":
        kind = "legal_hold"
    t.lock[kind] = t.lock.get(kind, 0) + 1
    if kind != "none" and head.retain_until is not None:
        t.retain_until_min = head.retain_until if t.retain_until_min is None \
            else min(t.retain_until_min, head.retain_until)
    if head.storage_class:
        t.storage_classes.add(head.storage_class)


@dataclass(frozen=True)
class LockText:
    """The words of a validator's Object Lock findings: ``str.format`` templates with ``{versioning}``,
    ``{n}`` (objects), ``{left}`` and ``{minimum}`` (durations)."""

    unversioned: str
    unlocked: str
    governance: str
    expiring: str
    held: str | None = None  # objects under a legal hold only: a finding of their own (None: counted as unlocked)


def lock_verdict(ctx: RunContext, src: Source, t: LockTally, verified: int, facts: Facts, state: CopyState,
                 text: LockText, findings: list[Finding]) -> bool | None:
    """Immutable only if the bucket is versioned and every object of the recovery point is COMPLIANCE-locked
    (GOVERNANCE where allowed) long enough; None when the copy could not be checked."""
    if state != CopyState.VERIFIED or src.role != "copy":
        return None if state == CopyState.ERROR else False
    comp = ctx.config.compliance
    held = t.lock.get("legal_hold", 0)
    # A legal hold has no retain-until and is lifted by anyone allowed s3:PutObjectLegalHold.
    unlocked = t.lock.get("none", 0) + (held if text.held is None else 0)
    governance = t.lock.get("governance", 0)
    problems: list[tuple[str, str]] = []
    if facts.versioning != "Enabled":
        problems.append(("bucket_not_versioned", text.unversioned.format(versioning=facts.versioning or "unknown")))
    if unlocked:
        problems.append(("objects_not_locked", text.unlocked.format(n=unlocked)))
    if held and text.held is not None:
        problems.append(("objects_not_locked", text.held.format(n=held)))
    if governance and not comp.allow_governance:
        problems.append(("governance_lock", text.governance.format(n=governance)))
    minimum = comp.min_retention_remaining.total_seconds()
    if t.retain_until_min is not None and t.retain_until_min < ctx.clock() + minimum:
        problems.append(("retention_expiring", text.expiring.format(
            left=format_duration(max(0.0, t.retain_until_min - ctx.clock())), minimum=format_duration(minimum))))
    findings.extend(Finding(Severity.WARNING, code, message, src.name) for code, message in problems)
    return not problems and verified > 0


# --- facts, independence, the report -----------------------------------------------------------------


def declared_facts(src: Source) -> Facts:
    """What the configuration says about the location (media, region, provider)."""
    if not isinstance(src, FilesystemSource | S3Source):
        return Facts()
    return Facts(media=src.cfg.media or "unknown", region=src.cfg.region or "", provider=src.cfg.provider)


async def copy_facts(src: Source, state: CopyState | None, storage_classes: set[str], provider_media: bool) -> Facts:
    """The location's observed facts; the declared ones when it was not reached."""
    if state is not None and state != CopyState.FAILED:
        return declared_facts(src)
    try:
        return await src.facts(storage_classes, provider_media)
    except S3Unavailable:
        return declared_facts(src)


def arn_region(arn: str | None) -> str | None:
    if not arn or not arn.startswith("arn:"):
        return None
    parts = arn.split(":")
    return parts[3] if len(parts) > 4 and parts[3] else None


def _file_server(source: str) -> str | None:
    """The server of a network mount source (``nas01:/export`` or ``//nas01/share``), lower case; None for a
    block device."""
    if source.startswith("//"):
        return source[2:].split("/", 1)[0].lower() or None
    if ":" in source and not source.startswith("/"):
        return source.rsplit(":", 1)[0].strip("[]").lower() or None
    return None


def same_failure_domain(facts: Facts, prod: Facts) -> str | None:
    """Why a filesystem copy dies with production, observed: the same device (``st_dev``), the same mount
    source (block device) or the same file server (NFS/CIFS: another export of one server dies with it too).
    None when it does not, or nothing was observed."""
    if facts.device and facts.device == prod.device:
        return f"on production's device {facts.device}"
    if facts.mount_source and facts.mount_source == prod.mount_source:
        return f"mounted from production's source {facts.mount_source}"
    server = _file_server(facts.mount_source)
    if server is not None and server == _file_server(prod.mount_source):
        return f"on production's file server {server} ({facts.mount_source}; production {prod.mount_source})"
    return None


def dependencies(name: str, facts: Facts, prod: Facts) -> tuple[tuple[str, ...], list[Finding]]:
    """What makes copy ``name`` depend on production: the same credentials, a KMS key in its region, the same
    disk or mount source (``same_failure_domain``: never off-site, whatever the site declared)."""
    deps: list[str] = []
    out: list[Finding] = []
    if (why := same_failure_domain(facts, prod)) is not None:
        deps.append("same_failure_domain")
        out.append(Finding(Severity.WARNING, "same_failure_domain", f"the copy is {why}: one disk or server "
                           "failure destroys both; not counted off-site, whatever its declared site", name))
    if facts.credential_identity and facts.credential_identity == prod.credential_identity:
        deps.append("shared_credentials")
        out.append(Finding(Severity.WARNING, "shared_credentials", "the copy is reachable with the same "
                           "credentials as production: one leaked key can destroy both", name))
    kms_region = arn_region(facts.kms_key_arn)
    if kms_region and kms_region == prod.region:
        deps.append("kms_in_production_region")
        out.append(Finding(Severity.WARNING, "kms_in_production_region",
                           f"default encryption uses a KMS key in the production region {kms_region}", name))
    return tuple(deps), out


def copy_report(ctx: RunContext, src: Source, state: CopyState, facts: Facts, t: LockTally, *, verified: int,
                text: LockText, recovery_point: float | None, objects: dict[str, int], bytes_verified: int,
                evidence: dict[str, int], deps: tuple[str, ...], findings: list[Finding],
                reads: ReadClock | None = None) -> CopyReport:
    """The copy's report; an S3 copy's Object Lock verdict adds its findings to ``findings``. ``reads``: the
    copy's timed reads of this run (the restore-time model's throughput input)."""
    immutable: bool | None = False
    classes = set(t.storage_classes)
    if isinstance(src, S3Source):
        immutable = lock_verdict(ctx, src, t, verified, facts, state, text, findings)
        classes |= src.listed_classes
    return CopyReport(
        copy=src.name, location=src.location, role=src.role, state=state,
        recovery_point=recovery_point if state == CopyState.VERIFIED else None,
        media=facts.media, media_observed=facts.media_observed, site=src.site, region=facts.region,
        provider=facts.provider, immutable=immutable, offline=src.offline, objects=objects,
        bytes_verified=bytes_verified, region_observed=facts.region_observed, versioning=facts.versioning,
        lock=dict(t.lock), retain_until_min=t.retain_until_min, evidence=evidence, dependencies=deps,
        read_bytes=reads.bytes if reads is not None else 0, read_seconds=reads.seconds if reads is not None else 0.0,
        storage_classes=tuple(sorted(classes)),
    )


def unknown_copies(selected: list[str] | None, asset: AssetView) -> list[ConfigProblem]:
    """Config problems for a validator's ``copies:`` selection naming copies the asset does not have."""
    known = {c.label for c in asset.copies}
    return [ConfigProblem(f"copies[{i}]", f"unknown copy {name!r} (asset copies: {sorted(known)})")
            for i, name in enumerate(selected or []) if name not in known]
