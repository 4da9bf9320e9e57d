"""Validator ``s3_replication``: the production bucket's replication rules really make the asset's DR copy.

Read-only: GetBucketReplication on production's bucket; the copies' buckets are probed as every copy is
(HeadBucket, GetBucketLocation, GetBucketVersioning, GetObjectLockConfiguration); production's newest objects are
HEADed (``sample``, default 100) or, where production's location declares an S3 Inventory report
(``storage/inventory.py``), answered from the report.

A rule proves the copy when it covers the asset's prefix (its filter prefix is a prefix of it, no tag filter), is
``Enabled``, and its destination bucket is the bucket of one of the asset's S3 copies (``copies``: only those)
whose observed region differs from production's; with ``storage_class`` the rule must write that class, with
``replication_time_control: true`` RTC must be on. Among the rules that cover the prefix, the first one (in
priority order) that proves a copy decides; when none does, the nearest miss is reported:

- ``replication_rule_missing`` (no rule covers the prefix, or the bucket has no replication configuration),
  ``replication_rule_disabled``, ``replication_wrong_destination`` (a bucket that is none of the copies),
  ``replication_same_region`` (the destination is in production's region: one failure domain),
  ``replication_storage_class``, ``replication_rtc_missing``: critical, the run fails;
- ``replication_failed_objects``: objects whose replication status is ``FAILED``: critical;
- ``replication_deletes_propagate``: the rule replicates delete markers to a destination that is not both
  versioned and Object-Locked (a deletion or ransomware in production hides the copy's objects too): warning.

Production's bucket unreadable (denied, unreachable, throttled, timed out) or a destination whose region could not
be read: ``error`` (could not check), never ``failed``. Like ``file_freshness`` the result proves no copy's
content: it counts toward no 3-2-1-1-0 rule except ``restore_errors``.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import CopyState, Finding, Outcome, Report, Severity
from drwatch.storage.config import S3LocationConfig
from drwatch.storage.s3 import S3Missing, S3Unavailable
from drwatch.storage.sources import S3Source
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.posture import copy_sources, probe_location, production_source, unknown_copies
from drwatch.validators.plugin import Family, Latest, Plugin, Sample

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from drwatch.storage.filesystem import Entry
    from drwatch.validators.base import AssetView, ConfigView

# The rule checks in the order a miss is reported (the nearest miss: the latest check a rule passed).
_MISSES = ("replication_rule_missing", "replication_rule_disabled", "replication_wrong_destination",
           "replication_same_region", "replication_storage_class", "replication_rtc_missing")


class S3ReplicationConfig(ValidatorConfigBase):
    kind: Literal["s3_replication"] = "s3_replication"
    copies: list[str] | None = None  # the copies a rule may target (default: every S3 copy of the asset)
    storage_class: str | None = None  # the destination storage class the rule must write (e.g. STANDARD_IA)
    replication_time_control: bool = False  # the rule must have Replication Time Control enabled
    sample: int = Field(default=100, ge=0, le=10_000)  # newest production objects whose status is read (0: none)

    def locations(self, asset: AssetView) -> list[str]:
        names = set(self.copies) if self.copies is not None else {c.label for c in asset.copies}
        return sorted({asset.production.location} | {c.location for c in asset.copies if c.label in names})

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        problems = unknown_copies(self.copies, asset)
        if not isinstance(cfg.locations.get(asset.production.location), S3LocationConfig):
            problems.append(ConfigProblem("", "production must be on an S3 location (its bucket's replication "
                                              "rules are checked)"))
        names = set(self.copies) if self.copies is not None else {c.label for c in asset.copies}
        if not any(isinstance(cfg.locations.get(c.location), S3LocationConfig)
                   for c in asset.copies if c.label in names):
            problems.append(ConfigProblem("", "no S3 copy for a replication rule to target"))
        return problems


def _prefix(text: str) -> str:
    base = text.strip("/")
    return f"{base}/" if base else ""


def _covers(rule: dict[str, Any], prefix: str) -> bool:
    """Whether the rule applies to every object under ``prefix`` (a tag filter applies to some objects only)."""
    flt = rule.get("Filter")
    if flt is None:
        return prefix.startswith(str(rule.get("Prefix") or ""))  # the V1 schema: a prefix on the rule itself
    if "Tag" in flt:
        return False
    if "And" in flt:
        if flt["And"].get("Tags"):
            return False
        return prefix.startswith(str(flt["And"].get("Prefix") or ""))
    return prefix.startswith(str(flt.get("Prefix") or ""))


def _bucket_of(arn: str) -> str:
    return arn.rsplit(":", 1)[-1] if arn.startswith("arn:") else arn


class S3ReplicationValidator:
    kind: ClassVar[str] = "s3_replication"

    def __init__(self, cfg: S3ReplicationConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        prod = production_source(ctx)
        if not isinstance(prod, S3Source):
            raise ValidatorError("production_not_s3", "production is not on an S3 location")
        state, problem = await probe_location(prod)
        if problem is not None:
            return Report(Outcome.ERROR if state != CopyState.FAILED else Outcome.FAILED, (problem,), {})
        try:
            replication = await prod.client.replication(prod.meter)
        except S3Missing:
            return Report(Outcome.ERROR, (Finding(Severity.WARNING, "production_missing",
                                                  "production's bucket vanished during the run", "production"),), {})
        findings: list[Finding] = []
        figures: dict[str, float] = {}
        targets: dict[str, S3Source] = {}  # destination bucket -> the copy on it
        for src in copy_sources(ctx, self.cfg.copies):
            if isinstance(src, S3Source):
                targets.setdefault(src.cfg.bucket, src)
        verdict, rules_unknown = await self._rules(replication, prod, targets, findings)
        figures["rules"] = float(len((replication or {}).get("Rules", [])))
        figures["rule_ok"] = 1.0 if verdict else 0.0
        failed_objects = await self._statuses(ctx, prod, findings, figures)
        could_not = rules_unknown or failed_objects is None
        failed = (not verdict and not rules_unknown) or bool(failed_objects)
        outcome = Outcome.FAILED if failed else Outcome.ERROR if could_not else Outcome.OK
        return Report(outcome, tuple(findings), figures)

    async def _rules(self, replication: dict[str, Any] | None, prod: S3Source, targets: dict[str, S3Source],
                     findings: list[Finding]) -> tuple[bool, bool]:
        """(a rule proves a copy, could not check). Findings for the nearest miss or the deciding rule."""
        prefix = _prefix(prod.prefix)
        rules = sorted((replication or {}).get("Rules", []), key=lambda r: -int(r.get("Priority") or 0))
        best: tuple[int, str, str] = (0, "no replication rule covers the prefix "
                                         f"{prefix or '(the whole bucket)'!r}", "")
        if replication is None:
            best = (0, f"bucket {prod.cfg.bucket!r} has no replication configuration", "")
        prod_region = prod.bucket.region if prod.bucket is not None else None
        unknown_region = False
        for rule in rules:
            rid = str(rule.get("ID") or "(no id)")
            if not _covers(rule, prefix):
                continue
            if rule.get("Status") != "Enabled":
                best = max(best, (1, f"rule {rid!r} covers the prefix but is {rule.get('Status')!r}", rid))
                continue
            dest = rule.get("Destination") or {}
            bucket = _bucket_of(str(dest.get("Bucket") or ""))
            copy = targets.get(bucket)
            if copy is None:
                best = max(best, (2, f"rule {rid!r} replicates to bucket {bucket!r}, which is none of the asset's "
                                     f"copies ({', '.join(sorted(targets)) or 'no S3 copy'})", rid))
                continue
            state, problem = await probe_location(copy)
            region = copy.bucket.region if copy.bucket is not None else None
            if problem is not None or region is None or prod_region is None:
                if problem is not None and state == CopyState.FAILED:
                    findings.append(problem)
                    best = max(best, (2, f"rule {rid!r} replicates to bucket {bucket!r}, which does not exist",
                                      rid))
                    continue
                unknown_region = True
                findings.append(problem or Finding(Severity.WARNING, "region_unknown", "the bucket's region could "
                                                   "not be read (GetBucketLocation)", copy.name))
                continue
            if region == prod_region:
                best = max(best, (3, f"rule {rid!r} replicates to copy {copy.name!r} in {region}, production's own "
                                     "region: one failure domain", rid))
                continue
            klass = str(dest.get("StorageClass") or "STANDARD")
            rtc = (dest.get("ReplicationTime") or {}).get("Status") == "Enabled"
            if (miss := self._settings_miss(rid, klass, rtc)) is not None:
                best = max(best, miss)
                continue
            findings.append(Finding(Severity.INFO, "replication_rule", f"rule {rid!r} replicates "
                                    f"{prefix or 'the whole bucket'!r} to copy {copy.name!r} ({bucket}, {region}, "
                                    f"{klass}{', RTC' if rtc else ''})", copy.name))
            self._delete_markers(rule, rid, copy, findings)
            return True, False
        if unknown_region:
            # A rule whose destination's region could not be read may be the one that proves the copy: whatever
            # the other rules miss, the run could not check (the miss is context, not the verdict).
            if best[0] > 0:
                findings.append(Finding(Severity.WARNING, _MISSES[best[0]], f"{best[1]} (a rule whose destination "
                                        "could not be read may still prove the copy)", "production"))
            return False, True
        findings.append(Finding(Severity.CRITICAL, _MISSES[best[0]], best[1], "production"))
        return False, False

    def _settings_miss(self, rid: str, klass: str, rtc: bool) -> tuple[int, str, str] | None:
        """A rule that reaches a copy in another region but not as configured (storage class, RTC)."""
        if self.cfg.storage_class is not None and klass != self.cfg.storage_class:
            return 4, f"rule {rid!r} writes storage class {klass}, not {self.cfg.storage_class}", rid
        if self.cfg.replication_time_control and not rtc:
            return 5, f"rule {rid!r} has no Replication Time Control", rid
        return None

    @staticmethod
    def _delete_markers(rule: dict[str, Any], rid: str, copy: S3Source, findings: list[Finding]) -> None:
        dmr = (rule.get("DeleteMarkerReplication") or {}).get("Status")
        # The V1 schema (a rule with ``Prefix`` and no ``Filter``) always replicates delete markers.
        if dmr != "Enabled" and not (rule.get("Filter") is None and dmr is None):
            return
        facts = copy.bucket
        if facts is not None and facts.versioning == "Enabled" and facts.object_lock:
            return
        state = "unknown" if facts is None else (
            f"versioning {facts.versioning}, Object Lock "
            f"{'unknown' if facts.object_lock is None else 'on' if facts.object_lock else 'off'}")
        findings.append(Finding(Severity.WARNING, "replication_deletes_propagate",
                                f"rule {rid!r} replicates delete markers to a destination that is not versioned and "
                                f"Object-Locked ({state}): a deletion in production hides the copy's objects too",
                                copy.name))

    async def _statuses(self, ctx: RunContext, prod: S3Source, findings: list[Finding],
                        figures: dict[str, float]) -> int | None:
        """The number of ``FAILED`` objects among production's newest ``sample``; None if it could not be read."""
        if self.cfg.sample == 0:
            return 0
        try:
            newest = heapq.nlargest(self.cfg.sample, [e async for e in prod.entries()], key=lambda e: e.mtime)
        except (S3Unavailable, FileNotFoundError) as exc:
            findings.append(Finding(Severity.WARNING, getattr(exc, "code", "location_unavailable"),
                                    f"production could not be listed: {exc}", "production"))
            return None
        sem = asyncio.Semaphore(prod.cfg.head_concurrency)
        now = time.time()

        async def status(entry: Entry) -> str:
            key = prod._key(entry)
            if prod.inventory is not None:
                known = await prod.inventory.head(key, entry, prod.meter, now)
                if known is not None:
                    return known.replication_status
            async with sem:
                try:
                    return (await prod.client.head(key, prod.meter)).replication_status
                except S3Missing:
                    return ""  # deleted since it was listed
        tasks = [asyncio.ensure_future(status(e)) for e in newest]
        try:
            statuses = await asyncio.gather(*tasks)
        except S3Unavailable as exc:
            findings.append(Finding(Severity.WARNING, exc.code, exc.message, "production"))
            return None
        finally:  # one refusal decides: the HEADs still queued are not sent after the run (gather leaves them)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if prod.inventory is not None:
            findings.extend(prod.inventory.findings)
        failed = [prod._key(e) for e, s in zip(newest, statuses, strict=True) if s == "FAILED"]
        figures["sampled_objects"] = float(len(newest))
        figures["failed_objects"] = float(len(failed))
        figures["pending_objects"] = float(sum(s == "PENDING" for s in statuses))
        if failed:
            shown = ", ".join(sorted(failed)[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
            findings.append(Finding(Severity.CRITICAL, "replication_failed_objects",
                                    f"{len(failed)} of the {len(newest)} newest objects have replication status "
                                    f"FAILED: {shown}", "production"))
        return len(failed)


FAMILIES = (
    Family("drwatch_s3_replication_rule_ok", "1 if a replication rule of production's bucket proves a copy of the "
           "asset at the latest check (0: none does; the lowest when several are checked).", ("asset",)),
    Family("drwatch_s3_replication_failed_objects", "Objects with replication status FAILED among production's "
           "newest objects sampled at the latest check (the most when several are checked).", ("asset",)),
)


def _project(latest: Sequence[Latest]) -> Iterable[Sample]:
    ok: dict[str, float] = {}
    failed: dict[str, float] = {}
    for item in latest:
        figures = item.result.figures
        if "rule_ok" in figures:
            ok[item.asset] = min(ok.get(item.asset, 1.0), figures["rule_ok"])
        if "failed_objects" in figures:
            failed[item.asset] = max(failed.get(item.asset, 0.0), figures["failed_objects"])
    for asset, value in ok.items():
        yield FAMILIES[0].name, (asset,), value
    for asset, value in failed.items():
        yield FAMILIES[1].name, (asset,), value


PLUGIN = Plugin(S3ReplicationConfig, S3ReplicationValidator, families=FAMILIES, project=_project)
