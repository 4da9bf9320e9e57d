"""The soak benchmark in its short form (benchmarks/soak.py; the 30-minute figures are in benchmarks/README.md).

A real daemon with 50 validators every 5 s against filesystem copies and a moto S3 server for 45 s: it must
keep every validator ``ok``, keep RSS and open file descriptors flat after warm-up, and stop cleanly (exit 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import REPO


@pytest.mark.slow
def test_short_soak_is_flat(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--duration", "45", "--warmup", "15",
         "--sample", "3", "--fs", "40", "--s3", "10", "--every", "5s", "--jitter", "2s", "--json", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["verdict"] == "flat" and summary["exit_code"] == 0
    assert summary["outcomes_end"] == {"ok": 50}
    assert summary["runs"] >= 100  # 50 validators every 5 s for ~45 s: the daemon really worked
    assert summary["tasks"] is not None  # the asyncio task count is reported by /api/v1/status
