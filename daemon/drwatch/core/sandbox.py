"""Sandboxes: scratch directories drwatch creates for restores and always removes.

Each sandbox is ``<root>/drwatch-sbx-<run_id>`` with an owner file holding the creating PID. Removal runs
shielded and time-bounded on success, failure, timeout and cancellation; on start, sandboxes whose
owner process is gone (a crash, SIGKILL) are swept - also when its PID now belongs to a process that
started after the sandbox was made (PID reuse). A PostgreSQL server a crashed restore drill left running
inside such a sandbox is stopped cleanly by its plugin's ``orphans`` hook before the removal, and any other
process still working inside it (an inference worker, which leads its own process group and so outlives a
SIGKILLed daemon) is killed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

PREFIX = "drwatch-sbx-"
OWNER = ".drwatch-owner"
log = structlog.get_logger("drwatch.core.sandbox")
# A validator plugin's orphan clean-up: given a sandbox a crashed run left, stop what that kind of run started in
# it (blocking); True when it stopped something.
OrphanStopper = Callable[[Path], bool]


def default_root() -> Path:
    cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if cache:
        return Path(cache) / "sandboxes"
    return Path(tempfile.gettempdir()) / f"drwatch-sandboxes-{os.getuid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_start_time(pid: int) -> float | None:
    """Unix time the process started (Linux /proc), or None when it cannot be known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # Boot time from the clocks, not /proc/stat (hidden under systemd's ProcSubset=pid).
        btime = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        ticks = int(stat.rpartition(")")[2].split()[19])  # field 22 (starttime), counted after "comm"
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _owned_by_live_process(owner: int, created: float) -> bool:
    """The owner still runs, and is the same process: a PID reused after a crash does not count."""
    if owner <= 0 or owner == os.getpid() or not _pid_alive(owner):
        return False
    started = _process_start_time(owner)
    return started is None or started <= created + 2.0  # 2 s: start times are rounded to ticks and boot


def process_gone(pid: int) -> bool:
    """The process no longer runs (exited, or a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return not _pid_alive(pid)
    return state in ("Z", "X")


def _inside(cwd: str, root: str) -> bool:
    cwd = cwd.removesuffix(" (deleted)")
    return cwd == root or cwd.startswith(root + "/")


def kill_processes_inside(sandbox: Path, wait: float = 5.0) -> list[int]:
    """SIGKILL every process whose working directory is inside ``sandbox`` (Linux ``/proc``); returns their PIDs.

    PID-reuse safe: each process is pinned with a pidfd *before* its working directory is read, and the signal
    goes through that pidfd, so it reaches the process that was checked, never a later owner of the PID.
    Processes we may not inspect are left alone. Blocking, waits up to ``wait`` seconds for them to end.
    """
    root = os.path.realpath(sandbox)
    killed: list[int] = []
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return killed
    for name in entries:
        pid = int(name)
        if pid == os.getpid():
            continue
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone, or not ours to see
        try:
            if _inside(os.readlink(f"/proc/{pid}/cwd"), root):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed.append(pid)
        except OSError:
            pass
        finally:
            os.close(fd)
    deadline = time.monotonic() + wait
    while any(not process_gone(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


REMOVE_TRIES = 20
_RETRY_S = 0.1


def _remove_tree(path: Path) -> None:
    """Remove ``path`` and check that it is gone. Blocking (a worker thread).

    ``rmtree(ignore_errors=True)`` gives up silently on a directory that is written into while it is removed
    (ENOTEMPTY): a step of the run still finishing in a worker thread, or a process of the run still working
    there. Such a process is killed (its working directory is inside the sandbox), and the removal is tried
    again until the directory is gone (at most ``REMOVE_TRIES`` times, ``_RETRY_S`` apart). Raises OSError when
    it is still there."""
    for attempt in range(REMOVE_TRIES):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        if attempt == 0 and kill_processes_inside(path):
            log.warning("sandbox_processes_killed", path=str(path))
        time.sleep(_RETRY_S)
    raise OSError(f"sandbox {path} is still written into: not removed")


def make_dirs(root: Path, path: Path, mode: int = 0o700) -> None:
    """Create ``path``'s missing directories below ``root`` (a sandbox), never ``root`` itself: a worker thread
    still running after its run was cut off gets FileNotFoundError once the sandbox is removed, where
    ``mkdir(parents=True)`` would have re-created it (a leftover no sweep removes while the daemon runs).
    Blocking (a worker thread)."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        try:
            current.mkdir(mode=mode)
        except FileExistsError:
            if not current.is_dir():
                raise


class SandboxManager:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()

    @asynccontextmanager
    async def directory(self, run_id: str) -> AsyncIterator[Path]:
        path = self.root / f"{PREFIX}{run_id}"

        def create() -> None:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.mkdir(mode=0o700)  # FileExistsError: not ours, never removed here
            try:
                (path / OWNER).write_text(str(os.getpid()))
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise

        created = asyncio.ensure_future(asyncio.to_thread(create))
        try:
            await asyncio.shield(created)
        except asyncio.CancelledError:
            # The worker thread keeps creating the directory after the cancellation: let it finish,
            # then remove what it made.
            await self._remove(path, after=created)
            raise
        try:
            yield path
        finally:
            await self._remove(path)

    async def _remove(self, path: Path, after: asyncio.Future[None] | None = None) -> None:
        async def remove() -> None:
            if after is not None:
                try:
                    await after
                except Exception:
                    return  # the creation failed: nothing of ours to remove
            await asyncio.to_thread(_remove_tree, path)

        task = asyncio.ensure_future(remove())
        try:
            await asyncio.shield(asyncio.wait_for(asyncio.shield(task), timeout=60))
        except (asyncio.CancelledError, TimeoutError):
            # Removal keeps running in its thread; a leftover is swept on the next start.
            log.warning("sandbox_removal_incomplete", path=str(path))
            raise
        except OSError as exc:
            log.warning("sandbox_removal_incomplete", path=str(path), error=str(exc))

    def sweep_orphans(self, stoppers: Sequence[OrphanStopper] = ()) -> list[Path]:
        """Remove sandboxes whose owner process is gone. Each of ``stoppers`` (the validator plugins' ``orphans``:
        a PostgreSQL drill's server is stopped cleanly) is given each such sandbox first; whatever still works
        inside it is then killed. Blocking: call at start or from a thread."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for child in self.root.iterdir():
            if not child.name.startswith(PREFIX) or not child.is_dir():
                continue
            try:
                owner_file = child / OWNER
                owner = int(owner_file.read_text().strip())
                created = owner_file.stat().st_mtime
            except (OSError, ValueError):
                owner, created = -1, 0.0
            if _owned_by_live_process(owner, created):
                continue
            for stop in stoppers:
                if stop(child):
                    log.warning("orphaned_servers_stopped", sandbox=str(child),
                                by=getattr(stop, "__qualname__", "plugin"))
            if kill_processes_inside(child):
                log.warning("orphaned_sandbox_processes_killed", sandbox=str(child))
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
        return removed

    def existing(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(PREFIX))
