"""Projected restore time (drwatch.state.rto) on real servers: a throttled copy behind a slow loopback link, an S3
copy whose objects are in DEEP_ARCHIVE, and a PostgreSQL drill's real restore against its projection.

Every projection here is built the way the daemon builds it: results recorded by a real Runner into the store,
the snapshot loaded back from the store (so what is asserted is what a restarted daemon would show), and the
metrics rendered from that snapshot.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from drwatch.config.model import Config, parse_config
from drwatch.core.model import Outcome
from drwatch.metrics.collector import ProcessState, make_registry, render
from drwatch.state.compliance import evaluate
from drwatch.state.report import document, table
from drwatch.state.rto import AssetProjection, CopyProjection, project
from drwatch.state.snapshot import Snapshot, load_snapshot
from tests.support.helpers import metric_value, sample_files, write_tree
from tests.support.pgserver import PostgresServer
from tests.support.runs import open_runner
from tests.support.s3helpers import Locations, bucket, upload
from tests.support.s3proxy import RecordingProxy
from tests.support.s3servers import MotoServer
from tests.support.slowfs import fuse_unavailable, throttled_mount

SLOW_RATE = 256 * 1024  # bytes per second of the throttled link
# A drill's restore time and the projection made before it from the same dump: at most this far apart (the
# model's default `restore_time.tolerance`). Measured here: +20 % to +44 % (the first drill, on a cold cache, is
# the slow one the next projection averages in); a restore of 200,000 rows takes ~0.5 s, so noise dominates.
DRILL_TOLERANCE = 0.5


def parse(tmp: Path, data: dict[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(data), source=str(tmp / "drwatch.yaml"))


async def run_all(cfg: Config, tmp: Path, assets: list[str]) -> None:
    async with open_runner(cfg, tmp / "sandboxes") as runner:
        for name in assets:
            for v in cfg.assets[name].validators:
                result = await runner.execute(name, v)
                assert result.outcome == Outcome.OK, (name, result.findings)


async def projections(cfg: Config) -> tuple[Snapshot, dict[str, AssetProjection]]:
    """The projections of a snapshot loaded from the store (as after a restart)."""
    snap = await load_snapshot(cfg)
    now = time.time()
    return snap, project(cfg, snap, evaluate(cfg, snap, now), now)


def codes(p: AssetProjection) -> dict[str, str]:
    return {f.code: f.subject for f in p.findings}


def tight_at_risk_both_within(proj: dict[str, AssetProjection], size: float) -> CopyProjection:
    """The throttled-copy estate's verdicts: ``tight`` (only the slow copy) projected from its measured rate and
    at risk, ``both`` judged by its fast ``near`` copy and within; the slow copy's projection."""
    tight, both = proj["tight"], proj["both"]
    slow = next(c for c in tight.copies if c.copy == "slow")
    assert slow.throughput is not None and 0.5 * SLOW_RATE <= slow.throughput <= 1.1 * SLOW_RATE, slow
    assert slow.throughput_from == "measured"
    assert tight.copy == "slow" and tight.seconds is not None
    assert size / (1.1 * SLOW_RATE) <= tight.seconds <= size / (0.5 * SLOW_RATE), tight
    assert codes(tight) == {"rto_at_risk": "slow", "rto_offsite_slow": "slow"}, tight.findings
    assert both.copy == "near" and both.seconds is not None and both.seconds < 0.5, [repr(c) for c in both.copies]
    assert codes(both) == {"rto_offsite_slow": "slow"}, both.findings
    near = next(c for c in both.copies if c.copy == "near")
    assert near.throughput is not None and near.throughput > 10 * SLOW_RATE, near
    return slow


async def test_throttled_copy_puts_a_tight_rto_at_risk_while_a_fast_copy_keeps_it_within(
        tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Two assets with a 1 s RTO. ``tight`` has only an S3 copy behind a 256 KiB/s loopback link: its 512 KiB
    recovery point projects at ~2 s from the throughput its own verification reads measured: rto_at_risk.
    ``both`` also has a filesystem copy: judged by that fast copy, within the RTO; its only off-site copy is the
    slow one, which cannot meet the RTO: rto_offsite_slow. Status, metrics and the table say which copy and why."""
    files = sample_files(8, 64 * 1024)
    for name in ("tight", "both"):
        write_tree(tmp_path / "prod" / name, files)
    write_tree(tmp_path / "near" / "both", files)
    slow_bucket = bucket(moto, "slow")
    for name in ("tight", "both"):
        upload(moto, slow_bucket, files, prefix=f"{name}/")
    with RecordingProxy("127.0.0.1", moto.port, get_rate=SLOW_RATE) as proxy:
        locs.fs("prod", tmp_path / "prod", site="dc-a")
        locs.fs("near", tmp_path / "near", site="dc-a")
        locs.s3("slow", moto, slow_bucket, site="dc-b")
        locs.data["slow"]["endpoint_url"] = proxy.endpoint_url  # every read of the copy crosses the slow link

        def asset(prefix: str, copies: list[dict[str, str]]) -> dict[str, Any]:
            return {"rpo": "1d", "rto": "1s", "production": {"location": "prod", "prefix": prefix},
                    "copies": copies, "validators": [{"kind": "replica"}]}

        cfg = parse(tmp_path, {
            "store": {"sqlite": str(tmp_path / "state.sqlite")}, "locations": locs.data,
            "assets": {"tight": asset("tight", [{"location": "slow", "prefix": "tight"}]),
                       "both": asset("both", [{"location": "near", "prefix": "both"},
                                              {"location": "slow", "prefix": "both"}])}})
        await run_all(cfg, tmp_path, ["tight", "both"])
    snap, proj = await projections(cfg)
    size = float(sum(len(b) for b in files.values()))

    slow = tight_at_risk_both_within(proj, size)
    assert slow.samples == 2  # both assets' reads of the location
    near = next(c for c in proj["both"].copies if c.copy == "near")
    assert not near.offsite

    doc = document(snap, time.time())
    restore = doc["assets"]["both"]["restore"]
    assert restore["copy"] == "near" and restore["within_rto"] is True and "fastest counted copy 'near'" in \
        restore["why"]
    assert doc["assets"]["tight"]["restore"]["within_rto"] is False
    text = table(doc)
    assert "OVER RTO" in text and "rto_at_risk [slow]" in text

    metrics = render(make_registry(lambda: snap, ProcessState(time.time()))).decode()
    assert (metric_value(metrics, "drwatch_asset_restore_projected_seconds", asset="tight") or 0) > 1.0
    assert metric_value(metrics, "drwatch_copy_restore_best", asset="both", copy="near") == 1
    assert metric_value(metrics, "drwatch_copy_restore_best", asset="both", copy="slow") is None
    assert metric_value(metrics, "drwatch_asset_restore_size_bytes", asset="both") == size


async def test_throttled_filesystem_copy_puts_a_tight_rto_at_risk_while_a_fast_one_keeps_it_within(
        tmp_path: Path) -> None:
    """The same with filesystem copies only: ``slow`` is a real filesystem (FUSE, reads paced to 256 KiB/s like a
    slow NAS link, page cache bypassed) and ``near`` a local directory. ``tight`` (only the slow copy) projects its
    512 KiB at ~2 s against a 1 s RTO: rto_at_risk; ``both`` is judged by its fast copy and stays within."""
    unavailable = fuse_unavailable()
    if unavailable is not None:
        pytest.skip(f"no FUSE here for a throttled filesystem ({unavailable}); the S3 variant above covers the model")
    files = sample_files(8, 64 * 1024)
    for name in ("tight", "both"):
        write_tree(tmp_path / "prod" / name, files)
        write_tree(tmp_path / "nas" / name, files)
    write_tree(tmp_path / "near" / "both", files)
    with throttled_mount(tmp_path / "nas", tmp_path / "slow-mount", SLOW_RATE) as slow_path:
        started = time.monotonic()
        assert (slow_path / "tight" / next(iter(files))).read_bytes() == next(iter(files.values()))
        assert time.monotonic() - started >= 0.8 * 64 * 1024 / SLOW_RATE  # the mount is slow for real

        def asset(prefix: str, copies: list[str]) -> dict[str, Any]:
            return {"rpo": "1d", "rto": "1s", "production": {"location": "prod", "prefix": prefix},
                    "copies": [{"location": c, "prefix": prefix} for c in copies], "validators": [{"kind": "replica"}]}

        cfg = parse(tmp_path, {
            "store": {"sqlite": str(tmp_path / "state.sqlite")},
            "locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "dc-a"},
                          "near": {"kind": "filesystem", "path": str(tmp_path / "near"), "site": "dc-a"},
                          "slow": {"kind": "filesystem", "path": str(slow_path), "site": "dc-b"}},
            "assets": {"tight": asset("tight", ["slow"]), "both": asset("both", ["near", "slow"])}})
        await run_all(cfg, tmp_path, ["tight", "both"])
    snap, proj = await projections(cfg)
    size = float(sum(len(b) for b in files.values()))

    tight_at_risk_both_within(proj, size)
    metrics = render(make_registry(lambda: snap, ProcessState(time.time()))).decode()
    assert metric_value(metrics, "drwatch_copy_restore_best", asset="both", copy="near") == 1
    assert (metric_value(metrics, "drwatch_asset_restore_projected_seconds", asset="tight") or 0) > 1.0


async def test_a_fast_copy_compared_with_a_slow_production_is_not_measured_at_production_s_rate(
        tmp_path: Path) -> None:
    """Production on a slow filesystem (FUSE, 256 KiB/s), its only copy a local directory, no seal: the copy is
    proven by comparing both files chunk by chunk, and only the copy's own reads are its restore time. Timed as a
    whole, the comparison waited for production's reads and the fast copy measured production's rate (~256 KiB/s:
    projected ~2 s against a 1 s RTO, rto_at_risk for a copy that restores in milliseconds)."""
    unavailable = fuse_unavailable()
    if unavailable is not None:
        pytest.skip(f"no FUSE here for a throttled filesystem ({unavailable})")
    files = sample_files(8, 64 * 1024)
    write_tree(tmp_path / "nas" / "data", files)
    write_tree(tmp_path / "near" / "data", files)
    with throttled_mount(tmp_path / "nas", tmp_path / "slow-mount", SLOW_RATE) as slow_path:
        cfg = parse(tmp_path, {
            "store": {"sqlite": str(tmp_path / "state.sqlite")},
            "locations": {"prod": {"kind": "filesystem", "path": str(slow_path), "site": "dc-a"},
                          "near": {"kind": "filesystem", "path": str(tmp_path / "near"), "site": "dc-b"}},
            "assets": {"data": {"rpo": "1d", "rto": "1s", "production": {"location": "prod", "prefix": "data"},
                                "copies": [{"location": "near", "prefix": "data"}],
                                "validators": [{"kind": "replica"}]}}})
        started = time.monotonic()
        await run_all(cfg, tmp_path, ["data"])
        assert time.monotonic() - started >= 0.8 * len(files) * 64 * 1024 / SLOW_RATE  # production was read, slowly
    _snap, proj = await projections(cfg)
    data = proj["data"]
    near = next(c for c in data.copies if c.copy == "near")
    assert near.throughput is not None and near.throughput > 10 * SLOW_RATE, near
    assert data.copy == "near" and data.seconds is not None and data.seconds < 0.5, data
    assert "rto_at_risk" not in codes(data), data.findings


async def test_checks_reading_one_nas_at_once_measure_its_rate_not_their_share_of_it(tmp_path: Path) -> None:
    """Six assets on one NAS (FUSE, 1 MiB/s shared by the mount) checked at the same time, as a daemon's schedule
    does: each run is busy while the others read too, so each measured its share of the link, and the pooled
    throughput was a fraction of what one check alone measures (three at once: 294-313 KB/s for 524 KB/s; here
    half: every projection on the NAS twice too long). Instants shared with other runs' reads of the location are
    now divided among them: together they measure what one alone does (compared on the same host in the same
    test, so a loaded host slowing the FUSE process slows both)."""
    unavailable = fuse_unavailable()
    if unavailable is not None:
        pytest.skip(f"no FUSE here for a throttled filesystem ({unavailable})")
    rate = 1024 * 1024
    files = sample_files(2, 320 * 1024)  # above hashing.SMALL: each file its own thread, not a shared batch
    names = ["a", "b", "c", "d", "e", "f"]
    for name in names:
        write_tree(tmp_path / "prod" / name, files)
        write_tree(tmp_path / "nas" / name, files)
    with throttled_mount(tmp_path / "nas", tmp_path / "slow-mount", rate) as slow_path:
        cfg = parse(tmp_path, {
            "store": {"sqlite": str(tmp_path / "state.sqlite")},
            "limits": {"hash_workers": len(names)},  # every run's read in flight at once, as on a larger host
            "locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "dc-a"},
                          "slow": {"kind": "filesystem", "path": str(slow_path), "site": "dc-b"}},
            "assets": {n: {"rpo": "1d", "rto": "1h", "production": {"location": "prod", "prefix": n},
                           "copies": [{"location": "slow", "prefix": n}], "validators": [{"kind": "replica"}]}
                       for n in names}})
        async with open_runner(cfg, tmp_path / "sandboxes") as runner:
            alone = await runner.execute("a", cfg.assets["a"].validators[0])
            started = time.monotonic()
            together = await asyncio.gather(*(runner.execute(n, cfg.assets[n].validators[0]) for n in names))
            took = time.monotonic() - started
    assert [r.outcome for r in [alone, *together]] == [Outcome.OK] * (1 + len(names))
    assert took >= 0.9 * len(names) * sum(len(b) for b in files.values()) / rate  # they did share the link
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        def measured(run_ids: list[str]) -> float:
            marks = ",".join("?" * len(run_ids))
            row = db.execute(f"SELECT sum(bytes), sum(seconds) FROM rate_samples WHERE name = 'slow' "
                             f"AND run_id IN ({marks})", run_ids).fetchone()
            return float(row[0]) / float(row[1])
        solo, shared = measured([alone.run_id]), measured([r.run_id for r in together])
    assert 0.5 * rate <= solo <= 1.1 * rate, solo  # one check alone measures the link
    assert 0.8 * solo <= shared <= 1.25 * solo, (shared, solo)


async def test_deep_archive_copy_is_projected_at_least_the_documented_retrieval(
        tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """A copy whose objects are DEEP_ARCHIVE (proven by ETags; unreadable, so not even sampled) is projected at no
    less than AWS's documented standard retrieval time (12 h), a lower bound as its read rate is unknown; a 4 h RTO
    is at risk. ``restore_time.retrieval`` overrides the tier (bulk: 48 h). A STANDARD copy added beside it (proven
    by ETags too, but sampled by one ranged read) has no retrieval latency and becomes the asset's copy."""
    files = sample_files(4, 4096)
    prod, cold, warm = bucket(moto, "prod"), bucket(moto, "cold"), bucket(moto, "warm")
    upload(moto, prod, files)
    upload(moto, cold, files, StorageClass="DEEP_ARCHIVE")
    upload(moto, warm, files)
    locs.s3("prod", moto, prod, site="dc-a", access_key="AKIDPROD")
    locs.s3("cold", moto, cold, site="dc-b", access_key="AKIDCOLD")
    locs.s3("warm", moto, warm, site="dc-a", access_key="AKIDWARM")
    data = {"store": {"sqlite": str(tmp_path / "state.sqlite")}, "locations": locs.data,
            "assets": {"data": {"rpo": "1d", "rto": "4h", "production": {"location": "prod", "prefix": "data"},
                                "copies": [{"location": "cold", "prefix": "data"}],
                                "validators": [{"kind": "replica"}]}}}
    cfg = parse(tmp_path, data)
    await run_all(cfg, tmp_path, ["data"])
    snap, proj = await projections(cfg)
    p = proj["data"]
    c = p.copies[0]
    assert c.storage_class == "DEEP_ARCHIVE" and c.retrieval_seconds == 12 * 3600
    assert c.seconds is not None and c.seconds >= 12 * 3600 and c.lower_bound, c
    assert p.copy == "cold" and codes(p)["rto_at_risk"] == "cold"
    metrics = render(make_registry(lambda: snap, ProcessState(time.time()))).decode()
    assert metric_value(metrics, "drwatch_copy_restore_retrieval_seconds", asset="data", copy="cold") == 43200
    assert (metric_value(metrics, "drwatch_copy_restore_projected_seconds", asset="data", copy="cold") or 0) >= 43200

    data["restore_time"] = {"retrieval": {"DEEP_ARCHIVE": "48h"}}
    data["assets"]["data"]["copies"].append({"location": "warm", "prefix": "data"})
    cfg = parse(tmp_path, data)
    await run_all(cfg, tmp_path, ["data"])
    _snap, proj = await projections(cfg)
    cold_p, warm_p = (next(c for c in proj["data"].copies if c.copy == n) for n in ("cold", "warm"))
    assert cold_p.seconds is not None and cold_p.seconds >= 48 * 3600 and cold_p.throughput is None
    assert warm_p.storage_class == "STANDARD" and warm_p.retrieval_seconds == 0
    assert warm_p.throughput_from == "measured" and warm_p.seconds is not None and warm_p.seconds < 60
    assert proj["data"].copy == "warm" and "rto_at_risk" not in codes(proj["data"])


async def test_copy_proven_without_reads_gets_one_ranged_sample_within_the_budget(
        tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """An S3 copy proven by ETags is never read; one ranged GET of its largest object (``throughput_sample``
    bytes) measures its location's throughput, and not again within ``throughput_sample_every``, for any asset
    with a copy there (the model pools a location's reads: ``more`` is projected from ``data``'s sample). Under a
    verification budget with no room for it, no sample is read: the copy stays unprojected."""
    files = {f"f{i}.bin": os.urandom(200_000 + i) for i in range(3)}
    prod, copy = bucket(moto, "prod"), bucket(moto, "copy")
    for prefix in ("data/", "more/"):
        upload(moto, prod, files, prefix=prefix)
        upload(moto, copy, files, prefix=prefix)
    with RecordingProxy("127.0.0.1", moto.port) as proxy:
        locs.s3("prod", moto, prod, site="dc-a", access_key="AKIDPROD")
        locs.s3("copy", moto, copy, site="dc-b", access_key="AKIDCOPY")
        locs.data["copy"]["endpoint_url"] = proxy.endpoint_url
        data: dict[str, Any] = {
            "store": {"sqlite": str(tmp_path / "state.sqlite")}, "locations": locs.data,
            "assets": {name: {"rpo": "1d", "rto": "1h", "production": {"location": "prod", "prefix": name},
                              "copies": [{"location": "copy", "prefix": name}],
                              "validators": [{"kind": "replica", "throughput_sample": 65536}]}
                       for name in ("data", "more")}}
        cfg = parse(tmp_path, data)
        for _ in range(3):  # the sample's read, then two runs within the day that read nothing
            await run_all(cfg, tmp_path, ["data", "more"])
        proxy.settle()
        gets = [r for r in proxy.snapshot(copy) if r.method == "GET" and r.key]
        assert [(r.key, r.response_bytes) for r in gets] == [("data/f2.bin", 65536)]  # the largest; once
        _snap, proj = await projections(cfg)
        for name in ("data", "more"):
            c = proj[name].copies[0]
            assert c.throughput_from == "measured" and c.samples == 1 and proj[name].copy == "copy"
        del data["assets"]["more"]

        proxy.clear()
        data["store"] = {"sqlite": str(tmp_path / "budget.sqlite")}
        data["assets"]["data"]["verification"] = {"budget": {"egress_bytes_per_day": 1000}}
        cfg = parse(tmp_path, data)
        await run_all(cfg, tmp_path, ["data"])
        proxy.settle()
        assert not [r for r in proxy.snapshot(copy) if r.method == "GET" and r.key]
        _snap, proj = await projections(cfg)
        assert proj["data"].copies[0].seconds is None


async def test_a_sample_read_the_copy_refuses_is_a_warning_not_a_verdict(
        tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """The copy answers its ranged sample GET 403 (credentials that may list but not read): the copy stays proven
    by ETags (ok), its restore time unknown, and the refusal is logged as a warning naming copy and error (an
    info line before: an RTO not judged with nothing at warning level to say why)."""
    files = {f"f{i}.bin": os.urandom(100_000 + i) for i in range(2)}
    prod, copy = bucket(moto, "prod"), bucket(moto, "copy")
    upload(moto, prod, files)
    upload(moto, copy, files)
    with RecordingProxy("127.0.0.1", moto.port) as proxy:
        proxy.refuse_object_gets = 403
        locs.s3("prod", moto, prod, site="dc-a", access_key="AKIDPROD")
        locs.s3("copy", moto, copy, site="dc-b", access_key="AKIDCOPY")
        locs.data["copy"]["endpoint_url"] = proxy.endpoint_url
        cfg = parse(tmp_path, {
            "store": {"sqlite": str(tmp_path / "state.sqlite")}, "locations": locs.data,
            "assets": {"data": {"rpo": "1d", "rto": "1h", "production": {"location": "prod", "prefix": "data"},
                                "copies": [{"location": "copy", "prefix": "data"}],
                                "validators": [{"kind": "replica", "throughput_sample": 65536}]}}})
        with structlog.testing.capture_logs() as captured:
            await run_all(cfg, tmp_path, ["data"])  # ok: asserted by run_all
        proxy.settle()
        assert [(r.method, r.status) for r in proxy.snapshot(copy) if r.key] == [("GET", 403)]
    [event] = [e for e in captured if e["event"] == "throughput_sample_failed"]
    assert event["log_level"] == "warning" and event["copy"] == "copy" and "S3Unavailable" in event["error"], event
    _snap, proj = await projections(cfg)
    assert proj["data"].copies[0].seconds is None and "rto_not_judged" in codes(proj["data"])


def _dump(server: PostgresServer, tmp: Path) -> Path:
    """pgbench -i -s 2 (200,000 accounts) dumped with pg_dump -Fc."""
    db = f"rto_{os.getpid()}"
    dsn = server.create_database(db)
    subprocess.run([str(server.bin_dir / "pgbench"), "-i", "-s", "2", "-q", dsn], check=True, capture_output=True,
                   timeout=120)
    dest = tmp / "dumps" / "prod.dump"
    dest.parent.mkdir(parents=True)
    subprocess.run([str(server.bin_dir / "pg_dump"), "-Fc", "-f", str(dest), dsn], check=True, capture_output=True,
                   timeout=120)
    server.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return dest


async def test_postgres_drill_restore_time_agrees_with_its_projection(
        tmp_path: Path, pg_server: PostgresServer, sandbox_root: Path) -> None:
    """Five restore drills of the same pg_dump: each from the second on is compared with the projection made from
    the samples recorded before it (fetch throughput of the dump location, the median of pg_restore seconds per
    byte). Most drills (the median error of the four comparisons) agree with their projection within
    DRILL_TOLERANCE, the model is not reported unreliable (that needs `error_drills` misses in a row), and the
    error metric is the newest comparison's. Single comparisons are not asserted: a 0.3 s drill slowed or sped up
    2-3x by the other test workers on a loaded 2-core machine was one (CI: +167 %; a Debian-venv run: +79 % for the
    newest after four slow ones), and the model is judged on its streak, as the product judges it."""
    dump = _dump(pg_server, tmp_path)
    cfg = parse(tmp_path, {
        "store": {"sqlite": str(tmp_path / "state.sqlite")},
        "locations": {"dumps": {"kind": "filesystem", "path": str(dump.parent)}},
        "assets": {name: {"rpo": "7d", "rto": "1h", "production": {"location": "dumps"},
                          "validators": [{"kind": "postgres_restore", "location": "dumps", "pattern": "*.dump"}]}
                   for name in ("warmup", "db")}})
    async with open_runner(cfg, sandbox_root) as runner:
        # One drill of another asset first, as a running daemon has done long before: the initdb template made,
        # the binaries and the dump in the page cache. Its samples are its own, so db's drills are all warm ones
        # (a cold first drill was up to 60 % slower under load and its sample biased both comparisons).
        warm = await runner.execute("warmup", cfg.assets["warmup"].validators[0])
        assert warm.outcome == Outcome.OK, warm.findings
        for _ in range(5):
            result = await runner.execute("db", cfg.assets["db"].validators[0])
            assert result.outcome == Outcome.OK, result.findings
    snap, proj = await projections(cfg)
    check = proj["db"].drills
    assert len(check.comparisons) == 4  # the first drill had nothing before it to project from
    assert all(c.measured > 0.2 for c in check.comparisons), check  # real restores of 200,000 rows, not no-ops
    assert statistics.median(abs(c.error) for c in check.comparisons) <= DRILL_TOLERANCE, check
    assert "rto_projection_unreliable" not in codes(proj["db"])
    metrics = render(make_registry(lambda: snap, ProcessState(time.time()))).decode()
    error = metric_value(metrics, "drwatch_asset_restore_projection_error_ratio", asset="db")
    assert check.latest is not None and error == pytest.approx(check.latest.error, abs=1e-3)
    assert metric_value(metrics, "drwatch_asset_restore_measured_seconds", asset="db") == pytest.approx(
        check.comparisons[-1].measured)
