"""The ``model_weights`` checks of one location against the seal: the listing (``missing`` and ``extra``
files), the structure of every ``*.safetensors`` file from its header alone and of every
``*.safetensors.index.json`` against its shards (a structurally bad file is ``corrupt`` and is not hashed), then
the size and digest of every other file (``mismatch``) and, on S3, each object's lock. The copy the inference
restores is copied into the run's sandbox while it is hashed, so it is read once."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from drwatch.core.model import Severity
from drwatch.core.sandbox import make_dirs
from drwatch.formats import safetensors as st
from drwatch.formats.parquet import s3_range
from drwatch.storage.filesystem import CHUNK, MANIFEST_NAME, Entry, HashCancelled, alist, aopen
from drwatch.storage.hashing import new_hash
from drwatch.storage.s3 import S3Unavailable, classify
from drwatch.storage.sources import FilesystemSource, S3Source
from drwatch.validators.base import RunContext
from drwatch.validators.copies.merge import Tally
from drwatch.validators.copies.posture import probe_location, record_lock

_LOCATION_DOWN = frozenset({"unreachable", "no_credentials", "access_denied"})
_INDEX_SUFFIX = ".safetensors.index.json"
_INDEX_MAX = 64 * 1024**2


@dataclass
class CopyCheck(Tally):
    """One location's tallies in a ``model_weights`` run: the copy tally of the copies family
    (:class:`drwatch.validators.copies.merge.Tally`) plus what the model checks count."""

    limit: int = 10  # findings listed one by one per code (list_limit), then only counted
    corrupt: int = 0
    bytes_hashed: int = 0
    hashed: int = 0
    structure_checked: int = 0
    seconds: float = 0.0
    skip: set[str] = field(default_factory=set)  # files already counted as gone or unreadable

    @property
    def counts(self) -> dict[str, int]:
        """Files by state (``STATES``): the copy report's objects."""
        return {"verified": self.verified, "missing": self.missing, "mismatch": self.mismatch,
                "corrupt": self.corrupt, "extra": self.extra}

    def flag(self, code: str, message: str, key: str, severity: Severity = Severity.CRITICAL) -> None:
        """A finding about one file (``note`` with this location's ``limit``)."""
        self.note(code, message, key, self.limit, severity)

    def failed(self) -> bool:
        return bool(self.missing or self.mismatch or self.corrupt)


def _s3_key(src: S3Source, key: str) -> str:
    base = src.prefix.strip("/")
    return f"{base}/{key}" if base else key


def _copy_file(src: Path, dest: Path, stop: threading.Event, algorithm: str, root: Path) -> tuple[str, int]:
    """Copy while hashing with the seal's ``algorithm`` (blocking; stops at the next chunk once ``stop`` is set).
    ``root``: the sandbox ``dest`` lies in (its directories are made below it, never it)."""
    make_dirs(root, dest.parent)
    digest = new_hash(algorithm)
    total = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as fi, open(dest, "wb") as fo:
        while n := fi.readinto(buf):
            if stop.is_set():
                raise HashCancelled(str(src))
            digest.update(view[:n])
            fo.write(view[:n])
            total += n
    return digest.hexdigest(), total


async def _probe(c: CopyCheck) -> bool:
    c.state, finding = await probe_location(c.src)
    if finding is not None:
        c.findings.append(finding)
    return c.state is None

async def check_copy(ctx: RunContext, c: CopyCheck, seal: dict[str, Entry], restore: Path | None, *,
                     structure: bool) -> None:
    """One location against the seal: its listing, the structure of its safetensors files (``structure``), every
    file's size and digest (copied into ``restore`` while hashed, for the copy the inference restores)."""
    started = time.monotonic()
    try:
        if await _probe(c):
            await _check_files(ctx, c, seal, restore, structure)
    finally:
        c.seconds = time.monotonic() - started

async def _check_files(ctx: RunContext, c: CopyCheck, seal: dict[str, Entry], restore: Path | None,
                       structure: bool) -> None:
    listed = await _list(c)
    if listed is None:
        return
    listing, unlisted = listed
    for prefix, reason in unlisted:
        c.errors += 1
        c.flag("unreadable", f"cannot list directory: {reason}; the files under it could not be checked", prefix,
               Severity.WARNING)
    for key in sorted(seal.keys() - listing.keys()):
        if any(key.startswith(prefix) for prefix, _ in unlisted):
            c.errors += 1  # under an unlistable directory: could not check, never missing
            continue
        c.missing += 1
        c.flag("missing_file", "file of the sealed model is missing", key)
    for key in sorted(listing.keys() - seal.keys()):
        c.extra += 1
        c.flag("extra_file", "file not in the sealed model", key, Severity.WARNING)
    present = sorted(seal.keys() & listing.keys())
    window = asyncio.Semaphore(max(2, ctx.hashes.workers * 2))
    corrupt: set[str] = set()
    if structure:
        await _structure(c, seal, listing, present, window, corrupt)
    await asyncio.gather(*(_guard(c, _verify(c, listing[k], seal[k], k in corrupt, restore, window), k)
                           for k in present))

async def _list(c: CopyCheck) -> tuple[dict[str, Entry], list[tuple[str, str]]] | None:
    """The copy's files (the seal itself left out) and the filesystem directories that could not be listed
    (permission: their files could not be checked); None when the listing failed (the copy is broken off)."""
    listing: dict[str, Entry] = {}
    unlisted: list[tuple[str, str]] = []

    def unlistable(prefix: str, exc: OSError) -> None:  # runs in the walk's thread
        unlisted.append((prefix, exc.strerror or type(exc).__name__))

    entries = (alist(c.src.root, on_unreadable=unlistable) if isinstance(c.src, FilesystemSource)
               else c.src.entries())
    try:
        async for e in entries:
            if e.key != MANIFEST_NAME:
                listing[e.key] = e
    except S3Unavailable as exc:
        c.break_off(exc.code, f"listing failed: {exc.message}")
        return None
    except OSError as exc:
        c.break_off("unreadable", f"listing failed: {exc.strerror or type(exc).__name__}")
        return None
    return listing, unlisted

async def _structure(c: CopyCheck, seal: dict[str, Entry], listing: dict[str, Entry], present: list[str],
                     window: asyncio.Semaphore, corrupt: set[str]) -> None:
    """safetensors headers and their index files: the corrupt ones are added to ``corrupt``."""
    tensors: dict[str, frozenset[str] | None] = {k: None for k in seal if k.endswith(".safetensors")}

    async def header(key: str) -> None:
        async with window:
            layout = await _layout(c, listing[key])
        if layout is None:
            return
        c.structure_checked += 1
        if layout.ok:
            tensors[key] = layout.names
            return
        corrupt.add(key)
        for p in layout.problems:
            c.flag(p.code, p.message, key)

    await asyncio.gather(*(_guard(c, header(k), k) for k in present if k.endswith(".safetensors")))
    for key in (k for k in present if k.endswith(_INDEX_SUFFIX)):
        problems = await _guard(c, _index(c, listing[key], tensors), key)
        for p in problems or []:
            severe = p.code != st.INDEX_UNLISTED_TENSOR
            if severe:
                corrupt.add(key)
            c.flag(p.code, p.message, key, Severity.CRITICAL if severe else Severity.WARNING)
    c.corrupt += len(corrupt)

async def _verify(c: CopyCheck, entry: Entry, ref: Entry, corrupt: bool, restore: Path | None,
                  window: asyncio.Semaphore) -> None:
    """One file against the seal: its lock facts (S3), then size and digest (read, or restored)."""
    key = ref.key
    if isinstance(c.src, S3Source):
        head = await c.src.head(entry)
        if head is not None:
            record_lock(c, head)
    if corrupt:
        return
    if restore is None and entry.size != ref.size:
        c.mismatch += 1
        c.flag("size_mismatch", f"size {entry.size} != sealed {ref.size}", key)
        return
    async with window:
        if restore is None:
            digest, n = await c.src.sha256(entry, ref.algorithm, c.reads)  # timed: the location's throughput
        else:
            asked, began = c.reads.asked(), time.monotonic()
            try:
                digest, n = await _restore(c, entry, restore, ref.algorithm)
            except BaseException:
                c.reads.answered(asked, (), 0)  # a failed read: no busy time
                raise
            c.reads.answered(asked, ((began, time.monotonic()),), n)
    c.hashed += 1
    c.bytes_hashed += n
    if n != ref.size:
        c.mismatch += 1
        c.flag("size_mismatch", f"size {n} != sealed {ref.size}", key)
    elif digest != ref.sha256:
        c.mismatch += 1
        c.flag("content_mismatch", f"{ref.algorithm} differs from the seal", key)
    else:
        c.verified += 1
        c.bytes_verified += n

async def _guard(c: CopyCheck, work: Any, key: str) -> Any:
    """Run one file's work; a failing read costs that file (or the whole copy when its location is down)."""
    if c.broken or key in c.skip:
        work.close()
        return None
    try:
        return await work
    except FileNotFoundError:
        c.missing += 1
        c.flag("missing_file", "file vanished during the check", key)
    except S3Unavailable as exc:
        if exc.code in _LOCATION_DOWN:
            c.break_off(exc.code, exc.message)
        else:
            c.errors += 1
            c.flag("unreadable", f"cannot read: {exc.message}", key, Severity.WARNING)
    except OSError as exc:
        c.errors += 1
        c.flag("unreadable", f"cannot read: {exc.strerror or type(exc).__name__}", key, Severity.WARNING)
    c.skip.add(key)
    return None

async def _layout(c: CopyCheck, entry: Entry) -> st.Layout | None:
    if isinstance(c.src, FilesystemSource):
        return await asyncio.to_thread(st.check_file, c.src.root.joinpath(*entry.parts))
    if isinstance(c.src, S3Source):
        loc, key = c.src.client, _s3_key(c.src, entry.key)
        return await st.check_reader(lambda off, n: s3_range(loc, key, off, off + n), entry.size)
    return None

async def _index(c: CopyCheck, entry: Entry, tensors: dict[str, frozenset[str] | None]) -> list[st.Problem]:
    if entry.size > _INDEX_MAX:
        return [st.Problem(st.INDEX_INVALID, f"index of {entry.size} bytes is implausibly large")]
    if isinstance(c.src, FilesystemSource):
        data = await asyncio.to_thread(c.src.root.joinpath(*entry.parts).read_bytes)
    elif isinstance(c.src, S3Source):
        data = await s3_range(c.src.client, _s3_key(c.src, entry.key), 0, entry.size) if entry.size else b""
    else:
        return []
    base = PurePosixPath(entry.key).parent
    shards = {str(PurePosixPath(k).relative_to(base)) if str(base) != "." else k: v
              for k, v in tensors.items() if str(base) == "." or PurePosixPath(k).is_relative_to(base)}
    return st.check_index(data, shards, c.limit)

async def _restore(c: CopyCheck, entry: Entry, root: Path, algorithm: str) -> tuple[str, int]:
    """Copy one file into ``root`` (a directory of the sandbox, ``root.parent``) while hashing it (this is the
    copy's digest check, in the seal's ``algorithm``)."""
    dest = root.joinpath(*entry.parts)
    if isinstance(c.src, FilesystemSource):
        stop = threading.Event()
        try:
            return await asyncio.to_thread(_copy_file, c.src.root.joinpath(*entry.parts), dest, stop, algorithm,
                                           root.parent)
        except asyncio.CancelledError:
            stop.set()
            raise
    assert isinstance(c.src, S3Source)
    loc = c.src.client
    client = await loc.client()
    digest = new_hash(algorithm)
    total = 0
    await asyncio.to_thread(make_dirs, root.parent, dest.parent)
    fh = await aopen(dest, "wb")  # never left open by a cancellation while it is being opened

    def consume(chunk: bytes) -> None:
        digest.update(chunk)
        fh.write(chunk)

    try:
        try:
            resp = await client.get_object(Bucket=loc.cfg.bucket, Key=_s3_key(c.src, entry.key))
        except Exception as exc:
            raise classify(exc, loc.name) from None
        body = resp["Body"]
        try:
            while True:
                try:
                    chunk = await body.read(CHUNK)
                except Exception as exc:
                    raise classify(exc, loc.name) from None
                if not chunk:
                    break
                total += len(chunk)
                await asyncio.to_thread(consume, chunk)  # a local write error stays an OSError of the sandbox
        finally:
            body.close()
    finally:
        await asyncio.to_thread(fh.close)
    return digest.hexdigest(), total
