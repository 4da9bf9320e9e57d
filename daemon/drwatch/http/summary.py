"""Counts of what the HTTP connection guard cut short or refused, summarised in one log line at most once per
``SUMMARY_INTERVAL`` instead of a line per connection."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

SUMMARY_INTERVAL = 60.0


class Summary:
    """Counts by reason, logged as one line at once and then at most once per ``SUMMARY_INTERVAL``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, emit: Callable[[dict[str, int]], None]) -> None:
        self._loop = loop
        self._emit = emit
        self._unreported: Counter[str] = Counter()
        self._next = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def count(self, reason: str) -> None:
        self._unreported[reason] += 1
        if self._loop.time() >= self._next:
            self.flush()
        elif self._handle is None:
            self._handle = self._loop.call_at(self._next, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self._unreported:
            return
        counts = dict(self._unreported)
        self._unreported.clear()
        self._next = self._loop.time() + SUMMARY_INTERVAL
        self._emit(counts)
