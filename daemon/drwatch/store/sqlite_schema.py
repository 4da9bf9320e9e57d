"""The SQLite store's schema: the migrations from an empty file to ``SCHEMA_VERSION``, applied in one
transaction when the store opens."""

from __future__ import annotations

import sqlite3

from drwatch.store import chain, rates
from drwatch.store import verify as v
from drwatch.store.base import ACKS_TABLE, SCHEMA_VERSION, StoreSchemaError

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL UNIQUE,
            asset TEXT NOT NULL, validator TEXT NOT NULL, kind TEXT NOT NULL, outcome TEXT NOT NULL,
            started_at REAL NOT NULL, finished_at REAL NOT NULL, recovery_point REAL,
            figures TEXT NOT NULL, findings TEXT NOT NULL, copies TEXT NOT NULL)""",
        "CREATE INDEX results_asset_validator ON results (asset, validator, finished_at)",
        "CREATE INDEX results_finished ON results (finished_at)",
        """CREATE TABLE validator_state (
            asset TEXT NOT NULL, validator TEXT NOT NULL,
            last_run_at REAL, last_success_at REAL, last_failure_at REAL,
            duration_sum REAL NOT NULL DEFAULT 0, duration_count INTEGER NOT NULL DEFAULT 0,
            last_result_id INTEGER,
            PRIMARY KEY (asset, validator))""",
        """CREATE TABLE run_counts (
            asset TEXT NOT NULL, validator TEXT NOT NULL, outcome TEXT NOT NULL, count INTEGER NOT NULL,
            PRIMARY KEY (asset, validator, outcome))""",
        """CREATE TABLE duration_buckets (
            asset TEXT NOT NULL, validator TEXT NOT NULL, le TEXT NOT NULL, count INTEGER NOT NULL,
            PRIMARY KEY (asset, validator, le))""",
        """CREATE TABLE attestations (
            id INTEGER PRIMARY KEY AUTOINCREMENT, asset TEXT NOT NULL, copy TEXT NOT NULL,
            note TEXT NOT NULL, created_at REAL NOT NULL, recovery_point REAL)""",
    ],
    2: [
        """CREATE TABLE copy_counters (
            asset TEXT NOT NULL, copy TEXT NOT NULL, bytes_verified INTEGER NOT NULL,
            PRIMARY KEY (asset, copy))""",
    ],
    3: v.SCHEMA_V3_SQLITE,
    4: [ACKS_TABLE.format(id="INTEGER", auto=" AUTOINCREMENT", real="REAL")],
    # Schema 5: the result chain (drwatch.store.chain); existing rows are chained by _chain_existing.
    5: [*chain.ADD_COLUMNS, chain.HEAD_TABLE.format(bigint="INTEGER"),
        chain.TOMBSTONES_TABLE.format(bigint="INTEGER", real="REAL")],
    # Schema 6: the restore-time model's rate samples (drwatch.store.rates).
    6: [rates.TABLE.format(id="INTEGER", auto=" AUTOINCREMENT", real="REAL", bigint="INTEGER"), rates.INDEX],
}


def _chain_existing(conn: sqlite3.Connection) -> None:
    """Schema 5: chain the results stored so far, in id order (in batches: a big store is never held in
    memory at once), and write the head."""
    last_id, head = 0, chain.GENESIS
    while rows := conn.execute(chain.SELECT_UNCHAINED, (last_id, chain.MIGRATE_BATCH)).fetchall():
        updates, last_id, head = chain.link_existing(rows, head, last_id)
        conn.executemany("UPDATE results SET prev_digest = ?, digest = ? WHERE id = ?", updates)
    conn.execute("INSERT INTO result_chain (id, last_id, head) VALUES (1, ?, ?)", (last_id, head))


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` in one transaction; refuse a newer one (``StoreSchemaError``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS drwatch_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM drwatch_schema").fetchone()
        current = row[0] or 0
        if current > SCHEMA_VERSION:
            raise StoreSchemaError(current, SCHEMA_VERSION)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            if version == 5:
                _chain_existing(conn)
            conn.execute("INSERT INTO drwatch_schema (version) VALUES (?)", (version,))
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def rollback(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if any (a failed BEGIN leaves none; ROLLBACK would hide its error)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
