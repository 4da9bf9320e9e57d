"""Restart persistence with a real `drwatch run` process: /metrics is a projection of the store, so a
SIGKILL and a restart change no series that reflects past results, and the schedule resumes from the
stored last runs instead of starting over."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from drwatch.config.model import Config, parse_config
from drwatch.core.model import Outcome, Result
from drwatch.store import open_store
from tests.support.helpers import DaemonProcess, basic_config, free_port, metric_value, populate, write_config

PROCESS_SERIES = frozenset({"drwatch_start_time_seconds", "drwatch_config_last_reload_success_timestamp_seconds",
                            *(f"drwatch_event_loop_lag_seconds{s}" for s in ("_bucket", "_sum", "_count"))})
Sample = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[Sample, float]:
    """Every sample of an exposition, keyed by name and sorted labels, minus process-specific series."""
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in PROCESS_SERIES:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def daemon_env(store_config: dict[str, Any]) -> dict[str, str]:
    """For PostgreSQL, the DSN travels to the daemon in the env var the config names."""
    if "postgres" in store_config:
        name = store_config["postgres"]["dsn_env"]
        return {name: os.environ[name]}
    return {}


def estate(tmp_path: Path, store_config: dict[str, Any], port: int, validators: list[dict[str, Any]]) -> Path:
    cfg = basic_config(tmp_path, store=store_config, http_port=port)
    cfg["assets"]["data"]["validators"] = validators
    return write_config(tmp_path / "drwatch.yaml", cfg)


def runs(text: str, validator: str) -> float:
    return sum(metric_value(text, "drwatch_validator_runs_total", asset="data", validator=validator, outcome=o)
               or 0.0 for o in ("ok", "failed", "error", "timeout", "cancelled"))


def metrics_once(daemon: DaemonProcess, **counts: float) -> str | None:
    """The exposition once each named validator has at least that many runs, else None (for wait_for)."""
    text = daemon.metrics()
    return text if all(runs(text, v) >= n for v, n in counts.items()) else None


def test_metrics_identical_after_sigkill_and_restart(store_config: dict[str, Any], tmp_path: Path) -> None:
    """After kill -9 and a restart, every sample of /metrics except the process's own start/reload times has
    the same name, labels and value as before, and a validator that ran recently is not run again."""
    populate(tmp_path)
    flip_byte(tmp_path / "copy2" / "data" / "file-0000.bin")  # same size, different content
    port = free_port()
    hourly = {"every": "1h", "jitter": "1s"}
    config = estate(tmp_path, store_config, port, [
        {"kind": "replica", "name": "intact", "copies": ["copy1"], "schedule": hourly},
        {"kind": "replica", "name": "corrupt", "copies": ["copy2"], "schedule": hourly},
    ])
    env = daemon_env(store_config)

    first = DaemonProcess(config, port, env=env)
    first.start()
    try:
        text = first.wait_for(lambda: metrics_once(first, intact=1, corrupt=1))
        time.sleep(0.3)
        text = first.metrics()  # settled: both results recorded and nothing else running
        before = samples(text)
    finally:
        first.kill()

    # What the comparison covers: the results of both validators are really there.
    names = {name for name, _ in before}
    for name in ("drwatch_validator_runs_total", "drwatch_validator_last_run_timestamp_seconds",
                 "drwatch_validator_last_success_timestamp_seconds",
                 "drwatch_validator_last_failure_timestamp_seconds", "drwatch_validator_outcome",
                 "drwatch_validator_duration_seconds_bucket", "drwatch_validator_duration_seconds_sum",
                 "drwatch_asset_rule_state", "drwatch_copy_objects", "drwatch_copy_verified",
                 "drwatch_asset_recovery_point_timestamp_seconds"):
        assert name in names, name
    assert metric_value(text, "drwatch_validator_runs_total", validator="intact", outcome="ok") == 1
    assert metric_value(text, "drwatch_validator_runs_total", validator="corrupt", outcome="failed") == 1
    assert metric_value(text, "drwatch_validator_outcome", validator="corrupt", outcome="failed") == 1
    assert metric_value(text, "drwatch_copy_objects", asset="data", copy="copy2", state="mismatch") == 1
    assert metric_value(text, "drwatch_copy_objects", asset="data", copy="copy1", state="mismatch") == 0
    assert metric_value(text, "drwatch_asset_rule_state", asset="data", rule="copies", state="fail") == 1

    second = DaemonProcess(config, port, env=env)
    second.start()
    try:
        assert samples(second.metrics()) == before
        time.sleep(2.5)  # past the start-up spread (the 1s jitter): an overdue validator would have run
        after = second.metrics()
        assert runs(after, "intact") == runs(after, "corrupt") == 1
        assert samples(after) == before
        assert second.stop() == 0
    finally:
        if second.proc is not None and second.proc.poll() is None:
            second.kill()


async def _seed(cfg: Config, results: list[Result]) -> None:
    store = open_store(cfg)
    await store.open()
    try:
        for r in results:
            await store.record(r)
    finally:
        await store.close()


def test_overdue_validator_runs_soon_after_start_recent_one_waits(store_config: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    """On start, a validator whose stored last run is older than its interval runs within its jitter, while
    one whose last run is recent keeps its stored result until its interval has passed. A run cancelled by
    the restart (SIGTERM mid-run) is not a run: that validator also runs soon, not a whole period later."""
    populate(tmp_path)
    port = free_port()
    hourly = {"every": "1h", "jitter": "1s"}
    config = estate(tmp_path, store_config, port, [
        {"kind": "replica", "name": "recent", "schedule": hourly},
        {"kind": "replica", "name": "overdue", "schedule": hourly},
        {"kind": "replica", "name": "interrupted", "schedule": hourly},
    ])
    now = time.time()
    recent = Result("seed-recent", "data", "recent", "replica", Outcome.OK, now - 62.0, now - 60.0)
    overdue = Result("seed-overdue", "data", "overdue", "replica", Outcome.OK, now - 7202.0, now - 7200.0)
    before = Result("seed-before", "data", "interrupted", "replica", Outcome.OK, now - 7202.0, now - 7200.0)
    cut = Result("seed-cut", "data", "interrupted", "replica", Outcome.CANCELLED, now - 90.0, now - 30.0)
    asyncio.run(_seed(parse_config(config.read_text(), str(config)), [recent, overdue, before, cut]))

    daemon = DaemonProcess(config, port, env=daemon_env(store_config))
    started = time.time()
    daemon.start()
    try:
        text = daemon.wait_for(lambda: metrics_once(daemon, overdue=2, interrupted=3), timeout=15)
        last = metric_value(text, "drwatch_validator_last_run_timestamp_seconds", validator="overdue")
        assert last is not None and last >= started
        time.sleep(1.5)  # the recent one would have run by now had the daemon ignored its stored result
        text = daemon.metrics()
        assert runs(text, "recent") == 1
        assert metric_value(text, "drwatch_validator_last_run_timestamp_seconds", validator="recent") == \
            recent.finished_at
        assert runs(text, "overdue") == 2
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
