"""The merge of a ``replica`` run: one pass over the reference and every checked stream in key order.

Per key: the reference's entry (the seal's, or production's listing), production's own object at that key
(live changes since the seal), and each checked stream's object, which is extra, absent, changed by live
production, of another size, or proven by a task in the window (:class:`drwatch.validators.copies.proof.Prover`).
A listing that fails drops only its stream; the ledger's rows are sought in step and flushed as the merge goes.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable

from drwatch.core.model import Severity
from drwatch.storage.filesystem import Entry
from drwatch.storage.sources import Source
from drwatch.validators.base import RunContext
from drwatch.validators.copies.ledger import LedgerEntry
from drwatch.validators.copies.live import LiveKey, LiveRule
from drwatch.validators.copies.merge import Window, guard, listing, next_entry
from drwatch.validators.copies.proof import Prover, Stream
from drwatch.validators.copies.reference import Reference, ReferenceFailed
from drwatch.validators.copies.timetrust import FutureTimes

# S3 failures after which a location is not asked again in this run (it is down, not one object).
LOCATION_DOWN = frozenset({"unreachable", "no_credentials"})


async def _nxt(it: AsyncIterator[Entry]) -> Entry | None:
    return await anext(it, None)


class ReplicaMerge:
    """One pass over the reference and the checked ``streams`` (copies, and production under a seal)."""

    def __init__(self, ctx: RunContext, prover: Prover, streams: list[Stream], prod: Source | None, sealed: bool,
                 future: FutureTimes | None = None, rule: LiveRule | None = None) -> None:
        self.prover, self.streams, self.prod, self.sealed, self.future = prover, streams, prod, sealed, future
        self.session, self.limit = prover.session, prover.limit
        self.rule = rule or LiveRule(frozen=True, cutoff=0.0)
        self.iters = [listing(s) for s in streams]
        self.prod_i = next((i for i, s in enumerate(streams) if s.src.role == "production"), None)  # under a seal
        self.heads: list[Entry | None] = [None] * len(streams)
        self.window = Window(max(4, ctx.hashes.workers * 8))
        self.ref_prod = None if sealed else prod
        self.count = self.bytes = 0
        self.newest = 0.0

    async def run(self, ref: AsyncIterator[Entry]) -> tuple[int, int, float]:
        """Objects and bytes of the reference, and its newest believable time."""
        try:
            # Inside the try: a run cut off here still closes every listing and the reference.
            self.heads = [await self._advance(i) for i in range(len(self.streams))]
            ref_head = await _nxt(ref)
            while ref_head is not None or any(h is not None for h in self.heads):
                candidates = [h.key for h in self.heads if h is not None]
                if ref_head is not None:
                    candidates.append(ref_head.key)
                key = min(candidates)
                r = ref_head if ref_head is not None and ref_head.key == key else None
                await self._key(key, r)
                if r is not None:
                    self.count += 1
                    self.bytes += r.size
                    if self.future is None or self.future.believe(r.key, r.mtime):
                        self.newest = max(self.newest, r.mtime)
                    ref_head = await _nxt(ref)
                if self.session is not None and self.session.due_flush():
                    await self.session.flush()
            await self._end()
        finally:
            await self.window.cancel()
            if self.session is not None:
                await self.session.flush_bounded()  # keep the progress of an interrupted run
            for it in [*self.iters, ref]:
                await it.aclose()  # type: ignore[attr-defined]
        return self.count, self.bytes, self.newest

    async def _advance(self, i: int) -> Entry | None:
        """The next entry of a checked stream; a listing that fails drops only that stream."""
        s = self.streams[i]
        return s.saw(None if s.broken else await next_entry(s, self.iters[i], self.limit), self.rule)

    async def _key(self, key: str, r: Entry | None) -> None:
        """Every checked stream at ``key`` (``r``: the reference's entry there, if any)."""
        reference = Reference(r, self.ref_prod, direct=len(self.streams) == 1) if r is not None else None
        # Production's own object at this key: its listing under a seal, else the reference itself.
        ph = self.heads[self.prod_i] if self.prod_i is not None else None if self.sealed else r
        live = LiveKey(self.rule, self.streams[self.prod_i].src if self.prod_i is not None else self.prod,
                       ph if ph is not None and ph.key == key else None)
        for i, s in enumerate(self.streams):
            if s.broken:
                self.heads[i] = None
                continue
            h = self.heads[i]
            if h is not None and h.key == key:
                await self._object(i, s, h, reference, live)
                self.heads[i] = await self._advance(i)
            elif r is not None and not s.unchecked(r.key):  # under an unlistable directory: error
                s.absent(r.key, i == self.prod_i, live, self.limit)

    async def _object(self, i: int, s: Stream, h: Entry, reference: Reference | None, live: LiveKey) -> None:
        """One stream's object ``h``: counted, or its proof started in the window."""
        prior = await self._prior(s, h, reference)
        rule, is_prod = self.rule, i == self.prod_i
        if reference is None and is_prod and not rule.frozen:
            s.added += 1  # live production: new since the seal
        elif reference is None:
            s.extra += 1
            s.late = s.late or is_prod  # frozen production grew
            s.note("extra_file", "object not in the recovery point", h.key, self.limit, Severity.WARNING)
        elif is_prod and rule.newer(h.mtime, rule.seal_time):
            s.changed += 1  # live production modified it after the seal: expected, not read
        elif h.size != reference.entry.size:
            await self.window.spawn(functools.partial(self._guarded, s, functools.partial(
                self.prover.size_differs, s, h, reference, live, prior), h.key, is_prod, live))
        else:
            await self.window.spawn(functools.partial(self._guarded, s, functools.partial(
                self.prover.verify, s, h, reference, prior, live), h.key, is_prod, live))

    async def _prior(self, s: Stream, h: Entry, reference: Reference | None) -> LedgerEntry | None:
        """The ledger's row of ``h`` when the stream is under the ledger (new or changed objects counted due)."""
        if self.session is None or s.name not in self.session.copies:
            return None
        prior = await self.session.seek(s.name, h.key)
        if reference is not None and h.size == reference.entry.size:
            self.session.note_seen(s.name, h, prior)
        return prior

    async def _guarded(self, s: Stream, work: Callable[[], Awaitable[None]], key: str, is_prod: bool,
                       live: LiveKey) -> None:
        proof = functools.partial(s.unless_gone, work, key, is_prod, live, self.limit)
        try:
            await guard(s, proof, key, self.limit, "object vanished during the check", LOCATION_DOWN)
        except ReferenceFailed as exc:
            if exc.code in LOCATION_DOWN:
                raise  # production is down: nothing more can be proven (the run ends as error)
            s.errors += 1  # this object of this copy could not be proven: never a failure of the copy
            s.note(exc.code, exc.message, key, self.limit, Severity.WARNING)

    async def _end(self) -> None:
        """After the last key: wait for the proofs, judge deferred absences, drop ledger rows past the end."""
        await self.window.join()
        for s in self.streams:
            s.judge_deferred(self.rule, self.limit)
        for s in self.streams:
            if self.session is not None and s.name in self.session.copies and not s.broken:
                await self.session.end_of_listing(s.name)  # rows past the last listed key: deleted objects
