"""The verification ledger inside one ``replica`` run: which objects to read, and what was proven, kept.

The pure planning lives in :mod:`drwatch.ledger`; this module talks to the store. A run:

1. ``start``: the asset's ledger totals and today's spending give the day's allowance; the least-recently
   read objects that fit it are planned (:func:`drwatch.ledger.select_reads`).
2. During the merge, per copy object in key order, ``seek`` returns its ledger row (rows passed over are
   objects that no longer exist: deleted from the ledger). ``take`` decides whether to read it: planned
   objects, or new/changed ones (re-queued: never read) while the allowance has room beyond what the plan
   reserved. Each read is charged at its real cost (a second time when the reference must be read too).
3. ``record`` buffers the ledger row; ``flush`` writes rows, today's spending and the request/egress
   counters in one transaction every few hundred objects or second, so an interrupted run keeps its
   progress (a cancelled run flushes on its way out; a killed one loses at most the last batch).
4. ``finish`` writes each copy's summary (coverage, oldest read, bytes by storage class, cost inputs) and
   says when the budget cannot read every byte within ``read_every``.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from drwatch.durations import format_duration
from drwatch.errors import ValidatorError
from drwatch.ledger import (
    DAY,
    CopySummary,
    Plan,
    Totals,
    VerificationPolicy,
    daily_allowance,
    day_of,
    format_size,
    select_reads,
    shortfall,
)
from drwatch.model import Finding, Severity
from drwatch.storage.filesystem import Entry
from drwatch.storage.s3 import RequestMeter
from drwatch.store.base import Store
from drwatch.store.verify import LedgerBatch, LedgerEntry


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a store backend raises when it is away or refuses (asyncpg only if that backend is loaded)."""
    errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, sqlite3.Error)
    pg = sys.modules.get("asyncpg")
    if pg is not None:
        errors += (pg.PostgresError, pg.InterfaceError)
    return errors


FLUSH_ROWS = 500
FLUSH_SECONDS = 1.0
_PAGE = 1000
_QUEUE_PAGE = 2000


def version_of(entry: Entry) -> str:
    """What changes when an object's content is replaced: the S3 ETag, else the file's mtime."""
    return f"etag:{entry.etag}" if entry.etag else f"mtime:{entry.mtime!r}"


class _Cursor:
    """One copy's ledger rows in key order, read in pages, consumed in step with the listing."""

    def __init__(self, store: Store, asset: str, copy: str) -> None:
        self.store, self.asset, self.copy = store, asset, copy
        self.rows: list[LedgerEntry] = []
        self.pos = 0
        self.after = ""
        self.done = False

    async def _peek(self) -> LedgerEntry | None:
        if self.pos >= len(self.rows) and not self.done:
            self.rows = await self.store.ledger_page(self.asset, self.copy, self.after, _PAGE)
            self.pos = 0
            if len(self.rows) < _PAGE:
                self.done = True
            if self.rows:
                self.after = self.rows[-1].key
        return self.rows[self.pos] if self.pos < len(self.rows) else None

    async def seek(self, key: str, gone: list[str]) -> LedgerEntry | None:
        """The row of ``key`` if any; keys before it were not listed (deleted objects) and go to ``gone``."""
        while (row := await self._peek()) is not None and row.key < key:
            gone.append(row.key)
            self.pos += 1
        if row is not None and row.key == key:
            self.pos += 1
            return row
        return None

    async def rest(self, gone: list[str]) -> None:
        while (row := await self._peek()) is not None:
            gone.append(row.key)
            self.pos += 1


@dataclass
class _CopyRun:
    name: str
    location: str
    meter: RequestMeter | None
    cursor: _Cursor
    fs_bytes_read: int = 0  # filesystem copies: file bytes read (S3 bytes are in the meter)
    gone: list[str] = field(default_factory=list)


class VerifySession:
    """The ledger of one asset during one replica run (see the module docstring)."""

    def __init__(self, store: Store, asset: str, policy: VerificationPolicy, now: float,
                 runs_per_day: float) -> None:
        self.store, self.asset, self.policy, self.now = store, asset, policy, now
        self.day = day_of(now)
        self.runs_per_day = runs_per_day
        self.copies: dict[str, _CopyRun] = {}
        self.meters: list[RequestMeter] = []  # every S3 meter of the run (production included)
        self.plan = Plan()
        self.totals = Totals()
        self.spent_bytes = 0  # today, before this run
        self.spent_requests = 0
        self.taken_bytes = 0  # charged by this run's reads
        self.reserved = 0  # planned bytes not yet read
        self.due_extra = 0  # new or changed objects seen in this run (due, unknown to the totals)
        self.inflight = 0  # reads decided whose GET the meter has not counted yet
        self.reads = 0
        self.read_bytes = 0
        self.skipped_for_budget = 0
        self.reference_reads = False
        self._buffer: list[tuple[Any, ...]] = []
        self._last_flush = time.monotonic()
        self._flushed: dict[tuple[str, str], int] = {}  # counter values already written
        self._flushed_spent = (0, 0)

    def add_copy(self, name: str, location: str, meter: RequestMeter | None) -> None:
        self.copies[name] = _CopyRun(name, location, meter, _Cursor(self.store, self.asset, name))

    def add_meter(self, meter: RequestMeter) -> None:
        self.meters.append(meter)

    async def start(self) -> None:
        try:
            per_copy = await self.store.ledger_totals(self.asset, self.now - self.policy.read_every.total_seconds())
            self.spent_bytes, self.spent_requests = await self.store.ledger_spent(self.asset, self.day)
            totals = [t for c, t in per_copy.items() if c in self.copies]
            self.totals = Totals(sum(t.objects for t in totals), sum(t.bytes for t in totals),
                                 sum(t.due_bytes for t in totals))
            self.plan = await self._plan()
        except _store_errors() as exc:  # the monitor's own store: could not check, never a bad backup
            raise ValidatorError("ledger_unavailable",
                                 f"cannot read the verification ledger ({type(exc).__name__})") from None
        self.reserved = sum(self.plan.reads.values())

    def allowance(self) -> int:
        """Bytes today's verification may read in all, earlier runs of the day included (this run's new and
        changed objects count as due)."""
        totals = Totals(self.totals.objects, self.totals.bytes, self.totals.due_bytes + self.due_extra)
        return daily_allowance(self.policy, totals, self.spent_bytes)

    def _left(self) -> int:
        return self.allowance() - self.spent_bytes - self.taken_bytes

    async def _plan(self) -> Plan:
        left = self.allowance() - self.spent_bytes
        if left <= 0:
            return Plan()
        offset = 0
        rows = []
        budget = 0
        while budget < left:
            page = await self.store.ledger_queue(self.asset, _QUEUE_PAGE, offset)
            offset += len(page)
            for row in page:
                if row.copy in self.copies:
                    rows.append(row)
                    budget += row.size
            if len(page) < _QUEUE_PAGE:
                break
        return select_reads(rows, left, None)

    def _requests_now(self) -> int:
        return sum(m.total() for m in self.meters)

    def _requests_ok(self, need: int) -> bool:
        cap = self.policy.budget.requests_per_day
        return cap is None or self.spent_requests + self._requests_now() + self.inflight + need <= cap

    def changed(self, entry: Entry, prior: LedgerEntry | None) -> bool:
        return prior is None or prior.size != entry.size or prior.version != version_of(entry)

    def note_seen(self, copy: str, entry: Entry, prior: LedgerEntry | None) -> None:
        """Count a new or changed object as due today (it joins the queue at the front)."""
        if self.changed(entry, prior):
            self.due_extra += entry.size

    def candidate(self, copy: str, entry: Entry, prior: LedgerEntry | None) -> bool:
        """Planned today, or never read (new, changed, or waiting in the queue)."""
        return (copy, entry.key) in self.plan or self.changed(entry, prior) or (
            prior is not None and prior.read_at is None)

    def take(self, copy: str, entry: Entry, prior: LedgerEntry | None, reference_cost: int) -> bool:
        """Whether to read this candidate now; when yes its cost is charged to today's allowance."""
        cost = entry.size + reference_cost
        requests = 1 + (1 if reference_cost else 0)
        planned = (copy, entry.key) in self.plan
        room = self._left() - (0 if planned else self.reserved)
        if cost > room or not self._requests_ok(requests):
            self.skipped_for_budget += 1
            return False
        if planned:
            self.reserved -= self.plan.reads[(copy, entry.key)]
        self.taken_bytes += cost
        self.inflight += requests
        return True

    def read_done(self, copy: str, entry: Entry, reference_cost: int, nbytes: int) -> None:
        self.inflight -= 1 + (1 if reference_cost else 0)
        self.reads += 1
        self.read_bytes += nbytes
        if reference_cost:
            self.reference_reads = True
        run = self.copies.get(copy)
        if run is not None and run.meter is None:
            run.fs_bytes_read += nbytes

    def record(self, copy: str, entry: Entry, prior: LedgerEntry | None, evidence: str, value: str,
               read: bool, ok: bool) -> None:
        """Buffer the ledger row of one object after its check (``ok``: proven, not a mismatch)."""
        if not ok:
            read_at: float | None = None  # a bad object stays at the front of the queue
            evidence, value = "mismatch", ""
        elif read:
            read_at = self.now
        elif self.changed(entry, prior) or prior is None:
            read_at = None
        else:
            read_at = prior.read_at
        self._buffer.append((copy, entry.key, entry.size, version_of(entry), entry.storage_class or "",
                             evidence, value, self.now, read_at))

    def due_flush(self) -> bool:
        return len(self._buffer) >= FLUSH_ROWS or (
            bool(self._buffer) and time.monotonic() - self._last_flush >= FLUSH_SECONDS)

    def _counter_values(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for m in self.meters:
            for op, n in m.requests.items():
                out[(m.location, f"requests:{op}")] = out.get((m.location, f"requests:{op}"), 0) + n
            out[(m.location, "egress_bytes")] = out.get((m.location, "egress_bytes"), 0) + m.egress_bytes
        return out

    def _spent_values(self) -> tuple[int, int]:
        fs = sum(c.fs_bytes_read for c in self.copies.values())
        return sum(m.egress_bytes for m in self.meters) + fs, self._requests_now()

    async def flush(self) -> None:
        """Write buffered rows, deletions and the spending/counters since the last flush (one transaction)."""
        rows, self._buffer = self._buffer, []
        gone = [(c.name, k) for c in self.copies.values() for k in c.gone]
        for c in self.copies.values():
            c.gone = []
        values = self._counter_values()
        deltas = {k: n - self._flushed.get(k, 0) for k, n in values.items()}
        spent = self._spent_values()
        batch = LedgerBatch(self.asset, rows, gone, self.day, spent[0] - self._flushed_spent[0],
                            spent[1] - self._flushed_spent[1], deltas)
        if not rows and not gone and not batch.egress_bytes and not batch.requests:
            return
        try:
            await self.store.ledger_write(batch)
        except _store_errors() as exc:  # the monitor's own store: could not check, never a bad backup
            raise ValidatorError("ledger_unavailable",
                                 f"cannot write the verification ledger ({type(exc).__name__})") from None
        self._flushed = values
        self._flushed_spent = spent
        self._last_flush = time.monotonic()

    async def flush_bounded(self) -> None:
        """Flush on the way out of a cancelled or failed run (shielded, time-bounded)."""
        try:
            await asyncio.wait_for(asyncio.shield(self.flush()), timeout=10)
        except Exception:  # the run's own outcome matters more than this last batch
            return

    async def seek(self, copy: str, key: str) -> LedgerEntry | None:
        run = self.copies[copy]
        return await run.cursor.seek(key, run.gone)

    async def end_of_listing(self, copy: str) -> None:
        run = self.copies[copy]
        await run.cursor.rest(run.gone)

    async def finish(self, metadata_requests: dict[str, dict[str, int]], completed: Iterable[str]) -> list[Finding]:
        """Write the last batch and each completed copy's summary; findings about the budget."""
        await self.flush()
        period = self.policy.read_every.total_seconds()
        per_copy = await self.store.ledger_totals(self.asset, self.now - period)
        totals = [t for c, t in per_copy.items() if c in self.copies]
        asset_bytes = sum(t.bytes for t in totals)
        asset_objects = sum(t.objects for t in totals)
        cap_b = self.policy.budget.egress_bytes_per_day
        cap_r = self.policy.budget.requests_per_day
        days = self.policy.read_every_days
        for name in completed:
            run = self.copies[name]
            t = per_copy.get(name, Totals())
            share = t.bytes / asset_bytes if asset_bytes else 0.0
            pace = t.bytes / days
            egress = pace if cap_b is None else min(pace, cap_b * share)
            gets = t.objects / days
            if cap_r is not None and asset_objects:
                gets = min(gets, cap_r * t.objects / asset_objects)
            reqs = {op: n * self.runs_per_day for op, n in metadata_requests.get(name, {}).items() if op != "get"}
            reqs["get"] = reqs.get("get", 0.0) + gets
            base = CopySummary(location=run.location, egress_bytes_per_day=egress, requests_per_day=reqs,
                               period=period, computed_at=self.now)
            await self.store.ledger_summary(self.asset, name, self.now - period, base)
        meta_per_day = sum(n for per in metadata_requests.values() for op, n in per.items() if op != "get") \
            * self.runs_per_day
        gap = shortfall(self.policy, Totals(asset_objects, asset_bytes, 0), meta_per_day, self.reference_reads)
        if gap is None:
            return []
        what = []
        if gap.bytes_short:
            what.append(f"{format_size(gap.needed_bytes_per_day)}/day of reads (budget "
                        f"{format_size(cap_b or 0)}/day)")
        if gap.requests_short:
            what.append(f"{gap.needed_requests_per_day} requests/day (budget {cap_r}/day)")
        days_full = gap.days_for_full_read
        full = "never" if math.isinf(days_full) else f"every {format_duration(days_full * DAY)}"
        return [Finding(Severity.WARNING, "verify_budget_too_small",
                        f"reading every byte within {format_duration(self.policy.read_every.total_seconds())} "
                        f"needs {' and '.join(what)}; at this budget each byte is read {full}", "verification")]
