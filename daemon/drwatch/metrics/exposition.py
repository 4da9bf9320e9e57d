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
import heapq
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, generate_latest

from drwatch.config.model import Config
from drwatch.engine.process import ProcessState
from drwatch.metrics.collector import AssetStanding, asset_families, global_families, process_families, render
from drwatch.metrics.restore import rate_expiries, rate_inputs, rates_changed
from drwatch.metrics.textformat import GZIP_LEVEL, Fixed, deflate, gzip_member, sample_lines, split_family
from drwatch.state.snapshot import Snapshot

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


# --- incremental rendering of the snapshot's families -------------------------------------------------------

_EPSILON = 0.001  # seconds: a verdict is re-evaluated this much before (and after) a time it may change at


def standing_changes_at(cfg: Config, snap: Snapshot, asset: str) -> list[float]:
    """Every time at which the asset's verdict states may change while its results stay the same.

    The verdict (:func:`drwatch.state.compliance.evaluate_asset`) reads ``now`` only to compare it with these: a
    result going stale (finished + max age), a recovery point leaving the RPO, an Object Lock retain-until
    coming within the minimum horizon, an attestation ageing out (or its recovery point leaving the RPO), a
    failure leaving the evaluation window.
    """
    acfg = cfg.assets[asset]
    comp = cfg.compliance
    rpo = acfg.rpo.total_seconds()
    horizon = comp.min_retention_remaining.total_seconds()
    times: list[float] = []
    for vcfg in acfg.validators:
        stats = snap.validators.get((asset, vcfg.label))
        if stats is None:
            continue
        if stats.last_failure_at is not None:
            times.append(stats.last_failure_at + comp.window.total_seconds())
        res = stats.last_result
        if res is None:
            continue
        times.append(res.finished_at + vcfg.effective_max_age(cfg))
        for rep in res.copies:
            if rep.recovery_point is not None:
                times.append(rep.recovery_point + rpo)
            if rep.retain_until_min is not None:
                times.append(rep.retain_until_min - horizon)
    for ref in ("production", *(c.label for c in acfg.copies)):
        att = snap.attestations.get((asset, ref))
        if att is not None:
            times.append(att.created_at + comp.offline_attestation_max_age.total_seconds())
            if att.recovery_point is not None:
                times.append(att.recovery_point + rpo)
    return times + rate_expiries(cfg, snap, asset)


@dataclass
class _AssetEntry:
    inputs: tuple[object, ...]
    standing: AssetStanding
    valid_from: float  # the standing holds for valid_from <= now < valid_until
    valid_until: float
    fragments: tuple[bytes, ...]  # sample lines per family of asset_families


def _inputs(snap: Snapshot, asset: str, validators: tuple[str, ...], refs: tuple[str, ...],
            now: float) -> tuple[object, ...]:
    """Everything of the snapshot an asset's series depend on (objects are replaced, never mutated)."""
    return (*(snap.validators.get((asset, v)) for v in validators), *(snap.acks.get((asset, v)) for v in validators),
            *(snap.attestations.get((asset, r)) for r in refs), *(snap.copy_bytes.get((asset, r)) for r in refs),
            *(snap.verify.get((asset, r)) for r in refs), *rate_inputs(snap, asset, now))


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))


_MISSING = object()


def _changed_assets(old: Mapping[tuple[str, str], object], new: Mapping[tuple[str, str], object]) -> set[str]:
    """Assets with an entry replaced, added or removed between two versions of a snapshot mapping."""
    if old is new:
        return set()
    out = {key[0] for key, value in new.items() if old.get(key, _MISSING) is not value}
    out.update(key[0] for key in old.keys() - new.keys())
    return out


@dataclass(frozen=True)
class Segments:
    """An exposition in pieces: the text, and each piece deflated (see :func:`deflate`)."""

    plain: list[bytes]
    deflated: list[bytes]


CHUNK = 64  # assets whose sample lines are joined (and deflated) together, per family


class SnapshotRenderer:
    """The snapshot's families in the text format, re-rendering only the assets whose series changed.

    Byte for byte what :class:`drwatch.metrics.collector.SnapshotCollector` renders through prometheus-client (each
    asset's series are rendered by prometheus-client too, then kept). Per render it finds the assets whose
    inputs changed by comparing the snapshot's mappings with the previous snapshot's (entries are replaced,
    never mutated: identity tells), plus the assets whose verdict reached a time it may change at
    (:func:`standing_changes_at`, kept in a heap); only those are evaluated, and only those whose series
    differ are rendered again. Assets are kept in chunks of :data:`CHUNK`, joined and deflated per family,
    so a render costs the changed chunks plus one pass over the chunks, and the gzip body needs no
    compression of what did not change. Not thread-safe: one render at a time (:class:`Exposition`).
    """

    def __init__(self, snapshot: Callable[[], Snapshot], process: ProcessState, clock: Callable[[], float]) -> None:
        self._snapshot = snapshot
        self._process = process
        self._clock = clock
        self._config: Config | None = None
        self._previous: Snapshot | None = None
        self._last_now = -math.inf
        self._headers: tuple[bytes, ...] = ()
        self._deflated_headers: tuple[bytes, ...] = ()
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._layout: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self._entries: list[_AssetEntry | None] = []
        self._chunks: list[tuple[tuple[bytes, ...], tuple[bytes, ...]]] = []  # per chunk: plain, deflated
        self._expiry: list[tuple[float, int]] = []  # (valid_until, asset index), lazily deleted
        self.asset_renders = 0  # assets whose series were rendered (tests, benchmarks)
        self.evaluations = 0  # verdicts evaluated

    def render(self) -> bytes:
        return b"".join(self.segments().plain)

    def segments(self) -> Segments:
        snap = self._snapshot()
        cfg = snap.config
        now = self._clock()
        dirty = self._dirty(snap, cfg, now)
        chunks = set()
        for i in dirty:
            if self._refresh(cfg, snap, i, now):
                chunks.add(i // CHUNK)
        for c in chunks:
            self._chunks[c] = self._join(c)
        self._previous, self._last_now = snap, now
        if len(self._expiry) > 4 * len(self._names) + 64:
            self._expiry = [(e.valid_until, i) for i, e in enumerate(self._entries)
                            if e is not None and e.valid_until < math.inf]
            heapq.heapify(self._expiry)
        head = generate_latest(Fixed(process_families(self._process)))
        tail = generate_latest(Fixed(global_families(cfg, snap, now)))
        plain, deflated = [head], [deflate(head)]
        for f, (header, zheader) in enumerate(zip(self._headers, self._deflated_headers, strict=True)):
            plain.append(header)
            deflated.append(zheader)
            for pieces, zpieces in self._chunks:
                if pieces[f]:
                    plain.append(pieces[f])
                    deflated.append(zpieces[f])
        plain.append(tail)
        deflated.append(deflate(tail))
        return Segments(plain, deflated)

    def _dirty(self, snap: Snapshot, cfg: Config, now: float) -> set[int]:
        """Indexes of the assets to look at again: inputs replaced, or a verdict's time reached."""
        prev = self._previous
        if cfg is not self._config or prev is None or now < self._last_now:
            if cfg is not self._config:
                self._reset(cfg, snap)
            return set(range(len(self._names)))
        names: set[str] = set()
        for old, new in ((prev.validators, snap.validators), (prev.acks, snap.acks),
                         (prev.attestations, snap.attestations), (prev.copy_bytes, snap.copy_bytes),
                         (prev.verify, snap.verify)):
            names |= _changed_assets(old, new)
        names |= rates_changed(cfg, prev, snap, self._last_now, now)
        dirty = {self._index[n] for n in names if n in self._index}
        while self._expiry and self._expiry[0][0] <= now:
            _, i = heapq.heappop(self._expiry)
            dirty.add(i)
        return dirty

    def _reset(self, cfg: Config, snap: Snapshot) -> None:
        self._config = cfg
        self._headers = tuple(split_family(f)[0] for f in asset_families(cfg, snap, [], {}))
        self._deflated_headers = tuple(deflate(h) for h in self._headers)
        self._names = list(cfg.assets)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._layout = [(tuple(v.label for v in a.validators), ("production", *(c.label for c in a.copies)))
                        for a in cfg.assets.values()]
        self._entries = [None] * len(self._names)
        empty = tuple(b"" for _ in self._headers)
        self._chunks = [(empty, empty)] * ((len(self._names) + CHUNK - 1) // CHUNK)
        self._expiry = []

    def _refresh(self, cfg: Config, snap: Snapshot, i: int, now: float) -> bool:
        """Bring asset ``i`` up to date; whether its sample lines changed."""
        name = self._names[i]
        validators, refs = self._layout[i]
        inputs = _inputs(snap, name, validators, refs, now)
        entry = self._entries[i]
        same_inputs = entry is not None and _same(entry.inputs, inputs)
        if entry is not None and same_inputs and entry.valid_from <= now < entry.valid_until:
            return False
        standing = AssetStanding.evaluate(cfg, snap, name, now)
        self.evaluations += 1
        upcoming = [t for t in standing_changes_at(cfg, snap, name) if t + _EPSILON >= now]
        valid_until = min(upcoming, default=math.inf) - _EPSILON
        if valid_until < math.inf:
            heapq.heappush(self._expiry, (max(valid_until, now), i))
        if entry is not None and same_inputs and entry.standing == standing:
            self._entries[i] = _AssetEntry(inputs, standing, now, valid_until, entry.fragments)
            return False
        fragments = tuple(sample_lines(f) for f in asset_families(cfg, snap, [name], {name: standing}))
        self.asset_renders += 1
        self._entries[i] = _AssetEntry(inputs, standing, now, valid_until, fragments)
        return entry is None or fragments != entry.fragments

    def _join(self, c: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        entries = [e for e in self._entries[c * CHUNK:(c + 1) * CHUNK] if e is not None]
        pieces = tuple(b"".join(e.fragments[f] for e in entries) for f in range(len(self._headers)))
        return pieces, tuple(deflate(p) for p in pieces)
