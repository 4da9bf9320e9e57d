"""Paging people can live with: `drwatch ack` (stored in both backends, exported, shown) and restore_errors
cleared by a repair that is proven (a later ok) - against real files, real stores and the real command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from drwatch.config.model import parse_config
from drwatch.core.model import Ack
from drwatch.metrics.collector import ProcessState, make_registry, render
from drwatch.state.snapshot import load_snapshot
from drwatch.store import open_store
from tests.support.helpers import basic_config, populate, run_cli, write_config

T0 = 1_760_000_000.0


async def test_acks_are_stored_newest_per_validator(store_config: dict[str, Any]) -> None:
    """Both backends keep every ack and hand back the newest per (asset, validator); revision() moves."""
    cfg = parse_config(yaml.safe_dump({"store": store_config}))
    store = open_store(cfg)
    await store.open()
    try:
        before = await store.revision()
        await store.add_ack(Ack("data", "replica", "alice", "first", T0))
        await store.add_ack(Ack("data", "replica", "bob", "re-synced copy1, INC-7", T0 + 60))
        await store.add_ack(Ack("data", "deep", "carol", "dump deleted", T0 + 1))
        acks = (await store.load_state()).acks
        assert await store.revision() != before
    finally:
        await store.close()
    assert acks == {("data", "replica"): Ack("data", "replica", "bob", "re-synced copy1, INC-7", T0 + 60),
                    ("data", "deep"): Ack("data", "deep", "carol", "dump deleted", T0 + 1)}


def test_ack_clears_a_failure_not_proven_fixed_and_is_shown_and_exported(tmp_path: Path) -> None:
    """A corrupted copy fails; then its disk goes away (error: the repair is not proven) and restore_errors
    keeps failing for the window. `drwatch ack` with who and why clears that failure: status no longer
    fails the rule (exit 2: the latest run still proves nothing), shows the ack, and /metrics exports its
    time with asset/validator labels only (who and why stay out of labels)."""
    files = populate(tmp_path)
    victim = tmp_path / "copy1" / "data" / sorted(files)[0]
    victim.write_bytes(b"\0" * victim.stat().st_size)
    cfg = basic_config(tmp_path)
    cfg["compliance"] = {"media": 1, "immutable": 0, "offsite": 0}  # the copies share production's disk here
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    assert run_cli("check", "--config", str(path)).returncode == 1
    (tmp_path / "copy1").rename(tmp_path / "copy1-away")
    assert run_cli("check", "--config", str(path)).returncode == 1
    doc = json.loads(run_cli("status", "--config", str(path), "--output", "json").stdout)
    assert doc["assets"]["data"]["rules"]["restore_errors"]["state"] == "fail"

    assert run_cli("ack", "--config", str(path), "--asset", "data", "--validator", "nope", "--by", "a",
                   "--reason", "b").returncode == 78
    out = run_cli("ack", "--config", str(path), "--asset", "data", "--by", "alice",
                  "--reason", "copy1 replaced, INC-7")
    assert out.returncode == 0, out.stderr
    status = run_cli("status", "--config", str(path), "--output", "json")
    assert status.returncode == 2
    doc = json.loads(status.stdout)
    rule = doc["assets"]["data"]["rules"]["restore_errors"]
    assert rule["state"] == "unknown"
    assert "acknowledged by alice: copy1 replaced, INC-7" in rule["detail"]
    assert [(a["asset"], a["validator"], a["by"]) for a in doc["acks"]] == [("data", "replica", "alice")]
    assert "Acknowledged (drwatch ack):" in run_cli("status", "--config", str(path)).stdout

    import asyncio

    async def scrape() -> str:
        snap = await load_snapshot(parse_config(path.read_text(), source=str(path)))
        return render(make_registry(lambda: snap, ProcessState(0.0))).decode()

    lines = [line for line in asyncio.run(scrape()).splitlines()
             if line.startswith("drwatch_validator_ack_timestamp_seconds{")]
    assert len(lines) == 1
    assert lines[0].startswith('drwatch_validator_ack_timestamp_seconds{asset="data",validator="replica"} ')
    assert "alice" not in lines[0]

    # A new failure after the ack counts again.
    (tmp_path / "copy1-away").rename(tmp_path / "copy1")
    assert run_cli("check", "--config", str(path)).returncode == 1


def test_repaired_backup_passes_at_once(tmp_path: Path) -> None:
    """A corrupted copy fails; once repaired, the next check is ok and restore_errors passes at once (no
    waiting out the 7-day window); the failure stays visible in the rule's detail."""
    files = populate(tmp_path)
    victim = tmp_path / "copy1" / "data" / sorted(files)[0]
    victim.write_bytes(b"\0" * victim.stat().st_size)
    cfg = basic_config(tmp_path)
    cfg["compliance"] = {"media": 1, "immutable": 0, "offsite": 0}  # the copies share production's disk here
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    assert run_cli("check", "--config", str(path)).returncode == 1
    victim.write_bytes(files[sorted(files)[0]])
    out = run_cli("check", "--config", str(path), "--output", "json")
    assert out.returncode == 0, out.stdout
    rule = json.loads(out.stdout)["assets"]["data"]["rules"]["restore_errors"]
    assert rule["state"] == "pass"
    assert "history: replica: failed" in rule["detail"] and "ok since" in rule["detail"]


def test_running_daemon_sees_an_ack_written_by_another_process(tmp_path: Path) -> None:
    """`drwatch ack` from a shell changes the running daemon's /metrics without a restart (the store's
    revision counts acks): the ack's time appears for the validator."""
    from tests.support.helpers import DaemonProcess, free_port, metric_value

    populate(tmp_path)
    port = free_port()
    cfg = basic_config(tmp_path, http_port=port, every="1h")
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    daemon = DaemonProcess(path, port)
    daemon.start()
    try:
        def acked() -> float | None:
            return metric_value(daemon.metrics(), "drwatch_validator_ack_timestamp_seconds", asset="data",
                                validator="replica")

        assert acked() is None
        assert run_cli("ack", "--config", str(path), "--asset", "data", "--by", "bob",
                       "--reason", "drill").returncode == 0
        daemon.wait_for(lambda: acked() is not None, timeout=25)
    finally:
        daemon.stop()
