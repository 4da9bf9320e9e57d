"""Validator ``file_freshness``: the newest file (or object) of each copy is younger than the asset's RPO.

A cheap liveness check of the backup job, for copies no seal or replica comparison covers yet (or between two
expensive ones): each selected copy (and production, with ``production: true``) is listed under its prefix on its
filesystem or S3 location, and the newest modification time (file mtime, S3 ``LastModified``) must lie within
``within`` (default: the asset's RPO). It reads listings only: no content, no write.

Outcomes: ``failed`` when a copy holds nothing under its prefix (``empty_prefix``), its newest believable time is
older than that (``stale``), or the copy is gone (``copy_missing``, ``copy_aliases_production``); ``error`` when
a location could not be listed (not mounted, endpoint down, access denied: the finding names the reason) and no
copy failed. Times more than ``compliance.clock_skew`` ahead of this host's clock are the ``time_in_future``
warning and never make a copy fresh. Nothing here proves content: the result reports no copy as verified and no
recovery point, so it counts toward no 3-2-1-1-0 rule except ``restore_errors`` (a failure is a failure).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import field_validator

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ConfigProblem
from drwatch.core.model import CopyState, Finding, Outcome, Report, Severity
from drwatch.storage.s3 import S3Unavailable
from drwatch.storage.sources import Source
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.posture import copy_sources, probe_location, production_source, unknown_copies
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.plugin import Plugin

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView


class FileFreshnessConfig(ValidatorConfigBase):
    kind: Literal["file_freshness"] = "file_freshness"
    copies: list[str] | None = None  # check only these copies (default: all)
    production: bool = False  # check production too
    within: Duration | None = None  # the newest file must be younger than this (default: the asset's RPO)

    @field_validator("within")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be above zero (leave it out for the asset's RPO)")
        return value

    def locations(self, asset: AssetView) -> list[str]:
        names = set(self.copies) if self.copies is not None else {c.label for c in asset.copies}
        locs = {c.location for c in asset.copies if c.label in names}
        if self.production:
            locs.add(asset.production.location)
        return sorted(locs)

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        problems = unknown_copies(self.copies, asset)
        if not asset.copies and not self.production:
            problems.append(ConfigProblem("", "the asset has no copy to check (set production: true to check "
                                              "production)"))
        return problems


class FileFreshnessValidator:
    kind: ClassVar[str] = "file_freshness"

    def __init__(self, cfg: FileFreshnessConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        sources = [production_source(ctx)] if self.cfg.production else []
        sources += copy_sources(ctx, self.cfg.copies)
        limit = (self.cfg.within or ctx.asset.rpo).total_seconds()
        findings: list[Finding] = []
        figures: dict[str, float] = {}
        failed = could_not = False
        for src in sources:
            state, problem = await probe_location(src)
            if problem is not None:
                findings.append(problem)
            if state is None:
                state = await self._newest(ctx, src, limit, findings, figures)
            failed |= state == CopyState.FAILED
            could_not |= state == CopyState.ERROR
        outcome = Outcome.FAILED if failed else Outcome.ERROR if could_not else Outcome.OK
        return Report(outcome, tuple(findings), figures)

    async def _newest(self, ctx: RunContext, src: Source, limit: float, findings: list[Finding],
                      figures: dict[str, float]) -> CopyState:
        """List ``src``: its newest believable time against ``limit`` (seconds before now)."""
        future = FutureTimes.at(ctx)
        count, newest, newest_key = 0, None, ""
        try:
            async for entry in src.entries():
                count += 1
                if future.believe(entry.key, entry.mtime) and (newest is None or entry.mtime > newest):
                    newest, newest_key = entry.mtime, entry.key
        except S3Unavailable as exc:
            findings.append(Finding(Severity.WARNING, exc.code, exc.message, src.name))
            return CopyState.ERROR
        except OSError as exc:
            findings.append(Finding(Severity.WARNING, "location_unavailable",
                                    f"the listing of {src.location!r} failed: {exc.strerror or exc}", src.name))
            return CopyState.ERROR
        if (warning := future.finding(src.name)) is not None:
            findings.append(warning)
        figures[f"files.{src.name}"] = float(count)
        what = "object" if src.kind == "s3" else "file"
        if count == 0:
            findings.append(Finding(Severity.CRITICAL, "empty_prefix", f"no {what} under the prefix", src.name))
            return CopyState.FAILED
        if newest is None:
            findings.append(Finding(Severity.CRITICAL, "stale", f"no {what} has a believable time (all are dated "
                                    "ahead of this host's clock)", src.name))
            return CopyState.FAILED
        figures[f"newest_timestamp_seconds.{src.name}"] = newest
        age = ctx.clock() - newest
        if age > limit:
            findings.append(Finding(Severity.CRITICAL, "stale", f"the newest {what} ({newest_key}) is "
                                    f"{format_duration(age)} old (limit {format_duration(limit)})", src.name))
            return CopyState.FAILED
        return CopyState.VERIFIED


PLUGIN = Plugin(FileFreshnessConfig, FileFreshnessValidator)
