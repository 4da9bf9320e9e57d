"""S3 Inventory reports as evidence: an S3 copy's per-object facts without a request per object.

AWS publishes a report under ``<prefix>/<source bucket>/<configuration id>/`` in its destination bucket:
``YYYY-MM-DDTHH-MMZ/manifest.json`` (``creationTimestamp`` in ms, ``fileFormat``, ``fileSchema``, and
``files``: ``key``, ``size``, ``MD5checksum``), ``YYYY-MM-DDTHH-MMZ/manifest.checksum`` (the MD5 of
manifest.json) and the data files under ``data/`` (CSV-gzip without a header row, keys URL-encoded;
or Parquet with snake_case columns). A report is used only when it is younger than ``max_age``, the
manifest's MD5 matches ``manifest.checksum`` and every data file's MD5 matches the manifest; otherwise
a warning finding (``inventory_stale``, ``inventory_corrupt``, ``inventory_unreadable``, ``extra_missing``)
says why, and every object is HEADed as without a report: never a silent pass.

The listing stays the authority on existence: only listed objects are looked up, so an object the report
lists but the bucket no longer holds is missing like any other. The report answers for an object only when
it lists the object's current version with the listing's ETag and size and the object was last modified
before the report was taken (its listed second ended before the report's creation time); newer objects
are HEADed.

AWS does not promise any order of rows within or across data files, so the rows are held in an index keyed
by a 64-bit hash of the key (arrays of machine words, ~50 bytes per row: ~50 MB for a million objects;
benchmarks/README.md), not in a dict of Python objects. A hash collision could only matter if the colliding
row also carried the listed object's ETag and size.
"""

from __future__ import annotations

import array
import asyncio
import csv
import gzip
import hashlib
import json
import math
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import unquote

from drwatch.core.extras import PARQUET
from drwatch.core.model import Finding, Severity
from drwatch.storage.config import InventoryReportConfig
from drwatch.storage.filesystem import Entry
from drwatch.storage.s3 import ObjectHead, RequestMeter, S3Location, S3Missing, S3Unavailable, classify

_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z$")
_CHUNK = 1024 * 1024
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
    replication_status: str = ""
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


def _stamp_dirs(keys: Iterable[str], base: str) -> dict[str, set[str]]:
    """``YYYY-MM-DDTHH-MMZ`` directory -> the names in it (``manifest.json``, ``manifest.checksum``)."""
    out: dict[str, set[str]] = {}
    for key in keys:
        rest = key[len(base):].split("/")
        if len(rest) == 2 and _STAMP.match(rest[0]):
            out.setdefault(rest[0], set()).add(rest[1])
    return out


class InventorySource:
    """The report that covers one S3 location, loaded once per run on first use."""

    def __init__(self, client: S3Location, cfg: InventoryReportConfig, source_bucket: str, key_prefix: str,
                 subject: str) -> None:
        self.client = client
        self.cfg = cfg
        self.source_bucket = source_bucket
        self.key_prefix = key_prefix
        self.subject = subject
        self.index: InventoryIndex | None = None
        self.findings: list[Finding] = []
        self.answered = 0  # objects whose facts came from the report
        self._loaded = False
        self._lock = asyncio.Lock()

    @property
    def base(self) -> str:
        prefix = self.cfg.prefix.strip("/")
        return "/".join(p for p in (prefix, self.source_bucket, self.cfg.configuration_id) if p) + "/"

    async def head(self, key: str, entry: Entry, meter: RequestMeter | None, now: float) -> InventoryHead | None:
        """The object's facts from the report; None when it must be HEADed (no usable report, not in it, or
        modified since the report was taken)."""
        if not self._loaded:
            async with self._lock:
                if not self._loaded:
                    try:
                        self.index = await self._load(meter, now)
                    except ReportProblem as exc:
                        self.findings.append(Finding(Severity.WARNING, exc.code, f"{exc.message}; every object is "
                                                     "HEADed instead", self.subject))
                    self._loaded = True
        index = self.index
        # A listing's LastModified is cut to the second: an object listed in the second the report was taken in
        # may have been rewritten after it (and the report lists its previous version).
        if index is None or entry.etag is None or entry.mtime + 1.0 > index.created:
            return None
        found = index.lookup(key, entry.etag, entry.size)
        if found is not None:
            self.answered += 1
        return found

    async def _get(self, key: str, meter: RequestMeter | None, sink: Any) -> None:
        client = await self.client.client()
        try:
            resp = await client.get_object(Bucket=self.client.cfg.bucket, Key=key)
            if meter is not None:
                meter.count("get_object", 1)
            body = resp["Body"]
            try:
                while chunk := await body.read(_CHUNK):
                    await sink(chunk)
            finally:
                body.close()
        except Exception as exc:
            raise classify(exc, self.client.name) from None

    async def _small(self, key: str, meter: RequestMeter | None) -> bytes:
        parts: list[bytes] = []

        async def add(chunk: bytes) -> None:
            parts.append(chunk)
            if sum(map(len, parts)) > 64 * 1024 * 1024:
                raise ReportProblem("inventory_corrupt", f"{key} is larger than 64 MiB")

        await self._get(key, meter, add)
        return b"".join(parts)

    async def _load(self, meter: RequestMeter | None, now: float) -> InventoryIndex:
        where = f"s3://{self.client.cfg.bucket}/{self.base}"
        try:
            keys = [o.key async for o in self.client.objects(self.base, meter)]
            stamps = _stamp_dirs((f"{self.base}{k}" for k in keys), self.base)
            dated = sorted(s for s, names in stamps.items() if "manifest.json" in names)
            if not dated:
                raise ReportProblem("inventory_unreadable", f"no inventory report (manifest.json) under {where}")
            newest = dated[-1]
            if "manifest.checksum" not in stamps[newest]:
                raise ReportProblem("inventory_corrupt", f"report {newest} has no manifest.checksum")
            raw = await self._small(f"{self.base}{newest}/manifest.json", meter)
            checksum = (await self._small(f"{self.base}{newest}/manifest.checksum", meter)).decode(
                "ascii", "replace").strip().lower()
            if hashlib.md5(raw, usedforsecurity=False).hexdigest() != checksum:
                raise ReportProblem("inventory_corrupt", f"report {newest}: manifest.json does not match "
                                    "manifest.checksum (MD5)")
            manifest = _manifest(raw, newest)
            created = manifest["created"]
            if (manifest["source"] or self.source_bucket) != self.source_bucket:
                raise ReportProblem("inventory_unreadable", f"report {newest} is for bucket {manifest['source']!r}, "
                                    f"not {self.source_bucket!r}")
            age = now - created
            if age > self.cfg.max_age.total_seconds():
                from drwatch.core.durations import format_duration

                raise ReportProblem("inventory_stale", f"the newest report ({newest}) is {format_duration(age)} old "
                                    f"(max_age {format_duration(self.cfg.max_age.total_seconds())})")
            fmt = manifest["format"]
            if fmt == "Parquet" and PARQUET.missing():
                raise ReportProblem("extra_missing", f"the report is Parquet, which needs pyarrow: {PARQUET.install}")
            if fmt not in ("CSV", "Parquet"):
                raise ReportProblem("inventory_unreadable", f"report {newest} is {fmt}; drwatch reads CSV and Parquet")
            columns = [CSV_COLUMNS.get(c.strip(), c.strip()) for c in manifest["schema"].split(",")]
            if fmt == "CSV" and (missing := [c for c in REQUIRED if c not in columns]):
                raise ReportProblem("inventory_unreadable", f"the report lacks {', '.join(missing)} (add the fields "
                                    "to the inventory configuration)")
            index = InventoryIndex(created, self.key_prefix)
            for f in manifest["files"]:
                await self._data_file(index, f, fmt, columns, meter)
            return index
        except S3Missing as exc:
            raise ReportProblem("inventory_unreadable", f"cannot read the report under {where}: "
                                f"{exc.what} (bucket or object does not exist)") from None
        except S3Unavailable as exc:
            raise ReportProblem("inventory_unreadable", f"cannot read the report under {where}: {exc.message}") \
                from None

    async def _data_file(self, index: InventoryIndex, f: dict[str, Any], fmt: str, columns: list[str],
                         meter: RequestMeter | None) -> None:
        key, expected = str(f["key"]), str(f["MD5checksum"]).lower()
        tmp = await asyncio.to_thread(tempfile.TemporaryFile)  # unlinked at once: nothing left behind, ever
        try:
            digest = hashlib.md5(usedforsecurity=False)

            def absorb(chunk: bytes) -> None:
                digest.update(chunk)
                tmp.write(chunk)

            async def sink(chunk: bytes) -> None:
                await asyncio.to_thread(absorb, chunk)

            await self._get(key, meter, sink)
            if digest.hexdigest() != expected:
                raise ReportProblem("inventory_corrupt", f"data file {key.rsplit('/', 1)[-1]} does not match its MD5 "
                                    "in manifest.json")
            await asyncio.to_thread(tmp.seek, 0)
            try:
                if fmt == "CSV":
                    await asyncio.to_thread(index.add_csv, tmp, columns)
                else:
                    await asyncio.to_thread(index.add_parquet, tmp)
            except (OSError, EOFError, ValueError, KeyError, csv.Error) as exc:
                raise ReportProblem("inventory_unreadable", f"data file {key.rsplit('/', 1)[-1]} cannot be "
                                    f"parsed: {type(exc).__name__}") from None
        finally:
            tmp.close()


def _manifest(raw: bytes, stamp: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
        created = int(doc["creationTimestamp"]) / 1000.0
        files = [{"key": str(f["key"]), "MD5checksum": str(f["MD5checksum"])} for f in doc["files"]]
        return {"created": created, "source": str(doc.get("sourceBucket") or ""),
                "format": str(doc.get("fileFormat", "")), "schema": str(doc.get("fileSchema", "")), "files": files}
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportProblem("inventory_corrupt", f"report {stamp}: manifest.json is not a valid manifest "
                            f"({type(exc).__name__})") from None

