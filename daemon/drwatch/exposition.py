"""The ``/metrics`` bytes, rendered off the event loop and only when what they project has changed.

Metrics are a projection of the snapshot (plus a few live process figures and the time, which moves
staleness and RPO ages). Rendering walks every series (~8 µs each in prometheus-client): at thousands of
assets that is seconds of CPU, which on the event loop would stall ``/-/healthy``, the watchdog and every
validator. So the exposition is rendered in a worker thread, at most one render at a time (concurrent
scrapes share it), and the bytes (plain and gzip) are served from a cache until the snapshot or the process
figures change, or the wall-clock second moves on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from drwatch.metrics import ProcessState, render

GZIP_LEVEL = 6  # what prometheus-client's own handler uses; ~10x smaller, a few ms per MB


@dataclass(frozen=True)
class Rendered:
    """One rendering of the exposition; ``gzipped`` is made on the first request that accepts it."""

    key: tuple[object, ...]
    plain: bytes
    _gzipped: list[bytes] = dataclasses.field(default_factory=list, compare=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, compare=False)

    def gzipped(self) -> bytes:
        with self._lock:
            if not self._gzipped:
                self._gzipped.append(gzip.compress(self.plain, compresslevel=GZIP_LEVEL, mtime=0))
            return self._gzipped[0]


class Exposition:
    """Cached exposition bytes of ``registry``.

    ``snapshot`` returns the current snapshot object (replaced, never mutated: identity is its revision);
    ``process`` is the live process state; ``clock`` the wall clock the collector reads.
    """

    def __init__(self, registry: CollectorRegistry, snapshot: Callable[[], object], process: ProcessState,
                 clock: Callable[[], float]) -> None:
        self._registry = registry
        self._snapshot = snapshot
        self._process = process
        self._clock = clock
        self._current: Rendered | None = None
        self._current_snapshot: object = None
        self._pending: asyncio.Future[Rendered] | None = None
        self.renders = 0  # how many times the exposition was rendered (tests, benchmarks)

    def _key(self) -> tuple[object, ...]:
        return (id(self._snapshot()), dataclasses.astuple(self._process), int(self._clock()))

    async def get(self) -> Rendered:
        """The exposition for the current state: cached, or rendered once in a thread for every waiting scrape.

        A scrape that arrives during a render waits for that render and serves it (its state is at most one
        render old), rather than chase an estate whose snapshot changes with every result.
        """
        snapshot = self._snapshot()
        key = self._key()
        current = self._current
        if current is not None and current.key == key and self._current_snapshot is snapshot:
            return current
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._render(snapshot, key))
        return await asyncio.shield(self._pending)

    async def _render(self, snapshot: object, key: tuple[object, ...]) -> Rendered:
        try:
            plain = await asyncio.to_thread(render, self._registry)
            rendered = Rendered(key, plain)
            self.renders += 1
            self._current, self._current_snapshot = rendered, snapshot
            return rendered
        finally:
            self._pending = None

    async def body(self, accept_encoding: str) -> tuple[bytes, dict[str, str]]:
        """The body and its encoding headers for a request that sent ``accept_encoding``."""
        rendered = await self.get()
        if accepts_gzip(accept_encoding):
            return await asyncio.to_thread(rendered.gzipped), {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return rendered.plain, {"Vary": "Accept-Encoding"}


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
