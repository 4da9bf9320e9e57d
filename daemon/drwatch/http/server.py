"""HTTP endpoints (aiohttp) on an event loop of their own, in a thread (:mod:`drwatch.http.loopthread`): / (the
status page), /metrics, /-/healthy, /-/ready, /-/reload, /api/v1/status.

The daemon's event loop is watched by a heartbeat (:mod:`drwatch.engine.heartbeat`): ``/-/healthy`` and
``/-/ready`` answer 503 once it has not run for ``stall_limit`` seconds (a loop stuck in a synchronous call),
as they would have hung when they were answered on that loop. ``POST /-/reload`` runs the reload on the
daemon's loop.

``GET`` (and ``HEAD``) for every path but ``/-/reload``, which takes ``POST`` only; any other method is answered
405 with an ``Allow`` header. Responses name the server ``drwatch``, without a version. A malformed request is
answered 400 and counted, not logged with a traceback (:meth:`httpconn.ConnectionGuard.bad_request`).

``/``, ``/metrics`` and ``/api/v1/status`` read the current snapshot only; they never touch the store. With
``http.web_config_file`` every path is served over TLS and/or behind basic authentication
(:mod:`drwatch.http.webconfig`). Every connection has a deadline to send its request header, an idle timeout,
and a place under a cap on open connections (:mod:`drwatch.http.conn`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import hdrs, web
from aiohttp.http import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from drwatch import __version__
from drwatch.config.web import WebConfig
from drwatch.engine.heartbeat import Heartbeat
from drwatch.engine.runner import AppState
from drwatch.http import conn as httpconn
from drwatch.http import listen
from drwatch.http.loopthread import LoopThread
from drwatch.http.webconfig import WebGuard
from drwatch.metrics.exposition import Exposition, accepts_gzip
from drwatch.metrics.incremental import SnapshotRenderer
from drwatch.metrics.loop import LoopLagCollector
from drwatch.metrics.textformat import deflate, gzip_framed
from drwatch.reporting.page import render as status_page
from drwatch.state.report import document

ReloadFn = Callable[[], Coroutine[Any, Any, tuple[bool, list[str]]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
SERVER_NAME = "drwatch"  # the Server header: no version (aiohttp's default names its own and Python's)


class _Protocol(web.RequestHandler):
    """aiohttp's per-connection protocol, but a request its parser refuses (the client's fault) is answered 400
    with a one-line reason and counted through ``on_malformed``, where aiohttp would log an error with a traceback
    for each: any local client could flood the journal. Errors of drwatch's own handlers are still logged."""

    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, keepalive_timeout: float,
                 lingering_time: float, on_malformed: Callable[[str], None]) -> None:
        super().__init__(manager, loop=loop, keepalive_timeout=keepalive_timeout, lingering_time=lingering_time,
                         access_log=None)  # type: ignore[arg-type]  # None: no access log (aiohttp's documented off)
        self._on_malformed = on_malformed

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            response = super().handle_error(request, status, exc, message)
            response.headers[hdrs.SERVER] = SERVER_NAME
            return response
        self._on_malformed(type(exc).__name__)
        if request.writer.output_size > 0:  # as aiohttp: a response is under way, the connection is broken
            raise ConnectionError("malformed request after a response was started")
        # The parser's reason quotes the client's bytes: the client may see its first line, the log never.
        reason = exc.message.splitlines()[0][:200].rstrip(" :") if exc.message else ""
        response = web.Response(status=400, text=f"400 Bad Request{': ' + reason if reason else ''}\n",
                                headers={hdrs.SERVER: SERVER_NAME})
        response.force_close()
        return response


class StatusText:
    """A status document as ``json.dumps(doc, indent=2)`` bytes, made once per document, with the per-request
    ``runtime`` member spliced in at the end: at thousands of assets the document is megabytes of JSON (the
    indenting encoder is pure Python), far too much to encode again for each request. The gzip body is the
    document's deflate segment (also made once) and the runtime's, in one member (:func:`gzip_framed`)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc  # the status page at / renders the same document
        text = json.dumps(doc, indent=2).encode()
        if not doc or not text.endswith(b"\n}"):
            raise ValueError("a status document is a non-empty JSON object")
        self.prefix = text[:-2] + b',\n  "runtime": '
        self.deflated = deflate(self.prefix)
        self.crc = zlib.crc32(self.prefix)

    def body(self, runtime: dict[str, Any], zipped: bool) -> bytes:
        """Exactly ``json.dumps({**doc, "runtime": runtime}, indent=2)`` (gzipped when ``zipped``)."""
        suffix = json.dumps(runtime, indent=2).replace("\n", "\n  ").encode() + b"\n}"
        if not zipped:
            return self.prefix + suffix
        return gzip_framed([self.deflated, deflate(suffix)], zlib.crc32(suffix, self.crc),
                           len(self.prefix) + len(suffix))


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER_NAME


async def _abort_leftover_transports(guard: httpconn.ConnectionGuard) -> None:
    """Last resort before this thread's loop ends: a connection still open (an accept the loop completed during the
    shutdown itself) has its transport aborted, and its socket closed on the next turns, instead of being left for
    the garbage collector (an unclosed socket, a ResourceWarning). Every transport of this loop is an accepted
    connection, made by the guard (its protocol factory) before the transport itself: ``guard.live`` holds them all
    until their socket is closed."""
    # Accepts under way (asyncio makes an accepted socket's transport in a task of its own): let them finish, or
    # the end of the loop cancels them with their socket not yet wrapped, or their transport's close not yet run.
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=1.0)
    for conn in list(guard.live):
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)


RELOAD_WAIT = 60.0  # seconds a POST /-/reload waits for the daemon's loop to apply it


class HttpServer:
    """The endpoints, served from their own thread; :meth:`start` and :meth:`stop` are called on the daemon's loop
    (the loop ``reload`` runs on and ``heartbeat`` watches)."""

    def __init__(self, state: AppState, reload: ReloadFn, clock: Callable[[], float] = time.time,
                 web_config: WebConfig | None = None, *, header_timeout: float = httpconn.HEADER_TIMEOUT,
                 idle_timeout: float = httpconn.IDLE_TIMEOUT, max_connections: int | None = None,
                 heartbeat: Heartbeat | None = None) -> None:
        self.state = state
        self.guard = WebGuard(web_config)
        self._reload = reload
        self._clock = clock
        self.heartbeat = heartbeat or Heartbeat()
        self._thread = LoopThread("drwatch-http")
        self._owner: asyncio.AbstractEventLoop | None = None  # the daemon's loop
        # The snapshot's families are rendered incrementally; other collectors (cluster mode) join the registry.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LoopLagCollector(self.heartbeat))
        self.exposition = Exposition(self.registry, lambda: self.state.snapshot, state.process, clock,
                                     SnapshotRenderer(lambda: self.state.snapshot, state.process, clock))
        self._status_doc: tuple[tuple[int, int], object, StatusText] | None = None
        self._status_pending: tuple[tuple[int, int], asyncio.Future[StatusText]] | None = None
        self._status_executor: ThreadPoolExecutor | None = None
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.Server] = []
        self.connections: httpconn.ConnectionGuard | None = None
        self._limits = (header_timeout, idle_timeout, max_connections)
        self.port = 0

    def app(self) -> web.Application:
        def connection(request: web.Request) -> httpconn.Connection | None:
            return self.connections.connection(request.transport) if self.connections is not None else None

        @web.middleware
        async def finished(request: web.Request, handler: Handler) -> web.StreamResponse:
            conn = connection(request)
            try:
                return await handler(request)
            finally:
                if conn is not None:
                    conn.request_finished()  # idle (keep-alive) from here

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.guard.handle(request, handler)

        @web.middleware
        async def started(request: web.Request, handler: Handler) -> web.StreamResponse:
            # Past rate limit and authentication: no deadline, never pushed out, while our handler runs.
            # Before, a request waiting for its bcrypt check keeps its header deadline and can be pushed out.
            conn = connection(request)
            if conn is not None:
                conn.request_started()
            return await handler(request)

        app = web.Application(middlewares=[finished, guard, started])
        app.on_response_prepare.append(_server_header)
        app.router.add_get("/", self._index)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_get("/-/ready", self._ready)
        app.router.add_post("/-/reload", self._reload_handler)  # documented as POST (as Prometheus); no PUT
        app.router.add_get("/api/v1/status", self._status)
        return app

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0: any free port, then :attr:`port`), serving from the HTTP thread."""
        self._owner = asyncio.get_running_loop()
        self.heartbeat.start()
        try:
            await self._thread.start(lambda: self._listen(host, port), self._close)
        except BaseException:
            self.heartbeat.stop()
            raise

    async def stop(self) -> None:
        """Close every connection and socket and end the HTTP thread (handlers running finish first)."""
        await self._thread.stop()
        self.heartbeat.stop()

    async def _listen(self, host: str, port: int) -> None:
        header_timeout, idle_timeout, max_connections = self._limits
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        guard: httpconn.ConnectionGuard | None = None

        def protocol() -> _Protocol:
            # aiohttp's own keep-alive timer (also armed at accept) stays as a backstop; a body the handler left
            # unread is drained for at most the header deadline.
            assert server is not None and guard is not None
            return _Protocol(server, loop=loop, keepalive_timeout=idle_timeout, lingering_time=header_timeout,
                             on_malformed=guard.bad_request)

        guard = self.connections = httpconn.ConnectionGuard(
            protocol, ssl_context=self.guard.ssl_context, header_timeout=header_timeout, idle_timeout=idle_timeout,
            max_connections=max_connections)
        socks: list[listen.ListenSocket] = []
        try:
            socks = await listen.bind(host, port)
            for sock in socks:
                sock.guard = self.connections
                self._servers.append(await loop.create_server(self.connections, sock=sock,
                                                              backlog=listen.LISTEN_BACKLOG))
        except BaseException:
            for sock in socks:
                sock.close()
            raise  # the thread's teardown (_close) closes the rest
        self.port = self._servers[0].sockets[0].getsockname()[1] if self._servers else port

    async def _close(self) -> None:
        if self.connections is not None:
            # No accept() from now on; the accepts the loop made already get their transport first (a task each,
            # run on the next turn), dropped as they are made: asyncio makes none once its server is closed (an
            # assertion inside it, the accepted socket left to the garbage collector).
            self.connections.drop_unused()
            for _ in range(2):
                await asyncio.sleep(0)
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        if self._runner is not None:
            await self._runner.cleanup()  # finishes running handlers, closes keep-alive connections
            self._runner = None
        if self.connections is not None:
            guard, self.connections = self.connections, None
            guard.close()  # and whatever aiohttp did not know about (TLS handshakes)
            # Until every transport reported connection_lost (its socket closed there), connections accepted before
            # but made only now included (asyncio makes an accepted socket's transport in a task of its own, a turn
            # later): the loop ends after this, and cancelling that task or a transport left open leaks the socket.
            for turn in range(200):
                if turn >= 3 and not guard.live:
                    break
                await asyncio.sleep(0 if turn < 20 else 0.01)
            await _abort_leftover_transports(guard)
        if self._status_executor is not None:
            self._status_executor.shutdown(wait=False, cancel_futures=True)
            self._status_executor = None
        self.exposition.close()

    async def _on_daemon_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` run on the daemon's loop, awaited from the HTTP thread."""
        assert self._owner is not None
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._owner)
        return await asyncio.wrap_future(future)

    async def _index(self, _req: web.Request) -> web.Response:
        # The status page: the document /api/v1/status serves (same snapshot, same single flight), as HTML.
        text = await self._status_text()
        rto = {name: (a.rto.total_seconds() if a.rto is not None else None)
               for name, a in self.state.snapshot.config.assets.items()}
        page = await asyncio.get_running_loop().run_in_executor(self._status_thread(), status_page, text.doc,
                                                                __version__, rto)
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _metrics(self, req: web.Request) -> web.Response:
        body, headers = await self.exposition.body(req.headers.get(hdrs.ACCEPT_ENCODING, ""))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, **headers})

    def _stalled(self) -> web.Response | None:
        if not self.heartbeat.stalled():
            return None
        return web.Response(status=503, text=f"drwatch's event loop has not run for "
                                             f"{self.heartbeat.silent_for():.0f} s.\n")

    async def _healthy(self, _req: web.Request) -> web.Response:
        return self._stalled() or web.Response(text="drwatch is Healthy.\n")

    async def _ready(self, _req: web.Request) -> web.Response:
        if not self.state.ready:
            return web.Response(status=503, text="drwatch is not ready yet.\n")
        return self._stalled() or web.Response(text="drwatch is Ready.\n")

    async def _reload_handler(self, _req: web.Request) -> web.Response:
        applying = asyncio.ensure_future(self._on_daemon_loop(self._reload()))
        done, _ = await asyncio.wait({applying}, timeout=RELOAD_WAIT)  # never cancelled half-way: waited for
        if not done:
            applying.add_done_callback(lambda f: f.cancelled() or f.exception())
            return web.Response(status=503, text=f"the daemon has not applied the reload within {RELOAD_WAIT:g}s "
                                "(its event loop is busy or stuck: see /-/healthy); it applies it when it can\n")
        ok, problems = applying.result()
        if ok:
            return web.Response(text="configuration reloaded\n")
        return web.Response(status=500, text="reload failed, keeping the running configuration:\n"
                            + "\n".join(problems) + "\n")

    def _status_thread(self) -> ThreadPoolExecutor:
        """The status document's own thread: never queued behind validators' file system calls in the default
        executor (as the exposition's)."""
        if self._status_executor is None:
            self._status_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drwatch-status")
        return self._status_executor

    async def _status_text(self) -> StatusText:
        # Thousands of assets: built and encoded off the loop, once per snapshot and wall-clock second for every
        # request that asks meanwhile (the same single flight as /metrics).
        snapshot, now = self.state.snapshot, self._clock()
        key = (id(snapshot), int(now))
        loop = asyncio.get_running_loop()
        cached = self._status_doc
        if cached is None or cached[0] != key or cached[1] is not snapshot:
            if self._status_pending is None or self._status_pending[0] != key:
                task = loop.run_in_executor(self._status_thread(), lambda: StatusText(document(snapshot, now)))
                self._status_pending = (key, task)
            pending_key, pending = self._status_pending
            text = await asyncio.shield(pending)
            self._status_doc = (pending_key, snapshot, text)
            if self._status_pending is not None and self._status_pending[1] is pending:
                self._status_pending = None
        else:
            text = cached[2]
        return text

    async def _status(self, req: web.Request) -> web.Response:
        text = await self._status_text()
        loop = asyncio.get_running_loop()
        # Process figures for soak tests and debugging (bounded: counts only).
        runtime = {"asyncio_tasks": len(asyncio.all_tasks(self._owner)),  # the daemon's loop
                   "results_pending": self.state.process.results_pending,
                   "metrics_renders": self.exposition.renders, "metrics_scrapes_waited": self.exposition.waited,
                   "http_connections": self.connections.stats() if self.connections is not None else {}}
        zipped = accepts_gzip(req.headers.get(hdrs.ACCEPT_ENCODING, ""))
        body = text.body(runtime, False) if not zipped else \
            await loop.run_in_executor(self._status_thread(), text.body, runtime, True)
        headers = {"Vary": "Accept-Encoding", **({"Content-Encoding": "gzip"} if zipped else {})}
        return web.Response(body=body, content_type="application/json", headers=headers)
