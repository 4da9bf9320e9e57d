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
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from drwatch.core.durations import format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.extras import PARQUET, Need
from drwatch.core.model import CopyReport, CopyState, Finding, Outcome, Report, Severity
from drwatch.formats.manifest import ManifestError, ManifestHeader, aread
from drwatch.formats.parquet import (
    available,
)
from drwatch.formats.seals import seal_absence
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.storage.filesystem import MANIFEST_NAME, Entry
from drwatch.storage.sources import Facts, FilesystemSource
from drwatch.validators.assetseal import seal_trust
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies import mlflow_layout
from drwatch.validators.copies.dataset_merge import DatasetMerge, Loc, SealTally
from drwatch.validators.copies.live import LiveRule, live_findings, seal_point
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


class LocSink:
    """What the MLflow layout check reads from and reports to: one location's tallies and notes."""

    def __init__(self, loc: Loc, limit: int) -> None:
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
        asset = ctx.asset
        findings: list[Finding] = []
        prod = Loc(production_source(ctx))
        copies = [Loc(src) for src in copy_sources(ctx, self.cfg.copies)]
        locs = [prod, *copies]
        await asyncio.gather(*(self._probe(s, findings) for s in locs))

        checked = [s for s in locs if s.state is None]
        seal = SealTally(keys=set() if self.cfg.layout == "mlflow" else None)
        header, recovery_point, broken_rp = await self._against_seal(ctx, prod, checked, seal, findings)
        bad_seal = header is None
        if header is not None:
            broken_rp |= await self._seal_findings(header, seal, checked, findings)

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
        figures = _figures(seal, prod, copies, checked, reports, bad_seal, recovery_point, now)
        return Report(outcome, tuple(findings), figures, tuple(reports), recovery_point)

    async def _against_seal(self, ctx: RunContext, prod: Loc, checked: list[Loc], seal: SealTally,
                            findings: list[Finding]) -> tuple[ManifestHeader | None, float | None, bool]:
        """The merge of the seal with every checked location: the seal's header (None: missing or corrupt), the
        recovery point, and whether it is broken (dated ahead of the clock)."""
        opened = await self._open_seal(ctx, prod, findings)
        if opened is None:
            return None, None, False
        header, entries = opened
        seal_time = seal_point(header.sealed_at, header.extra)
        rule = LiveRule(ctx.asset.production.frozen, FutureTimes.at(ctx).cutoff, seal_time)
        try:
            await DatasetMerge(self.cfg.verify_content, self.cfg.read_sample).merge(
                ctx, entries, checked, seal, self.cfg.list_limit, rule)
        except ManifestError as exc:
            findings.append(Finding(Severity.CRITICAL, "manifest_corrupt", str(exc), "manifest"))
            return None, None, False
        if (ahead := seal_in_future(ctx, seal_time)) is not None:
            findings.append(ahead)
            return header, None, True  # a seal dated ahead never makes the recovery point fresh
        return header, seal_time, False

    async def _seal_findings(self, header: ManifestHeader, seal: SealTally, checked: list[Loc],
                             findings: list[Finding]) -> bool:
        """Findings about what the (good) seal holds; True when its recovery point is broken."""
        broken_rp = False
        if seal.unsealed_parquet:
            why = "pyarrow was not installed where it was sealed" if header.parquet_facts is False \
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
            broken_rp |= await self._mlflow(checked, seal.keys, findings, self.cfg.list_limit)
        return broken_rp

    # --- seal and locations -------------------------------------------------------------------------

    async def _probe(self, s: Loc, findings: list[Finding]) -> None:
        s.state, finding = await probe_location(s.src)
        if finding is not None:
            findings.append(finding)

    async def _open_seal(self, ctx: RunContext, prod: Loc, findings: list[Finding]
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

    # --- MLflow layout (drwatch.validators.copies.mlflow_layout) ------------------------------------------

    async def _mlflow(self, locs: list[Loc], keys: set[str], findings: list[Finding], limit: int) -> bool:
        """Check every run directory in every checked location; True when the recovery point has no run."""
        layout = mlflow_layout.of(keys)
        if not layout.runs:
            findings.append(Finding(Severity.CRITICAL, "mlflow_no_runs",
                                    "layout: mlflow, but the recovery point holds no MLflow run directory", "manifest"))
            return True
        await asyncio.gather(*(mlflow_layout.check(keys, layout, LocSink(s, limit)) for s in locs if not s.broken))
        return False

    # --- posture and reports (the same facts the replica validator reports) ------------------------

    def _independence(self, ctx: RunContext, prod: Loc, copies: list[Loc], facts: dict[str, Facts]) -> list[Finding]:
        out: list[Finding] = []
        pf = facts[prod.name]
        for s in copies:
            deps, found = dependencies(s.name, facts[s.name], pf)
            out.extend(found)
            ctx.extras.setdefault("dependencies", {})[s.name] = deps
        return out

    def _report(self, ctx: RunContext, s: Loc, bad_seal: bool, recovery_point: float | None, facts: Facts,
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
            deps=tuple(ctx.extras.get("dependencies", {}).get(s.name, ())), findings=findings, reads=s.reads)


def _figures(seal: SealTally, prod: Loc, copies: list[Loc], checked: list[Loc], reports: list[CopyReport],
             bad_seal: bool, recovery_point: float | None, now: float) -> dict[str, float]:
    locs = [prod, *copies]
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
    return figures


PLUGIN = Plugin(DatasetConfig, DatasetValidator)
