"""The HTTP endpoints survive slow and stalled clients: a request-header deadline, an idle keep-alive timeout,
a cap on open connections that sheds stalled connections first, and no log flood when file descriptors run
out. Everything is real: loopback sockets against an in-process server with short timeouts, a TLS server
with a scratch CA, a subprocess under a tiny RLIMIT_NOFILE, and a real `drwatch run` under ``ulimit -n 1024``
flooded with 1,100 half-sent requests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import structlog
import yaml

from drwatch.config.model import load_config
from drwatch.config.web import for_config
from drwatch.engine.runner import AppState
from drwatch.http.conn import HEADER_TIMEOUT, MAX_CONNECTIONS
from drwatch.http.server import HttpServer
from drwatch.metrics.collector import ProcessState
from drwatch.state.snapshot import Snapshot
from tests.support.helpers import DaemonProcess, basic_config, drwatch_cmd, free_port, populate, write_config
from tests.test_web_security import ScratchCA

HALF = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"  # the header never ends


def _config(tmp: Path, **http: Any) -> Path:
    populate(tmp)
    cfg = basic_config(tmp)
    cfg["http"].update(http)
    return write_config(tmp / "drwatch.yaml", cfg)


@contextlib.asynccontextmanager
async def serving(config: Path, reload_gate: asyncio.Event | None = None, **limits: Any) -> AsyncIterator[HttpServer]:
    """An in-process HttpServer on 127.0.0.1:0; POST /-/reload waits for ``reload_gate`` (a busy handler)."""
    cfg = load_config(config)

    async def reload() -> tuple[bool, list[str]]:
        if reload_gate is not None:
            await reload_gate.wait()
        return True, []

    server = HttpServer(AppState(cfg, Snapshot(cfg), ProcessState(time.time()), ready=True), reload,
                        web_config=for_config(cfg), **limits)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


class Client:
    """One raw HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, **kw: Any) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port, **kw))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, path: str = "/metrics", method: str = "GET") -> int:
        await self.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        assert length is not None, head
        await asyncio.wait_for(self.reader.readexactly(int(length.group(1))), 10)
        return int(head.split()[1])

    async def closed_within(self, seconds: float) -> bool:
        """True when the server closes the connection (EOF or reset) within ``seconds``."""
        try:
            return await asyncio.wait_for(self.reader.read(1), seconds) == b""
        except TimeoutError:
            return False
        except (ConnectionResetError, OSError):
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    try:
        yield opened
    finally:
        for client in opened:
            await client.close()


async def wait_for(predicate: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


# --- deadlines -----------------------------------------------------------------------------------------

async def test_a_half_sent_or_silent_request_is_cut_at_the_header_deadline(tmp_path: Path) -> None:
    """A connection that never completes its request header (half a header, or nothing) is closed once the
    header deadline passes, counted as a request timeout; before it, it is left alone."""
    async with serving(_config(tmp_path), header_timeout=0.6, idle_timeout=30) as server, clients() as open_:
        half, silent = await Client.open(server.port), await Client.open(server.port)
        open_.extend([half, silent])
        await half.send(HALF)
        started = time.monotonic()
        assert not await half.closed_within(0.3)
        assert await half.closed_within(2.0) and await silent.closed_within(1.0)
        assert 0.5 <= time.monotonic() - started <= 2.0
        assert server.connections is not None
        stats = server.connections.stats()
        assert stats["request_timeouts"] == 2 and stats["open"] == 0


async def test_keep_alive_gets_the_idle_timeout_and_a_next_request_the_header_deadline(tmp_path: Path) -> None:
    """After a response the connection may idle for the idle timeout (longer than the header deadline) and
    serve another request; a next request left half-sent is cut at the header deadline; an idle connection
    is closed at the idle timeout."""
    async with serving(_config(tmp_path), header_timeout=0.4, idle_timeout=1.5) as server, clients() as open_:
        keep = await Client.open(server.port)
        open_.append(keep)
        assert await keep.request("/-/healthy") == 200
        await asyncio.sleep(0.8)  # past the header deadline, within the idle timeout
        assert await keep.request("/metrics") == 200
        await keep.send(HALF)  # the next request stalls
        assert await keep.closed_within(1.0)

        idle = await Client.open(server.port)
        open_.append(idle)
        assert await idle.request("/api/v1/status") == 200
        assert not await idle.closed_within(1.0)
        assert await idle.closed_within(1.5)


# --- the connection cap ----------------------------------------------------------------------------------

async def test_over_the_cap_stalled_then_silent_then_idle_connections_go_never_a_busy_one(tmp_path: Path) -> None:
    """At the cap a new connection pushes out the oldest one that sent half a header, then the oldest one that
    sent nothing yet, then the oldest idle keep-alive one; a connection inside a handler is never cut. One
    log line summarises the shedding (the rest is summarised later, here when the server stops)."""
    gate = asyncio.Event()
    with structlog.testing.capture_logs() as logged:
        async with serving(_config(tmp_path), gate, header_timeout=30, idle_timeout=30, max_connections=5) as server, \
                clients() as open_:
            guard = server.connections
            assert guard is not None
            busy, idle, silent, stalled1, stalled2 = [await Client.open(server.port) for _ in range(5)]
            open_.extend([busy, idle, silent, stalled1, stalled2])
            reload = asyncio.create_task(busy.request("/-/reload", "POST"))
            assert await idle.request("/-/healthy") == 200
            await stalled1.send(HALF)
            await stalled2.send(HALF)
            await wait_for(lambda: guard.stats() | {"partial": 2, "busy": 1, "idle": 1, "awaiting": 1} == guard.stats())

            scrape = await Client.open(server.port)  # 6th: the oldest stalled one goes, not the older silent one
            open_.append(scrape)
            assert await stalled1.closed_within(2.0)
            assert await scrape.request("/metrics") == 200
            assert not await stalled2.closed_within(0.2) and not await silent.closed_within(0.01)

            second = await Client.open(server.port)  # the other stalled one
            open_.append(second)
            assert await stalled2.closed_within(2.0)
            assert await second.request("/metrics") == 200

            third = await Client.open(server.port)  # nothing stalled left: the silent one
            open_.append(third)
            assert await silent.closed_within(2.0)
            assert await third.request("/api/v1/status") == 200

            fourth = await Client.open(server.port)  # then the oldest idle one
            open_.append(fourth)
            assert await idle.closed_within(2.0)
            assert await fourth.request("/-/ready") == 200
            assert not await scrape.closed_within(0.2) and not reload.done()

            gate.set()
            assert await reload == 200
            assert guard.stats()["evicted"] == 4 and guard.stats()["open"] == 5
    shed = [e for e in logged if e["event"] == "http_connections_shed"]
    assert shed[0]["evicted"] == 1 and shed[0]["log_level"] == "warning"
    assert len(shed) == 2 and shed[1]["evicted"] == 3


async def test_when_every_connection_is_busy_a_new_one_is_closed_at_once(tmp_path: Path) -> None:
    """With every connection inside a handler, a connection over the cap is closed immediately; the busy
    ones finish their requests."""
    gate = asyncio.Event()
    async with serving(_config(tmp_path), gate, header_timeout=30, idle_timeout=30, max_connections=3) as server, \
            clients() as open_:
        guard = server.connections
        assert guard is not None
        busy = [await Client.open(server.port) for _ in range(3)]
        open_.extend(busy)
        reloads = [asyncio.create_task(c.request("/-/reload", "POST")) for c in busy]
        await wait_for(lambda: guard.stats()["busy"] == 3)
        extra = await Client.open(server.port)
        open_.append(extra)
        assert await extra.closed_within(1.0)
        gate.set()
        assert await asyncio.gather(*reloads) == [200, 200, 200]
        assert guard.stats()["rejected"] == 1


async def test_requests_waiting_for_basic_auth_can_be_pushed_out(tmp_path: Path) -> None:
    """Requests queued for their bcrypt check (wrong passwords, one check at a time) do not hold the cap like
    running handlers: a new connection pushes out the oldest of them; a 401 leaves the connection idle."""
    (tmp_path / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {
        "prometheus": bcrypt.hashpw(b"right", bcrypt.gensalt(13)).decode()}}))
    config = _config(tmp_path, web_config_file="web.yml")
    wrong = base64.b64encode(b"prometheus:wrong").decode()
    request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {wrong}\r\n\r\n".encode()
    async with serving(config, header_timeout=30, idle_timeout=30, max_connections=3) as server, \
            clients() as open_:
        guard = server.connections
        assert guard is not None
        waiting = [await Client.open(server.port) for _ in range(3)]
        open_.extend(waiting)
        for client in waiting:
            await client.send(request)
        await wait_for(lambda: guard.stats()["ready"] == 3)
        newcomer = await Client.open(server.port)
        open_.append(newcomer)
        assert await waiting[0].closed_within(1.0)
        assert guard.stats()["evicted"] == 1 and guard.stats()["busy"] == 0
        head = await asyncio.wait_for(waiting[1].reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 401")
        await wait_for(lambda: guard.stats()["idle"] >= 1, 20)


async def test_tls_handshake_and_header_share_the_deadline(tmp_path: Path) -> None:
    """Over TLS a connection that never says hello, and one that completes the handshake but not its header,
    are both closed at the header deadline; a whole request is served."""
    pki = tmp_path / "pki"
    ca = ScratchCA(pki, "hardening")
    pair = ca.server()
    (pki / "web.yml").write_text(yaml.safe_dump({"tls_server_config": {"cert_file": pair.cert.name,
                                                                        "key_file": pair.key.name}}))
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    config = _config(tmp_path, web_config_file="pki/web.yml")
    async with serving(config, header_timeout=0.6, idle_timeout=30) as server, clients() as open_:
        silent = await Client.open(server.port)
        hello = await Client.open(server.port, ssl=ctx)
        ok = await Client.open(server.port, ssl=ctx)
        open_.extend([silent, hello, ok])
        await hello.send(HALF)
        assert await ok.request("/-/healthy") == 200
        assert await silent.closed_within(2.0) and await hello.closed_within(2.0)
        assert server.connections is not None and server.connections.stats()["request_timeouts"] == 2


# --- out of file descriptors --------------------------------------------------------------------------------

_SERVER = """
import asyncio, sys, time
from drwatch.core import logs
from drwatch.config.model import load_config
from drwatch.http.server import HttpServer
from drwatch.metrics.collector import ProcessState
from drwatch.engine.runner import AppState
from drwatch.state.snapshot import Snapshot

async def main():
    cfg = load_config(sys.argv[1])
    logs.configure("info", "json")
    async def reload():
        return True, []
    server = HttpServer(AppState(cfg, Snapshot(cfg), ProcessState(time.time()), ready=True), reload,
                        header_timeout=30, max_connections=10_000)  # a cap far above the descriptor limit
    await server.start("127.0.0.1", 0)
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()

asyncio.run(main())
"""


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _still_open(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets the server has not closed (a closed one polls readable: EOF or reset)."""
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    ready = {fd for fd, _ in poller.poll(0)}
    return [s for s in socks if s.fileno() not in ready]


@contextlib.contextmanager
def _nofile(at_least: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= at_least:
        yield
        return
    assert hard == resource.RLIM_INFINITY or hard >= at_least, f"needs {at_least} file descriptors (hard limit {hard})"
    resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def _half_sent(port: int, n: int, payload: bytes = HALF) -> Iterator[list[socket.socket]]:
    """``n`` connections that send ``payload`` (half a header, or nothing) and stall."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
            with contextlib.suppress(OSError):  # already shed: fine
                s.sendall(payload)
        yield socks
    finally:
        for s in socks:
            s.close()


def test_running_out_of_descriptors_sheds_connections_without_a_log_flood(tmp_path: Path) -> None:
    """A server whose cap is far above its RLIMIT_NOFILE (64) is flooded with 300 stalled connections:
    accept()'s EMFILE frees a stalled connection instead of making asyncio log a traceback per attempt, and
    requests are still answered."""
    script = tmp_path / "server.py"
    script.write_text(_SERVER)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log, _nofile(600), subprocess.Popen(
            ["prlimit", "--nofile=64:64", sys.executable, str(script), str(_config(tmp_path))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log) as proc:
        try:
            assert proc.stdout is not None and proc.stdin is not None
            port = int(proc.stdout.readline())
            with _half_sent(port, 300):
                status, body = _get(port, "/api/v1/status")
                assert status == 200
                assert _get(port, "/metrics")[0] == 200
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    stats = json.loads(body)["runtime"]["http_connections"]
    assert stats["out_of_descriptors"] > 0 and stats["evicted"] > 0 and stats["open"] < 64
    text = log_path.read_text()
    assert "out of system resource" not in text and "Traceback" not in text
    assert len(text.splitlines()) <= 3, text[-3000:]  # one summary at once, one at stop


# --- a real daemon, the tester's scenario ---------------------------------------------------------------------

class LimitedDaemon(DaemonProcess):
    """`drwatch run` under ``prlimit --nofile=N`` (``ulimit -n N`` for that process only)."""

    def __init__(self, config: Path, port: int, nofile: int) -> None:
        super().__init__(config, port)
        self.nofile = nofile

    def start(self, wait_ready: bool = True, timeout: float = 30) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(["prlimit", f"--nofile={self.nofile}:{self.nofile}",
                                      *drwatch_cmd("run", "--config", str(self.config))],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        if wait_ready:
            self.wait_ready(timeout)


@pytest.mark.slow
@pytest.mark.parametrize("payload", [HALF, b""], ids=["half-sent", "silent"])
def test_slowloris_against_a_real_daemon_under_ulimit_1024(tmp_path: Path, payload: bytes) -> None:
    """1,100 connections that send half a request header (or nothing), against `drwatch run` with 1,024
    descriptors: /metrics keeps answering promptly throughout, at most the cap (256 = 1024/4) stay open, every
    stalled one is closed after the header deadline, and the log says so in a line or two."""
    port = free_port()
    populate(tmp_path)
    cfg = basic_config(tmp_path, http_port=port, every="1s")
    config = write_config(tmp_path / "drwatch.yaml", cfg)
    daemon = LimitedDaemon(config, port, nofile=1024)
    daemon.start()
    cap = min(MAX_CONNECTIONS, 1024 // 4)
    latencies: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, _ = _get(port, "/metrics", timeout=5)
                if status != 200:
                    failures.append(str(status))
            except OSError as exc:
                failures.append(repr(exc))
            latencies.append(time.monotonic() - started)
            stop.wait(0.1)

    scraper = threading.Thread(target=scrape)
    try:
        log_before = daemon.log_path.stat().st_size
        with _nofile(1400):
            scraper.start()
            flood_started = time.monotonic()
            with _half_sent(port, 1100, payload) as socks:
                flood_s = time.monotonic() - flood_started
                time.sleep(0.5)
                open_after_flood = len(_still_open(socks))
                runtime = json.loads(daemon.get("/api/v1/status")[1])["runtime"]["http_connections"]
                deadline = time.monotonic() + HEADER_TIMEOUT + 5
                while _still_open(socks) and time.monotonic() < deadline:
                    time.sleep(0.2)
                all_closed_s = time.monotonic() - flood_started
                left = len(_still_open(socks))
            stop.set()
            scraper.join(timeout=10)
        final = json.loads(daemon.get("/api/v1/status")[1])["runtime"]["http_connections"]
        assert daemon.proc is not None and daemon.proc.poll() is None
        with _half_sent(port, 50, payload):  # stalled connections do not hold up a graceful stop
            stop_started = time.monotonic()
            assert daemon.stop() == 0
            stop_s = time.monotonic() - stop_started
    finally:
        stop.set()
        daemon.stop()
    log = daemon.log_path.read_bytes()[log_before:].decode(errors="replace")
    print(f"\nflood of 1100 in {flood_s:.2f}s; open right after: {open_after_flood} (server: {runtime}); "
          f"all closed after {all_closed_s:.1f}s (left {left}); /metrics: {len(latencies)} scrapes, "
          f"max {max(latencies):.3f}s, failures {failures}; log {len(log)} bytes; final {final}; stop {stop_s:.2f}s")
    assert not failures and max(latencies) < 2.0 and stop_s < 10
    assert runtime["max"] == cap and runtime["open"] <= cap and open_after_flood <= cap + 5
    assert left == 0 and all_closed_s < HEADER_TIMEOUT + flood_s + 5
    assert final["request_timeouts"] > 0 and final["evicted"] >= 1100 - cap - 5
    assert "out_of_descriptors" not in final  # ACCEPT_BURST keeps shed connections from piling up
    assert "Traceback" not in log and "out of system resource" not in log
    shed_lines = [line for line in log.splitlines() if "http_connections_shed" in line]
    assert 1 <= len(shed_lines) <= 3 and len(log) < 20_000, log[-3000:]
