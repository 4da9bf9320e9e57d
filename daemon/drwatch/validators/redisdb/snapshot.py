"""Redis snapshots as files: where they are (RDB files, Redis 7 multi-part AOF directories, on a filesystem or S3
location) and what they say about themselves (RDB header and aux fields, the AOF manifest and its timestamps).

Everything here that reads a file blocks: callers run it in a thread. Only the head of an RDB file (its aux
fields) and the tail of an AOF's last incremental file are read: a 100 GB snapshot costs a few kilobytes here.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drwatch.core.errors import ValidatorError
from drwatch.storage.config import FilesystemLocationConfig, S3LocationConfig
from drwatch.validators.postgres.pgdump import FilesystemDumps, RecoveryPoint, S3Dumps

if TYPE_CHECKING:
    from drwatch.storage.s3 import S3Pool
    from drwatch.validators.base import ConfigView

RDB_MAGIC = b"REDIS"
MANIFEST_SUFFIX = ".manifest"
_HEAD = 64 * 1024  # aux fields sit in the first few hundred bytes
_TAIL = 1024 * 1024  # where the last ``#TS:`` annotation of an AOF is looked for
_TS = re.compile(rb"#TS:(\d{9,11})\r\n")


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot says about itself. ``format``: rdb | aof | empty | unknown."""

    format: str
    rdb_version: int = 0
    aux: tuple[tuple[str, str], ...] = ()
    manifest: str = ""  # aof: the manifest's file name (``<appendfilename>.manifest``)
    created: float | None = None  # rdb ``ctime``; aof: the newest ``#TS:`` annotation, else the base's ctime
    problem: str = ""  # why an aof directory is unusable (unknown format)

    def aux_value(self, name: str) -> str | None:
        return next((v for k, v in self.aux if k == name), None)

    @property
    def used_memory(self) -> int | None:
        value = self.aux_value("used-mem")
        return int(value) if value is not None and value.isdigit() else None


class _Reader:
    """RDB length and string encodings (rdb.c rdbLoadLen / rdbGenericLoadStringObject) over a byte buffer."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise EOFError
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise EOFError
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def length(self) -> tuple[int, bool]:
        """(length or special encoding, is_encoded)."""
        first = self.byte()
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | self.byte(), False
        if kind == 3:
            return first & 0x3F, True
        if first == 0x80:
            return int.from_bytes(self.take(4), "big"), False
        if first == 0x81:
            return int.from_bytes(self.take(8), "big"), False
        raise ValueError(f"unknown length encoding {first:#x}")

    def string(self) -> str | None:
        n, encoded = self.length()
        if not encoded:
            return self.take(n).decode("utf-8", errors="replace")
        if n in (0, 1, 2):  # integers stored as 1, 2 or 4 bytes, little endian, signed
            return str(int.from_bytes(self.take(1 << n), "little", signed=True))
        if n == 3:  # LZF: compressed and plain lengths, then the bytes (not an aux value we read)
            clen, _ = self.length()
            self.length()
            self.take(clen)
            return None
        raise ValueError(f"unknown string encoding {n}")


def parse_rdb_head(data: bytes) -> SnapshotInfo:
    """The RDB header and its aux fields (opcode 0xFA) up to the first other opcode."""
    if not data:
        return SnapshotInfo("empty")
    if len(data) < 9 or not data.startswith(RDB_MAGIC) or not data[5:9].isdigit():
        return SnapshotInfo("unknown")
    version = int(data[5:9])
    reader = _Reader(data, 9)
    aux: list[tuple[str, str]] = []
    try:
        while reader.byte() == 0xFA:
            key, value = reader.string(), reader.string()
            if key is not None and value is not None and len(aux) < 64:
                aux.append((key, value))
    except (EOFError, ValueError):
        pass  # a head cut short: redis-check-rdb judges the file, the fields read so far stand
    info = SnapshotInfo("rdb", version, tuple(aux))
    ctime = info.aux_value("ctime")
    created = float(ctime) if ctime is not None and re.fullmatch(r"-?\d{1,12}", ctime) else None
    return SnapshotInfo("rdb", version, tuple(aux), created=created)


def read_manifest(path: Path) -> list[tuple[str, str]]:
    """(file name, type b|h|i) of each line of a Redis 7 AOF manifest."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split()
        pairs = dict(zip(fields[::2], fields[1::2], strict=False))
        if "file" in pairs and "type" in pairs:
            out.append((pairs["file"], pairs["type"]))
    return out


def inspect_snapshot(path: Path) -> SnapshotInfo:
    """Identify a fetched snapshot by content: an RDB file, or an AOF directory (its manifest). Blocking."""
    if not path.is_dir():
        with path.open("rb") as fh:
            return parse_rdb_head(fh.read(_HEAD))
    manifests = sorted(p for p in path.iterdir() if p.name.endswith(MANIFEST_SUFFIX) and p.is_file())
    if len(manifests) != 1:
        return SnapshotInfo("unknown", problem=f"{len(manifests)} manifest files (one expected)")
    files = read_manifest(manifests[0])
    if not files:
        return SnapshotInfo("unknown", manifest=manifests[0].name, problem="the manifest lists no file")
    created: float | None = None
    aux: tuple[tuple[str, str], ...] = ()
    base = next((name for name, kind in files if kind == "b"), None)
    if base is not None and (path / base).is_file():
        with (path / base).open("rb") as fh:
            head = parse_rdb_head(fh.read(_HEAD))
        created, aux = head.created, head.aux
    for name, kind in reversed(files):  # the newest annotation of the last incremental file that has one
        if kind != "i" or not (path / name).is_file():
            continue
        with (path / name).open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL))
            stamps = _TS.findall(fh.read())
        if stamps:
            created = float(stamps[-1])
            break
    return SnapshotInfo("aof", 0, aux, manifests[0].name, created)


# --- where snapshots are -----------------------------------------------------------------------------------------


def snapshots_at(config: ConfigView, s3: S3Pool | None, location: str, prefix: str,
                 pattern: str) -> FilesystemSnapshots | S3Snapshots:
    loc = config.locations[location]
    if isinstance(loc, FilesystemLocationConfig):
        return FilesystemSnapshots(config.resolve_path(loc.path), prefix, pattern)
    assert isinstance(loc, S3LocationConfig)
    if s3 is None:
        raise ValidatorError("no_s3_pool", "S3 locations need the daemon's client pool")
    return S3Snapshots(s3.get(location, loc), prefix, pattern)


class _AofLayout:
    """RDB files and AOF directories (a folder / S3 prefix holding ``*.manifest`` directly), an AOF directory
    timed by its newest file (its last incremental file is appended to)."""

    DIRECTORY_TIME = "newest"

    @staticmethod
    def marker(rest: str) -> bool:
        return "/" not in rest and rest.endswith(MANIFEST_SUFFIX)


class FilesystemSnapshots(_AofLayout, FilesystemDumps):
    """RDB files and AOF directories directly under the prefix."""


class S3Snapshots(_AofLayout, S3Dumps):
    """RDB objects and AOF prefixes directly under the prefix."""


async def list_points(where: FilesystemSnapshots | S3Snapshots) -> list[RecoveryPoint] | None:
    """The snapshots there (None: the prefix does not exist); a place that cannot be read (denied, I/O error,
    a symlink loop, S3 down) raises ``ValidatorError`` (``error``), as the dump layouts do."""
    return await where.list()


def memory_available() -> int | None:
    """MemAvailable of this host (bytes), or None where /proc/meminfo does not say. Blocking."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


async def stage(point: RecoveryPoint, path: Path, sandbox: Path, local: bool) -> Path:
    """Where the throwaway server reads the snapshot from: a directory inside the sandbox holding it under its
    own name. An RDB file on a filesystem is linked (read in place: the server never writes with persistence
    off); an AOF directory on a filesystem is copied (the server opens its last file for appending); S3
    snapshots are already fetched into the sandbox."""
    if not local:
        return path.parent
    staged = sandbox / "staged"

    def link_or_copy() -> None:
        staged.mkdir(mode=0o700, exist_ok=True)
        if point.directory:
            shutil.copytree(path, staged / point.name, symlinks=False)
        else:
            (staged / point.name).symlink_to(path)

    try:
        await asyncio.to_thread(link_or_copy)
    except shutil.Error as exc:  # copytree's per-file errors, (source, destination, reason) each
        raise ValidatorError(_stage_code(str(exc)), f"cannot stage the snapshot in the sandbox: {exc}") from None
    except OSError as exc:
        raise ValidatorError(_stage_code(str(exc)), f"cannot stage the snapshot in the sandbox: "
                             f"{exc.strerror or exc}") from None
    return staged


def _stage_code(reason: str) -> str:
    """``sandbox_full`` when the sandbox ran out of space, else ``location_unavailable`` (the AOF directory
    could not be read: denied, an I/O error): both ``error``, for different people."""
    full = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
    return "sandbox_full" if any(f in reason for f in full) else "location_unavailable"

