"""Rate samples: the persisted, rolling history the restore-time model (:mod:`drwatch.state.rto`) reads.

Every recorded result yields its samples in the same transaction as the result itself:

- ``read``: a copy's timed verification reads of one run (``CopyReport.read_bytes`` over ``read_seconds``), keyed
  by the copy's location: how fast that location delivers bytes (not from a run or copy that could not be
  checked: see :func:`samples_of`);
- ``drill``: a restore drill that restored (``ok``) with ``bytes`` fetched in ``fetch_seconds`` and restored in
  ``restore_seconds`` in all, keyed by its validator: the fixed part (applying the dump) and the real restore
  time the projection is compared with.

Only the newest :data:`KEEP` samples per (kind, asset, name) are kept (the store prunes on write, the snapshot
trims the same way), so the history is bounded and equal before and after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drwatch.core.model import CopyState, Outcome, Result

KEEP = 64  # samples per (kind, asset, name)

SampleKey = tuple[str, str, str]  # (kind, asset, name)


@dataclass(frozen=True)
class RateSample:
    kind: str  # "read" | "drill"
    asset: str
    name: str  # read: the location; drill: the validator
    run_id: str
    at: float  # when the run finished
    bytes: int
    seconds: float  # read: busy seconds of the reads; drill: seconds fetching the dump
    total: float | None = None  # drill: the whole restore (fetch + restore) in seconds

    @property
    def key(self) -> SampleKey:
        return (self.kind, self.asset, self.name)

    def params(self) -> tuple[Any, ...]:
        return (self.kind, self.asset, self.name, self.run_id, self.at, self.bytes, self.seconds, self.total)


def samples_of(result: Result) -> list[RateSample]:
    """The rate samples a result yields. Reads only from a run that checked (``ok`` or ``failed``) and of a copy
    that could be checked: a read that failed (throttled, timed out, the location down, the run cut short) adds
    its busy time with no bytes, and one 60 s timeout among 1 s reads would cut the location's throughput for
    the whole sample window (a false ``rto_at_risk`` from a monitor failure)."""
    if result.outcome == Outcome.CANCELLED:
        return []
    checked = result.outcome in (Outcome.OK, Outcome.FAILED)
    out = [RateSample("read", result.asset, c.location, result.run_id, result.finished_at, c.read_bytes,
                      c.read_seconds)
           for c in result.copies
           if checked and c.state != CopyState.ERROR and c.read_bytes > 0 and c.read_seconds > 0]
    fig = result.figures
    if result.outcome == Outcome.OK and fig.get("bytes", 0) > 0 and "fetch_seconds" in fig \
            and fig.get("restore_seconds", 0) > 0:
        out.append(RateSample("drill", result.asset, result.validator, result.run_id, result.finished_at,
                              int(fig["bytes"]), float(fig["fetch_seconds"]), float(fig["restore_seconds"])))
    return out


def appended(history: dict[SampleKey, tuple[RateSample, ...]], samples: list[RateSample]) \
        -> dict[SampleKey, tuple[RateSample, ...]]:
    """``history`` with ``samples`` added, the newest :data:`KEEP` per key (what the store keeps)."""
    if not samples:
        return history
    out = dict(history)
    for s in samples:
        rows = sorted((*out.get(s.key, ()), s), key=lambda r: r.at)
        out[s.key] = tuple(rows[-KEEP:])
    return out


def from_rows(rows: list[Any]) -> dict[SampleKey, tuple[RateSample, ...]]:
    samples = [RateSample(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4]), int(r[5]), float(r[6]),
                          None if r[7] is None else float(r[7])) for r in rows]
    return appended({}, samples)


TABLE = """CREATE TABLE rate_samples (
    id {id} PRIMARY KEY{auto}, kind TEXT NOT NULL, asset TEXT NOT NULL, name TEXT NOT NULL, run_id TEXT NOT NULL,
    at {real} NOT NULL, bytes {bigint} NOT NULL, seconds {real} NOT NULL, total {real})"""
INDEX = "CREATE INDEX rate_samples_key ON rate_samples (kind, asset, name, at)"
INSERT = "INSERT INTO rate_samples (kind, asset, name, run_id, at, bytes, seconds, total) VALUES (?,?,?,?,?,?,?,?)"
# The newest KEEP of a key stay (ties on time by id).
PRUNE = (f"DELETE FROM rate_samples WHERE kind = ? AND asset = ? AND name = ? AND id NOT IN (SELECT id FROM "
         f"rate_samples WHERE kind = ? AND asset = ? AND name = ? ORDER BY at DESC, id DESC LIMIT {KEEP})")
LOAD = "SELECT kind, asset, name, run_id, at, bytes, seconds, total FROM rate_samples ORDER BY at, id"


def prune_params(samples: list[RateSample]) -> list[tuple[str, ...]]:
    return [(*k, *k) for k in sorted({s.key for s in samples})]
