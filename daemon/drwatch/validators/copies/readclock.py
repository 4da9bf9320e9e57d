"""How fast a location delivered the bytes a run read from it: the restore-time model's throughput input.

Reads of one location overlap (a window of objects is proven at a time), so summing each read's duration would
count the same second several times. The clock measures *busy time*: the wall time during which at least one
read of the location was in flight, and the bytes those reads returned. Only the copy's own read is timed, never
the reference's (production read for its digest is production's time, not the copy's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ReadClock:
    """Bytes read and busy seconds of one location during one run."""

    bytes: int = 0
    seconds: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _in_flight: int = 0
    _since: float = 0.0

    def started(self) -> None:
        if self._in_flight == 0:
            self._since = self.clock()
        self._in_flight += 1

    def finished(self, nbytes: int) -> None:
        """One read ended (``nbytes``: what it returned; 0 for a read that failed)."""
        self._in_flight -= 1
        self.bytes += max(0, nbytes)
        if self._in_flight == 0:
            self.seconds += max(0.0, self.clock() - self._since)
