"""The `postgres_replica_lag` validator against a real primary and a real streaming standby
(``pg_basebackup -R`` of a throwaway server), both started by the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from drwatch.metrics.collector import ProcessState, make_registry, render
from drwatch.state.snapshot import Snapshot
from tests.support.helpers import free_port, metric_value
from tests.support.pgserver import PostgresServer, StandbyServer
from tests.support.runs import open_runner


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PostgresServer, StandbyServer]]:
    primary = PostgresServer()
    primary.start()
    standby = StandbyServer(primary)
    try:
        primary.psql("CREATE TABLE beat (at timestamptz DEFAULT now())")
        standby.start()
        yield primary, standby
    finally:
        standby.cleanup()
        primary.cleanup()


def caught_up(primary: PostgresServer, standby: StandbyServer, timeout: float = 30) -> None:
    """Wait until the standby streams and has replayed everything the primary has written so far."""
    target = primary.psql("SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn AND "
                        "(SELECT status FROM pg_stat_wal_receiver) = 'streaming'") == "t":
            return
        time.sleep(0.1)
    raise AssertionError("the standby did not catch up")


async def check(tmp: Path, dsn: str, monkeypatch: pytest.MonkeyPatch, **validator: Any) -> Result:
    monkeypatch.setenv("DRW_REPLICA_DSN", dsn)
    cfg = parse_config(yaml.safe_dump({
        "store": {"sqlite": str(tmp / "state.sqlite")},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp)}},
        "assets": {"db": {"rpo": "1h", "production": {"location": "prod"}, "validators": [
            {"kind": "postgres_replica_lag", "dsn_env": "DRW_REPLICA_DSN", **validator}]}},
    }), source=str(tmp / "drwatch.yaml"))
    async with open_runner(cfg, tmp / "sbx") as runner:
        return await runner.execute("db", cfg.assets["db"].validators[0])


async def test_idle_primary_means_zero_lag_not_growing_lag(pair: tuple[PostgresServer, StandbyServer],
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last replayed transaction is old because the primary is idle, yet nothing is missing: lag 0, ok."""
    primary, standby = pair
    primary.psql("INSERT INTO beat DEFAULT VALUES")
    caught_up(primary, standby)
    await asyncio.sleep(1.5)  # the primary stays idle
    naive = float(standby.psql("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())"))
    assert naive > 1.4
    result = await check(tmp_path, standby.dsn(), monkeypatch, max_lag="1s")
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["lag_seconds"] == 0.0
    assert result.findings == ()
    assert result.recovery_point is None  # a replica is not a backup


async def test_replay_behind_beyond_max_lag_fails(pair: tuple[PostgresServer, StandbyServer], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """WAL received but not replayed (replay paused) while time passes: the lag grows past max_lag: failed."""
    primary, standby = pair
    primary.psql("INSERT INTO beat DEFAULT VALUES")
    caught_up(primary, standby)
    standby.psql("SELECT pg_wal_replay_pause()")
    try:
        await asyncio.sleep(1.2)
        primary.psql("INSERT INTO beat DEFAULT VALUES")
        target = primary.psql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + 30
        while standby.psql(f"SELECT pg_last_wal_receive_lsn() >= '{target}'::pg_lsn") != "t":
            assert time.monotonic() < deadline, "the standby did not receive the WAL"
            await asyncio.sleep(0.1)
        result = await check(tmp_path, standby.dsn(), monkeypatch, max_lag="1s")
    finally:
        standby.psql("SELECT pg_wal_replay_resume()")
    assert result.outcome == Outcome.FAILED
    assert {(f.severity, f.code) for f in result.findings} == {(Severity.CRITICAL, "replica_lag_exceeded"),
                                                               (Severity.WARNING, "replay_paused")}
    assert result.figures["lag_seconds"] >= 1.2
    assert result.figures["replay_pending_bytes"] > 0
    caught_up(primary, standby)
    result = await check(tmp_path, standby.dsn(), monkeypatch, max_lag="1s")
    assert result.outcome == Outcome.OK and result.figures["lag_seconds"] == 0.0


async def test_hidden_receiver_status_falls_back_to_transaction_age(
        pair: tuple[PostgresServer, StandbyServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A role without pg_monitor cannot see whether the receiver streams: no shortcut, a finding says why,
    and the lag is the age of the last replayed transaction (the asset's RPO is the default max_lag)."""
    primary, standby = pair
    primary.psql("DO $$BEGIN CREATE ROLE lag_reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$")
    primary.psql("INSERT INTO beat DEFAULT VALUES")
    caught_up(primary, standby)
    await asyncio.sleep(0.5)
    result = await check(tmp_path, f"postgresql://lag_reader@{standby.host}:{standby.port}/postgres", monkeypatch)
    assert result.outcome == Outcome.OK
    assert [f.code for f in result.findings] == ["receiver_status_hidden"]
    assert result.figures["lag_seconds"] >= 0.5


async def test_a_primary_is_not_a_standby_error(pair: tuple[PostgresServer, StandbyServer], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Pointed at a server that is not in recovery: error `not_a_standby` (could not check), never failed."""
    result = await check(tmp_path, pair[0].dsn(), monkeypatch)
    assert result.outcome == Outcome.ERROR
    assert [f.code for f in result.findings] == ["not_a_standby"]


async def test_standby_down_is_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listening: error `replica_unavailable`."""
    result = await check(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", monkeypatch)
    assert result.outcome == Outcome.ERROR
    assert [f.code for f in result.findings] == ["replica_unavailable"]


def test_config_needs_one_dsn_source(tmp_path: Path) -> None:
    """Exactly one of dsn_env / dsn_file."""
    with pytest.raises(ConfigError, match="exactly one of dsn_env"):
        parse_config(yaml.safe_dump({"locations": {"p": {"kind": "filesystem", "path": str(tmp_path)}},
                                     "assets": {"db": {"rpo": "1h", "production": {"location": "p"},
                                                       "validators": [{"kind": "postgres_replica_lag"}]}}}))


def test_lag_is_projected_per_asset(tmp_path: Path) -> None:
    """drwatch_replica_lag_seconds{asset} comes from the latest result's figures (the worst standby)."""
    cfg = parse_config(yaml.safe_dump({
        "locations": {"p": {"kind": "filesystem", "path": str(tmp_path)}},
        "assets": {"db": {"rpo": "1h", "production": {"location": "p"}, "validators": [
            {"kind": "postgres_replica_lag", "name": "dr", "dsn_env": "X"},
            {"kind": "postgres_replica_lag", "name": "reporting", "dsn_env": "Y"}]}}}))
    snap = Snapshot(cfg)
    for name, lag in (("dr", 2.5), ("reporting", 40.0)):
        snap = snap.with_result(Result(run_id=name, asset="db", validator=name, kind="postgres_replica_lag",
                                       outcome=Outcome.OK, started_at=1.0, finished_at=2.0,
                                       figures={"lag_seconds": lag}), time.time())
    text = render(make_registry(lambda: snap, ProcessState(0.0))).decode()
    assert metric_value(text, "drwatch_replica_lag_seconds", asset="db") == 40.0
