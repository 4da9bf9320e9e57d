"""What Pinecone's REST API answers (2025-10), as drwatch reads it: indexes, backups, restore jobs, index
statistics and query matches (:mod:`drwatch.validators.vector.pinecone_api` asks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp (``2025-03-11T18:29:50.549505Z``) as unix seconds; None if absent/invalid."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace(" ", "T")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None
    return stamp.timestamp()


def int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class IndexInfo:
    name: str
    host: str
    dimension: int | None
    metric: str
    ready: bool
    state: str
    tags: dict[str, str] = field(default_factory=dict)
    deletion_protection: str = "disabled"

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> IndexInfo:
        status = doc.get("status") or {}
        tags = doc.get("tags") or {}
        return cls(name=str(doc.get("name", "")), host=str(doc.get("host") or ""),
                   dimension=int_or_none(doc.get("dimension")), metric=str(doc.get("metric") or ""),
                   ready=bool(status.get("ready", False)), state=str(status.get("state", "")),
                   tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
                   deletion_protection=str(doc.get("deletion_protection") or "disabled"))


@dataclass(frozen=True)
class Backup:
    backup_id: str
    name: str
    source_index_name: str
    status: str
    created: float | None  # unix seconds
    record_count: int | None
    namespace_count: int | None
    dimension: int | None
    metric: str
    size_bytes: int | None

    @property
    def usable(self) -> bool:
        """Finished: the API calls a finished backup ``Ready`` (older versions: ``Completed``)."""
        return self.status.lower() in ("ready", "completed") and self.created is not None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Backup:
        return cls(backup_id=str(doc.get("backup_id", "")), name=str(doc.get("name") or ""),
                   source_index_name=str(doc.get("source_index_name") or ""), status=str(doc.get("status") or ""),
                   created=parse_time(doc.get("created_at")), record_count=int_or_none(doc.get("record_count")),
                   namespace_count=int_or_none(doc.get("namespace_count")),
                   dimension=int_or_none(doc.get("dimension")), metric=str(doc.get("metric") or ""),
                   size_bytes=int_or_none(doc.get("size_bytes")))


@dataclass(frozen=True)
class RestoreJob:
    job_id: str
    backup_id: str
    target_index_name: str
    status: str
    created: float | None
    completed: float | None
    percent_complete: float | None

    @property
    def done(self) -> bool:
        return self.status.lower() == "completed"

    @property
    def failed(self) -> bool:
        return self.status.lower() in ("failed", "cancelled", "canceled", "error")

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RestoreJob:
        pct = doc.get("percent_complete")
        return cls(job_id=str(doc.get("restore_job_id", "")), backup_id=str(doc.get("backup_id") or ""),
                   target_index_name=str(doc.get("target_index_name") or ""), status=str(doc.get("status") or ""),
                   created=parse_time(doc.get("created_at")), completed=parse_time(doc.get("completed_at")),
                   percent_complete=float(pct) if isinstance(pct, int | float) else None)


@dataclass(frozen=True)
class IndexStats:
    total: int
    namespaces: dict[str, int]
    dimension: int | None


@dataclass(frozen=True)
class Match:
    id: str
    score: float
