"""HTTP hygiene: malformed requests are answered 400 and summarised in one info line a minute (no traceback,
no journal flood), only the documented methods are accepted (405 with ``Allow`` for the others), and the
``Server`` header names no version. Everything is real: raw sockets and http.client against a real
``drwatch run`` and against the real server object on a free loopback port.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from drwatch.http.server import SERVER_NAME
from tests.support.helpers import DaemonProcess, basic_config, free_port, populate, read_json_lines, write_config
from tests.test_http_hardening import Client, _config, serving

# Each is refused by aiohttp's parser: a request line that is garbage (or TLS on the plain port), a bad HTTP
# version, an invalid header name, a control character in a header value, broken chunked encoding, chunked
# and Content-Length together, a header line over 8 KiB, too many headers, a request line over 8 KiB.
MALFORMED: dict[str, bytes] = {
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    "no-target": b"GET\r\n\r\n",
    "bad-version": b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
    "bad-header-name": b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "control-in-header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "bad-chunk": b"POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunked-and-length": (b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "oversized-header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "too-many-headers": (b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"),
    "oversized-line": b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}
GET_PATHS = ["/", "/metrics", "/api/v1/status", "/-/healthy", "/-/ready"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]


def _exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _head(response: bytes) -> tuple[int, dict[str, str]]:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), headers


def test_malformed_requests_are_answered_and_summarised_without_a_traceback(tmp_path: Path) -> None:
    """20 rounds of 10 kinds of malformed request against `drwatch run`: each is answered 400 (one line of
    reason, `Server: drwatch`) and its connection closed; the daemon logs no traceback and no error, only
    `http_bad_requests` info lines (one at once, the rest summed at the next minute or at stop) whose counts
    add up to the 200 requests; /api/v1/status counts them; a scrape in between is answered."""
    port = free_port()
    populate(tmp_path)
    config = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, http_port=port))
    daemon = DaemonProcess(config, port)
    daemon.start()
    rounds = 20
    try:
        log_before = daemon.log_path.stat().st_size
        for _ in range(rounds):
            for name, payload in MALFORMED.items():
                response = _exchange(port, payload)
                status, headers = _head(response)
                assert status == 400, (name, response[:300])
                assert headers["server"] == SERVER_NAME, (name, headers)  # and _exchange saw it closed
                body = response.partition(b"\r\n\r\n")[2]
                assert body.startswith(b"400 Bad Request") and body.count(b"\n") == 1 and len(body) < 300, body
        assert daemon.get("/metrics")[0] == 200
        runtime = json.loads(daemon.get("/api/v1/status")[1])["runtime"]["http_connections"]
        assert runtime["bad_requests"] == rounds * len(MALFORMED)
    finally:
        assert daemon.stop() == 0
    log = daemon.log_path.read_bytes()[log_before:].decode()
    assert "Traceback" not in log and "aiohttp" not in log, log[-3000:]
    events = read_json_lines(log)
    assert not [e for e in events if e.get("level") in ("error", "critical")], log[-3000:]
    summaries = [e for e in events if e.get("event") == "http_bad_requests"]
    assert 1 <= len(summaries) <= 3, log[-3000:]  # at once, maybe at the minute, at stop
    assert all(e["level"] == "info" for e in summaries)
    assert sum(e["count"] for e in summaries) == rounds * len(MALFORMED)
    assert sum(sum(e["kinds"].values()) for e in summaries) == rounds * len(MALFORMED)
    assert b"aaaa" not in log.encode() and "Bad Header" not in log  # the client's bytes stay out of the log


async def test_a_chunked_body_that_breaks_after_the_header_is_cut_silently(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A request whose header is fine and whose chunked body breaks after it has been handled: the response is
    sent, the connection closed by the header deadline, and aiohttp logs nothing (no traceback)."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with serving(_config(tmp_path), header_timeout=0.6, idle_timeout=30) as server:
        client = await Client.open(server.port)
        try:
            await client.send(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200") and b"\r\nServer: drwatch\r\n" in head
            await client.send(b"zz\r\nabc\r\n0\r\n\r\n")
            started = time.monotonic()
            await asyncio.wait_for(client.reader.read(), 5)  # the rest of the response, then EOF
            assert time.monotonic() - started < 3
        finally:
            await client.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text


async def test_only_documented_methods_are_accepted(tmp_path: Path) -> None:
    """GET (and HEAD) on /, /metrics, /api/v1/status, /-/healthy and /-/ready; POST on /-/reload (PUT is no
    longer accepted); every other pair is 405 with the allowed methods in `Allow`. Every response says
    `Server: drwatch`, nothing about aiohttp or Python."""
    async with serving(_config(tmp_path)) as server:
        def request(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                conn.request(method, path, body=b"" if method in ("POST", "PUT", "PATCH") else None)
                resp = conn.getresponse()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            finally:
                conn.close()

        seen: dict[tuple[str, str], Any] = {}
        for path in [*GET_PATHS, "/-/reload"]:
            for method in METHODS:
                status, headers, body = await asyncio.to_thread(request, method, path)
                seen[method, path] = status
                assert headers["server"] == SERVER_NAME, (method, path, headers)
                allowed = ({"POST"} if path == "/-/reload" else {"GET", "HEAD"})
                if method in allowed:
                    assert status == 200, (method, path, status, body)
                    assert path != "/-/reload" or body == b"configuration reloaded\n"
                    assert (body == b"") == (method == "HEAD"), (method, path)
                else:
                    assert status == 405, (method, path, status)
                    assert set(headers["allow"].split(",")) == allowed, (method, path, headers)
        status, headers, _ = await asyncio.to_thread(request, "GET", "/no-such-path")
        assert status == 404 and headers["server"] == SERVER_NAME
    assert len(seen) == 6 * len(METHODS)


def test_server_header_of_a_real_daemon_names_no_version(tmp_path: Path) -> None:
    """`drwatch run` answers with exactly `Server: drwatch` on success, on 405 (PUT /-/reload) and on 400."""
    port = free_port()
    populate(tmp_path)
    daemon = DaemonProcess(write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, http_port=port)), port)
    daemon.start()
    try:
        for payload, expected in [(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200),
                                  (b"PUT /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                   b"Connection: close\r\n\r\n", 405),
                                  (MALFORMED["bad-header-name"], 400)]:
            status, headers = _head(_exchange(port, payload))
            assert (status, headers["server"]) == (expected, "drwatch"), (payload[:40], headers)
            if expected == 405:
                assert headers["allow"] == "POST"
    finally:
        assert daemon.stop() == 0
