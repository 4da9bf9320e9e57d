"""Reading files off the event loop: hashing and byte comparison in the shared pool of worker threads.

Small files (as listed) are read in batches: one executor call reads and hashes (or compares) up to
``BATCH_FILES`` of them, so a tree of tiny files costs one thread hop per batch instead of one per file and
side; the batch is filled while the previous ones run (at most ``workers`` batches in flight). Large files keep
one call each, where the hop is lost in the read. Reads go straight to file descriptors into one buffer per
worker thread (never a fresh zero-filled megabyte per file), and every read is checked for a stop request
between chunks, so a cancelled run or shutdown does not wait for a huge file to be read to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from drwatch.storage.readclock import ReadClock

StrPath = str | os.PathLike[str]

CHUNK = 1024 * 1024
SMALL = 256 * 1024  # files listed up to this size are read in batches
BATCH_FILES = 64
BATCH_BYTES = 4 * 1024 * 1024
_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_local = threading.local()
_R = TypeVar("_R")
_T = TypeVar("_T")


class HashCancelled(Exception):
    """The hash was abandoned (its run was cancelled or drwatch is stopping)."""


class ReferenceUnreadable(Exception):
    """Comparing two files, the reference side (production) could not be read: not the copy's fault."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        super().__init__(str(error))


def _buffers() -> tuple[bytearray, bytearray]:
    """This thread's two read buffers (allocated once per thread)."""
    bufs: tuple[bytearray, bytearray] | None = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = (bytearray(CHUNK), bytearray(CHUNK))
    return bufs


def _fill(fd: int, view: memoryview) -> int:
    """Read until ``view`` is full or the file ends (a short read before the end is read on)."""
    got = 0
    size = len(view)
    while got < size:
        n = os.readv(fd, [view[got:]])
        if not n:
            break
        got += n
    return got


ALGORITHMS = ("sha256", "blake3")  # digests a seal may record; sha256 is the default


class AlgorithmUnavailable(OSError):
    """A seal's digest algorithm cannot be computed here (the ``blake3`` package is not installed): the
    files could not be checked, which is never a verdict on them."""

    def __init__(self, algorithm: str) -> None:
        super().__init__(f"the {algorithm} digest needs the {algorithm!r} Python package (pip install "
                         f"'drwatch[blake3]')")
        self.strerror = str(self)


def new_hash(algorithm: str) -> Any:
    """A fresh hash object (``update``/``hexdigest``) of ``algorithm`` (one of ``ALGORITHMS``)."""
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "blake3":
        try:
            import blake3  # type: ignore[import-not-found,unused-ignore]  # lazy: only BLAKE3 seals load it
        except ImportError:
            raise AlgorithmUnavailable(algorithm) from None
        return blake3.blake3()
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


def sha256_file(path: StrPath, chunk: int = CHUNK, stop: threading.Event | None = None) -> tuple[str, int]:
    """sha256 hex digest and size of a file, with bounded memory. Blocking: call from a worker thread.

    ``stop`` is checked between chunks so a cancelled run (or shutdown) does not keep a thread busy
    until a huge file is fully read.
    """
    return digest_file(path, "sha256", chunk, stop)


def digest_file(path: StrPath, algorithm: str = "sha256", chunk: int = CHUNK,
                stop: threading.Event | None = None) -> tuple[str, int]:
    """Hex digest (``algorithm``) and size of a file, as :func:`sha256_file`."""
    digest = new_hash(algorithm)
    total = 0
    buf = _buffers()[0] if chunk == CHUNK else bytearray(chunk)
    view = memoryview(buf)
    fd = os.open(path, _FLAGS)
    try:
        while True:
            if stop is not None and stop.is_set():
                raise HashCancelled(str(path))
            n = os.readv(fd, [buf])
            if not n:
                break
            digest.update(view[:n])
            total += n
    finally:
        os.close(fd)
    return digest.hexdigest(), total


def compare_files(reference: StrPath, copy: StrPath, stop: threading.Event | None = None,
                  copy_spans: list[tuple[float, float]] | None = None) -> tuple[bool, int]:
    """Whether two files hold the same bytes, compared chunk by chunk (no hashing); and the bytes of the copy
    read. A difference ends the read early. Blocking: call from a worker thread.

    The copy is opened first; its errors propagate as they are (a copy's file gone is that copy's missing
    file), while any error of the reference is raised as :class:`ReferenceUnreadable`. ``copy_spans`` gets the
    intervals spent opening and reading the copy (monotonic seconds), not those spent reading the reference.
    """
    buf_a, buf_b = _buffers()
    view_a, view_b = memoryview(buf_a), memoryview(buf_b)
    clock = time.monotonic
    spans = copy_spans if copy_spans is not None else []
    began = clock()
    fd_copy = os.open(copy, _FLAGS)
    spans.append((began, clock()))
    try:
        try:
            fd_ref = os.open(reference, _FLAGS)
        except OSError as exc:
            raise ReferenceUnreadable(exc) from exc
        try:
            total = 0
            while True:
                if stop is not None and stop.is_set():
                    raise HashCancelled(str(copy))
                began = clock()
                n = _fill(fd_copy, view_b)
                spans.append((began, clock()))
                try:
                    m = _fill(fd_ref, view_a)
                except OSError as exc:
                    raise ReferenceUnreadable(exc) from exc
                total += n
                # bytearray equality is a memcmp (~20 GB/s); memoryview equality compares item by item (~1 GB/s)
                if n != m or (buf_a != buf_b if n == CHUNK else buf_a[:n] != buf_b[:n]):
                    return False, total
                if n < CHUNK:
                    return True, total
        finally:
            os.close(fd_ref)
    finally:
        os.close(fd_copy)


Spans = list[tuple[float, float]]


def _timed_call(call: Callable[[threading.Event], _R], stop: threading.Event) -> tuple[_R, Spans]:
    """Worker thread: ``call`` and when it ran (monotonic seconds)."""
    started = time.monotonic()
    result = call(stop)
    return result, [(started, time.monotonic())]


def _timed_compare(reference: StrPath, copy: StrPath, stop: threading.Event) -> tuple[tuple[bool, int], Spans]:
    """Worker thread: :func:`compare_files` and when it read the copy (never its waits for the reference)."""
    spans: Spans = []
    return compare_files(reference, copy, stop, spans), spans


class _Job:
    __slots__ = ("abandoned", "call", "error", "fut", "path", "result", "size")

    def __init__(self, call: Callable[[threading.Event], Any], path: StrPath, size: int,
                 fut: asyncio.Future[Any]) -> None:
        self.call, self.path, self.size, self.fut = call, path, size, fut
        self.abandoned = False  # its caller was cancelled: skipped by the batch
        self.result: Any = None
        self.error: BaseException | None = None


def _run_batch(batch: list[_Job], stop: threading.Event) -> None:
    """Worker thread: run every job of a batch, each one's outcome kept on the job."""
    for job in batch:
        if job.abandoned or stop.is_set():
            job.error = HashCancelled(str(job.path))
            continue
        try:
            job.result = job.call(stop)
        except Exception as exc:  # delivered to the job's caller
            job.error = exc


class HashPool:
    """Bounded worker threads for reading files: shared by all validators (global bound).

    A hash whose awaiting task is cancelled, and every hash once the pool is closed, stops at the next
    chunk, so cancelled runs and shutdown do not wait for huge files to be read to the end. Files listed as
    small (``size`` given, at most ``SMALL``) are read in batches (see the module docstring).
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drwatch-hash")
        self._closed = threading.Event()
        self._active: set[threading.Event] = set()
        self._queue: deque[_Job] = deque()
        self._in_flight = 0  # batches submitted and not finished
        self.batches = 0  # batches submitted so far (thread hops for small files)
        self._dispatching = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the batch bookkeeping belongs to

    async def sha256(self, path: StrPath, size: int | None = None, algorithm: str = "sha256",
                     clock: ReadClock | None = None) -> tuple[str, int]:
        """Hex digest (sha256 unless ``algorithm`` says otherwise) and bytes read of ``path``; ``size``: its
        listed size (small files are batched). ``clock`` gets the read's own time, measured in its thread."""
        call = functools.partial(digest_file, path, algorithm, CHUNK)
        if clock is None:
            return await self._run(call, path, size)
        return await self._timed(functools.partial(_timed_call, call), path, size, clock)

    async def compare(self, reference: StrPath, copy: StrPath, size: int | None = None,
                      clock: ReadClock | None = None) -> tuple[bool, int]:
        """Whether ``copy`` holds ``reference``'s bytes (:func:`compare_files`), read in this pool. ``clock`` gets
        the time spent reading the copy, not the reference."""
        if clock is None:
            return await self._run(functools.partial(compare_files, reference, copy), copy, size)
        return await self._timed(functools.partial(_timed_compare, reference, copy), copy, size, clock)

    async def _timed(self, call: Callable[[threading.Event], tuple[tuple[_T, int], Spans]], path: StrPath,
                     size: int | None, clock: ReadClock) -> tuple[_T, int]:
        asked = clock.asked()
        try:
            result, spans = await self._run(call, path, size)
        except BaseException:
            clock.answered(asked, (), 0)  # a read that failed or was cancelled: no busy time, no bytes
            raise
        clock.answered(asked, spans, result[1])  # from when a thread took the read up, not from when it was asked
        return result

    async def _run(self, call: Callable[[threading.Event], _R], path: StrPath, size: int | None) -> _R:
        if size is not None and size <= SMALL:
            return await self._batched(call, path, size)
        stop = threading.Event()
        if self._closed.is_set():
            stop.set()
        self._active.add(stop)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call, stop)
        except asyncio.CancelledError:
            stop.set()
            raise
        finally:
            self._active.discard(stop)

    async def _batched(self, call: Callable[[threading.Event], _R], path: StrPath, size: int) -> _R:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a pool outliving its event loop (tests): that loop's batches never finish
            self._loop, self._queue, self._in_flight, self._dispatching = loop, deque(), 0, False
        job = _Job(call, path, size, loop.create_future())
        if self._closed.is_set():
            raise HashCancelled(str(path))
        self._queue.append(job)
        if not self._dispatching:
            self._dispatching = True
            loop.call_soon(self._dispatch, loop)  # after the callers ready now have queued theirs
        try:
            result: _R = await job.fut
            return result
        except asyncio.CancelledError:
            job.abandoned = True
            raise

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._dispatching = False
        while self._queue and self._in_flight < self.workers:
            batch: list[_Job] = []
            nbytes = 0
            while self._queue and len(batch) < BATCH_FILES and nbytes < BATCH_BYTES:
                job = self._queue.popleft()
                if not job.abandoned:
                    batch.append(job)
                    nbytes += job.size
            if not batch:
                return
            try:
                done = self._pool.submit(_run_batch, batch, self._closed)
            except RuntimeError:  # the pool is shut down
                for job in batch:
                    job.error = HashCancelled(str(job.path))
                self._finish(loop, batch)
                continue
            self._in_flight += 1
            self.batches += 1
            done.add_done_callback(functools.partial(self._done, loop, batch))

    def _done(self, loop: asyncio.AbstractEventLoop, batch: list[_Job], done: ThreadFuture[None]) -> None:
        """Worker thread (or the submitter): hand the batch back to the event loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._finished, loop, batch, done.cancelled())

    def _finished(self, loop: asyncio.AbstractEventLoop, batch: list[_Job], dropped: bool) -> None:
        self._in_flight -= 1
        if dropped:  # never ran: the pool was shut down with the batch still queued
            for job in batch:
                job.error = HashCancelled(str(job.path))
        self._finish(loop, batch)
        if self._queue and not self._dispatching:
            self._dispatch(loop)

    @staticmethod
    def _finish(loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        for job in batch:
            if job.fut.done():
                continue
            if job.error is not None:
                job.fut.set_exception(job.error)
            else:
                job.fut.set_result(job.result)

    def close(self) -> None:
        self._closed.set()
        for stop in list(self._active):
            stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
