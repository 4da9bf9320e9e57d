"""The rows of an S3 Inventory report held in memory: an index keyed by a 64-bit hash of the key (arrays of machine
words, ~50 bytes per row), filled from CSV-gzip or Parquet data files and asked per listed object
(``storage/inventory.py`` finds, verifies and loads the report). A hash collision could only matter if the
colliding row also carried the listed object's ETag and size.
"""

from __future__ import annotations

import array
import csv
import gzip
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import unquote

from drwatch.storage.s3model import ObjectHead

_MASK = (1 << 64) - 1
# CSV ``fileSchema`` names -> the Parquet column names AWS uses for the same fields.
CSV_COLUMNS = {
    "Bucket": "bucket", "Key": "key", "VersionId": "version_id", "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker", "Size": "size", "LastModifiedDate": "last_modified_date",
    "ETag": "e_tag", "StorageClass": "storage_class", "IsMultipartUploaded": "is_multipart_uploaded",
    "ReplicationStatus": "replication_status", "EncryptionStatus": "encryption_status",
    "ObjectLockRetainUntilDate": "object_lock_retain_until_date", "ObjectLockMode": "object_lock_mode",
    "ObjectLockLegalHoldStatus": "object_lock_legal_hold_status",
    "IntelligentTieringAccessTier": "intelligent_tiering_access_tier", "BucketKeyStatus": "bucket_key_status",
    "ChecksumAlgorithm": "checksum_algorithm", "ObjectAccessControlList": "object_access_control_list",
    "ObjectOwner": "object_owner",
}
# Without these a report cannot stand in for a HEAD (the Object Lock fields are optional in a configuration).
REQUIRED = ("key", "size", "e_tag", "last_modified_date", "object_lock_mode", "object_lock_retain_until_date",
            "object_lock_legal_hold_status")
_MODES = {"": 0, "GOVERNANCE": 1, "COMPLIANCE": 2}
_MODE_NAMES = (None, "GOVERNANCE", "COMPLIANCE")
_WORDS = ("storage_class", "checksum_algorithm", "replication_status", "encryption_status")


@dataclass(frozen=True)
class InventoryHead(ObjectHead):
    """An object's facts as the report lists them. The report names the checksum algorithm, never its value:
    where a checksum value would decide a verdict, the object is HEADed after all."""

    checksum_algorithm: str = ""
    encryption_status: str = ""


class ReportProblem(Exception):
    """The report cannot be used (its finding code and message)."""

    def __init__(self, code: str, message: str) -> None:
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


def _time(value: Any) -> float:
    """A CSV ISO-8601 time (``2026-12-07T10:00:00.000Z``), a Parquet timestamp or ms since the epoch; NaN if empty."""
    if value is None or value == "":
        return math.nan
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value) / 1000.0
    return _iso(str(value))


def _iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp() if text else math.nan


def _yes(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class InventoryIndex:
    """The rows of one report under one key prefix: parallel arrays, found through an open-addressing table of
    64-bit key hashes (memory per row is a few machine words whatever the order of the rows)."""

    def __init__(self, created: float, key_prefix: str) -> None:
        self.created = created
        self.key_prefix = key_prefix
        self._hash = array.array("Q")
        self._etag = array.array("Q")
        self._size = array.array("q")
        self._until = array.array("d")  # NaN: no retain-until date
        self._flags = array.array("B")  # lock mode (0 none, 1 GOVERNANCE, 2 COMPLIANCE) | legal hold << 2
        self._words = array.array("B", b"")  # per row 4 interned codes: class, checksum, replication, encryption
        self._names: list[str] = [""]
        self._codes: dict[str, int] = {"": 0}
        self._table = array.array("I", bytes(4 * 1024))  # row + 1; 0: free slot

    def __len__(self) -> int:
        return len(self._hash)

    def _code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            if len(self._names) >= 255:
                return 0  # beyond 255 distinct values a field is not a fact drwatch uses
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    def _slot(self, h: int) -> int:
        table, mask = self._table, len(self._table) - 1
        i = h & mask
        while (r := table[i]) and self._hash[r - 1] != h:
            i = (i + 1) & mask
        return i

    def _grow(self) -> None:
        self._table = array.array("I", bytes(4 * len(self._table) * 2))
        for row, h in enumerate(self._hash):
            self._table[self._slot(h)] = row + 1

    def add(self, row: dict[str, Any]) -> None:
        """One row (Parquet column names). Rows of older versions and delete markers are passed over."""
        if row.get("is_latest") not in (None, "") and not _yes(row["is_latest"]):
            return
        if _yes(row.get("is_delete_marker")):
            return
        self._put(str(row["key"]), str(row.get("e_tag") or ""), int(row.get("size") or 0),
                  _time(row.get("last_modified_date")), _time(row.get("object_lock_retain_until_date")),
                  str(row.get("object_lock_mode") or ""), str(row.get("object_lock_legal_hold_status") or ""),
                  [str(row.get(name) or "") for name in _WORDS])

    def _put(self, key: str, etag: str, size: int, modified: float, until: float, mode: str, hold: str,
             words: list[str]) -> None:
        if not key.startswith(self.key_prefix):
            return
        h = hash(key) & _MASK
        slot = self._slot(h)
        if self._table[slot]:  # the same key twice (should not happen): the later row wins, in place
            n = self._table[slot] - 1
        else:
            n = len(self._hash)
            self._hash.append(h)
            self._etag.append(0)
            self._size.append(0)
            self._until.append(math.nan)
            self._flags.append(0)
            self._words.extend(b"\0\0\0\0")
            self._table[slot] = n + 1
        self._etag[n] = hash(etag.strip('"')) & _MASK
        # Modified after the report was taken (cannot happen in AWS's reports): never used.
        self._size[n] = -1 if modified > self.created else size
        self._until[n] = until
        self._flags[n] = _MODES.get(mode.upper(), 0) | (4 if hold.upper() == "ON" else 0)
        for i, word in enumerate(words):
            self._words[4 * n + i] = self._code(word)
        if len(self._hash) * 2 > len(self._table):
            self._grow()

    def lookup(self, key: str, etag: str, size: int) -> InventoryHead | None:
        """The listed object's facts, if the report lists this key with the listing's ETag and size."""
        r = self._table[self._slot(hash(key) & _MASK)]
        if not r:
            return None
        n = r - 1
        if self._size[n] != size or self._etag[n] != hash(etag.strip('"')) & _MASK:
            return None
        flags = self._flags[n]
        until = self._until[n]
        words = [self._names[self._words[4 * n + i]] for i in range(4)]
        return InventoryHead(
            lock_mode=_MODE_NAMES[flags & 3], retain_until=None if math.isnan(until) else until,
            legal_hold=bool(flags & 4), storage_class=words[0] or "STANDARD", etag=etag.strip('"'),
            checksum_algorithm=words[1], replication_status=words[2], encryption_status=words[3])

    # --- data files (blocking: run in a worker thread) -------------------------------------------------

    def add_csv(self, f: IO[bytes], columns: list[str]) -> None:
        # Column positions; a field the report lacks points at the "" appended to every row.
        at = {name: columns.index(name) if name in columns else -1 for name in (*REQUIRED, *_WORDS, "is_latest",
                                                                               "is_delete_marker")}
        k, e, z, m, u = (at[c] for c in ("key", "e_tag", "size", "last_modified_date",
                                          "object_lock_retain_until_date"))
        mo, ho, latest, marker = (at[c] for c in ("object_lock_mode", "object_lock_legal_hold_status", "is_latest",
                                                  "is_delete_marker"))
        words = [at[c] for c in _WORDS]
        with gzip.open(f, "rt", encoding="utf-8", newline="") as text:
            for values in csv.reader(text):
                values.append("")
                if values[latest].lower() not in ("", "true") or values[marker].lower() == "true":
                    continue
                key = values[k]
                if "%" in key or "+" in key:
                    key = unquote(key.replace("+", " "))
                self._put(key, values[e], int(values[z] or 0), _iso(values[m]), _iso(values[u]), values[mo],
                          values[ho], [values[i] for i in words])

    def add_parquet(self, f: IO[bytes]) -> None:
        import pyarrow.parquet as pq  # the ``ml`` extra

        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise ReportProblem("inventory_unreadable", f"the report's Parquet files lack {', '.join(missing)}")
        wanted = [c for c in (*REQUIRED, "is_latest", "is_delete_marker", "storage_class", "checksum_algorithm",
                              "replication_status", "encryption_status") if c in names]
        for batch in pf.iter_batches(batch_size=65536, columns=wanted):
            cols = {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}
            for i in range(batch.num_rows):
                self.add({name: values[i] for name, values in cols.items()})
