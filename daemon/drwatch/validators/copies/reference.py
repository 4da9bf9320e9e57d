"""The reference side of the ``replica`` validator's merge: one key of the seal or of production.

Its digest and its production HEAD are computed at most once per key, however many copies ask for them at
the same time, and only when some copy needs them (a seal's sha256 or a provider SHA256 spares the read).
A failure to read the reference is ``ReferenceFailed``: production's problem (could not check), never a copy's.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable
from typing import TypeVar

from drwatch.storage.filesystem import Entry
from drwatch.storage.hashing import ReferenceUnreadable
from drwatch.storage.readclock import ReadClock
from drwatch.storage.s3 import ObjectHead, S3Unavailable
from drwatch.storage.sources import FilesystemSource, S3Source, Source

_T = TypeVar("_T")


class ReferenceFailed(Exception):
    """The reference (production) could not be read while proving a copy object: not the copy's fault."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


async def from_reference(work: Awaitable[_T]) -> _T:
    """Await a read of the reference, turning its failures into ReferenceFailed (never a copy's fault)."""
    try:
        return await work
    except (S3Unavailable, OSError) as exc:
        raise reference_failed(exc) from None


def reference_failed(exc: S3Unavailable | OSError) -> ReferenceFailed:
    """What a failure to read the reference (production) means for the copy compared with it."""
    if isinstance(exc, S3Unavailable):
        return ReferenceFailed(exc.code, f"production: {exc.message}")
    if isinstance(exc, FileNotFoundError):
        return ReferenceFailed("location_changed", "a production object vanished during the check")
    return ReferenceFailed("unreadable", f"cannot read production: {exc.strerror or type(exc).__name__}")


class Reference:
    """The reference side of one key: its digest is computed at most once, only when needed."""

    def __init__(self, entry: Entry, prod: Source | None, direct: bool = False) -> None:
        self.entry = entry
        self.prod = prod
        # One copy is proven against this key: a filesystem copy of a filesystem production may compare bytes
        # instead of hashing both sides (no digest is shared with another copy).
        self.direct = direct
        self._digest: asyncio.Future[str] | None = None
        self._head: asyncio.Future[ObjectHead | None] | None = None

    @property
    def head_known(self) -> bool:
        """Whether the reference's HEAD was asked for already (another copy's proof): using it costs nothing."""
        return self._head is not None

    async def head(self) -> ObjectHead | None:
        """The reference object's HEAD, requested once even when several copies ask at the same time."""
        if self.prod is None:
            return None
        if self._head is None:
            self._head = asyncio.get_running_loop().create_future()
            try:
                self._head.set_result(await from_reference(self.prod.head(self.entry)))
            except BaseException as exc:
                self._head.set_exception(exc)
                self._head.exception()  # mark retrieved; callers re-raise below
                raise
        return await self._head

    async def read_cost(self) -> int:
        """Bytes of egress proving a read against this reference would add: the reference's own bytes when
        they must be read (no seal, no provider SHA256, an S3 production not read yet), else 0."""
        if self.entry.sha256 is not None or self._digest is not None or not isinstance(self.prod, S3Source):
            return 0
        head = await self.head()
        return 0 if head is not None and "SHA256" in head.checksums else self.entry.size

    async def read_matches(self, src: Source, entry: Entry, clock: ReadClock | None = None) -> tuple[bool, int]:
        """Read the copy's object ``entry`` of ``src`` and whether it holds the reference's bytes; and the bytes
        of it read. Filesystem against filesystem production (``direct``), the two files are compared chunk by
        chunk — one read of each side, as hashing both would do, without the hashing; otherwise the copy is
        hashed and compared with the reference's digest (the seal's, or production's read once per key).
        Errors reading the copy propagate as they are; production's raise :class:`ReferenceFailed`. ``clock``
        times the copy's own read (with a direct comparison, both sides at once: the slower one sets the pace)."""
        if (self.direct and self.entry.sha256 is None and self._digest is None
                and isinstance(self.prod, FilesystemSource) and isinstance(src, FilesystemSource)):
            try:
                same, n = await src.same_bytes(entry, self.prod.path(self.entry), clock)
            except ReferenceUnreadable as exc:
                raise reference_failed(exc.error) from None
            return same and n == self.entry.size, n
        digest, n = await src.sha256(entry, self.entry.algorithm, clock)  # the seal's algorithm (production's: sha256)
        return digest == await self.sha256() and n == self.entry.size, n

    async def sha256(self) -> str:
        if self.entry.sha256 is not None:
            return self.entry.sha256
        if self._digest is None:
            self._digest = asyncio.get_running_loop().create_future()
            try:
                assert self.prod is not None
                head = await self.head()
                value = head.checksums.get("SHA256") if head is not None else None
                digest = (await from_reference(self.prod.sha256(self.entry)))[0] if value is None \
                    else b64hex(value)
                self._digest.set_result(digest)
            except BaseException as exc:
                self._digest.set_exception(exc)
                self._digest.exception()  # mark retrieved; callers re-raise below
                raise
        return await self._digest


def b64hex(value: str) -> str:
    return base64.b64decode(value).hex()
