"""Restore-time samples under real filesystem faults: a NAS (FUSE, paced to 512 KiB/s) that loses one file (EIO),
and one too slow for the run's timeout. Neither may move the location's measured throughput: a failed read is busy
time without bytes, and the copy that could not be checked is an error, never a verdict."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.model import CopyState, Outcome
from tests.support.helpers import sample_files, write_tree
from tests.support.runs import open_runner
from tests.support.s3helpers import Locations, bucket, upload
from tests.support.s3proxy import RecordingProxy
from tests.support.s3servers import MotoServer
from tests.support.slowfs import fuse_unavailable, throttled_mount
from tests.test_rto import parse, projections

RATE = 512 * 1024


async def test_a_nas_file_failing_with_eio_or_a_run_timing_out_leaves_the_throughput_as_measured(
        tmp_path: Path) -> None:
    unavailable = fuse_unavailable()
    if unavailable is not None:
        pytest.skip(f"no FUSE here for a throttled filesystem ({unavailable})")
    files = sample_files(40, 16 * 1024)
    bad = sorted(files)[5]
    for name in ("clean", "eio", "slowpoke"):
        for root in ("prod", "nas", "near"):
            write_tree(tmp_path / root / name, files)
    with throttled_mount(tmp_path / "nas", tmp_path / "mnt", RATE, failing=(f"eio/{bad}",)) as mnt:
        def asset(prefix: str, **options: Any) -> dict[str, Any]:
            return {"rpo": "1d", "rto": "1h", "production": {"location": "prod", "prefix": prefix},
                    "copies": [{"location": c, "prefix": prefix} for c in ("near", "slow")],
                    "validators": [{"kind": "replica", **options}]}

        cfg = parse(tmp_path, {
            "store": {"sqlite": str(tmp_path / "state.sqlite")},
            "locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "dc-a"},
                          "near": {"kind": "filesystem", "path": str(tmp_path / "near"), "site": "dc-b"},
                          "slow": {"kind": "filesystem", "path": str(mnt), "site": "dc-c"}},
            "assets": {"clean": asset("clean"), "eio": asset("eio"), "slowpoke": asset("slowpoke", timeout="0.5s")}})
        async with open_runner(cfg, tmp_path / "sandboxes") as runner:
            outcomes = {name: await runner.execute(name, cfg.assets[name].validators[0])
                        for name in ("clean", "eio", "slowpoke")}
    assert outcomes["clean"].outcome == Outcome.OK, outcomes["clean"].findings
    eio = outcomes["eio"]
    assert eio.outcome == Outcome.ERROR, eio.findings
    assert ("unreadable", f"slow:{bad}") in {(f.code, f.subject) for f in eio.findings}, eio.findings
    assert {c.copy: c.state for c in eio.copies}["slow"] == CopyState.ERROR
    assert outcomes["slowpoke"].outcome == Outcome.TIMEOUT, outcomes["slowpoke"].findings

    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        sampled = {row[0] for row in db.execute("SELECT DISTINCT asset FROM rate_samples")}
    assert sampled == {"clean"}  # the error and the timeout runs measured nothing
    _snap, proj = await projections(cfg)
    for name in ("clean", "eio"):
        slow = next(c for c in proj[name].copies if c.copy == "slow")
        assert slow.throughput is not None and 0.7 * RATE <= slow.throughput <= 1.1 * RATE, (name, slow)


async def test_a_failed_s3_read_of_one_run_does_not_make_another_s_reads_look_faster(
        tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Two assets with copies on one bucket behind a 512 KiB/s link; the GETs of one asset's objects are held
    0.25 s each, one at a time, and refused. Checked at the same time, the failing run's GETs moved no bytes: the
    other run's 3 s read must measure what it measures alone (the 2 s of failing GETs counted as busy time shared
    with it: 1.5x its rate, a slow copy looking fast)."""
    rate = 512 * 1024
    good = {"f.bin": os.urandom(3 * rate)}
    bad = {f"f{i}.bin": os.urandom(1024) for i in range(8)}
    name = bucket(moto, "copy")
    for prefix, files in (("good", good), ("bad", bad)):
        write_tree(tmp_path / "prod" / prefix, files)
        upload(moto, name, files, prefix=f"{prefix}/")
    with RecordingProxy("127.0.0.1", moto.port, get_rate=rate) as proxy:
        proxy.refuse_gets_under, proxy.refuse_delay = "bad/", 0.25
        locs.fs("prod", tmp_path / "prod", site="dc-a")
        locs.s3("copy", moto, name, site="dc-b", max_attempts=1)
        locs.data["copy"]["endpoint_url"] = proxy.endpoint_url
        cfg = parse(tmp_path, {
            "store": {"sqlite": str(tmp_path / "state.sqlite")}, "locations": locs.data,
            "assets": {p: {"rpo": "1d", "rto": "1h", "production": {"location": "prod", "prefix": p},
                           "copies": [{"location": "copy", "prefix": p}], "validators": [{"kind": "replica"}]}
                       for p in ("good", "bad")}})
        async with open_runner(cfg, tmp_path / "sandboxes") as runner:
            alone = await runner.execute("good", cfg.assets["good"].validators[0])
            beside, failing = await asyncio.gather(*(runner.execute(p, cfg.assets[p].validators[0])
                                                     for p in ("good", "bad")))
        proxy.settle()
        refused = [r for r in proxy.snapshot(name) if r.key.startswith("bad/") and r.method == "GET"]
    assert (alone.outcome, beside.outcome, failing.outcome) == (Outcome.OK, Outcome.OK, Outcome.ERROR)
    assert len(refused) == len(bad) and {r.status for r in refused} == {403}
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        rates = {run_id: b / s for run_id, b, s in db.execute("SELECT run_id, bytes, seconds FROM rate_samples "
                                                               "WHERE name = 'copy'")}
    assert set(rates) == {alone.run_id, beside.run_id}, rates
    solo = rates[alone.run_id]
    assert 0.5 * rate <= solo <= 1.1 * rate, solo
    assert 0.8 * solo <= rates[beside.run_id] <= 1.25 * solo, (rates[beside.run_id], solo)
