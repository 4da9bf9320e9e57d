"""A real redis-server (Debian's package) for tests: production of the ``redis_restore`` tests and fault suites.

It listens on a unix socket in its own directory (no TCP port), keeps its RDB there (``SAVE`` writes
``dump.rdb``) and is killed with its directory by ``stop``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis


class RedisServer:
    def __init__(self, root: Path | None = None, *, appendonly: bool = False, databases: int = 16) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="drw-redis-", dir=root or "/tmp"))
        self.appendonly = appendonly
        self.databases = databases
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        argv = [shutil.which("redis-server") or "redis-server", "--port", "0", "--unixsocket", str(self.socket),
                "--unixsocketperm", "700", "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--logfile", str(self.dir / "log"), "--appendonly", "yes" if self.appendonly else "no",
                "--aof-timestamp-enabled", "yes", "--databases", str(self.databases)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.dir / 'log').read_text(errors='replace')}")
            time.sleep(0.05)

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), db=db, socket_timeout=10)

    def fill(self, db: int, n: int, prefix: str = "k") -> None:
        """``n`` keys of each of five types (strings, hashes, lists, sets, sorted sets) in ``db``."""
        c = self.client(db)
        pipe = c.pipeline(transaction=False)
        for i in range(n):
            kind = i % 5
            key = f"{prefix}:{i}"
            if kind == 0:
                pipe.set(key, "v" * (i % 50 + 1))
            elif kind == 1:
                pipe.hset(key, mapping={"a": i, "b": "x"})
            elif kind == 2:
                pipe.rpush(key, *range(i % 7 + 1))
            elif kind == 3:
                pipe.sadd(key, *range(i % 5 + 1))
            else:
                pipe.zadd(key, {"m": 1.0, "n": 2.0})
        pipe.execute()

    def save(self, target: Path) -> Path:
        """SAVE, then copy the RDB to ``target``."""
        self.client().save()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.dir / "dump.rdb", target)
        return target

    def keyspace(self) -> dict[str, Any]:
        return dict(self.client().info("keyspace"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
