"""A fault-injecting loopback TCP proxy written for the tests (no `tc netem` on these machines).

It forwards 127.0.0.1:<port> to an upstream server (moto, PostgreSQL, ...) and injects, per connection, the
current fault: added latency, a stall (the request reaches the server, the answer never comes back), a
connection reset, or — for HTTP upstreams — an S3 ``503 SlowDown`` answered by the proxy itself. The fault can
be changed while clients are connected; it applies to connections opened after the change.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Fault(enum.StrEnum):
    NONE = "none"
    LATENCY = "latency"  # every chunk from the server is delayed by `latency` seconds
    STALL = "stall"  # the request is forwarded, the response is never sent back (connection stays open)
    RESET = "reset"  # the connection is reset (RST) as soon as the client sends anything
    SLOWDOWN = "slowdown"  # HTTP: answer every request with 503 SlowDown (S3 throttling), never forward


_SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message><RequestId>faultproxy</RequestId></Error>")


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.fault = Fault.NONE
        self.latency = 2.0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # --- lifecycle (called from the test thread) ---

    def start(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = fut.result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def set(self, fault: Fault, latency: float | None = None) -> None:
        self.fault = fault
        if latency is not None:
            self.latency = latency

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- the proxy (runs on its own loop) ---

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        fault = self.fault
        try:
            if fault == Fault.RESET:
                await reader.read(1)
                _reset(writer)
                return
            if fault == Fault.SLOWDOWN:
                await _answer_slowdown(reader, writer)
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            try:
                await asyncio.gather(
                    _pump(reader, up_writer, 0.0, drop=False),
                    _pump(up_reader, writer, self.latency if fault == Fault.LATENCY else 0.0,
                          drop=fault == Fault.STALL),
                )
            finally:
                up_writer.close()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is stopping: this connection task ends here (nothing awaits it)
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float, *, drop: bool) -> None:
    while data := await src.read(65536):
        if drop:
            continue  # stalled: the client waits for an answer that never comes
        if delay:
            await asyncio.sleep(delay)
        dst.write(data)
        await dst.drain()
    if not drop:
        dst.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _answer_slowdown(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read HTTP/1.1 requests (head + Content-Length body) and answer each with 503 SlowDown."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        if length:
            await reader.readexactly(length)
        writer.write(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nRetry-After: 1\r\n"
                     + f"Content-Length: {len(_SLOWDOWN_BODY)}\r\n\r\n".encode() + _SLOWDOWN_BODY)
        await writer.drain()


@contextmanager
def fault_proxy(upstream_host: str, upstream_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_host, upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
