"""/metrics is rendered off the event loop, once per change of what it projects, and gzipped on request."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drwatch.http.server import StatusText
from drwatch.metrics.collector import ProcessState
from drwatch.metrics.exposition import REFRESH_INTERVAL, Exposition, accepts_gzip
from tests.support.helpers import DaemonProcess, basic_config, free_port, populate, write_config


class _SlowCollector(Collector):
    """A collector whose rendering takes ``delay`` seconds of blocking work, and records the rendering thread."""

    def __init__(self, snapshot: list[object], delay: float) -> None:
        self.snapshot = snapshot
        self.delay = delay
        self.threads: list[int] = []

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)  # blocking on purpose: it must not block the event loop
        g = GaugeMetricFamily("drwatch_test_value", "A test value.")
        g.add_metric([], float(len(str(self.snapshot[0]))))
        yield g


def _exposition(delay: float, clock_value: list[float]) -> tuple[Exposition, _SlowCollector, list[object],
                                                                   ProcessState]:
    snapshot: list[object] = [object()]
    collector = _SlowCollector(snapshot, delay)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    process = ProcessState(started_at=0.0)
    return Exposition(registry, lambda: snapshot[0], process, lambda: clock_value[0]), collector, snapshot, process


async def test_render_runs_in_a_thread_and_the_loop_keeps_ticking() -> None:
    """A 0.5 s render leaves the event loop free: a ticker on the loop keeps running at its pace."""
    expo, collector, _, _ = _exposition(0.5, [100.0])
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0.02)
        rendered = await expo.get()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert b"drwatch_test_value" in rendered.plain
    assert collector.threads and threading.get_ident() not in collector.threads
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 20 and max(gaps) < 0.2, max(gaps)


async def test_concurrent_scrapes_share_one_render_and_the_cache_serves_until_a_change() -> None:
    """Ten scrapes at once render once; the next scrape is served from the cache; a new snapshot, a changed
    process figure or the next wall-clock second render again."""
    clock = [100.2]
    expo, _, snapshot, process = _exposition(0.2, clock)
    results = await asyncio.gather(*(expo.get() for _ in range(10)))
    assert expo.renders == 1 and all(r is results[0] for r in results)
    assert await expo.get() is results[0] and expo.renders == 1
    snapshot[0] = object()
    await expo.get()
    assert expo.renders == 2
    process.results_pending += 1
    await expo.get()
    assert expo.renders == 3
    clock[0] = 100.9  # same second: cached
    await expo.get()
    assert expo.renders == 3
    clock[0] = 101.0
    await expo.get()
    assert expo.renders == 4


async def test_gzip_only_when_accepted() -> None:
    """gzip is served when Accept-Encoding admits it and decompresses to the plain exposition."""
    expo, _, _, _ = _exposition(0.0, [5.0])
    plain, headers = await expo.body("")
    assert "Content-Encoding" not in headers
    zipped, headers = await expo.body("br;q=1.0, gzip;q=0.8")
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped) == plain
    _, headers = await expo.body("gzip;q=0")
    assert "Content-Encoding" not in headers


@pytest.mark.parametrize(("value", "expected"), [
    ("gzip", True), ("GZIP", True), ("deflate, gzip", True), ("*", True), ("gzip;q=0", False),
    ("gzip; q=0.001", True), ("identity", False), ("", False), ("gzip;q=x", False), ("x-gzip", False),
])
def test_accepts_gzip(value: str, expected: bool) -> None:
    """Accept-Encoding parsing: gzip or * with a positive q-value."""
    assert accepts_gzip(value) is expected


def test_daemon_serves_gzip_equal_to_plain(tmp_path: Path) -> None:
    """A real daemon answers a gzip-accepting scrape (and status request) compressed; decompressed it carries the
    same series (the same document)."""
    populate(tmp_path)
    port = free_port()
    cfg = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, http_port=port))
    daemon = DaemonProcess(cfg, port)
    daemon.start()
    try:
        daemon.wait_for(lambda: "outcome=\"ok\"" in daemon.metrics())
        req = urllib.request.Request(daemon.url("/metrics"), headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            zipped_text = gzip.decompress(resp.read()).decode()
        plain_text = daemon.metrics()
        # /api/v1/status too: gzip on request, the same document as the plain answer.
        req = urllib.request.Request(daemon.url("/api/v1/status"), headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            status_zipped = json.loads(gzip.decompress(resp.read()))
        status_plain = json.loads(daemon.get("/api/v1/status")[1])
    finally:
        daemon.stop()
    assert list(status_zipped["assets"]) == list(status_plain["assets"]) == ["data"]
    assert status_zipped["runtime"]["asyncio_tasks"] > 0  # the daemon's loop's (the endpoints have their own)
    assert status_zipped["runtime"]["metrics_renders"] >= 1
    assert 1 <= status_zipped["runtime"]["metrics_scrapes_waited"] <= status_zipped["runtime"]["metrics_renders"] + 3

    def series(text: str) -> set[str]:
        return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}

    assert series(zipped_text) == series(plain_text)
    assert "drwatch_validator_runs_total" in zipped_text


class _BusyCollector(Collector):
    """A collector whose rendering burns ``cpu`` seconds of CPU (an estate of thousands of assets)."""

    def __init__(self, snapshot: list[object], cpu: float) -> None:
        self.snapshot = snapshot
        self.cpu = cpu

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        end = time.thread_time() + self.cpu
        while time.thread_time() < end:
            pass
        g = GaugeMetricFamily("drwatch_test_value", "A test value.")
        g.add_metric([], float(id(self.snapshot[0]) % 1000))
        yield g


async def test_an_expensive_render_serves_the_previous_rendering_meanwhile() -> None:
    """When the latest render took more CPU than STALE_WHILE_RENDERING_CPU, a scrape after a change gets the
    previous rendering at once (if its state is at most ``stale_max_age`` old) while the new one is made; the next
    scrape after it gets the new one. An older rendering, or a cheap render (the sleeping collector above: no
    CPU), is waited for."""
    snapshot: list[object] = [object()]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BusyCollector(snapshot, 0.1))
    expo = Exposition(registry, lambda: snapshot[0], ProcessState(started_at=0.0), lambda: 7.0)
    expo.stale_max_age = 0.5
    expo.keep_fresh_for = 0.0  # no renders ahead of the scrapes here (the next test)
    first = await expo.get()
    assert expo.render_cpu >= 0.1
    snapshot[0] = object()
    t0 = time.monotonic()
    stale = await expo.get()
    assert stale is first and time.monotonic() - t0 < 0.05  # did not wait for the 0.1 s render
    pending = expo._pending
    assert pending is not None
    fresh = await pending
    assert fresh is not first and await expo.get() is fresh and expo.renders == 2
    # A rendering older than stale_max_age is never served: the scrape waits for the new one.
    await asyncio.sleep(0.6)
    snapshot[0] = object()
    assert (await expo.get()) is not fresh and expo.renders == 3
    expo.close()


async def _until(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_an_expensive_exposition_is_rendered_ahead_of_the_scrapes_while_scraped() -> None:
    """Where renders are expensive, a change is rendered within about REFRESH_INTERVAL without a scrape asking,
    so the next scrape is served at once with the new state; renders ahead stop ``keep_fresh_for`` seconds after
    the latest scrape (nobody asks: no CPU spent), and the first scrape after that waits for a fresh render."""
    snapshot: list[object] = [object()]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_BusyCollector(snapshot, 0.05))
    expo = Exposition(registry, lambda: snapshot[0], ProcessState(started_at=0.0), lambda: 7.0)
    expo.keep_fresh_for = 2.0
    try:
        first = await expo.get()
        snapshot[0] = object()
        assert await _until(lambda: expo.renders == 2, REFRESH_INTERVAL + 5)  # no scrape asked for it
        t0 = time.monotonic()
        second = await expo.get()
        assert second is not first and expo.renders == 2 and time.monotonic() - t0 < 0.05
        await asyncio.sleep(2.5)  # no scrape for longer than keep_fresh_for
        snapshot[0] = object()
        await asyncio.sleep(REFRESH_INTERVAL + 0.5)
        assert expo.renders == 2  # not rendered for nobody
        expo.stale_max_age = 1.0
        third = await expo.get()  # its state would be > 1 s old: waits for the render
        assert third is not second and expo.renders == 3
    finally:
        expo.close()


def test_status_text_is_the_document_with_runtime_spliced_in() -> None:
    """/api/v1/status encodes the (cached) document once and splices the per-request runtime member in: the body is
    byte for byte ``json.dumps({**doc, "runtime": runtime}, indent=2)``, and its gzip form decompresses to it."""
    doc = {"generated_at": "2026-12-07T00:00:00+00:00",
           "assets": {"a\n\"b\"": {"rules": {"copies": {"state": "pass", "detail": "2/2 \u00e9 \\ ok"}}, "x": []}},
           "results": [{"figures": {"n": 1.5}, "findings": []}], "acks": []}
    text = StatusText(doc)
    for runtime in ({"asyncio_tasks": 4, "http_connections": {}},
                    {"asyncio_tasks": 9, "results_pending": 0, "http_connections": {"open": 2, "max": 3}}):
        expected = json.dumps({**doc, "runtime": runtime}, indent=2).encode()
        assert text.body(runtime, False) == expected
        assert gzip.decompress(text.body(runtime, True)) == expected
