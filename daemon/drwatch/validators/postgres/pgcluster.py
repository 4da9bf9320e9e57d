"""The throwaway PostgreSQL cluster of an ephemeral restore drill, and the OS user it runs as.

PostgreSQL refuses to run as root: when drwatch runs as root, ``initdb``/``pg_ctl`` run as ``run_as``
through ``runuser``, and the sandbox is opened just enough for that user to reach its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import stat
from pathlib import Path

from drwatch.core.errors import ValidatorError
from drwatch.core.subprocesses import OUTPUT_LIMIT, run_tool
from drwatch.validators.postgres import pgtools
from drwatch.validators.postgres.orphans import stop_postmaster
from drwatch.validators.postgres.pgtemplate import Template
from drwatch.validators.postgres.pgtools import tool_env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EphemeralCluster:
    """A throwaway cluster in ``root`` (inside a sandbox): initdb + pg_ctl as ``run_as``, fsync off,
    listening on 127.0.0.1 on a free port with a random password (scram), its socket in ``root``.

    With ``templates`` (a directory), initdb's result is kept there and later clusters copy it instead of
    running initdb (:mod:`drwatch.validators.postgres.pgtemplate`); such a cluster gets its own random
    password right after the start."""

    SUPERUSER = "drwatch"
    START_ATTEMPTS = 3
    INITDB_ARGS = ("-U", SUPERUSER, "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")

    def __init__(self, bin_dir: Path, root: Path, run_as: str | None, templates: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.run_as = run_as
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.template = Template(templates, bin_dir, run_as, self.INITDB_ARGS) if templates is not None else None
        self._rekey_from: str | None = None  # the copied template's password, until the drill's own is set
        self.copied = False  # the data directory is a copy of a template (no initdb ran)

    def params(self, dbname: str = "postgres") -> dict[str, str]:
        return {"host": "127.0.0.1", "port": str(self.port), "user": self.SUPERUSER, "password": self.password,
                "dbname": dbname}

    def _prepare(self) -> Path:
        self.root.mkdir(mode=0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            for path in (self.root, pwfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        return pwfile

    async def init(self, limit: float) -> None:
        await asyncio.to_thread(self._prepare)
        if self.template is not None:
            self._rekey_from = await self.template.copy_to(self.data, limit)
            self.copied = self._rekey_from is not None
            if self.copied:
                return
        await self._initdb(limit)
        if self.template is not None:
            await self.template.save(self.data, self.password, limit)

    async def _initdb(self, limit: float) -> None:
        res = await run_tool([str(self.bin_dir / "initdb"), "-D", str(self.data), *self.INITDB_ARGS,
                              f"--pwfile={self.root / 'pwfile'}"],
                             env=tool_env(), limit=limit, run_as=self.run_as, keep_stdout=False, cwd=self.root)
        if res.returncode != 0:
            raise ValidatorError("sandbox_init_failed", f"initdb failed: {res.stderr.strip()[-500:]}")

    async def _rekey(self) -> None:
        """A cluster copied from a template: replace the template's superuser password with this drill's."""
        old, self._rekey_from = self._rekey_from, None
        if old is None:
            return
        conn = await pgtools.connect({**self.params(), "password": old}, code="sandbox_unavailable",
                                     what="sandbox server")
        try:  # token_urlsafe: letters, digits, - and _ only
            await conn.execute(f"ALTER ROLE {self.SUPERUSER} PASSWORD '{self.password}'", timeout=30)
        finally:
            await pgtools.close_connection(conn)

    async def start(self, limit: float) -> None:
        sock = str(self.root) if len(str(self.root)) < 80 else ""  # unix socket paths are limited to 107 bytes
        for attempt in range(1, self.START_ATTEMPTS + 1):
            self.port = free_port()
            # A throwaway server: nothing it writes must survive a crash. wal_level=minimal (no WAL senders)
            # lets pg_restore -j load each table it created with TRUNCATE + COPY in one transaction and build
            # indexes without writing WAL (benchmarks/README.md, PostgreSQL: the drill's overhead).
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={shlex.quote(sock)} "
                    "-c fsync=off -c full_page_writes=off -c synchronous_commit=off -c autovacuum=off "
                    "-c wal_level=minimal -c max_wal_senders=0 -c maintenance_work_mem=128MB "
                    "-c max_wal_size=4GB -c checkpoint_timeout=1h -c logging_collector=off -c jit=off")
            offset = await asyncio.to_thread(lambda: self.log.stat().st_size if self.log.exists() else 0)
            res = await run_tool([str(self.bin_dir / "pg_ctl"), "start", "-D", str(self.data), "-w", "-t",
                                  str(max(5, int(limit))), "-l", str(self.log), "-o", opts],
                                 env=tool_env(), limit=limit + 10, run_as=self.run_as, cwd=self.root)
            if res.returncode == 0:
                await self._rekey()
                return
            log_text = await asyncio.to_thread(_read_from, self.log, offset)
            await self.stop()
            if attempt < self.START_ATTEMPTS and re.search(r"could not bind|already in use", log_text, re.I):
                continue
            if self._rekey_from is not None and self.template is not None and attempt < self.START_ATTEMPTS:
                # A copy that does not start: the template is damaged. Removed; this cluster runs initdb.
                await self.template.discard()
                self._rekey_from, self.copied = None, False
                await asyncio.to_thread(shutil.rmtree, self.data)
                await self._initdb(limit)
                continue
            raise ValidatorError("sandbox_start_failed", f"the sandbox server did not start: "
                                 f"{(log_text or res.stderr).strip()[-500:]}")

    async def stop(self) -> None:
        """``pg_ctl stop -m immediate``; if that fails, signal the postmaster (pid file) directly."""
        pid_file = self.data / "postmaster.pid"
        if not await asyncio.to_thread(pid_file.exists):
            return
        with contextlib.suppress(ValidatorError):
            await run_tool([str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w",
                            "-t", "15"], env=tool_env(), limit=25, run_as=self.run_as, cwd=self.root)
        if await asyncio.to_thread(pid_file.exists):
            await asyncio.to_thread(stop_postmaster, pid_file)


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(OUTPUT_LIMIT).decode(errors="replace")
    except OSError:
        return ""




def sandbox_user(configured: str | None) -> str | None:
    """The OS user for the sandbox server: needed as root (PostgreSQL refuses root), impossible otherwise."""
    if os.geteuid() != 0:
        if configured and configured != pwd.getpwuid(os.geteuid()).pw_name:
            raise ValidatorError("run_as_needs_root", f"sandbox.run_as {configured!r} needs drwatch to run as root")
        return None
    name = configured or "postgres"
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ValidatorError("run_as_missing", f"drwatch runs as root and PostgreSQL refuses root: set sandbox.run_as "
                                               f"to an existing OS user (there is no {name!r})") from None
    return name


def open_sandbox_for(sandbox: Path, user: str) -> None:
    """Let ``user`` reach its cluster directory: the sandbox becomes group-traversable for the user's group
    (0710) and the sandbox root traversable without listing (o+x). Blocking."""
    pw = pwd.getpwnam(user)
    os.chown(sandbox, -1, pw.pw_gid)
    sandbox.chmod(0o710)
    root = sandbox.parent
    st = root.stat()
    if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IXOTH:
        root.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
    for d in root.parents:
        s = d.stat()
        bit = stat.S_IXUSR if s.st_uid == pw.pw_uid else stat.S_IXGRP if s.st_gid == pw.pw_gid else stat.S_IXOTH
        if not s.st_mode & bit:
            raise ValidatorError("sandbox_not_traversable", f"{d} is not traversable by {user!r}: choose a "
                                 "limits.sandbox_dir under a directory it can reach (e.g. /var/tmp)")
