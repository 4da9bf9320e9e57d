"""Connection hygiene for the HTTP endpoints: a deadline for each request, an idle timeout, a connection cap.

aiohttp parses requests but does not bound how long a client may take to send one, so a client that sends
half a request header and stops (slowloris) holds a socket, and a file descriptor, for as long as it likes.
Every accepted connection is wrapped in a :class:`Connection` that hands the bytes on to aiohttp and keeps
one timer:

- from accept, or from the first byte after an idle period, until the request's handler starts:
  ``header_timeout`` (10 s, Go's ``ReadHeaderTimeout`` as exporters commonly set it). With TLS the
  handshake runs inside the same deadline.
- from the end of a handler until the next request starts: ``idle_timeout`` (60 s, keep-alive). It also
  bounds a client that stops reading a response.

At most ``max_connections`` connections are open (512, Prometheus' ``--web.max-connections`` default, and
never more than a quarter of the soft ``RLIMIT_NOFILE``). A connection beyond the cap pushes out an older one
that is not inside a handler: the oldest that sent part of a request header and stalled, else the oldest that
sent nothing yet, else the oldest whose request waits for its basic-auth check, else the oldest idle
keep-alive one. A scrape sends its whole header at once, so it is never in the first group, and it is the
newest of the others: it gets through a flood of stalled connections. When every connection is inside a
handler, the new one is closed at once. Nothing is logged per connection: timeouts and shed connections are counted and
summarised at most once a minute (``http_connections_shed``). So are malformed requests (a garbage request line,
an invalid header, broken chunked encoding, an oversized header): aiohttp answers them 400 and drwatch counts them
by kind in one ``http_bad_requests`` info line a minute at most, without a traceback or the client's bytes.

A connection pushed out releases its descriptor on the next turn of the event loop, so
:class:`drwatch.http.listen.ListenSocket`
accepts at most ``ACCEPT_BURST`` connections per turn. Should the process still run out of file descriptors
at ``accept()`` (EMFILE/ENFILE), it frees one as above, or accepts the pending connection on a reserved
descriptor and closes it, instead of letting asyncio log a traceback for each attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import os
import resource
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import NoReturn

import structlog

from drwatch.http.summary import SUMMARY_INTERVAL, Summary

HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
MAX_CONNECTIONS = 512
ACCEPT_BURST = 64  # accept()s per event-loop turn: bounds descriptors held by connections being shed

log = structlog.get_logger("drwatch.http")


def connection_cap(requested: int = MAX_CONNECTIONS) -> int:
    """``requested``, but at most a quarter of the soft file-descriptor limit (validators need the rest)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(8, min(requested, soft // 4))


class Phase(enum.Enum):
    AWAITING = "awaiting"  # accepted, nothing received yet
    PARTIAL = "partial"  # part of a request header received
    READY = "ready"  # a complete header received; its handler has not started (rate limit, authentication)
    BUSY = "busy"  # a handler is running
    IDLE = "idle"  # keep-alive between requests


# READY covers a request waiting for its rate limit / basic-auth check (bcrypt, one at a time): a scrape with
# cached credentials passes at once, a flood of wrong passwords must not fill the cap.
EVICTION_ORDER = (Phase.PARTIAL, Phase.AWAITING, Phase.READY, Phase.IDLE)
_END_OF_HEADER = b"\r\n\r\n"


class Connection(asyncio.Protocol):
    """One accepted connection: counted against the cap, timed, its bytes handed to aiohttp's protocol."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self.transport: asyncio.Transport | None = None  # the TCP transport (under TLS, if any)
        self.app_transport: asyncio.Transport | None = None  # what aiohttp writes to
        self.phase = Phase.AWAITING
        self.closed = False
        self._inner: asyncio.Protocol | None = None
        self._early: list[bytes] = []  # bytes decrypted before aiohttp's protocol is attached (TLS)
        self._timer: asyncio.TimerHandle | None = None
        self._bytes_while_busy = False
        self._tail = b""  # the last bytes of a partial header, to find its end across reads

    # --- asyncio.Protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self._guard.admit(self):
            self.closed = True
            transport.abort()
            return
        self._arm(self._guard.header_timeout)
        if self._guard.ssl_context is None:
            self._attach(transport)
        else:
            transport.pause_reading()  # the TLS layer takes the bytes from here on
            self._guard.start_tls(self)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            self._early.append(data)
            return
        if self.phase is Phase.IDLE:
            self._arm(self._guard.header_timeout)
            self._header_bytes(data)
        elif self.phase in (Phase.AWAITING, Phase.PARTIAL):
            self._header_bytes(data)
        elif self.phase is Phase.BUSY:
            self._bytes_while_busy = True
        self._inner.data_received(data)

    def _header_bytes(self, data: bytes) -> None:
        """Part of a header (PARTIAL), or its end (READY: pushed out only after stalled and silent connections;
        the deadline stays armed until the handler starts, in case aiohttp refuses the request)."""
        seen = self._tail + data
        if _END_OF_HEADER in seen:
            self._tail = b""
            self._guard.move(self, Phase.READY)
        else:
            self._tail = seen[-3:]
            self._guard.move(self, Phase.PARTIAL)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self._guard.release(self)
        self._guard.live.discard(self)
        if self._inner is not None:
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    # --- driven by the guard and the request middleware --------------------------------------------------
    def attach_tls(self, app_transport: asyncio.Transport) -> None:
        self._attach(app_transport)
        early, self._early = self._early, []
        for chunk in early:
            self.data_received(chunk)

    def request_started(self) -> None:
        self._cancel_timer()
        self._bytes_while_busy = False
        self._guard.move(self, Phase.BUSY)

    def request_finished(self) -> None:
        if self.closed:
            return
        if self._bytes_while_busy:  # (part of) the next request arrived meanwhile: it gets a header deadline
            self._tail = b""
            self._guard.move(self, Phase.PARTIAL)
            self._arm(self._guard.header_timeout)
        else:
            self._guard.move(self, Phase.IDLE)
            self._arm(self._guard.idle_timeout)

    def abort(self) -> None:
        """Drop the connection at once (RST, nothing more is read or written)."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        self._guard.release(self)
        if self.transport is not None:
            self.transport.abort()

    def _attach(self, transport: asyncio.Transport) -> None:
        self.app_transport = transport
        self._inner = self._guard.attach(self, transport)
        self._inner.connection_made(transport)

    def _arm(self, timeout: float) -> None:
        self._cancel_timer()
        self._timer = self._guard.loop.call_later(timeout, self._expire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.closed or self.phase is Phase.BUSY:
            return
        if self.phase is not Phase.IDLE:
            self._guard.count("request_timeouts")
        self.abort()


class ConnectionGuard:
    """The protocol factory for the listening sockets: admits, times and sheds :class:`Connection` objects.

    ``factory`` makes the aiohttp protocol each admitted connection hands its bytes to.
    """

    def __init__(self, factory: Callable[[], asyncio.Protocol], *, ssl_context: ssl.SSLContext | None = None,
                 header_timeout: float = HEADER_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._factory = factory
        self.ssl_context = ssl_context
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = connection_cap() if max_connections is None else max_connections
        self._phases: dict[Phase, dict[Connection, None]] = {phase: {} for phase in Phase}  # oldest first
        self._by_transport: dict[asyncio.BaseTransport, Connection] = {}
        self._tls_tasks: set[asyncio.Task[None]] = set()
        self.totals: Counter[str] = Counter()
        self._shed = Summary(self.loop, self._log_shed)
        self._bad = Summary(self.loop, self._log_bad_requests)
        self._fd_quiet_until = 0.0
        self._spare: int | None = self._reserve()
        self._accepted = 0  # accept()s in this turn of the event loop
        self.closed = False  # shutting down: a connection accepted before, but made after, is dropped at once
        self.live: set[Connection] = set()  # every connection made whose socket is not closed yet

    def __call__(self) -> Connection:
        conn = Connection(self)
        self.live.add(conn)  # until its transport reports connection_lost (its socket is closed then)
        return conn

    @property
    def open(self) -> int:
        return sum(len(conns) for conns in self._phases.values())

    def stats(self) -> dict[str, int]:
        """Open connections by phase, the cap, and totals of what was cut short (``request_timeouts``,
        ``evicted``, ``rejected``, ``out_of_descriptors``)."""
        return {"open": self.open, "max": self.max_connections,
                **{phase.value: len(conns) for phase, conns in self._phases.items()},
                **{k: self.totals[k] for k in sorted(self.totals)}}

    def admit(self, conn: Connection) -> bool:
        if self.closed:
            return False
        if self.open >= self.max_connections and not self._evict("evicted"):
            self.count("rejected")
            return False
        self._phases[Phase.AWAITING][conn] = None
        return True

    def attach(self, conn: Connection, transport: asyncio.Transport) -> asyncio.Protocol:
        self._by_transport[transport] = conn
        return self._factory()

    def move(self, conn: Connection, phase: Phase) -> None:
        if conn.closed:
            return
        self._phases[conn.phase].pop(conn, None)
        conn.phase = phase
        self._phases[phase][conn] = None

    def release(self, conn: Connection) -> None:
        self._phases[conn.phase].pop(conn, None)
        if conn.app_transport is not None:
            self._by_transport.pop(conn.app_transport, None)

    def connection(self, transport: asyncio.BaseTransport | None) -> Connection | None:
        """The connection a request came in on (``request.transport``)."""
        return self._by_transport.get(transport) if transport is not None else None

    def _evict(self, reason: str) -> bool:
        """Drop the oldest connection without a request in progress; False when every one is busy."""
        for phase in EVICTION_ORDER:
            victim = next(iter(self._phases[phase]), None)
            if victim is not None:
                victim.abort()
                self.count(reason)
                return True
        return False

    # --- TLS ---------------------------------------------------------------------------------------------
    def start_tls(self, conn: Connection) -> None:
        task = self.loop.create_task(self._handshake(conn))
        self._tls_tasks.add(task)
        task.add_done_callback(self._tls_tasks.discard)

    async def _handshake(self, conn: Connection) -> None:
        assert self.ssl_context is not None and conn.transport is not None
        if conn.closed:
            return
        try:
            app = await self.loop.start_tls(conn.transport, conn, self.ssl_context, server_side=True,
                                            ssl_handshake_timeout=self.header_timeout)
        except OSError:  # a failed or abandoned handshake (ssl.SSLError, reset, timeout): nothing to tell
            conn.abort()
            return
        if conn.closed or app is None:
            return
        assert isinstance(app, asyncio.Transport)
        conn.attach_tls(app)

    # --- accepting ----------------------------------------------------------------------------------------
    def may_accept(self) -> bool:
        """At most ACCEPT_BURST accept()s per turn of the event loop (the turn's evictions then close); none
        once shutting down."""
        if self.closed or self._accepted >= ACCEPT_BURST:
            return False
        if not self._accepted:
            self.loop.call_soon(self._new_turn)
        self._accepted += 1
        return True

    def _new_turn(self) -> None:
        self._accepted = 0

    @staticmethod
    def _reserve() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def out_of_descriptors(self, sock: socket.socket, exc: OSError) -> NoReturn:
        """``accept()`` failed with EMFILE/ENFILE. Raises BlockingIOError (asyncio then tries again on the
        next readiness) after freeing a descriptor, or ``exc`` at most once a second (asyncio then logs it
        and pauses accepting for a second) when nothing can be freed."""
        self.count("out_of_descriptors")
        if self._evict("evicted"):  # its descriptor is closed before the listening socket is polled again
            raise BlockingIOError(errno.EAGAIN, "retry after freeing a connection")
        if self._spare is not None:  # shed the pending connection itself: accept it on the reserve, close it
            os.close(self._spare)
            self._spare = None
            with contextlib.suppress(OSError):
                socket.socket.accept(sock)[0].close()
            self._spare = self._reserve()
            raise BlockingIOError(errno.EAGAIN, "shed a connection")
        now = self.loop.time()
        if now < self._fd_quiet_until:
            raise BlockingIOError(errno.EAGAIN, "out of file descriptors")
        self._fd_quiet_until = now + 1.0
        raise exc

    # --- summaries ---------------------------------------------------------------------------------------
    def count(self, reason: str) -> None:
        self.totals[reason] += 1
        self._shed.count(reason)

    def bad_request(self, kind: str) -> None:
        """aiohttp refused a request as malformed (``kind``: the parser's exception class, e.g. ``LineTooLong``)."""
        self.totals["bad_requests"] += 1
        self._bad.count(kind)

    def _log_shed(self, counts: dict[str, int]) -> None:
        log.warning("http_connections_shed", **counts, open=self.open, max_connections=self.max_connections,
                    header_timeout=self.header_timeout, interval=SUMMARY_INTERVAL)

    @staticmethod
    def _log_bad_requests(counts: dict[str, int]) -> None:
        log.info("http_bad_requests", count=sum(counts.values()), kinds=counts, interval=SUMMARY_INTERVAL)

    def drop_unused(self) -> None:
        """At shutdown, before aiohttp's: drop the connections without a request under way (nothing sent yet, half
        a header, idle keep-alive). aiohttp closes those too, but one whose request loop has not started yet when
        it does is then waited for until its header deadline; requests being handled still finish. Connections
        accepted but not yet made are dropped as they are made."""
        self.closed = True
        for phase in (Phase.AWAITING, Phase.PARTIAL, Phase.IDLE):
            for conn in list(self._phases[phase]):
                conn.abort()

    def close(self) -> None:
        """Drop whatever is still open (after aiohttp's own shutdown) and release the reserve descriptor."""
        self.closed = True
        for task in list(self._tls_tasks):
            task.cancel()
        for conns in self._phases.values():
            for conn in list(conns):
                conn.abort()
        self._shed.flush()
        self._bad.flush()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
