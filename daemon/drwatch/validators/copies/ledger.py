"""Verification economy, the pure part: the asset policy, the read planner and the copy summary.

The ledger (kept by the store, one row per asset x copy x object) records for every object its size, its
version (S3 ETag, or the file's mtime, inode and ctime: a replaced object is due at once), the cheap evidence
that last proved it (provider checksum or ETag), the value proven, when, and when its bytes were last read
and hashed. Each ``replica`` run proves every
object by metadata (no egress) and reads the least-recently-read objects up to the day's allowance:

    allowance = min(budget.egress_bytes_per_day, max(read today + due bytes, total bytes / read_every in days))

where *due* bytes are those never read or that will have been read longer than ``read_every`` ago by the
next run (:func:`due_cutoff`). Reading ahead at the pace ``total / read_every`` spreads reads evenly;
reading all due bytes at once catches up after a change.
An object whose read costs more than a whole day's egress budget can never be read: it is left out of the
plan, of the due bytes and of the pace, and reported (:class:`OverBudget`) instead of blocking the queue.
Nothing here does I/O: the store feeds rows in, the planner answers which objects to read today.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator

from drwatch.core.durations import Duration

DAY = 86400.0
EVIDENCE = ("read", "checksum", "etag")  # the coverage metric's evidence label values
PRODUCTION = "production"  # the ledger's name for production (a copy label can never be this)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}


def parse_size(value: Any) -> int:
    """Bytes from an integer or text like ``500MB``, ``2GiB``, ``1.5TB`` (decimal and binary units)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a size must be a number of bytes or text like 500MB, 2GiB")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"invalid size {value!r}: expected e.g. 500MB, 2GiB, 1048576")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").lower()])


ByteSize = Annotated[int, BeforeValidator(parse_size), PlainSerializer(int, return_type=int)]


class VerificationBudget(BaseModel):
    """What verification may spend per UTC day for one asset (all its copies and reference reads)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    egress_bytes_per_day: ByteSize | None = None  # None: no limit on bytes read
    requests_per_day: int | None = Field(default=None, ge=1, strict=True)  # None: no limit on requests


class VerificationPolicy(BaseModel):
    """``verification: {read_every: 30d, budget: {egress_bytes_per_day: 2GB, requests_per_day: 100000}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    read_every: Duration = timedelta(days=30)
    budget: VerificationBudget = Field(default_factory=VerificationBudget)

    @field_validator("read_every")
    @classmethod
    def _at_least_a_day(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=1):
            raise ValueError("read_every must be at least 1d (the budget is per day)")
        return value

    @property
    def read_every_days(self) -> float:
        return self.read_every.total_seconds() / DAY


def day_of(ts: float) -> int:
    """The UTC day number a budget is counted in."""
    return int(ts // DAY)


def due_cutoff(policy: VerificationPolicy, now: float, run_interval: float = DAY) -> float:
    """Objects last read before this time are *due*: they go stale (read longer than ``read_every`` ago)
    before the next run, ``run_interval`` from now, so this run is the last to read them in time. An object
    too large for the day's pace is not read ahead; it is read when due, still within ``read_every``."""
    return now - policy.read_every.total_seconds() + run_interval


@dataclass(frozen=True)
class LedgerRow:
    """One object of one copy as the planner sees it."""

    copy: str
    key: str
    size: int
    read_at: float | None  # None: never read (new or changed)


@dataclass(frozen=True)
class Totals:
    """An asset's ledger at the start of a run: objects and bytes, and how many of them are due."""

    objects: int = 0
    bytes: int = 0
    due_bytes: int = 0  # never read or stale by the next run (see due_cutoff)


@dataclass(frozen=True)
class LedgerEntry:
    """A stored ledger row of one copy."""

    key: str
    size: int
    version: str
    storage_class: str
    evidence: str  # the cheap evidence of the last metadata check: checksum, etag or size; or mismatch
    value: str  # the value that evidence proved (checksum, ETag); for a mismatch "HOW|REFERENCE|CHECKSUM": how
    # it was found bad (read, checksum, size...), the reference it was compared with (seal sha256 or version)
    # and the object's own checksum or ETag then (empty when it had none)
    checked_at: float
    read_at: float | None


@dataclass
class LedgerBatch:
    """Ledger changes of one asset written in one transaction, with what they cost."""

    asset: str
    upserts: list[tuple[Any, ...]]  # drwatch.store.verify.UPSERT_LEDGER parameters without the asset
    deletes: list[tuple[str, str]]  # (copy, key)
    day: int
    egress_bytes: int = 0
    requests: int = 0
    counters: dict[tuple[str, str], int] | None = None  # (location, name) -> increment

    def upsert_params(self) -> list[tuple[Any, ...]]:
        return [(self.asset, *u) for u in self.upserts]

    def delete_params(self) -> list[tuple[str, str, str]]:
        return [(self.asset, c, k) for c, k in self.deletes]

    def counter_params(self) -> list[tuple[str, str, int]]:
        return [(loc, name, n) for (loc, name), n in (self.counters or {}).items() if n]


def daily_allowance(policy: VerificationPolicy, totals: Totals, spent_today: int = 0) -> int:
    """Bytes the asset should read in all today (``spent_today`` included): what was read already plus
    everything still due (catch up), or the pace, whichever is larger; never above the egress budget."""
    pace = math.ceil(totals.bytes / policy.read_every_days)
    want = max(spent_today + totals.due_bytes, pace)
    cap = policy.budget.egress_bytes_per_day
    return want if cap is None else min(cap, want)


@dataclass
class Plan:
    """The objects to read this run, chosen least-recently-read first within the allowance."""

    reads: dict[tuple[str, str], int] = field(default_factory=dict)  # (copy, key) -> size
    egress_bytes: int = 0  # bytes the plan expects to read (copies + reference reads)
    requests: int = 0  # GET requests the plan expects to send
    over_budget: int = 0  # rows passed over because one read costs more than a whole day's budget

    def __contains__(self, item: tuple[str, str]) -> bool:
        return item in self.reads


def over_day_budget(size: int, day_budget: int | None, reference_read: bool = False) -> bool:
    """Whether reading one object (and its reference, when that must be read too) costs more than a whole
    day's egress budget: such an object can never be read-verified at this budget."""
    return day_budget is not None and size * (2 if reference_read else 1) > day_budget


def select_reads(rows: Iterable[LedgerRow], egress_left: int | None, requests_left: int | None,
                 reference_read: bool = False, *, day_budget: int | None = None,
                 due_before: float | None = None) -> Plan:
    """Take rows in the order given (least recently read first) while they fit what is left today.

    ``reference_read``: proving a read also reads the reference object (no seal and no provider SHA256
    on production), so the first read of each key costs its size twice and one more request.

    A row that does not fit today's egress left:

    * costs more than ``day_budget`` (a whole day's budget): it can never be read; passed over and counted
      (``Plan.over_budget``), so it cannot block the objects behind it;
    * is due (never read, or read before ``due_before``; every row when that is None): the plan ends there.
      It reserves the rest of the day: at the front of the queue it fits the next day's budget, so a large
      due object is never starved by smaller ones behind it;
    * is not due (read ahead of its time): passed over; smaller rows behind it may use the room. It becomes
      due in time and then reserves as above.

    A row that does not fit the requests left ends the plan (every read needs one or two requests).
    """
    plan = Plan()
    charged: set[str] = set()
    for row in rows:
        if over_day_budget(row.size, day_budget, reference_read):
            plan.over_budget += 1
            continue
        cost = row.size
        reqs = 1
        if reference_read and row.key not in charged:
            cost += row.size
            reqs += 1
        if egress_left is not None and plan.egress_bytes + cost > egress_left:
            due = due_before is None or row.read_at is None or row.read_at < due_before
            if due:
                break
            continue
        if requests_left is not None and plan.requests + reqs > requests_left:
            break
        plan.reads[(row.copy, row.key)] = row.size
        plan.egress_bytes += cost
        plan.requests += reqs
        if reference_read:
            charged.add(row.key)
    return plan


@dataclass(frozen=True)
class OverBudget:
    """Objects whose read costs more than a whole day's egress budget: never read-verified at this budget."""

    objects: int = 0
    bytes: int = 0
    largest: int = 0  # the largest single read cost: the least daily budget that could read each of them
    example: str = ""  # ``copy:key`` of the object with that cost

    def add(self, subject: str, size: int, cost: int) -> OverBudget:
        bigger = cost > self.largest
        return OverBudget(self.objects + 1, self.bytes + size, cost if bigger else self.largest,
                          subject if bigger else self.example)


@dataclass(frozen=True)
class BudgetShortfall:
    """What reading every readable byte within ``read_every`` needs per day, against the budget (objects
    larger than a day's budget are left out: they are never read at any pace, see :class:`OverBudget`)."""

    needed_bytes_per_day: int
    needed_requests_per_day: int
    bytes_short: bool
    requests_short: bool
    days_for_full_read: float  # at the budget's pace, for the readable bytes


def shortfall(policy: VerificationPolicy, totals: Totals, metadata_requests_per_day: float,
              reference_read: bool = False) -> BudgetShortfall | None:
    """None when the budget allows reading every byte of ``totals`` within ``read_every``; else what it
    would take. ``totals`` should hold only objects that fit a day's budget (the caller leaves out the
    :class:`OverBudget` ones)."""
    factor = 2 if reference_read else 1
    need_bytes = math.ceil(factor * totals.bytes / policy.read_every_days)
    need_reqs = math.ceil(factor * totals.objects / policy.read_every_days + metadata_requests_per_day)
    cap_b = policy.budget.egress_bytes_per_day
    cap_r = policy.budget.requests_per_day
    bytes_short = cap_b is not None and cap_b < need_bytes
    reqs_short = cap_r is not None and cap_r < need_reqs
    if not (bytes_short or reqs_short):
        return None
    days = policy.read_every_days
    if bytes_short and cap_b is not None:
        days = max(days, factor * totals.bytes / cap_b if cap_b > 0 else math.inf)
    if reqs_short and cap_r is not None:
        spare = cap_r - metadata_requests_per_day
        days = max(days, factor * totals.objects / spare if spare > 0 else math.inf)
    return BudgetShortfall(need_bytes, need_reqs, bytes_short, reqs_short, days)


@dataclass(frozen=True)
class CopySummary:
    """One copy's ledger at the end of a run: what the coverage, oldest-read and cost metrics project."""

    objects: int = 0
    bytes: int = 0
    bytes_by_evidence: dict[str, int] = field(default_factory=dict)  # evidence -> bytes proven in the period
    oldest_read: float = 0.0  # earliest last read of any object; 0 when some object was never read
    bytes_by_class: dict[str, int] = field(default_factory=dict)  # storage class -> bytes
    location: str = ""
    egress_bytes_per_day: float = 0.0  # planned read pace for this copy (its share of the allowance)
    requests_per_day: dict[str, float] = field(default_factory=dict)  # operation -> requests per day
    period: float = 0.0  # read_every (seconds) the coverage refers to
    computed_at: float = 0.0

    def coverage(self, evidence: str) -> float:
        return self.bytes_by_evidence.get(evidence, 0) / self.bytes if self.bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": self.objects, "bytes": self.bytes, "bytes_by_evidence": dict(self.bytes_by_evidence),
            "oldest_read": self.oldest_read, "bytes_by_class": dict(self.bytes_by_class),
            "location": self.location, "egress_bytes_per_day": self.egress_bytes_per_day,
            "requests_per_day": dict(self.requests_per_day), "period": self.period,
            "computed_at": self.computed_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CopySummary:
        return cls(
            objects=int(d.get("objects", 0)), bytes=int(d.get("bytes", 0)),
            bytes_by_evidence={str(k): int(v) for k, v in d.get("bytes_by_evidence", {}).items()},
            oldest_read=float(d.get("oldest_read", 0.0)),
            bytes_by_class={str(k): int(v) for k, v in d.get("bytes_by_class", {}).items()},
            location=str(d.get("location", "")), egress_bytes_per_day=float(d.get("egress_bytes_per_day", 0.0)),
            requests_per_day={str(k): float(v) for k, v in d.get("requests_per_day", {}).items()},
            period=float(d.get("period", 0.0)), computed_at=float(d.get("computed_at", 0.0)),
        )


def composite_matches(a: str, b: str) -> bool | None:
    """Two composite (multipart) checksums of one algorithm: equal values prove equal content only with
    equal part layouts. Equal values (the part count ``-N`` included) prove it; different values prove
    nothing (another layout of the same bytes gives another value): None."""
    if "-" not in a or "-" not in b:
        return None
    if a.rsplit("-", 1)[1] != b.rsplit("-", 1)[1]:
        return None  # different part counts: not comparable
    return True if a == b else None
