"""Filesystem locations: sorted streaming listings, hashing off the event loop, observed media.

A listing is yielded in plain string order of relative paths (``a.txt`` before ``a/b``: the byte order
S3 lists keys in) by a depth-first walk that sorts each directory with directories keyed as ``name/``.
Manifests are written in the same order, so copies in any kind of location can be compared with a sorted
merge whose memory does not grow with the number of files.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

# Re-exported: the hash pool and file reading live in drwatch.storage.hashing.
from drwatch.storage.hashing import CHUNK as CHUNK  # noqa: PLC0414
from drwatch.storage.hashing import HashCancelled as HashCancelled  # noqa: PLC0414
from drwatch.storage.hashing import HashPool as HashPool  # noqa: PLC0414
from drwatch.storage.hashing import sha256_file as sha256_file  # noqa: PLC0414

if TYPE_CHECKING:
    from drwatch.formats.parquet import ParquetFacts

MANIFEST_NAME = ".drwatch-manifest.jsonl"
_T = TypeVar("_T")
_BATCH = 2000


@dataclass(frozen=True, slots=True)
class Entry:
    key: str  # relative path with '/' separators; the sort key
    size: int
    mtime: float
    sha256: str | None = None  # known only from manifests
    etag: str | None = None  # S3 listings
    storage_class: str | None = None  # S3 listings
    checksum_listed: bool = False  # S3 listings: the object carries an additional checksum
    parquet: ParquetFacts | None = None  # manifests: rows/row groups/schema fingerprint of a sealed Parquet file
    algorithm: str = "sha256"  # manifests: what ``sha256`` holds, the seal's digest algorithm (sha256 or blake3)
    ino: int = 0  # filesystem listings: the inode number (0: not a filesystem listing)
    ctime_ns: int = 0  # filesystem listings: the inode's last status change (any write, utime, rename, chmod)

    @property
    def relpath(self) -> str:
        return self.key

    @property
    def parts(self) -> list[str]:
        return self.key.split("/")


def _children(path: str) -> Iterator[os.DirEntry[str]]:
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
    return iter(entries)


def entry_kind(mode: int) -> str:
    """What a non-regular directory entry is, for messages: symlink, fifo, socket, device..."""
    for test, kind in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def walk_sorted(
    root: Path, skip_root_names: frozenset[str] = frozenset({MANIFEST_NAME}),
    on_skipped: Callable[[str, str], None] | None = None,
    on_unreadable: Callable[[str, OSError], None] | None = None,
    keep: Callable[[str, os.stat_result], bool] | None = None,
) -> Generator[Entry, None, None]:
    """Yield regular files under root in component order. Symlinks are not followed.

    Anything else (symlinks, FIFOs, sockets, devices) is not an object of a recovery point: it is passed
    over, and reported to ``on_skipped(relative path, kind)`` when given (``drwatch seal`` says so).
    A subdirectory that cannot be listed (permission denied) raises, unless ``on_unreadable`` is given:
    then it is passed over and reported as ``on_unreadable(relative path + "/", error)`` at its place in
    the order, before any entry that sorts after it is yielded (the root itself always raises).
    A regular file for which ``keep(relative path, stat)`` is false is passed over (a copy's file that is
    production's own inode is not an object of the copy).
    Memory is bounded by the widest directory on the current path, not by the number of files.
    """
    pending: list[tuple[str, Iterator[os.DirEntry[str]]]] = [("", _children(str(root)))]
    while pending:
        parent, it = pending[-1]
        entry = next(it, None)
        if entry is None:
            pending.pop()
            continue
        if not parent and entry.name in skip_root_names:
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            prefix = f"{parent}{entry.name}/"
            try:
                children = _children(entry.path)
            except PermissionError as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(prefix, exc)
                continue
            pending.append((prefix, children))
        elif stat.S_ISREG(st.st_mode):
            if keep is not None and not keep(f"{parent}{entry.name}", st):
                continue
            yield Entry(f"{parent}{entry.name}", st.st_size, st.st_mtime, ino=st.st_ino, ctime_ns=st.st_ctime_ns)
        elif on_skipped is not None:
            on_skipped(f"{parent}{entry.name}", entry_kind(st.st_mode))


async def alist(root: Path, on_skipped: Callable[[str, str], None] | None = None,
                on_unreadable: Callable[[str, OSError], None] | None = None,
                keep: Callable[[str, os.stat_result], bool] | None = None) -> AsyncIterator[Entry]:
    """Stream ``walk_sorted`` from a worker thread in batches (the event loop never touches the disk).

    The callbacks run in that thread, before the batch holding the entries after them is yielded. The walk
    holds no open directory between batches; when the stream is closed (or its consumer cancelled) while a
    batch is being read, the walk is closed by the thread reading it, once that batch ends (a generator
    cannot be closed while another thread runs it).
    """
    gen = walk_sorted(root, on_skipped=on_skipped, on_unreadable=on_unreadable, keep=keep)
    state = threading.Lock()  # guards ``flags``; never held during I/O
    flags = {"reading": False, "closing": False}

    def next_batch() -> list[Entry]:
        with state:
            if flags["closing"]:
                return []
            flags["reading"] = True
        batch: list[Entry] = []
        try:
            for entry in gen:
                batch.append(entry)
                if len(batch) >= _BATCH:
                    break
        finally:
            with state:
                flags["reading"] = False
                close_now = flags["closing"]
            if close_now:
                gen.close()
        return batch

    try:
        while True:
            batch = await asyncio.to_thread(next_batch)
            if not batch:
                return
            for entry in batch:
                yield entry
    finally:
        with state:
            flags["closing"] = True
            reading = flags["reading"]
        if not reading:
            gen.close()  # between batches: nothing is open, closing only ends the generator


def _close_when_opened(fut: asyncio.Future[IO[Any]]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


async def aopen(path: Path, mode: str = "rb") -> IO[Any]:
    """``open(path, mode)`` in a worker thread. A caller cancelled while the thread opens the file does not
    leak it: the file is closed as soon as the thread has opened it."""
    opening = asyncio.ensure_future(asyncio.to_thread(open, path, mode))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_when_opened)
        raise


class ThreadedIterator(Generic[_T]):
    """Advance a blocking iterator (a generator holding a file, say) in worker threads, one item at a time.

    :meth:`close` may be called at any time, also while a thread is advancing it (its consumer was cancelled):
    the iterator is then closed by that thread as soon as its step ends (a generator cannot be closed while
    another thread runs it). Register ``close`` on the run's exit stack so a run cut off never leaves it to the
    garbage collector.
    """

    def __init__(self, it: Iterator[_T]) -> None:
        self._it = it
        self._state = threading.Lock()  # guards the two flags; never held during I/O
        self._busy = False
        self._closing = False

    def _step(self) -> _T | None:
        with self._state:
            if self._closing:
                return None
            self._busy = True
        try:
            return next(self._it, None)
        finally:
            with self._state:
                self._busy = False
                close_now = self._closing
            if close_now:
                self._close_it()

    async def next(self) -> _T | None:
        """The next item, None at the end (or once closed)."""
        return await asyncio.to_thread(self._step)

    def _close_it(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        with self._state:
            if self._closing:
                return
            self._closing = True
            busy = self._busy
        if not busy:
            self._close_it()


# Filesystem type -> media class. Types that say nothing about the medium (overlay, fuse...) map to None.
_MEDIA_BY_FSTYPE: dict[str, str] = {
    **dict.fromkeys(
        ["ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "reiserfs", "vfat", "exfat",
         "ntfs", "ntfs3", "fuseblk", "hfsplus", "apfs", "bcachefs"],
        "disk",
    ),
    **dict.fromkeys(
        ["nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "fuse.glusterfs", "fuse.sshfs",
         "lustre", "beegfs", "gpfs", "9p", "fuse.cephfs", "fuse.s3fs", "fuse.rclone", "fuse.juicefs"],
        "network",
    ),
    **dict.fromkeys(["ltfs", "fuse.ltfs"], "tape"),
    **dict.fromkeys(["tmpfs", "ramfs"], "volatile"),  # gone at the next reboot: no medium (VOLATILE_MEDIA)
    **dict.fromkeys(["iso9660", "udf"], "optical"),
}


def _unescape_mount(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


VOLATILE_MEDIA = frozenset({"volatile"})  # media that do not survive a reboot: never one of the "2 media"


@dataclass(frozen=True)
class Mount:
    """What holds a path, observed: its device (``major:minor`` of ``st_dev``) and, from
    ``/proc/self/mountinfo``, the filesystem type, the mount source (``/dev/sda1``, ``nas:/export``,
    ``//server/share``) and the mount point."""

    device: str
    fstype: str | None = None
    source: str | None = None
    mount_point: str | None = None

    @property
    def failure_source(self) -> str | None:
        """The mount source when it names a failure domain: a block device, an NFS export (``host:/path``)
        or a CIFS share (``//host/share``); None for pseudo sources (``tmpfs``, ``overlay``, ``none``)."""
        src = self.source
        if not src:
            return None
        if src.startswith("/dev/") or src.startswith("//") or (":" in src and not src.startswith("/")):
            return src.rstrip("/") or src
        return None


def mount_of(path: Path, mountinfo: str = "/proc/self/mountinfo") -> Mount | None:
    """The mount holding ``path`` (blocking), or None if ``path`` cannot be stat'ed."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return Mount(want)
    resolved = str(Path(path).resolve())
    best: tuple[int, Mount] | None = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5 or fields[2] != want:
            continue
        mount_point = _unescape_mount(fields[4])
        if resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/"):
            tail = right.split()
            mount = Mount(want, tail[0] if tail else None, _unescape_mount(tail[1]) if len(tail) > 1 else None,
                          mount_point)
            if best is None or len(mount_point) > best[0]:
                best = (len(mount_point), mount)
    return best[1] if best else Mount(want)


def filesystem_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem holding ``path`` (``statfs`` via mountinfo), or None if unknown."""
    mount = mount_of(path, mountinfo)
    return mount.fstype if mount is not None else None


def media_class(fstype: str | None) -> str | None:
    if fstype is None:
        return None
    return _MEDIA_BY_FSTYPE.get(fstype)
