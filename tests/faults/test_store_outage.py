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

from tests.support.helpers import DaemonProcess, free_port, metric_value, sample_files, write_config, write_tree
from tests.support.pgserver import PostgresServer, postgres_server

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


def outage_daemon(tmp_path: Path, store_server: PostgresServer, **limits: Any) -> DaemonProcess:
    """A daemon on ``store_server`` checking three assets every second (not started)."""
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
        "limits": {"sandbox_dir": str(tmp_path / "sandboxes"), **limits},
        "locations": locations,
        "assets": {a: {"rpo": "7d", "production": {"location": "prod", "prefix": a},
                       "copies": [{"location": "dr", "prefix": a}],
                       "validators": [{"kind": "replica", "schedule": {"every": "1s", "jitter": "0s"}}]}
                   for a in ASSETS},
    })
    return DaemonProcess(cfg, port, env={"DRW_OUTAGE_DSN": store_server.dsn("drwatch_store")})


@pytest.mark.slow
def test_results_wait_in_memory_while_the_store_is_down_and_nothing_is_lost_or_doubled(
        tmp_path: Path, store_server: PostgresServer) -> None:
    """Stop the store mid-run for ~10 s of validator runs every second, start it again: all results arrive,
    exactly once; meanwhile the daemon stays up and metrics show only durable results."""
    daemon = outage_daemon(tmp_path, store_server)
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


@pytest.mark.slow
def test_a_full_memory_queue_drops_the_oldest_results_and_says_so(tmp_path: Path,
                                                                    store_server: PostgresServer) -> None:
    """With ``limits.pending_results: 4`` and the store down for longer than four results: the oldest waiting
    results are dropped (logged with their run ids, counted in drwatch_store_dropped_results_total), at most
    four wait, and when the store returns exactly the finished runs that were not dropped are stored, once."""
    daemon = outage_daemon(tmp_path, store_server, pending_results=4)
    try:
        daemon.start()
        daemon.wait_for(lambda: total_runs(daemon.metrics()) >= len(ASSETS), timeout=60)
        store_server.stop("immediate")
        daemon.wait_for(lambda: process_figure(daemon, "drwatch_store_dropped_results_total") >= 3, timeout=90)
        text = daemon.metrics()
        assert metric_value(text, "drwatch_store_pending_results") == 4
        store_server.start()
        daemon.wait_for(lambda: process_figure(daemon, "drwatch_store_pending_results") == 0, timeout=90)
        dropped_metric = process_figure(daemon, "drwatch_store_dropped_results_total")
    finally:
        code = daemon.stop(timeout=60)
    assert code == 0
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    finished = [line["run_id"] for line in lines if line.get("event") == "run_finished"]
    dropped = [line["run_id"] for line in lines if line.get("event") == "result_dropped_store_unavailable"]
    assert len(dropped) == dropped_metric >= 3
    stored = store_server.psql("SELECT run_id FROM results ORDER BY id", "drwatch_store").split()
    assert len(stored) == len(set(stored)), "a result was written twice"
    assert not set(stored) & set(dropped)
    assert sorted([*stored, *dropped]) == sorted(finished), "a finished run is neither stored nor reported dropped"
    # Oldest first: every dropped run finished before every run that waited and was then stored.
    order = {run_id: i for i, run_id in enumerate(finished)}
    waited = [r for r in stored if order[r] > min(order[d] for d in dropped)]
    assert max(order[d] for d in dropped) < min(order[r] for r in waited)
