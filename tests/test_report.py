"""``drwatch report`` and ``drwatch verify-report`` over a real store (SQLite and a real PostgreSQL): a 30-day
history with a failure that was fixed, one still open, drills over the RTO and attestations; a report that
shows them; and tampering done for real (SQL on the store, bytes of the report file) that verify-report finds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from drwatch.config.model import load_config
from drwatch.store import open_store
from tests.support.helpers import run_cli
from tests.support.reportestate import FAILING, FIXED, estate_config, record_estate
from tests.test_store import external_sql

DAY = 86400.0


async def _estate(tmp_path: Path, store_config: dict[str, Any], **reports: Any) -> Path:
    cfg_path = tmp_path / "drwatch.yaml"
    raw = estate_config(tmp_path, assets=5, store=store_config)
    if reports:
        raw["reports"] = reports
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(str(cfg_path))
    store = open_store(cfg)
    await store.open()
    try:
        await record_estate(store, time.time(), "cfg0000hash1", assets=5, results=300)
    finally:
        await store.close()
    return cfg_path


def _report(cfg_path: Path, out: Path, fmt: str = "json", *extra: str) -> dict[str, Any]:
    proc = run_cli("report", "-c", str(cfg_path), "--since", "30d", "--format", fmt, "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_bytes()) if fmt == "json" else {}


def _verify(cfg_path: Path, report: Path, *extra: str) -> tuple[int, str]:
    proc = run_cli("verify-report", "-c", str(cfg_path), str(report), *extra)
    return proc.returncode, proc.stdout + proc.stderr


async def test_report_shows_the_history_and_verify_finds_tampering(tmp_path: Path,
                                                                   store_config: dict[str, Any]) -> None:
    cfg_path = await _estate(tmp_path, store_config)
    doc = _report(cfg_path, tmp_path / "report.json")
    assert doc["format"] == "drwatch-report" and doc["version"] == 1
    assert doc["summary"]["assets"] == 5 and doc["summary"]["results"] == len(doc["evidence"]["results"]) > 200
    failing, fixed = doc["assets"][FAILING], doc["assets"][FIXED]
    # The failing asset: not compliant at the end, with the reason the compliance table gives.
    assert failing["compliance"]["compliant_at_end"] is False
    assert "nas: latest check found it bad" in failing["compliance"]["reason_at_end"]
    assert failing["failures"][-1]["fixed_at"] is None and failing["failures"][-1]["codes"] == ["missing_file"]
    # The fixed one: a non-compliant interval in the middle, with its reason; the failure proven fixed.
    bad = [iv for iv in fixed["compliance"]["intervals"] if not iv["compliant"]]
    (episode,) = fixed["failures"]
    during = [iv for iv in bad if iv["start"] <= episode["first_seen"] < iv["end"]]
    assert during and "nas: latest check found it bad" in during[0]["reason"], bad
    assert 0.85 < fixed["compliance"]["share_compliant"] < 0.98
    assert fixed["compliance"]["compliant_at_end"] is True
    assert episode["fixed_at"] is not None and episode["seconds_to_fix"] > DAY and episode["failed_runs"] >= 3
    # Drills: restore time against the RTO, rows proven.
    drills = fixed["drills"]
    assert drills and all(d["rto_seconds"] == 3600 and d["rows_restored"] > 0 for d in drills)
    assert any(d["within_rto"] is True for d in drills)
    assert any(d["within_rto"] is False for a in doc["assets"].values() for d in a["drills"])
    # Every verification run is listed with what it proved; attestations; the configuration hash in force.
    assert all(v["objects_proven"] > 0 for v in fixed["verifications"] if v["outcome"] == "ok")
    assert any(a["copy"] == "vault" and a["in_period"] for a in fixed["attestations"])
    assert [h["config_hash"] for h in fixed["config_hashes"]] == ["cfg0000hash1"]

    code, out = _verify(cfg_path, tmp_path / "report.json")
    assert code == 0, out
    assert "OK:" in out

    # An edited result: a drill's outcome rewritten in the store.
    victim = drills[0]
    await external_sql(store_config, f"UPDATE results SET outcome = 'failed' WHERE run_id = '{victim['run_id']}'")
    code, out = _verify(cfg_path, tmp_path / "report.json")
    assert code == 1 and "edited" in out and victim["run_id"] in out, out
    await external_sql(store_config, f"UPDATE results SET outcome = 'ok' WHERE run_id = '{victim['run_id']}'")
    assert _verify(cfg_path, tmp_path / "report.json")[0] == 0

    # A deleted result (an awkward failure removed).
    gone = failing["failures"][0]["first_run"]
    await external_sql(store_config, f"DELETE FROM results WHERE run_id = '{gone}'")
    code, out = _verify(cfg_path, tmp_path / "report.json")
    assert code == 1 and "deleted" in out, out


async def test_a_rewritten_chain_is_found_by_the_reports_head(tmp_path: Path, store_config: dict[str, Any]) -> None:
    """Someone edits a result and recomputes every digest after it: the store's chain is consistent again,
    but not with the head and digests the report carries."""
    from drwatch.store.chain import CHAIN_COLUMNS, GENESIS, digest

    cfg_path = await _estate(tmp_path, store_config)
    _report(cfg_path, tmp_path / "report.json")
    await external_sql(store_config, "UPDATE results SET outcome = 'ok' WHERE outcome = 'failed'")
    rows = await external_sql(store_config, f"SELECT id, {CHAIN_COLUMNS} FROM results ORDER BY id")
    prev = GENESIS
    updates = []
    for row in rows:
        link = digest(prev, row[1:])
        updates.append(f"UPDATE results SET prev_digest = '{prev}', digest = '{link}' WHERE id = {row[0]}")
        prev = link
    updates.append(f"UPDATE result_chain SET head = '{prev}' WHERE id = 1")
    for sql in updates:
        await external_sql(store_config, sql)
    code, out = _verify(cfg_path, tmp_path / "report.json")
    assert code == 1 and "rewritten" in out and "differs from the one in the report" in out, out


async def test_signed_html_report(tmp_path: Path) -> None:
    key = tmp_path / "report.key"
    proc = run_cli("seal-keygen", "--private-key", str(key), "--public-key", str(tmp_path / "report.pub"))
    assert proc.returncode == 0, proc.stderr
    cfg_path = await _estate(tmp_path, {"sqlite": str(tmp_path / "state.sqlite")}, signing_key_file=str(key))
    report = tmp_path / "report.html"
    _report(cfg_path, report, "html")
    code, out = _verify(cfg_path, report, "--public-key", str(tmp_path / "report.pub"))
    assert code == 0 and "signature verified" in out, out
    page = report.read_bytes()
    # An edit of the visible page (a failing asset made to look compliant) breaks digest and signature.
    report.write_bytes(page.replace(b"NOT compliant", b"compliant    ", 1))
    code, out = _verify(cfg_path, report)
    assert code == 1 and "edited after it was written" in out, out
    # The HTML carries each result's digest shortened to 64 bits: a result edited in the store is found.
    report.write_bytes(page)
    store = {"sqlite": str(tmp_path / "state.sqlite")}
    await external_sql(store, "UPDATE results SET outcome = 'ok' WHERE id = (SELECT MAX(id) FROM results "
                              "WHERE outcome = 'failed')")
    code, out = _verify(cfg_path, report)
    assert code == 1 and "edited" in out and "billing-replica" in out, out
    # Signed with another key: refused.
    other = tmp_path / "other.key"
    proc = run_cli("seal-keygen", "--private-key", str(other), "--public-key", str(tmp_path / "other.pub"))
    assert proc.returncode == 0, proc.stderr
    report.write_bytes(page)
    code, out = _verify(cfg_path, report, "--public-key", str(tmp_path / "other.pub"))
    assert code == 1 and "another key" in out, out
    # A public key that is not there: 66, the path and the reason, no "[Errno 2]".
    code, out = _verify(cfg_path, report, "--public-key", str(tmp_path / "nowhere.pub"))
    assert code == 66 and f"{tmp_path / 'nowhere.pub'}: No such file or directory" in out and "Errno" not in out, out


async def test_report_of_one_asset_and_a_wrong_asset(tmp_path: Path) -> None:
    cfg_path = await _estate(tmp_path, {"sqlite": str(tmp_path / "state.sqlite")})
    doc = _report(cfg_path, tmp_path / "one.json", "json", "--asset", FAILING)
    assert list(doc["assets"]) == [FAILING]
    proc = run_cli("report", "-c", str(cfg_path), "--asset", "nope", "--out", str(tmp_path / "x.html"))
    assert proc.returncode == 78 and "unknown asset" in proc.stderr
    for empty in ("0s", "0d"):  # a period of no time: every asset 0 % compliant, even one compliant throughout
        proc = run_cli("report", "-c", str(cfg_path), "--since", empty, "--out", str(tmp_path / "x.json"))
        assert proc.returncode == 78 and "longer than 0 s" in proc.stderr and not (tmp_path / "x.json").exists()


async def test_a_wrong_store_path_is_unavailable_not_an_empty_report(tmp_path: Path) -> None:
    """A typo in store.sqlite must not create an empty store there and report 0 results (or, for
    verify-report, every result 'deleted'): both exit 69 naming the path, and nothing is created."""
    cfg_path = await _estate(tmp_path, {"sqlite": str(tmp_path / "state.sqlite")})
    _report(cfg_path, tmp_path / "r.json")
    raw = yaml.safe_load(cfg_path.read_text())
    wrong = tmp_path / "typo" / "state.sqlite"
    raw["store"] = {"sqlite": str(wrong)}
    bad_cfg = tmp_path / "wrong-store.yaml"
    bad_cfg.write_text(yaml.safe_dump(raw))
    proc = run_cli("report", "-c", str(bad_cfg), "--format", "json", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 69 and f"no store at {wrong}" in proc.stderr, proc.stderr
    proc = run_cli("verify-report", "-c", str(bad_cfg), str(tmp_path / "r.json"))
    assert proc.returncode == 69 and f"no store at {wrong}" in proc.stderr, proc.stderr
    assert "TAMPERED" not in proc.stdout
    assert not (tmp_path / "typo").exists() and not (tmp_path / "x.json").exists()


async def test_a_corrupt_store_is_unavailable_not_a_traceback(tmp_path: Path) -> None:
    """A store that opens but cannot be read (SQLite pages overwritten: a bad disk, a torn copy) makes report
    and verify-report exit 69 with SQLite's reason, not crash with a traceback (exit 1)."""
    store = tmp_path / "state.sqlite"
    cfg_path = await _estate(tmp_path, {"sqlite": str(store)})
    _report(cfg_path, tmp_path / "r.json")
    size = store.stat().st_size
    with store.open("r+b") as fh:  # every 7th page from a third in: the results' b-tree, not the header
        for offset in range(size // 3, size, 4096 * 7):
            fh.seek(offset)
            fh.write(b"\xff" * 512)
    for args in (("report", "-c", str(cfg_path), "--format", "json", "--out", str(tmp_path / "x.json")),
                 ("verify-report", "-c", str(cfg_path), str(tmp_path / "r.json"))):
        proc = run_cli(*args)
        assert proc.returncode == 69, (args[0], proc.returncode, proc.stderr)
        assert f"drwatch {args[0]}: cannot read the store {store}: " in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "TAMPERED" not in proc.stdout
    assert not (tmp_path / "x.json").exists()


async def test_a_report_checked_against_another_store_says_so(tmp_path: Path) -> None:
    """A report verified with the configuration of another estate (another store): every result differs, and
    the first line says why that may be, before the per-result lines."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = await _estate(tmp_path / "a", {"sqlite": str(tmp_path / "a" / "state.sqlite")})
    cfg_b = await _estate(tmp_path / "b", {"sqlite": str(tmp_path / "b" / "state.sqlite")})
    _report(cfg_a, tmp_path / "a.json")
    assert _verify(cfg_a, tmp_path / "a.json")[0] == 0
    code, out = _verify(cfg_b, tmp_path / "a.json")
    assert code == 1, out
    assert out.splitlines()[0].startswith("TAMPERED unmatched: none of the report's"), out
    assert "made from another store" in out
