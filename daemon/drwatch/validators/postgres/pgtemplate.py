"""initdb'd clusters kept for reuse: an ephemeral drill copies one (``cp -a``) instead of running initdb.

initdb is the largest fixed cost of a drill (bootstrap, then the catalog SQL in single-user mode: 0.5-0.7 s
on 2 cores, several seconds under load) and its result depends only on the PostgreSQL build and initdb's
arguments; a copy of its 40 MB data directory takes a fraction of that (benchmarks/README.md, PostgreSQL:
the drill's overhead). The template is taken right after initdb, before the server ever started, so a copy
is what initdb would have written. It lives next to the sandboxes, in ``drwatch-pgtemplate-DIR-KEY`` (DIR:
the binaries' directory, KEY: the binaries' identity, the OS user, initdb's arguments), readable by
drwatch's user only; a new build's template replaces the old one of the same directory. The template's
superuser password is kept there (0600) only to connect once after the start and set the drill's own
random password (:meth:`EphemeralCluster.start`), so every drill still runs with a password nobody else
knows. Everything here is best effort: a template that cannot be read, copied or saved means initdb runs,
as before, and one whose copy does not start is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from drwatch.core.errors import ValidatorError
from drwatch.core.subprocesses import run_tool, unwind
from drwatch.validators.postgres.pgtools import tool_env

PREFIX = "drwatch-pgtemplate-"
FORMAT = "1"  # changes with what a template holds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class Template:
    """The template for ``bin_dir``'s initdb with ``initdb_args``, run as ``run_as``, under ``root``."""

    def __init__(self, root: Path, bin_dir: Path, run_as: str | None, initdb_args: Sequence[str]) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.run_as = run_as
        self.args = list(initdb_args)
        self.dir: Path | None = None

    def _family(self) -> str:
        """Names the templates of this ``bin_dir``: a new build replaces its own, never another's."""
        return hashlib.sha256(str(self.bin_dir.resolve()).encode()).hexdigest()[:8]

    def _key(self) -> str:
        parts = [FORMAT, self.run_as or "", *self.args, *(_identity(self.bin_dir / t) for t in ("initdb", "postgres"))]
        return f"{self._family()}-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    def _locate(self) -> Path | None:
        """The template's directory (blocking: stat only); None when the binaries cannot be identified."""
        if self.dir is None:
            try:
                self.dir = self.root / f"{PREFIX}{self._key()}"
            except OSError:
                return None
        return self.dir

    def _password(self) -> str | None:
        where = self._locate()
        if where is None or not (where / "data" / "PG_VERSION").is_file():
            return None
        try:
            return (where / "password").read_text().strip() or None
        except OSError:
            return None

    async def copy_to(self, data: Path, limit: float) -> str | None:
        """Copy the template's data directory to ``data`` (which must not exist); returns the template
        superuser's password, or None (no usable template: ``data`` is left absent)."""
        password = await asyncio.to_thread(self._password)
        if password is None or self.dir is None:
            return None
        try:
            res = await run_tool(["cp", "-a", "--reflink=auto", str(self.dir / "data"), str(data)], env=tool_env(),
                                 limit=limit, keep_stdout=False)
        except ValidatorError:
            res = None
        if res is not None and res.returncode == 0:
            return password
        await asyncio.to_thread(shutil.rmtree, data, True)
        return None

    async def save(self, data: Path, password: str, limit: float) -> None:
        """Keep a copy of ``data`` (just initialised, never started) as the template; older templates of the
        same binaries' directory are removed. A failure leaves no template (the next drill runs initdb)."""
        where = await asyncio.to_thread(self._locate)
        if where is None or await asyncio.to_thread(where.exists):
            return
        tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
        try:
            await asyncio.to_thread(self._start_tmp, tmp, password)
            res = await run_tool(["cp", "-a", "--reflink=auto", str(data), str(tmp / "data")], env=tool_env(),
                                 limit=limit, keep_stdout=False)
            if res.returncode == 0:
                await asyncio.to_thread(self._publish, tmp, where)
        except (OSError, ValidatorError):
            pass
        finally:  # also when the run is cut off meanwhile
            await unwind(asyncio.to_thread(shutil.rmtree, tmp, True), 60)

    @staticmethod
    def _start_tmp(tmp: Path, password: str) -> None:
        for stale in tmp.parent.glob(f".{PREFIX}*.tmp"):  # copies of processes that died while saving
            pid = stale.name.rsplit(".", 2)[-2]
            if not pid.isdigit() or not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        fd = os.open(tmp / "password", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")

    @staticmethod
    def _publish(tmp: Path, where: Path) -> None:
        with contextlib.suppress(OSError):  # another drill published the same template first
            tmp.rename(where)
        family = where.name[: len(PREFIX) + 9]  # PREFIX + the directory's hash + "-"
        for old in where.parent.glob(f"{family}*"):
            if old != where:
                shutil.rmtree(old, ignore_errors=True)

    async def discard(self) -> None:
        """Remove the template (it did not start: damaged); the next drill makes a new one."""
        if self.dir is not None:
            await asyncio.to_thread(shutil.rmtree, self.dir, True)
