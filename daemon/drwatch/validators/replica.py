"""Validator ``replica``: every copy of an asset holds the newest recovery point, file for file.

The reference is the asset's manifest (``drwatch seal``) when there is one, else the production copy.
Production and all copies are merged in one pass over sorted streams (memory independent of the file
count). Per copy it reports missing files, size and content (sha256) mismatches, extra files (a finding,
not a failure), and the observed media. A newest recovery point older than the RPO fails the run.

Outcomes: ``failed`` when a copy is missing or differs, the seal is missing/corrupt, or the recovery
point is stale or empty; ``error`` when a location could not be read; ``ok`` otherwise.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from drwatch.durations import format_duration
from drwatch.errors import ConfigProblem, ValidatorError
from drwatch.manifest import ManifestError, aread
from drwatch.model import CopyReport, CopyState, Finding, Outcome, Report, Severity
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.storage.filesystem import MANIFEST_NAME, Entry, alist, filesystem_type, media_class
from drwatch.validators.base import RunContext, ValidatorConfigBase

if TYPE_CHECKING:
    from drwatch.config import AssetConfig, Config


class ReplicaConfig(ValidatorConfigBase):
    kind: Literal["replica"] = "replica"
    verify_content: bool = True
    copies: list[str] | None = None  # check only these copies (default: all)
    list_limit: int = 10  # findings listed one by one per copy and category, then summarised

    def cross_check(self, asset_name: str, asset: AssetConfig, cfg: Config) -> list[ConfigProblem]:
        known = {c.label for c in asset.copies}
        return [
            ConfigProblem(f"copies[{i}]", f"unknown copy {name!r} (asset copies: {sorted(known)})")
            for i, name in enumerate(self.copies or [])
            if name not in known
        ]


@dataclass
class _Stream:
    name: str
    role: str  # production | copy
    location: str
    loc: FilesystemLocationConfig
    base: Path  # the location's mount/root
    root: Path  # base + prefix
    state: CopyState | None = None  # set early when unavailable
    verified: int = 0
    missing: int = 0
    mismatch: int = 0
    extra: int = 0
    errors: int = 0
    bytes_verified: int = 0
    findings: list[Finding] = field(default_factory=list)
    listed: dict[str, int] = field(default_factory=dict)

    def note(self, code: str, message: str, subject: str, limit: int, severity: Severity) -> None:
        shown = self.listed.get(code, 0)
        self.listed[code] = shown + 1
        if shown < limit:
            self.findings.append(Finding(severity, code, message, f"{self.name}:{subject}"))


async def _probe(path: Path) -> str:
    """'ok', 'absent' (path missing) or 'unreadable'."""

    def check() -> str:
        try:
            if not path.is_dir():
                return "absent"
            with os.scandir(path):
                return "ok"
        except PermissionError:
            return "unreadable"
        except OSError:
            return "absent"

    return await asyncio.to_thread(check)


async def _nxt(it: AsyncIterator[Entry]) -> Entry | None:
    return await anext(it, None)


class ReplicaValidator:
    kind: ClassVar[str] = "replica"

    def __init__(self, cfg: ReplicaConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        asset, cfg = ctx.asset, ctx.config
        findings: list[Finding] = []
        limit = self.cfg.list_limit

        def stream_for(name: str, role: str, location: str, prefix: str) -> _Stream:
            loc = cfg.locations[location]
            base = cfg.resolve_path(loc.path)
            return _Stream(name, role, location, loc, base, base.joinpath(*prefix.split("/")) if prefix else base)

        prod = stream_for("production", "production", asset.production.location, asset.production.prefix)
        wanted = set(self.cfg.copies) if self.cfg.copies is not None else None
        copies = [stream_for(c.label, "copy", c.location, c.prefix) for c in asset.copies
                  if wanted is None or c.label in wanted]

        # Availability: a missing mount is "could not check" (or offline); a missing prefix on a
        # mounted location is a missing copy.
        for s in [prod, *copies]:
            base_state, root_state = await _probe(s.base), await _probe(s.root)
            if base_state != "ok":
                if s.loc.offline:
                    s.state = CopyState.OFFLINE
                    findings.append(Finding(Severity.INFO, "offline", "offline copy not mounted", s.name))
                else:
                    s.state = CopyState.ERROR
                    findings.append(Finding(Severity.WARNING, "location_unavailable",
                                            f"location {s.location!r} is not mounted or not readable "
                                            f"({base_state})", s.name))
            elif root_state == "unreadable":
                s.state = CopyState.ERROR
                findings.append(Finding(Severity.WARNING, "permission_denied",
                                        "copy directory is not readable", s.name))
            elif root_state == "absent":
                if s.role == "copy":
                    s.state = CopyState.FAILED
                    findings.append(Finding(Severity.CRITICAL, "copy_missing",
                                            "the copy's directory does not exist", s.name))
                else:
                    s.state = CopyState.ERROR
                    findings.append(Finding(Severity.WARNING, "production_missing",
                                            "the production directory does not exist", s.name))

        # Reference: the seal if there is one, else the production listing.
        manifest_path = self._manifest_path(ctx, prod)
        ref_stream: AsyncIterator[Entry] | None = None
        recovery_point: float | None = None
        sealed = False
        bad_seal = False
        if manifest_path is not None and await asyncio.to_thread(manifest_path.is_file):
            try:
                header, ref_stream = await aread(manifest_path)
            except ManifestError as exc:
                bad_seal = True
                findings.append(Finding(Severity.CRITICAL, "manifest_corrupt", str(exc), "manifest"))
            except OSError as exc:
                raise ValidatorError("manifest_unreadable", f"cannot read manifest: {exc.strerror}") from None
            else:
                sealed = True
                recovery_point = header.sealed_at
        elif self._manifest_required(ctx):
            if prod.state is None:
                bad_seal = True
                findings.append(Finding(Severity.CRITICAL, "manifest_missing",
                                        "the configured manifest does not exist: the recovery point was "
                                        "never sealed", "manifest"))
            else:
                raise ValidatorError("manifest_unreadable", "production location unavailable; "
                                     "cannot reach the configured manifest")

        checked = [s for s in ([prod, *copies] if sealed else copies) if s.state is None]
        if not sealed and not bad_seal and prod.state is None:
            ref_stream = alist(prod.root)
        if ref_stream is None and not bad_seal:
            raise ValidatorError("no_reference", "neither a manifest nor the production copy could be read")

        ref_count = 0
        ref_bytes = 0
        newest_mtime = 0.0
        if ref_stream is not None:
            try:
                ref_count, ref_bytes, newest_mtime = await self._merge(ctx, ref_stream, prod, checked,
                                                                       sealed, limit)
            except ManifestError as exc:
                bad_seal = True
                findings.append(Finding(Severity.CRITICAL, "manifest_corrupt", str(exc), "manifest"))
            except PermissionError as exc:
                raise ValidatorError("permission_denied", f"cannot list: {exc.strerror}") from None
            except FileNotFoundError as exc:
                raise ValidatorError("location_changed", f"a directory vanished while listing: "
                                     f"{exc.strerror}") from None
        if not sealed and ref_stream is not None:
            recovery_point = newest_mtime or None

        now = ctx.clock()
        if bad_seal:
            recovery_point = None
        elif ref_count == 0 and ref_stream is not None:
            findings.append(Finding(Severity.CRITICAL, "empty_recovery_point",
                                    "the recovery point holds no files", "production"))
        stale = False
        if recovery_point is not None and now - recovery_point > asset.rpo.total_seconds():
            stale = True
            findings.append(Finding(
                Severity.CRITICAL, "rpo_exceeded",
                f"newest recovery point is {format_duration(now - recovery_point)} old "
                f"(RPO {format_duration(asset.rpo.total_seconds())})", "production"))

        reports: list[CopyReport] = []
        for s in [prod, *copies]:
            reports.append(self._report(s, checked, sealed, bad_seal, recovery_point, findings))
            findings.extend(s.findings)

        copy_failed = any(r.state == CopyState.FAILED for r in reports if r.role == "copy")
        any_error = any(r.state == CopyState.ERROR for r in reports)
        empty = any(f.code == "empty_recovery_point" for f in findings)
        if copy_failed or bad_seal or stale or empty:
            outcome = Outcome.FAILED
        elif any_error:
            outcome = Outcome.ERROR
        else:
            outcome = Outcome.OK
        figures = {
            "files_reference": float(ref_count),
            "bytes_reference": float(ref_bytes),
            "bytes_verified": float(sum(s.bytes_verified for s in [prod, *copies])),
            "files_missing": float(sum(s.missing for s in copies)),
            "files_mismatched": float(sum(s.mismatch for s in copies)),
            "files_extra": float(sum(s.extra for s in copies)),
            "copies_verified": float(sum(1 for r in reports if r.state == CopyState.VERIFIED)),
        }
        if recovery_point is not None:
            figures["recovery_point_age_seconds"] = max(0.0, now - recovery_point)
        return Report(outcome, tuple(findings), figures, tuple(reports), recovery_point)

    def _manifest_required(self, ctx: RunContext) -> bool:
        return ctx.asset.manifest is not None

    def _manifest_path(self, ctx: RunContext, prod: _Stream) -> Path | None:
        if ctx.asset.manifest is None:
            return prod.root / MANIFEST_NAME
        path = Path(os.path.expanduser(ctx.asset.manifest))
        return path if path.is_absolute() else prod.root / path

    def _report(self, s: _Stream, checked: list[_Stream], sealed: bool, bad_seal: bool,
                recovery_point: float | None, findings: list[Finding]) -> CopyReport:
        fstype = filesystem_type(s.root) if s.state is None else None
        observed = media_class(fstype)
        declared = s.loc.media
        if observed is not None and declared is not None and declared != observed:
            findings.append(Finding(Severity.WARNING, "media_contradiction",
                                    f"declared media {declared!r} but the filesystem is {fstype} "
                                    f"({observed}); using the observed media", s.name))
        media = observed or declared or "unknown"
        if s.state is not None:
            state = s.state
        elif s.role == "production" and not sealed:
            state = CopyState.ERROR if bad_seal else CopyState.VERIFIED  # the reference itself
        elif s.missing or s.mismatch:
            state = CopyState.FAILED
        elif s.errors or bad_seal:
            state = CopyState.ERROR
        else:
            state = CopyState.VERIFIED
        if s.role == "production" and sealed and state == CopyState.FAILED:
            findings.append(Finding(Severity.WARNING, "production_drift",
                                    "production no longer matches the sealed recovery point "
                                    f"({s.missing} missing, {s.mismatch} changed)", s.name))
        return CopyReport(
            copy=s.name, location=s.location, role=s.role, state=state,
            recovery_point=recovery_point if state == CopyState.VERIFIED else None,
            media=media, media_observed=observed is not None, site=s.loc.site, region=s.loc.region,
            provider=s.loc.provider, immutable=False, offline=s.loc.offline,
            objects={"verified": s.verified, "missing": s.missing, "mismatch": s.mismatch, "extra": s.extra}
            if s in checked or (s.role == "production" and not sealed) else {},
            bytes_verified=s.bytes_verified,
        )

    async def _merge(self, ctx: RunContext, ref: AsyncIterator[Entry], prod: _Stream, streams: list[_Stream],
                     sealed: bool, limit: int) -> tuple[int, int, float]:
        """One pass over the reference and every checked stream in key order."""
        iters = [alist(s.root) for s in streams]
        heads = [await _nxt(it) for it in iters]
        ref_head = await _nxt(ref)
        ref_count = ref_bytes = 0
        newest = 0.0
        window = max(2, ctx.hashes.workers * 4)
        tasks: set[asyncio.Task[None]] = set()
        verify = self.cfg.verify_content

        async def check(r: Entry, present: list[tuple[_Stream, Entry]]) -> None:
            ref_digest = r.sha256
            if ref_digest is None:
                try:
                    ref_digest, _ = await ctx.hashes.sha256(prod.root.joinpath(*r.parts))
                except OSError as exc:
                    for s, _e in present:
                        s.errors += 1
                        s.note("reference_unreadable", f"cannot read the production file: {exc.strerror}",
                               r.relpath, limit, Severity.WARNING)
                    return
            for s, e in present:
                try:
                    digest, n = await ctx.hashes.sha256(s.root.joinpath(*e.parts))
                except OSError as exc:
                    s.errors += 1
                    s.note("unreadable", f"cannot read: {exc.strerror}", r.relpath, limit, Severity.WARNING)
                    continue
                s.bytes_verified += n
                if digest == ref_digest and n == r.size:
                    s.verified += 1
                else:
                    s.mismatch += 1
                    s.note("content_mismatch", "content differs from the recovery point (sha256)",
                           r.relpath, limit, Severity.CRITICAL)

        try:
            while ref_head is not None or any(h is not None for h in heads):
                candidates = [h.key for h in heads if h is not None]
                if ref_head is not None:
                    candidates.append(ref_head.key)
                key = min(candidates)
                r = ref_head if ref_head is not None and ref_head.key == key else None
                present: list[tuple[_Stream, Entry]] = []
                for i, s in enumerate(streams):
                    h = heads[i]
                    if h is not None and h.key == key:
                        if r is None:
                            s.extra += 1
                            s.note("extra_file", "file not in the recovery point", h.relpath, limit,
                                   Severity.WARNING)
                        elif h.size != r.size:
                            s.mismatch += 1
                            s.note("size_mismatch", f"size {h.size} != {r.size}", h.relpath, limit,
                                   Severity.CRITICAL)
                        elif verify:
                            present.append((s, h))
                        else:
                            s.verified += 1
                        heads[i] = await _nxt(iters[i])
                    elif r is not None:
                        s.missing += 1
                        s.note("missing_file", "file of the recovery point is missing", r.relpath, limit,
                               Severity.CRITICAL)
                if r is not None:
                    ref_count += 1
                    ref_bytes += r.size
                    newest = max(newest, r.mtime)
                    ref_head = await _nxt(ref)
                    if present:
                        while len(tasks) >= window:
                            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                            tasks.difference_update(done)
                            for t in done:
                                t.result()
                        tasks.add(asyncio.create_task(check(r, present)))
            if tasks:
                await asyncio.gather(*tasks)
                tasks.clear()
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for it in iters:
                await it.aclose()  # type: ignore[attr-defined]
        return ref_count, ref_bytes, newest

