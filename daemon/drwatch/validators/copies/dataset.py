"""Validator ``dataset``: datasets, feature stores and experiment artifacts, proven against their seal.

Production and every copy (filesystem or S3) must hold every file of the sealed recovery point with the
sealed size and sha256 (an S3 full-object SHA256 checksum counts; otherwise the bytes are read and hashed in
threads). Every ``*.parquet`` file must also have a readable footer (PAR1 at both ends, footer length in
bounds, metadata parses, column chunks inside the file; on S3 by ranged GETs of the footer only) whose row
count, row-group count and schema fingerprint equal the seal's (:mod:`drwatch.formats.parquet`). So a damaged
data page is caught by the hash, a truncated file by its footer, and a rewrite with another schema or other
rows by precise codes even where only sizes are compared (``verify_content: false``).

``layout: mlflow`` treats the tree as an MLflow file store (``<experiment>/<run>/{meta.yaml, params/,
metrics/, tags/, artifacts/}``) and also proves, in every location, that each experiment and run has a
``meta.yaml`` that parses and names its own directory (run id and experiment id), and that every model the
run logged (tag ``mlflow.log-model.history``) exists under ``artifacts/`` with its ``MLmodel`` file.

The seal is the only reference (row counts and schemas have no other): a seal that is missing or corrupt
fails the run, as the replica validator does for a configured seal; one that cannot be read (production
not mounted, permission) is an error. Copy reports carry the same posture facts as ``replica`` (media,
region, Object Lock per object, independence), so 3-2-1-1-0 is judged for datasets the same way.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from drwatch.core.durations import format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.extras import PARQUET, Need
from drwatch.core.model import CopyReport, CopyState, Finding, Outcome, Report, Severity
from drwatch.formats.manifest import ManifestError, ManifestHeader, aread
from drwatch.formats.parquet import (
    FooterError,
    ParquetFacts,
    available,
    fetch_facts,
    is_parquet,
    read_file_facts,
    s3_fetcher,
)
from drwatch.formats.seals import seal_absence
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.storage.filesystem import MANIFEST_NAME, Entry
from drwatch.storage.s3 import checksum_matches_sha256
from drwatch.storage.sources import Facts, FilesystemSource, S3Source
from drwatch.validators.assetseal import seal_trust
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies import mlflow_layout
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
from drwatch.validators.copies.timetrust import FutureTimes, seal_in_future
from drwatch.validators.plugin import Plugin

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

_LOCATION_DOWN = frozenset({"unreachable", "no_credentials"})
_LOCK_TEXT = LockText(
    unversioned="bucket versioning is {versioning}: locks cannot protect overwrites",
    unlocked="{n} file(s) of the recovery point carry no Object Lock retention",
    governance="{n} file(s) are GOVERNANCE-locked; set compliance.allow_governance to accept",
    expiring="a lock of the recovery point expires in {left}",
)


class DatasetConfig(ValidatorConfigBase):
    kind: Literal["dataset"] = "dataset"
    verify_content: bool = True  # false: sizes and Parquet structure only (no sha256 reads)
    read_sample: float = Field(default=1.0, ge=0.0, le=1.0)  # share of files without a provider checksum read
    layout: Literal["files", "mlflow"] = "files"
    copies: list[str] | None = None  # check only these copies (default: all)
    list_limit: int = Field(default=10, ge=1)  # findings listed one by one per location and code

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        problems = unknown_copies(self.copies, asset)
        prod = cfg.locations.get(asset.production.location)
        if asset.manifest is None and prod is not None and not isinstance(prod, FilesystemLocationConfig):
            problems.append(ConfigProblem("", f"the dataset validator verifies against a seal: production is in "
                                          f"S3, so set assets.{asset_name}.manifest (drwatch seal s3://... --out)"))
        return problems

    def needs(self) -> list[Need]:
        return [PARQUET_NEED]


PARQUET_NEED = Need("", PARQUET, "pyarrow_missing", "it reads Parquet footers")


@dataclass
class _Loc(LiveTally):
    """One location's tallies: production or a copy."""

    corrupt: int = 0
    layout: int = 0
    bytes_hashed: int = 0
    rows: int = 0


@dataclass
class _Seal:
    files: int = 0
    bytes: int = 0
    parquet: int = 0
    unsealed_parquet: int = 0  # Parquet files the seal holds no facts for
    broken_parquet: int = 0  # Parquet files whose footer was already unreadable when sealed
    keys: set[str] | None = None  # every key (layout: mlflow only)


class _LocSink:
    """What the MLflow layout check reads from and reports to: one location's tallies and notes."""

    def __init__(self, loc: _Loc, limit: int) -> None:
        self.loc, self.limit = loc, limit

    async def read(self, key: str) -> bytes:
        return await mlflow_layout.read_small(self.loc.src, key)

    def bad(self, code: str, message: str, subject: str) -> None:
        self.loc.layout += 1
        self.loc.note(code, message, subject, self.limit)

    def unreadable(self, message: str, subject: str) -> None:
        self.loc.errors += 1
        self.loc.note("unreadable", message, subject, self.limit, Severity.WARNING)


class DatasetValidator:
    kind: ClassVar[str] = "dataset"

    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        if not available():
            raise ValidatorError(PARQUET_NEED.code, f"the dataset validator needs pyarrow ({PARQUET_NEED.why}): "
                                 f"{PARQUET.install}")
        asset, limit = ctx.asset, self.cfg.list_limit
        findings: list[Finding] = []
        broken_rp = False
        prod = _Loc(production_source(ctx))
        copies = [_Loc(src) for src in copy_sources(ctx, self.cfg.copies)]
        locs = [prod, *copies]
        await asyncio.gather(*(self._probe(s, findings) for s in locs))

        opened = await self._open_seal(ctx, prod, findings)
        checked = [s for s in locs if s.state is None]
        seal = _Seal(keys=set() if self.cfg.layout == "mlflow" else None)
        header: ManifestHeader | None = None
        seal_time: float | None = None  # the seal's point in time: production modified after it is a live change
        if opened is not None:
            header, entries = opened
            seal_time = seal_point(header.sealed_at, header.extra)
            try:
                await self._merge(ctx, entries, checked, seal, limit,
                                  LiveRule(asset.production.frozen, FutureTimes.at(ctx).cutoff, seal_time))
            except ManifestError as exc:
                opened = None
                findings.append(Finding(Severity.CRITICAL, "manifest_corrupt", str(exc), "manifest"))
        bad_seal = opened is None
        recovery_point = seal_time if header is not None and not bad_seal else None
        if recovery_point is not None and (ahead := seal_in_future(ctx, recovery_point)) is not None:
            findings.append(ahead)
            recovery_point = None  # a seal dated ahead never makes the recovery point fresh
            broken_rp = True

        if not bad_seal:
            if seal.unsealed_parquet:
                why = "pyarrow was not installed where it was sealed" if header and header.parquet_facts is False \
                    else "it was sealed by a drwatch that did not record them"
                findings.append(Finding(Severity.WARNING, "parquet_not_sealed",
                                        f"the seal holds no row counts or schemas for {seal.unsealed_parquet} Parquet "
                                        f"file(s) ({why}): their footers are checked for readability only", "manifest"))
            if seal.broken_parquet:
                broken_rp = True
                findings.append(Finding(Severity.CRITICAL, "parquet_sealed_unreadable",
                                        f"{seal.broken_parquet} Parquet file(s) already had an unreadable footer when "
                                        "the recovery point was sealed", "manifest"))
            if seal.files == 0:
                broken_rp = True
                findings.append(Finding(Severity.CRITICAL, "empty_recovery_point",
                                        "the recovery point holds no files", "production"))
            if seal.keys is not None and seal.files:
                broken_rp |= await self._mlflow(checked, seal.keys, findings, limit)

        now = ctx.clock()
        stale = recovery_point is not None and now - recovery_point > asset.rpo.total_seconds()
        if stale:
            assert recovery_point is not None
            findings.append(Finding(Severity.CRITICAL, "rpo_exceeded",
                                    f"newest recovery point is {format_duration(now - recovery_point)} old "
                                    f"(RPO {format_duration(asset.rpo.total_seconds())})", "production"))

        provider_media = ctx.config.compliance.provider_counts_as_media
        facts = {s.name: await copy_facts(s.src, s.state, s.storage_classes, provider_media) for s in locs}
        findings.extend(self._independence(ctx, prod, copies, facts))
        points = live_findings(asset.rpo.total_seconds(), asset.production.frozen, prod, copies,
                               not bad_seal and prod in checked, recovery_point, now, findings)
        reports = [self._report(ctx, s, bad_seal, points.get(s.name, recovery_point), facts[s.name], findings)
                   for s in locs]
        for s in locs:
            findings.extend(s.findings)
            findings.extend(facts[s.name].findings)

        # A failed production is silent corruption (or a frozen production that changed): the seal is the reference.
        copy_failed = any(r.state == CopyState.FAILED for r in reports)
        if copy_failed or bad_seal or stale or broken_rp:
            outcome = Outcome.FAILED
        elif any(r.state == CopyState.ERROR for r in reports):
            outcome = Outcome.ERROR
        else:
            outcome = Outcome.OK
        figures = {
            "files_reference": float(seal.files),
            "bytes_reference": float(seal.bytes),
            "files_verified": float(sum(s.verified for s in locs)),
            "parquet_files": float(seal.parquet),
            "rows_verified": float(sum(s.rows for s in locs)),
            "bytes_hashed": float(sum(s.bytes_hashed for s in locs)),
            "copies_verified": float(sum(1 for r in reports if r.state == CopyState.VERIFIED)),
            "objects_behind": float(sum(s.behind for s in copies)),
        }
        if not bad_seal and prod in checked:
            figures["production_changed_since_seal"] = float(prod.changed + prod.added + prod.deleted)
        if recovery_point is not None:
            figures["recovery_point_age_seconds"] = max(0.0, now - recovery_point)
        return Report(outcome, tuple(findings), figures, tuple(reports), recovery_point)

    # --- seal and locations -------------------------------------------------------------------------

    async def _probe(self, s: _Loc, findings: list[Finding]) -> None:
        s.state, finding = await probe_location(s.src)
        if finding is not None:
            findings.append(finding)

    async def _open_seal(self, ctx: RunContext, prod: _Loc, findings: list[Finding]
                         ) -> tuple[ManifestHeader, AsyncIterator[Entry]] | None:
        """The seal's header and entries; None (with a finding) when it is missing or corrupt."""
        root = prod.src.root if isinstance(prod.src, FilesystemSource) else None
        path = self._seal_path(ctx, root)
        if path is None:  # refused by cross_check; kept for configs built in code
            raise ValidatorError("no_seal", "production is in S3 and no manifest is configured")
        try:
            if await asyncio.to_thread(path.is_file):
                return await aread(path, ctx.exit_stack, seal_trust(ctx.config, ctx.asset))  # closed however
        except ManifestError as exc:  # corrupt, or unsigned/mis-signed where signatures are required
            findings.append(Finding(Severity.CRITICAL, exc.code, str(exc), "manifest"))
            return None
        except OSError as exc:
            raise ValidatorError("manifest_unreadable", f"cannot read the seal: {exc.strerror}") from None
        # Missing is a bad seal only where it could have been seen; anything unreadable is `error`.
        why = await asyncio.to_thread(seal_absence, path, root, prod.state is None)
        if why is not None:
            raise ValidatorError("manifest_unreadable", why)
        findings.append(Finding(Severity.CRITICAL, "manifest_missing",
                                f"no seal at {path}: the recovery point was never sealed (drwatch seal)", "manifest"))
        return None

    def _seal_path(self, ctx: RunContext, root: Path | None) -> Path | None:
        """The asset's seal: ``manifest`` if configured (absolute, or relative to production), else the default
        file in production."""
        if ctx.asset.manifest is None:
            return root / MANIFEST_NAME if root is not None else None
        configured = Path(os.path.expanduser(ctx.asset.manifest))
        if configured.is_absolute():
            return configured
        return root / configured if root is not None else ctx.config.resolve_path(ctx.asset.manifest)

    # --- the merge ----------------------------------------------------------------------------------

    async def _merge(self, ctx: RunContext, seal_entries: AsyncIterator[Entry], locs: list[_Loc], seal: _Seal,
                     limit: int, rule: LiveRule) -> None:
        """One pass over the seal and every checked location in key order (memory independent of file count)."""
        iters = [listing(s) for s in locs]
        prod_i = next((i for i, s in enumerate(locs) if s.src.role == "production"), None)

        async def advance(i: int) -> Entry | None:
            s = locs[i]
            while not s.broken:
                entry = await next_entry(s, iters[i], limit)
                if entry is None or entry.key != MANIFEST_NAME:
                    return s.saw(entry, rule)  # a seal stored next to the data (S3) is no part of the recovery point
            return None

        heads: list[Entry | None] = [None] * len(locs)
        window = Window(max(4, ctx.hashes.workers * 8))

        try:
            # Inside the try: a run cut off here still closes every listing and the seal.
            heads = [await advance(i) for i in range(len(locs))]
            ref = await anext(seal_entries, None)
            while ref is not None or any(h is not None for h in heads):
                key = min([h.key for h in heads if h is not None] + ([ref.key] if ref is not None else []))
                r = ref if ref is not None and ref.key == key else None
                if r is not None:
                    self._count(seal, r, limit)
                ph = heads[prod_i] if prod_i is not None else None  # production's own file at this key
                live = LiveKey(rule, locs[prod_i].src if prod_i is not None else None,
                               ph if ph is not None and ph.key == key else None)
                for i, s in enumerate(locs):
                    if s.broken:
                        heads[i] = None
                        continue
                    h = heads[i]
                    if h is None or h.key != key:
                        if r is not None and not s.unchecked(key):  # under an unlistable directory: error
                            s.absent(key, i == prod_i, live, limit, "file")
                        continue
                    if r is None and i == prod_i and not rule.frozen:
                        s.added += 1  # live production: new since the seal
                    elif r is None:
                        s.extra += 1
                        s.late = s.late or i == prod_i  # frozen production grew
                        s.note("extra_file", "file not in the recovery point", key, limit, Severity.WARNING)
                    elif i == prod_i and rule.newer(h.mtime, rule.seal_time):
                        s.changed += 1  # live production modified it after the seal: expected, not read
                    else:
                        await window.spawn(functools.partial(guard, s, functools.partial(
                            self._verify, s, h, r, limit, live), key, limit, "file vanished during the check",
                            _LOCATION_DOWN))
                    heads[i] = await advance(i)
                if r is not None:
                    ref = await anext(seal_entries, None)
            await window.join()
            for s in locs:
                s.judge_deferred(rule, limit, "file")  # absent files: behind production, or missing
        finally:
            await window.cancel()
            for it in [*iters, seal_entries]:
                await it.aclose()  # type: ignore[attr-defined]

    def _count(self, seal: _Seal, r: Entry, limit: int) -> None:
        seal.files += 1
        seal.bytes += r.size
        if seal.keys is not None:
            seal.keys.add(r.key)
        if is_parquet(r.key):
            seal.parquet += 1
            if r.parquet is None:
                seal.unsealed_parquet += 1
            elif r.parquet.error is not None:
                seal.broken_parquet += 1

    async def _verify(self, s: _Loc, e: Entry, r: Entry, limit: int, live: LiveKey) -> None:
        """Prove one file of one location: a size that differs is judged first (a copy behind production,
        production changed since the seal), then Parquet structure, then content with the cheapest evidence."""
        production = s.src.role == "production"
        if e.size != r.size and (explained := await live.explains(e, production, s.slack)):
            s.differs(explained, "size_mismatch", f"size {e.size} != sealed {r.size}", e.key, limit, e.mtime)
            return
        if e.size != r.size and not is_parquet(e.key):
            s.differs("", "size_mismatch", f"size {e.size} != sealed {r.size}", e.key, limit)
            return
        head = await s.src.head(e)  # S3: lock state and checksums (skipped where it cannot add anything)
        if head is not None:
            record_lock(s, head)
        facts: ParquetFacts | None = None
        if is_parquet(e.key):
            try:
                facts = await self._footer(s, e)
            except FooterError as exc:
                s.corrupt += 1
                if e.size != r.size:
                    s.note("size_mismatch", f"size {e.size} != sealed {r.size}", e.key, limit)
                s.note("parquet_footer_unreadable", str(exc), e.key, limit)
                return
            same = self._same_facts(s, e.key, facts, r.parquet, limit)
            if e.size != r.size:
                s.mismatch += 1
                s.note("size_mismatch", f"size {e.size} != sealed {r.size}", e.key, limit)
                return
            if not same:
                s.mismatch += 1
                return
        verdict: bool | None = None
        how = "size"
        if head is not None and r.sha256 is not None and r.algorithm == "sha256":  # a provider SHA256 vs the seal
            verdict = checksum_matches_sha256(head, r.sha256)
            how = "checksum" if verdict is not None else how
        if verdict is None and self.cfg.verify_content and (
                self.cfg.read_sample >= 1.0 or random.random() < self.cfg.read_sample):
            digest, n = await s.src.sha256(e, r.algorithm)
            s.bytes_hashed += n
            verdict, how = digest == r.sha256 and n == r.size, "read"
        if verdict is False:
            explained = await live.explains(e, production, s.slack)
            s.differs(explained, "content_mismatch", f"content differs from the seal ({how})", e.key, limit, e.mtime)
            return
        s.verified += 1
        s.evidence[how] = s.evidence.get(how, 0) + 1
        s.bytes_verified += e.size if how != "size" else 0
        s.rows += facts.rows if facts is not None else 0

    async def _footer(self, s: _Loc, e: Entry) -> ParquetFacts:
        if isinstance(s.src, FilesystemSource):
            return await asyncio.to_thread(read_file_facts, s.src.root.joinpath(*e.parts))
        assert isinstance(s.src, S3Source)
        return await fetch_facts(s3_fetcher(s.src.client, s.src.prefix, e.key), e.size)

    def _same_facts(self, s: _Loc, key: str, facts: ParquetFacts, sealed: ParquetFacts | None, limit: int) -> bool:
        if sealed is None or sealed.error is not None:
            return True  # nothing to compare with (reported once for the seal)
        same = True
        if facts.schema != sealed.schema:
            same = False
            s.note("parquet_schema_mismatch", f"schema fingerprint {facts.schema[:12]} != sealed {sealed.schema[:12]}",
                   key, limit)
        if facts.rows != sealed.rows:
            same = False
            s.note("parquet_rows_mismatch", f"{facts.rows} rows != sealed {sealed.rows}", key, limit)
        elif facts.row_groups != sealed.row_groups:
            same = False
            s.note("parquet_row_groups_mismatch", f"{facts.row_groups} row groups != sealed {sealed.row_groups}",
                   key, limit)
        return same

    # --- MLflow layout (drwatch.validators.copies.mlflow_layout) ------------------------------------------

    async def _mlflow(self, locs: list[_Loc], keys: set[str], findings: list[Finding], limit: int) -> bool:
        """Check every run directory in every checked location; True when the recovery point has no run."""
        layout = mlflow_layout.of(keys)
        if not layout.runs:
            findings.append(Finding(Severity.CRITICAL, "mlflow_no_runs",
                                    "layout: mlflow, but the recovery point holds no MLflow run directory", "manifest"))
            return True
        await asyncio.gather(*(mlflow_layout.check(keys, layout, _LocSink(s, limit)) for s in locs if not s.broken))
        return False

    # --- posture and reports (the same facts the replica validator reports) ------------------------

    def _independence(self, ctx: RunContext, prod: _Loc, copies: list[_Loc], facts: dict[str, Facts]) -> list[Finding]:
        out: list[Finding] = []
        pf = facts[prod.name]
        for s in copies:
            deps, found = dependencies(s.name, facts[s.name], pf)
            out.extend(found)
            ctx.extras.setdefault("dependencies", {})[s.name] = deps
        return out

    def _report(self, ctx: RunContext, s: _Loc, bad_seal: bool, recovery_point: float | None, facts: Facts,
                findings: list[Finding]) -> CopyReport:
        if s.state is not None:
            state = s.state
        elif s.missing or s.mismatch or s.corrupt or s.layout or s.late:
            state = CopyState.FAILED
        elif s.errors or s.broken or bad_seal:
            state = CopyState.ERROR
        else:
            state = CopyState.VERIFIED
        return copy_report(
            ctx, s.src, state, facts, s, verified=s.verified, text=_LOCK_TEXT, recovery_point=recovery_point,
            objects={"verified": s.verified, "missing": s.missing, "mismatch": s.mismatch, "corrupt": s.corrupt,
                     "extra": s.extra, **s.counts()} if s.state is None and not bad_seal else {},
            bytes_verified=s.bytes_verified, evidence=dict(s.evidence),
            deps=tuple(ctx.extras.get("dependencies", {}).get(s.name, ())), findings=findings)


PLUGIN = Plugin(DatasetConfig, DatasetValidator)
