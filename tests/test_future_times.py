"""Times that cannot be faked: modification times, S3 LastModified, dump times and seal times further ahead of
this host's clock than ``compliance.clock_skew`` are ``time_in_future`` findings and never make a recovery
point fresh."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.model import CopyState, Outcome, Result, Severity
from drwatch.formats.sealing import seal_directory
from drwatch.storage.filesystem import MANIFEST_NAME
from tests.support import s3helpers as s3h
from tests.support.helpers import basic_config, populate, write_tree
from tests.support.pgserver import PostgresServer
from tests.support.s3servers import MotoServer
from tests.test_postgres_restore import drill_config, run_drill
from tests.test_replica import run_replica

YEAR_2099 = 4_070_908_800.0  # 2099-01-01T00:00:00Z


def future(result: Result) -> list[tuple[Severity, str, str]]:
    return [(f.severity, f.subject, f.message) for f in result.findings if f.code == "time_in_future"]


def age_tree(root: Path, ts: float) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (ts, ts))


def redate_seal(root: Path, sealed_at: float) -> None:
    """Rewrite the seal's header time (what a wrong clock on the backup host, or a forger, produces)."""
    path = root / MANIFEST_NAME
    head, _, rest = path.read_text().partition("\n")
    header = json.loads(head)
    header["sealed_at"] = sealed_at
    path.write_text(json.dumps(header) + "\n" + rest)


async def test_one_file_touched_to_2099_cannot_keep_production_fresh(tmp_path: Path) -> None:
    """Production's files are 3 days old (RPO 1d); one file touched to 2099 would make the recovery point
    2099 and the RPO unbreachable. It is a finding naming the file; the recovery point is the newest
    believable time, and the RPO is exceeded."""
    files = populate(tmp_path, copies=1)
    old = time.time() - 3 * 86400
    age_tree(tmp_path / "prod", old)
    age_tree(tmp_path / "copy1", old)
    victim = sorted(files)[5]
    os.utime(tmp_path / "prod" / "data" / victim, (YEAR_2099, YEAR_2099))
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1, rpo="1d"))
    found = future(result)
    assert len(found) == 1, result.findings
    severity, subject, message = found[0]
    assert (severity, subject) == (Severity.WARNING, "production")
    assert "1 object(s)" in message and victim in message and "2099-01-01T00:00:00Z" in message
    assert result.recovery_point == pytest.approx(old, abs=1)
    assert "rpo_exceeded" in {f.code for f in result.findings}
    assert result.outcome == Outcome.FAILED


async def test_every_time_in_the_future_leaves_no_recovery_point(tmp_path: Path) -> None:
    """When every production time lies ahead, no recovery point time can be believed: critical, failed."""
    populate(tmp_path, copies=1)
    age_tree(tmp_path / "prod", YEAR_2099)
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1, rpo="1d"))
    assert [(s, subj) for s, subj, _ in future(result)] == [(Severity.CRITICAL, "production")], result.findings
    assert "no object has a believable time" in future(result)[0][2]
    assert result.recovery_point is None
    assert result.outcome == Outcome.FAILED


async def test_times_within_the_clock_skew_are_believed(tmp_path: Path) -> None:
    """A file two minutes ahead (clocks of two hosts disagree a little) is within the 5 min default skew."""
    populate(tmp_path, copies=1)
    ahead = time.time() + 120
    age_tree(tmp_path / "prod", ahead)
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1, rpo="1d"))
    assert result.outcome == Outcome.OK, result.findings
    assert not future(result)
    assert result.recovery_point == pytest.approx(ahead, abs=1)


async def test_seal_dated_23_hours_ahead_is_not_believed(tmp_path: Path) -> None:
    """A seal dated 23 h ahead kept an asset with a 1 h RPO "fresh" for a day. Now: critical
    ``time_in_future``, failed, no recovery point; the copies hold no recovery point within the RPO."""
    populate(tmp_path, copies=1)
    await seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "prod" / "data" / MANIFEST_NAME)
    redate_seal(tmp_path / "prod" / "data", time.time() + 23 * 3600)
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1, rpo="1h"))
    assert [(s, subj) for s, subj, _ in future(result)] == [(Severity.CRITICAL, "manifest")], result.findings
    assert "ahead of this host's clock (allowed skew 5m)" in future(result)[0][2]
    assert result.outcome == Outcome.FAILED
    assert result.recovery_point is None
    assert all(c.recovery_point is None for c in result.copies)
    # The content itself was still proven against the seal.
    assert next(c for c in result.copies if c.copy == "copy1").state == CopyState.VERIFIED


async def test_clock_skew_is_configurable(tmp_path: Path) -> None:
    """With ``compliance.clock_skew: 2d`` the same seal (23 h ahead) is believed."""
    populate(tmp_path, copies=1)
    await seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "prod" / "data" / MANIFEST_NAME)
    sealed_at = time.time() + 23 * 3600
    redate_seal(tmp_path / "prod" / "data", sealed_at)
    cfg: dict[str, Any] = basic_config(tmp_path, copies=1, rpo="1h")
    cfg["compliance"] = {"clock_skew": "2d"}
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert not future(result)
    assert result.recovery_point == pytest.approx(sealed_at, abs=1)


async def test_s3_last_modified_ahead_of_the_clock(tmp_path: Path, moto: MotoServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Production in a real S3 bucket whose LastModified lies a day ahead of the checking host's clock (the
    checker runs a day behind the object store): ``time_in_future``, never a fresh recovery point. With
    the clocks agreeing, the same estate is ok."""
    files = {f"f{i}.bin": os.urandom(256) for i in range(4)}
    prod, copy = s3h.bucket(moto, "fut-prod"), s3h.bucket(moto, "fut-copy")
    s3h.upload(moto, prod, files)
    s3h.upload(moto, copy, files)
    locs = s3h.Locations(monkeypatch)
    locs.s3("p", moto, prod, site="dc-a")
    locs.s3("c", moto, copy, site="dc-b")
    cfg = s3h.config(tmp_path, locs, ("p", "data/"), [("c", "data/")], rpo="1h")
    agreeing, _ = await s3h.run(tmp_path, cfg)
    assert agreeing.outcome == Outcome.OK, agreeing.findings
    assert not future(agreeing)
    behind, _ = await s3h.run(tmp_path, cfg, clock=lambda: time.time() - 86400)
    found = future(behind)
    assert [(s, subj) for s, subj, _ in found] == [(Severity.CRITICAL, "production")], behind.findings
    assert "4 object(s)" in found[0][2]
    assert behind.recovery_point is None
    assert behind.outcome == Outcome.FAILED


# --- dumps ---------------------------------------------------------------------------------------------


async def test_a_dump_dated_ahead_alone_is_no_recovery_point(tmp_path: Path, sandbox_root: Path) -> None:
    """The only dump is dated 2099: its time cannot be believed, so there is no recovery point to restore
    (failed, ``time_in_future`` + ``no_recovery_point``) and nothing is restored."""
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    (dumps / "latest.dump").write_bytes(b"PGDMP" + os.urandom(64))
    os.utime(dumps / "latest.dump", (YEAR_2099, YEAR_2099))
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, dumps, {"pattern": "*.dump"}))
    assert result is not None and result.outcome == Outcome.FAILED
    assert {f.code for f in result.findings} == {"time_in_future", "no_recovery_point"}, result.findings
    assert "latest.dump (2099-01-01T00:00:00Z)" in next(m for _, _, m in future(result))
    assert "bytes" not in result.figures and "restore_seconds" not in result.figures  # nothing was fetched


def _real_dump(pg_server: PostgresServer, dest: Path) -> None:
    """pg_dump -Fc of a fresh database holding one table of 100 rows."""
    name = f"fut_{os.getpid()}"
    dsn = pg_server.create_database(name)
    try:
        pg_server.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g", name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(pg_server.bin_dir / "pg_dump"), "-Fc", "-f", str(dest), dsn],
                       check=True, capture_output=True, timeout=120)
    finally:
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_a_dump_touched_to_2099_cannot_keep_the_database_fresh(pg_server: PostgresServer, tmp_path: Path,
                                                                     sandbox_root: Path) -> None:
    """A real dump made 3 days ago (RPO 1d) next to a file touched to 2099: the 2099 file is never picked
    (a warning names it); the real dump is restored and its age exceeds the RPO."""
    dumps = tmp_path / "dumps"
    await asyncio.to_thread(_real_dump, pg_server, dumps / "real.dump")
    old = time.time() - 3 * 86400
    os.utime(dumps / "real.dump", (old, old))
    (dumps / "zz-forged.dump").write_bytes((dumps / "real.dump").read_bytes())
    os.utime(dumps / "zz-forged.dump", (YEAR_2099, YEAR_2099))
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, dumps, {"pattern": "*.dump"}, rpo="1d"))
    assert result is not None
    assert [(s, m.split(":")[0]) for s, _, m in future(result)] == [(Severity.WARNING, "1 dump(s) dated more than 5m "
                                                                     "(the allowed clock skew) ahead of this host's "
                                                                     "clock, e.g. zz-forged.dump (2099-01-01T00")]
    assert result.recovery_point == pytest.approx(old, abs=1)
    assert "rpo_exceeded" in {f.code for f in result.findings}
    assert result.figures["rows_restored"] == 100
    assert result.outcome == Outcome.FAILED


@pytest.mark.parametrize("kind", ["dataset", "model_weights"])
async def test_seal_dated_ahead_for_every_sealed_validator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           kind: str) -> None:
    """``dataset`` and ``model_weights`` believe a seal's time no more than ``replica`` does: 23 h ahead with a
    1 h RPO is a critical ``time_in_future`` and a failed run, with no recovery point; on time, ok."""
    files = {"config.json": b"{}", "notes/readme.txt": b"weights and data" * 64}
    for root in (tmp_path / "prod" / "data", tmp_path / "disk1" / "data"):
        write_tree(root, files)
    await seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "prod" / "data" / MANIFEST_NAME)
    locs = s3h.Locations(monkeypatch)
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    locs.fs("disk1", tmp_path / "disk1", site="dc-b")
    cfg = s3h.config(tmp_path, locs, ("prod", "data"), [("disk1", "data")], validators=[{"kind": kind}], rpo="1h")
    on_time, _ = await s3h.run(tmp_path, cfg)
    assert on_time.outcome == Outcome.OK, on_time.findings
    redate_seal(tmp_path / "prod" / "data", time.time() + 23 * 3600)
    ahead, _ = await s3h.run(tmp_path, cfg)
    assert [(s, subj) for s, subj, _ in future(ahead)] == [(Severity.CRITICAL, "manifest")], ahead.findings
    assert ahead.outcome == Outcome.FAILED
    assert ahead.recovery_point is None
