"""A real, throttled filesystem for the tests: a read-only FUSE passthrough of a directory whose reads are paced
to a byte rate (one token bucket for the whole mount, like a slow NAS link).

Mounted with ``direct_io``, so every read reaches this process (the kernel's page cache cannot serve a second
read fast). Run as its own process (``python -m tests.support.slowfs SRC MOUNTPOINT BYTES_PER_SECOND [FAILING]``)
by :func:`throttled_mount`, which waits for the mount and always unmounts it. ``FAILING``: relative paths, joined
by newlines, whose reads fail with EIO (a bad sector, a NAS losing one file) while the rest of the mount reads.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ATTRS = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid")


@functools.cache
def fuse_unavailable() -> str | None:
    """Why this machine cannot mount a FUSE filesystem (no /dev/fuse, no libfuse, or mounting refused: a
    container without the privilege), or None. Found by mounting an empty directory once."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse cannot be opened ({exc.strerror}): the kernel's FUSE device is not available here"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"libfuse cannot be loaded ({exc})"
    with tempfile.TemporaryDirectory(prefix="drwatch-fuse-probe-") as tmp:
        try:
            with throttled_mount(Path(tmp) / "src", Path(tmp) / "mnt", 1e9):
                pass
        except RuntimeError as exc:
            return str(exc)
    return None


class _Paced:
    """Reads of the whole mount paced to ``rate`` bytes per second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.guard = threading.Lock()
        self.free_at = time.monotonic()

    def wait(self, nbytes: int) -> None:
        with self.guard:
            start = max(time.monotonic(), self.free_at)
            self.free_at = start + nbytes / self.rate
            until = self.free_at
        time.sleep(max(0.0, until - time.monotonic()))


def _operations(root: Path, rate: float, failing: frozenset[str] = frozenset()) -> Any:
    import mfusepy

    class Passthrough(mfusepy.Operations):  # type: ignore[misc]
        def __init__(self) -> None:
            self.paced = _Paced(rate)

        def _path(self, path: str) -> str:
            return str(root / path.lstrip("/"))

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            try:
                st = os.lstat(self._path(path))
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno or errno.EIO) from exc
            return {k: getattr(st, k) for k in ATTRS}

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._path(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._path(path))

        def open(self, path: str, flags: int) -> int:
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise mfusepy.FuseOSError(errno.EROFS)
            return os.open(self._path(path), os.O_RDONLY)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            if path.lstrip("/") in failing:
                self.paced.wait(size)  # the device tried (and took its time) before giving up
                raise mfusepy.FuseOSError(errno.EIO)
            data = os.pread(fh, size, offset)
            self.paced.wait(len(data))
            return data

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

        def statfs(self, path: str) -> dict[str, Any]:
            st = os.statvfs(self._path(path))
            return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    return Passthrough()


@contextlib.contextmanager
def throttled_mount(source: Path, mountpoint: Path, rate: float, failing: tuple[str, ...] = ()) -> Iterator[Path]:
    """``source`` mounted read-only at ``mountpoint`` with reads paced to ``rate`` bytes per second; reads of the
    files at the relative paths ``failing`` fail with EIO."""
    source.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.slowfs", str(source), str(mountpoint), str(rate),
                             "\n".join(failing)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"the throttled FUSE mount failed: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError("the throttled FUSE mount did not appear within 15 s")
            time.sleep(0.05)
        yield mountpoint
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def main() -> None:
    import mfusepy
    source, mountpoint, rate = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    failing = frozenset(p for p in (sys.argv[4] if len(sys.argv) > 4 else "").split("\n") if p)
    mfusepy.FUSE(_operations(source, rate, failing), mountpoint, foreground=True, ro=True, direct_io=True,
                 fsname="drwatch-slowfs")


if __name__ == "__main__":
    main()
