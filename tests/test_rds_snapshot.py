"""The `rds_snapshot` validator against moto's RDS API (a real HTTP server; regions are separate backends)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from drwatch.metrics.collector import ProcessState, make_registry, render
from drwatch.state.snapshot import Snapshot
from tests.support.helpers import free_port, metric_value
from tests.support.runs import open_runner
from tests.support.s3servers import MotoServer

_ids = itertools.count(1)
DR = "eu-west-1"


def rds(moto: MotoServer, region: str = "us-east-1") -> Any:
    return boto3.client("rds", endpoint_url=moto.endpoint_url, region_name=region, aws_access_key_id="test",
                        aws_secret_access_key="test")


def new_instance(moto: MotoServer, *, encrypted: bool = True, retention: int = 7, copy_to_dr: bool = False) -> str:
    """An RDS PostgreSQL instance (moto takes an automated snapshot at creation), optionally with a manual
    snapshot copied to the DR region."""
    name = f"db-{next(_ids)}-{int(time.time() * 1000) % 100_000}"
    src = rds(moto)
    src.create_db_instance(DBInstanceIdentifier=name, DBInstanceClass="db.t3.micro", Engine="postgres",
                           MasterUsername="app", MasterUserPassword="password1", AllocatedStorage=20,
                           StorageEncrypted=encrypted, BackupRetentionPeriod=retention)
    if copy_to_dr:
        snap = src.create_db_snapshot(DBInstanceIdentifier=name, DBSnapshotIdentifier=f"{name}-manual")
        rds(moto, DR).copy_db_snapshot(SourceDBSnapshotIdentifier=snap["DBSnapshot"]["DBSnapshotArn"],
                                       TargetDBSnapshotIdentifier=f"{name}-dr", SourceRegion="us-east-1")
    return name


async def check(tmp: Path, moto: MotoServer, monkeypatch: pytest.MonkeyPatch, *, rpo: str = "1d",
                clock: Callable[[], float] = time.time, **validator: Any) -> Result:
    monkeypatch.setenv("DRW_RDS_AK", "test")
    monkeypatch.setenv("DRW_RDS_SK", "test")
    cfg = parse_config(yaml.safe_dump({
        "store": {"sqlite": str(tmp / "state.sqlite")},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp)}},
        "assets": {"db": {"rpo": rpo, "production": {"location": "prod"}, "validators": [{
            "kind": "rds_snapshot", "region": "us-east-1", "endpoint_url": moto.endpoint_url,
            "access_key_id_env": "DRW_RDS_AK", "secret_access_key_env": "DRW_RDS_SK", "max_attempts": 1,
            "connect_timeout": "2s", **validator}]}},
    }), source=str(tmp / "drwatch.yaml"))
    async with open_runner(cfg, tmp / "sbx", clock) as runner:
        return await runner.execute("db", cfg.assets["db"].validators[0])


def critical(result: Result) -> set[str]:
    return {f.code for f in result.findings if f.severity == Severity.CRITICAL}


async def test_fresh_encrypted_snapshot_with_dr_copy_passes(tmp_path: Path, moto: MotoServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Newest snapshot available, encrypted, younger than the RPO, copied to the DR region, retention long
    enough: ok; the snapshot times per region are figures and become metrics."""
    name = new_instance(moto, copy_to_dr=True)
    result = await check(tmp_path, moto, monkeypatch, instance=name, dr_region=DR, min_retention="7d")
    assert result.outcome == Outcome.OK, result.findings
    assert result.findings == ()
    assert result.figures["retention_days"] == 7
    source_ts = result.figures["snapshot_timestamp_seconds.us-east-1"]
    assert abs(source_ts - time.time()) < 120
    assert result.figures[f"snapshot_timestamp_seconds.{DR}"] <= source_ts + 60
    assert result.recovery_point == pytest.approx(source_ts)
    cfg = parse_config(yaml.safe_dump({"locations": {"p": {"kind": "filesystem", "path": str(tmp_path)}},
                                       "assets": {"db": {"rpo": "1d", "production": {"location": "p"},
                                                         "validators": [{"kind": "rds_snapshot", "instance": name}]}}}))
    snap = Snapshot(cfg).with_result(result, time.time())
    text = render(make_registry(lambda: snap, ProcessState(0.0))).decode()
    assert metric_value(text, "drwatch_rds_snapshot_timestamp_seconds", asset="db", region="us-east-1") == source_ts
    assert metric_value(text, "drwatch_rds_snapshot_timestamp_seconds", asset="db", region=DR) is not None


async def test_snapshots_older_than_the_rpo_fail(tmp_path: Path, moto: MotoServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two days later with a one-day RPO: the newest snapshot and its DR copy are both stale."""
    name = new_instance(moto, copy_to_dr=True)
    result = await check(tmp_path, moto, monkeypatch, instance=name, dr_region=DR,
                         clock=lambda: time.time() + 2 * 86400)
    assert result.outcome == Outcome.FAILED
    assert critical(result) == {"rpo_exceeded", "dr_copy_stale"}
    assert result.figures["snapshot_age_seconds"] > 86400


async def test_unencrypted_uncopied_short_retention_fails(tmp_path: Path, moto: MotoServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An unencrypted snapshot, no copy in the DR region, a retention below the minimum: each is a failure."""
    name = new_instance(moto, encrypted=False, retention=1)
    result = await check(tmp_path, moto, monkeypatch, instance=name, dr_region=DR, min_retention="7d")
    assert result.outcome == Outcome.FAILED
    assert critical(result) == {"snapshot_unencrypted", "dr_copy_missing", "retention_too_short"}


async def test_manual_only_finds_no_automated_snapshot(tmp_path: Path, moto: MotoServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`snapshot_type: manual` ignores automated snapshots: an instance with none fails `no_snapshot`."""
    name = new_instance(moto)
    result = await check(tmp_path, moto, monkeypatch, instance=name, snapshot_type="manual")
    assert result.outcome == Outcome.FAILED
    assert critical(result) == {"no_snapshot"}
    result = await check(tmp_path, moto, monkeypatch, instance=name, snapshot_type="automated")
    assert result.outcome == Outcome.OK, result.findings


async def test_aurora_cluster_snapshots(tmp_path: Path, moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster is checked through its cluster snapshots and its own retention period."""
    name = f"cl-{next(_ids)}-{int(time.time() * 1000) % 100_000}"
    rds(moto).create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql", MasterUsername="app",
                                MasterUserPassword="password1", StorageEncrypted=True, BackupRetentionPeriod=3)
    result = await check(tmp_path, moto, monkeypatch, cluster=name, min_retention="7d")
    assert result.outcome == Outcome.FAILED
    assert critical(result) == {"retention_too_short"}
    assert result.figures["retention_days"] == 3


async def test_deleted_instance_keeps_its_snapshots(tmp_path: Path, moto: MotoServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The instance is gone but a final snapshot remains: ok, with a `source_not_found` warning."""
    name = new_instance(moto)
    rds(moto).delete_db_instance(DBInstanceIdentifier=name, FinalDBSnapshotIdentifier=f"{name}-final")
    result = await check(tmp_path, moto, monkeypatch, instance=name)
    assert result.outcome == Outcome.OK, result.findings
    assert [(f.severity, f.code) for f in result.findings] == [(Severity.WARNING, "source_not_found")]


async def test_unreachable_api_is_error(tmp_path: Path, moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing answers at the endpoint: error `unreachable`, not failed."""
    result = await check(tmp_path, moto, monkeypatch, instance="any",
                         endpoint_url=f"http://127.0.0.1:{free_port()}")
    assert result.outcome == Outcome.ERROR
    assert [f.code for f in result.findings] == ["unreachable"]


def test_config_needs_exactly_one_source(tmp_path: Path) -> None:
    """`instance` or `cluster`, not both and not neither."""
    for extra in ({}, {"instance": "a", "cluster": "b"}):
        with pytest.raises(ConfigError, match="exactly one of 'instance'"):
            parse_config(yaml.safe_dump({"locations": {"p": {"kind": "filesystem", "path": str(tmp_path)}},
                                         "assets": {"db": {"rpo": "1d", "production": {"location": "p"},
                                                           "validators": [{"kind": "rds_snapshot", **extra}]}}}))
