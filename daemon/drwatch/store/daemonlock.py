"""One daemon per SQLite store: ``drwatch run`` holds an exclusive ``flock`` on ``<store>.daemon.lock`` for its
life. A second daemon on the same file (another unit, a forgotten shell) would run every validator twice and
double the load on what it watches; it is refused at start with the first one's pid. ``check``, ``status`` and
``report`` do not take it: they may run beside the daemon. The kernel drops the lock when the process ends,
however it ends (a crashed daemon never blocks the next start). Several daemons share a PostgreSQL store in
cluster mode instead."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from drwatch.core.errors import ValidatorError


def claim(store: Path) -> int:
    """Take the lock (blocking I/O: call from a thread); returns the descriptor that holds it (close to release)."""
    lock = store.with_name(store.name + ".daemon.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        finally:
            os.close(fd)
        raise ValidatorError("store_in_use", f"another drwatch daemon (pid {holder}) runs on the SQLite store "
                             f"{store}: one daemon per SQLite store (several daemons share a PostgreSQL store in "
                             "cluster mode)") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
