"""Validator ``rds_snapshot``: an Amazon RDS instance or Aurora cluster has a usable, fresh snapshot.

It reads (never writes) the RDS API: the newest ``available`` snapshot (automated, manual or either) of the
instance or cluster must be younger than the asset's RPO and encrypted; with ``dr_region``, a copy of a
snapshot younger than the RPO must exist in that region too (its original creation time counts, not the
time of the copy); the backup retention period must reach ``min_retention``.

Outcomes: ``failed`` when there is no snapshot, the newest is older than the RPO, it (or the DR copy) is
not encrypted, the DR copy is missing or stale, or automated backups are off / kept too briefly;
``error`` when the API cannot be reached, denies access or throttles. This validator does not restore
the snapshot (a restore drill would create a billed instance for many minutes): it proves that the
snapshot exists where and how it should, not that it restores.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.storage.aws import api_errors, aws_failure, read_credentials
from drwatch.storage.config import AwsCredentialFields
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.plugin import Family, Latest, Plugin, Sample

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView

_NOT_FOUND = {"DBInstanceNotFound", "DBInstanceNotFoundFault", "DBClusterNotFoundFault", "DBClusterNotFound"}


class RdsSnapshotConfig(ValidatorConfigBase, AwsCredentialFields):
    kind: Literal["rds_snapshot"] = "rds_snapshot"
    instance: str | None = None  # DBInstanceIdentifier, or
    cluster: str | None = None  # DBClusterIdentifier (Aurora)
    region: str | None = None  # default: the environment's (AWS_REGION, profile)
    dr_region: str | None = None  # a copy of a recent snapshot must exist there
    snapshot_type: Literal["any", "automated", "manual"] = "any"
    require_encrypted: bool = True
    min_retention: Duration | None = None  # backup retention period at least this (whole days)
    endpoint_url: str | None = None  # an RDS-compatible endpoint (tests); default AWS
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=30)
    max_attempts: int = Field(default=3, ge=1, le=10)

    @model_validator(mode="after")
    def _target(self) -> RdsSnapshotConfig:
        if (self.instance is None) == (self.cluster is None):
            raise ValueError("set exactly one of 'instance' (DBInstanceIdentifier) or 'cluster' (DBClusterIdentifier)")
        return self

    def locations(self, asset: AssetView) -> list[str]:
        return []  # talks to the RDS API only

    @property
    def source(self) -> str:
        return f"instance {self.instance}" if self.instance else f"cluster {self.cluster}"


@dataclass(frozen=True)
class RdsSnap:
    identifier: str
    created: float  # original creation time (a copy keeps its source's)
    status: str
    encrypted: bool
    kind: str  # automated | manual | ...


def _ts(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else math.nan


def _unavailable(exc: BaseException, region: str) -> ValidatorError:
    where = f"RDS API in {region}"
    return aws_failure(exc, where, "rds_error") or ValidatorError("unreachable", f"{where}: {type(exc).__name__}")


class _Rds:
    """One region's RDS client, reading snapshots and the source's retention for the configured source."""

    def __init__(self, cfg: RdsSnapshotConfig, client: Any) -> None:
        self.cfg = cfg
        self.client = client
        self.region = str(client.meta.region_name or "")

    async def snapshots(self) -> list[RdsSnap]:
        cfg = self.cfg
        kind = {} if cfg.snapshot_type == "any" else {"SnapshotType": cfg.snapshot_type}
        if cfg.instance:
            op, key, args = "describe_db_snapshots", "DBSnapshots", {"DBInstanceIdentifier": cfg.instance}
        else:
            op, key, args = "describe_db_cluster_snapshots", "DBClusterSnapshots", {"DBClusterIdentifier": cfg.cluster
                                                                                    or ""}
        out = []
        try:
            async for page in self.client.get_paginator(op).paginate(**args, **kind):
                for s in page.get(key, []):
                    created = _ts(s.get("OriginalSnapshotCreateTime") or s.get("SnapshotCreateTime"))
                    out.append(RdsSnap(str(s.get("DBSnapshotIdentifier") or s.get("DBClusterSnapshotIdentifier")),
                                        created, str(s.get("Status", "")),
                                        bool(s.get("Encrypted", s.get("StorageEncrypted", False))),
                                        str(s.get("SnapshotType", ""))))
        except api_errors() as exc:
            raise _unavailable(exc, self.region) from None
        return out

    async def retention_days(self) -> int | None:
        """The source's backup retention period; None when the source no longer exists."""
        from botocore.exceptions import ClientError

        try:
            if self.cfg.instance:
                resp = await self.client.describe_db_instances(DBInstanceIdentifier=self.cfg.instance)
                return int(resp["DBInstances"][0].get("BackupRetentionPeriod", 0))
            resp = await self.client.describe_db_clusters(DBClusterIdentifier=self.cfg.cluster)
            return int(resp["DBClusters"][0].get("BackupRetentionPeriod", 0))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND:
                return None
            raise _unavailable(exc, self.region) from None
        except api_errors() as exc:
            raise _unavailable(exc, self.region) from None


class RdsSnapshotValidator:
    kind: ClassVar[str] = "rds_snapshot"

    def __init__(self, cfg: RdsSnapshotConfig) -> None:
        self.cfg = cfg

    async def _client(self, ctx: RunContext, region: str | None) -> _Rds:
        import aioboto3  # heavy: imported on first use
        from botocore.config import Config as BotoConfig

        cfg = self.cfg

        keys = await asyncio.to_thread(read_credentials, "", cfg, ctx.config.base_dir)
        try:
            session = aioboto3.Session(aws_access_key_id=keys.access_key_id,
                                       aws_secret_access_key=keys.secret_access_key,
                                       aws_session_token=keys.session_token, profile_name=cfg.profile,
                                       region_name=region)
            boto_cfg = BotoConfig(connect_timeout=cfg.connect_timeout.total_seconds(),
                                  read_timeout=cfg.read_timeout.total_seconds(),
                                  retries={"mode": "standard", "max_attempts": cfg.max_attempts})
            client = await ctx.exit_stack.enter_async_context(
                session.client("rds", endpoint_url=cfg.endpoint_url, config=boto_cfg))
        except api_errors() as exc:  # e.g. NoRegionError, ProfileNotFound
            raise _unavailable(exc, region or "the default region") from None
        return _Rds(cfg, client)

    async def run(self, ctx: RunContext) -> Report:
        cfg = self.cfg
        rpo = ctx.asset.rpo.total_seconds()
        now = ctx.clock()
        findings: list[Finding] = []
        figures: dict[str, float] = {}

        def bad(code: str, message: str, subject: str = "") -> None:
            findings.append(Finding(Severity.CRITICAL, code, message, subject))

        source = await self._client(ctx, cfg.region)
        snaps = await source.snapshots()
        usable = sorted((s for s in snaps if s.status == "available" and not math.isnan(s.created)),
                        key=lambda s: s.created)
        if not usable:
            bad("no_snapshot", f"{cfg.source} has no available snapshot ({cfg.snapshot_type})", source.region)
            return Report(Outcome.FAILED, tuple(findings), figures)
        newest = usable[-1]
        figures[f"snapshot_timestamp_seconds.{source.region}"] = newest.created
        figures["snapshot_age_seconds"] = max(0.0, now - newest.created)
        pending = [s for s in snaps if s.status != "available" and s.created > newest.created]
        if pending:
            latest = pending[-1]
            findings.append(Finding(Severity.INFO, "snapshot_in_progress",
                                    f"a newer snapshot {latest.identifier} is {latest.status}", source.region))
        if now - newest.created > rpo:
            bad("rpo_exceeded", f"newest snapshot {newest.identifier} is {format_duration(now - newest.created)} old "
                                f"(RPO {format_duration(rpo)})", source.region)
        if cfg.require_encrypted and not newest.encrypted:
            bad("snapshot_unencrypted", f"snapshot {newest.identifier} is not encrypted", source.region)

        await self._retention(source, findings, figures)
        if cfg.dr_region:
            await self._dr_copy(ctx, cfg.dr_region, now, findings, figures)
        outcome = Outcome.FAILED if any(f.severity == Severity.CRITICAL for f in findings) else Outcome.OK
        return Report(outcome, tuple(findings), figures, recovery_point=newest.created)

    async def _retention(self, source: _Rds, findings: list[Finding], figures: dict[str, float]) -> None:
        """The source's automated-backup retention: off, or shorter than ``min_retention``, fails."""
        cfg = self.cfg
        retention = await source.retention_days()
        if retention is None:
            findings.append(Finding(Severity.WARNING, "source_not_found",
                                    f"{cfg.source} does not exist (deleted?): its snapshots are all that is left",
                                    source.region))
            return
        figures["retention_days"] = float(retention)
        if retention == 0:
            findings.append(Finding(Severity.CRITICAL, "automated_backups_disabled",
                                    f"{cfg.source} has automated backups turned off (retention 0)", ""))
        elif cfg.min_retention is not None and retention * 86400 < cfg.min_retention.total_seconds():
            findings.append(Finding(Severity.CRITICAL, "retention_too_short",
                                    f"backup retention is {retention} day(s), at least "
                                    f"{format_duration(cfg.min_retention.total_seconds())} required", ""))

    async def _dr_copy(self, ctx: RunContext, region: str, now: float, findings: list[Finding],
                       figures: dict[str, float]) -> None:
        """The newest available copy in the DR region: missing, older than the RPO or unencrypted fails."""
        cfg = self.cfg
        rpo = ctx.asset.rpo.total_seconds()
        dr = await self._client(ctx, region)
        copies = sorted((s for s in await dr.snapshots() if s.status == "available" and not math.isnan(s.created)),
                        key=lambda s: s.created)
        if not copies:
            findings.append(Finding(Severity.CRITICAL, "dr_copy_missing", f"no snapshot of {cfg.source} in {dr.region}",
                                    dr.region))
            return
        copy = copies[-1]
        figures[f"snapshot_timestamp_seconds.{dr.region}"] = copy.created
        if now - copy.created > rpo:
            findings.append(Finding(Severity.CRITICAL, "dr_copy_stale", f"newest copy {copy.identifier} in {dr.region} "
                                    f"is {format_duration(now - copy.created)} old (RPO {format_duration(rpo)})",
                                    dr.region))
        if cfg.require_encrypted and not copy.encrypted:
            findings.append(Finding(Severity.CRITICAL, "snapshot_unencrypted",
                                    f"copy {copy.identifier} is not encrypted", dr.region))


SNAPSHOT_TIME = Family("drwatch_rds_snapshot_timestamp_seconds", "Creation time of the newest available RDS snapshot "
                       "per region at the latest check.", ("asset", "region"))


def project(latest: Sequence[Latest]) -> Iterator[Sample]:
    """The newest snapshot per asset and region (figures ``snapshot_timestamp_seconds.<region>``)."""
    per_asset: dict[str, dict[str, float]] = {}
    for asset, _vcfg, result in latest:
        snapshots = per_asset.setdefault(asset, {})
        for key, value in result.figures.items():
            name, _, region = key.partition(".")
            if name == "snapshot_timestamp_seconds" and region:
                snapshots[region] = max(snapshots.get(region, 0.0), value)
    for asset, snapshots in per_asset.items():
        for region, ts in sorted(snapshots.items()):
            yield SNAPSHOT_TIME.name, (asset, region), ts


PLUGIN = Plugin(RdsSnapshotConfig, RdsSnapshotValidator, (SNAPSHOT_TIME,), project)
