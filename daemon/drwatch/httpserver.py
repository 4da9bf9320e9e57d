"""HTTP endpoints on the event loop (aiohttp): /metrics, /-/healthy, /-/ready, /-/reload, /api/v1/status.

``/metrics`` and ``/api/v1/status`` read the current snapshot only; they never touch the store. With
``http.web_config_file`` every path is served over TLS and/or behind basic authentication
(:mod:`drwatch.webconfig`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from drwatch import __version__
from drwatch.metrics import make_registry, render
from drwatch.report import document
from drwatch.runner import AppState
from drwatch.webconfig import WebConfig, WebGuard

ReloadFn = Callable[[], Awaitable[tuple[bool, list[str]]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_INDEX = """<!doctype html><html><head><title>drwatch</title></head><body>
<h1>drwatch {version}</h1><p>Disaster-recovery watch: continuously proving recoverability.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="api/v1/status">/api/v1/status</a></li>
<li><a href="-/healthy">/-/healthy</a></li><li><a href="-/ready">/-/ready</a></li></ul></body></html>"""


class HttpServer:
    def __init__(self, state: AppState, reload: ReloadFn, clock: Callable[[], float] = time.time,
                 web_config: WebConfig | None = None) -> None:
        self.state = state
        self.guard = WebGuard(web_config)
        self._reload = reload
        self._clock = clock
        self.registry = make_registry(lambda: self.state.snapshot, state.process, clock)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.guard.handle(request, handler)

        app = web.Application(middlewares=[guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_get("/-/ready", self._ready)
        app.router.add_post("/-/reload", self._reload_handler)
        app.router.add_put("/-/reload", self._reload_handler)
        app.router.add_get("/api/v1/status", self._status)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=self.guard.ssl_context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _index(self, _req: web.Request) -> web.Response:
        return web.Response(text=_INDEX.format(version=__version__), content_type="text/html")

    async def _metrics(self, _req: web.Request) -> web.Response:
        body = render(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthy(self, _req: web.Request) -> web.Response:
        return web.Response(text="drwatch is Healthy.\n")

    async def _ready(self, _req: web.Request) -> web.Response:
        if self.state.ready:
            return web.Response(text="drwatch is Ready.\n")
        return web.Response(status=503, text="drwatch is not ready yet.\n")

    async def _reload_handler(self, _req: web.Request) -> web.Response:
        ok, problems = await self._reload()
        if ok:
            return web.Response(text="configuration reloaded\n")
        return web.Response(status=500, text="reload failed, keeping the running configuration:\n"
                            + "\n".join(problems) + "\n")

    async def _status(self, _req: web.Request) -> web.Response:
        doc = document(self.state.snapshot, self._clock())
        # Process figures for soak tests and debugging (bounded: counts only).
        doc["runtime"] = {"asyncio_tasks": len(asyncio.all_tasks()),
                          "results_pending": self.state.process.results_pending}
        return web.Response(text=json.dumps(doc, indent=2), content_type="application/json")
