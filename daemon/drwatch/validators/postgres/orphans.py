"""What a crashed PostgreSQL drill (``postgres_restore``, ``vector_restore``) leaves in its sandbox: a server still
running. The plugins' ``orphans`` hook stops it cleanly (SIGQUIT: it stops its backends and releases shared
memory) before the start-up sweep removes the sandbox (drwatch.core.sandbox)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from pathlib import Path

from drwatch.core.sandbox import process_gone

POSTMASTER_PID_GLOBS = ("postmaster.pid", "*/postmaster.pid", "*/*/postmaster.pid")  # up to three levels down


def stop_orphaned_servers(sandbox: Path) -> bool:
    """Stop every PostgreSQL server running out of a data directory in ``sandbox``; True when one was. Blocking."""
    stopped = False
    for pid_file in itertools.chain(*(sandbox.glob(p) for p in POSTMASTER_PID_GLOBS)):
        stopped = stop_postmaster(pid_file) or stopped
    return stopped


def stop_postmaster(pid_file: Path, wait: float = 10.0) -> bool:
    """Stop the PostgreSQL server that ``pid_file`` (a data directory's ``postmaster.pid``) names.

    Only when that PID still runs *in that data directory* (``/proc/PID/cwd``; a postmaster changes into
    its data directory): a PID reused by an unrelated process is never signalled. SIGQUIT first (immediate
    shutdown: the server stops its backends and releases shared memory), then SIGKILL to its process group
    (a postmaster started by ``pg_ctl`` leads its own session). Blocking, bounded by ``wait``. True when a
    running server was found and signalled.
    """
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
        cwd = os.readlink(f"/proc/{pid}/cwd") if pid > 1 and pid != os.getpid() else ""
    except (OSError, ValueError):
        return False  # no file, not a PID, the process is gone, or not ours to see
    if not cwd or cwd != os.path.realpath(pid_file.parent):
        return False
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sig == signal.SIGKILL and os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait / 2
        while not process_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_gone(pid):
            break
    return True
