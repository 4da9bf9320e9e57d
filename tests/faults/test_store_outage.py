"""The store unavailable: the PostgreSQL store is stopped under a running daemon, then comes back.

While it is down the daemon keeps running validators and serving /metrics; results wait in memory
(``drwatch_store_pending_results`` grows, ``drwatch_store_write_errors`` counts the failed writes) and are not
visible in metrics (a result is durable before it is visible). When the store returns, every result is written:
the run ids the daemon logged as finished are exactly the run ids stored, each once, and the persisted counters
agree with the rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, free_port, metric_value, sample_files, write_config, write_tree
from tests.pgserver import PostgresServer, postgres_server

ASSETS = ("a0", "a1", "a2")


@pytest.fixture
def store_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of its own (the test stops it), holding drwatch's store."""
    with postgres_server() as server:
        server.create_database("drwatch_store")
        yield server


def total_runs(text: str) -> float:
    return sum(metric_value(text, "drwatch_validator_runs_total", asset=a, validator="replica", outcome="ok") or 0.0
               for a in ASSETS)


def process_figure(daemon: DaemonProcess, name: str) -> float:
    value = metric_value(daemon.metrics(), name)
    assert value is not None, name
    return value


@pytest.mark.slow
def test_results_wait_in_memory_while_the_store_is_down_and_nothing_is_lost_or_doubled(
        tmp_path: Path, store_server: PostgresServer) -> None:
    """Stop the store mid-run for ~10 s of validator runs every second, start it again: all results arrive,
    exactly once; meanwhile the daemon stays up and metrics show only durable results."""
    files = sample_files(4, 1024)
    locations: dict[str, Any] = {
        "prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "dc-a"},
        "dr": {"kind": "filesystem", "path": str(tmp_path / "dr"), "site": "dc-b"}}
    for root in ("prod", "dr"):
        for a in ASSETS:
            write_tree(tmp_path / root / a, files)
    port = free_port()
    cfg = write_config(tmp_path / "drwatch.yaml", {
        "store": {"postgres": {"dsn_env": "DRW_OUTAGE_DSN", "connect_timeout": "2s"}},
        "http": {"listen": f"127.0.0.1:{port}"},
        "logging": {"level": "info", "format": "json"},
        "limits": {"sandbox_dir": str(tmp_path / "sandboxes")},
        "locations": locations,
        "assets": {a: {"rpo": "7d", "production": {"location": "prod", "prefix": a},
                       "copies": [{"location": "dr", "prefix": a}],
                       "validators": [{"kind": "replica", "schedule": {"every": "1s", "jitter": "0s"}}]}
                   for a in ASSETS},
    })
    daemon = DaemonProcess(cfg, port, env={"DRW_OUTAGE_DSN": store_server.dsn("drwatch_store")})
    try:
        daemon.start()
        daemon.wait_for(lambda: total_runs(daemon.metrics()) >= 2 * len(ASSETS), timeout=60)
        store_server.stop("immediate")
        daemon.wait_for(lambda: process_figure(daemon, "drwatch_store_pending_results") >= 1, timeout=60)
        visible = total_runs(daemon.metrics())
        daemon.wait_for(lambda: process_figure(daemon, "drwatch_store_pending_results") >= 10, timeout=90)
        text = daemon.metrics()
        assert total_runs(text) == visible, "a result became visible before it was durable"
        assert (metric_value(text, "drwatch_store_write_errors_total") or 0) >= 1
        store_server.start()
        daemon.wait_for(lambda: process_figure(daemon, "drwatch_store_pending_results") == 0, timeout=90)
        assert total_runs(daemon.metrics()) > visible
    finally:
        code = daemon.stop(timeout=60)
    assert code == 0
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    finished = [line["run_id"] for line in lines if line.get("event") == "run_finished"]
    assert len(finished) >= 2 * len(ASSETS) + 10  # before the outage, and queued during it
    stored = store_server.psql("SELECT run_id FROM results ORDER BY id", "drwatch_store").split()
    assert len(stored) == len(set(stored)), "a result was written twice"
    assert sorted(stored) == sorted(finished), "a finished run is missing from the store (or one appeared)"
    per_outcome = store_server.psql("SELECT asset, outcome, count(*) FROM results GROUP BY 1, 2 ORDER BY 1, 2",
                                    "drwatch_store")
    counted = store_server.psql("SELECT asset, outcome, count FROM run_counts WHERE count > 0 ORDER BY 1, 2",
                                "drwatch_store")
    assert per_outcome == counted
