"""``drwatch report`` on a tampered store says so itself: the JSON ``chain`` member, a banner in the HTML (seen in a
real headless Chromium), a warning on stderr and exit status 1, with the report still written. The tampering is
done for real on both backends (SQL on the store from another connection; the sqlite3 shell for one edit): a
result edited in place, a result deleted, two results swapped, the chain head row deleted, the newest result
removed (the chain truncated)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.chromium import browser, file_url
from tests.support.helpers import drwatch_cmd, run_cli
from tests.support.reportestate import FIXED
from tests.test_report import _estate, _verify
from tests.test_store import external_sql


def _report(cfg_path: Path, out: Path, fmt: str = "json") -> tuple[int, str, dict[str, Any]]:
    proc = run_cli("report", "-c", str(cfg_path), "--since", "30d", "--format", fmt, "--out", str(out))
    doc = json.loads(out.read_bytes()) if fmt == "json" and out.exists() else {}
    return proc.returncode, proc.stderr, doc


def _broken(cfg_path: Path, out: Path, kind: str) -> dict[str, Any]:
    code, err, doc = _report(cfg_path, out)
    assert code == 1, err
    assert "WARNING: the store's result chain is broken" in err and f"{kind}:" in err, err
    chain = doc["chain"]
    assert chain["checked"] is True and chain["intact"] is False, chain
    assert chain["problem_kinds"].get(kind, 0) >= 1, chain
    assert any(p["kind"] == kind for p in chain["problems"]), chain
    return doc


async def test_report_of_a_tampered_store_says_so(tmp_path: Path, store_config: dict[str, Any]) -> None:
    cfg_path = await _estate(tmp_path, store_config)
    code, err, doc = _report(cfg_path, tmp_path / "clean.json")
    assert code == 0, err
    assert doc["chain"]["intact"] is True and doc["chain"]["problems"] == []
    assert doc["chain"]["results"] == doc["evidence"]["chain_head"]["id"] > 200  # every stored result re-hashed
    drill = doc["assets"][FIXED]["drills"][0]

    # Edited in place: a drill's outcome rewritten (SQLite: by the sqlite3 shell).
    edit = f"UPDATE results SET outcome = 'ok' WHERE run_id = '{drill['run_id']}'"
    tamper = edit.replace("'ok'", "'failed'")
    if "sqlite" in store_config and shutil.which("sqlite3"):
        shell = await asyncio.create_subprocess_exec("sqlite3", store_config["sqlite"], tamper)
        assert await asyncio.wait_for(shell.wait(), 30) == 0
    else:
        await external_sql(store_config, tamper)
    edited = _broken(cfg_path, tmp_path / "edited.json", "edited")
    assert any(p["run_id"] == drill["run_id"] for p in edited["chain"]["problems"])
    # The report itself is still sound (its own digest), so verify-report finds the same edit.
    vcode, vout = _verify(cfg_path, tmp_path / "edited.json")
    assert vcode == 1 and "edited" in vout, vout
    await external_sql(store_config, edit)
    assert _report(cfg_path, tmp_path / "again.json")[0] == 0

    # Deleted: a result removed without a prune tombstone.
    rows = await external_sql(store_config, "SELECT id FROM results ORDER BY id")
    victim = rows[len(rows) // 2][0]
    await external_sql(store_config, f"DELETE FROM results WHERE id = {victim}")
    _broken(cfg_path, tmp_path / "deleted.json", "deleted")


async def test_reordered_and_truncated_chains(tmp_path: Path, store_config: dict[str, Any]) -> None:
    cfg_path = await _estate(tmp_path, store_config)
    rows = await external_sql(store_config, "SELECT id FROM results ORDER BY id")
    a, b = rows[40][0], rows[41][0]
    # Two stored results swap places (their ids), contents and digests untouched.
    for sql in (f"UPDATE results SET id = -1 WHERE id = {a}", f"UPDATE results SET id = {a} WHERE id = {b}",
                f"UPDATE results SET id = {b} WHERE id = -1"):
        await external_sql(store_config, sql)
    _broken(cfg_path, tmp_path / "reordered.json", "reordered")
    for sql in (f"UPDATE results SET id = -1 WHERE id = {a}", f"UPDATE results SET id = {a} WHERE id = {b}",
                f"UPDATE results SET id = {b} WHERE id = -1"):
        await external_sql(store_config, sql)
    assert _report(cfg_path, tmp_path / "restored.json")[0] == 0

    # The chain head row itself removed (result_chain emptied): the report is made, and says so.
    head = await external_sql(store_config, "SELECT last_id, head FROM result_chain")
    await external_sql(store_config, "DELETE FROM result_chain")
    doc = _broken(cfg_path, tmp_path / "headless.json", "head")
    assert "result_chain" in json.dumps(doc["chain"]["problems"]) and doc["evidence"]["chain_head"]["id"] == 0
    await external_sql(store_config, f"INSERT INTO result_chain (id, last_id, head) VALUES (1, {head[0][0]}, "
                                     f"'{head[0][1]}')")
    assert _report(cfg_path, tmp_path / "head-back.json")[0] == 0

    # Truncated: the newest result removed, the head still names it.
    await external_sql(store_config, "DELETE FROM results WHERE id = (SELECT MAX(id) FROM results)")
    doc = _broken(cfg_path, tmp_path / "truncated.json", "head")
    assert "newest results were deleted" in json.dumps(doc["chain"]["problems"])


async def test_html_report_of_a_tampered_store_shows_a_banner(tmp_path: Path) -> None:
    store = {"sqlite": str(tmp_path / "state.sqlite")}
    cfg_path = await _estate(tmp_path, store)
    code, err, _ = _report(cfg_path, tmp_path / "clean.html", "html")
    assert code == 0, err
    await external_sql(store, "UPDATE results SET findings = '[]' WHERE id = (SELECT MIN(id) FROM results "
                              "WHERE outcome = 'failed')")
    code, err, _ = _report(cfg_path, tmp_path / "tampered.html", "html")
    assert code == 1 and "chain is broken" in err, err
    async with browser() as chrome:
        clean = await chrome.render(file_url(tmp_path / "clean.html"))
        seen = await chrome.render(file_url(tmp_path / "tampered.html"))
    assert seen.console == [] and seen.requests == [file_url(tmp_path / "tampered.html")]
    assert "The store's result chain is broken" in seen.text
    assert "edited: store result id" in seen.text
    assert "The store's result chain is broken" not in clean.text
    assert "Result chain checked when this report was made" in clean.text
    # Written to stdout (-o -): the same warning and status, the report on stdout.
    proc = run_cli("report", "-c", str(cfg_path), "--since", "30d", "--format", "json", "--out", "-")
    assert proc.returncode == 1 and "chain is broken" in proc.stderr
    assert json.loads(proc.stdout)["chain"]["intact"] is False


@pytest.mark.parametrize("fmt", ["json", "html"])
async def test_a_store_gone_during_the_check_is_unavailable(tmp_path: Path, fmt: str) -> None:
    """A store whose results table cannot be read is exit 69 with the reason, not a report claiming a check."""
    store = {"sqlite": str(tmp_path / "state.sqlite")}
    cfg_path = await _estate(tmp_path, store)
    await external_sql(store, "DROP TABLE result_tombstones")
    code, err, _ = _report(cfg_path, tmp_path / f"r.{fmt}", fmt)
    assert code == 69 and "result_tombstones" in err, err
    assert not (tmp_path / f"r.{fmt}").exists()


async def test_reports_made_while_results_are_recorded_find_the_chain_intact(tmp_path: Path,
                                                                             store_config: dict[str, Any]) -> None:
    """No false alarm: results recorded (and pruned) by another writer while reports are made; every report's
    check reads one consistent snapshot of the chain."""
    from drwatch.config.model import load_config
    from drwatch.store import open_store
    from tests.support.reportestate import estate_history

    cfg_path = await _estate(tmp_path, store_config)
    store = open_store(load_config(str(cfg_path)))
    await store.open()
    more, _ = estate_history(time.time() + 40 * 86400.0, assets=5, results=400, seed=11)
    stop = asyncio.Event()
    recorded = 0

    async def writer() -> None:
        nonlocal recorded
        for res in more:
            if stop.is_set():
                return
            await store.record(res, "cfg0000hash2")
            recorded += 1
            if recorded % 50 == 0:
                await store.prune(time.time() - 20 * 86400.0)  # tombstones written while reports read
            await asyncio.sleep(0.005)

    task = asyncio.create_task(writer())
    try:
        for fmt in ("json", "html", "json"):
            proc = await asyncio.create_subprocess_exec(
                *drwatch_cmd("report", "-c", str(cfg_path), "--since", "30d", "--format", fmt, "--out",
                             str(tmp_path / f"live.{fmt}")), stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
    finally:
        stop.set()
        await task
        await store.close()
    assert recorded > 10  # the writer did write during the reports
    chain = json.loads((tmp_path / "live.json").read_bytes())["chain"]
    assert chain["intact"] and chain["pruned"] > 0, chain
