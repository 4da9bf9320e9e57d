"""Cancellation that a library swallowed.

Some client libraries turn a cancellation that lands mid-request into an error of their own (redis-py raises
``BusyLoadingError`` when the cancel arrives while it reads a ``LOADING`` reply) and the ``CancelledError`` is
gone; the task's ``cancelling()`` count (Python 3.11) still says it was asked to stop. A loop that retries on
such errors, or a run that would record the error as its outcome, checks the count and stops as cancelled.
"""

from __future__ import annotations

import asyncio


class CancelWatch:
    """Remembers the current task's cancel requests at creation; :meth:`check` raises ``CancelledError`` when one
    arrived since and nothing re-raised it (a timeout of ``asyncio.timeout`` withdraws its own request)."""

    __slots__ = ("_base", "_task")

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._base = self._task.cancelling() if self._task is not None else 0

    def swallowed(self) -> bool:
        return self._task is not None and self._task.cancelling() > self._base

    def check(self) -> None:
        if self.swallowed():
            raise asyncio.CancelledError
