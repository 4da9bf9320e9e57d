"""ReadClock: the busy time of a location's reads, timed on the event loop (network reads) or where they ran
(file reads in the hashing threads), overlapping reads counted once, memory bounded."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import pytest

from drwatch.storage import readclock
from drwatch.storage.hashing import HashPool
from drwatch.storage.readclock import ReadClock
from tests.support.slowfs import fuse_unavailable, throttled_mount


def test_overlapping_spans_arriving_in_any_order_count_once() -> None:
    clock = ReadClock()
    clock.span(10.0, 12.0, 100)
    clock.span(20.0, 21.0, 50)
    clock.span(11.0, 13.0, 100)  # overlaps the first
    clock.span(0.0, 1.0, 10)  # earlier than all
    clock.span(12.5, 20.5, 10)  # bridges the first two
    assert clock.bytes == 270
    assert clock.seconds == 1.0 + (21.0 - 10.0)


def test_a_read_asked_for_and_answered_joins_its_intervals_and_a_failed_one_none() -> None:
    now = [0.0]
    clock = ReadClock(clock=lambda: now[0])
    first, second = clock.asked(), clock.asked()
    clock.answered(first, ((0.0, 2.0), (3.0, 4.0)), 10)  # paused 2..3 (waiting for production's read)
    clock.answered(second, (), 0)  # failed: no bytes, no busy time
    assert (clock.bytes, clock.seconds) == (10, 3.0)


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


def test_a_long_read_reported_after_many_short_ones_keeps_its_whole_time() -> None:
    """A large file read in one thread from 0 s to 100 s while another thread reads many small files of the same
    location, each 0.1 s with 0.9 s gaps (waiting for production's digests, say): the location was busy 0..100 s.
    The short reads are reported first and overflow MAX_SPANS; folding them away set the horizon past the long
    read's start, which then lost the gaps it covered (counted ~10 s + its tail: 10x the real throughput)."""
    now = [0.0]
    clock = ReadClock(clock=lambda: now[0])
    long_read = clock.asked()
    n = 4 * readclock.MAX_SPANS
    step = 100.0 / n
    for i in range(n):
        now[0] = i * step
        short = clock.asked()
        clock.answered(short, [(i * step, i * step + step / 10)], 1)
    assert len(clock._starts) <= readclock.HARD_SPANS
    now[0] = 100.0
    clock.answered(long_read, [(0.0, 100.0)], 1000)
    assert clock.bytes == n + 1000
    assert abs(clock.seconds - 100.0) < 1e-6, clock.seconds
    assert len(clock._starts) <= readclock.MAX_SPANS + 1


def test_intervals_are_bounded_even_while_a_read_stays_outstanding() -> None:
    """A read asked for and never answered (a hung mount) does not let the intervals grow without bound."""
    clock = ReadClock()
    clock.asked()
    for i in range(10 * readclock.HARD_SPANS):
        clock.span(clock.clock() + 2.0 * i, clock.clock() + 2.0 * i + 1.0, 1)
    assert len(clock._starts) <= readclock.HARD_SPANS


async def test_a_direct_comparison_times_the_copy_s_reads_not_the_reference_s(tmp_path: Path) -> None:
    """Compared chunk by chunk with a reference on a slow filesystem (FUSE, 256 KiB/s), a local copy's busy time
    is its own reads: timed as a whole, the comparison measured the reference's rate for the copy."""
    unavailable = fuse_unavailable()
    if unavailable is not None:
        pytest.skip(f"no FUSE here for a throttled filesystem ({unavailable})")
    rate = 256 * 1024
    data = b"y" * (3 * 1024 * 1024 + 17)  # four chunks of the comparison
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(data)
    (tmp_path / "copy").write_bytes(data)
    pool = HashPool(2)
    try:
        with throttled_mount(tmp_path / "src", tmp_path / "mnt", rate) as mnt:
            clock = ReadClock()
            started = time.monotonic()
            same, n = await pool.compare(mnt / "f", tmp_path / "copy", len(data), clock)
            took = time.monotonic() - started
        assert same and n == len(data) == clock.bytes
        assert took >= 0.8 * len(data) / rate  # the reference was read, slowly
        assert 0 < clock.seconds < 0.1 * took, (clock.seconds, took)
        assert len(clock._starts) <= 5
    finally:
        pool.close()


def test_clocks_of_one_location_share_the_instants_they_are_both_busy() -> None:
    """Two runs reading one location at once share its bandwidth: each instant both are busy counts half for each,
    so their seconds add up to the location's busy time (each alone counted it whole: the location measured at
    half its rate). A clock of another location, or one not joined, is not affected; a finished run's clock still
    counts for a run it overlapped that ends later."""
    now = [0.0]
    a, b, other, alone = (ReadClock(clock=lambda: now[0]) for _ in range(4))
    a.join("nas-t2"), b.join("nas-t2"), other.join("s3-t2")
    a.span(0.0, 10.0, 100)
    b.span(5.0, 15.0, 100)
    other.span(0.0, 15.0, 100)
    alone.span(0.0, 10.0, 100)
    assert (a.seconds, b.seconds) == (7.5, 7.5)  # 5 s alone + 5 s shared / 2
    assert a.seconds + b.seconds == 15.0  # the location was busy 0..15 s
    assert (other.seconds, alone.seconds) == (15.0, 10.0)
    c = ReadClock(clock=lambda: now[0])
    c.join("nas-t2")
    del a  # a's run ended: its intervals stay while b and c (begun before it ended) may overlap them
    gc.collect()
    assert b.seconds == 7.5
    c.span(8.0, 9.0, 10)
    assert c.seconds == 1.0 / 3.0


def test_finished_clocks_of_a_location_are_let_go() -> None:
    now = [0.0]
    for i in range(3 * readclock.MAX_RETIRED):
        clock = ReadClock(clock=lambda: now[0])
        clock.join("nas-t2-retired")
        now[0] = float(i)
        clock.span(now[0], now[0] + 0.5, 1)
    assert len(readclock._PEERS["nas-t2-retired"]) <= readclock.MAX_RETIRED + 1
    now[0] += 1.0
    live = ReadClock(clock=lambda: now[0])
    live.join("nas-t2-retired")
    del clock
    gc.collect()
    assert len(readclock._peers("nas-t2-retired")) == 1  # all ended before the live one began
    del live
    gc.collect()
    assert "nas-t2-retired" not in readclock._PEERS or not readclock._peers("nas-t2-retired")
