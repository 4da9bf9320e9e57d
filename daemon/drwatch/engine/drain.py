"""The shutdown drain, one for the scheduler's runner and the cluster's job engine: runs still waiting for a
concurrency slot never start; running ones get ``grace`` seconds, then are cancelled (sandboxes unwind)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

REASON = "drwatch is shutting down"
QUEUED_WAIT = 5.0  # cancelled before they started: they only leave a slot queue
CANCELLED_WAIT = 120.0  # cancelled runs unwind (sandboxes removed, servers stopped)


async def drain_tasks(log: Any, queued: Iterable[asyncio.Task[Any]], running: Iterable[asyncio.Task[Any]],
                      grace: float) -> None:
    """Cancel the ``queued`` runs, wait up to ``grace`` seconds for the ``running`` ones, cancel what is left and
    wait (bounded) for every cancelled run to unwind. Logs ``queued_runs_dropped``, ``draining`` and
    ``drain_timeout_cancelling`` on ``log``."""
    queued = [t for t in queued if not t.done()]
    for t in queued:
        t.cancel(REASON)
    if queued:
        log.info("queued_runs_dropped", count=len(queued))
        await asyncio.wait(queued, timeout=QUEUED_WAIT)
    running = [t for t in running if not t.done() and t not in queued]
    if running:
        log.info("draining", running=len(running), timeout=grace)
        _done, still = await asyncio.wait(running, timeout=grace)
        for t in still:
            t.cancel(REASON)
        if still:
            log.warning("drain_timeout_cancelling", cancelled=len(still))
    pending = [t for t in (*queued, *running) if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=CANCELLED_WAIT)
