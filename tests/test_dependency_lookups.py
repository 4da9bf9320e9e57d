"""Dependency probes against a real resolver that stopped answering (tests/support/hungdns.py: a name server on
loopback, in a private network and mount namespace, that reads every query and never replies).

``getaddrinfo`` cannot be interrupted: a lookup holds its thread for the resolver's whole timeout (60 s there).
Run in the event loop's default executor (as asyncio does), a few dead names held every thread drwatch's file
listings and sandbox work also use. The probes' lookups now run in threads of their own: the default executor
answers at once after probing six dead names, twice; a name already being looked up is joined, not asked again,
so the second run adds no lookup; the names beyond the lookup threads are "not looked up" (could not check:
``error``), never reported down; the dead names are down (no answer within the timeout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_a_hung_resolver_holds_neither_the_default_executor_nor_more_than_the_lookup_threads(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("unshare (util-linux) and ip (iproute2) are needed: scripts/test.sh installs them")
    out = tmp_path / "seen.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "daemon"), str(ROOT)])}
    proc = subprocess.run(["unshare", "--map-root-user", "--mount", "--net", sys.executable, "-m",
                           "tests.support.hungdns", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    seen = json.loads(out.read_text())
    first, second = seen["runs"]
    for run in (first, second):
        assert run["default_executor_seconds"] is not None and run["default_executor_seconds"] < 1.0, run
        assert run["seconds"] < 10, run  # each probe within its 1 s timeout, not the resolver's 60 s
        assert run["lookups_waiting"] == 4, run  # the lookup threads, each still waiting on one dead name
        codes = {subject: code for _sev, code, subject, _msg in run["findings"] if subject}
        down = {s for s, c in codes.items() if c == "dependency_unreachable"}
        not_checked = {s for s, c in codes.items() if c == "dependency_not_checked"}
        assert len(down) == 4 and len(not_checked) == 3, run["findings"]  # 4 dead names; 2 more + registry refused
        assert run["outcome"] == "failed", run
        assert all("not looked up" in m for _sev, c, _s, m in run["findings"] if c == "dependency_not_checked")
    assert seen["lookup_threads"] == 4
