"""Atomic writes of the files drwatch's commands produce (seals, goldens): written beside the target,
fsynced, renamed over it, so a reader sees the old file or the new one, never half of one.

The result gets ordinary file permissions: an existing target keeps its mode; a new one gets 0666 less the
process umask, as ``open()`` would give it (the temporary file itself is created 0600). A seal written by a
backup job must stay readable by the drwatch service user, which is usually another user.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

DEFAULT_UMASK = 0o022


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would change it for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_UMASK


def write_text_atomic(path: Path, write: Callable[[IO[str]], None]) -> None:
    """Write ``path`` through ``write(fh)`` atomically (blocking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
