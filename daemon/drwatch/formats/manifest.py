"""Manifests (seals) of recovery points: JSON Lines, one header line then one line per file in key order.

```
{"drwatch_manifest": 1, "sealed_at": 1732780800.0, "algorithm": "sha256", "files": 2, "bytes": 123, \
 "parquet_facts": true}
{"path": "a/b.parquet", "size": 100, "sha256": "...", "parquet": {"rows": 5000, "row_groups": 3, "schema": "..."}}
{"path": "c.txt", "size": 23, "sha256": "..."}
```
Files are in string order of their paths (see :mod:`drwatch.storage.filesystem`), so a manifest can be merged
against a listing as a stream.

``algorithm`` names the digest every file line carries under that name: ``sha256`` (the default) or ``blake3``
(``drwatch seal --algorithm blake3``: ``{"path": ..., "size": ..., "blake3": "..."}``); validators hash with it.
Any other name is a corrupt manifest (never read as sha256).

``parquet`` (optional, per ``*.parquet`` entry) holds the file's row count, row-group count and schema
fingerprint (:mod:`drwatch.formats.parquet`), or ``{"error": ...}`` when its footer was unreadable at seal time.
The header's ``parquet_facts`` says whether they were recorded (false: pyarrow was not installed where the
seal was made); manifests without it predate the field. Both are optional, so older manifests stay valid and
older readers ignore them. ``drwatch seal`` writes one at backup time; drwatch itself never writes
into backup locations.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from drwatch.formats import sealsign
from drwatch.formats.parquet import ParquetFacts
from drwatch.storage.filesystem import Entry
from drwatch.storage.hashing import ALGORITHMS

FORMAT_VERSION = 1


class ManifestError(Exception):
    """The manifest is corrupt or not a drwatch manifest (a bad seal: the finding is ``code``)."""

    code = "manifest_corrupt"


class SealUnsigned(ManifestError):
    """The asset requires signed seals and this one carries no signature."""

    code = "seal_unsigned"


class SealSignatureInvalid(ManifestError):
    """The seal's signature does not verify with the asset's public key (altered, or another key)."""

    code = "seal_signature_invalid"


@dataclass(frozen=True)
class ManifestHeader:
    sealed_at: float
    files: int
    bytes: int
    algorithm: str = "sha256"
    extra: dict[str, Any] | None = None
    parquet_facts: bool | None = None  # Parquet facts recorded (False: pyarrow missing; None: older seal)


def _key(path: str) -> str:
    if not path or any(p in ("", ".", "..") for p in path.split("/")):
        raise ManifestError(f"invalid path {path!r} in manifest")
    return path


# JSON that cannot be decoded: bad UTF-8 and bad JSON (ValueError subclasses), integers past Python's digit
# limit (ValueError), nesting deeper than the parser's recursion limit (RecursionError). A seal is untrusted
# input: every one of these is a corrupt seal, never a crash.
UNDECODABLE = (ValueError, RecursionError)
FUTURE_TOLERANCE = 86400.0  # a seal dated further ahead of this host's clock is not believed


def read_header(fh: IO[str]) -> ManifestHeader:
    try:
        head = json.loads(fh.readline())
    except UNDECODABLE:
        raise ManifestError("first line is not a drwatch manifest header") from None
    if not isinstance(head, dict) or head.get("drwatch_manifest") != FORMAT_VERSION:
        raise ManifestError("not a drwatch manifest (version 1 header expected)")
    facts = head.get("parquet_facts")
    if facts is not None and not isinstance(facts, bool):
        raise ManifestError("manifest header: parquet_facts must be true or false")
    try:
        header = ManifestHeader(
            sealed_at=float(head["sealed_at"]),
            files=int(head["files"]),
            bytes=int(head["bytes"]),
            algorithm=str(head.get("algorithm", "sha256")),
            extra=head.get("extra"),
            parquet_facts=facts,
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ManifestError("manifest header lacks sealed_at/files/bytes") from None
    if header.algorithm not in ALGORITHMS:
        raise ManifestError(f"manifest header: unknown digest algorithm {header.algorithm!r} "
                            f"(known: {', '.join(ALGORITHMS)})")
    if not math.isfinite(header.sealed_at) or header.sealed_at <= 0:
        raise ManifestError(f"manifest header: sealed_at {head['sealed_at']!r} is not a time")
    if header.sealed_at > time.time() + FUTURE_TOLERANCE:
        raise ManifestError(f"manifest header: sealed_at {header.sealed_at:.0f} lies more than a day ahead of this "
                            "host's clock (seconds since the epoch expected; milliseconds?)")
    return header


def iter_entries(fh: IO[str], header: ManifestHeader) -> Iterator[Entry]:
    """Yield entries, checking order, format and the header's totals."""
    prev: str | None = None
    count = 0
    total = 0
    lineno = 1
    signed = False  # the signature line (drwatch.formats.sealsign) was read: it must be the last one
    while True:
        lineno += 1
        try:
            line = fh.readline()
        except UNDECODABLE:
            raise ManifestError(f"line {lineno}: not UTF-8") from None
        if not line:
            break
        if not line.strip():
            continue
        if signed:
            raise ManifestError(f"line {lineno}: entries after the signature line")
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and sealsign.SIGNATURE_KEY in rec:
                signed = True  # verified (when the asset has a key) before the entries were read
                continue
            key = _key(str(rec["path"]))
            size = int(rec["size"])
            digest = str(rec[header.algorithm])
            parquet = ParquetFacts.from_json(rec["parquet"]) if "parquet" in rec else None
        except (*UNDECODABLE, KeyError, TypeError, OverflowError) as exc:
            raise ManifestError(f"line {lineno}: malformed entry ({type(exc).__name__})") from None
        if len(digest) != 64 or size < 0:
            raise ManifestError(f"line {lineno}: bad size or {header.algorithm}")
        if prev is not None and key <= prev:
            raise ManifestError(f"line {lineno}: entries out of order or duplicated")
        prev = key
        count += 1
        total += size
        yield Entry(key, size, header.sealed_at, digest, parquet=parquet, algorithm=header.algorithm)
    if count != header.files or total != header.bytes:
        raise ManifestError(
            f"manifest is truncated or altered: header says {header.files} files/{header.bytes} bytes, "
            f"found {count} files/{total} bytes"
        )


def check_signature(fh: IO[bytes], trust: sealsign.SealTrust) -> None:
    """Verify a seal's signature line against ``trust`` (reads the open file to its end; blocking).

    Raises SealUnsigned (no signature and ``trust.required``), SealSignatureInvalid, or SealKeyError (an
    OSError: the public key cannot be read, so nothing could be checked)."""
    key = sealsign.load_public_key(trust.public_key_path)
    h = hashlib.sha256()
    last: bytes | None = None
    for line in fh:
        if last is not None:
            h.update(last)
        last = line
    record = sealsign.parse_record(last) if last is not None else None
    if record is None:
        if trust.required:
            raise SealUnsigned("the seal is not signed and this asset requires signed seals "
                               "(drwatch seal --sign KEYFILE)")
        return
    why = sealsign.verify(key, record, h.digest())
    if why is not None:
        raise SealSignatureInvalid(why)


def _open_manifest(path: Path, trust: sealsign.SealTrust | None = None) -> tuple[IO[str], ManifestHeader]:
    raw = open(path, "rb")  # noqa: SIM115 - handed to the entry stream, which closes it
    try:
        if trust is not None:  # the bytes verified are the bytes then parsed: one open file, rewound
            check_signature(raw, trust)
            raw.seek(0)
        fh = io.TextIOWrapper(raw, encoding="utf-8")
    except BaseException:
        raw.close()
        raise
    try:
        return fh, read_header(fh)
    except BaseException:
        fh.close()
        raise


def _close_opened(fut: asyncio.Future[tuple[IO[str], ManifestHeader]]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result()[0].close()


class ManifestStream:
    """The entries of an open manifest, read in batches in worker threads; owns the file.

    The file is closed when the stream is exhausted or fails, and by :meth:`close` (also ``with`` / ``async
    with``), whether or not iteration ever started: a run that is cancelled or times out between opening the
    seal and reading it to the end must close it (register ``close`` on the run's exit stack), never leave it
    to the garbage collector. Closing while a batch is being read in a thread is safe: that thread closes the
    file when its batch ends, and nothing reads it afterwards.
    """

    def __init__(self, fh: IO[str], header: ManifestHeader) -> None:
        self._fh = fh
        self._gen = iter_entries(fh, header)
        self._buffer: collections.deque[Entry] = collections.deque()
        self._state = threading.Lock()  # guards the two flags below; never held during I/O
        self._reading = False  # a worker thread is reading a batch
        self._closing = False  # close() was called or the stream ended: the file is (to be) closed
        self._done = False

    def _batch(self) -> list[Entry]:
        with self._state:
            if self._closing:
                return []
            self._reading = True
        out: list[Entry] = []
        try:
            for entry in self._gen:
                out.append(entry)
                if len(out) >= 2000:
                    break
        finally:
            with self._state:
                self._reading = False
                close_now = self._closing
            if close_now:  # closed while this batch was read: the reader closes
                self._fh.close()
        return out

    def __aiter__(self) -> ManifestStream:
        return self

    async def __anext__(self) -> Entry:
        if not self._buffer and not self._done:
            try:
                items = await asyncio.to_thread(self._batch)
            except BaseException:
                self._done = True
                self.close()
                raise
            if items:
                self._buffer.extend(items)
            else:
                self._done = True
                self.close()
        if self._buffer:
            return self._buffer.popleft()
        raise StopAsyncIteration

    def close(self) -> None:
        """Close the file now (or, while a thread reads a batch, as soon as that batch ends). Idempotent."""
        self._done = True
        self._buffer.clear()
        with self._state:
            if self._closing:
                return
            self._closing = True
            reading = self._reading
        if not reading:
            self._fh.close()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> ManifestStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ManifestStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def aread(path: Path, stack: AsyncExitStack | None = None, trust: sealsign.SealTrust | None = None,
                ) -> tuple[ManifestHeader, ManifestStream]:
    """Open a manifest; return its header and a stream of its entries (read in threads).

    With ``trust`` (the asset's ``seal_signature``, see :func:`drwatch.formats.seals.seal_trust`) the seal's
    signature is verified first: this is the one place every validator reading a seal goes through.

    The stream owns the open file: it is closed at the stream's end, or by ``stream.close()``; with ``stack``
    (a run's exit stack) it is also closed when the stack unwinds, so a run cut off by its timeout or a
    cancellation never leaves it open. A cancellation while the file is being opened closes it too.
    """
    opening = asyncio.ensure_future(asyncio.to_thread(_open_manifest, path, trust))
    try:
        fh, header = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)  # the thread still opens the file: close it when it has
        raise
    stream = ManifestStream(fh, header)
    if stack is not None:
        stack.callback(stream.close)
    return header, stream
