"""Start-up of `drwatch check`: what a check of one filesystem asset imports (a guard independent of timing).

The heavy clients (botocore/aioboto3, asyncpg, aiohttp, cryptography, pyarrow/numpy, APScheduler's
scheduler, prometheus_client) cost most of drwatch's start-up and none of them is needed to compare two
directories: they are imported where they are used, on first use. benchmarks/startup_bench.py times it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

from tests.support.helpers import basic_config, populate, write_config

# Top-level packages `check` of a filesystem asset must not import. The first group are drwatch's own
# dependencies (always installed); the second are extras, guarded where they are installed.
DENIED = ("botocore", "aioboto3", "aiobotocore", "boto3", "asyncpg", "aiohttp", "cryptography", "apscheduler",
          "prometheus_client")
# pygments: what structlog's optional rich tracebacks load (drwatch.core.logs imports structlog without rich;
# the attempt itself shows in -X importtime, so rich is not listed).
DENIED_EXTRAS = ("numpy", "pyarrow", "torch", "safetensors", "pygments")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")


def _imported(stderr: str) -> set[str]:
    """Modules named by ``-X importtime`` (one line per module import the interpreter performed)."""
    return {m.group(1) for line in stderr.splitlines() if (m := _IMPORT_LINE.match(line))}


def test_check_of_a_filesystem_asset_imports_no_heavy_client(tmp_path: Path) -> None:
    """A real `drwatch check` of one filesystem asset (replica validator, two copies) proves the copies (exit 0,
    outcome ok) without importing any deny-listed package: a module-level import of one of them anywhere on
    that path (config, validators, storage, runner, report) fails this test."""
    populate(tmp_path)
    cfg = basic_config(tmp_path)
    cfg["compliance"] = {"media": 1, "immutable": 0, "offsite": 0}
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "drwatch", "check", "--config", str(path),
                           "--output", "json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    [result] = json.loads(done.stdout)["results"]
    assert result["outcome"] == "ok"
    modules = _imported(done.stderr)
    # The parse sees what the check did import (the guard below is not vacuous).
    expected = {"drwatch.cli.main", "drwatch.config.model", "drwatch.validators.copies.replica"}
    assert expected | {"drwatch.storage.filesystem", "pydantic", "structlog"} <= modules
    installed = [name for name in DENIED_EXTRAS if importlib.util.find_spec(name) is not None]
    for name in DENIED:
        assert importlib.util.find_spec(name) is not None, f"{name} is a dependency of drwatch"
    denied = set(DENIED) | set(installed)
    offenders = sorted(m for m in modules if m.split(".")[0] in denied)
    assert not offenders, f"`drwatch check` of a filesystem asset imported {offenders[:20]}"
