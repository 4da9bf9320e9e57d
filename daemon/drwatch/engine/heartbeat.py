"""The main event loop's heartbeat: a callback every :data:`INTERVAL` that records when the loop last ran it
and how late it ran (the loop's lag).

The HTTP endpoints are served from a thread of their own (:mod:`drwatch.http.server`), so a busy event loop
does not delay ``/-/healthy`` or a scrape; the heartbeat is what keeps ``/-/healthy`` honest: it fails once the
loop has not run the heartbeat for :data:`STALL_LIMIT` seconds (a loop stuck in a synchronous call, a
deadlock), as a request answered on the loop itself would have hung. The lag of every beat is counted in
buckets (``drwatch_event_loop_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import bisect
import time

INTERVAL = 0.1  # seconds between beats
STALL_LIMIT = 10.0  # seconds without a beat after which /-/healthy and /-/ready fail
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Heartbeat:
    """Beats on the loop that calls :meth:`start`; read from any thread (plain numbers, replaced whole)."""

    def __init__(self, interval: float = INTERVAL, stall_limit: float = STALL_LIMIT) -> None:
        self.interval = interval
        self.stall_limit = stall_limit
        self.last = time.monotonic()  # when the loop last ran a beat (or start)
        self.counts = [0] * (len(LAG_BUCKETS) + 1)  # beats per lag bucket (not cumulative); the last: > 10 s
        self.lag_sum = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last = time.monotonic()
        self._schedule(self._loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._beat)

    def _beat(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = max(0.0, now - self._due)
        self.last = time.monotonic()
        self.counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
        self.lag_sum += lag
        self._schedule(now)

    @property
    def beats(self) -> int:
        return sum(self.counts)

    def silent_for(self) -> float:
        """Seconds since the loop last ran a beat."""
        return max(0.0, time.monotonic() - self.last)

    def stalled(self) -> bool:
        return self._handle is not None and self.silent_for() > self.stall_limit
