"""Clock jumps: what a stepped wall clock means for schedules, staleness and the latest outcome.

drwatch stamps results with the wall clock and compares them with the wall clock; there is no way (and no
need) to move the clock of this machine under a test. A jump is therefore made real where it shows: in the
stored history relative to "now". Results are written through drwatch's own store, then a real daemon starts:

* clock stepped **back** (NTP correction, VM restore): the stored last run lies in the future. The validator
  must still run soon after start (not after the size of the step), and its new result - here a real
  corruption, so ``failed`` - must be the latest outcome in /metrics, not hidden behind the future-stamped one;
  its last-run stamp replaces the future one (else a staleness alert would wait out the step).
* clock jumped **forward** (or the daemon was down that long): the stored result is older than its max age.
  Before anything runs the check is *unknown* (stale), never pass and never fail; the validator then runs
  soon after start and the rule passes again on fresh evidence. RPO and staleness are measured against the
  clock at evaluation time, so a forward jump can only turn evidence stale, never fabricate a failure.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import yaml

from drwatch.core.model import Outcome
from tests.faults.estate import flip_byte
from tests.support.helpers import (
    DaemonProcess,
    backdate,
    basic_config,
    free_port,
    metric_value,
    populate,
    run_cli,
    write_config,
)
from tests.support.s3helpers import run

DAY = 86400.0


def estate(tmp: Path) -> tuple[Path, int]:
    populate(tmp, copies=2)
    for loc in ("prod", "copy1", "copy2"):
        # Written before the run stored ten days back (else its files lie in that run's future: time_in_future).
        backdate(tmp / loc, 11 * DAY)
    port = free_port()
    cfg = basic_config(tmp, copies=2, http_port=port, rpo="30d",
                       validator={"kind": "replica", "schedule": {"every": "1h", "jitter": "0s"}})
    # One disk here: off-site cannot pass honestly (same_failure_domain); copies are what this test is about.
    cfg["compliance"] = {"copies": 3, "media": 1, "offsite": 0, "immutable": 0}
    cfg["limits"] = {"sandbox_dir": str(tmp / "sandboxes")}
    return write_config(tmp / "drwatch.yaml", cfg), port


def store_result(tmp: Path, path: Path, offset: float) -> None:
    """One real run of the validator whose clock is ``offset`` seconds off (the run as it was recorded
    before the jump), stored through drwatch's own runner and store."""
    cfg = yaml.safe_load(path.read_text())
    result, _ = asyncio.run(run(tmp, cfg, clock=lambda: time.time() + offset))
    assert result.outcome == Outcome.OK, result.findings


def test_clock_stepped_back_does_not_pause_checks_or_hide_results(tmp_path: Path) -> None:
    """The stored last run is a day ahead of the clock: the validator still runs within seconds of start,
    and the real corruption it finds is the latest outcome in /metrics."""
    path, port = estate(tmp_path)
    store_result(tmp_path, path, DAY)
    flip_byte(tmp_path / "copy1" / "data" / "file-0004.bin")
    daemon = DaemonProcess(path, port)
    started = time.monotonic()
    try:
        daemon.start()
        def outcome() -> float | None:
            return metric_value(daemon.metrics(), "drwatch_validator_outcome", asset="data", validator="replica",
                                outcome="failed")
        daemon.wait_for(lambda: outcome() == 1, timeout=40)
        assert time.monotonic() - started < 40
        status = json.loads(daemon.get("/api/v1/status")[1])
        [res] = [r for r in status["results"] if r["validator"] == "replica"]
        assert res["outcome"] == "failed" and "content_mismatch" in {f["code"] for f in res["findings"]}
        # The future-stamped last run gave way to the real one: staleness alerts count from it again.
        last = metric_value(daemon.metrics(), "drwatch_validator_last_run_timestamp_seconds", asset="data",
                            validator="replica")
        assert last is not None and abs(last - time.time()) < 60, last - time.time()
    finally:
        assert daemon.stop() == 0


def test_clock_jumped_forward_turns_evidence_stale_then_fresh(tmp_path: Path) -> None:
    """The stored result is ten days old: before a run the rules it supports are unknown (never pass, never
    fail); the daemon runs the validator soon after start and the asset is compliant again."""
    path, port = estate(tmp_path)
    store_result(tmp_path, path, -10 * DAY)
    out = run_cli("status", "--config", str(path), "--output", "json")
    doc = json.loads(out.stdout)
    rules = {name: r["state"] for name, r in doc["assets"]["data"]["rules"].items()}
    assert rules["restore_errors"] == "unknown", rules
    assert "fail" not in rules.values() and doc["assets"]["data"]["compliant"] is False
    daemon = DaemonProcess(path, port)
    try:
        daemon.start()
        daemon.wait_for(lambda: metric_value(daemon.metrics(), "drwatch_asset_compliant", asset="data") == 1,
                        timeout=40)
        text = daemon.metrics()
        assert metric_value(text, "drwatch_asset_rule_state", asset="data", rule="restore_errors",
                            state="pass") == 1
        last = metric_value(text, "drwatch_validator_last_run_timestamp_seconds", asset="data", validator="replica")
        assert last is not None and abs(last - time.time()) < 60
    finally:
        assert daemon.stop() == 0

