"""ReadClock: the busy time of a location's reads, timed on the event loop (network reads) or where they ran
(file reads in the hashing threads), overlapping reads counted once, memory bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from drwatch.storage import readclock
from drwatch.storage.hashing import HashPool
from drwatch.storage.readclock import ReadClock


def test_overlapping_spans_arriving_in_any_order_count_once() -> None:
    clock = ReadClock()
    clock.span(10.0, 12.0, 100)
    clock.span(20.0, 21.0, 50)
    clock.span(11.0, 13.0, 100)  # overlaps the first
    clock.span(0.0, 1.0, 10)  # earlier than all
    clock.span(12.5, 20.5, 10)  # bridges the first two
    assert clock.bytes == 270
    assert clock.seconds == 1.0 + (21.0 - 10.0)


def test_loop_timed_reads_merge_with_thread_timed_ones() -> None:
    now = [0.0]
    clock = ReadClock(clock=lambda: now[0])
    clock.started()
    now[0] = 2.0
    clock.started()
    now[0] = 3.0
    clock.finished(10)
    now[0] = 4.0
    clock.finished(20)  # busy 0..4
    clock.span(3.5, 6.0, 5)
    assert (clock.bytes, clock.seconds) == (35, 6.0)


def test_many_disjoint_reads_stay_bounded_and_add_up() -> None:
    clock = ReadClock()
    n = 10 * readclock.MAX_SPANS
    for i in range(n):
        clock.span(2.0 * i, 2.0 * i + 1.0, 1)
    assert len(clock._starts) <= readclock.MAX_SPANS
    assert clock.seconds == float(n) and clock.bytes == n


async def test_a_file_read_waiting_for_a_hash_thread_is_not_busy_time(tmp_path: Path) -> None:
    """One worker thread, held for 1 s by another location's read: this location's read of a small file, asked
    for meanwhile, counts the time it ran, not the second it waited (timed from the loop it counted 1 s, and a
    fast disk queued behind a slow one measured as slow as that one)."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    pool = HashPool(1)
    release = threading.Event()
    try:
        loop = asyncio.get_running_loop()
        held = loop.run_in_executor(pool._pool, release.wait, 5)
        clock = ReadClock()
        asked = time.monotonic()
        read = asyncio.ensure_future(pool.sha256(path, 4096, clock=clock))
        await asyncio.sleep(1.0)
        release.set()
        _digest, n = await read
        await held
        assert n == 4096 and clock.bytes == 4096
        assert time.monotonic() - asked >= 1.0
        assert 0 < clock.seconds < 0.5, clock.seconds
    finally:
        pool.close()
