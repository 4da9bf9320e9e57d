"""Redis tooling for restore drills: where the binaries are, ``redis-check-rdb`` / ``redis-check-aof`` and their
verdicts, and the throwaway ``redis-server`` a snapshot is loaded into.

The throwaway server runs with persistence off (``save ""``; an AOF snapshot is loaded from its copy in the
sandbox), no TCP port (a unix socket inside the sandbox, mode 0700), in its own process group, with its working
directory inside the sandbox: stopping it is a SIGKILL of its group, registered before it starts, and a server a
crashed daemon left behind is killed by the sandbox sweep at the next start (every process whose working
directory is inside an orphaned sandbox, :func:`drwatch.core.sandbox.kill_processes_inside`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drwatch.core.cancels import CancelWatch
from drwatch.core.errors import ValidatorError
from drwatch.core.subprocesses import unwind

_LOG_TAIL = 16 * 1024
# What a failed check or load says when the snapshot is newer than these tools can read: not a bad backup.
NEWER_FORMAT = re.compile(r"Can't handle RDB format version|Unknown RDB format version|unknown RDB encoding type|"
                          r"Module .* not found|module .* not loaded", re.I)
# The snapshot uses a database index above the sandbox server's ``databases``: the config's, not the backup's fault.
TOO_FEW_DATABASES = re.compile(r"configured to handle more than \d+ databases")
TRUNCATED = re.compile(r"Unexpected EOF|Short read|truncated|EOF reading", re.I)


def quiet_client() -> dict[str, Any]:
    """redis-py client options that send no ``CLIENT SETINFO`` on connect (only the commands drwatch chose):
    ``driver_info=None`` from redis-py 8 on, ``lib_name``/``lib_version`` None before."""
    import inspect

    import redis.asyncio as aioredis

    if "driver_info" in inspect.signature(aioredis.Redis.__init__).parameters:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


def find_tools(configured: str | None, needed: Sequence[str]) -> Path:
    """The directory holding every tool in ``needed``: ``configured``, else the directory of the first on PATH
    (when it holds them all). Blocking (stat only)."""
    if configured:
        path = Path(configured).expanduser()
        missing = [t for t in needed if not os.access(path / t, os.X_OK)]
        if missing:
            raise ValidatorError("tools_missing", f"bin_dir {path} lacks {', '.join(missing)} (Debian: redis-server "
                                                  "and redis-tools)")
        return path
    found = shutil.which(needed[0])
    if found and all(shutil.which(t, path=str(Path(found).parent)) for t in needed):
        return Path(found).parent
    missing = [t for t in needed if not shutil.which(t)]
    raise ValidatorError("tools_missing", f"Redis tools not found ({', '.join(missing or needed)}): install "
                                          "redis-server and redis-tools, or set bin_dir")


def check_verdict(output: str) -> tuple[str, bool]:
    """(code, backup_fault) for a failed ``redis-check-rdb`` / ``redis-check-aof`` or load."""
    if TOO_FEW_DATABASES.search(output):
        return "databases_too_few", False
    if NEWER_FORMAT.search(output):
        return "snapshot_newer_than_tools", False
    return ("snapshot_truncated" if TRUNCATED.search(output) else "snapshot_corrupt"), True


def error_lines(output: str, limit: int = 3) -> str:
    lines = [ln.strip() for ln in output.splitlines()
             if re.search(r"error|not valid|invalid|wrong|unexpected|bad|fatal|corrupt|can't", ln, re.I)]
    return "; ".join((lines or [ln.strip() for ln in output.splitlines() if ln.strip()][-limit:])[:limit])[:500]


def keys_read(output: str) -> int | None:
    """``[info] N keys read`` of ``redis-check-rdb`` (None for an AOF check, which does not count)."""
    m = re.search(r"\[info\] (\d+) keys read", output)
    return int(m.group(1)) if m else None


@dataclass
class Sandboxed:
    """A throwaway redis-server; ``stop`` is safe to call at any point, also before it started."""

    bin_dir: Path
    sandbox: Path
    data_dir: Path = Path()
    dirfd: int = -1
    proc: asyncio.subprocess.Process | None = None
    client: Any = None
    closing: list[Any] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def logfile(self) -> Path:
        return self.sandbox / "redis-server.log"

    @property
    def client_socket(self) -> str:
        """The socket through a descriptor of its directory: a short path, however deep the sandbox (a unix
        socket's path holds 107 bytes)."""
        return f"/proc/self/fd/{self.dirfd}/redis.sock"

    def argv(self, data_dir: Path, name: str, aof_manifest: str, databases: int) -> list[str]:
        self.data_dir = data_dir
        # The socket's path is relative to the server's working directory (its ``dir``): short at any depth.
        argv = [str(self.bin_dir / "redis-server"), "--port", "0", "--unixsocket", "redis.sock",
                "--unixsocketperm", "700", "--dir", str(data_dir), "--save", "", "--daemonize", "no",
                "--supervised", "no", "--logfile", str(self.logfile), "--databases", str(databases),
                "--protected-mode", "yes", "--always-show-logo", "no", "--pidfile", "",
                "--latency-tracking", "no"]
        if aof_manifest:  # loaded only with appendonly on; the files are the sandbox's own copy
            argv += ["--appendonly", "yes", "--appenddirname", name,
                     "--appendfilename", aof_manifest.removesuffix(".manifest"), "--aof-load-truncated", "no",
                     "--appendfsync", "no", "--auto-aof-rewrite-percentage", "0", "--dbfilename", "drwatch-none.rdb"]
        else:
            argv += ["--appendonly", "no", "--dbfilename", name]
        return argv

    async def start(self, argv: list[str], cwd: Path) -> None:
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, cwd=cwd, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                                                  "LC_ALL": "C"}, start_new_session=True)
        except (FileNotFoundError, PermissionError) as exc:
            raise ValidatorError("tools_missing", f"cannot run {argv[0]}: {exc.strerror}") from None

    def log_tail(self) -> str:
        """The end of the server's log (blocking)."""
        try:
            with self.logfile.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - _LOG_TAIL))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def connect(self, db: int = 0) -> Any:
        """A client of the sandbox server's database ``db``."""
        import redis.asyncio as aioredis

        if self.dirfd < 0:
            self.dirfd = os.open(self.data_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return aioredis.Redis(unix_socket_path=self.client_socket, db=db, socket_timeout=30, socket_connect_timeout=5,
                              **quiet_client(), single_connection_client=True)

    async def wait_loaded(self, deadline: float) -> Any:
        """A client once the server answers PING (it answers ``LOADING`` while it reads the snapshot). Raises
        ``ServerExited`` when the server ended first; the run's own timeout bounds the wait."""
        from redis.exceptions import BusyLoadingError, ResponseError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeout

        loop = asyncio.get_running_loop()
        assert self.proc is not None
        cancel = CancelWatch()  # redis-py turns a cancel that lands while it reads LOADING into BusyLoadingError
        delay = 0.02
        while True:
            if self.proc.returncode is not None:
                raise ServerExited(self.proc.returncode)
            if self.client is None and self.socket.exists():
                self.client = self.connect()
            if self.client is not None:
                try:
                    await self.client.ping()
                    return self.client
                except (BusyLoadingError, RedisConnectionError, RedisTimeout, OSError):
                    cancel.check()
                except ResponseError as exc:
                    cancel.check()
                    if "LOADING" not in str(exc):
                        raise
            if loop.time() > deadline:
                raise ValidatorError("sandbox_server_failed", "the sandbox redis-server did not answer in time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), delay)
            delay = min(0.25, delay * 1.5)

    async def stop(self) -> None:
        """Close the client, SIGKILL the server's process group, reap it (bounded)."""
        if self.client is not None:
            client, self.client = self.client, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 5)
        if self.dirfd >= 0:
            fd, self.dirfd = self.dirfd, -1
            os.close(fd)
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await unwind(proc.wait(), 10)


class ServerExited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"redis-server exited with status {code}")
        self.code = code
