"""Cancellation that a library swallowed.

Some client libraries turn a cancellation that lands mid-request into an error of their own (redis-py raises
``BusyLoadingError`` when the cancel arrives while it reads a ``LOADING`` reply) and the ``CancelledError`` is
gone; the task's ``cancelling()`` count (Python 3.11) still says it was asked to stop. A loop that retries on
such errors, or a run that would record the error as its outcome, checks the count and stops as cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any


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


class TaskGroup(asyncio.TaskGroup):
    """``asyncio.TaskGroup`` that leaves its task's cancel count as it found it.

    On Python 3.11 a child that fails while the group's ``async with`` body has already ended makes the group
    cancel its own task to wake it, and never withdraws that request (3.12 does): the task then reads as asked to
    stop (``cancelling()`` 1) for the rest of its life, so :class:`CancelWatch` would record a validator's bug or
    failure as ``cancelled``, and a later ``asyncio.timeout`` in the task misjudges its own expiry. Use this one
    in drwatch's code."""

    _count_on_entry = 0

    async def __aenter__(self) -> TaskGroup:
        task = asyncio.current_task()
        self._count_on_entry = task.cancelling() if task is not None else 0
        await super().__aenter__()
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            await super().__aexit__(et, exc, tb)
        finally:
            task = asyncio.current_task()
            # Only the group's own request (it asked to cancel its task, 3.11 left it standing): never one of
            # somebody else's, which finds the count above what it was on entry by more than the group's one.
            withdrawn = task is None or not getattr(self, "_parent_cancel_requested", False) \
                or isinstance(exc, asyncio.CancelledError) or task.cancelling() != self._count_on_entry + 1
            if not withdrawn and task is not None:
                task.uncancel()
