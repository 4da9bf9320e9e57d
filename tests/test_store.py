"""The result store, on both backends (SQLite and a real PostgreSQL): what it keeps, what it counts, and
what happens when it goes away under a running runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog.testing
import yaml

from drwatch.config.model import Config, parse_config
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Attestation, CopyReport, CopyState, Finding, Outcome, Result, Severity
from drwatch.core.sandbox import SandboxManager
from drwatch.engine.runner import AppState, Runner
from drwatch.metrics.collector import ProcessState
from drwatch.state.snapshot import Snapshot
from drwatch.store import Store, StoredState, ValidatorStats, open_store
from drwatch.store.base import SCHEMA_VERSION, StoreSchemaError
from drwatch.store.sqlite import SqliteStore
from tests.support.helpers import basic_config, populate, run_cli, write_config
from tests.support.pgserver import PostgresServer

T0 = 1_700_000_000.123456  # fractional on purpose: timestamps must round-trip exactly


def store_cfg(store_config: dict[str, Any], **extra: Any) -> Config:
    return parse_config(yaml.safe_dump({"store": store_config, **extra}))


def result(
    run_id: str,
    outcome: Outcome = Outcome.OK,
    *,
    finished: float = T0,
    duration: float = 2.5,
    asset: str = "data",
    validator: str = "replica",
    findings: tuple[Finding, ...] = (),
    figures: dict[str, float] | None = None,
    copies: tuple[CopyReport, ...] = (),
    recovery_point: float | None = None,
) -> Result:
    return Result(run_id=run_id, asset=asset, validator=validator, kind="replica", outcome=outcome,
                  started_at=finished - duration, finished_at=finished, findings=findings,
                  figures=figures or {}, copies=copies, recovery_point=recovery_point)


def folded(results: list[Result]) -> dict[tuple[str, str], ValidatorStats]:
    """What the live snapshot shows after these results (what /metrics served before a restart)."""
    snap = Snapshot(parse_config("{}"))
    for r in results:
        snap = snap.with_result(r, time.time())
    return snap.validators


@contextlib.asynccontextmanager
async def opened(cfg: Config) -> AsyncIterator[Store]:
    store = open_store(cfg)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(store_config: dict[str, Any]) -> AsyncIterator[Store]:
    async with opened(store_cfg(store_config)) as s:
        yield s


async def external_sql(store_config: dict[str, Any], sql: str) -> list[tuple[Any, ...]]:
    """Run SQL on the store's database over a connection of its own (another process would do the same)."""
    if "sqlite" in store_config:
        with contextlib.closing(sqlite3.connect(store_config["sqlite"])) as conn:
            rows = conn.execute(sql).fetchall()
            conn.commit()
        return [tuple(r) for r in rows]
    conn = await asyncpg.connect(os.environ[store_config["postgres"]["dsn_env"]])
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------- contents


async def test_result_round_trips_with_findings_figures_and_copies(store: Store) -> None:
    """A recorded result comes back from load_state and history equal in every field."""
    copies = (
        CopyReport(copy="production", location="prod", role="production", state=CopyState.VERIFIED,
                   recovery_point=T0 - 3600.5, media="disk", media_observed=True, site="dc-a",
                   objects={"verified": 20, "missing": 0, "mismatch": 0, "extra": 0}, bytes_verified=81_920),
        CopyReport(copy="copy2", location="copy2", role="copy", state=CopyState.FAILED, media="tape",
                   site="dc-c", region="eu-west-1", provider="aws", immutable=None, offline=True,
                   objects={"verified": 19, "missing": 0, "mismatch": 1, "extra": 2}, bytes_verified=77_000),
        CopyReport(copy="copy3", location="vault", role="copy", state=CopyState.VERIFIED, immutable=True),
    )
    r = result(
        "run-1", Outcome.FAILED,
        findings=(Finding(Severity.CRITICAL, "content_mismatch", "content differs (sha256)", "copy2:a/b.bin"),
                  Finding(Severity.WARNING, "extra_file", "file not in the recovery point")),
        figures={"files_reference": 20.0, "bytes_verified": 158_920.0, "recovery_point_age_seconds": 3600.125},
        copies=copies, recovery_point=T0 - 3600.5,
    )
    await store.record(r)
    state = await store.load_state()
    assert state.validators[("data", "replica")].last_result == r
    assert await store.history("data") == [r]


async def test_stored_counters_equal_the_live_snapshot(store: Store) -> None:
    """Runs per outcome, duration sum/count, buckets and timestamps read back equal what the live snapshot
    computed from the same results (so a restart does not change any metric)."""
    results = [
        result("r1", Outcome.OK, finished=T0, duration=0.2),
        result("r2", Outcome.FAILED, finished=T0 + 10, duration=3.3),
        result("r3", Outcome.ERROR, finished=T0 + 20, duration=0.1),
        result("r4", Outcome.TIMEOUT, finished=T0 + 30, duration=3600.0),
        result("r5", Outcome.CANCELLED, finished=T0 + 40, duration=1.7),
        result("r6", Outcome.OK, finished=T0 + 50, duration=0.3),
        result("other", Outcome.OK, finished=T0 + 5, validator="drill"),
    ]
    for r in results:
        await store.record(r)
    state = await store.load_state()
    assert state.validators == folded(results)
    stats = state.validators[("data", "replica")]
    assert stats.runs == {"ok": 2, "failed": 1, "error": 1, "timeout": 1, "cancelled": 1}
    assert stats.duration_count == 6
    assert stats.duration_sum == pytest.approx(0.2 + 3.3 + 0.1 + 3600.0 + 1.7 + 0.3)
    assert stats.last_result == results[5]
    assert state.validators[("data", "drill")].runs == {"ok": 1}


async def test_duration_buckets_are_upper_inclusive(store: Store) -> None:
    """Each run counts once in the first bucket whose bound it does not exceed (bounds are inclusive)."""
    durations = [0.25, 0.5, 0.75, 5.0, 5.5, 7200.0, 100_000.0]
    for i, d in enumerate(durations):
        await store.record(result(f"d{i}", duration=d, finished=T0 + i))
    stats = (await store.load_state()).validators[("data", "replica")]
    assert stats.buckets == {"0.5": 2, "1.0": 1, "5.0": 1, "15.0": 1, "7200.0": 1, "+Inf": 1}
    assert sum(stats.buckets.values()) == stats.duration_count == len(durations)


async def test_last_run_success_and_failure_timestamps(store: Store) -> None:
    """last_run is the newest run of any outcome, last_success the newest ok, last_failure the newest failed;
    an error or timeout moves only last_run, and a late-arriving older result moves nothing back."""
    await store.record(result("a", Outcome.OK, finished=T0))
    await store.record(result("b", Outcome.FAILED, finished=T0 + 60))
    await store.record(result("c", Outcome.ERROR, finished=T0 + 120))
    stats = (await store.load_state()).validators[("data", "replica")]
    assert (stats.last_run_at, stats.last_success_at, stats.last_failure_at) == (T0 + 120, T0, T0 + 60)
    await store.record(result("late", Outcome.OK, finished=T0 - 500))
    stats = (await store.load_state()).validators[("data", "replica")]
    assert (stats.last_run_at, stats.last_success_at, stats.last_failure_at) == (T0 + 120, T0, T0 + 60)


async def test_stamps_in_the_future_give_way_after_the_clock_was_stepped_back(store: Store) -> None:
    """Stamps written while the wall clock ran a day ahead lie in the future once it is stepped back: the
    next run's stamps replace them (staleness and evidence age count from real runs again) instead of the
    future ones holding until the clock catches up; a stamp of a kind the new run does not set stays.
    The live snapshot does exactly what the store does."""
    ahead = time.time() + 86400
    first = [result("ok-ahead", Outcome.OK, finished=ahead), result("fail-ahead", Outcome.FAILED, finished=ahead + 1)]
    for r in first:
        await store.record(r)
    now = time.time()
    again = result("ok-now", Outcome.OK, finished=now)
    await store.record(again)
    stats = (await store.load_state()).validators[("data", "replica")]
    assert (stats.last_run_at, stats.last_success_at, stats.last_failure_at) == (now, now, ahead + 1)
    assert stats == folded([*first, again])["data", "replica"]


async def test_cancelled_runs_move_no_stamp(store: Store) -> None:
    """A cancelled run did not finish: it counts as a run (runs_total, latest outcome) but moves neither
    last_run nor last_success/last_failure, so staleness and the first run after a restart ignore it."""
    done = result("done", Outcome.OK, finished=T0)
    cut = result("cut", Outcome.CANCELLED, finished=T0 + 600)
    await store.record(done)
    await store.record(cut)
    stats = (await store.load_state()).validators[("data", "replica")]
    assert (stats.last_run_at, stats.last_success_at, stats.last_failure_at) == (T0, T0, None)
    assert stats.runs == {"ok": 1, "cancelled": 1} and stats.last_result == cut
    assert stats == folded([done, cut])["data", "replica"]
    await store.record(result("only-cut", Outcome.CANCELLED, finished=T0, validator="drill"))
    assert (await store.load_state()).validators[("data", "drill")].last_run_at is None


async def test_never_successful_validator_has_no_success_timestamp(store: Store) -> None:
    """A validator that only ever failed has no last_success (not 0, not the failure time)."""
    await store.record(result("f1", Outcome.FAILED, finished=T0))
    await store.record(result("f2", Outcome.TIMEOUT, finished=T0 + 1))
    stats = (await store.load_state()).validators[("data", "replica")]
    assert stats.last_success_at is None
    assert stats.last_failure_at == T0


async def test_recording_the_same_run_twice_changes_nothing(store: Store) -> None:
    """A retried write of a run already stored (same run_id) adds no row and counts nothing twice, even
    after a newer run was recorded in between."""
    first, second = result("same", Outcome.FAILED, finished=T0), result("next", Outcome.OK, finished=T0 + 9)
    await store.record(first)
    await store.record(first)
    await store.record(second)
    await store.record(first)
    state = await store.load_state()
    assert state.validators == folded([first, second])
    assert state.validators[("data", "replica")].last_result == second
    assert await store.history("data", "replica") == [second, first]


async def test_history_is_newest_first_and_limited(store: Store) -> None:
    """history() returns the newest results first, filtered by asset (and validator), at most `limit`."""
    rs = [result(f"a{i}", finished=T0 + i) for i in range(5)]
    others = [result(f"b{i}", finished=T0 + 10 + i, validator="drill") for i in range(2)]
    for r in [rs[0], rs[1], others[0], rs[2], rs[3], others[1], rs[4]]:
        await store.record(r)
    await store.record(result("x", finished=T0 + 100, asset="elsewhere"))
    assert await store.history("data", "replica", limit=3) == [rs[4], rs[3], rs[2]]
    assert await store.history("data", "drill") == [others[1], others[0]]
    assert await store.history("data", limit=4) == [rs[4], others[1], rs[3], rs[2]]
    assert len(await store.history("data")) == 7
    assert await store.history("nothing") == []


async def test_prune_keeps_latest_result_and_counters(store: Store) -> None:
    """prune() deletes results finished before the cutoff, except each validator's latest, and leaves the
    counters (runs, durations, timestamps) exactly as they were."""
    old = [result(f"old{i}", Outcome.OK if i % 2 else Outcome.FAILED, finished=T0 + i) for i in range(4)]
    recent = result("recent", finished=T0 + 1000)
    drill_old = [result(f"drill{i}", finished=T0 + i, validator="drill") for i in range(3)]
    for r in [*old, recent, *drill_old]:
        await store.record(r)
    before = await store.load_state()

    assert await store.prune(T0 + 500) == 4 + 2
    after = await store.load_state()
    assert after == before
    assert await store.history("data", "replica") == [recent]
    assert await store.history("data", "drill") == [drill_old[-1]]  # older than the cutoff, but the latest
    assert await store.prune(T0 + 500) == 0
    assert await store.prune(T0 + 10_000) == 0  # everything left is someone's latest
    assert await store.load_state() == before


async def test_latest_attestation_per_asset_and_copy(store: Store) -> None:
    """load_state returns, per (asset, copy), the most recently added attestation."""
    await store.add_attestation(Attestation("data", "tape", "first", T0, T0 - 86400))
    await store.add_attestation(Attestation("data", "tape", "second", T0 + 60, None))
    await store.add_attestation(Attestation("data", "vault", "vault check", T0 + 1, T0 - 10.5))
    await store.add_attestation(Attestation("other", "tape", "other asset", T0 + 2))
    atts = (await store.load_state()).attestations
    assert atts == {
        ("data", "tape"): Attestation("data", "tape", "second", T0 + 60, None),
        ("data", "vault"): Attestation("data", "vault", "vault check", T0 + 1, T0 - 10.5),
        ("other", "tape"): Attestation("other", "tape", "other asset", T0 + 2, None),
    }


async def test_empty_store_has_empty_state(store: Store) -> None:
    """A fresh store has no validators and no attestations, and answers ping()."""
    await store.ping()
    assert await store.load_state() == StoredState()


async def test_revision_changes_exactly_when_stored_state_does(store: Store, store_config: dict[str, Any]) -> None:
    """revision() moves when a result or an attestation is added, by this store or another process (`drwatch
    check`/`attest` share the daemon's store), and stays put on a retried write and on pruning; a snapshot
    refreshed from the store then equals one built at start."""
    cfg = store_cfg(store_config)
    assert await store.revision() == (0, 0)
    await store.record(result("a", finished=T0))
    await store.record(result("a", finished=T0))
    assert await store.revision() == (1, 0)
    live = Snapshot.from_state(cfg, await store.load_state())

    async with opened(cfg) as other:  # another process, same store
        await other.record(result("b", Outcome.FAILED, finished=T0 + 60))
        await other.add_attestation(Attestation("data", "tape", "checked in the vault", T0 + 61))
    assert await store.revision() == (2, 1)
    state = await store.load_state()
    refreshed = live.refreshed(state)
    assert refreshed.validators == Snapshot.from_state(cfg, state).validators
    assert refreshed.attestations == Snapshot.from_state(cfg, state).attestations
    assert refreshed.generation == live.generation + 1
    assert refreshed.stats("data", "replica") == folded([result("a", finished=T0),
                                                         result("b", Outcome.FAILED, finished=T0 + 60)])[
        ("data", "replica")]

    assert await store.prune(T0 + 1000) == 1
    assert await store.revision() == (2, 1)


# ----------------------------------------------------------------------------------------------- schema


async def test_reopening_keeps_data_and_migrates_once(store_config: dict[str, Any]) -> None:
    """Closing and reopening a store keeps every result and runs each migration exactly once."""
    cfg = store_cfg(store_config)
    r = result("persist", Outcome.FAILED, findings=(Finding(Severity.CRITICAL, "missing_file", "gone", "c:x"),))
    async with opened(cfg) as s:
        await s.record(r)
        first = await s.load_state()
    for _ in range(2):
        async with opened(cfg) as s:
            assert await s.load_state() == first
    versions = await external_sql(store_config, "SELECT version FROM drwatch_schema ORDER BY version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert (await external_sql(store_config, "SELECT COUNT(*) FROM results"))[0][0] == 1


async def test_newer_schema_is_refused_untouched(store_config: dict[str, Any]) -> None:
    """A store whose schema version is newer than this drwatch is refused with an error naming both
    versions; it is not modified and no connection is left behind."""
    cfg = store_cfg(store_config)
    async with opened(cfg) as s:
        await s.record(result("kept"))
    await external_sql(store_config, f"INSERT INTO drwatch_schema (version) VALUES ({SCHEMA_VERSION + 1})")

    store = open_store(cfg)
    with pytest.raises(StoreSchemaError, match=rf"version {SCHEMA_VERSION + 1} .*newer.*\({SCHEMA_VERSION}\)"):
        await store.open()
    assert await connections_left(store_config) == 0
    await store.close()  # closing a store that failed to open is harmless

    assert await external_sql(store_config, "SELECT version FROM drwatch_schema ORDER BY version") == [
        (v,) for v in range(1, SCHEMA_VERSION + 2)]
    assert await external_sql(store_config, "SELECT run_id FROM results") == [("kept",)]


def _open_files_under(prefix: str) -> int:
    targets = [os.path.realpath(fd) for fd in Path("/proc/self/fd").iterdir()]
    return sum(1 for t in targets if t.startswith(os.path.realpath(prefix)))


async def connections_left(store_config: dict[str, Any]) -> int:
    """Connections this test process still holds to the store (open files for SQLite, sessions for
    PostgreSQL, which may take a moment to end)."""
    if "sqlite" in store_config:
        return _open_files_under(store_config["sqlite"])
    sql = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    count = -1
    for _ in range(100):
        count = int((await external_sql(store_config, sql))[0][0])
        if count == 0:
            break
        await asyncio.sleep(0.05)
    return count


def test_cli_reports_newer_schema_without_traceback(tmp_path: Path) -> None:
    """`drwatch status` on a store written by a newer drwatch exits with a one-line explanation."""
    db = tmp_path / "state.sqlite"
    cfg_path = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, store={"sqlite": str(db)}))
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE drwatch_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO drwatch_schema VALUES (?)", (SCHEMA_VERSION + 1,))
        conn.commit()
    proc = run_cli("status", "--config", str(cfg_path), timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"schema version {SCHEMA_VERSION + 1}" in proc.stderr


async def test_sqlite_path_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    """A `store.sqlite` path pointing at something that is not a SQLite database (say, the config file) is
    refused as an unavailable store naming the path, and the file is left as it was."""
    wrong = write_config(tmp_path / "drwatch.yaml",
                         basic_config(tmp_path, store={"sqlite": str(tmp_path / "drwatch.yaml")}))
    content = wrong.read_bytes()
    store = open_store(parse_config(content.decode(), str(wrong)))
    with pytest.raises(ValidatorError, match=r"drwatch\.yaml") as info:
        await store.open()
    assert info.value.code == "store_unavailable"
    await store.close()
    assert wrong.read_bytes() == content
    proc = run_cli("status", "--config", str(wrong), timeout=60)
    assert proc.returncode == 69  # the store is unavailable (not a config error)
    assert "Traceback" not in proc.stderr
    assert "drwatch.yaml" in proc.stderr


async def test_postgres_role_without_create_rights_is_refused_clearly(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DSN whose role may not create the schema (PostgreSQL 15 grants no CREATE on `public` to others) is
    refused as an unavailable store with the server's reason, and the pool is closed again."""
    suffix = uuid.uuid4().hex[:12]
    dsn = pg_server.create_database(f"drwatch_priv_{suffix}")
    role = f"drwatch_user_{suffix}"
    pg_server.psql(f"CREATE ROLE {role} LOGIN")
    monkeypatch.setenv("DRWATCH_TEST_DSN", dsn.replace("postgres@", f"{role}@", 1))
    store_config = {"postgres": {"dsn_env": "DRWATCH_TEST_DSN"}}
    store = open_store(store_cfg(store_config))
    with pytest.raises(ValidatorError, match="permission denied") as info:
        await store.open()
    assert info.value.code == "store_unavailable"
    monkeypatch.setenv("DRWATCH_TEST_DSN", dsn)
    assert await connections_left(store_config) == 0
    await store.close()


# ------------------------------------------------------------------------------------------ real faults


async def _pending_until_store_returns(
    cfg: Config, store: Store, fault: Callable[[], Awaitable[None]], repair: Callable[[], Awaitable[None]],
) -> None:
    """Run a real replica check with the store failing: the result stays pending and invisible, store
    errors are counted; once the store is back, flush() writes it exactly once and it becomes visible."""
    state = AppState(cfg, Snapshot.from_state(cfg, await store.load_state()), ProcessState(time.time()))
    runner = Runner(state, store, SandboxManager(None))
    vcfg = cfg.assets["data"].validators[0]
    try:
        healthy = await runner.execute("data", vcfg)
        assert healthy.outcome == Outcome.OK
        assert state.snapshot.stats("data", "replica") == folded([healthy])[("data", "replica")]

        await fault()
        try:
            seen: list[Result] = []
            state.listeners.append(seen.append)
            during = await runner.execute("data", vcfg)
            assert during.outcome == Outcome.OK
            assert list(runner.pending) == [during]
            assert state.process.results_pending == 1
            assert state.process.store_errors == 1
            assert seen == []
            assert state.snapshot.stats("data", "replica") == folded([healthy])[("data", "replica")]
            await runner.flush()  # still failing: still pending, one more error
            assert list(runner.pending) == [during]
            assert state.process.store_errors == 2
        finally:
            await repair()

        await runner.flush()
        assert not runner.pending
        assert state.process.results_pending == 0
        assert seen == [during]
        await runner.flush()  # nothing left: writes nothing more
        assert state.process.store_errors == 2
        live = state.snapshot.validators
        assert live == folded([healthy, during])
    finally:
        runner.close()
    assert await store.history("data") == [during, healthy]
    async with opened(cfg) as reopened:
        assert (await reopened.load_state()).validators == live


async def test_runner_keeps_result_pending_while_postgres_is_down(
    pg_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL stopped under a running daemon: the result is held, then written once when it returns."""
    dsn = pg_server.create_database(f"drwatch_fault_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("DRWATCH_TEST_DSN", dsn)
    populate(tmp_path)
    cfg = parse_config(yaml.safe_dump(basic_config(tmp_path, store={"postgres": {"dsn_env": "DRWATCH_TEST_DSN"}})))

    async def stop() -> None:
        await asyncio.to_thread(pg_server.stop)

    async def start() -> None:
        await asyncio.to_thread(pg_server.restart)

    try:
        async with opened(cfg) as store:
            await _pending_until_store_returns(cfg, store, stop, start)
    finally:
        if not pg_server.running:
            pg_server.restart()


async def test_runner_keeps_result_pending_while_the_chain_head_is_gone(
        store_config: dict[str, Any], tmp_path: Path) -> None:
    """Someone deleted the result chain's head row (table result_chain): results cannot be chained, so they
    stay queued as for a store that is down (counted, logged with the reason), never dropped one by one and never
    stored unchained; once the row is back they are written in order, the chain intact."""
    populate(tmp_path)
    cfg = parse_config(yaml.safe_dump(basic_config(tmp_path, store=store_config)))
    saved: list[tuple[Any, ...]] = []

    async def delete() -> None:
        saved[:] = await external_sql(store_config, "SELECT last_id, head FROM result_chain")
        await external_sql(store_config, "DELETE FROM result_chain")

    async def restore() -> None:
        (last_id, head), = saved
        await external_sql(store_config, f"INSERT INTO result_chain (id, last_id, head) VALUES (1, {last_id}, "
                                         f"'{head}')")

    with structlog.testing.capture_logs() as logs:
        async with opened(cfg) as store:
            await _pending_until_store_returns(cfg, store, delete, restore)
            check = await store.chain_check()
    failed = [e for e in logs if e["event"] == "store_write_failed"]
    assert failed and all(e["error_type"] == "ChainHeadMissing" and "result_chain" in e["error"] for e in failed)
    assert not [e for e in logs if e["event"] == "result_not_storable"]
    assert check.problems == (), check.problems


async def test_runner_keeps_result_pending_while_sqlite_is_locked(tmp_path: Path) -> None:
    """Another process holds the SQLite write lock past the busy timeout: the result is held, then written
    once when the lock is released."""
    populate(tmp_path)
    cfg = parse_config(yaml.safe_dump(basic_config(tmp_path)))
    store = SqliteStore(cfg.sqlite_path(), busy_timeout=0.2)
    await store.open()
    holder = sqlite3.connect(cfg.sqlite_path(), isolation_level=None)

    async def lock() -> None:
        holder.execute("BEGIN IMMEDIATE")

    async def unlock() -> None:
        holder.execute("ROLLBACK")

    try:
        await _pending_until_store_returns(cfg, store, lock, unlock)
    finally:
        holder.close()
        await store.close()


async def test_runner_keeps_result_pending_while_sqlite_file_is_replaced(tmp_path: Path) -> None:
    """The SQLite file is swapped for a copy under the running daemon (a restore, a careless `mv`): results
    are not written into the detached file, where a restart would lose them, but held until the original
    is back, then written once."""
    populate(tmp_path)
    cfg = parse_config(yaml.safe_dump(basic_config(tmp_path)))
    db = cfg.sqlite_path()
    aside = db.with_name("aside.sqlite")

    async def replace() -> None:
        os.rename(db, aside)
        shutil.copyfile(aside, db)

    async def restore() -> None:
        os.replace(aside, db)

    async with opened(cfg) as store:
        await _pending_until_store_returns(cfg, store, replace, restore)


async def test_copy_byte_counters_persist(store_config: dict[str, Any], tmp_path: Path) -> None:
    """Bytes verified per copy accumulate across results and survive reopening (a persisted counter)."""
    from drwatch.config.model import parse_config
    from drwatch.core.model import CopyReport, CopyState, Outcome, Result
    from drwatch.store import open_store
    from tests.support.helpers import basic_config

    cfg = parse_config(yaml.safe_dump(basic_config(tmp_path, store=store_config)))
    store = open_store(cfg)
    await store.open()
    try:
        for i, n in enumerate((100, 250)):
            rep = CopyReport("copy1", "copy1", "copy", CopyState.VERIFIED, bytes_verified=n)
            await store.record(Result(f"run-{i}", "data", "replica", "replica", Outcome.OK, 1.0 + i, 2.0 + i,
                                      copies=(rep,)))
    finally:
        await store.close()
    store = open_store(cfg)
    await store.open()
    try:
        state = await store.load_state()
    finally:
        await store.close()
    assert state.copy_bytes == {("data", "copy1"): 350}
