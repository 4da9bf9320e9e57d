"""Writing seals (:mod:`drwatch.formats.manifest` describes the format): of a directory, by the same walk the
validators use, or of any key-ordered stream of entries (S3). Nothing is written when the input cannot be read or
holds nothing to seal; the seal itself is written atomically or to a stream, signed when asked."""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from drwatch.core.atomicfile import write_text_atomic
from drwatch.formats import sealsign
from drwatch.formats.manifest import FORMAT_VERSION, ManifestHeader
from drwatch.formats.parquet import FooterError, ParquetFacts, available, is_parquet, read_file_facts
from drwatch.storage.filesystem import CHUNK, Entry, alist
from drwatch.storage.hashing import digest_file

DigestFn = Callable[[Entry], Awaitable[tuple[str, int]]]
ParquetFn = Callable[[Entry], Awaitable[ParquetFacts]]  # footer facts of a *.parquet entry (FooterError if bad)


class SealInputError(Exception):
    """A file or directory under the sealed root cannot be read (nothing is written)."""


class SealEmptyError(Exception):
    """The root holds nothing but entries that are not regular files (nothing is written)."""


class _Walk:
    """The entries under a root for a seal: skipped ones counted (and reported), read errors as SealInputError."""

    def __init__(self, root: Path, on_skipped: Callable[[str, str], None] | None) -> None:
        self.root, self.on_skipped, self.skipped = root, on_skipped, 0

    def skip(self, path: str, kind: str) -> None:
        self.skipped += 1
        if self.on_skipped is not None:
            self.on_skipped(path, kind)

    def unreadable(self, exc: OSError) -> SealInputError:
        return SealInputError(f"cannot read {exc.filename or self.root}: {exc.strerror or exc}")

    async def entries(self) -> AsyncIterator[Entry]:
        found = 0
        try:
            async for entry in alist(self.root, on_skipped=self.skip):
                found += 1
                yield entry
        except OSError as exc:
            raise self.unreadable(exc) from None
        if not found and self.skipped:
            raise SealEmptyError(f"refusing to write a seal of 0 objects: every entry under {self.root} was "
                                 "skipped, and a recovery point without regular files fails its check "
                                 "(empty_recovery_point)")


async def seal_directory(
    root: Path, out: IO[str] | None = None, out_path: Path | None = None, workers: int = 2,
    extra: dict[str, Any] | None = None, parquet: bool = True,
    on_skipped: Callable[[str, str], None] | None = None, signer: sealsign.Signer | None = None,
    algorithm: str = "sha256",
) -> ManifestHeader:
    """Write a manifest of every regular file under root: the same walk the validators use (symlinks and
    special files are passed over, reported to ``on_skipped(path, kind)`` from the walk's thread). Hashing
    and footer parsing run in ``workers`` threads; Parquet facts are recorded when ``parquet`` and pyarrow is
    installed. Raises SealInputError (unreadable input) or SealEmptyError (only skipped entries) before
    anything is written; OSError when the seal itself cannot be written."""
    loop = asyncio.get_running_loop()
    walk = _Walk(root, on_skipped)
    # Not ``with``: leaving that block waits for every thread, which would block the event loop until each file
    # being hashed is read to its end when sealing fails or is cancelled. Hashes stop at their next chunk instead.
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drwatch-seal")
    stop = threading.Event()
    try:

        async def digest(entry: Entry) -> tuple[str, int]:
            try:
                return await loop.run_in_executor(pool, digest_file, root.joinpath(*entry.parts), algorithm, CHUNK,
                                                  stop)
            except OSError as exc:
                raise walk.unreadable(exc) from None

        async def footer(entry: Entry) -> ParquetFacts:
            try:
                return await loop.run_in_executor(pool, read_file_facts, root.joinpath(*entry.parts))
            except OSError as exc:
                raise walk.unreadable(exc) from None

        return await seal_entries(walk.entries(), digest, max(2, workers * 4), out, out_path, extra,
                                  parquet=footer if parquet and available() else None, signer=signer,
                                  algorithm=algorithm)
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


class _Body:
    """The manifest's file lines, in stream order, in a temporary file (the header needs the totals)."""

    def __init__(self, fh: IO[str], digest: DigestFn, parquet: ParquetFn | None, algorithm: str) -> None:
        self.fh, self.digest, self.parquet, self.algorithm = fh, digest, parquet, algorithm
        self.files = self.total = 0
        self.inflight: list[tuple[Entry, asyncio.Task[tuple[str, int, ParquetFacts | None]]]] = []

    async def describe(self, entry: Entry) -> tuple[str, int, ParquetFacts | None]:
        sha, size = await self.digest(entry)
        facts: ParquetFacts | None = None
        if self.parquet is not None and is_parquet(entry.key):
            try:
                facts = await self.parquet(entry)
            except FooterError as exc:
                facts = ParquetFacts(error=str(exc))
        return sha, size, facts

    async def drain(self, limit: int) -> None:
        while len(self.inflight) > limit:
            entry, task = self.inflight.pop(0)
            sha, size, facts = await task
            rec: dict[str, Any] = {"path": entry.relpath, "size": size, self.algorithm: sha}
            if facts is not None:
                rec["parquet"] = facts.to_json()
            self.fh.write(json.dumps(rec) + "\n")
            self.files += 1
            self.total += size

    async def write(self, entries: AsyncIterator[Entry], window: int) -> None:
        try:
            async for entry in entries:
                self.inflight.append((entry, asyncio.ensure_future(self.describe(entry))))
                await self.drain(window)
            await self.drain(0)
        finally:
            for _, task in self.inflight:
                task.cancel()


def _emit(dest: IO[str], header: dict[str, Any], body: IO[str], signer: sealsign.Signer | None) -> None:
    signed = hashlib.sha256()  # JSON is ASCII (ensure_ascii): the text hashed is the bytes written

    def put(text: str) -> None:
        dest.write(text)
        signed.update(text.encode())

    put(json.dumps(header) + "\n")
    body.seek(0)
    while chunk := body.read(1 << 20):
        put(chunk)
    if signer is not None:
        dest.write(signer.record(signed.digest()))


async def seal_entries(
    entries: AsyncIterator[Entry], digest: DigestFn, window: int, out: IO[str] | None = None,
    out_path: Path | None = None, extra: dict[str, Any] | None = None, parquet: ParquetFn | None = None,
    signer: sealsign.Signer | None = None, algorithm: str = "sha256",
) -> ManifestHeader:
    """Write a manifest of a key-ordered stream of entries; ``digest`` gives (hex digest, size) in
    ``algorithm`` (sha256, the default, or blake3), which the header records.

    With ``signer``, a signature line over the exact bytes written before it ends the seal
    (:mod:`drwatch.formats.sealsign`).

    With ``parquet``, every ``*.parquet`` entry also gets its footer facts (an unreadable footer is recorded
    as such: the seal describes the recovery point as it is) and the header says ``parquet_facts: true``.

    Up to ``window`` digests run at once; entries are written in stream order. The body goes to a
    temporary file first (the header needs the totals), then header and body go to ``out`` or
    atomically to ``out_path``.
    """
    sealed_at = time.time()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as fh:
        body = _Body(fh, digest, parquet, algorithm)
        await body.write(entries, window)
        header: dict[str, Any] = {
            "drwatch_manifest": FORMAT_VERSION,
            "sealed_at": sealed_at,
            "algorithm": algorithm,
            "files": body.files,
            "bytes": body.total,
            "parquet_facts": parquet is not None,
        }
        if extra:
            header["extra"] = extra
        if out_path is not None:
            await asyncio.to_thread(write_text_atomic, out_path, lambda dest: _emit(dest, header, fh, signer))
        elif out is not None:
            await asyncio.to_thread(_emit, out, header, fh, signer)
    return ManifestHeader(sealed_at=sealed_at, files=body.files, bytes=body.total, extra=extra,
                          parquet_facts=parquet is not None)
