"""Throwaway real PostgreSQL servers for tests.

Starts a private PostgreSQL cluster (``initdb`` + ``pg_ctl start``) in a temporary
directory, listening on a free loopback port with trust authentication, and removes
it again afterwards. Uses the Debian server binaries under
``/usr/lib/postgresql/<version>/bin`` (the newest version that has ``initdb``); the
environment variable ``DRWATCH_TEST_PG_BIN`` overrides that directory.

PostgreSQL refuses to run as root. When the tests run as root, the cluster directory
is handed to the ``postgres`` OS user and ``initdb``/``pg_ctl``/``psql`` are run
through ``runuser -u postgres --``. The base directory (default ``/tmp``) must be
traversable by that user.

This module deliberately defines no pytest fixtures; ``conftest.py`` wraps it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

__all__ = ["PG_BIN_ENV", "PostgresServer", "find_pg_bin", "postgres_server"]

PG_BIN_ENV = "DRWATCH_TEST_PG_BIN"
PG_OS_USER = "postgres"
PG_SUPERUSER = "postgres"
LOOPBACK = "127.0.0.1"
COMMAND_TIMEOUT_S = 60.0
START_ATTEMPTS = 3
_DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
_LOG_TAIL_LINES = 40
_PORT_RACE_MARKERS = (
    "could not bind",
    "address already in use",
    "could not create any tcp/ip sockets",
    "could not create lock file",
)


def _version_key(path: Path) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in path.name.split("."):
        try:
            parts.append(int(piece))
        except ValueError:
            return (-1,)
    return tuple(parts)


def find_pg_bin() -> Path | None:
    """Return the PostgreSQL server binary directory, or ``None`` if there is none.

    ``$DRWATCH_TEST_PG_BIN`` wins when set; a value that does not contain ``initdb``
    raises ``RuntimeError`` (a misconfiguration should not silently skip tests).
    """
    override = os.environ.get(PG_BIN_ENV)
    if override:
        path = Path(override)
        if not (path / "initdb").is_file():
            raise RuntimeError(f"${PG_BIN_ENV}={override!r} does not contain an initdb binary")
        return path
    if not _DEBIAN_PG_ROOT.is_dir():
        return None
    candidates = [
        version_dir / "bin"
        for version_dir in _DEBIAN_PG_ROOT.iterdir()
        if (version_dir / "bin" / "initdb").is_file()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda bin_dir: _version_key(bin_dir.parent))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _traversable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether every directory from ``/`` down to ``path`` is searchable by uid/gid."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class PostgresServer:
    """One private PostgreSQL cluster in a temporary directory.

    Lifecycle: ``start()`` (initdb on first call, then start) -> optional
    ``stop()``/``restart()`` cycles on the same port and data directory ->
    ``cleanup()``, which stops the server and deletes everything.
    """

    def __init__(self, base_dir: Path | None = None, *, bin_dir: Path | None = None) -> None:
        found = bin_dir if bin_dir is not None else find_pg_bin()
        if found is None:
            raise RuntimeError(
                f"no PostgreSQL server binaries found under {_DEBIAN_PG_ROOT}/*/bin (set ${PG_BIN_ENV})"
            )
        self._bin_dir = found
        self._base_dir = base_dir if base_dir is not None else Path("/tmp")
        self._as_root = os.geteuid() == 0
        self._root: Path | None = None
        self._port: int | None = None
        self._initialized = False
        self._running = False

    # ------------------------------------------------------------------ properties

    @property
    def bin_dir(self) -> Path:
        return self._bin_dir

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("PostgreSQL test server has not been started")
        return self._port

    @property
    def root_dir(self) -> Path:
        """The temporary directory holding data dir, socket dir and log."""
        if self._root is None:
            raise RuntimeError("PostgreSQL test server has not been started")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root_dir / "sock"

    @property
    def log_path(self) -> Path:
        return self.root_dir / "server.log"

    @property
    def running(self) -> bool:
        return self._running

    # ------------------------------------------------------------------ public API

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_SUPERUSER}@{self.host}:{self.port}/{quote(database, safe='')}"

    def start(self) -> None:
        """initdb (first time only) and start the server; no-op when already running."""
        if self._running:
            return
        if not self._initialized:
            self._create_dirs()
            try:
                self._initdb()
            except BaseException:
                self.cleanup()
                raise
            self._initialized = True
        if self._port is not None:
            self._pg_ctl_start(self._port)
            return
        for attempt in range(1, START_ATTEMPTS + 1):
            port = _free_port()
            log_offset = self._log_size()
            try:
                self._pg_ctl_start(port)
            except RuntimeError:
                if attempt < START_ATTEMPTS and self._port_race(log_offset):
                    continue
                raise
            return

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode`` (smart/fast/immediate); no-op when not running."""
        if not self._running:
            return
        self._run(
            [
                self._bin("pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(COMMAND_TIMEOUT_S)),
            ],
            what=f"pg_ctl stop -m {mode}",
        )
        self._running = False

    def restart(self) -> None:
        """Start again on the same port and data directory (stopping first if needed)."""
        if not self._initialized or self._port is None:
            raise RuntimeError("restart() called before start()")
        self.stop("fast")
        self._pg_ctl_start(self._port)

    def cleanup(self) -> None:
        """Stop the server (immediate) if it runs and delete the temporary directory."""
        root = self._root
        if root is None:
            return
        try:
            if self._running or (self.data_dir / "postmaster.pid").exists():
                try:
                    self._running = True
                    self.stop("immediate")
                except RuntimeError:
                    self._kill_postmaster()
        finally:
            self._running = False
            shutil.rmtree(root, ignore_errors=True)
            self._root = None
            self._port = None
            self._initialized = False

    def drill_databases(self) -> list[str]:
        """The target-mode drill databases (``drwatch_drill_*``) on this server, by name. Blocking."""
        out = self.psql(r"SELECT datname FROM pg_database WHERE datname LIKE 'drwatch\_drill\_%' ORDER BY 1")
        return out.split()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``psql -At -c sql`` and return its stdout without the final newline."""
        result = self._run(
            [
                self._bin("psql"),
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                PG_SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            what=f"psql -c {sql!r}",
        )
        return result.stdout.removesuffix("\n")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` and return its DSN."""
        ident = '"' + name.replace('"', '""') + '"'
        self.psql(f"CREATE DATABASE {ident}")
        return self.dsn(name)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ internals

    def _bin(self, name: str) -> str:
        return str(self._bin_dir / name)

    def _create_dirs(self) -> None:
        self._base_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="drwatch-pg-", dir=self._base_dir))
        try:
            self._populate_root(root)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        self._root = root

    def _populate_root(self, root: Path) -> None:
        root.chmod(0o755)
        for sub, mode in (("data", 0o700), ("sock", 0o755)):
            (root / sub).mkdir(mode=mode)
            (root / sub).chmod(mode)
        if self._as_root:
            try:
                pw = pwd.getpwnam(PG_OS_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root but there is no {PG_OS_USER!r} OS user to run PostgreSQL as"
                ) from None
            for path in (root, root / "data", root / "sock"):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            if not _traversable_by(root, pw.pw_uid, pw.pw_gid):
                raise RuntimeError(
                    f"{root} is not traversable by the {PG_OS_USER!r} user; pass a base_dir "
                    "whose parents are world-searchable (e.g. /tmp)"
                )

    def _initdb(self) -> None:
        self._run(
            [
                self._bin("initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                PG_SUPERUSER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            what="initdb",
        )

    def _pg_ctl_start(self, port: int) -> None:
        options = (
            f"-F -c listen_addresses={LOOPBACK} -p {port} -k {self.socket_dir} "
            "-c fsync=off -c full_page_writes=off"
        )
        try:
            self._run(
                [
                    self._bin("pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-w",
                    "-t",
                    str(int(COMMAND_TIMEOUT_S)),
                    "-l",
                    str(self.log_path),
                    "-o",
                    options,
                ],
                what=f"pg_ctl start (port {port})",
                timeout=COMMAND_TIMEOUT_S + 30,
            )
        except RuntimeError:
            # A failed -w start may leave a half-started postmaster behind.
            if (self.data_dir / "postmaster.pid").exists():
                self._kill_postmaster()
            raise
        self._port = port
        self._running = True

    def _kill_postmaster(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except (OSError, RuntimeError):
            return 0

    def _port_race(self, log_offset: int) -> bool:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(log_offset)
                text = fh.read().decode(errors="replace").lower()
        except OSError:
            return False
        return any(marker in text for marker in _PORT_RACE_MARKERS)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, RuntimeError):
            return "(no server log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(server log empty)"

    def _run(
        self, cmd: Sequence[str], *, what: str, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        argv = ["runuser", "-u", PG_OS_USER, "--", *cmd] if self._as_root else list(cmd)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        cwd = self._root if self._root is not None else self._base_dir
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=cwd,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            raise RuntimeError(
                f"{what} timed out after {timeout:.0f}s\ncommand: {argv}\nstderr:\n{stderr or ''}\n"
                f"server log tail:\n{self._log_tail()}"
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"{what} failed with exit code {result.returncode}\ncommand: {argv}\n"
                f"stderr:\n{result.stderr}\nstdout:\n{result.stdout}\n"
                f"server log tail:\n{self._log_tail()}"
            )
        return result


class StandbyServer(PostgresServer):
    """A streaming standby of ``primary``: its data directory is a ``pg_basebackup -R`` instead of initdb."""

    def __init__(self, primary: PostgresServer) -> None:
        super().__init__(bin_dir=primary.bin_dir)
        self.primary = primary

    def _initdb(self) -> None:
        self._run([self._bin("pg_basebackup"), "-D", str(self.data_dir), "-R", "-X", "stream", "-c", "fast",
                   "-h", self.primary.host, "-p", str(self.primary.port), "-U", "postgres"], what="pg_basebackup")


@contextlib.contextmanager
def postgres_server(base_dir: Path | None = None, *, bin_dir: Path | None = None) -> Iterator[PostgresServer]:
    """Start a throwaway server, yield it, and always clean it up."""
    server = PostgresServer(base_dir, bin_dir=bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
