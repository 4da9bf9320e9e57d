"""The ``/metrics`` bytes, rendered off the event loop and only when what they project has changed.

Metrics are a projection of the snapshot (plus a few live process figures and the time, which moves
staleness and RPO ages). Rendering walks every series (~8 µs each in prometheus-client): at thousands of
assets that is seconds of CPU, which on the event loop would stall ``/-/healthy``, the watchdog and every
validator. So the exposition is rendered in a worker thread, at most one render at a time (concurrent
scrapes share it), and the bytes (plain and gzip) are served from a cache until the snapshot or the process
figures change, or the wall-clock second moves on. Where a render is expensive, the exposition is kept fresh
ahead of the scrapes while it is being scraped, so that a scrape never waits for a render (see
:meth:`Exposition.get`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry

from drwatch.engine.process import ProcessState
from drwatch.metrics.collector import render
from drwatch.metrics.incremental import SnapshotRenderer
from drwatch.metrics.textformat import GZIP_LEVEL, deflate, gzip_member

STALE_WHILE_RENDERING_CPU = 0.02  # seconds; a small estate renders in a few ms of CPU and is always fresh
STALE_MAX_AGE = 5.0  # seconds: how long ago a rendering served during an expensive render may have been made
REFRESH_INTERVAL = 1.0  # seconds between renders made ahead of the scrapes (the key's resolution: a second)
KEEP_FRESH_FOR = 120.0  # seconds after the latest scrape during which renders are made ahead of the scrapes
T = TypeVar("T")


@dataclass(frozen=True)
class Rendered:
    """One rendering of the exposition; ``gzipped`` is made on the first request that accepts it."""

    key: tuple[object, ...]
    parts: list[bytes]  # the body is their concatenation (joined on the first request without gzip)
    deflated: list[bytes] | None = None  # ``parts`` deflated one by one (see deflate()), when rendered in pieces
    _done: dict[str, bytes] = dataclasses.field(default_factory=dict, compare=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, compare=False)

    def ready(self, kind: str) -> bytes | None:
        """The ``plain`` or ``gzip`` body if it was made already (serving it needs no thread)."""
        return self._done.get(kind)

    @property
    def plain(self) -> bytes:
        with self._lock:
            if "plain" not in self._done:
                self._done["plain"] = b"".join(self.parts)
            return self._done["plain"]

    def gzipped(self) -> bytes:
        if self.deflated is None:
            plain = self.plain
            with self._lock:
                if "gzip" not in self._done:
                    self._done["gzip"] = gzip.compress(plain, compresslevel=GZIP_LEVEL, mtime=0)
                return self._done["gzip"]
        with self._lock:
            if "gzip" not in self._done:
                self._done["gzip"] = gzip_member(self.deflated, self.parts)
            return self._done["gzip"]


class Exposition:
    """Cached exposition bytes of ``registry``.

    ``snapshot`` returns the current snapshot object (replaced, never mutated: identity is its revision);
    ``process`` is the live process state; ``clock`` the wall clock the collector reads.
    """

    def __init__(self, registry: CollectorRegistry, snapshot: Callable[[], object], process: ProcessState,
                 clock: Callable[[], float], renderer: SnapshotRenderer | None = None) -> None:
        self._registry = registry
        self._renderer = renderer  # the snapshot's families, rendered ahead of the registry's
        self._snapshot = snapshot
        self._process = process
        self._clock = clock
        self._current: Rendered | None = None
        self._current_snapshot: object = None
        self._pending: asyncio.Future[Rendered] | None = None
        self.renders = 0  # how many times the exposition was rendered (tests, benchmarks)
        self.waited = 0  # scrapes that waited for a render (/api/v1/status runtime, benchmarks)
        self.render_cpu = 0.0  # CPU seconds of the latest render
        self._executor: ThreadPoolExecutor | None = None
        self._current_at = 0.0  # time.monotonic() when the current rendering was made (or found still current)
        self._render_started = 0.0  # time.monotonic() when the latest render started
        self._last_scrape = -math.inf  # time.monotonic() of the latest get()
        self._refresh: asyncio.TimerHandle | None = None
        self._closed = False
        self.stale_max_age = STALE_MAX_AGE
        self.keep_fresh_for = KEEP_FRESH_FOR

    def _key(self) -> tuple[object, ...]:
        return (id(self._snapshot()), dataclasses.astuple(self._process), int(self._clock()))

    async def get(self) -> Rendered:
        """The exposition for the current state: cached, or rendered once in a thread for every waiting scrape.

        A scrape that arrives during a render waits for that render and serves it (its state is at most one
        render old), rather than chase an estate whose snapshot changes with every result. Where rendering is
        expensive (the latest render took over :data:`STALE_WHILE_RENDERING_CPU` of CPU: thousands of assets
        changing all the time, on a loaded machine), renders are made ahead of the scrapes, one a
        :data:`REFRESH_INTERVAL` at most, for :data:`KEEP_FRESH_FOR` seconds after the latest scrape; a scrape
        then gets the latest rendering at once if it was made at most :data:`STALE_MAX_AGE` ago (``stale_max_age``)
        while the next one is made: its state is as old as that plus the render's duration. A scrape never gets
        an older rendering: it waits for the render instead (the first scrape after a quiet spell). Measured from
        the render's end, not its start: where renders take longer than a scrape may wait (seconds, at 10,000
        assets with results arriving all the time), a scrape that fails (Prometheus' scrape timeout, 10 s) is
        worse than values a render old.
        """
        self._last_scrape = time.monotonic()
        snapshot = self._snapshot()
        key = self._key()
        current = self._current
        if current is not None and current.key == key and self._current_snapshot is snapshot:
            return current
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._render(snapshot, key))
        if (current is not None and self.render_cpu > STALE_WHILE_RENDERING_CPU
                and time.monotonic() - self._current_at <= self.stale_max_age):
            return current  # an expensive render is under way: serve the previous one, made a moment ago
        self.waited += 1
        return await asyncio.shield(self._pending)

    def _plan_refresh(self) -> None:
        """After a render: the next one ahead of the scrapes, if renders are expensive and scrapes recent."""
        if (self._closed or self._refresh is not None or self.render_cpu <= STALE_WHILE_RENDERING_CPU
                or time.monotonic() - self._last_scrape > self.keep_fresh_for):
            return
        delay = max(0.0, self._render_started + REFRESH_INTERVAL - time.monotonic())
        self._refresh = asyncio.get_running_loop().call_later(delay, self._refresh_now)

    def _refresh_now(self) -> None:
        self._refresh = None
        if time.monotonic() - self._last_scrape > self.keep_fresh_for:
            return  # nobody scrapes any more: the next scrape renders
        snapshot = self._snapshot()
        key = self._key()
        current = self._current
        if self._pending is not None:
            return  # a scrape started one: it plans the next when done
        if current is not None and current.key == key and self._current_snapshot is snapshot:
            self._current_at = self._render_started = time.monotonic()  # still the state as of now: next check
            self._plan_refresh()
            return
        self._pending = asyncio.ensure_future(self._render(snapshot, key))
        # Nobody may await it: its failure (logged by the scrape that next renders) must not go unretrieved.
        self._pending.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _render(self, snapshot: object, key: tuple[object, ...]) -> Rendered:
        started = time.monotonic()
        try:
            parts, deflated, cpu = await self._in_thread(self._render_parts)
            rendered = Rendered(key, parts, deflated)
            if deflated is not None:
                await self._in_thread(rendered.gzipped)  # Prometheus asks for gzip: have it ready
            self.render_cpu = cpu
            self._current_at = time.monotonic()
            self._render_started = started
            self.renders += 1
            self._current, self._current_snapshot = rendered, snapshot
            return rendered
        finally:
            self._pending = None
            self._plan_refresh()

    def _render_parts(self) -> tuple[list[bytes], list[bytes] | None, float]:
        """The body's parts, deflated parts, and the CPU seconds this thread spent on them."""
        started = time.thread_time()
        if self._renderer is None:
            return [render(self._registry)], None, time.thread_time() - started
        segments = self._renderer.segments()
        rest = render(self._registry)
        return [*segments.plain, rest], [*segments.deflated, deflate(rest)], time.thread_time() - started

    async def body(self, accept_encoding: str) -> tuple[bytes, dict[str, str]]:
        """The body and its encoding headers for a request that sent ``accept_encoding``."""
        rendered = await self.get()
        if accepts_gzip(accept_encoding):
            zipped = rendered.ready("gzip")
            if zipped is None:
                zipped = await self._in_thread(rendered.gzipped)
            return zipped, {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        plain = rendered.ready("plain")
        if plain is None:
            plain = await self._in_thread(lambda: rendered.plain)
        return plain, {"Vary": "Accept-Encoding"}

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        """``fn`` in the exposition's own thread: never queued behind validators' work in the default
        executor (a scrape would wait for their file system calls), never taking a thread they need."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drwatch-exposition")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        """No more renders ahead of scrapes; shut the rendering thread down (a render under way finishes in it;
        nothing waits for it)."""
        self._closed = True
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (``gzip`` or ``*`` with a q-value above 0)."""
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() not in ("gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False

