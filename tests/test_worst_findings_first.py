"""Views that show a few of a run's findings show the worst first: the `check`/`status` table (8 per run), the
status page (3) and the report (3). A replica run over nine copies that all sit on production's disk (nine
``same_failure_domain`` warnings, found first) of which the last lacks a file (the one ``missing_file``, the
reason the run failed) showed only warnings and "... 2 more findings" before.

Real estate on disk, `drwatch check` as a subprocess; the page rendered from that same status document.
"""

from __future__ import annotations

import json
from pathlib import Path

from drwatch.reporting.page import render
from tests.support.helpers import run_cli, write_config, write_tree

COPIES = 9


def test_the_reason_a_run_failed_is_shown_before_its_warnings(tmp_path: Path) -> None:
    files = {"a.bin": b"a", "b.bin": b"b"}
    write_tree(tmp_path / "prod", files)
    for i in range(1, COPIES + 1):
        write_tree(tmp_path / f"c{i}", files if i < COPIES else {"a.bin": b"a"})  # the last lacks b.bin
    config = write_config(tmp_path / "drwatch.yaml", {
        "store": {"sqlite": str(tmp_path / "state.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "dc-a"},
                      **{f"c{i}": {"kind": "filesystem", "path": str(tmp_path / f"c{i}"), "site": f"s{i}"}
                         for i in range(1, COPIES + 1)}},
        "assets": {"app": {"rpo": "1d", "production": {"location": "prod"},
                           "copies": [{"location": f"c{i}"} for i in range(1, COPIES + 1)],
                           "validators": [{"kind": "replica"}]}},
    })
    table = run_cli("check", "--config", str(config))
    assert table.returncode == 1, table.stderr
    shown = table.stdout.split("Checks that did not pass:\n", 1)[1].splitlines()
    assert shown[0] == "  app/replica: failed"
    assert shown[1] == f"      critical missing_file [c{COPIES}:b.bin]: object of the recovery point is missing"
    assert [line.split()[1] for line in shown[2:9]] == ["same_failure_domain"] * 7
    assert shown[9] == "      ... 2 more findings (--output json lists all)"

    doc = json.loads(run_cli("status", "--config", str(config), "--output", "json").stdout)
    [res] = doc["results"]
    codes = [f["code"] for f in res["findings"]]
    assert codes.index("missing_file") == COPIES, "stored in the order found: the views sort, not the store"
    page = render(doc, "test", {})
    row = page.split("Checks that did not pass", 1)[1]
    assert "missing_file: object of the recovery point is missing; same_failure_domain" in row
