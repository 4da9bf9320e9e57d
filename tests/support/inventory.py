"""S3 Inventory reports written in AWS's layout, for tests and benchmarks.

``take_inventory`` reads a bucket's objects as S3 Inventory would list them (one ListObjectsV2 + HeadObject
per object, by the test's own client, never through drwatch's endpoint); ``write_report`` publishes rows as
AWS does: ``<prefix>/<source>/<config id>/data/<uuid>.csv.gz`` (gzip CSV, every field quoted, no header,
keys URL-encoded) or ``.parquet`` (snake_case columns, timestamps in ms), then
``<prefix>/<source>/<config id>/YYYY-MM-DDTHH-MMZ/manifest.json`` and ``manifest.checksum`` (MD5 of it).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tests.support.s3helpers import Server, client

# The CSV fileSchema names, in AWS's order, and their Parquet column names.
FIELDS = [
    ("Bucket", "bucket"), ("Key", "key"), ("Size", "size"), ("LastModifiedDate", "last_modified_date"),
    ("ETag", "e_tag"), ("StorageClass", "storage_class"), ("IsMultipartUploaded", "is_multipart_uploaded"),
    ("ReplicationStatus", "replication_status"), ("EncryptionStatus", "encryption_status"),
    ("ObjectLockRetainUntilDate", "object_lock_retain_until_date"), ("ObjectLockMode", "object_lock_mode"),
    ("ObjectLockLegalHoldStatus", "object_lock_legal_hold_status"), ("ChecksumAlgorithm", "checksum_algorithm"),
]


def take_inventory(server: Server, bucket_name: str, prefix: str = "") -> list[dict[str, Any]]:
    """The bucket's current objects with the fields of an inventory row (Parquet names; times as datetimes)."""
    s3 = client(server)
    rows: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix):
        for obj in page.get("Contents", []):
            head = s3.head_object(Bucket=bucket_name, Key=obj["Key"], ChecksumMode="ENABLED")
            algo = next((a for a in ("CRC64NVME", "CRC32", "CRC32C", "SHA1", "SHA256") if head.get(f"Checksum{a}")), "")
            rows.append({
                "bucket": bucket_name, "key": obj["Key"], "size": int(obj["Size"]),
                "last_modified_date": obj["LastModified"], "e_tag": str(obj["ETag"]).strip('"'),
                "storage_class": obj.get("StorageClass") or "STANDARD", "is_multipart_uploaded": False,
                "replication_status": head.get("ReplicationStatus", ""),
                "encryption_status": "SSE-S3" if head.get("ServerSideEncryption") else "NOT-SSE",
                "object_lock_retain_until_date": head.get("ObjectLockRetainUntilDate"),
                "object_lock_mode": head.get("ObjectLockMode", ""),
                "object_lock_legal_hold_status": head.get("ObjectLockLegalHoldStatus", "OFF"),
                "checksum_algorithm": algo,
            })
    return rows


def _iso(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return str(value)


def csv_gz(rows: Sequence[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    out = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for row in rows:
        values = []
        for _name, col in FIELDS:
            v = row.get(col)
            if col == "key":
                v = quote(str(v), safe="/")
            elif isinstance(v, datetime) or col.endswith("_date"):
                v = _iso(v)
            elif isinstance(v, bool):
                v = "true" if v else "false"
            values.append("" if v is None else str(v))
        out.writerow(values)
    return gzip.compress(buf.getvalue().encode(), compresslevel=1)


def parquet(rows: Sequence[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def ts(v: Any) -> int | None:
        return int(v.timestamp() * 1000) if isinstance(v, datetime) else None

    cols: dict[str, Any] = {}
    for _name, col in FIELDS:
        values = [r.get(col) for r in rows]
        if col.endswith("_date"):
            cols[col] = pa.array([ts(v) for v in values], type=pa.timestamp("ms"))
        elif col == "size":
            cols[col] = pa.array(values, type=pa.int64())
        elif col == "is_multipart_uploaded":
            cols[col] = pa.array([bool(v) for v in values], type=pa.bool_())
        else:
            cols[col] = pa.array([None if v in (None, "") else str(v) for v in values], type=pa.string())
    sink = io.BytesIO()
    pq.write_table(pa.table(cols), sink)
    return sink.getvalue()


def write_report(server: Server, dest_bucket: str, *, prefix: str, source_bucket: str, config_id: str,
                 rows: Sequence[dict[str, Any]], fmt: str = "CSV", created: float | None = None, files: int = 3,
                 tamper: Callable[[dict[str, Any], dict[str, bytes]], None] | None = None,
                 bad_checksum: bool = False) -> str:
    """Publish ``rows`` as one report (rows shuffled over ``files`` data files: AWS promises no order); returns
    the report's ``YYYY-MM-DDTHH-MMZ``. ``tamper(manifest, data)`` may change the data files after their MD5s
    were taken; ``bad_checksum`` writes a manifest.checksum that is not manifest.json's MD5."""
    s3 = client(server)
    created = time.time() if created is None else created
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H-%MZ")
    base = "/".join(p for p in (prefix.strip("/"), source_bucket, config_id) if p)
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    data: dict[str, bytes] = {}
    ext = "csv.gz" if fmt == "CSV" else "parquet"
    for i in range(files):
        part = shuffled[i::files]
        data[f"{base}/data/{uuid.uuid4()}.{ext}"] = csv_gz(part) if fmt == "CSV" else parquet(part)
    schema = ", ".join(name for name, _ in FIELDS) if fmt == "CSV" else \
        "message s3.inventory { " + " ".join(f"optional binary {c};" for _, c in FIELDS) + " }"
    manifest: dict[str, Any] = {
        "sourceBucket": source_bucket, "destinationBucket": f"arn:aws:s3:::{dest_bucket}", "version": "2016-11-30",
        "creationTimestamp": str(int(created * 1000)), "fileFormat": fmt, "fileSchema": schema,
        "files": [{"key": k, "size": len(v), "MD5checksum": hashlib.md5(v).hexdigest()} for k, v in data.items()],
    }
    if tamper is not None:
        tamper(manifest, data)
    for key, body in data.items():
        s3.put_object(Bucket=dest_bucket, Key=key, Body=body)
    raw = json.dumps(manifest, indent=2).encode()
    checksum = hashlib.md5(raw + (b" " if bad_checksum else b"")).hexdigest()
    s3.put_object(Bucket=dest_bucket, Key=f"{base}/{stamp}/manifest.json", Body=raw)
    s3.put_object(Bucket=dest_bucket, Key=f"{base}/{stamp}/manifest.checksum", Body=checksum.encode() + b"\n")
    return stamp
