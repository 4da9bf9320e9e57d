"""Issue #8: the verification ledger survives a restart of a real ``drwatch run`` in the middle of its reads.

A real daemon subprocess verifies an S3 copy (moto) through the recording proxy (tests/support/s3proxy.py), which
slows every object GET so the run can be stopped part-way: by SIGTERM (a 1 s drain, then the run is
cancelled and flushes its ledger on the way out) and, separately, by SIGKILL (no chance to flush). Then it is
restarted (the next scheduled run: ``every: 15s``), in the same period (``read_every: 1d``, same UTC day),
and the proxy's server-side record proves:

* coverage kept: the ledger holds a row for what the first daemon proved;
* no object read twice in the period without cause: nothing the ledger recorded is read again. After SIGTERM
  only the reads in flight at the stop (at most the run's verification window, ``max(4, 8 * hash_workers)``
  in replica.py) are unproven and read again; after SIGKILL at most the last unflushed batch plus those in
  flight, the bound the code documents (``drwatch.validators.copies.verification``: rows are flushed every
  ``FLUSH_ROWS`` objects or ``FLUSH_SECONDS``; reads take at least ``GET_DELAY`` here);
* the restarted run completes coverage (every object read once in the period, coverage 1.0) and is ``ok``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drwatch.store import open_store
from drwatch.validators.copies.verification import FLUSH_ROWS, FLUSH_SECONDS
from tests.support.helpers import DaemonProcess, free_port, sample_files, write_config
from tests.support.s3helpers import Locations, bucket, config, parse, upload
from tests.support.s3proxy import RecordingProxy, s3_operation
from tests.support.s3servers import MotoServer

N = 120
SIZE = 2048
GET_DELAY = 0.05  # per object GET at the proxy (one at a time): ~6 s of reads to interrupt
STOP_AFTER = 30  # GETs of the copy seen before the stop
HASH_WORKERS = 1
IN_FLIGHT = max(4, HASH_WORKERS * 8)  # reads a replica run keeps in flight (its verification window, replica.py)


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[RecordingProxy]:
    with RecordingProxy("127.0.0.1", moto.port, get_delay=GET_DELAY) as p:
        yield p


def settle(proxy: RecordingProxy, quiet: float = 1.0, limit: float = 30.0) -> None:
    """Wait until the proxy has recorded nothing new for ``quiet`` seconds (it records a request when it is
    answered, so a dead client's queued requests would otherwise be counted after ``clear()``)."""
    deadline = time.monotonic() + limit
    count, since = len(proxy.snapshot()), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = len(proxy.snapshot())
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError("the proxy did not settle")


def copy_gets(proxy: RecordingProxy, bucket_name: str) -> list[str]:
    return [r.key.removeprefix("data/") for r in proxy.snapshot(bucket_name) if s3_operation(r) == "get"]


def make_daemon(tmp: Path, moto: MotoServer, proxy: RecordingProxy,
                monkeypatch: pytest.MonkeyPatch) -> tuple[DaemonProcess, dict[str, Any], str, set[str]]:
    prod, copy = bucket(moto, "vrst-prod"), bucket(moto, "vrst-copy")
    files = sample_files(N, SIZE, seed=11)
    upload(moto, prod, files, ChecksumAlgorithm="SHA256")
    upload(moto, copy, files)
    locs = Locations(monkeypatch)
    locs.s3("prod", moto, prod, site="a", endpoint_url=proxy.endpoint_url)
    locs.s3("copy", moto, copy, site="b", endpoint_url=proxy.endpoint_url)
    cfg = config(tmp, locs, ("prod", "data/"), [("copy", "data/")], rpo="3650d",
                 validators=[{"kind": "replica", "schedule": {"every": "15s", "jitter": "0s"}, "timeout": "300s"}])
    cfg["assets"]["data"]["verification"] = {"read_every": "1d", "budget": {"egress_bytes_per_day": 10 * N * SIZE}}
    port = free_port()
    cfg["http"] = {"listen": f"127.0.0.1:{port}"}
    cfg["limits"] = {"sandbox_dir": str(tmp / "sandboxes"), "drain_timeout": "1s", "hash_workers": HASH_WORKERS}
    cfg["logging"] = {"level": "info", "format": "json"}
    daemon = DaemonProcess(write_config(tmp / "drwatch.yaml", cfg), port)  # env: os.environ, keys set above
    return daemon, cfg, copy, set(files)


def ledger_read(tmp: Path, cfg: dict[str, Any]) -> set[str]:
    """Keys the ledger records as read (what the store kept, read directly)."""
    async def go() -> set[str]:
        store = open_store(parse(tmp, cfg))
        await store.open()
        try:
            rows = await store.ledger_page("data", "copy", "", 10 * N)
        finally:
            await store.close()
        return {r.key for r in rows if r.read_at is not None}
    return asyncio.run(go())


def coverage(tmp: Path, cfg: dict[str, Any]) -> float:
    async def go() -> float:
        store = open_store(parse(tmp, cfg))
        await store.open()
        try:
            return (await store.load_state()).verify[("data", "copy")].coverage("read")
        finally:
            await store.close()
    return asyncio.run(go())


def replica_result(daemon: DaemonProcess) -> dict[str, Any] | None:
    doc = json.loads(daemon.get("/api/v1/status")[1])
    found = [r for r in doc["results"] if (r["asset"], r["validator"]) == ("data", "replica")]
    return found[0] if found else None


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_mid_run_keeps_coverage_and_reads_nothing_twice(
        tmp_path: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    daemon, cfg, copy, keys = make_daemon(tmp_path, moto, proxy, monkeypatch)
    daemon.start(timeout=60)
    try:
        daemon.wait_for(lambda: len(copy_gets(proxy, copy)) >= STOP_AFTER, timeout=60, interval=0.02)
    finally:
        if how == "sigterm":
            assert daemon.stop(timeout=60) == 0, daemon.log()[-3000:]
        else:
            daemon.kill()
    settle(proxy)  # requests the stopped daemon sent are still queued at the proxy: let them land first
    first = copy_gets(proxy, copy)
    assert STOP_AFTER <= len(first) < N, len(first)  # stopped part-way
    assert len(set(first)) == len(first)  # and nothing read twice within the run
    recorded = ledger_read(tmp_path, cfg)
    assert recorded <= set(first)
    unproven = [k for k in first if k not in recorded]
    if how == "sigterm":
        # the cancelled run flushed on its way out: every completed read is kept; only the reads in flight at the
        # stop (the proxy answered, the run had not verified them yet) are not, and they are the last ones
        assert set(unproven) <= set(first[-IN_FLIGHT:]), (unproven, first[-IN_FLIGHT:])
    else:
        # a killed run loses at most its last batch: the reads since the last flush, a suffix of the run's reads,
        # at most FLUSH_ROWS objects and, reads taking at least GET_DELAY each, at most FLUSH_SECONDS of them
        batch = min(FLUSH_ROWS, int(FLUSH_SECONDS / GET_DELAY) + 2) + IN_FLIGHT
        assert set(unproven) <= set(first[-batch:]), "a lost read is older than the last batch"
        assert len(unproven) <= batch, (len(unproven), len(first))
        assert len(recorded) >= STOP_AFTER - int(FLUSH_SECONDS / GET_DELAY) - 2, "progress was kept"

    proxy.clear()
    proxy.get_delay = 0.0
    second = DaemonProcess(daemon.config, daemon.port, log_path=tmp_path / "second.log")
    second.start(timeout=60)
    try:
        result = second.wait_for(lambda: (r := replica_result(second)) and r["outcome"] != "cancelled" and r,
                                 timeout=120)
        assert result["outcome"] == "ok", result["findings"]
    finally:
        assert second.stop(timeout=60) == 0
    again = copy_gets(proxy, copy)
    assert len(set(again)) == len(again)
    assert not recorded & set(again), sorted(recorded & set(again))  # nothing proven is read again
    assert set(again) & set(first) <= set(unproven)  # only the unflushed reads are repeated
    assert recorded | set(again) == keys  # the rest is read: coverage completed
    assert coverage(tmp_path, cfg) == 1.0
