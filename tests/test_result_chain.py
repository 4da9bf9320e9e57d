"""Tamper evidence of the store (drwatch.store.chain), on both backends (SQLite and a real PostgreSQL): results
are chained as they are stored, a schema 4 store is chained on migration, and a result edited, deleted or
reordered behind drwatch's back (plain SQL on the database, as an intruder would) is found; pruning is not."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from drwatch.core.model import Outcome
from tests.test_store import T0, external_sql, opened, result, store_cfg

if TYPE_CHECKING:
    from drwatch.store import Store

GENESIS = "0" * 64  # drwatch.store.chain.GENESIS (importing drwatch.store first would be a circular import)


async def _fill(store: Store, n: int = 6) -> None:
    for i in range(n):
        await store.record(result(f"run-{i}", Outcome.FAILED if i == 2 else Outcome.OK, finished=T0 + 60 * i),
                           config_hash="abc123")


async def test_results_are_chained_as_stored(store_config: dict[str, Any]) -> None:
    async with opened(store_cfg(store_config)) as store:
        empty = await store.chain_check()
        assert empty.intact and empty.head == GENESIS and empty.head_id == 0
        await _fill(store)
        await store.record(result("run-0"), config_hash="abc123")  # a retried write: no new link
        checked = await store.chain_check()
    assert checked.intact, checked.problems
    assert checked.results == 6 and len(checked.links) == 6
    rows = await external_sql(store_config, "SELECT id, prev_digest, digest, config_hash FROM results ORDER BY id")
    assert rows[0][1] == GENESIS and all(rows[i][1] == rows[i - 1][2] for i in range(1, 6))
    assert {r[3] for r in rows} == {"abc123"}
    assert (checked.head_id, checked.head) == (rows[-1][0], rows[-1][2])


async def _problems(store_config: dict[str, Any]) -> list[tuple[str, str]]:
    async with opened(store_cfg(store_config)) as store:
        checked = await store.chain_check()
    return [(p.kind, p.run_id) for p in checked.problems]


async def test_an_edited_result_is_found(store_config: dict[str, Any]) -> None:
    async with opened(store_cfg(store_config)) as store:
        await _fill(store)
    await external_sql(store_config, "UPDATE results SET outcome = 'ok' WHERE run_id = 'run-2'")
    assert await _problems(store_config) == [("edited", "run-2")]


async def test_an_edited_time_is_found(store_config: dict[str, Any]) -> None:
    async with opened(store_cfg(store_config)) as store:
        await _fill(store)
    await external_sql(store_config, "UPDATE results SET finished_at = finished_at + 1 WHERE run_id = 'run-4'")
    assert await _problems(store_config) == [("edited", "run-4")]


async def test_a_deleted_result_is_found(store_config: dict[str, Any]) -> None:
    async with opened(store_cfg(store_config)) as store:
        await _fill(store)
    await external_sql(store_config, "DELETE FROM results WHERE run_id = 'run-2'")
    assert await _problems(store_config) == [("deleted", "run-3")]


async def test_deleting_the_newest_results_is_found(store_config: dict[str, Any]) -> None:
    async with opened(store_cfg(store_config)) as store:
        await _fill(store)
    await external_sql(store_config, "DELETE FROM results WHERE run_id IN ('run-4', 'run-5')")
    assert [k for k, _ in await _problems(store_config)] == ["head"]


async def test_truncating_the_results_is_found(store_config: dict[str, Any]) -> None:
    async with opened(store_cfg(store_config)) as store:
        await _fill(store)
    await external_sql(store_config, "DELETE FROM results")
    assert [k for k, _ in await _problems(store_config)] == ["head"]


async def test_reordered_results_are_found(store_config: dict[str, Any]) -> None:
    async with opened(store_cfg(store_config)) as store:
        await _fill(store)
    ids = [r[0] for r in await external_sql(store_config, "SELECT id FROM results ORDER BY id")]
    a, b = ids[1], ids[2]
    for sql in (f"UPDATE results SET id = -1 WHERE id = {a}", f"UPDATE results SET id = {a} WHERE id = {b}",
                f"UPDATE results SET id = {b} WHERE id = -1"):
        await external_sql(store_config, sql)
    problems = await _problems(store_config)
    assert ("reordered", "run-2") in problems, problems


async def test_pruning_keeps_the_chain_provable(store_config: dict[str, Any]) -> None:
    async with opened(store_cfg(store_config)) as store:
        await _fill(store)
        await store.record(result("other-0", asset="other", finished=T0 + 1000), config_hash="abc123")
        assert await store.prune(T0 + 150) == 3  # run-0..2; run-5 stays (latest of data/replica), so do 3, 4
        checked = await store.chain_check()
    assert checked.intact, checked.problems
    assert (checked.results, checked.pruned) == (4, 3)
    # A pruned link deleted from the tombstones is a deletion like any other.
    await external_sql(store_config, "DELETE FROM result_tombstones WHERE run_id = 'run-1'")
    assert await _problems(store_config) == [("deleted", "run-2")]


async def _schema4_store(store_config: dict[str, Any]) -> None:
    """A store as drwatch wrote it before the chain (schema 4), holding three results."""
    from drwatch.store import postgres as pgstore
    from drwatch.store import sqlite_schema as sqlitestore

    rows = [(f"old-{i}", "data", "replica", "replica", "ok", T0 + i, T0 + i + 1, None, "{}", "[]", "[]")
            for i in range(3)]
    insert = ("INSERT INTO results (run_id, asset, validator, kind, outcome, started_at, finished_at, recovery_point, "
              "figures, findings, copies) VALUES ")
    if "sqlite" in store_config:
        with contextlib.closing(sqlite3.connect(store_config["sqlite"])) as conn:
            conn.execute("CREATE TABLE drwatch_schema (version INTEGER NOT NULL)")
            for version in range(1, 5):
                for statement in sqlitestore.MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO drwatch_schema VALUES (?)", (version,))
            conn.executemany(insert + "(?,?,?,?,?,?,?,?,?,?,?)", rows)
            conn.commit()
        return
    conn = await asyncpg.connect(os.environ[store_config["postgres"]["dsn_env"]])
    try:
        await conn.execute("CREATE TABLE drwatch_schema (version INTEGER NOT NULL)")
        for version in range(1, 5):
            for statement in pgstore.MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO drwatch_schema VALUES ($1)", version)
        await conn.executemany(insert + "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)", rows)
    finally:
        await conn.close()


async def test_existing_results_are_chained_on_migration(store_config: dict[str, Any]) -> None:
    await _schema4_store(store_config)
    async with opened(store_cfg(store_config)) as store:
        migrated = await store.chain_check()
        await store.record(result("new-0", finished=T0 + 100), config_hash="abc123")
        after = await store.chain_check()
    assert migrated.intact and migrated.results == 3 and migrated.head_id == 3
    assert after.intact and after.results == 4
    from drwatch.store.base import SCHEMA_VERSION  # here: see GENESIS above

    # migrated through schema 5 (the chain) up to the current schema
    assert await external_sql(store_config, "SELECT MAX(version) FROM drwatch_schema") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION >= 5
    # The migrated rows are proven like any other: an edit of one is found.
    await external_sql(store_config, "UPDATE results SET figures = '{\"x\": 1.0}' WHERE run_id = 'old-1'")
    assert await _problems(store_config) == [("edited", "old-1")]


async def test_concurrent_prunes_and_writers_keep_the_chain(store_config: dict[str, Any]) -> None:
    """Two nodes prune the same old results while a third records the runs that make more of them prunable:
    every result is pruned once, with its tombstone, and the chain stays intact (PostgreSQL runs each statement
    of a READ COMMITTED transaction on a fresh snapshot: a prune not serialised with the writers and the other
    prunes tombstones one set of rows and deletes another, or fails on the other node's tombstones)."""
    import asyncio

    n = 40
    async with opened(store_cfg(store_config)) as writer:
        for i in range(n):
            await writer.record(result(f"old-{i}", asset=f"a{i % 8}", finished=T0 + i), config_hash="abc123")
    async with opened(store_cfg(store_config)) as node1, opened(store_cfg(store_config)) as node2, \
            opened(store_cfg(store_config)) as writer:
        async def write() -> None:
            for i in range(8):
                await writer.record(result(f"new-{i}", asset=f"a{i}", finished=T0 + 10_000), config_hash="abc123")

        counts = await asyncio.gather(node1.prune(T0 + 1000), node2.prune(T0 + 1000), write(),
                                      node1.prune(T0 + 1000), node2.prune(T0 + 1000), return_exceptions=True)
        assert not [c for c in counts if isinstance(c, BaseException)], counts
        rest = await node2.prune(T0 + 1000)
        checked = await node1.chain_check()
    assert checked.intact, checked.problems
    assert sum(c for c in counts if isinstance(c, int)) + rest == n  # every old result pruned exactly once
    assert (checked.results, checked.pruned) == (8, n)


async def test_migration_chains_in_batches(store_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema 5 migration pages through the results: the links run on across its batches."""
    from drwatch.store import chain

    monkeypatch.setattr(chain, "MIGRATE_BATCH", 2)
    await _schema4_store(store_config)  # three results: two batches
    async with opened(store_cfg(store_config)) as store:
        migrated = await store.chain_check()
    assert migrated.intact, migrated.problems
    assert (migrated.results, migrated.head_id) == (3, 3)


async def test_a_big_store_migrates_within_the_command_timeout(store_config: dict[str, Any]) -> None:
    """200,000 results of a schema 4 PostgreSQL store are chained on open, and verified, with a 2 s command
    timeout: no one statement covers them all (an UPDATE per row in one executemany ran past it, and the daemon
    could never open its store after the upgrade; one SELECT of every row did, and verify-report could not
    verify a big store)."""
    if "postgres" not in store_config:
        return  # SQLite has no command timeout; test_migration_chains_in_batches covers its batches
    from drwatch.store.postgres import PostgresStore

    await _schema4_store(store_config)
    await external_sql(store_config, "INSERT INTO results (run_id, asset, validator, kind, outcome, started_at, "
                                     f"finished_at, figures, findings, copies) SELECT 'big-' || i, 'data', 'replica', "
                                     f"'replica', 'ok', {T0} + i, {T0} + i + 1, '{{}}', '[]', '[]' "
                                     "FROM generate_series(1, 200000) AS i")
    store = PostgresStore(os.environ[store_config["postgres"]["dsn_env"]], command_timeout=2.0)
    await store.open()
    try:
        checked = await store.chain_check()  # verifying them pages through them as well
    finally:
        await store.close()
    assert checked.intact, checked.problems[:3]
    assert checked.results == 200_003
