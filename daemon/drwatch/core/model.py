"""Immutable result types shared by validators, the runner, the store and the snapshot."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar


class Outcome(enum.StrEnum):
    OK = "ok"  # proven
    FAILED = "failed"  # the backup is bad
    ERROR = "error"  # we could not check
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)
# The run-duration histogram's buckets (seconds): persisted per result by the store, exported by /metrics.
DURATION_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, math.inf,
)


def bucket_label(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(float(le))


def bucket_for(duration: float) -> str:
    for le in DURATION_BUCKETS:
        if duration <= le:
            return bucket_label(le)
    return "+Inf"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


_F = TypeVar("_F", bound=Mapping[str, Any])
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def worst_first(findings: Iterable[_F]) -> list[_F]:
    """Findings as documents (``severity`` a string), critical first, then warnings, then info; stable within a
    severity. Views that show a few of a run's findings show these first: the reason a run failed is never
    hidden behind its warnings."""
    return sorted(findings, key=lambda f: SEVERITY_RANK.get(str(f.get("severity")), 3))


class CopyState(enum.StrEnum):
    VERIFIED = "verified"  # holds the reference recovery point with matching content
    FAILED = "failed"  # missing/mismatching content, or stale
    ERROR = "error"  # could not be checked
    OFFLINE = "offline"  # declared offline and not mounted: attestation stands in


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable, machine-readable (bounded): e.g. missing_file, size_mismatch
    message: str  # human text; never in metric labels
    subject: str = ""  # what it is about: copy name, relative path...

    def to_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "subject": self.subject,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(Severity(data["severity"]), data["code"], data["message"], data.get("subject", ""))


@dataclass(frozen=True)
class CopyReport:
    """What one validator run observed about one copy (production included, as ``role='production'``)."""

    copy: str
    location: str
    role: str  # "production" or "copy"
    state: CopyState
    recovery_point: float | None = None  # unix time of the recovery point this copy proved to hold
    media: str = "unknown"  # effective media class used by compliance
    media_observed: bool = False
    site: str = ""
    region: str = ""
    provider: str = ""
    immutable: bool | None = None  # None: not observable for this kind of copy
    offline: bool = False
    objects: dict[str, int] = field(default_factory=dict)  # verified/missing/mismatch/extra counts
    bytes_verified: int = 0
    region_observed: bool = False  # region read from the storage itself (S3 GetBucketLocation)
    versioning: str = ""  # S3 bucket versioning status
    lock: dict[str, int] = field(default_factory=dict)  # objects by lock mode: compliance/governance/none
    retain_until_min: float | None = None  # earliest Object Lock retain-until among the recovery point
    evidence: dict[str, int] = field(default_factory=dict)  # objects proven by checksum/etag/read/size
    dependencies: tuple[str, ...] = ()  # independence findings: shared_credentials, kms_in_production_region
    # Restore-time inputs (drwatch.state.rto): bytes this run read from the copy and the wall time with a read of
    # it in flight; the storage classes its objects were listed or HEADed in.
    read_bytes: int = 0
    read_seconds: float = 0.0
    storage_classes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "copy": self.copy,
            "location": self.location,
            "role": self.role,
            "state": self.state.value,
            "recovery_point": self.recovery_point,
            "media": self.media,
            "media_observed": self.media_observed,
            "site": self.site,
            "region": self.region,
            "provider": self.provider,
            "immutable": self.immutable,
            "offline": self.offline,
            "objects": dict(self.objects),
            "bytes_verified": self.bytes_verified,
            "region_observed": self.region_observed,
            "versioning": self.versioning,
            "lock": dict(self.lock),
            "retain_until_min": self.retain_until_min,
            "evidence": dict(self.evidence),
            "dependencies": list(self.dependencies),
            "read_bytes": self.read_bytes,
            "read_seconds": self.read_seconds,
            "storage_classes": list(self.storage_classes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CopyReport:
        return cls(
            copy=data["copy"],
            location=data["location"],
            role=data["role"],
            state=CopyState(data["state"]),
            recovery_point=data.get("recovery_point"),
            media=data.get("media", "unknown"),
            media_observed=bool(data.get("media_observed", False)),
            site=data.get("site", ""),
            region=data.get("region", ""),
            provider=data.get("provider", ""),
            immutable=data.get("immutable"),
            offline=bool(data.get("offline", False)),
            objects={str(k): int(v) for k, v in data.get("objects", {}).items()},
            bytes_verified=int(data.get("bytes_verified", 0)),
            region_observed=bool(data.get("region_observed", False)),
            versioning=str(data.get("versioning", "")),
            lock={str(k): int(v) for k, v in data.get("lock", {}).items()},
            retain_until_min=data.get("retain_until_min"),
            evidence={str(k): int(v) for k, v in data.get("evidence", {}).items()},
            dependencies=tuple(data.get("dependencies", ())),
            read_bytes=int(data.get("read_bytes", 0)),
            read_seconds=float(data.get("read_seconds", 0.0)),
            storage_classes=tuple(str(c) for c in data.get("storage_classes", ())),
        )


@dataclass(frozen=True)
class Report:
    """What a validator returns; the runner adds identity, timing and maps exceptions."""

    outcome: Outcome
    findings: tuple[Finding, ...] = ()
    figures: dict[str, float] = field(default_factory=dict)
    copies: tuple[CopyReport, ...] = ()
    recovery_point: float | None = None  # newest recovery point of the asset observed


@dataclass(frozen=True)
class Result:
    run_id: str
    asset: str
    validator: str
    kind: str
    outcome: Outcome
    started_at: float
    finished_at: float
    findings: tuple[Finding, ...] = ()
    figures: dict[str, float] = field(default_factory=dict)
    copies: tuple[CopyReport, ...] = ()
    recovery_point: float | None = None

    @property
    def duration(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "asset": self.asset,
            "validator": self.validator,
            "kind": self.kind,
            "outcome": self.outcome.value,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": self.duration,
            "recovery_point": self.recovery_point,
            "figures": dict(self.figures),
            "findings": [f.to_dict() for f in self.findings],
            "copies": [c.to_dict() for c in self.copies],
        }


@dataclass(frozen=True)
class Attestation:
    asset: str
    copy: str
    note: str
    created_at: float
    recovery_point: float | None = None


@dataclass(frozen=True)
class Ack:
    """``drwatch ack``: a person accepted the failures of one validator up to ``created_at`` (who and why are
    shown in status/check, never in metric labels). A later failure is not covered."""

    asset: str
    validator: str
    by: str
    reason: str
    created_at: float
