"""What drwatch knows of S3 objects and buckets: listed objects, HEAD answers (checksums, Object Lock), bucket
facts, and the requests a run sent (``RequestMeter``). Plain data; no I/O."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"})
FULL_OBJECT_ALGORITHMS = ("CRC64NVME", "SHA256", "SHA1", "CRC32C", "CRC32")


@dataclass(frozen=True)
class S3Object:
    key: str  # relative to the copy's prefix
    size: int
    etag: str
    last_modified: float
    storage_class: str = "STANDARD"
    version_id: str | None = None
    checksum_listed: bool = False  # the listing names an additional checksum algorithm for the object
    checksum_algorithm: str | None = None  # that algorithm (CRC32, CRC64NVME, SHA256...)


@dataclass(frozen=True)
class ObjectHead:
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64 (full-object only)
    composite: dict[str, str] = field(default_factory=dict)  # algorithm -> value (multipart composite)
    lock_mode: str | None = None
    retain_until: float | None = None
    legal_hold: bool = False
    version_id: str | None = None
    storage_class: str = "STANDARD"
    etag: str = ""
    replication_status: str = ""  # COMPLETED | PENDING | FAILED | REPLICA | "" (not replicated by a rule)


@dataclass(frozen=True)
class BucketFacts:
    region: str | None  # observed (GetBucketLocation); None if not allowed to read it
    versioning: str  # Enabled | Suspended | Disabled | unknown
    object_lock: bool | None
    default_lock_mode: str | None
    kms_key_arn: str | None
    encryption: str | None  # AES256 | aws:kms | None


# API operations -> the bounded ``operation`` label of the request counters.
_OPERATIONS = {"list_objects_v2": "list", "head_object": "head", "get_object": "get"}


class RequestMeter:
    """What drwatch sent to one location for one source of one run: HTTP requests by operation (retries
    included, as botocore reports them) and object bytes received (GET bodies). Listing and HEAD responses
    carry a few hundred bytes of XML/headers each and are not counted as egress; they are counted as
    requests."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.requests: dict[str, int] = {}
        self.egress_bytes = 0

    def count(self, op: str, attempts: int) -> None:
        label = _OPERATIONS.get(op, "bucket")
        self.requests[label] = self.requests.get(label, 0) + attempts

    def total(self) -> int:
        return sum(self.requests.values())


def _attempts(meta: Any) -> int:
    """HTTP requests one API call sent: the first plus botocore's retries."""
    try:
        return 1 + int((meta or {}).get("RetryAttempts", 0))
    except (TypeError, ValueError):
        return 1


def _b64_to_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).hex()
    except ValueError:
        return None


def sha256_hex_to_b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def parse_time(text: str | None) -> float:
    """An ISO 8601 (listings, Object Lock headers) or RFC 1123 (HTTP dates) time; 0.0 if absent or unreadable."""
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return 0.0


def _split_checksums(values: dict[str, str], ctype: str) -> tuple[dict[str, str], dict[str, str]]:
    """Full-object checksums and multipart composites (a composite value ends with "-N")."""
    checksums: dict[str, str] = {}
    composite: dict[str, str] = {}
    for algo, value in values.items():
        if ctype == "COMPOSITE" or "-" in value:
            composite[algo] = value
        else:
            checksums[algo] = value
    return checksums, composite


def _head_from_boto(resp: dict[str, Any]) -> ObjectHead:
    values = {a: str(resp[f"Checksum{a}"]) for a in FULL_OBJECT_ALGORITHMS if resp.get(f"Checksum{a}")}
    checksums, composite = _split_checksums(values, str(resp.get("ChecksumType") or ""))
    return ObjectHead(
        checksums=checksums,
        composite=composite,
        lock_mode=resp.get("ObjectLockMode"),
        retain_until=_ts(resp.get("ObjectLockRetainUntilDate")) if resp.get("ObjectLockRetainUntilDate") else None,
        legal_hold=resp.get("ObjectLockLegalHoldStatus") == "ON",
        version_id=resp.get("VersionId"),
        storage_class=str(resp.get("StorageClass") or "STANDARD"),
        etag=str(resp.get("ETag", "")).strip('"'),
        replication_status=str(resp.get("ReplicationStatus") or ""),
    )


def _head_from_headers(h: dict[str, str]) -> ObjectHead:
    """The same ObjectHead from the raw HeadObject response headers (lower-case names) of the lean path."""
    values = {a: v for a in FULL_OBJECT_ALGORITHMS if (v := h.get(f"x-amz-checksum-{a.lower()}"))}
    checksums, composite = _split_checksums(values, h.get("x-amz-checksum-type", ""))
    retain = h.get("x-amz-object-lock-retain-until-date")
    return ObjectHead(
        checksums=checksums,
        composite=composite,
        lock_mode=h.get("x-amz-object-lock-mode") or None,
        retain_until=parse_time(retain) if retain else None,
        legal_hold=h.get("x-amz-object-lock-legal-hold") == "ON",
        version_id=h.get("x-amz-version-id") or None,
        storage_class=h.get("x-amz-storage-class") or "STANDARD",
        etag=h.get("etag", "").strip('"'),
        replication_status=h.get("x-amz-replication-status", ""),
    )


def checksum_matches_sha256(head: ObjectHead, sha256_hex: str) -> bool | None:
    """True/False if the object's full-object SHA256 checksum decides it, None if it has none."""
    value = head.checksums.get("SHA256")
    if value is None:
        return None
    return _b64_to_hex(value) == sha256_hex
