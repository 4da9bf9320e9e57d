"""The verification ledger's rows as one run reads them: versions, reference ids, and a cursor in key order.

An object's *version* is what changes when its content is replaced, as the listing shows it for free; the
*reference id* is what changes when the reference of a key changes. A run reads each stream's rows in key
order, in pages, in step with its listing (:class:`LedgerCursor`); rows passed over are objects gone.
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drwatch.storage.filesystem import Entry
from drwatch.storage.s3 import RequestMeter
from drwatch.validators.base import LedgerWriter
from drwatch.validators.copies.ledger import LedgerEntry


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store backend raises when it is away or refuses (asyncpg only if that backend is loaded)."""
    errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, sqlite3.Error)
    pg = sys.modules.get("asyncpg")
    if pg is not None:
        errors += (pg.PostgresError, pg.InterfaceError)
    return errors


_PAGE = 1000


MISMATCH = "mismatch"  # the evidence of a ledger row whose object was found to differ from the reference


def version_of(entry: Entry) -> str:
    """What changes when an object's content is replaced, as the listing shows it for free.

    S3: the ETag. The server computes it (the MD5 of the bytes, of the parts' MD5s for a multipart upload, or
    a value new on every write under SSE-KMS/SSE-C): a writer cannot keep it while changing the bytes, so an
    overwrite of the same size is seen without a version id (which only HEAD or ListObjectVersions, a listing
    of every noncurrent version too, would give). Files: the mtime, the inode number and the inode's ctime. A
    file replaced by a new one (written aside and renamed over it, mtime set back with ``utime``) has a new
    inode; one rewritten in place with its mtime set back has a new ctime (``utime`` itself sets it, and no
    call can set it back). Both make the object due for reading at once. ctime also moves on chmod, chown and
    a new hard link: such a file is read once more. (``;`` separates the parts: a mismatch row's value holds
    the reference's version between ``|``.)"""
    if entry.etag:
        return f"etag:{entry.etag}"
    mtime = f"mtime:{entry.mtime!r}"
    return f"{mtime};ino:{entry.ino};ctime:{entry.ctime_ns}" if entry.ino else mtime


def same_version(stored: str, seen: str) -> bool:
    """Whether a stored version and one seen now are the same. A row written before inodes and ctimes were
    recorded (``mtime:...`` alone) matches on its mtime, so an upgrade does not re-read every file at once;
    the row gets the full version when it is written again, at the end of that run."""
    return stored == seen or (stored.startswith("mtime:") and ";" not in stored and seen.split(";", 1)[0] == stored)


def reference_id(entry: Entry) -> str:
    """What changes when the reference of a key changes: the seal's sha256, else production's version."""
    return f"{entry.algorithm}:{entry.sha256}" if entry.sha256 else version_of(entry)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LedgerCursor:
    """One copy's ledger rows in key order, read in pages, consumed in step with the listing."""

    def __init__(self, store: LedgerWriter, asset: str, copy: str) -> None:
        self.store, self.asset, self.copy = store, asset, copy
        self.rows: list[LedgerEntry] = []
        self.pos = 0
        self.after = ""
        self.done = False

    async def _peek(self) -> LedgerEntry | None:
        if self.pos >= len(self.rows) and not self.done:
            self.rows = await self.store.ledger_page(self.asset, self.copy, self.after, _PAGE)
            self.pos = 0
            if len(self.rows) < _PAGE:
                self.done = True
            if self.rows:
                self.after = self.rows[-1].key
        return self.rows[self.pos] if self.pos < len(self.rows) else None

    async def seek(self, key: str, gone: list[str]) -> LedgerEntry | None:
        """The row of ``key`` if any; keys before it were not listed (deleted objects) and go to ``gone``."""
        while (row := await self._peek()) is not None and row.key < key:
            gone.append(row.key)
            self.pos += 1
        if row is not None and row.key == key:
            self.pos += 1
            return row
        return None

    async def rest(self, gone: list[str]) -> None:
        while (row := await self._peek()) is not None:
            gone.append(row.key)
            self.pos += 1


@dataclass
class CopyRun:
    name: str
    location: str
    meter: RequestMeter | None
    cursor: LedgerCursor
    fs_bytes_read: int = 0  # filesystem copies: file bytes read (S3 bytes are in the meter)
    gone: list[str] = field(default_factory=list)
    # Directories of the listing that could not be read ("a/b/", reason), appended as the walk finds them:
    # rows under them were not listed because they could not be, not because the objects are gone.
    unlisted: list[tuple[str, str]] = field(default_factory=list)

    def deleted(self) -> list[str]:
        return [k for k in self.gone if not any(k.startswith(prefix) for prefix, _ in self.unlisted)]
