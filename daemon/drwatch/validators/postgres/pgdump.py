"""PostgreSQL dumps: where they are (listed and fetched from filesystem and S3 locations), what they are
(format and versions, read from the bytes, not the name) and what a failed restore of one means.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import random
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from drwatch.core.errors import ValidatorError
from drwatch.core.sandbox import make_dirs
from drwatch.storage.config import FilesystemLocationConfig, S3LocationConfig
from drwatch.storage.filesystem import aopen
from drwatch.storage.s3 import S3Location, S3Missing, S3Pool, classify, s3_errors

if TYPE_CHECKING:
    from drwatch.validators.base import ConfigView

_CHUNK = 1024 * 1024


def major_of(version: str | None) -> int | None:
    m = re.match(r"\s*(\d+)", version or "")
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class DumpInfo:
    format: str  # custom | directory | tar | plain | gzip | unknown | empty
    archive_version: str = ""  # e.g. 1.14 (archives only)
    server_version: str = ""  # version of the server that was dumped
    dump_version: str = ""  # version of the pg_dump that wrote it
    complete: bool = True  # plain SQL: ends with pg_dump's "dump complete" trailer


def _parse_archive_header(data: bytes) -> DumpInfo | None:
    """The header of a custom/directory/tar archive (``PGDMP``...), as pg_backup_archiver.c ReadHead."""
    if not data.startswith(b"PGDMP") or len(data) < 11:
        return None
    vmaj, vmin, _vrev, int_size, _off_size, fmt = data[5:11]
    pos = 11

    def read_int() -> int:
        nonlocal pos
        sign, raw = data[pos], data[pos + 1: pos + 1 + int_size]
        if len(raw) < int_size:
            raise ValueError("short header")
        pos += 1 + int_size
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def read_str() -> str:
        nonlocal pos
        n = read_int()
        if n < 0:
            return ""
        if n > 1024 or pos + n > len(data):
            raise ValueError("implausible string in header")
        text = data[pos: pos + n]
        pos += n
        return text.decode()

    version = f"{vmaj}.{vmin}"
    kind = {1: "custom", 3: "directory", 5: "tar"}.get(fmt, "custom")
    try:
        if (vmaj, vmin) >= (1, 15):
            pos += 1  # compression algorithm
        else:
            read_int()  # compression level
        for _ in range(7):  # creation time (sec, min, hour, mday, mon, year, isdst)
            read_int()
        read_str()  # database name
        server = read_str() if (vmaj, vmin) >= (1, 10) else ""
        dumper = read_str() if (vmaj, vmin) >= (1, 10) else ""
    except (ValueError, IndexError):  # UnicodeDecodeError is a ValueError
        return DumpInfo(kind, version)
    return DumpInfo(kind, version, server, dumper)


def inspect_dump(path: Path) -> DumpInfo:
    """Identify a dump by content (not by name) and read its header. Blocking: call from a thread."""
    if path.is_dir():
        toc = path / "toc.dat"
        head = b""
        if toc.is_file():
            with toc.open("rb") as fh:
                head = fh.read(4096)
        info = _parse_archive_header(head)
        return DumpInfo("directory", info.archive_version, info.server_version, info.dump_version) if info \
            else DumpInfo("unknown")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8192)
        if not head:
            return DumpInfo("empty")
        info = _parse_archive_header(head)
        if info is not None:
            return DumpInfo("custom", info.archive_version, info.server_version, info.dump_version)
        if len(head) >= 512 and head[257:262] == b"ustar":
            info = _parse_archive_header(head[512:])  # pg_dump -Ft: toc.dat is the first member
            if info is None:
                return DumpInfo("unknown")
            return DumpInfo("tar", info.archive_version, info.server_version, info.dump_version)
        if head[:2] == b"\x1f\x8b":
            return DumpInfo("gzip")  # compressed plain SQL (pg_dump -Fp -Z): not restorable here (use -Fc)
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = head[:-4].decode("utf-8")  # a multi-byte character cut at the end of the block
            except UnicodeDecodeError:
                return DumpInfo("unknown")
        if "\x00" in text or not re.search(r"^(--|SET |CREATE |\\restrict)", text, re.M):
            return DumpInfo("unknown")
        fh.seek(max(0, size - 4096))
        tail = fh.read().decode(errors="replace")
    server = re.search(r"^-- Dumped from database version (\S+)", text, re.M)
    dumper = re.search(r"^-- Dumped by pg_dump version (\S+)", text, re.M)
    return DumpInfo("plain", "", server.group(1) if server else "", dumper.group(1) if dumper else "",
                    complete="PostgreSQL database dump complete" in tail)


_ROLE_LINES = (
    re.compile(r"^ALTER .+ OWNER TO (.+);$"),
    re.compile(r"^GRANT .+ TO (.+?)(?: WITH (?:GRANT|ADMIN) OPTION)?(?: GRANTED BY .+)?;$"),
    re.compile(r"^SET SESSION AUTHORIZATION '?([^']+)'?;$"),
    re.compile(r"^ALTER DEFAULT PRIVILEGES FOR ROLE (\S+) "),
)
_NOT_ROLES = {"public", "current_user", "session_user", "current_role"}


def plain_dump_roles(path: Path, limit: int = 1000) -> set[str]:
    """Roles a plain SQL dump names (owners, grantees), to create them in a fresh sandbox cluster first.
    Streams the file line by line (bounded memory). Blocking: call from a thread."""
    roles: set[str] = set()
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith(("ALTER ", "GRANT ", "SET SESSION")):
                continue
            for pattern in _ROLE_LINES:
                m = pattern.match(line.rstrip("\n"))
                if m:
                    for raw in m.group(1).split(","):
                        name = raw.strip()
                        name = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
                        if name and name.lower() not in _NOT_ROLES and len(roles) < limit:
                            roles.add(name)
                    break
    return roles


@dataclass(frozen=True)
class RecoveryPoint:
    name: str  # relative to the prefix
    mtime: float
    size: int
    directory: bool  # a -Fd dump (a folder / S3 prefix holding toc.dat)


def choose(points: list[RecoveryPoint], pick: str, window: float,
           rng: random.Random | None = None) -> tuple[RecoveryPoint, RecoveryPoint]:
    """(newest, the one to restore): the newest, or a random one no older than ``window`` before it."""
    newest = max(points, key=lambda p: (p.mtime, p.name))
    if pick != "random":
        return newest, newest
    recent = sorted((p for p in points if p.mtime >= newest.mtime - window), key=lambda p: p.name)
    return newest, (rng or random).choice(recent)


# --- where dumps are ------------------------------------------------------------------------------


def _prefix(value: str) -> str:
    parts = [p for p in value.strip("/").split("/") if p]
    if ".." in parts:
        raise ValueError("prefix may not contain '..'")
    return "/".join(parts)


def _pattern(value: str) -> str:
    if not value or "/" in value:
        raise ValueError("pattern matches names directly under the prefix (no '/'): put folders in 'prefix'")
    return value


# Config fields saying where dumps are: folders below the location (normalised), a name pattern under them.
DumpPrefix = Annotated[str, AfterValidator(_prefix)]
DumpPattern = Annotated[str, AfterValidator(_pattern)]


def dumps_at(config: ConfigView, s3: S3Pool | None, location: str, prefix: str,
             pattern: str) -> FilesystemDumps | S3Dumps:
    """The dumps under ``prefix`` of ``location`` whose name matches ``pattern``."""
    loc = config.locations[location]
    if isinstance(loc, FilesystemLocationConfig):
        return FilesystemDumps(config.resolve_path(loc.path), prefix, pattern)
    assert isinstance(loc, S3LocationConfig)
    if s3 is None:
        raise ValidatorError("no_s3_pool", "S3 locations need the daemon's client pool")
    return S3Dumps(s3.get(location, loc), prefix, pattern)


@dataclass
class _Directory:
    """A directory recovery point being listed (a -Fd dump, a Redis AOF directory): its newest file time, total
    size and the time of its marker file (``toc.dat``, ``*.manifest``; -1 while none is seen)."""

    newest: float = 0.0
    size: int = 0
    marker: float = -1.0

    def add(self, is_marker: bool, mtime: float, size: int) -> None:
        self.newest, self.size = max(self.newest, mtime), self.size + size
        if is_marker:
            self.marker = mtime

    def point(self, name: str, time_of: str) -> RecoveryPoint | None:
        """The recovery point, timed by its marker or its newest file; None without a marker."""
        if self.marker < 0:
            return None
        return RecoveryPoint(name, self.marker if time_of == "marker" else self.newest, self.size, True)


class _Layout:
    """What makes a directory under the prefix a recovery point: a marker file directly in it, and whether the
    point's time is the marker's (``marker``) or its newest file's (``newest``). Dumps: ``toc.dat``."""

    DIRECTORY_TIME = "marker"

    @staticmethod
    def marker(rest: str) -> bool:
        return rest == "toc.dat"


class FilesystemDumps(_Layout):
    def __init__(self, base: Path, prefix: str, pattern: str) -> None:
        self.base = base
        self.root = base.joinpath(*prefix.split("/")) if prefix else base
        self.pattern = pattern

    def _list(self) -> list[RecoveryPoint] | None:
        if not self.base.is_dir():
            raise ValidatorError("location_unavailable", f"{self.base} is not mounted or not readable")
        try:
            if not stat.S_ISDIR(self.root.stat().st_mode):
                return None  # a file where the dumps directory should be: no dumps there
        except (FileNotFoundError, NotADirectoryError):
            return None  # no dumps directory: no recovery point (failed); a loop, EACCES, EIO raise (error)
        out = []
        with os.scandir(self.root) as it:
            for e in it:
                if not fnmatch.fnmatchcase(e.name, self.pattern) or e.name.startswith("."):
                    continue
                try:
                    point = self._point(e)
                except FileNotFoundError:
                    continue  # rotated away while listed (the backup job's retention): not a recovery point
                if point is not None:
                    out.append(point)
        return out

    def _point(self, e: os.DirEntry[str]) -> RecoveryPoint | None:
        if e.is_dir():
            dirs = _Directory()
            with os.scandir(e.path) as files:
                for f in files:
                    with contextlib.suppress(FileNotFoundError):
                        if f.is_file():
                            st = f.stat()
                            dirs.add(self.marker(f.name), st.st_mtime, st.st_size)
            return dirs.point(e.name, self.DIRECTORY_TIME)
        if e.is_file():
            st = e.stat()
            return RecoveryPoint(e.name, st.st_mtime, st.st_size, False)
        return None

    async def list(self) -> list[RecoveryPoint] | None:
        try:
            return await asyncio.to_thread(self._list)
        except OSError as exc:  # EACCES, EIO, a stale NFS handle, a symlink loop: could not check, not a bad backup
            what = exc.filename or self.root
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise ValidatorError("location_unavailable", f"cannot read {what}: {reason}") from None

    async def fetch(self, point: RecoveryPoint, sandbox: Path) -> Path:
        return self.root / point.name  # read in place: nothing copied


class S3Dumps(_Layout):
    def __init__(self, loc: S3Location, prefix: str, pattern: str) -> None:
        self.loc = loc
        self.prefix = prefix
        self.pattern = pattern

    async def list(self) -> list[RecoveryPoint] | None:
        files: list[RecoveryPoint] = []
        dirs: dict[str, _Directory] = {}
        try:
            async for obj in self.loc.objects(self.prefix):
                head, sep, rest = obj.key.partition("/")
                if not fnmatch.fnmatchcase(head, self.pattern):
                    continue
                if not sep:
                    files.append(RecoveryPoint(head, obj.last_modified, obj.size, False))
                    continue
                dirs.setdefault(head, _Directory()).add(self.marker(rest), obj.last_modified, obj.size)
        except S3Missing:
            return None
        return files + [p for n, d in dirs.items() if (p := d.point(n, self.DIRECTORY_TIME)) is not None]

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    async def fetch(self, point: RecoveryPoint, sandbox: Path) -> Path:
        free = (await asyncio.to_thread(shutil.disk_usage, sandbox)).free
        if free < point.size + 64 * _CHUNK:
            raise ValidatorError("sandbox_full", f"the sandbox has {free} bytes free, the dump needs {point.size}")
        target = sandbox / "dump" / point.name
        if not point.directory:
            await self._download(self._key(point.name), target, sandbox)
            return target
        objects = self.loc.objects(self._key(point.name))
        try:
            async for obj in objects:
                dest = target.joinpath(*obj.key.split("/"))
                await self._download(f"{self._key(point.name)}/{obj.key}", dest, sandbox)
        finally:
            await objects.aclose()  # type: ignore[attr-defined]  # a run cut off mid-download: closed now, not by GC
        return target

    async def _download(self, key: str, path: Path, sandbox: Path) -> None:
        """Stream one object to a file in ``sandbox`` (1 MiB chunks: memory bounded whatever the size)."""
        client = await self.loc.client()
        try:
            resp = await client.get_object(Bucket=self.loc.cfg.bucket, Key=key)
        except s3_errors() as exc:
            err = classify(exc, self.loc.name)
            if isinstance(err, S3Missing):
                raise ValidatorError("location_changed", f"{key} vanished while it was fetched") from None
            raise err from None

        body = resp["Body"]
        try:  # a run cut off here closes the body, and the file even while a thread is opening it
            await asyncio.to_thread(make_dirs, sandbox, path.parent)
            fh = await aopen(path, "wb")
        except BaseException:
            body.close()
            raise
        try:
            while True:
                try:
                    chunk = await body.read(_CHUNK)
                except s3_errors() as exc:
                    raise classify(exc, self.loc.name) from None
                if not chunk:
                    break
                try:
                    await asyncio.to_thread(fh.write, chunk)
                except OSError as exc:
                    raise ValidatorError("sandbox_full", f"cannot write the dump: {exc.strerror}") from None
        finally:
            body.close()
            await asyncio.to_thread(fh.close)
