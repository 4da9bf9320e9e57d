"""The /metrics scale benchmark in its short form (benchmarks/metrics_scale.py; figures at 1k-10k assets in
benchmarks/README.md).

A real daemon with 300 tiny filesystem assets whose validators run every few seconds, scraped by two scrapers
with gzip while /-/healthy is polled: every scrape answers, the series budget per asset holds (56 for one
replica validator with production and one copy), gzip is what the scrapers get, and the daemon stops cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import REPO


@pytest.mark.slow
def test_short_metrics_scale_run(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "metrics_scale.py"), "--assets", "300", "--duration", "10",
         "--every", "3s", "--jitter", "1s", "--scrape-interval", "0.5", "--warmup", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["exit_code"] == 0 and not result["errors"]
    assert result["runs_during"] >= 100  # the validators kept running while it was scraped
    assert result["scrapes"] >= 20 and result["healthy_polls"] >= 50
    # The budget: duration buckets are opt-in; 51 + 5 of the projected restore time (docs/metrics.md).
    assert result["series_per_asset"] <= 56.1, result
    assert result["body_gzip_mib"] < result["body_mib"] / 5
