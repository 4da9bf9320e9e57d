"""Throwaway real S3 endpoints for tests: moto's server and a one-host Ceph RADOS Gateway.

Both listen on a free loopback port, are reached over real HTTP (boto3/aioboto3 with
``endpoint_url``), and are removed again afterwards. Nothing is patched in-process.

``MotoServer``
    ``python -m moto.server -H 127.0.0.1 -p PORT`` as a subprocess; starts in about a
    second. Several instances may run at once (each one stands for a separate
    provider/region; their states are independent). State lives in the server process
    only: ``stop()`` + ``restart()`` (same port) comes back EMPTY, and ``reset()`` empties
    it without a restart. Like AWS, a PUT with ``ObjectLockMode`` needs ``ContentMD5`` or
    ``ChecksumAlgorithm`` (else 400 MissingUploadObjectWithObjectLockHeaders). Known gaps
    (see NOTES-servers.md): ``get_object_retention`` answers 500, shortening a COMPLIANCE
    retention is accepted, wrong ``Content-MD5``/checksum values are accepted.

``CephRGW``
    A real S3 implementation (Debian's ``radosgw``, Ceph 16.2 Pacific): one monitor, one
    in-memory OSD (``memstore``), no manager, radosgw with the beast frontend; ready in
    about 2-3 s. Everything (config, data, logs, pid files, admin sockets) lives in one
    temporary directory. Object lock semantics are exact (AccessDenied on deleting a locked
    version or shortening its retention); a wrong ``Content-MD5`` is refused (BadDigest);
    flexible checksums are accepted but neither stored nor verified; bucket locations
    answer the zonegroup name (``default``). ``stop()`` stops only
    the gateway (the S3 endpoint refuses connections) and ``restart()`` starts it again on
    the same port with all data intact; ``cleanup()`` kills every daemon and deletes the
    directory. Install the packages with ``scripts/ceph-rgw-deps.sh``.

botocore >= 1.36 adds CRC checksums to every upload by default, which older S3
implementations such as Ceph Pacific may reject (aws-chunked trailers); build clients with
:func:`s3_client`, which sends checksums only when asked. This module deliberately defines no pytest fixtures;
``conftest.py`` wraps it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped,unused-ignore]
from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

__all__ = [
    "CEPH_BINARIES",
    "CephRGW",
    "MotoServer",
    "ceph_available",
    "ceph_rgw",
    "moto_server",
    "s3_client",
]

LOOPBACK = "127.0.0.1"
COMMAND_TIMEOUT_S = 60.0
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 10.0
MOTO_START_TIMEOUT_S = 30.0
CEPH_START_TIMEOUT_S = 120.0
CEPH_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
CEPH_ACCESS_KEY = "DRWATCHTESTACCESSKEY"
CEPH_SECRET_KEY = "drwatch-test-secret-key-0123456789abcdef"
CEPH_USER = "drwatch-test"
CEPH_REGION = "default"
_LOG_TAIL_LINES = 40
_POLL_S = 0.1
_WATCH_TIMEOUT_S = 10  # osd client watch timeout (default 30)
_BIND_FAILURE_MARKERS = ("unable to bind", "failed to bind", "address already in use")

S3Client = Any  # boto3's S3 client has no static type here

# Servers started and not yet cleaned up; an interpreter exit (e.g. pytest aborted by an
# exception outside the fixtures) still cleans them up. A SIGKILLed test process cannot.
_LIVE: set[MotoServer | CephRGW] = set()


@atexit.register
def _cleanup_live() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.cleanup()


def s3_client(
    endpoint_url: str,
    access_key: str = "test",
    secret_key: str = "test",
    region: str = "us-east-1",
) -> S3Client:
    """A boto3 S3 client for a test endpoint: path-style, checksums only when required.

    ``request_checksum_calculation``/``response_checksum_validation`` = ``when_required``
    so requests look the same on every server. Explicit ``ChecksumAlgorithm=...`` and
    ``ChecksumMode="ENABLED"`` still work.
    """
    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


# ---------------------------------------------------------------------- shared helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path.name}: no log)"
    return "\n".join(text[-lines:]) or f"({path.name}: empty)"


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _http_status(url: str, *, method: str = "GET", timeout: float = 2.0) -> int | None:
    """HTTP status of ``url``, or ``None`` when nothing answers (refused, reset, timeout)."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0


def _terminate(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, then SIGKILL; always reaps the process."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout)


def _spawn(argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # no terminal signals (Ctrl-C) reach the server directly
        )


# ---------------------------------------------------------------------- moto


class MotoServer:
    """``python -m moto.server`` on a free loopback port, as a subprocess.

    Lifecycle: ``start()`` -> optional ``stop()``/``restart()`` cycles on the same port
    -> ``cleanup()``. moto keeps all state in memory, so a restarted server is empty.
    ``region`` is only what :meth:`client` signs with (moto accepts every region).
    """

    access_key = "test"
    secret_key = "test"

    def __init__(self, region: str = "us-east-1", *, base_dir: Path | None = None) -> None:
        self._region = region
        self._base_dir = base_dir
        self._root: Path | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def region(self) -> str:
        return self._region

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("moto server has not been started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._root is None:
            raise RuntimeError("moto server has not been started")
        return self._root / "moto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def client(self) -> S3Client:
        return s3_client(self.endpoint_url, self.access_key, self.secret_key, self._region)

    def start(self) -> None:
        """Start on a free port (first time) or on the previous port; no-op when running."""
        if self.running:
            return
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="drwatch-moto-", dir=self._base_dir))
        _LIVE.add(self)
        if self._port is not None:
            self._launch(self._port)
            return
        for attempt in range(1, START_ATTEMPTS + 1):
            port = _free_port()
            try:
                self._launch(port)
            except RuntimeError:
                if attempt < START_ATTEMPTS and "address already in use" in _tail(self.log_path, 5).lower():
                    continue
                raise
            return

    def stop(self) -> None:
        """SIGTERM the server (SIGKILL after 10 s): the endpoint then refuses connections."""
        if self._proc is not None:
            _terminate(self._proc)
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port. All moto state (buckets, objects) is lost."""
        if self._port is None:
            raise RuntimeError("restart() called before start()")
        self.stop()
        self._launch(self._port)

    def reset(self) -> None:
        """Drop all state without a restart (``POST /moto-api/reset``)."""
        status = _http_status(f"{self.endpoint_url}/moto-api/reset", method="POST", timeout=10)
        if status != 200:
            raise RuntimeError(f"moto reset answered {status}\nmoto log tail:\n{_tail(self.log_path)}")

    def cleanup(self) -> None:
        """Stop the server and delete its temporary directory."""
        self.stop()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        self._root = None
        self._port = None
        _LIVE.discard(self)

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def _launch(self, port: int) -> None:
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", self.access_key)
        env.setdefault("AWS_SECRET_ACCESS_KEY", self.secret_key)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {argv} ---\n".encode())
            offset = log.tell()
        proc = _spawn(argv, self.log_path, env=env)
        deadline = time.monotonic() + MOTO_START_TIMEOUT_S
        url = f"http://{LOOPBACK}:{port}/moto-api/"
        # werkzeug prints this once it listens; it guards against something else on the port
        listening = f"Running on http://{LOOPBACK}:{port}"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with code {proc.returncode} during start (port {port})\n"
                    f"moto log tail:\n{_tail(self.log_path)}"
                )
            if listening in _read_from(self.log_path, offset) and _http_status(url, timeout=1) == 200:
                break
            if time.monotonic() > deadline:
                _terminate(proc)
                raise RuntimeError(
                    f"moto server did not answer on port {port} within {MOTO_START_TIMEOUT_S:.0f}s\n"
                    f"moto log tail:\n{_tail(self.log_path)}"
                )
            time.sleep(_POLL_S)
        self._proc = proc
        self._port = port


@contextlib.contextmanager
def moto_server(region: str = "us-east-1") -> Iterator[MotoServer]:
    """Start a moto server, yield it, and always clean it up."""
    server = MotoServer(region)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@contextlib.contextmanager
def iam_moto_server(user: str = "drwatch") -> Iterator[tuple[MotoServer, str, str]]:
    """A moto server of its own that checks credentials: IAM is enforced after its first 3 requests, which create
    ``user``, allowed ``s3:*`` only (any other service, DynamoDB included, is denied to it). Yields (server, the
    user's access key id, its secret key); the server is always cleaned up (tests may stop it earlier)."""
    import json

    import pytest

    server = MotoServer()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            server.start()
        iam = boto3.client("iam", endpoint_url=server.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        yield server, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.cleanup()


# ---------------------------------------------------------------------- Ceph RGW


def ceph_available() -> bool:
    """Whether the Ceph binaries CephRGW needs are installed (``scripts/ceph-rgw-deps.sh``)."""
    return all(shutil.which(name) is not None for name in CEPH_BINARIES)


_CEPH_CONF = """\
[global]
fsid = {fsid}
mon host = [v2:{host}:{mon_port}]
public addr = {host}
cluster addr = {host}
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
keyring = {root}/keyring
run dir = {root}/run
exec dir = {root}/run
crash dir = {root}/crash
log file = {root}/log/$name.log
pid file = {root}/run/$name.pid
admin socket = {root}/run/$name.$pid.asok
mon cluster log file = {root}/log/cluster.log
log to stderr = false
err to stderr = true
mon data = {root}/mon/$id
osd data = {root}/osd/$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd crush chooseleaf type = 0
osd crush initial weight = 1
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
# paxos proposes every 1 s by default; pools are created one map epoch at a time, so the
# default made start() take ~12 s instead of ~3 s
paxos propose interval = 0.1
# a killed radosgw's watches delay metadata writes (bucket/user create) until this expires
osd client watch timeout = {watch_timeout}

[client]
rgw frontends = beast endpoint={host}:{rgw_port}
rgw data = {root}/rgw
rgw init timeout = 60
rgw dynamic resharding = false
rgw enable usage log = false
"""


class CephRGW:
    """A throwaway one-host Ceph cluster with a radosgw S3 endpoint on loopback.

    Lifecycle: ``start()`` -> optional ``stop()``/``restart()`` of the gateway (data
    kept) -> ``cleanup()``. One S3 user with fixed keys (:attr:`access_key`,
    :attr:`secret_key`) exists; sign requests for region :attr:`region` (``default``,
    the zonegroup name that bucket locations answer; any other ``LocationConstraint``
    is refused with InvalidLocationConstraint).

    All objects live in the OSD's RAM, capped at ``memstore_bytes`` (default 1 GiB).
    Keep ``base_dir`` short: admin socket paths must fit in 107 bytes.
    """

    access_key = CEPH_ACCESS_KEY
    secret_key = CEPH_SECRET_KEY
    region = CEPH_REGION

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        start_timeout: float = CEPH_START_TIMEOUT_S,
        memstore_bytes: int = 1 << 30,
    ) -> None:
        self._base_dir = base_dir
        self._memstore_bytes = memstore_bytes
        self._start_timeout = start_timeout
        self._root: Path | None = None
        self._mon_port: int | None = None
        self._rgw_port: int | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._fsid = str(uuid.uuid4())
        self.start_seconds: float | None = None  # how long the last full start() took

    # ------------------------------------------------------------------ properties

    @property
    def root_dir(self) -> Path:
        if self._root is None:
            raise RuntimeError("Ceph RGW has not been started")
        return self._root

    @property
    def conf_path(self) -> Path:
        return self.root_dir / "ceph.conf"

    @property
    def port(self) -> int:
        if self._rgw_port is None:
            raise RuntimeError("Ceph RGW has not been started")
        return self._rgw_port

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        proc = self._procs.get("rgw")
        return proc is not None and proc.poll() is None

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the daemons this instance started and that still run."""
        return {name: proc.pid for name, proc in self._procs.items() if proc.poll() is None}

    def client(self) -> S3Client:
        return s3_client(self.endpoint_url, self.access_key, self.secret_key, self.region)

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        """Create the cluster and start mon, OSD and radosgw; returns once S3 works."""
        if self._root is not None:
            raise RuntimeError("CephRGW.start() called twice; use restart() for the gateway")
        if not ceph_available():
            missing = [name for name in CEPH_BINARIES if shutil.which(name) is None]
            raise RuntimeError(f"Ceph binaries missing: {missing} (run scripts/ceph-rgw-deps.sh)")
        began = time.monotonic()
        deadline = began + self._start_timeout
        self._root = Path(tempfile.mkdtemp(prefix="drwatch-ceph-", dir=self._base_dir))
        _LIVE.add(self)
        try:
            for sub in ("run", "log", "crash", "mon", "osd", "rgw"):
                (self.root_dir / sub).mkdir()
            self._start_mon(deadline)
            self._start_osd(deadline)
            # Before radosgw: radosgw-admin creates the zone and pools, and there is no
            # gateway yet whose watches the user's metadata write must notify.
            self._create_user()
            self._start_rgw(deadline, new_port=True)
            self._wait_s3(deadline)
        except BaseException:
            with contextlib.suppress(RuntimeError):  # keep the start error, not a cleanup one
                self.cleanup()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop radosgw only: the S3 endpoint refuses connections; the cluster keeps its data."""
        proc = self._procs.pop("rgw", None)
        if proc is not None:
            _terminate(proc)

    def restart(self) -> None:
        """Start radosgw again on the same port (stopping it first if needed); data is kept."""
        if self._root is None or self._rgw_port is None:
            raise RuntimeError("restart() called before start()")
        self.stop()
        deadline = time.monotonic() + self._start_timeout
        self._start_rgw(deadline, new_port=False)
        self._wait_s3(deadline)

    def cleanup(self) -> None:
        """Kill every daemon of this cluster (verified with pgrep) and delete the directory."""
        root = self._root
        _LIVE.discard(self)
        if root is None:
            return
        survivors: list[int] = []
        try:
            for name in ("rgw", "osd", "mon"):
                proc = self._procs.pop(name, None)
                if proc is not None:
                    _terminate(proc)
            survivors = self._kill_strays(root)
        finally:
            self._procs.clear()
            shutil.rmtree(root, ignore_errors=True)
            self._root = None
            self._mon_port = None
            self._rgw_port = None
        if survivors:
            raise RuntimeError(f"Ceph processes survived cleanup: {survivors}")

    def log_tails(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Tails of all daemon logs (for error messages)."""
        if self._root is None:
            return "(no cluster directory)"
        log_dir = self._root / "log"
        parts = [f"== {path.name} ==\n{_tail(path, lines)}" for path in sorted(log_dir.glob("*.log"))]
        return "\n".join(parts) or "(no logs)"

    def __enter__(self) -> CephRGW:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ internals

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CEPH_")}
        env["CEPH_CONF"] = str(self.conf_path)
        env["LC_ALL"] = "C"
        return env

    def _write_conf(self) -> None:
        if self._mon_port is None or self._rgw_port is None:
            raise RuntimeError("ports not chosen yet")
        self.conf_path.write_text(
            _CEPH_CONF.format(
                fsid=self._fsid,
                host=LOOPBACK,
                mon_port=self._mon_port,
                rgw_port=self._rgw_port,
                root=self.root_dir,
                watch_timeout=_WATCH_TIMEOUT_S,
                memstore_bytes=self._memstore_bytes,
            )
        )

    def _run(
        self, argv: Sequence[str], *, what: str, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._env(),
                cwd=self.root_dir,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            raise RuntimeError(
                f"{what} timed out after {timeout:.0f}s\ncommand: {list(argv)}\nstderr:\n{stderr or ''}\n"
                f"{self.log_tails(20)}"
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"{what} failed with exit code {result.returncode}\ncommand: {list(argv)}\n"
                f"stderr:\n{result.stderr}\nstdout:\n{result.stdout}\n{self.log_tails(20)}"
            )
        return result

    def _daemon(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        proc = _spawn([*argv, "-f", "-c", str(self.conf_path)], self.root_dir / "log" / f"{name}.out.log")
        self._procs[name] = proc
        return proc

    def _check_alive(self, what: str) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode} while waiting for {what}\n{self.log_tails()}"
                )

    def _start_mon(self, deadline: float) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self._mon_port = _free_port()
            self._rgw_port = _free_port()
            self._write_conf()
            monmap = self.root_dir / "monmap"
            shutil.rmtree(self.root_dir / "mon" / "a", ignore_errors=True)
            monmap.unlink(missing_ok=True)
            self._run(
                [
                    "monmaptool",
                    "--create",
                    "--fsid",
                    self._fsid,
                    "--addv",
                    "a",
                    f"[v2:{LOOPBACK}:{self._mon_port}]",
                    str(monmap),
                ],
                what="monmaptool --create",
            )
            self._run(
                ["ceph-mon", "-c", str(self.conf_path), "--mkfs", "-i", "a", "--monmap", str(monmap)],
                what="ceph-mon --mkfs",
            )
            offset = self._size("mon.a.log")
            self._daemon("mon", ["ceph-mon", "-i", "a"])
            if self._wait_daemon("mon", "mon.a.log", offset, "is new leader", self._mon_port, deadline):
                return
            self._drop_daemon("mon")
            if attempt == START_ATTEMPTS:
                raise RuntimeError(f"ceph-mon could not bind a port ({START_ATTEMPTS} tries)\n{self.log_tails()}")

    def _start_osd(self, deadline: float) -> None:
        osd_uuid = str(uuid.uuid4())
        result = self._run(
            ["ceph", "--connect-timeout", "30", "osd", "new", osd_uuid],
            what="ceph osd new",
        )
        osd_id = result.stdout.strip()
        if osd_id != "0":
            raise RuntimeError(f"ceph osd new returned id {osd_id!r}, expected '0'")
        (self.root_dir / "osd" / "0").mkdir()
        self._run(
            ["ceph-osd", "-c", str(self.conf_path), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid],
            what="ceph-osd --mkfs",
        )
        self._daemon("osd", ["ceph-osd", "-i", "0"])

    def _start_rgw(self, deadline: float, *, new_port: bool) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            offset = self._size("client.rgw.log")
            self._daemon("rgw", ["radosgw", "-n", "client.rgw"])
            # When its frontend cannot bind, radosgw logs it and then exits (98) or hangs.
            if self._wait_daemon("rgw", "client.rgw.log", offset, "starting handler: beast", self.port, deadline):
                return
            self._drop_daemon("rgw")
            if not new_port or attempt == START_ATTEMPTS:
                raise RuntimeError(f"radosgw could not bind {LOOPBACK}:{self.port}\n{self.log_tails()}")
            self._rgw_port = _free_port()
            self._write_conf()
            # The failed gateway registered watches before it tried to bind; until they
            # time out, every bucket/user metadata write would stall on them.
            time.sleep(_WATCH_TIMEOUT_S + 1)

    def _create_user(self) -> None:
        self._run(
            [
                "radosgw-admin",
                "user",
                "create",
                "--uid",
                CEPH_USER,
                "--display-name",
                "drwatch tests",
                "--access-key",
                self.access_key,
                "--secret",
                self.secret_key,
            ],
            what="radosgw-admin user create",
        )

    def _wait_daemon(self, name: str, log: str, offset: int, ready_marker: str, port: int, deadline: float) -> bool:
        """Wait until ``name`` logged ``ready_marker`` and ``port`` accepts connections.

        Returns ``False`` when the daemon logged a bind failure (port taken: the caller
        retries); raises ``RuntimeError`` when it exits or the deadline passes.
        """
        while True:
            text = self._read_log(log, offset)
            if self._bind_failed(text):  # it may exit (code 98) or hang after this
                return False
            self._check_alive(name)
            if ready_marker in text and _port_open(port):
                time.sleep(0.2)  # a bind failure is logged right after radosgw's ready marker
                return not self._bind_failed(self._read_log(log, offset))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready (port {port}) in time\n{self.log_tails()}")
            time.sleep(_POLL_S)

    def _wait_s3(self, deadline: float) -> None:
        """Poll ListBuckets with the test user's keys (short timeouts, no retries)."""
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=2,
                read_timeout=5,
            ),
        )
        last_error: Exception | None = None
        while True:
            self._check_alive("S3 ListBuckets")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # botocore raises many kinds; keep the last for the message
                last_error = exc
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"radosgw did not answer ListBuckets in time; last error: {last_error!r}\n{self.log_tails()}"
                )
            time.sleep(_POLL_S * 2)

    def _drop_daemon(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            _terminate(proc, timeout=5)

    def _size(self, log: str) -> int:
        try:
            return (self.root_dir / "log" / log).stat().st_size
        except OSError:
            return 0

    def _read_log(self, log: str, offset: int) -> str:
        return _read_from(self.root_dir / "log" / log, offset)

    @staticmethod
    def _bind_failed(text: str) -> bool:
        lowered = text.lower()
        return any(marker in lowered for marker in _BIND_FAILURE_MARKERS)

    def _kill_strays(self, root: Path) -> list[int]:
        """SIGKILL any ceph-mon/ceph-osd/radosgw whose command line names our config; return survivors."""
        pattern = f"{root}/ceph.conf"
        for _ in range(3):
            found = _pgrep(pattern)
            if not found:
                return []
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        return _pgrep(pattern)


def _pgrep(pattern: str) -> list[int]:
    """PIDs of ceph-mon/ceph-osd/radosgw processes whose command line contains ``pattern``."""
    pids: list[int] = []
    for name in ("ceph-mon", "ceph-osd", "radosgw"):
        try:
            result = subprocess.run(
                ["pgrep", "-x", name, "-a"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in result.stdout.splitlines():
            pid_text, _, cmdline = line.partition(" ")
            if pattern in cmdline and pid_text.isdigit():
                pids.append(int(pid_text))
    return pids


@contextlib.contextmanager
def ceph_rgw(base_dir: Path | None = None) -> Iterator[CephRGW]:
    """Start a throwaway Ceph cluster with radosgw, yield it, and always clean it up."""
    server = CephRGW(base_dir)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
