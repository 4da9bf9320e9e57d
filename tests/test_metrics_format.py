"""The /metrics exposition of a real `drwatch run` with ok, failed and error results: promtool-clean, bounded
labels, and ingested by a real Prometheus."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import (
    DaemonProcess,
    PrometheusServer,
    basic_config,
    free_port,
    metric_value,
    populate,
    sample_files,
    write_config,
    write_tree,
)

ASSETS = {"data": "ok", "bad": "failed", "err": "error"}
LABEL_NAMES = {"asset", "validator", "kind", "outcome", "copy", "location", "region", "provider", "media", "rule",
               "state", "le", "version"}


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon whose latest results are: data ok, bad failed (a copy misses files, another differs),
    err error (its production location is not mounted)."""
    tmp = tmp_path_factory.mktemp("estate")
    populate(tmp)
    files = sample_files(5, seed=3)
    write_tree(tmp / "prod" / "bad", files)
    write_tree(tmp / "copy1" / "bad", dict(list(files.items())[:3]))
    write_tree(tmp / "copy2" / "bad", {k: b"x" + v[1:] for k, v in files.items()})
    port = free_port()
    validator = {"kind": "replica", "schedule": {"every": "1h", "jitter": "500ms"}}
    cfg = basic_config(tmp, http_port=port, validator=validator)
    cfg["locations"]["unmounted"] = {"kind": "filesystem", "path": str(tmp / "not-mounted")}
    cfg["assets"]["bad"] = {
        "rpo": "7d", "production": {"location": "prod", "prefix": "bad"},
        "copies": [{"location": "copy1", "prefix": "bad"}, {"location": "copy2", "prefix": "bad"}],
        "validators": [validator],
    }
    cfg["assets"]["err"] = {
        "rpo": "7d", "production": {"location": "unmounted", "prefix": "x"},
        "copies": [{"location": "copy1", "prefix": "x"}], "validators": [validator],
    }
    daemon = DaemonProcess(write_config(tmp / "drwatch.yaml", cfg), port)
    daemon.start()
    try:
        for asset, outcome in ASSETS.items():
            daemon.wait_for(lambda a=asset, o=outcome: metric_value(
                daemon.metrics(), "drwatch_validator_outcome", asset=a, outcome=o) == 1)
        yield daemon
    finally:
        daemon.stop()


def test_promtool_check_metrics_reports_no_problem(estate: DaemonProcess) -> None:
    """`promtool check metrics` on a real scrape (ok, failed and error outcomes present) prints nothing and
    exits 0."""
    text = estate.metrics()
    for asset, outcome in ASSETS.items():
        assert metric_value(text, "drwatch_validator_outcome", asset=asset, outcome=outcome) == 1
    assert metric_value(text, "drwatch_asset_rule_state", asset="bad", rule="copies", state="fail") == 1
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=30, check=False)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_label_values_are_bounded(estate: DaemonProcess) -> None:
    """Labels come from a fixed set of names; no label value is a path (contains '/') or carries the text
    of a finding (message or subject)."""
    text = estate.metrics()
    status = json.loads(estate.get("/api/v1/status")[1])
    finding_texts = {f[key] for r in status["results"] for f in r["findings"] for key in ("message", "subject")
                     if f[key]}
    assert any("/" in t for t in finding_texts)  # the failed run names files: the check below is not empty
    # A finding about a whole copy or asset names it (same_failure_domain: "copy1"): configured names are bounded.
    configured = set(status["assets"]) | {c["copy"] for a in status["assets"].values() for c in a["copies"]}
    finding_texts -= configured
    seen = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= LABEL_NAMES, sample
            for name, value in sample.labels.items():
                seen += 1
                assert "/" not in value, (sample.name, name, value)
                assert value not in finding_texts, (sample.name, name, value)
                assert len(value) <= 64, (sample.name, name, value)
    assert seen > 100


def test_prometheus_ingests_drwatch_metrics(estate: DaemonProcess, tmp_path: Path) -> None:
    """A real Prometheus scraping the daemon every second stores drwatch_validator_outcome,
    drwatch_asset_rule_state and drwatch_validator_duration_seconds_bucket series."""
    prometheus = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{estate.port}"])
    try:
        prometheus.start()
        failed = prometheus.wait_query('drwatch_validator_outcome{asset="bad",outcome="failed"} == 1')
        assert failed[0]["metric"]["validator"] == "replica"
        rules = prometheus.wait_query('drwatch_asset_rule_state{asset="data"} == 1')
        assert {r["metric"]["rule"] for r in rules} == {"copies", "media", "offsite", "immutable", "restore_errors"}
        buckets = prometheus.wait_query('drwatch_validator_duration_seconds_bucket{le="+Inf"}')
        assert {r["metric"]["asset"] for r in buckets} == set(ASSETS)
        assert all(float(r["value"][1]) >= 1 for r in buckets)
        up = prometheus.wait_query('up{job="drwatch"}')
        assert up[0]["value"][1] == "1"
    finally:
        prometheus.stop()
