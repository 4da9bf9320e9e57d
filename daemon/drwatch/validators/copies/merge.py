"""The bookkeeping of a key-ordered merge over several locations, shared by ``replica`` and ``dataset``.

Each location is listed in key order and merged with the reference in one pass; the objects that need a
read are proven by tasks, at most a window of them at a time. A listing that fails drops only its location;
a read that fails costs only its object, or its location when that location is down. A directory of a
filesystem location that cannot be listed (permission) costs only the objects under it: "could not check",
never missing, while the rest of that location is still proven.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from drwatch.core.model import CopyState, Finding, Severity
from drwatch.storage.filesystem import Entry
from drwatch.storage.readclock import ReadClock
from drwatch.storage.s3 import S3Unavailable
from drwatch.storage.sources import FilesystemSource, Source


@dataclass
class Tally:
    """One location's tallies (production or a copy); validators add their own counts in a subclass."""

    src: Source
    state: CopyState | None = None  # set early when the location is unavailable/missing/offline
    verified: int = 0
    missing: int = 0
    mismatch: int = 0
    extra: int = 0
    errors: int = 0
    bytes_verified: int = 0
    evidence: dict[str, int] = field(default_factory=dict)  # objects proven, by evidence
    lock: dict[str, int] = field(default_factory=dict)  # objects by Object Lock state (copies.record_lock)
    retain_until_min: float | None = None
    storage_classes: set[str] = field(default_factory=set)
    reads: ReadClock = field(default_factory=ReadClock)  # the copy's own reads, timed (restore-time model)
    findings: list[Finding] = field(default_factory=list)
    listed: dict[str, int] = field(default_factory=dict)  # findings per code so far (listed up to a limit)
    broken: bool = False  # the location failed mid-run: dropped from the merge, reported as error
    # Directories that could not be listed ("a/b/", reason), appended by the walk's thread; the first
    # ``unlisted_noted`` of them have their finding.
    unlisted: list[tuple[str, str]] = field(default_factory=list)
    unlisted_noted: int = 0

    def __post_init__(self) -> None:
        self.reads.join(self.src.location)  # concurrent runs' reads of the location share its busy time

    @property
    def name(self) -> str:
        return self.src.name

    def unlistable(self, prefix: str, exc: OSError) -> None:
        """Walk callback (runs in the walk's thread): a directory of this location cannot be listed."""
        self.unlisted.append((prefix, exc.strerror or type(exc).__name__))

    def note_unlisted(self, limit: int) -> None:
        """One ``unreadable`` finding (an error of this location) per directory reported since the last call."""
        while self.unlisted_noted < len(self.unlisted):
            prefix, reason = self.unlisted[self.unlisted_noted]
            self.unlisted_noted += 1
            self.errors += 1
            self.note("unreadable", f"cannot list directory: {reason}; the objects under it could not be checked",
                      prefix, limit, Severity.WARNING)

    def unchecked(self, key: str) -> bool:
        """Whether ``key`` lies under a directory that could not be listed: counted as could-not-check."""
        if any(key.startswith(prefix) for prefix, _ in self.unlisted):
            self.errors += 1
            return True
        return False

    def note(self, code: str, message: str, subject: str, limit: int, severity: Severity = Severity.CRITICAL) -> None:
        """A finding about one object; past ``limit`` of one code they are only counted."""
        shown = self.listed.get(code, 0)
        self.listed[code] = shown + 1
        if shown < limit:
            self.findings.append(Finding(severity, code, message, f"{self.name}:{subject}"))

    def break_off(self, code: str, message: str) -> None:
        """Stop checking this location (it failed): one finding, no further requests."""
        self.errors += 1
        if not self.broken:
            self.broken = True
            self.findings.append(Finding(Severity.WARNING, code, message, self.name))


def listing(s: Tally) -> AsyncIterator[Entry]:
    """A location's listing in key order. On a filesystem, a subdirectory that cannot be listed is passed over
    and recorded in ``s.unlisted`` (see ``Tally.unchecked``) instead of ending the listing."""
    if isinstance(s.src, FilesystemSource):
        return s.src.entries(on_unreadable=s.unlistable)  # the source's own listing (passes over hard links)
    return s.src.entries()


async def next_entry(s: Tally, listing: AsyncIterator[Entry], limit: int = 10) -> Entry | None:
    """The next entry of a location's listing; None at its end or when it failed (the location is dropped).

    Directories that could not be listed are reported before the entry after them is returned, so a key
    the merge finds absent from this location can be checked with ``s.unchecked(key)``.
    """
    try:
        return await anext(listing, None)
    except S3Unavailable as exc:
        s.break_off(exc.code, f"listing failed: {exc.message}")
    except OSError as exc:
        s.break_off("location_changed" if isinstance(exc, FileNotFoundError) else "unreadable",
                    f"listing failed: {exc.strerror or type(exc).__name__}")
    finally:
        s.note_unlisted(limit)
    return None


async def guard(s: Tally, work: Callable[[], Awaitable[None]], key: str, limit: int, vanished: str,
                down: frozenset[str]) -> None:
    """Run one object's proof: an object gone since the listing is missing (finding ``vanished``), a read
    that fails is an error of that object, or of the whole location when its S3 code is in ``down``."""
    try:
        await work()
    except FileNotFoundError:
        s.missing += 1
        s.note("missing_file", vanished, key, limit, Severity.CRITICAL)
    except S3Unavailable as exc:
        if exc.code in down:
            s.break_off(exc.code, exc.message)
        else:
            s.errors += 1
            s.note("unreadable", f"cannot read: {exc.message}", key, limit, Severity.WARNING)
    except OSError as exc:
        s.errors += 1
        s.note("unreadable", f"cannot read: {exc.strerror or type(exc).__name__}", key, limit, Severity.WARNING)


class Window:
    """At most ``size`` proofs in flight; one that raises (a bug, or the reference down) ends the merge."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tasks: set[asyncio.Task[None]] = set()
        self._ended: list[asyncio.Task[None]] = []  # finished since their outcome was last looked at
        self._room: asyncio.Future[None] | None = None  # the spawner waiting for a place

    def _end(self, task: asyncio.Task[None]) -> None:
        """Done callback: a place is free (O(1) per proof, unlike ``asyncio.wait`` over the whole window)."""
        self.tasks.discard(task)
        self._ended.append(task)
        if self._room is not None and not self._room.done():
            self._room.set_result(None)

    def _raise_ended(self) -> None:
        ended, self._ended = self._ended, []
        for t in ended:
            t.result()

    async def spawn(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``work()`` once a place is free (the coroutine is created only then)."""
        self._raise_ended()
        while len(self.tasks) >= self.size:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
            self._raise_ended()
        task = asyncio.ensure_future(work())
        self.tasks.add(task)
        task.add_done_callback(self._end)

    async def join(self) -> None:
        """Wait for every proof in flight."""
        if self.tasks:
            await asyncio.gather(*self.tasks)
        self._raise_ended()

    async def cancel(self) -> None:
        """Cancel what is still in flight (the merge ends early) and wait until it has stopped."""
        for t in self.tasks:
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        ended, self._ended = self._ended, []
        for t in ended:  # outcomes looked at: nothing is left to be reported as never retrieved
            if not t.cancelled():
                t.exception()
