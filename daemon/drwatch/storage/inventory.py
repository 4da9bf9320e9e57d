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

import asyncio
import csv
import hashlib
import json
import re
import tempfile
from collections.abc import Iterable
from typing import Any

from drwatch.core.extras import PARQUET
from drwatch.core.model import Finding, Severity
from drwatch.storage.config import InventoryReportConfig
from drwatch.storage.filesystem import Entry
from drwatch.storage.inventory_index import CSV_COLUMNS, REQUIRED, InventoryHead, InventoryIndex, ReportProblem
from drwatch.storage.s3 import RequestMeter, S3Location, S3Missing, S3Unavailable, classify

_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z$")
_CHUNK = 1024 * 1024
_MASK = (1 << 64) - 1


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

