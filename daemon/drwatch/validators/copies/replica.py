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
import functools
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import CopyReport, CopyState, Finding, Outcome, Report, Severity
from drwatch.formats.manifest import ManifestError, aread
from drwatch.formats.seals import seal_absence, seal_present
from drwatch.storage.filesystem import MANIFEST_NAME, Entry
from drwatch.storage.s3 import S3Unavailable, checksum_matches_sha256
from drwatch.storage.sources import Facts, FilesystemSource, S3Source, Source, same_single_part
from drwatch.validators.assetseal import seal_trust
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.ledger import LedgerEntry, composite_matches
from drwatch.validators.copies.live import LiveKey, LiveRule, LiveTally, live_findings, seal_point
from drwatch.validators.copies.merge import Window, guard, listing, next_entry
from drwatch.validators.copies.posture import (
    LockText,
    copy_facts,
    copy_report,
    copy_sources,
    dependencies,
    probe_location,
    production_source,
    record_lock,
    unknown_copies,
)
from drwatch.validators.copies.reference import Reference, ReferenceFailed
from drwatch.validators.copies.timetrust import FutureTimes, seal_in_future
from drwatch.validators.copies.unchanged import UnchangedSession
from drwatch.validators.copies.verification import VerifySession, reference_id
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

    @field_validator("production_reread")
    @classmethod
    def _reread_days(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(days=1):
            raise ValueError("production_reread must be at least 1d (re-reads are paced per day), or null")
        return value

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        return unknown_copies(self.copies, asset)


@dataclass
class _Stream(LiveTally):
    first_error: str = ""

    def proven(self, how: str, nbytes: int = 0) -> None:
        self.verified += 1
        self.evidence[how] = self.evidence.get(how, 0) + 1
        self.bytes_verified += nbytes


async def _nxt(it: AsyncIterator[Entry]) -> Entry | None:
    return await anext(it, None)


# S3 failures after which a location is not asked again in this run (it is down, not one object).
_LOCATION_DOWN = frozenset({"unreachable", "no_credentials"})

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
        limit = self.cfg.list_limit
        prod = _Stream(production_source(ctx))
        copies = [_Stream(src) for src in copy_sources(ctx, self.cfg.copies)]
        streams = [prod, *copies]

        async def probe(s: _Stream) -> None:
            s.state, finding = await probe_location(s.src)
            if finding is not None:
                findings.append(finding)

        await asyncio.gather(*(probe(s) for s in streams))

        # Reference: the seal if there is one, else the production listing.
        manifest_path = self._manifest_path(ctx, prod.src)
        ref_stream: AsyncIterator[Entry] | None = None
        recovery_point: float | None = None
        seal_time: float | None = None  # the seal's point in time (production modified after it: a live change)
        sealed = bad_seal = untimed = False  # untimed: no believable time for the recovery point (time_in_future)
        if manifest_path is not None and await asyncio.to_thread(seal_present, manifest_path):
            try:
                header, ref_stream = await aread(manifest_path, ctx.exit_stack,  # closed however the run ends
                                                 seal_trust(ctx.config, ctx.asset))
            except ManifestError as exc:  # corrupt, or unsigned/mis-signed where signatures are required
                bad_seal = True
                findings.append(Finding(Severity.CRITICAL, exc.code, str(exc), "manifest"))
            except OSError as exc:
                raise ValidatorError("manifest_unreadable", f"cannot read manifest: {exc.strerror}") from None
            else:
                sealed = True
                recovery_point = seal_time = seal_point(header.sealed_at, header.extra)
                if (ahead := seal_in_future(ctx, header.sealed_at)) is not None:
                    findings.append(ahead)
                    recovery_point, untimed = None, True  # a seal dated ahead never makes the recovery point fresh
        elif ctx.asset.manifest is not None and manifest_path is not None:
            # Missing is a bad seal only where it could have been seen; anything unreadable is `error`.
            unreadable = await asyncio.to_thread(seal_absence, manifest_path,
                                                 prod.src.root if isinstance(prod.src, FilesystemSource) else None,
                                                 prod.state is None)
            if unreadable is not None:
                raise ValidatorError("manifest_unreadable", unreadable)
            bad_seal = True
            findings.append(Finding(Severity.CRITICAL, "manifest_missing",
                                    "the configured manifest does not exist: the recovery point was "
                                    "never sealed", "manifest"))

        # Copies before production: per key, with equal claims on the verification budget, backups are read first.
        checked = [s for s in ([*copies, prod] if sealed else copies) if s.state is None]
        if not sealed and not bad_seal and prod.state is None:
            ref_stream = prod.src.entries()
        if ref_stream is None and not bad_seal:
            why = next((f for f in findings if f.subject == prod.name), None)
            raise ValidatorError(why.code if why is not None else "no_reference",
                                 "neither a manifest nor the production copy could be read"
                                 + (f": {why.message}" if why is not None else ""))

        ref_count = ref_bytes = 0
        newest = 0.0
        future = FutureTimes.at(ctx)  # production times ahead of the clock: findings, never the recovery point
        session = await self._session(ctx, streams, checked) if ref_stream is not None else None
        if ref_stream is not None:
            try:
                ref_count, ref_bytes, newest = await self._merge(
                    ctx, ref_stream, prod.src if prod.state is None else None, checked, sealed, limit, session,
                    future, LiveRule(asset.production.frozen, future.cutoff, seal_time))
            except ManifestError as exc:
                bad_seal = True
                findings.append(Finding(Severity.CRITICAL, "manifest_corrupt", str(exc), "manifest"))
            except (S3Unavailable, ReferenceFailed) as exc:
                raise ValidatorError(exc.code, exc.message) from None
            except PermissionError as exc:
                raise ValidatorError("permission_denied", f"cannot list: {exc.strerror}") from None
            except FileNotFoundError as exc:
                raise ValidatorError("location_changed",
                                     f"a directory vanished while listing: {exc.strerror}") from None
        if not sealed and ref_stream is not None:
            recovery_point = newest or None
            if (f := future.finding("production")) is not None:
                untimed = recovery_point is None
                findings.append(f if not untimed else Finding(
                    Severity.CRITICAL, f.code, f"{f.message}; no object has a believable time", f.subject))
            prod.verified = ref_count  # production is the reference: it holds every object by definition

        now = ctx.clock()
        if bad_seal:
            recovery_point = None
        elif ref_count == 0 and ref_stream is not None:
            findings.append(Finding(Severity.CRITICAL, "empty_recovery_point",
                                    "the recovery point holds no objects", "production"))
        stale = recovery_point is not None and now - recovery_point > asset.rpo.total_seconds()
        if stale:
            assert recovery_point is not None
            findings.append(Finding(
                Severity.CRITICAL, "rpo_exceeded",
                f"newest recovery point is {format_duration(now - recovery_point)} old "
                f"(RPO {format_duration(asset.rpo.total_seconds())})", "production"))

        if session is not None:
            findings.extend(await session.finish(
                {s.name: dict(s.src.meter.requests) for s in checked if isinstance(s.src, S3Source)},
                [s.name for s in checked if s.name in session.copies and not s.broken]))
        provider_media = ctx.config.compliance.provider_counts_as_media
        facts = {s.name: await copy_facts(s.src, s.state, s.storage_classes, provider_media) for s in streams}
        findings.extend(self._independence(ctx, prod, copies, facts))
        points = live_findings(asset.rpo.total_seconds(), asset.production.frozen, prod, copies,
                               sealed and prod in checked, recovery_point, now, findings)
        reports = [self._report(ctx, s, checked, sealed, bad_seal, points.get(s.name, recovery_point), facts[s.name],
                                findings) for s in streams]
        for s in streams:
            findings.extend(s.findings)
            findings.extend(facts[s.name].findings)

        # A failed production under a seal is silent corruption (or a frozen production that changed).
        copy_failed = any(r.state == CopyState.FAILED for r in reports if r.role == "copy" or sealed)
        any_error = any(r.state == CopyState.ERROR for r in reports)
        empty = any(f.code == "empty_recovery_point" for f in findings)
        if copy_failed or bad_seal or stale or empty or untimed:
            outcome = Outcome.FAILED
        elif any_error:
            outcome = Outcome.ERROR
        else:
            outcome = Outcome.OK
        figures = {
            "objects_reference": float(ref_count),
            "bytes_reference": float(ref_bytes),
            "bytes_verified": float(sum(s.bytes_verified for s in streams)),
            "objects_missing": float(sum(s.missing for s in copies)),
            "objects_mismatched": float(sum(s.mismatch for s in copies)),
            "objects_extra": float(sum(s.extra for s in copies)),
            "objects_behind": float(sum(s.behind for s in copies)),
            "copies_verified": float(sum(1 for r in reports if r.state == CopyState.VERIFIED)),
        }
        if recovery_point is not None:
            figures["recovery_point_age_seconds"] = max(0.0, now - recovery_point)
        if sealed and prod in checked:
            figures["production_changed_since_seal"] = float(prod.changed + prod.added + prod.deleted)
        if session is not None and ctx.asset.verification is not None:
            figures.update({
                "verify_objects_read": float(session.reads), "verify_bytes_read": float(session.read_bytes),
                "verify_reads_deferred": float(session.skipped_for_budget),
                "verify_allowance_bytes": float(session.allowance()),
                "verify_spent_bytes_today": float(session.spent_today()),
            })
        return Report(outcome, tuple(findings), figures, tuple(reports), recovery_point)

    async def _session(self, ctx: RunContext, streams: list[_Stream], checked: list[_Stream]) -> VerifySession | None:
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

    async def _unchanged_session(self, ctx: RunContext, checked: list[_Stream]) -> VerifySession | None:
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

    def _manifest_path(self, ctx: RunContext, prod: Source) -> Path | None:
        root = prod.root if isinstance(prod, FilesystemSource) else None
        if ctx.asset.manifest is None:
            return root / MANIFEST_NAME if root is not None else None
        path = Path(os.path.expanduser(ctx.asset.manifest))
        if path.is_absolute():
            return path
        return root / path if root is not None else ctx.config.resolve_path(ctx.asset.manifest)

    def _independence(self, ctx: RunContext, prod: _Stream, copies: list[_Stream],
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

    def _report(self, ctx: RunContext, s: _Stream, checked: list[_Stream], sealed: bool, bad_seal: bool,
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
            deps=tuple(ctx.extras.get("dependencies", {}).get(s.name, ())), findings=findings)

    async def _verify(self, ctx: RunContext, s: _Stream, e: Entry, ref: Reference, limit: int,
                      session: VerifySession | None = None, prior: LedgerEntry | None = None,
                      live: LiveKey | None = None) -> None:
        """Prove one object of one copy against the reference with the strongest cheap evidence."""
        try:
            # Production's listing entry, when production is the reference: lets the source skip a HEAD whose
            # answer could not change the verdict (equal ETags).
            head = await s.src.head(e, ref.entry if ref.prod is not None else None)
        except FileNotFoundError:
            s.missing += 1
            s.note("missing_file", "object vanished during the check", e.key, limit, Severity.CRITICAL)
            return
        if head is not None:
            record_lock(s, head)
        verdict: bool | None = None
        how = value = ""
        # Under a budget, a SHA256 is compared with the reference only where that costs no read of it.
        cheap_sha = session is None or await ref.read_cost() == 0
        if head is not None and head.checksums:
            # A provider SHA256 proves nothing against a seal of another algorithm (blake3): then a read decides.
            if "SHA256" in head.checksums and (ref.entry.sha256 is not None or ref.prod is not None) and cheap_sha \
                    and ref.entry.algorithm == "sha256":
                verdict = checksum_matches_sha256(head, await ref.sha256())
                how, value = "checksum", f"SHA256:{head.checksums['SHA256']}"
            elif not (ref.prod is not None and not ref.head_known and same_single_part(e, ref.entry)):
                # A CRC (not SHA256) would only be compared with production's, which costs production a HEAD:
                # not asked where equal single-part ETags (MD5s, stronger than a CRC) already prove the object.
                rhead = await ref.head()
                common = [a for a in head.checksums if rhead is not None and a in rhead.checksums]
                if common and rhead is not None:
                    verdict = head.checksums[common[0]] == rhead.checksums[common[0]]
                    how, value = "checksum", f"{common[0]}:{head.checksums[common[0]]}"
        if verdict is None and head is not None and head.composite and ref.prod is not None:
            rhead = await ref.head()
            for algo, mine in head.composite.items():
                theirs = rhead.composite.get(algo) if rhead is not None else None
                if theirs is not None and composite_matches(mine, theirs):
                    verdict, how, value = True, "checksum", f"{algo}:{mine}"  # equal part layouts
                    break
        if verdict is None and e.etag and ref.entry.etag and ref.prod is not None and e.etag == ref.entry.etag:
            verdict, how, value = True, "etag", e.etag  # equal ETags (same content, or same part layout of it)
        if session is not None and s.name in session.copies:
            await self._verify_ledger(s, e, ref, limit, session, prior, verdict, how, value, live)
            return
        if verdict is None:
            if not self.cfg.verify_content:
                s.proven("size")
                return
            if self.cfg.read_sample < 1.0 and random.random() >= self.cfg.read_sample:
                s.proven("size")
                return
            verdict, _n = await ref.read_matches(s.src, e)
            how = "read"
        if verdict:
            # Bytes proven equal (by any evidence but size); bytes read and found different do not count.
            s.proven(how, e.size if how in ("checksum", "etag", "read") else 0)
        else:
            explained = await live.explains(e, s.src.role == "production", s.slack) if live is not None else ""
            s.differs(explained, "content_mismatch", f"content differs from the recovery point ({how})", e.key,
                      limit, e.mtime)

    async def _verify_ledger(self, s: _Stream, e: Entry, ref: Reference, limit: int, session: VerifySession,
                             prior: LedgerEntry | None, verdict: bool | None, how: str, value: str,
                             live: LiveKey | None = None) -> None:
        """Under a verification policy: metadata evidence always; a read when the ledger's plan or the
        budget says so (never because metadata was missing: that object waits for its turn). An object the
        ledger found bad stays bad, unless a read proves it good or it or its reference changed."""
        read = False
        ref_id = reference_id(ref.entry)
        if verdict is not False and session.candidate(s.name, e, prior, ref_id):
            cost = await ref.read_cost()
            if session.take(s.name, e, cost, priority=session.requeued(e, prior, ref_id, value)):
                n = 0
                try:
                    read_ok, n = await ref.read_matches(s.src, e)
                finally:
                    session.read_done(s.name, e, cost, n)
                read = True
                if not read_ok:
                    verdict, how = False, "read"
        if verdict is not False and not read and prior is not None and session.known_bad(e, prior, ref_id, value):
            verdict, how = False, session.bad_evidence(prior)
        if verdict is False:
            explained = await live.explains(e, s.src.role == "production", s.slack) if live is not None else ""
            s.differs(explained, "content_mismatch", f"content differs from the recovery point ({how})", e.key,
                      limit, e.mtime)
            session.record(s.name, e, prior, how, value, read, ok=False, ref=ref_id)
            return
        s.proven("read" if read else how or session.unread_evidence, e.size if read or how else 0)
        session.record(s.name, e, prior, how or "size", value, read, ok=True, ref=ref_id)

    async def _size_differs(self, s: _Stream, h: Entry, reference: Reference, live: LiveKey, limit: int,
                            session: VerifySession | None, prior: LedgerEntry | None) -> None:
        explained = await live.explains(h, s.src.role == "production", s.slack)
        s.differs(explained, "size_mismatch", f"size {h.size} != {reference.entry.size}", h.key, limit, h.mtime)
        if session is not None and s.name in session.copies and explained != "changed":
            session.record(s.name, h, prior, "size", "", False, ok=False, ref=reference_id(reference.entry))

    async def _merge(self, ctx: RunContext, ref: AsyncIterator[Entry], prod: Source | None, streams: list[_Stream],
                     sealed: bool, limit: int, session: VerifySession | None = None,
                     future: FutureTimes | None = None, rule: LiveRule | None = None) -> tuple[int, int, float]:
        """One pass over the reference and every checked stream in key order."""
        iters = [listing(s) for s in streams]
        rule = rule or LiveRule(frozen=True, cutoff=0.0)
        prod_i = next((i for i, s in enumerate(streams) if s.src.role == "production"), None)  # under a seal

        async def advance(i: int) -> Entry | None:
            """The next entry of a checked stream; a listing that fails drops only that stream."""
            s = streams[i]
            return s.saw(None if s.broken else await next_entry(s, iters[i], limit), rule)

        heads: list[Entry | None] = [None] * len(streams)
        ref_head: Entry | None = None
        ref_count = ref_bytes = 0
        newest = 0.0
        window = Window(max(4, ctx.hashes.workers * 8))
        ref_prod = None if sealed else prod

        async def guarded(s: _Stream, work: Callable[[], Awaitable[None]], key: str) -> None:
            try:
                await guard(s, work, key, limit, "object vanished during the check", _LOCATION_DOWN)
            except ReferenceFailed as exc:
                if exc.code in _LOCATION_DOWN:
                    raise  # production is down: nothing more can be proven (the run ends as error)
                s.errors += 1  # this object of this copy could not be proven: never a failure of the copy
                s.note(exc.code, exc.message, key, limit, Severity.WARNING)

        try:
            # Inside the try: a run cut off here still closes every listing and the reference.
            heads = [await advance(i) for i in range(len(streams))]
            ref_head = await _nxt(ref)
            while ref_head is not None or any(h is not None for h in heads):
                candidates = [h.key for h in heads if h is not None]
                if ref_head is not None:
                    candidates.append(ref_head.key)
                key = min(candidates)
                r = ref_head if ref_head is not None and ref_head.key == key else None
                reference = Reference(r, ref_prod, direct=len(streams) == 1) if r is not None else None
                # Production's own object at this key: its listing under a seal, else the reference itself.
                ph = heads[prod_i] if prod_i is not None else None if sealed else r
                live = LiveKey(rule, streams[prod_i].src if prod_i is not None else prod,
                               ph if ph is not None and ph.key == key else None)
                for i, s in enumerate(streams):
                    if s.broken:
                        heads[i] = None
                        continue
                    h = heads[i]
                    if h is not None and h.key == key:
                        prior = None
                        if session is not None and s.name in session.copies:
                            prior = await session.seek(s.name, h.key)
                            if reference is not None and h.size == reference.entry.size:
                                session.note_seen(s.name, h, prior)
                        if reference is None and i == prod_i and not rule.frozen:
                            s.added += 1  # live production: new since the seal
                        elif reference is None:
                            s.extra += 1
                            s.late = s.late or i == prod_i  # frozen production grew
                            s.note("extra_file", "object not in the recovery point", h.key, limit, Severity.WARNING)
                        elif i == prod_i and rule.newer(h.mtime, rule.seal_time):
                            s.changed += 1  # live production modified it after the seal: expected, not read
                        elif h.size != reference.entry.size:
                            await window.spawn(functools.partial(guarded, s, functools.partial(
                                self._size_differs, s, h, reference, live, limit, session, prior), h.key))
                        else:
                            await window.spawn(functools.partial(guarded, s, functools.partial(
                                self._verify, ctx, s, h, reference, limit, session, prior, live), h.key))
                        heads[i] = await advance(i)
                    elif r is not None and not s.unchecked(r.key):  # under an unlistable directory: error
                        s.absent(r.key, i == prod_i, live, limit)
                if r is not None:
                    ref_count += 1
                    ref_bytes += r.size
                    if future is None or future.believe(r.key, r.mtime):
                        newest = max(newest, r.mtime)
                    ref_head = await _nxt(ref)
                if session is not None and session.due_flush():
                    await session.flush()
            await window.join()
            for s in streams:
                s.judge_deferred(rule, limit)
            for s in streams:
                if session is not None and s.name in session.copies and not s.broken:
                    await session.end_of_listing(s.name)  # rows past the last listed key: deleted objects
        finally:
            await window.cancel()
            if session is not None:
                await session.flush_bounded()  # keep the progress of an interrupted run
            for it in [*iters, ref]:
                await it.aclose()  # type: ignore[attr-defined]
        return ref_count, ref_bytes, newest


PLUGIN = Plugin(ReplicaConfig, ReplicaValidator)
