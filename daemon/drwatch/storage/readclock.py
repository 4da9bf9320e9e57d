"""How fast a location delivered the bytes a run read from it: the restore-time model's throughput input.

Reads of one location overlap (a window of objects is proven at a time), so summing each read's duration would
count the same second several times. The clock measures *busy time*: the wall time during which at least one
read of the location was in flight, and the bytes those reads returned. Only the copy's own read is timed, never
the reference's (production read for its digest is production's time, not the copy's).

A read is timed where it runs. Network reads run on the event loop (timed there); file reads run in the shared
hashing threads, which time each read themselves: a read timed from the event loop would also count its wait for a
free thread, or for the other files of its batch, so a fast disk whose reads queue behind a slow one's would measure
as slow as that one (and a fast copy project a restore time it would never take). A read is announced when it is
asked for (:meth:`ReadClock.asked`) and reports its intervals when it ends (:meth:`ReadClock.answered`); a read that
failed reports none (it moved no bytes: its time is no one's busy time, neither its run's nor, shared, another's); a
direct comparison of a copy with production reports only the copy's own reads, not its waits for production's.

Several runs read one location at the same time (each asset's check has its own clock): they share its bandwidth,
so each run's own busy time would make the location look as many times slower as runs overlap (three checks of a
NAS at once measured it at half its rate, a projection twice too long: a page). A clock that knows its location
(:meth:`ReadClock.join`) shares each instant among the runs reading the location then: its ``seconds`` are its
busy time with every instant divided by the number of clocks of the location busy at it, so the clocks' seconds
add up to the location's busy time, and pooled bytes over pooled seconds is the location's real rate. A finished
run's intervals are kept while a run that may overlap them is still in progress.

Memory is bounded by folding the oldest intervals into a sum, but never those a read still outstanding may yet
overlap (one asked for before they ended): a long read reported after many short
ones would otherwise lose the time it spent where the folded intervals had gaps (counted bytes without their
seconds: a slow location measured faster than it is).
"""

from __future__ import annotations

import time
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAX_SPANS = 512  # disjoint busy intervals kept; the oldest half is folded into a sum beyond it
HARD_SPANS = 8 * MAX_SPANS  # beyond this, intervals are folded even if an outstanding read may still overlap them


@dataclass(eq=False)
class _Peer:
    """A clock's intervals as its location's registry keeps them (the same lists the clock updates)."""

    clock: weakref.ref[ReadClock]
    created: float
    starts: list[float]
    ends: list[float]


MAX_RETIRED = 256  # finished clocks kept per location (the newest): beyond it, overlaps count whole (pessimistic)
_PEERS: dict[str, list[_Peer]] = {}  # location -> clocks of it alive, or retired but overlapping a live one


def _peers(location: str) -> list[_Peer]:
    """The location's clocks, without the retired ones no live clock can overlap (all ended before it began)."""
    peers = _PEERS.get(location, [])
    horizon = min((p.created for p in peers if p.clock() is not None), default=float("inf"))
    kept = [p for p in peers if p.clock() is not None or (p.ends and p.ends[-1] > horizon)]
    retired = [p for p in kept if p.clock() is None]
    if len(retired) > MAX_RETIRED:
        dropped = {id(p) for p in sorted(retired, key=lambda p: p.ends[-1])[:len(retired) - MAX_RETIRED]}
        kept = [p for p in kept if id(p) not in dropped]
    if kept:
        _PEERS[location] = kept
    else:
        _PEERS.pop(location, None)
    return kept


def _shared_seconds(starts: list[float], ends: list[float], others: list[_Peer]) -> float:
    """The length of the intervals (``starts``, ``ends``), each instant divided by 1 + the number of ``others``
    busy at it."""
    if not starts:
        return 0.0
    lo, hi = starts[0], ends[-1]
    events = sorted((t, d) for p in others for s, e in zip(p.starts, p.ends, strict=True) if e > lo and s < hi
                    for t, d in ((s, 1), (e, -1)))
    total, busy, i = 0.0, 0, 0
    for s, e in zip(starts, ends, strict=True):
        while i < len(events) and events[i][0] <= s:
            busy += events[i][1]
            i += 1
        t = s
        while i < len(events) and events[i][0] < e:
            total += (events[i][0] - t) / (1 + busy)
            t, busy = events[i][0], busy + events[i][1]
            i += 1
        total += (e - t) / (1 + busy)
    return total


@dataclass
class ReadClock:
    """Bytes read and busy seconds of one location during one run."""

    bytes: int = 0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _starts: list[float] = field(default_factory=list, repr=False)  # disjoint busy intervals, by start
    _ends: list[float] = field(default_factory=list, repr=False)
    _folded: float = 0.0  # seconds of the intervals folded away
    _folded_until: float = float("-inf")  # the end of the newest of them: later reads count from there
    _asked: dict[float, int] = field(default_factory=dict, repr=False)  # thread-timed reads outstanding, by ask time

    _location: str | None = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        """Busy seconds: shared with the other clocks of the location where :meth:`join` named it (the folded
        intervals are counted whole: pessimistic)."""
        if self._location is None:
            return self._folded + sum(e - s for s, e in zip(self._starts, self._ends, strict=True))
        others = [p for p in _peers(self._location) if p.starts is not self._starts]
        return self._folded + _shared_seconds(self._starts, self._ends, others)

    def join(self, location: str) -> None:
        """This clock times reads of ``location``: instants other clocks of it are busy too are shared."""
        if self._location is None:
            self._location = location
            _PEERS[location] = [*_peers(location), _Peer(weakref.ref(self), self.clock(), self._starts, self._ends)]

    def asked(self) -> float:
        """A read timed where it runs (a hashing thread) is asked for; returns the token :meth:`answered` takes.
        Until then, no interval it may overlap is folded away."""
        at = self.clock()
        self._asked[at] = self._asked.get(at, 0) + 1
        return at

    def answered(self, asked: float, spans: Iterable[tuple[float, float]], nbytes: int) -> None:
        """The read announced as ``asked`` ended (also when it failed: ``nbytes`` 0, no ``spans``): the intervals
        it spent reading the location (monotonic seconds) join the busy time, and ``nbytes`` the bytes."""
        left = self._asked.pop(asked, 1) - 1
        if left > 0:
            self._asked[asked] = left
        self.span_all(spans, nbytes)

    def span(self, start: float, end: float, nbytes: int) -> None:
        """A read that ran from ``start`` to ``end`` (monotonic seconds, timed where it ran) and returned
        ``nbytes``: its interval joins the busy time, overlaps with other reads counted once."""
        self.span_all(((start, end),), nbytes)

    def span_all(self, spans: Iterable[tuple[float, float]], nbytes: int) -> None:
        """One read's intervals of reading the location (several where it paused, e.g. for production's reads)
        and the bytes it returned."""
        self.bytes += max(0, nbytes)
        for start, end in spans:
            self._add(start, end)

    def _add(self, start: float, end: float) -> None:
        start = max(start, self._folded_until)
        if end <= start:
            return
        i = bisect_left(self._ends, start)  # the first interval ending at or after this one's start
        j = bisect_right(self._starts, end)  # past the last one starting at or before its end
        if i < j:
            start, end = min(start, self._starts[i]), max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]
        if len(self._starts) > MAX_SPANS:
            self._fold()

    def _fold(self) -> None:
        """Fold the oldest intervals into a sum: at most half, and only those ending before the earliest read
        still outstanding began (it may yet report an interval over them), unless there are HARD_SPANS."""
        horizon = min(self._asked, default=float("inf"))
        n = len(self._starts)
        k = min(n // 2, bisect_left(self._ends, horizon))
        if k < n // 4 and n <= HARD_SPANS:
            return  # too few foldable yet: wait (memory stays bounded by HARD_SPANS)
        k = k if k >= n // 4 else n // 2
        self._folded += sum(e - s for s, e in zip(self._starts[:k], self._ends[:k], strict=True))
        self._folded_until = max(self._folded_until, self._ends[k - 1])
        del self._starts[:k], self._ends[:k]
