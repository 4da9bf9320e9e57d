"""Validator ``replica``: every copy of an asset holds the newest recovery point, object for object.

The reference is the asset's manifest (``drwatch seal``) when there is one, else the production copy.
Production and all copies are merged in one pass over key-ordered streams (memory independent of the
object count). Content equality uses the strongest evidence available, cheapest first: identical
full-object provider checksums (S3 SHA256 against the seal's sha256, or the same algorithm on both
sides), identical ETags of S3 objects, otherwise a read that hashes the bytes (in threads, bounded
memory). For S3 copies it also HEADs every object of the recovery point for its Object Lock state and
reads the bucket's region, versioning and default encryption.

Production is live data (:mod:`drwatch.validators.copies.live`): a difference production's own later changes
explain is a copy behind (its older recovery point judged against the RPO) or production changed since the
seal (counted); any other difference is corruption, production's own included.

Outcomes: ``failed`` when a copy is missing objects or differs (or is behind past the RPO), production
differs from the seal unexplained, the seal is missing/corrupt, or the recovery point is stale or empty;
``error`` when a location could not be read (down, denied, throttled); ``ok`` otherwise. Lock posture,
region and independence are findings and copy facts that the compliance rules judge.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import CopyReport, CopyState, Finding, Outcome, Report, Severity
from drwatch.formats.manifest import ManifestError
from drwatch.storage.s3 import S3Unavailable
from drwatch.storage.sources import Facts, FilesystemSource, S3Source
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.live import LiveRule, live_findings
from drwatch.validators.copies.posture import (
    LockText,
    copy_facts,
    copy_report,
    copy_sources,
    dependencies,
    probe_location,
    production_source,
    unknown_copies,
)
from drwatch.validators.copies.proof import Prover, Stream
from drwatch.validators.copies.reference import ReferenceFailed
from drwatch.validators.copies.replica_merge import ReplicaMerge
from drwatch.validators.copies.seal_open import SealState, open_seal
from drwatch.validators.copies.throughput import sample_reads
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.copies.unchanged import UnchangedSession
from drwatch.validators.copies.verification import VerifySession
from drwatch.validators.plugin import Plugin

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView


class ReplicaConfig(ValidatorConfigBase):
    kind: Literal["replica"] = "replica"
    verify_content: bool = True
    read_sample: float = Field(default=1.0, ge=0.0, le=1.0)  # share of objects without provider evidence read
    copies: list[str] | None = None  # check only these copies (default: all)
    list_limit: int = Field(default=10, ge=1)  # findings listed one by one per copy and code, then only counted
    # Sealed filesystem production without `verification:`: files unchanged by stat since their last read are
    # not hashed again, and every file is re-read within this period (None: hash every file on every run).
    production_reread: Duration | None = timedelta(days=7)
    # Restore-time model: one timed ranged read (bytes) of each S3 copy a run read nothing from, at most once per
    # throughput_sample_every (copies/throughput.py); 0: off.
    throughput_sample: int = Field(default=8 * 1024 * 1024, ge=0, le=1024**3)
    throughput_sample_every: Duration = timedelta(days=1)

    @field_validator("production_reread")
    @classmethod
    def _reread_days(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(days=1):
            raise ValueError("production_reread must be at least 1d (re-reads are paced per day), or null")
        return value

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        return unknown_copies(self.copies, asset)


_LOCK_TEXT = LockText(
    unversioned="bucket versioning is {versioning}: locks cannot protect overwrites",
    unlocked="{n} object(s) of the recovery point carry no Object Lock retention",
    held="{n} object(s) of the recovery point carry only a legal hold, no Object Lock retention",
    governance="{n} object(s) are GOVERNANCE-locked (removable with s3:BypassGovernanceRetention); set "
               "compliance.allow_governance to accept",
    expiring="a lock of the recovery point expires in {left} (minimum {minimum})",
)


class ReplicaValidator:
    kind: ClassVar[str] = "replica"

    def __init__(self, cfg: ReplicaConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        asset = ctx.asset
        findings: list[Finding] = []
        prod = Stream(production_source(ctx))
        copies = [Stream(src) for src in copy_sources(ctx, self.cfg.copies)]
        streams = [prod, *copies]

        async def probe(s: Stream) -> None:
            s.state, finding = await probe_location(s.src)
            if finding is not None:
                findings.append(finding)

        await asyncio.gather(*(probe(s) for s in streams))
        # Reference: the seal if there is one, else the production listing.
        seal = await open_seal(ctx, prod, findings)
        # Copies before production: per key, with equal claims on the verification budget, backups are read first.
        checked = [s for s in ([*copies, prod] if seal.sealed else copies) if s.state is None]
        if not seal.sealed and not seal.bad and prod.state is None:
            seal.stream = prod.src.entries()
        if seal.stream is None and not seal.bad:
            why = next((f for f in findings if f.subject == prod.name), None)
            raise ValidatorError(why.code if why is not None else "no_reference",
                                 "neither a manifest nor the production copy could be read"
                                 + (f": {why.message}" if why is not None else ""))
        session = await self._session(ctx, streams, checked) if seal.stream is not None else None
        ref_count, ref_bytes = await self._compare(ctx, seal, prod, checked, session, findings)
        await sample_reads(ctx, self.cfg.throughput_sample, self.cfg.throughput_sample_every.total_seconds(),
                           checked, session)
        now = ctx.clock()
        stale = self._judge_point(ctx, seal, ref_count, now, findings)
        if session is not None:
            findings.extend(await session.finish(
                {s.name: dict(s.src.meter.requests) for s in checked if isinstance(s.src, S3Source)},
                [s.name for s in checked if s.name in session.copies and not s.broken]))
        provider_media = ctx.config.compliance.provider_counts_as_media
        facts = {s.name: await copy_facts(s.src, s.state, s.storage_classes, provider_media) for s in streams}
        findings.extend(self._independence(ctx, prod, copies, facts))
        points = live_findings(asset.rpo.total_seconds(), asset.production.frozen, prod, copies,
                               seal.sealed and prod in checked, seal.recovery_point, now, findings)
        reports = [self._report(ctx, s, checked, seal.sealed, seal.bad, points.get(s.name, seal.recovery_point),
                                facts[s.name], findings) for s in streams]
        for s in streams:
            findings.extend(s.findings)
            findings.extend(facts[s.name].findings)
        outcome = _outcome(reports, seal, stale, findings)
        figures = _figures(seal, prod, copies, checked, reports, ref_count, ref_bytes, now)
        if session is not None and ctx.asset.verification is not None:
            figures.update(_verify_figures(session))
        return Report(outcome, tuple(findings), figures, tuple(reports), seal.recovery_point)

    async def _compare(self, ctx: RunContext, seal: SealState, prod: Stream, checked: list[Stream],
                       session: VerifySession | None, findings: list[Finding]) -> tuple[int, int]:
        """The merge of the reference with every checked stream: objects and bytes of the reference. Without a
        seal, production is the reference: the recovery point is its newest believable time."""
        if seal.stream is None:
            return 0, 0
        future = FutureTimes.at(ctx)  # production times ahead of the clock: findings, never the recovery point
        prover = Prover(self.cfg.verify_content, self.cfg.read_sample, self.cfg.list_limit, session)
        merge = ReplicaMerge(ctx, prover, checked, prod.src if prod.state is None else None, seal.sealed, future,
                             LiveRule(ctx.asset.production.frozen, future.cutoff, seal.seal_time))
        ref_count = ref_bytes = 0
        newest = 0.0
        try:
            ref_count, ref_bytes, newest = await merge.run(seal.stream)
        except ManifestError as exc:
            seal.bad = True
            findings.append(Finding(Severity.CRITICAL, "manifest_corrupt", str(exc), "manifest"))
        except (S3Unavailable, ReferenceFailed) as exc:
            raise ValidatorError(exc.code, exc.message) from None
        except PermissionError as exc:
            raise ValidatorError("permission_denied", f"cannot list: {exc.strerror}") from None
        except FileNotFoundError as exc:
            raise ValidatorError("location_changed",
                                 f"a directory vanished while listing: {exc.strerror}") from None
        if not seal.sealed:
            seal.recovery_point = newest or None
            if (f := future.finding("production")) is not None:
                seal.untimed = seal.recovery_point is None
                findings.append(f if not seal.untimed else Finding(
                    Severity.CRITICAL, f.code, f"{f.message}; no object has a believable time", f.subject))
            prod.verified = ref_count  # production is the reference: it holds every object by definition
        return ref_count, ref_bytes

    @staticmethod
    def _judge_point(ctx: RunContext, seal: SealState, ref_count: int, now: float, findings: list[Finding]) -> bool:
        """Whether the recovery point is older than the RPO (an empty or badly sealed one has none)."""
        if seal.bad:
            seal.recovery_point = None
        elif ref_count == 0 and seal.stream is not None:
            findings.append(Finding(Severity.CRITICAL, "empty_recovery_point",
                                    "the recovery point holds no objects", "production"))
        point, rpo = seal.recovery_point, ctx.asset.rpo.total_seconds()
        if point is None or now - point <= rpo:
            return False
        findings.append(Finding(
            Severity.CRITICAL, "rpo_exceeded",
            f"newest recovery point is {format_duration(now - point)} old (RPO {format_duration(rpo)})", "production"))
        return True

    async def _session(self, ctx: RunContext, streams: list[Stream], checked: list[Stream]) -> VerifySession | None:
        """The verification ledger of this run, when the asset has a ``verification`` policy. It covers
        every checked stream: the copies, and production when a seal is the reference (production is then
        verified like a copy, within the same budget)."""
        policy = ctx.asset.verification
        if policy is None:
            return await self._unchanged_session(ctx, checked)
        if ctx.ledger is None:
            raise ValidatorError("no_store", "the verification policy needs the store (run through the daemon)")
        session = VerifySession(ctx.ledger, ctx.asset_name, policy, ctx.clock(),
                                86400.0 / self.cfg.schedule.interval_seconds())
        for s in streams:
            if isinstance(s.src, S3Source):
                session.add_meter(s.src.meter)
        for s in checked:
            session.add_copy(s.name, s.src.location, s.src.meter if isinstance(s.src, S3Source) else None,
                             s.unlisted)
        await session.start()
        return session

    async def _unchanged_session(self, ctx: RunContext, checked: list[Stream]) -> VerifySession | None:
        """Without a policy, the ledger of a sealed filesystem production (:mod:`.unchanged`): None when
        production is not checked against a seal, is not a filesystem, re-reads are off or there is no store."""
        prod = next((s for s in checked if s.src.role == "production"), None)
        reread = self.cfg.production_reread
        if prod is None or not isinstance(prod.src, FilesystemSource) or reread is None or ctx.ledger is None:
            return None
        session = UnchangedSession(ctx.ledger, ctx.asset_name, reread, ctx.clock(),
                                   86400.0 / self.cfg.schedule.interval_seconds())
        session.add_copy(prod.name, prod.src.location, None, prod.unlisted)
        await session.start()
        return session

    def _independence(self, ctx: RunContext, prod: Stream, copies: list[Stream],
                      facts: dict[str, Facts]) -> list[Finding]:
        out: list[Finding] = []
        pf = facts[prod.name]
        for s in copies:
            f = facts[s.name]
            deps, found = dependencies(s.name, f, pf)
            out.extend(found)
            same_domain = f.region == pf.region and (f.provider == pf.provider or not (f.provider and pf.provider))
            if s.src.site and pf.region and f.region_observed and same_domain and s.src.site != prod.src.site:
                out.append(Finding(Severity.WARNING, "site_contradiction",
                                   f"declared site {s.src.site!r} differs from production, but the bucket is in the "
                                   f"production region {f.region!r}", s.name))
            ctx.extras.setdefault("dependencies", {})[s.name] = deps
        return out

    def _report(self, ctx: RunContext, s: Stream, checked: list[Stream], sealed: bool, bad_seal: bool,
                recovery_point: float | None, facts: Facts, findings: list[Finding]) -> CopyReport:
        if s.state is not None:
            state = s.state
        elif s.src.role == "production" and not sealed:
            state = CopyState.ERROR if bad_seal else CopyState.VERIFIED  # the reference itself
        elif s.missing or s.mismatch or s.late:
            state = CopyState.FAILED
        elif s.errors or s.broken or bad_seal:
            state = CopyState.ERROR
        else:
            state = CopyState.VERIFIED
        in_merge = s in checked or (s.src.role == "production" and not sealed and s.state is None)
        return copy_report(
            ctx, s.src, state, facts, s, verified=s.verified, text=_LOCK_TEXT, recovery_point=recovery_point,
            objects={"verified": s.verified, "missing": s.missing, "mismatch": s.mismatch, "extra": s.extra,
                     **s.counts()}
            if in_merge else {},
            bytes_verified=s.bytes_verified, evidence=dict(s.evidence),
            deps=tuple(ctx.extras.get("dependencies", {}).get(s.name, ())), findings=findings, reads=s.reads)


def _outcome(reports: list[CopyReport], seal: SealState, stale: bool, findings: list[Finding]) -> Outcome:
    # A failed production under a seal is silent corruption (or a frozen production that changed).
    copy_failed = any(r.state == CopyState.FAILED for r in reports if r.role == "copy" or seal.sealed)
    empty = any(f.code == "empty_recovery_point" for f in findings)
    if copy_failed or seal.bad or stale or empty or seal.untimed:
        return Outcome.FAILED
    if any(r.state == CopyState.ERROR for r in reports):
        return Outcome.ERROR
    return Outcome.OK


def _figures(seal: SealState, prod: Stream, copies: list[Stream], checked: list[Stream], reports: list[CopyReport],
             ref_count: int, ref_bytes: int, now: float) -> dict[str, float]:
    figures = {
        "objects_reference": float(ref_count),
        "bytes_reference": float(ref_bytes),
        "bytes_verified": float(sum(s.bytes_verified for s in [prod, *copies])),
        "objects_missing": float(sum(s.missing for s in copies)),
        "objects_mismatched": float(sum(s.mismatch for s in copies)),
        "objects_extra": float(sum(s.extra for s in copies)),
        "objects_behind": float(sum(s.behind for s in copies)),
        "copies_verified": float(sum(1 for r in reports if r.state == CopyState.VERIFIED)),
    }
    if seal.recovery_point is not None:
        figures["recovery_point_age_seconds"] = max(0.0, now - seal.recovery_point)
    if seal.sealed and prod in checked:
        figures["production_changed_since_seal"] = float(prod.changed + prod.added + prod.deleted)
    return figures


def _verify_figures(session: VerifySession) -> dict[str, float]:
    return {
        "verify_objects_read": float(session.reads), "verify_bytes_read": float(session.read_bytes),
        "verify_reads_deferred": float(session.skipped_for_budget),
        "verify_allowance_bytes": float(session.allowance()),
        "verify_spent_bytes_today": float(session.spent_today()),
    }


PLUGIN = Plugin(ReplicaConfig, ReplicaValidator)
