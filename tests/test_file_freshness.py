"""The `file_freshness` validator on a real filesystem and a real moto S3 server: the newest file of a copy must be
younger than the asset's RPO (or ``within``).

Each run goes through a real Runner (store, S3 client pool) as in the daemon. Stale times are real: file mtimes
set with ``os.utime``; S3 ``LastModified`` cannot be set, so the S3 cases move the run's clock instead. Faults are
real too: a location directory that is not mounted, an endpoint where nothing listens, a proxy answering every
request with 503 SlowDown.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from tests.faults.proxy import Fault, FaultProxy
from tests.support.helpers import free_port, sample_files, write_tree
from tests.support.s3helpers import Locations, bucket, codes, config, parse, rules, run, subjects, upload
from tests.support.s3servers import MotoServer

DAY = 86400.0
YEAR_2099 = 4_070_908_800.0


def date(root: Path, when: float) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def age(root: Path, seconds: float) -> None:
    date(root, time.time() - seconds)


def fs_config(tmp: Path, locs: Locations, **validator: Any) -> dict[str, Any]:
    """Production ``prod/data`` and two filesystem copies ``near/data`` and ``far/data``; RPO 1d."""
    for loc in ("prod", "near", "far"):
        (tmp / loc).mkdir(exist_ok=True)
        locs.fs(loc, tmp / loc, site=f"site-{loc}")
    return config(tmp, locs, ("prod", "data"), [("near", "data"), ("far", "data")],
                  validators=[{"kind": "file_freshness", **validator}])


def critical(result: Result) -> list[tuple[str, str]]:
    return sorted((f.code, f.subject) for f in result.findings if f.severity == Severity.CRITICAL)


async def test_fresh_copies_pass_and_record_their_newest_time(tmp_path: Path, locs: Locations) -> None:
    """Copies whose newest file is an hour old (RPO 1d) pass; the newest time of each copy is a figure; production
    is not listed unless asked; the result proves no copy (no recovery point, no copy report)."""
    for loc in ("near", "far"):
        write_tree(tmp_path / loc / "data", sample_files(5, 128))
        age(tmp_path / loc / "data", 3600)
    (tmp_path / "near" / "data" / "file-0002.bin").touch()  # one newer file decides
    result, cfg = await run(tmp_path, fs_config(tmp_path, locs))
    assert result.outcome == Outcome.OK, result.findings
    assert result.findings == ()
    assert result.figures["files.near"] == result.figures["files.far"] == 5
    assert result.figures["newest_timestamp_seconds.near"] == pytest.approx(time.time(), abs=60)
    assert result.figures["newest_timestamp_seconds.far"] == pytest.approx(time.time() - 3600, abs=60)
    assert "files.production" not in result.figures
    assert result.copies == () and result.recovery_point is None
    assert rules(cfg, result)["copies"] != "pass"  # a listing proves no copy


async def test_a_stale_copy_fails_with_its_age(tmp_path: Path, locs: Locations) -> None:
    """A copy whose newest file is two days old fails (`stale`, naming the copy); the fresh one does not."""
    for loc in ("near", "far"):
        write_tree(tmp_path / loc / "data", sample_files(3, 64))
    age(tmp_path / "far" / "data", 2 * DAY)
    result, cfg = await run(tmp_path, fs_config(tmp_path, locs))
    assert result.outcome == Outcome.FAILED
    assert critical(result) == [("stale", "far")]
    assert "2d" in next(f.message for f in result.findings if f.code == "stale")
    assert "the newest file (" in next(f.message for f in result.findings if f.code == "stale")
    assert rules(cfg, result)["restore_errors"] == "fail"
    # ``within`` overrides the RPO: three days allowed, the same copy passes.
    ok, _ = await run(tmp_path, fs_config(tmp_path, locs, within="3d"))
    assert ok.outcome == Outcome.OK, ok.findings


async def test_an_empty_prefix_and_a_missing_copy_fail(tmp_path: Path, locs: Locations) -> None:
    """A copy directory with no file under it fails (`empty_prefix`); a copy directory that is gone from a
    mounted location fails (`copy_missing`)."""
    (tmp_path / "near" / "data").mkdir(parents=True)
    write_tree(tmp_path / "far" / "other", {"x": b"1"})  # the location is there, the copy's directory is not
    result, _ = await run(tmp_path, fs_config(tmp_path, locs))
    assert result.outcome == Outcome.FAILED
    assert critical(result) == [("copy_missing", "far"), ("empty_prefix", "near")]


async def test_unreachable_locations_are_error_not_failed(tmp_path: Path, locs: Locations) -> None:
    """A location whose directory does not exist (not mounted) and one that is an empty directory and no mount
    point (a disk not mounted) could not be checked: error, never a bad backup."""
    cfg = fs_config(tmp_path, locs)
    write_tree(tmp_path / "near" / "data", sample_files(2, 64))
    (tmp_path / "near").rename(tmp_path / "near-unmounted")
    for child in (tmp_path / "far").iterdir():
        child.rmdir()
    result, c = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR
    assert critical(result) == []
    assert subjects(result, "location_unavailable") == ["far", "near"]
    assert rules(c, result)["restore_errors"] == "unknown"


async def test_a_time_in_the_future_never_makes_a_copy_fresh(tmp_path: Path, locs: Locations) -> None:
    """One file dated 2099 among stale ones: the `time_in_future` warning, and the copy is still stale; a copy whose
    every file is dated ahead has no believable time at all (stale)."""
    write_tree(tmp_path / "near" / "data", sample_files(3, 64))
    age(tmp_path / "near" / "data", 5 * DAY)
    os.utime(tmp_path / "near" / "data" / "file-0000.bin", (YEAR_2099, YEAR_2099))
    date(write_tree(tmp_path / "far" / "data", sample_files(2, 64)), YEAR_2099)
    result, _ = await run(tmp_path, fs_config(tmp_path, locs))
    assert result.outcome == Outcome.FAILED
    assert critical(result) == [("stale", "far"), ("stale", "near")]
    assert subjects(result, "time_in_future") == ["far", "near"]
    assert {f.severity for f in result.findings if f.code == "time_in_future"} == {Severity.WARNING}


async def test_production_is_checked_when_asked(tmp_path: Path, locs: Locations) -> None:
    """``production: true`` lists production too (here stale, the copies fresh)."""
    write_tree(tmp_path / "prod" / "data", sample_files(2, 64))
    age(tmp_path / "prod" / "data", 3 * DAY)
    for loc in ("near", "far"):
        write_tree(tmp_path / loc / "data", sample_files(2, 64))
    result, _ = await run(tmp_path, fs_config(tmp_path, locs, production=True, copies=["far"]))
    assert result.outcome == Outcome.FAILED
    assert critical(result) == [("stale", "production")]
    assert "files.near" not in result.figures and result.figures["files.far"] == 2


def test_config_is_checked(tmp_path: Path, locs: Locations) -> None:
    """A non-positive ``within`` and an unknown copy are config errors with their paths."""
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, fs_config(tmp_path, locs, within="0s"))
    assert "assets.data.validators[0].within: must be above zero" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, fs_config(tmp_path, locs, copies=["nowhere"]))
    assert "assets.data.validators[0].copies[0]" in str(err.value)


# --- S3 (moto server) ------------------------------------------------------------------------------------


def s3_config(tmp: Path, locs: Locations, server: Any, name: str, **validator: Any) -> dict[str, Any]:
    (tmp / "prod" / "data").mkdir(parents=True, exist_ok=True)
    locs.fs("prod", tmp / "prod", site="dc-a")
    locs.s3("vault", server, name, site="dc-b", max_attempts=1, connect_timeout="1s", read_timeout="2s")
    return config(tmp, locs, ("prod", "data"), [("vault", "data")],
                  validators=[{"kind": "file_freshness", **validator}])


async def test_s3_copy_fresh_then_stale(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Objects just uploaded are fresh (their LastModified is the newest time); two days later (the run's clock
    moved) the same copy is stale."""
    name = bucket(moto, "fresh")
    upload(moto, name, sample_files(4, 128))
    cfg = s3_config(tmp_path, locs, moto, name)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["files.vault"] == 4
    assert result.figures["newest_timestamp_seconds.vault"] == pytest.approx(time.time(), abs=120)
    later, _ = await run(tmp_path, cfg, clock=lambda: time.time() + 2 * DAY)
    assert later.outcome == Outcome.FAILED
    assert critical(later) == [("stale", "vault")]
    assert "the newest object (" in next(f.message for f in later.findings if f.code == "stale")  # S3: not "file"
    # Seen from a clock a day behind, every object is ahead of it: a warning, and no believable time.
    behind, _ = await run(tmp_path, cfg, clock=lambda: time.time() - DAY)
    assert behind.outcome == Outcome.FAILED
    assert codes(behind) == {"time_in_future", "stale"}


async def test_s3_empty_prefix_and_missing_bucket_fail(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Objects under another prefix only: `empty_prefix`; a bucket that does not exist: `copy_missing`."""
    name = bucket(moto, "elsewhere")
    upload(moto, name, sample_files(2, 64), prefix="other/")
    result, _ = await run(tmp_path, s3_config(tmp_path, locs, moto, name))
    assert result.outcome == Outcome.FAILED
    assert critical(result) == [("empty_prefix", "vault")]
    gone, _ = await run(tmp_path, s3_config(tmp_path, locs, moto, f"{name}-never-made"))
    assert gone.outcome == Outcome.FAILED
    assert critical(gone) == [("copy_missing", "vault")]


async def test_s3_unreachable_and_stalled_are_error(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Nothing listening at the endpoint: `unreachable`; a real proxy in front of moto that forwards requests and
    never answers: `timeout` (the client's read timeout, inside the run's). Both could not check: error, never
    failed."""
    name = bucket(moto, "behind")
    upload(moto, name, sample_files(2, 64))
    nobody = SimpleNamespace(endpoint_url=f"http://127.0.0.1:{free_port()}", access_key=moto.access_key,
                             secret_key=moto.secret_key, region=moto.region)
    result, _ = await run(tmp_path, s3_config(tmp_path, locs, nobody, name))
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"unreachable"} and critical(result) == []
    proxy = FaultProxy("127.0.0.1", moto.port).start()
    try:
        proxy.set(Fault.STALL)
        stalled = SimpleNamespace(endpoint_url=proxy.endpoint_url, access_key=moto.access_key,
                                    secret_key=moto.secret_key, region=moto.region)
        result, _ = await run(tmp_path, s3_config(tmp_path, locs, stalled, name))
    finally:
        proxy.stop()
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"timeout"} and critical(result) == [], result.findings
