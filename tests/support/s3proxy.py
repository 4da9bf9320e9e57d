"""A recording loopback HTTP proxy for tests: the server-side view of what a client sent.

Point a client's ``endpoint_url`` at :attr:`RecordingProxy.endpoint_url`; every request is forwarded
unchanged (same method, path, query, headers, body) to the upstream server (moto, RGW) and recorded with
its status and byte counts. Generic: it knows nothing about drwatch, and :func:`s3_operation` classifies
path-style S3 requests for assertions. ``get_delay`` slows down object GETs (one at a time) so a test can
interrupt a client in the middle of its reads; ``get_rate`` sends object GET bodies at that many bytes per second
in all (one slow link shared by every connection); ``refuse_object_heads`` (``refuse_object_gets``) answers every
object HEAD (GET) that status (recorded, not forwarded).
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                  "upgrade", "content-length"})


@dataclass(frozen=True)
class Record:
    method: str
    path: str  # unquoted, without the query
    query: str
    status: int
    request_bytes: int  # request body
    response_bytes: int  # response body as sent to the client

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").split("/", 1)[0]

    @property
    def key(self) -> str:
        parts = self.path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) > 1 else ""


def s3_operation(rec: Record) -> str:
    """A path-style S3 request as ``list`` / ``head`` / ``get`` (object) / ``bucket`` / ``put`` / ``other``."""
    query = parse_qs(rec.query, keep_blank_values=True)
    if rec.key:
        return {"HEAD": "head", "GET": "get", "PUT": "put"}.get(rec.method, "other")
    if rec.method == "GET" and query.get("list-type") == ["2"]:
        return "list"
    if rec.method in ("GET", "HEAD"):
        return "bucket"
    return "other"


class RecordingProxy:
    def __init__(self, upstream_host: str, upstream_port: int, get_delay: float = 0.0,
                 refuse_object_heads: int = 0, get_rate: float = 0.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.get_delay = get_delay
        self.get_rate = get_rate  # bytes per second of object GET bodies, all connections together (0: unlimited)
        self._link_free = 0.0  # monotonic time the shared slow link is free again
        self.refuse_object_heads = refuse_object_heads  # an HTTP status answered to every HEAD of an object (0: none)
        self.refuse_object_gets = 0  # the same for every GET of an object
        self.refuse_gets_under = ""  # a key prefix: GETs of objects under it answered 403 (after refuse_delay)
        self.refuse_delay = 0.0  # seconds a refused request is held first, one at a time (a throttled endpoint)
        self._refusing = threading.Lock()
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._slow = threading.Lock()
        self._busy = 0  # requests being forwarded (a cancelled client's queued GETs are still served)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self) -> None:
                with proxy._lock:
                    proxy._busy += 1
                try:
                    self._relay()
                finally:
                    with proxy._lock:
                        proxy._busy -= 1

            def _relay(self) -> None:
                body = self._body()
                split = urlsplit(self.path)
                rec_path = unquote(split.path)
                refuse = {"HEAD": proxy.refuse_object_heads, "GET": proxy.refuse_object_gets}.get(self.command, 0)
                key = rec_path.lstrip("/").partition("/")[2]
                if self.command == "GET" and proxy.refuse_gets_under and key.startswith(proxy.refuse_gets_under):
                    refuse = 403
                if refuse and "/" in rec_path.lstrip("/"):
                    with proxy._refusing:
                        time.sleep(proxy.refuse_delay)
                    self.send_response_only(refuse)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    with proxy._lock:
                        proxy.records.append(Record(self.command, rec_path, split.query, refuse, len(body), 0))
                    return
                if proxy.get_delay and self.command == "GET" and "/" in rec_path.lstrip("/"):
                    with proxy._slow:
                        time.sleep(proxy.get_delay)
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    if body or self.command in ("PUT", "POST"):
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    sent = 0
                    if self.command != "HEAD":
                        try:
                            sent = self._send(data, "/" in rec_path.lstrip("/") and self.command == "GET")
                        except (BrokenPipeError, ConnectionResetError):
                            self.close_connection = True  # the client went away (cancelled): nothing delivered
                    with proxy._lock:
                        proxy.records.append(Record(self.command, rec_path, split.query, resp.status, len(body),
                                                    sent))
                finally:
                    conn.close()

            def _send(self, data: bytes, paced: bool) -> int:
                """Write the body; an object GET's at ``get_rate`` (16 KiB at a time on the one shared link)."""
                if not (paced and proxy.get_rate):
                    self.wfile.write(data)
                    return len(data)
                for at in range(0, len(data), 16384):
                    chunk = data[at:at + 16384]
                    with proxy._lock:
                        end = max(time.monotonic(), proxy._link_free) + len(chunk) / proxy.get_rate
                        proxy._link_free = end
                    time.sleep(max(0.0, end - time.monotonic()))
                    self.wfile.write(chunk)
                return len(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self, bucket: str | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self.records if bucket is None or r.bucket == bucket]

    def settle(self, quiet: float = 0.5, timeout: float = 30.0) -> None:
        """Wait until no request is being forwarded and none has started for ``quiet`` seconds: after a client
        was cancelled, the requests it had sent are still served (and recorded, with what reached it)."""
        deadline = time.monotonic() + timeout
        last = (-1, -1)
        since = time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                now = (self._busy, len(self.records))
            if now != last:
                last, since = now, time.monotonic()
            elif now[0] == 0 and time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)
        raise TimeoutError("the proxy is still forwarding requests")

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def __enter__(self) -> RecordingProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
