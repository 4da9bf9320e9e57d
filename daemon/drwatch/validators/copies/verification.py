"""The verification ledger inside one ``replica`` run: which objects to read, and what was proven, kept.

The pure planning lives in :mod:`drwatch.validators.copies.ledger`; this module talks to the store through the
:class:`drwatch.validators.base.LedgerWriter` the engine gives the run. The ledger covers
every
stream the run proves: the copies, and production too when a seal is the reference (production is then
verified like a copy: provider checksums against the seal first, reads within the same budget). A run:

1. ``start``: the asset's ledger totals and today's spending give the day's allowance; the least-recently
   read objects that fit it are planned (:func:`drwatch.validators.copies.ledger.select_reads`). Objects whose read
   costs
   more than a whole day's budget are left out of the plan, the due bytes and the pace (never readable).
2. During the merge, per object in key order, ``seek`` returns its ledger row (rows passed over are
   objects that no longer exist: deleted from the ledger). ``take`` decides whether to read it: planned
   objects, or new/changed ones (re-queued: never read) while the allowance has room beyond what the plan
   reserved; a changed object that was found bad goes first (it may use the plan's reservation). Each
   read is charged at its real cost (a second time when the reference must be read too).
3. ``record`` buffers the ledger row. A mismatch is kept as evidence ``mismatch`` with how it was found and
   against which reference; while the object and the reference are unchanged it stays bad in later runs
   (``known_bad``), whatever cheaper evidence says, until a read proves it good. ``flush`` writes rows,
   today's spending and the request/egress counters in one transaction every few hundred objects or
   second, so an interrupted run keeps its progress (a cancelled run flushes on its way out; a killed one
   loses at most the last batch).
4. ``finish`` writes each stream's summary (coverage, oldest read, bytes by storage class, cost inputs) and
   says when the budget cannot read every byte within ``read_every`` or can never read some object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding
from drwatch.storage.filesystem import Entry
from drwatch.storage.s3 import RequestMeter
from drwatch.validators.base import LedgerWriter
from drwatch.validators.copies.budget import budget_findings
from drwatch.validators.copies.ledger import (
    DAY,
    CopySummary,
    LedgerBatch,
    LedgerEntry,
    LedgerRow,
    OverBudget,
    Plan,
    Totals,
    VerificationPolicy,
    daily_allowance,
    day_of,
    due_cutoff,
    over_day_budget,
    select_reads,
)
from drwatch.validators.copies.ledger_rows import (
    MISMATCH,
    CopyRun,
    LedgerCursor,
    iso,
    same_version,
    store_errors,
    version_of,
)

FLUSH_ROWS = 500
FLUSH_SECONDS = 1.0
_QUEUE_PAGE = 2000


class VerifySession:
    """The ledger of one asset during one replica run (see the module docstring)."""

    unread_evidence = "size"  # how an object proven without a read and without provider evidence is counted

    def __init__(self, store: LedgerWriter, asset: str, policy: VerificationPolicy, now: float,
                 runs_per_day: float) -> None:
        self.store, self.asset, self.policy, self.now = store, asset, policy, now
        self.day = day_of(now)
        self.runs_per_day = runs_per_day
        self.copies: dict[str, CopyRun] = {}  # every stream under the ledger (production too when sealed)
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
        self.reference_reads = False  # some read needed the reference's bytes too (it costs twice)
        self.over_seen = Totals()  # over-budget objects met in the queue at start (left out of the allowance)
        self._over1 = OverBudget()  # objects recorded this run whose read alone costs more than a day's budget
        self._over2 = OverBudget()  # ... or whose read and the reference's cost more
        self._unsettled: set[tuple[str, str]] = set()  # planned reads neither taken nor given up yet
        self._buffer: list[tuple[Any, ...]] = []
        self._last_flush = time.monotonic()
        self._flushed: dict[tuple[str, str], int] = {}  # counter values already written
        self._flushed_spent = (0, 0)

    def add_copy(self, name: str, location: str, meter: RequestMeter | None,
                 unlisted: list[tuple[str, str]] | None = None) -> None:
        """A stream under the ledger; ``unlisted``: the (shared, growing) list of its directories that could
        not be listed, whose rows are kept rather than deleted."""
        self.copies[name] = CopyRun(name, location, meter, LedgerCursor(self.store, self.asset, name),
                                     unlisted=unlisted if unlisted is not None else [])

    def add_meter(self, meter: RequestMeter) -> None:
        self.meters.append(meter)

    def _stale_before(self) -> float:
        """Objects last read before this are due: stale by the next run."""
        return due_cutoff(self.policy, self.now, DAY / self.runs_per_day)

    async def start(self) -> None:
        try:
            per_copy = await self.store.ledger_totals(self.asset, self._stale_before())
            self.spent_bytes, self.spent_requests = await self.store.ledger_spent(self.asset, self.day)
            totals = [t for c, t in per_copy.items() if c in self.copies]
            self.totals = Totals(sum(t.objects for t in totals), sum(t.bytes for t in totals),
                                 sum(t.due_bytes for t in totals))
            rows = await self._queue()
        except store_errors() as exc:  # the monitor's own store: could not check, never a bad backup
            raise ValidatorError("ledger_unavailable",
                                 f"cannot read the verification ledger ({type(exc).__name__})") from None
        left = self.allowance() - self.spent_bytes
        if left > 0:
            self.plan = select_reads(rows, left, None, day_budget=self.policy.budget.egress_bytes_per_day,
                                     due_before=self._stale_before())
        self.reserved = sum(self.plan.reads.values())
        self._unsettled = set(self.plan.reads)

    def allowance(self) -> int:
        """Bytes today's verification may read in all, earlier runs of the day included (this run's new and
        changed objects count as due; objects over a day's budget count neither as due nor in the pace)."""
        totals = Totals(self.totals.objects, max(0, self.totals.bytes - self.over_seen.bytes),
                        max(0, self.totals.due_bytes - self.over_seen.due_bytes) + self.due_extra)
        return daily_allowance(self.policy, totals, self.spent_bytes)

    def spent_today(self) -> int:
        """Bytes verification read today, this run's reads as counted so far included (what the store adds)."""
        return self.spent_bytes + self._spent_values()[0]

    def _left(self) -> int:
        return self.allowance() - self.spent_bytes - self.taken_bytes

    async def _queue(self) -> list[LedgerRow]:
        """The head of the queue (least recently read first) of this run's streams, enough to fill what is
        left of today's budget; over-budget rows met on the way are counted in ``over_seen``, not returned.

        Due rows come first in the queue, so the over-budget due bytes are all counted whenever the rows
        returned do not already fill the day (and then the allowance is the budget anyway)."""
        cap = self.policy.budget.egress_bytes_per_day
        want = (cap if cap is not None else self.allowance()) - self.spent_bytes
        stale = self._stale_before()
        rows: list[LedgerRow] = []
        offset = fitting = 0
        over = [0, 0, 0]
        while fitting < want:
            page = await self.store.ledger_queue(self.asset, _QUEUE_PAGE, offset)
            offset += len(page)
            for row in page:
                if row.copy not in self.copies:
                    continue
                if over_day_budget(row.size, cap):
                    over[0] += 1
                    over[1] += row.size
                    over[2] += row.size if row.read_at is None or row.read_at < stale else 0
                    continue
                rows.append(row)
                fitting += row.size
            if len(page) < _QUEUE_PAGE:
                break
        self.over_seen = Totals(over[0], over[1], over[2])
        return rows

    def _requests_now(self) -> int:
        return sum(m.total() for m in self.meters)

    def _requests_ok(self, need: int) -> bool:
        cap = self.policy.budget.requests_per_day
        return cap is None or self.spent_requests + self._requests_now() + self.inflight + need <= cap

    def _settle(self, copy: str, key: str) -> None:
        """A planned read is taken or given up: its bytes are no longer reserved."""
        if (copy, key) in self._unsettled:
            self._unsettled.discard((copy, key))
            self.reserved -= self.plan.reads[(copy, key)]

    def changed(self, entry: Entry, prior: LedgerEntry | None) -> bool:
        return prior is None or prior.size != entry.size or not same_version(prior.version, version_of(entry))

    def known_bad(self, entry: Entry, prior: LedgerEntry | None, ref: str, meta: str = "") -> bool:
        """The ledger found this object different from the reference, and neither it (size, version, and
        its provider checksum ``meta`` when both runs saw one) nor the reference changed since: it is still
        bad, whatever cheaper evidence says, until a read proves it good. Rows written before the reference
        was recorded count as the same reference."""
        if prior is None or prior.evidence != MISMATCH or self.changed(entry, prior):
            return False
        _how, ref_before, meta_before = [*prior.value.split("|", 2), "", ""][:3]
        return (not ref_before or same_version(ref_before, ref)) and (
            not meta_before or not meta or meta_before == meta)

    def requeued(self, entry: Entry, prior: LedgerEntry | None, ref: str, meta: str = "") -> bool:
        """Found bad before, but the object or the reference changed since: read it first."""
        return prior is not None and prior.evidence == MISMATCH and not self.known_bad(entry, prior, ref, meta)

    @staticmethod
    def bad_evidence(prior: LedgerEntry) -> str:
        """How the ledger found a known-bad object bad, for the finding that repeats it."""
        how = prior.value.partition("|")[0]
        if how == "read" and prior.read_at is not None:
            return f"read {iso(prior.read_at)}, unchanged since"
        return f"{how or 'an earlier check'}, unchanged since"

    def note_seen(self, copy: str, entry: Entry, prior: LedgerEntry | None) -> None:
        """Count a new or changed object as due today (it joins the queue at the front)."""
        if self.changed(entry, prior) and not over_day_budget(entry.size, self.policy.budget.egress_bytes_per_day):
            self.due_extra += entry.size

    def candidate(self, copy: str, entry: Entry, prior: LedgerEntry | None, ref: str = "") -> bool:
        """Planned today, or never read (new, changed, or waiting in the queue); ``ref``: the reference's id now
        (unused here)."""
        return (copy, entry.key) in self.plan or self.changed(entry, prior) or (
            prior is not None and prior.read_at is None)

    def take(self, copy: str, entry: Entry, reference_cost: int, priority: bool = False) -> bool:
        """Whether to read this candidate now; when yes its cost is charged to today's allowance.

        Planned reads and ``priority`` ones (changed objects found bad before) may use the whole room left;
        others only what the plan does not reserve."""
        cost = entry.size + reference_cost
        requests = 1 + (1 if reference_cost else 0)
        if reference_cost:
            self.reference_reads = True
        planned = (copy, entry.key) in self._unsettled
        room = self._left() - (0 if planned or priority else self.reserved)
        if cost > room or not self._requests_ok(requests):
            self.skipped_for_budget += 1
            self._settle(copy, entry.key)
            return False
        self._settle(copy, entry.key)
        self.taken_bytes += cost
        self.inflight += requests
        return True

    def read_done(self, copy: str, entry: Entry, reference_cost: int, nbytes: int) -> None:
        self.inflight -= 1 + (1 if reference_cost else 0)
        self.reads += 1
        self.read_bytes += nbytes
        run = self.copies.get(copy)
        if run is not None and run.meter is None:
            run.fs_bytes_read += nbytes

    def record(self, copy: str, entry: Entry, prior: LedgerEntry | None, evidence: str, value: str,
               read: bool, ok: bool, ref: str = "") -> None:
        """Buffer the ledger row of one object after its check (``ok``: proven, not a mismatch).

        A mismatch row's value is ``HOW|REFERENCE|CHECKSUM``: how it was found (``evidence``), the reference
        (``ref``) and the object's provider checksum or ETag (``value``) then; its read time is that of the
        read that found it. A known-bad object not read again keeps its row's evidence."""
        if not read:
            self._settle(copy, entry.key)
        cap = self.policy.budget.egress_bytes_per_day
        if over_day_budget(entry.size, cap, reference_read=True):
            subject = f"{copy}:{entry.key}"
            self._over2 = self._over2.add(subject, entry.size, 2 * entry.size)
            if over_day_budget(entry.size, cap):
                self._over1 = self._over1.add(subject, entry.size, entry.size)
        if not ok:
            if read:
                read_at: float | None = self.now
                value = f"{evidence}|{ref}|{value}"
            elif prior is not None and self.known_bad(entry, prior, ref, value):
                read_at, value = prior.read_at, prior.value
            else:
                read_at, value = None, f"{evidence}|{ref}|{value}"
            evidence = MISMATCH
        elif read:
            read_at = self.now
        elif prior is None or self.changed(entry, prior) or prior.evidence == MISMATCH:
            read_at = None  # new, changed, or found bad against another reference: (re-)queued for a read
        else:
            read_at = prior.read_at
        self._buffer.append((copy, entry.key, entry.size, version_of(entry), entry.storage_class or "",
                             evidence, value, self.now, read_at))

    def over_budget(self) -> OverBudget:
        """Objects recorded this run that no day's budget can read (twice their size when reads need the
        reference's bytes too)."""
        return self._over2 if self.reference_reads else self._over1

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
        gone = [(c.name, k) for c in self.copies.values() for k in c.deleted()]
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
        except store_errors() as exc:  # the monitor's own store: could not check, never a bad backup
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
        """Write the last batch and each completed stream's summary; findings about the budget."""
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
        return budget_findings(self.policy, self.over_budget(), self.reference_reads,
                               Totals(asset_objects, asset_bytes, 0), meta_per_day)
