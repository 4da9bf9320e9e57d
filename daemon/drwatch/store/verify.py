"""The verification ledger's tables and statements, shared by both store backends.

Statements are written with ``?`` placeholders (SQLite); :func:`pg` numbers them for asyncpg. Keys sort
by code point in both (``COLLATE "C"`` in PostgreSQL), the order of S3 listings and of the replica merge.
"""

from __future__ import annotations

import json
import re
from typing import Any

from drwatch.validators.copies.ledger import CopySummary, LedgerEntry, LedgerRow

SCHEMA_V3_SQLITE = [
    """CREATE TABLE verify_ledger (
        asset TEXT NOT NULL, copy TEXT NOT NULL, key TEXT NOT NULL,
        size INTEGER NOT NULL, version TEXT NOT NULL, storage_class TEXT NOT NULL,
        evidence TEXT NOT NULL, value TEXT NOT NULL, checked_at REAL NOT NULL, read_at REAL,
        PRIMARY KEY (asset, copy, key))""",
    "CREATE INDEX verify_ledger_read ON verify_ledger (asset, read_at)",
    """CREATE TABLE verify_spent (
        asset TEXT NOT NULL, day INTEGER NOT NULL, egress_bytes INTEGER NOT NULL, requests INTEGER NOT NULL,
        PRIMARY KEY (asset, day))""",
    """CREATE TABLE verify_counters (
        location TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (location, name))""",
    """CREATE TABLE verify_summary (
        asset TEXT NOT NULL, copy TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (asset, copy))""",
]
SCHEMA_V3_POSTGRES = [
    """CREATE TABLE verify_ledger (
        asset TEXT NOT NULL, copy TEXT NOT NULL, key TEXT COLLATE "C" NOT NULL,
        size BIGINT NOT NULL, version TEXT NOT NULL, storage_class TEXT NOT NULL,
        evidence TEXT NOT NULL, value TEXT NOT NULL, checked_at DOUBLE PRECISION NOT NULL,
        read_at DOUBLE PRECISION,
        PRIMARY KEY (asset, copy, key))""",
    "CREATE INDEX verify_ledger_read ON verify_ledger (asset, read_at NULLS FIRST)",
    """CREATE TABLE verify_spent (
        asset TEXT NOT NULL, day BIGINT NOT NULL, egress_bytes BIGINT NOT NULL, requests BIGINT NOT NULL,
        PRIMARY KEY (asset, day))""",
    """CREATE TABLE verify_counters (
        location TEXT NOT NULL, name TEXT NOT NULL, value BIGINT NOT NULL, PRIMARY KEY (location, name))""",
    """CREATE TABLE verify_summary (
        asset TEXT NOT NULL, copy TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (asset, copy))""",
]

LEDGER_COLUMNS = "key, size, version, storage_class, evidence, value, checked_at, read_at"
UPSERT_LEDGER = (
    "INSERT INTO verify_ledger (asset, copy, key, size, version, storage_class, evidence, value, checked_at, "
    "read_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (asset, copy, key) DO UPDATE SET "
    "size = excluded.size, version = excluded.version, storage_class = excluded.storage_class, "
    "evidence = excluded.evidence, value = excluded.value, checked_at = excluded.checked_at, "
    "read_at = excluded.read_at"
)
DELETE_LEDGER = "DELETE FROM verify_ledger WHERE asset = ? AND copy = ? AND key = ?"
ADD_SPENT = (
    "INSERT INTO verify_spent VALUES (?,?,?,?) ON CONFLICT (asset, day) DO UPDATE SET "
    "egress_bytes = verify_spent.egress_bytes + excluded.egress_bytes, "
    "requests = verify_spent.requests + excluded.requests"
)
PRUNE_SPENT = "DELETE FROM verify_spent WHERE asset = ? AND day < ?"
ADD_COUNTER = (
    "INSERT INTO verify_counters VALUES (?,?,?) ON CONFLICT (location, name) DO UPDATE SET "
    "value = verify_counters.value + excluded.value"
)
GET_SPENT = (
    "SELECT COALESCE(SUM(egress_bytes), 0), COALESCE(SUM(requests), 0) FROM verify_spent WHERE asset = ? AND day = ?"
)
PAGE = f"SELECT {LEDGER_COLUMNS} FROM verify_ledger WHERE asset = ? AND copy = ? AND key > ? ORDER BY key LIMIT ?"
QUEUE = (
    "SELECT copy, key, size, read_at FROM verify_ledger WHERE asset = ? "
    "ORDER BY read_at NULLS FIRST, copy, key LIMIT ? OFFSET ?"
)
TOTALS = (
    "SELECT copy, COUNT(*), COALESCE(SUM(size), 0), "
    "COALESCE(SUM(CASE WHEN read_at IS NULL OR read_at < ? THEN size ELSE 0 END), 0) "
    "FROM verify_ledger WHERE asset = ? GROUP BY copy"
)
SUMMARY = (  # a row found bad (evidence 'mismatch') is proven by nothing, whenever it was read
    "SELECT COUNT(*), COALESCE(SUM(size), 0), "
    "COALESCE(SUM(CASE WHEN read_at >= ? AND evidence <> 'mismatch' THEN size ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN evidence = 'checksum' AND checked_at >= ? THEN size ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN evidence = 'etag' AND checked_at >= ? THEN size ELSE 0 END), 0), "
    "MIN(read_at), COUNT(read_at) "
    "FROM verify_ledger WHERE asset = ? AND copy = ?"
)
BY_CLASS = (
    "SELECT storage_class, COALESCE(SUM(size), 0) FROM verify_ledger WHERE asset = ? AND copy = ? "
    "GROUP BY storage_class"
)
PUT_SUMMARY = (
    "INSERT INTO verify_summary VALUES (?,?,?) ON CONFLICT (asset, copy) DO UPDATE SET data = excluded.data"
)
LOAD_SUMMARIES = "SELECT asset, copy, data FROM verify_summary"
LOAD_COUNTERS = "SELECT location, name, value FROM verify_counters"

_PLACEHOLDER = re.compile(r"\?")


def pg(sql: str) -> str:
    """The statement with ``$1, $2, ...`` placeholders (asyncpg)."""
    counter = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


def entry_from_row(row: Any) -> LedgerEntry:
    return LedgerEntry(str(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4]), str(row[5]),
                       float(row[6]), None if row[7] is None else float(row[7]))


def queue_row(row: Any) -> LedgerRow:
    return LedgerRow(str(row[0]), str(row[1]), int(row[2]), None if row[3] is None else float(row[3]))


def summary_from_rows(agg: Any, classes: list[Any], base: CopySummary) -> CopySummary:
    """The aggregate rows of SUMMARY and BY_CLASS over a summary's non-ledger fields."""
    objects, total, read, checksum, etag, oldest, read_count = agg
    never_read = int(objects) - int(read_count)
    return CopySummary(
        objects=int(objects), bytes=int(total),
        bytes_by_evidence={"read": int(read), "checksum": int(checksum), "etag": int(etag)},
        oldest_read=0.0 if never_read or oldest is None else float(oldest),
        bytes_by_class={str(c) or "STANDARD": int(n) for c, n in classes},
        location=base.location, egress_bytes_per_day=base.egress_bytes_per_day,
        requests_per_day=dict(base.requests_per_day), period=base.period, computed_at=base.computed_at,
    )


def summaries(rows: list[Any]) -> dict[tuple[str, str], CopySummary]:
    return {(str(a), str(c)): CopySummary.from_dict(json.loads(d)) for a, c, d in rows}


def counters(rows: list[Any]) -> dict[tuple[str, str], int]:
    return {(str(loc), str(name)): int(v) for loc, name, v in rows}
