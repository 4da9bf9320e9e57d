"""Validator ``immutability_probe``: actively prove that an S3 copy cannot be deleted.

Opt-in per location: the location must set ``canary_prefix``. The probe writes one small canary object
under that prefix with COMPLIANCE retention (once; the same version is reused while its lock lasts),
then tries to delete that exact version. The delete must be refused and the version must still be
there, COMPLIANCE-locked, afterwards. A delete that succeeds is a critical finding (outcome ``failed``).
This is the only write drwatch ever makes to a backup location, and only under the canary prefix.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import model_validator

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.storage.config import S3LocationConfig
from drwatch.storage.s3 import S3Location, S3Missing, S3Unavailable
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.plugin import Plugin

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

CANARY_NAME = "drwatch-canary"


class ImmutabilityProbeConfig(ValidatorConfigBase):
    kind: Literal["immutability_probe"] = "immutability_probe"
    copies: list[str] | None = None  # default: every copy whose location has a canary_prefix
    retention: Duration = timedelta(days=1)  # lock length of a new canary
    renew_before: Duration = timedelta(hours=1)  # write a new canary when the lock has less than this

    @model_validator(mode="after")
    def _renewal(self) -> ImmutabilityProbeConfig:
        # Otherwise every run finds the canary "expiring" and writes (and locks) a new one.
        if self.renew_before >= self.retention:
            raise ValueError("renew_before must be shorter than retention")
        return self

    def locations(self, asset: AssetView) -> list[str]:
        names = set(self.copies or [c.label for c in asset.copies])
        return sorted({c.location for c in asset.copies if c.label in names})

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        problems = []
        known = {c.label: c.location for c in asset.copies}
        for i, name in enumerate(self.copies or []):
            if name not in known:
                problems.append(ConfigProblem(f"copies[{i}]", f"unknown copy {name!r}"))
        targets = [loc for label, loc in known.items() if self.copies is None or label in self.copies]
        probed = [loc for loc in targets if isinstance(cfg.locations.get(loc), S3LocationConfig)
                  and cfg.locations[loc].canary_prefix]  # type: ignore[union-attr]
        if not probed:
            problems.append(ConfigProblem("", "no copy of this asset is in an S3 location with a canary_prefix "
                                          "(the probe writes only there)"))
        return problems


class ImmutabilityProbeValidator:
    kind: ClassVar[str] = "immutability_probe"

    def __init__(self, cfg: ImmutabilityProbeConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        if ctx.s3 is None:
            raise ValidatorError("no_s3_pool", "S3 locations need the daemon's client pool")
        findings: list[Finding] = []
        outcome = Outcome.OK
        probed = 0
        for copy in ctx.asset.copies:
            if self.cfg.copies is not None and copy.label not in self.cfg.copies:
                continue
            loc = ctx.config.locations[copy.location]
            if not isinstance(loc, S3LocationConfig) or not loc.canary_prefix:
                continue
            probed += 1
            client = ctx.s3.get(copy.location, loc)
            try:
                finding = await self._probe(ctx, client, loc.canary_prefix, copy.label)
            except S3Unavailable as exc:
                findings.append(Finding(Severity.WARNING, exc.code, exc.message, copy.label))
                if outcome == Outcome.OK:
                    outcome = Outcome.ERROR
                continue
            if finding is not None:
                findings.append(finding)
                if finding.severity == Severity.CRITICAL:
                    outcome = Outcome.FAILED
        if probed == 0:
            raise ValidatorError("nothing_to_probe", "no copy in an S3 location with a canary_prefix")
        return Report(outcome, tuple(findings), {"copies_probed": float(probed)})

    async def _probe(self, ctx: RunContext, client: S3Location, prefix: str, copy: str) -> Finding | None:
        key = f"{prefix.strip('/')}/{CANARY_NAME}"
        now = ctx.clock()
        version = await self._reusable_version(client, key, now)
        if version is None:
            body = f"drwatch canary written {datetime.fromtimestamp(now, tz=UTC).isoformat()}\n".encode()
            retain = datetime.fromtimestamp(now + self.cfg.retention.total_seconds(), tz=UTC)
            try:
                version = await client.put_canary(key, body, retain,
                                                  base64.b64encode(hashlib.md5(body).digest()).decode())
            except S3Unavailable as exc:
                # Only a refusal of the locked write itself (a 4xx such as InvalidRequest) says the bucket
                # cannot lock; denied, unreachable, throttled or timed out means we could not check.
                if exc.code != "s3_error":
                    raise
                return Finding(Severity.CRITICAL, "lock_unsupported",
                               f"a COMPLIANCE-locked canary could not be written ({exc.message}): the bucket "
                               "cannot hold immutable objects", copy)
            if not version:
                return Finding(Severity.CRITICAL, "bucket_not_versioned",
                               "the canary got no version id: the bucket is not versioned", copy)
        try:
            await client.delete_version(key, version)
        except S3Unavailable as exc:
            if exc.code != "access_denied":
                raise
            # Refused, as it must be. Prove the version is still there and still locked.
            head = await client.head_version(key, version)
            if head is None:
                return Finding(Severity.CRITICAL, "immutability_broken",
                               "the delete was refused but the canary version is gone", copy)
            if (head.lock_mode or "").upper() != "COMPLIANCE":
                return Finding(Severity.CRITICAL, "immutability_broken",
                               f"the canary is no longer COMPLIANCE-locked (mode {head.lock_mode})", copy)
            return None
        except S3Missing:
            return Finding(Severity.CRITICAL, "immutability_broken", "the canary version vanished", copy)
        return Finding(Severity.CRITICAL, "immutability_broken",
                       f"deleting a COMPLIANCE-locked version succeeded (locked "
                       f"{format_duration(self.cfg.retention.total_seconds())}): objects in this copy can be "
                       "destroyed", copy)

    async def _reusable_version(self, client: S3Location, key: str, now: float) -> str | None:
        try:
            versions = await client.list_versions(key)
        except S3Missing:
            return None
        for v in sorted(versions, key=lambda v: v.get("LastModified") or datetime.min.replace(tzinfo=UTC),
                        reverse=True):
            if v.get("Key") != key or not v.get("VersionId"):
                continue
            head = await client.head_version(key, str(v["VersionId"]))
            if head is None or (head.lock_mode or "").upper() != "COMPLIANCE" or head.retain_until is None:
                continue
            if head.retain_until - now > self.cfg.renew_before.total_seconds():
                return str(v["VersionId"])
        return None


PLUGIN = Plugin(ImmutabilityProbeConfig, ImmutabilityProbeValidator)
