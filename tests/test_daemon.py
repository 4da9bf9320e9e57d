"""The long-running daemon: systemd notify, reload, SIGTERM drain, sandboxes, HTTP, scheduling limits, logs.

Subprocess tests run the real ``drwatch run``; in-process tests run :class:`drwatch.engine.daemon.Daemon` on the
test's event loop with a test validator registered through ``drwatch.validators.REGISTRY`` (a real
implementation of drwatch's Validator protocol that sleeps, creates a sandbox and counts concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import io
import itertools
import json
import logging
import os
import signal
import sqlite3
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
import structlog
import structlog.testing

from drwatch import validators
from drwatch.config.model import load_config
from drwatch.core import logs
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Result, Severity
from drwatch.core.sandbox import OWNER, PREFIX, SandboxManager
from drwatch.core.secrets import read_secret
from drwatch.engine.daemon import FULL_COLLECTION_INTERVAL, Daemon, Heap
from drwatch.engine.runner import AppState, Runner
from drwatch.engine.sdnotify import Notifier
from drwatch.http.server import HttpServer
from drwatch.metrics.collector import ProcessState
from drwatch.state.compliance import RULES, STATES
from drwatch.store import daemonlock
from drwatch.store.sqlite import SqliteStore
from drwatch.validators.base import RunContext
from tests.support.helpers import (
    DaemonProcess,
    NotifySocket,
    basic_config,
    free_port,
    metric_value,
    populate,
    read_json_lines,
    run_cli,
    sparse_file,
    write_config,
)
from tests.support.runs import open_runner

# --------------------------------------------------------------------------- a test validator


@dataclass
class Probe:
    """What the test validator saw: concurrency overall, per location and per validator; sandboxes."""

    delays: dict[str, float] = field(default_factory=dict)  # asset -> seconds to sleep
    default_delay: float = 0.0
    hash_file: Path | None = None  # hash this file (through ctx.hashes) after sleeping
    active: int = 0
    max_active: int = 0
    by_location: Counter[str] = field(default_factory=Counter)
    max_by_location: Counter[str] = field(default_factory=Counter)
    by_key: Counter[tuple[str, str]] = field(default_factory=Counter)
    max_by_key: Counter[tuple[str, str]] = field(default_factory=Counter)
    started: list[tuple[str, float]] = field(default_factory=list)  # (asset, loop time)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    sandboxes: list[Path] = field(default_factory=list)
    # Behave like a client library that swallows a cancellation: turn it into an error ("error") or carry on
    # to an ok result ("result"), as redis-py does when a cancel lands while it reads a LOADING reply.
    swallow_cancel: str | None = None

    def enter(self, key: tuple[str, str], locations: list[str]) -> None:
        self.started.append((key[0], asyncio.get_running_loop().time()))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.by_key[key] += 1
        self.max_by_key[key] = max(self.max_by_key[key], self.by_key[key])
        for loc in locations:
            self.by_location[loc] += 1
            self.max_by_location[loc] = max(self.max_by_location[loc], self.by_location[loc])

    def leave(self, key: tuple[str, str], locations: list[str]) -> None:
        self.active -= 1
        self.by_key[key] -= 1
        for loc in locations:
            self.by_location[loc] -= 1

    def started_assets(self) -> list[str]:
        return [a for a, _ in self.started]


class ProbeValidator:
    """Implements drwatch's Validator protocol: sleeps inside a sandbox, optionally hashes a file."""

    kind: ClassVar[str] = "replica"

    def __init__(self, cfg: Any, probe: Probe) -> None:
        self.cfg = cfg
        self.probe = probe

    async def run(self, ctx: RunContext) -> Report:
        probe = self.probe
        key = (ctx.asset_name, self.cfg.label)
        locations = sorted({ctx.asset.production.location, *(c.location for c in ctx.asset.copies)})
        figures: dict[str, float] = {}
        async with ctx.sandboxes.directory(ctx.run_id) as sandbox:
            assert (sandbox / OWNER).read_text() == str(os.getpid())
            probe.sandboxes.append(sandbox)
            probe.enter(key, locations)
            try:
                await asyncio.sleep(probe.delays.get(ctx.asset_name, probe.default_delay))
                if probe.hash_file is not None:
                    _digest, size = await ctx.hashes.sha256(probe.hash_file)
                    figures["bytes_hashed"] = float(size)
            except asyncio.CancelledError:
                probe.cancelled.append(ctx.asset_name)
                if probe.swallow_cancel == "error":
                    raise ValidatorError("connection_failed", "the library's own error") from None
                if probe.swallow_cancel is None:
                    raise
            finally:
                probe.leave(key, locations)
        probe.finished.append(ctx.asset_name)
        return Report(Outcome.OK, figures=figures)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Probe:
    """Registers ProbeValidator for kind 'replica' in drwatch's validator registry for this test."""
    p = Probe()
    monkeypatch.setitem(validators.REGISTRY, "replica", lambda cfg: ProbeValidator(cfg, p))
    return p


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo logs.configure(): structlog defaults and the root logger's handlers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


def probe_config(tmp: Path, assets: dict[str, str], *, limits: dict[str, Any] | None = None,
                 location_options: dict[str, dict[str, Any]] | None = None, every: str = "1h",
                 jitter: str = "100ms") -> dict[str, Any]:
    """One asset per entry (name -> its production location); each has one validator 'replica'."""
    locations: dict[str, Any] = {}
    for loc in sorted(set(assets.values())):
        locations[loc] = {"kind": "filesystem", "path": str(tmp / loc), **(location_options or {}).get(loc, {})}
    return {
        "store": {"sqlite": str(tmp / "state.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "limits": {"sandbox_dir": str(tmp / "sandboxes"), "drain_timeout": "5s", **(limits or {})},
        "locations": locations,
        "assets": {
            name: {"rpo": "1d", "production": {"location": loc, "prefix": name},
                   "validators": [{"kind": "replica", "schedule": {"every": every, "jitter": jitter}}]}
            for name, loc in assets.items()
        },
    }


async def wait_until(predicate: Any, within: float = 10, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {within}s")
        await asyncio.sleep(0.01)


@dataclass
class InProcess:
    daemon: Daemon
    task: asyncio.Task[int]


@contextlib.asynccontextmanager
async def in_process_daemon(path: Path) -> AsyncIterator[InProcess]:
    """Daemon(...).run() on this loop (no systemd socket); waits for ready; stops and checks exit 0."""
    daemon = Daemon(load_config(path), str(path), notifier=Notifier(env={}))
    task = asyncio.create_task(daemon.run())

    def ready() -> bool:
        if task.done():
            task.result()  # raise what made it stop
            raise AssertionError(f"daemon stopped before ready: {task.result()}")
        return daemon.state is not None and daemon.state.ready

    await wait_until(ready, what="daemon ready")
    try:
        yield InProcess(daemon, task)
    finally:
        if not task.done():
            daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


@contextlib.asynccontextmanager
async def launching_runner(path: Path) -> AsyncIterator[Runner]:
    """A Runner on the config's real SQLite store, without daemon or scheduler (runs are launched by the test and
    drained at the end)."""
    cfg = load_config(path)
    assert cfg.limits.sandbox_dir is not None
    async with open_runner(cfg, cfg.resolve_path(cfg.limits.sandbox_dir)) as runner:
        try:
            yield runner
        finally:
            await runner.drain(5)


async def history(cfg_path: Path, asset: str) -> list[Result]:
    store = SqliteStore(load_config(cfg_path).sqlite_path())
    await store.open()
    try:
        return await store.history(asset)
    finally:
        await store.close()


def history_sync(cfg_path: Path, asset: str) -> list[Result]:
    return asyncio.run(history(cfg_path, asset))


def replica_every(every: str = "1h", jitter: str = "1s") -> dict[str, Any]:
    return {"kind": "replica", "schedule": {"every": every, "jitter": jitter}}


# --------------------------------------------------------------------------- systemd notify


def test_notify_ready_watchdog_reload_and_stopping(tmp_path: Path) -> None:
    """`drwatch run` speaks sd_notify on $NOTIFY_SOCKET: READY=1 with a STATUS once serving, WATCHDOG=1 every
    WATCHDOG_USEC/2 from the event loop, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a SIGHUP
    reload, and STOPPING=1 on SIGTERM before it exits 0."""
    populate(tmp_path)
    port = free_port()
    path = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, http_port=port, validator=replica_every()))
    notify = NotifySocket()
    daemon = DaemonProcess(path, port, env=notify.env(watchdog_usec=1_000_000))
    try:
        daemon.start()
        ready = notify.wait_for("READY")
        status = notify.messages[ready][1].get("STATUS", "")
        assert "1 assets" in status, notify.messages[ready]

        notify.collect(2.3)
        pings = [t for t, m in notify.messages[ready:] if m.get("WATCHDOG") == "1"]
        assert len(pings) >= 3, notify.messages
        gaps = sorted(b - a for a, b in itertools.pairwise(pings))
        median = gaps[len(gaps) // 2]
        assert 0.35 <= median <= 0.7, gaps  # about half of WATCHDOG_USEC=1s

        mark = len(notify.messages)
        daemon.signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING", start=mark)
        assert int(notify.messages[reloading][1]["MONOTONIC_USEC"]) > 0
        after = notify.wait_for("READY", start=reloading + 1)
        assert notify.messages[after][1].get("STATUS"), notify.messages[after]

        mark = len(notify.messages)
        daemon.signal(signal.SIGTERM)
        notify.wait_for("STOPPING", start=mark)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=15) == 0, daemon.log()
    finally:
        daemon.stop()
        notify.close()


def test_watchdog_and_sighup_during_a_slow_start(tmp_path: Path) -> None:
    """While start-up waits for a busy store (another process holds the SQLite write lock), drwatch already
    pings the watchdog, and a SIGHUP in that window neither kills it nor gets lost: the new config is applied
    once drwatch is ready."""
    populate(tmp_path)
    port = free_port()
    data = basic_config(tmp_path, http_port=port, validator=replica_every())
    path = write_config(tmp_path / "drwatch.yaml", data)
    db = load_config(path).sqlite_path()

    async def create_store() -> None:
        store = SqliteStore(db)
        await store.open()
        await store.close()

    asyncio.run(create_store())
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # drwatch's store open now waits for this lock
    notify = NotifySocket()
    daemon = DaemonProcess(path, port, env=notify.env(watchdog_usec=1_000_000))
    try:
        daemon.start(wait_ready=False)
        notify.wait_for("WATCHDOG", timeout=20)
        time.sleep(0.3)
        assert not [m for _, m in notify.messages if "READY" in m], notify.messages
        changed = copy.deepcopy(data)
        changed["assets"]["extra"] = copy.deepcopy(data["assets"]["data"])
        write_config(path, changed)
        daemon.signal(signal.SIGHUP)
        time.sleep(0.3)
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
        holder.execute("ROLLBACK")
        daemon.wait_ready()
        wait_metric(daemon, "drwatch_validator_info", 1, asset="extra")
        assert daemon.stop() == 0
    finally:
        holder.close()
        daemon.stop()
        notify.close()


# --------------------------------------------------------------------------- reload


def wait_metric(daemon: DaemonProcess, name: str, value: float, **labels: str) -> str:
    """Scrape until the sample has ``value``; returns that scrape."""

    def scrape() -> str | None:
        text = daemon.metrics()
        return text if metric_value(text, name, **labels) == value else None

    result: str = daemon.wait_for(scrape)
    return result


def test_reload_applies_valid_and_rejects_invalid_configs(tmp_path: Path) -> None:
    """SIGHUP and POST /-/reload apply a valid changed config (a new asset appears in /metrics, reload
    success 1, its timestamp advances). An invalid config (malformed YAML, unknown location) is rejected: the
    running config stays, drwatch_config_last_reload_successful drops to 0, POST answers 500 naming the
    problem (line/column or field path), the process stays up. Fixing the file and reloading restores 1."""
    populate(tmp_path)
    port = free_port()
    data = basic_config(tmp_path, http_port=port, validator=replica_every())
    path = write_config(tmp_path / "drwatch.yaml", data)
    daemon = DaemonProcess(path, port)
    try:
        daemon.start()
        m = daemon.metrics()
        assert metric_value(m, "drwatch_config_last_reload_successful") == 1
        ts0 = metric_value(m, "drwatch_config_last_reload_success_timestamp_seconds")
        assert ts0 is not None
        assert metric_value(m, "drwatch_validator_info", asset="extra") is None

        # 1. valid change via SIGHUP
        changed = copy.deepcopy(data)
        changed["assets"]["extra"] = copy.deepcopy(data["assets"]["data"])
        write_config(path, changed)
        daemon.signal(signal.SIGHUP)
        m = wait_metric(daemon, "drwatch_validator_info", 1, asset="extra")
        assert metric_value(m, "drwatch_config_last_reload_successful") == 1
        ts1 = metric_value(m, "drwatch_config_last_reload_success_timestamp_seconds")
        assert ts1 is not None and ts1 > ts0

        # 2. unknown location via SIGHUP: rejected, the old config keeps running
        broken = copy.deepcopy(changed)
        broken["assets"]["data"]["production"]["location"] = "nowhere"
        broken["assets"].pop("extra")
        write_config(path, broken)
        daemon.signal(signal.SIGHUP)
        m = wait_metric(daemon, "drwatch_config_last_reload_successful", 0)
        assert metric_value(m, "drwatch_validator_info", asset="extra") == 1
        assert metric_value(m, "drwatch_config_last_reload_success_timestamp_seconds") == ts1
        daemon.wait_for(lambda: "assets.data.production.location" in daemon.log())

        # 3. fix it via POST
        write_config(path, changed)
        code, body = daemon.post("/-/reload")
        assert code == 200, body
        m = daemon.metrics()
        assert metric_value(m, "drwatch_config_last_reload_successful") == 1
        ts2 = metric_value(m, "drwatch_config_last_reload_success_timestamp_seconds")
        assert ts2 is not None and ts2 > ts1

        # 3b. a truncated (empty) file via POST: rejected, every asset keeps being watched
        path.write_text("")
        code, body = daemon.post("/-/reload")
        assert code == 500 and "empty" in body, body
        m = daemon.metrics()
        assert metric_value(m, "drwatch_config_last_reload_successful") == 0
        assert metric_value(m, "drwatch_validator_info", asset="extra") == 1
        write_config(path, changed)
        assert daemon.post("/-/reload")[0] == 200

        # 4. malformed YAML via POST: 500 with line/column
        path.write_text("assets: [unclosed\n  data: {\n")
        code, body = daemon.post("/-/reload")
        assert code == 500
        assert "malformed YAML" in body and "line " in body, body
        m = daemon.metrics()
        assert metric_value(m, "drwatch_config_last_reload_successful") == 0
        assert metric_value(m, "drwatch_validator_info", asset="extra") == 1

        # 5. unknown location via POST: 500 with the field path
        write_config(path, broken)
        code, body = daemon.post("/-/reload")
        assert code == 500
        assert "assets.data.production.location" in body and "nowhere" in body, body
        assert daemon.get("/-/healthy")[0] == 200
        status = json.loads(daemon.get("/api/v1/status")[1])
        assert set(status["assets"]) == {"data", "extra"}

        # 6. fixed again via SIGHUP
        write_config(path, data)
        daemon.signal(signal.SIGHUP)
        m = wait_metric(daemon, "drwatch_config_last_reload_successful", 1)
        assert metric_value(m, "drwatch_validator_info", asset="extra") is None
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.stop()


async def test_reload_applies_new_concurrency_limits(tmp_path: Path, probe: Probe) -> None:
    """A reload that raises limits.max_concurrent takes effect for runs started after it."""
    path = write_config(tmp_path / "drwatch.yaml", probe_config(
        tmp_path, {"a": "la", "b": "lb", "c": "lc"}, limits={"max_concurrent": 1}))
    probe.default_delay = 0.3
    async with in_process_daemon(path) as proc:
        runner = proc.daemon.runner
        assert runner is not None
        await wait_until(lambda: len(probe.finished) == 3, what="first runs")
        assert probe.max_active == 1

        data = probe_config(tmp_path, {"a": "la", "b": "lb", "c": "lc"}, limits={"max_concurrent": 3})
        write_config(path, data)
        assert await proc.daemon.reload() == (True, [])
        probe.max_active = 0
        for name in ("a", "b", "c"):
            assert runner.launch(name, "replica")
        await wait_until(lambda: len(probe.finished) == 6, what="runs after reload")
        assert probe.max_active == 3


async def test_reload_changing_hash_workers_keeps_running_runs_intact(tmp_path: Path, probe: Probe) -> None:
    """A reload that changes limits.hash_workers swaps the hash pool without breaking a run that is using
    the old one: the run hashes after the reload and still ends ok."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(1 << 20))
    probe.hash_file = blob
    probe.delays["a"] = 0.8
    path = write_config(tmp_path / "drwatch.yaml", probe_config(tmp_path, {"a": "la"}, limits={"hash_workers": 1}))
    async with in_process_daemon(path) as proc:
        await wait_until(lambda: probe.active == 1, what="run started")
        write_config(path, probe_config(tmp_path, {"a": "la"}, limits={"hash_workers": 3}))
        assert await proc.daemon.reload() == (True, [])
        await wait_until(lambda: probe.active == 0, what="run finished")
        await wait_until(lambda: proc.daemon.runner is not None and not proc.daemon.runner.running)
    results = await history(path, "a")
    assert [r.outcome for r in results] == [Outcome.OK], [r.findings for r in results]
    assert results[0].figures["bytes_hashed"] == float(1 << 20)


# --------------------------------------------------------------------------- SIGTERM drain


async def test_sigterm_drains_then_cancels_and_records_cancelled(tmp_path: Path, probe: Probe) -> None:
    """On SIGTERM a run that finishes within limits.drain_timeout is waited for (ok is recorded); one that
    does not is cancelled at the drain timeout, a `cancelled` result is recorded in the store, its sandbox
    is removed, and run() returns 0 promptly."""
    probe.delays.update({"quick": 0.6, "stuck": 120})
    path = write_config(tmp_path / "drwatch.yaml", probe_config(
        tmp_path, {"quick": "la", "stuck": "lb"}, limits={"drain_timeout": "1500ms"}))
    loop = asyncio.get_running_loop()
    async with in_process_daemon(path) as proc:
        await wait_until(lambda: probe.active == 2, what="both runs started")
        assert len(list((tmp_path / "sandboxes").iterdir())) == 2
        t0 = loop.time()
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's loop handler turns it into a stop request
        assert await asyncio.wait_for(asyncio.shield(proc.task), 10) == 0
        elapsed = loop.time() - t0
    assert 1.4 <= elapsed <= 4, elapsed
    assert probe.finished == ["quick"]
    assert probe.cancelled == ["stuck"]
    assert [r.outcome for r in await history(path, "quick")] == [Outcome.OK]
    stuck = await history(path, "stuck")
    assert [r.outcome for r in stuck] == [Outcome.CANCELLED]
    assert stuck[0].findings[0].code == "cancelled"
    assert all(not p.exists() for p in probe.sandboxes)
    assert list((tmp_path / "sandboxes").iterdir()) == []


@pytest.mark.parametrize("swallow", ["error", "result"])
async def test_a_cancel_a_validator_swallowed_is_still_a_cancel(tmp_path: Path, probe: Probe, swallow: str) -> None:
    """A validator whose library swallows the cancellation (turns it into its own error, or goes on to a
    result): the run is recorded `cancelled`, not `error` or `ok`, and the cancellation reaches the caller."""
    probe.delays["a"] = 120
    probe.swallow_cancel = swallow
    path = write_config(tmp_path / "drwatch.yaml", probe_config(tmp_path, {"a": "la"}))
    async with launching_runner(path) as runner:
        assert runner.launch("a", "replica") is True
        task = runner.running[("a", "replica")]
        await wait_until(lambda: probe.active == 1, what="run started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert probe.cancelled == ["a"]
    outcomes = [r.outcome for r in await history(path, "a")]
    assert outcomes == [Outcome.CANCELLED], outcomes


async def test_a_validator_whose_task_group_child_fails_is_error_not_cancelled(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A validator running probes in a task group whose child fails after the group's body ended: on Python 3.11
    asyncio's TaskGroup cancels its own task to wake it and never withdraws the request, so the run read as
    cancelled (a swallowed cancel) and a bug or failure of the validator vanished into `cancelled`. drwatch's
    TaskGroup (core.cancels) withdraws it: the run ends `error` with the crash, and a real cancel still cancels."""
    from drwatch.core.cancels import TaskGroup

    class Grouped:
        kind: ClassVar[str] = "replica"

        def __init__(self, cfg: Any) -> None:
            self.cfg = cfg

        async def run(self, ctx: RunContext) -> Report:
            async def fails() -> None:
                await asyncio.sleep(0.01)
                raise ValueError("a probe's bug")

            async with TaskGroup() as tg:
                tg.create_task(fails())
                tg.create_task(asyncio.sleep(5))
            return Report(Outcome.OK)

    monkeypatch.setitem(validators.REGISTRY, "replica", Grouped)
    path = write_config(tmp_path / "drwatch.yaml", probe_config(tmp_path, {"a": "la"}))
    async with launching_runner(path) as runner:
        assert runner.launch("a", "replica") is True
        await asyncio.gather(*runner.running.values())
        assert runner.launch("a", "replica") is True
        task = runner.running[("a", "replica")]
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    results = await history(path, "a")
    assert [r.outcome for r in results] == [Outcome.CANCELLED, Outcome.ERROR], [r.findings for r in results]
    assert results[1].findings[0].code == "internal_error"


async def test_queued_runs_do_not_start_during_drain(tmp_path: Path, probe: Probe) -> None:
    """Runs waiting for a concurrency slot when SIGTERM arrives never start: the drain waits only for the
    runs already executing, then the daemon stops."""
    probe.default_delay = 0.8
    path = write_config(tmp_path / "drwatch.yaml", probe_config(
        tmp_path, {"a": "la", "b": "lb", "c": "lc"}, limits={"max_concurrent": 1, "drain_timeout": "10s"}))
    loop = asyncio.get_running_loop()
    async with in_process_daemon(path) as proc:
        runner = proc.daemon.runner
        assert runner is not None
        await wait_until(lambda: probe.active == 1 and len(runner.running) == 3, what="one running, two queued")
        t0 = loop.time()
        proc.daemon.request_stop()
        assert await asyncio.wait_for(asyncio.shield(proc.task), 10) == 0
        elapsed = loop.time() - t0
    assert len(probe.started) == 1, probe.started
    assert len(probe.finished) == 1
    assert elapsed < 2, elapsed


def test_sigterm_cancels_a_slow_replica_run_and_exits_zero(tmp_path: Path) -> None:
    """A real `drwatch run` whose replica run is still hashing (large sparse files, one hash worker) when
    SIGTERM arrives waits limits.drain_timeout, cancels the run, records a `cancelled` result, leaves no
    sandbox behind, and exits 0 promptly."""
    files = 40
    for root in ("prod", "copy1"):
        for i in range(files):
            sparse_file(tmp_path / root / "data" / f"part-{i:03d}.bin", 64 << 20)  # 2.5 GiB per copy
    port = free_port()
    data = basic_config(tmp_path, copies=1, http_port=port, validator=replica_every(jitter="200ms"))
    data["limits"] = {"hash_workers": 1, "drain_timeout": "500ms", "sandbox_dir": str(tmp_path / "sandboxes")}
    path = write_config(tmp_path / "drwatch.yaml", data)
    daemon = DaemonProcess(path, port)
    try:
        daemon.start()
        daemon.wait_for(lambda: "run_started" in daemon.log(), interval=0.05)
        time.sleep(0.3)
        assert "run_finished" not in daemon.log(), "the replica run was not slow enough"
        t0 = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=30) == 0, daemon.log()
        elapsed = time.monotonic() - t0
    finally:
        daemon.stop()
    events = [e["event"] for e in read_json_lines(_json_part(daemon.log()))]
    assert "drain_timeout_cancelling" in events and "run_cancelled" in events, events
    assert "run_finished" not in events
    assert elapsed < 0.5 + 3, elapsed
    results = history_sync(path, "data")
    assert [r.outcome for r in results] == [Outcome.CANCELLED]
    sandboxes = tmp_path / "sandboxes"
    assert not sandboxes.exists() or list(sandboxes.iterdir()) == []


def test_a_second_daemon_on_the_same_sqlite_store_is_refused(tmp_path: Path) -> None:
    """Two `drwatch run` on one SQLite store (another port: a second unit, a forgotten shell) would run every
    validator twice: the second exits 69 naming the first's pid, the first keeps running. A first one killed
    with SIGKILL leaves nothing that blocks the next start (the kernel drops the lock); `check` runs beside it."""
    populate(tmp_path)
    ports = free_port(), free_port()
    paths = [write_config(tmp_path / f"drwatch-{i}.yaml", basic_config(tmp_path, http_port=port,
                                                                       validator=replica_every()))
             for i, port in enumerate(ports)]
    first, second = DaemonProcess(paths[0], ports[0]), DaemonProcess(paths[1], ports[1])
    again = DaemonProcess(paths[1], ports[1], log_path=tmp_path / "again.log")
    try:
        first.start()
        second.start(wait_ready=False)
        assert second.proc is not None and second.proc.wait(timeout=30) == 69, second.log()
        assert first.proc is not None
        assert f"another drwatch daemon (pid {first.proc.pid}) runs on the SQLite store" in second.log()
        assert first.proc.poll() is None and first.get("/-/ready")[0] == 200
        checked = run_cli("check", "--config", str(paths[1]))
        assert checked.returncode in (0, 1) and "store_in_use" not in checked.stderr, checked.stderr  # 1: media
        first.proc.kill()
        first.proc.wait(timeout=10)
        again.start()
        assert again.get("/-/ready")[0] == 200
    finally:
        for daemon in (first, second, again):
            if daemon.proc is not None:
                daemon.stop()


# --------------------------------------------------------------------------- sandboxes


async def test_orphaned_sandboxes_are_swept_at_start(tmp_path: Path, probe: Probe) -> None:
    """At start the daemon removes sandboxes whose owner process is gone (and logs it), or whose owner PID now
    belongs to a process started after the sandbox was made (PID reuse), and keeps those of a live owner."""
    root = tmp_path / "sandboxes"
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    live = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        orphan = root / f"{PREFIX}{uuid.uuid4().hex}"
        (orphan / "restore").mkdir(parents=True)
        (orphan / OWNER).write_text(str(dead.pid))
        (orphan / "restore" / "dump.sql").write_text("x" * 1000)
        kept = root / f"{PREFIX}{uuid.uuid4().hex}"
        kept.mkdir()
        (kept / OWNER).write_text(str(live.pid))
        reused = root / f"{PREFIX}{uuid.uuid4().hex}"
        reused.mkdir()
        (reused / OWNER).write_text(str(live.pid))
        an_hour_ago = time.time() - 3600
        os.utime(reused / OWNER, (an_hour_ago, an_hour_ago))  # made long before `live` started
        probe.default_delay = 0
        path = write_config(tmp_path / "drwatch.yaml", probe_config(tmp_path, {"a": "la"}))
        with structlog.testing.capture_logs() as captured:
            async with in_process_daemon(path):
                pass
        assert not orphan.exists()
        assert not reused.exists()
        assert kept.exists()
        swept = [e for e in captured if e["event"] == "orphaned_sandboxes_removed"]
        assert len(swept) == 1 and swept[0]["count"] == 2, captured
    finally:
        live.kill()
        await live.wait()


async def test_a_daemon_refused_for_a_store_in_use_touches_no_sandbox(tmp_path: Path, probe: Probe) -> None:
    """A second daemon on a SQLite store in use is refused before it does anything: it does not sweep the
    sandboxes (the first daemon's runs may look orphaned to it: another PID namespace, a container sharing the
    volume, shows their owner as gone)."""
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    looks_orphaned = tmp_path / "sandboxes" / f"{PREFIX}{uuid.uuid4().hex}"
    looks_orphaned.mkdir(parents=True)
    (looks_orphaned / OWNER).write_text(str(dead.pid))
    path = write_config(tmp_path / "drwatch.yaml", probe_config(tmp_path, {"a": "la"}))
    held = await asyncio.to_thread(daemonlock.claim, load_config(path).sqlite_path())  # the first daemon's lock
    try:
        with pytest.raises(ValidatorError) as refused:
            await Daemon(load_config(path), str(path), notifier=Notifier(env={})).run()
    finally:
        os.close(held)
    assert refused.value.code == "store_in_use"
    assert looks_orphaned.exists()


async def test_sandbox_is_removed_when_cancelled_while_being_created(tmp_path: Path) -> None:
    """A run cancelled while its sandbox directory is being created (in a worker thread) leaves no
    directory behind."""
    manager = SandboxManager(tmp_path / "sandboxes")

    async def use() -> None:
        async with manager.directory(uuid.uuid4().hex):
            await asyncio.sleep(60)

    task = asyncio.create_task(use())
    await asyncio.sleep(0)  # the task is now waiting for the worker thread that creates the directory
    time.sleep(0.3)  # noqa: ASYNC251 - block the loop on purpose: the thread finishes before the loop sees it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert manager.existing() == []


async def test_sandbox_written_into_while_it_is_removed_is_still_removed(tmp_path: Path) -> None:
    """A step of the run still writing into its sandbox from a worker thread while the run ends (cancelled: the
    thread was not waited for) does not leave the directory behind: rmtree meets a directory that is not empty
    (a file created after it listed the directory) and the removal is tried again until it is gone."""
    manager = SandboxManager(tmp_path / "sandboxes")
    stop = threading.Event()
    written: list[int] = []

    def straggler(where: Path) -> None:  # files keep appearing until the directory itself is gone
        n = 0
        deadline = time.monotonic() + 1.0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                (where / f"f{n}").write_bytes(b"x")
            except FileNotFoundError:
                break
            n += 1
        written.append(n)

    async with manager.directory(uuid.uuid4().hex) as sandbox:
        for i in range(200):
            (sandbox / f"seed{i}").write_bytes(b"x")  # a listing long enough for new files to land behind it
        thread = threading.Thread(target=straggler, args=(sandbox,))
        thread.start()
        await asyncio.sleep(0.05)
    alive = thread.is_alive()
    stop.set()
    thread.join()
    assert manager.existing() == [], f"sandbox left behind (straggler still writing at the end: {alive})"
    assert written and written[0] > 0


# --------------------------------------------------------------------------- HTTP


async def test_http_endpoints(tmp_path: Path, probe: Probe) -> None:
    """/-/healthy 200; /-/ready 200 once ready (503 before); /metrics in the Prometheus text format;
    /api/v1/status as JSON {assets: {NAME: {compliant, rules: {RULE: {state, detail}}}}, results: [...]};
    an unknown path 404; GET /-/reload 405."""
    path = write_config(tmp_path / "drwatch.yaml", probe_config(tmp_path, {"a": "la", "b": "lb"}))
    async with in_process_daemon(path) as proc, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{proc.daemon.http_port}"
        await wait_until(lambda: len(probe.finished) == 2, what="first runs")
        await wait_until(lambda: proc.daemon.runner is not None and not proc.daemon.runner.running)
        async with http.get(f"{base}/-/healthy") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/-/ready") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            ctype = resp.headers["Content-Type"]
            assert ctype.startswith("text/plain") and "version=" in ctype, ctype
            text = await resp.text()
        assert metric_value(text, "drwatch_validator_runs_total", asset="a", outcome="ok") == 1
        async with http.get(f"{base}/api/v1/status") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
            doc = await resp.json()
        assert set(doc["assets"]) == {"a", "b"}
        for asset in doc["assets"].values():
            assert isinstance(asset["compliant"], bool)
            assert set(asset["rules"]) == set(RULES)
            for rule in asset["rules"].values():
                assert rule["state"] in STATES and isinstance(rule["detail"], str)
        assert sorted((r["asset"], r["validator"], r["outcome"]) for r in doc["results"]) == [
            ("a", "replica", "ok"), ("b", "replica", "ok")]
        async with http.get(f"{base}/no/such/path") as resp:
            assert resp.status == 404
        async with http.get(f"{base}/-/reload") as resp:
            assert resp.status == 405

        # Before the daemon is ready, /-/ready answers 503 (a second server on the same, not-ready state).
        assert proc.daemon.state is not None
        state = AppState(proc.daemon.state.config, proc.daemon.state.snapshot, ProcessState(time.time()))
        server = HttpServer(state, proc.daemon.reload)
        await server.start("127.0.0.1", 0)
        try:
            async with http.get(f"http://127.0.0.1:{server.port}/-/ready") as resp:
                assert resp.status == 503
            state.ready = True
            async with http.get(f"http://127.0.0.1:{server.port}/-/ready") as resp:
                assert resp.status == 200
        finally:
            await server.stop()


# --------------------------------------------------------------------------- overlap and concurrency


async def test_a_validator_never_overlaps_itself(tmp_path: Path, probe: Probe) -> None:
    """Runner.launch refuses a second run of a validator while the first is running and accepts one after it
    finished; with a schedule shorter than the run, scheduled runs are skipped, never overlapped."""
    probe.default_delay = 0.4
    path = write_config(tmp_path / "drwatch.yaml", probe_config(tmp_path, {"a": "la"}))
    async with launching_runner(path) as runner:
        assert runner.launch("a", "replica") is True
        assert runner.launch("a", "replica") is False
        await wait_until(lambda: probe.active == 1)
        assert runner.launch("a", "replica") is False
        await asyncio.gather(*runner.running.values())
        assert runner.launch("a", "replica") is True
        await asyncio.gather(*runner.running.values())
    assert len(probe.started) == 2
    assert probe.max_by_key[("a", "replica")] == 1

    probe.started.clear()
    probe.default_delay = 1.3
    path = write_config(tmp_path / "sched" / "drwatch.yaml", probe_config(
        tmp_path / "sched", {"s": "ls"}, every="1s", jitter="100ms"))
    with structlog.testing.capture_logs() as captured:
        async with in_process_daemon(path):
            await asyncio.sleep(3.2)
    skipped = [e for e in captured if e["event"] == "run_skipped_overlap"]
    assert skipped, [e["event"] for e in captured]
    assert len(probe.started) >= 2
    assert probe.max_by_key[("s", "replica")] == 1
    starts = [t for _, t in probe.started]
    assert all(b - a >= 1.3 for a, b in itertools.pairwise(starts)), starts


async def test_global_concurrency_limit(tmp_path: Path, probe: Probe) -> None:
    """No more than limits.max_concurrent validators run at once, and that many do run together."""
    probe.default_delay = 0.3
    assets = {f"a{i}": f"l{i}" for i in range(6)}
    path = write_config(tmp_path / "drwatch.yaml", probe_config(
        tmp_path, assets, limits={"max_concurrent": 2, "per_location": 5}))
    async with launching_runner(path) as runner:
        for name in assets:
            assert runner.launch(name, "replica")
        await asyncio.gather(*runner.running.values())
    assert len(probe.finished) == 6
    assert probe.max_active == 2


async def test_per_location_concurrency_limits(tmp_path: Path, probe: Probe) -> None:
    """limits.per_location bounds runs touching one location; a location's max_concurrency overrides it."""
    probe.default_delay = 0.3
    assets = {"s1": "shared", "s2": "shared", "s3": "shared", "w1": "wide", "w2": "wide", "w3": "wide",
              "w4": "wide"}
    path = write_config(tmp_path / "drwatch.yaml", probe_config(
        tmp_path, assets, limits={"max_concurrent": 20, "per_location": 1},
        location_options={"wide": {"max_concurrency": 3}}))
    async with launching_runner(path) as runner:
        for name in assets:
            assert runner.launch(name, "replica")
        await asyncio.gather(*runner.running.values())
    assert len(probe.finished) == 7
    assert probe.max_by_location["shared"] == 1
    assert probe.max_by_location["wide"] == 3
    assert probe.max_active == 4


# --------------------------------------------------------------------------- first run


async def test_first_run_happens_soon_after_start(tmp_path: Path, probe: Probe) -> None:
    """A validator without a stored result runs within its jitter after start, not an interval later; one
    whose last run is recent waits for its next period."""
    path = write_config(tmp_path / "drwatch.yaml", probe_config(
        tmp_path, {"fresh": "la", "recent": "lb"}, every="1h", jitter="1s"))
    store = SqliteStore(load_config(path).sqlite_path())
    await store.open()
    finished = time.time() - 60
    await store.record(Result(run_id=uuid.uuid4().hex, asset="recent", validator="replica", kind="replica",
                              outcome=Outcome.OK, started_at=finished - 1, finished_at=finished))
    await store.close()

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with in_process_daemon(path) as proc:
        await wait_until(lambda: "fresh" in probe.started_assets(), within=5, what="first run of 'fresh'")
        assert probe.started[0][1] - t0 <= 1 + 1.5  # jitter 1s, plus start-up
        await asyncio.sleep(1.2)
        assert probe.started_assets() == ["fresh"]
        assert proc.daemon.scheduler is not None
        nxt = proc.daemon.scheduler.next_runs()
        assert finished + 3600 - 1 <= nxt[("recent", "replica")] <= finished + 3600 + 2
        assert nxt[("fresh", "replica")] >= time.time() + 3600 - 10


# --------------------------------------------------------------------------- logs and secrets


def _json_part(log: str) -> str:
    # cli/run.py cmd_run prints one human line ("drwatch: serving metrics on ...") to stderr even when it is not a
    # tty; that is the CLI's (reported separately). Everything drwatch *logs* must be JSON.
    return "\n".join(line for line in log.splitlines() if not line.startswith("drwatch: serving metrics on "))


def test_logs_are_json_with_run_context_and_no_secret(tmp_path: Path, pg_server: Any) -> None:
    """With stderr not a tty, `drwatch run` logs JSON lines; run events carry run_id, asset and validator; the
    password of the PostgreSQL store DSN (read via dsn_env) never appears in the log."""
    populate(tmp_path)
    password = "pw-" + uuid.uuid4().hex
    dsn = pg_server.create_database(f"drwatch_logs_{os.getpid()}").replace("postgres@", f"postgres:{password}@", 1)
    assert password in dsn
    port = free_port()
    data = basic_config(tmp_path, http_port=port, store={"postgres": {"dsn_env": "DRWATCH_LOG_TEST_DSN"}},
                        validator=replica_every(jitter="200ms"))
    path = write_config(tmp_path / "drwatch.yaml", data)
    daemon = DaemonProcess(path, port, env={"DRWATCH_LOG_TEST_DSN": dsn})
    try:
        daemon.start()
        daemon.wait_for(lambda: "run_finished" in daemon.log())
        changed = copy.deepcopy(data)
        changed["store"] = {"postgres": {"dsn_env": "DRWATCH_LOG_TEST_DSN", "pool_max": 2}}  # restart required
        write_config(path, changed)
        assert daemon.post("/-/reload")[0] == 200
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    log = daemon.log()
    assert password not in log
    events = read_json_lines(_json_part(log))
    names = [e["event"] for e in events]
    for expected in ("started", "run_started", "run_finished", "restart_required", "reload_applied", "stopped"):
        assert expected in names, names
    assert all({"event", "level", "timestamp"} <= set(e) for e in events)
    runs = [e for e in events if e["event"] in ("run_started", "run_finished")]
    assert runs
    for event in runs:
        assert event["asset"] == "data" and event["validator"] == "replica", event
        assert len(event["run_id"]) == 32, event
    assert len({e["run_id"] for e in runs}) == 1


def test_secret_values_never_reach_log_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              restore_logging: None) -> None:
    """Every value read through drwatch.core.secrets.read_secret is redacted from log output: in messages, nested
    values, exception objects passed as values, tracebacks, and records of other libraries' stdlib loggers,
    which are rendered as JSON lines as well."""
    secret = "Sec-" + uuid.uuid4().hex
    monkeypatch.setenv("DRWATCH_TEST_SECRET", secret)
    value = read_secret("store.postgres", env="DRWATCH_TEST_SECRET", file=None, base_dir=tmp_path)
    dsn = f"postgresql://drwatch:{value}@db/x"
    redacted = "postgresql://drwatch:<redacted>@db/x"
    stream = io.StringIO()
    logs.configure("info", "auto", stream=stream)
    log = structlog.get_logger("drwatch.test")
    log.info("connecting", dsn=dsn, nested={"urls": [dsn, "other"]}, pair=("a", dsn))
    log.warning("connect_failed", error=ConnectionError(f"cannot reach {dsn}"), path=Path(f"/tmp/{secret}"))
    try:
        raise RuntimeError(f"boom with {dsn}")
    except RuntimeError:
        log.exception("crashed")
    logging.getLogger("aiohttp.server").error("request for %s failed", dsn)
    output = stream.getvalue()
    assert secret not in output
    events = {e["event"]: e for e in read_json_lines(output)}
    assert set(events) == {"connecting", "connect_failed", "crashed", f"request for {redacted} failed"}
    assert events["connecting"]["dsn"] == redacted
    assert events["connecting"]["nested"] == {"urls": [redacted, "other"]}
    assert events["connecting"]["pair"] == ["a", redacted]
    assert events[f"request for {redacted} failed"]["logger"] == "aiohttp.server"
    assert "<redacted>" in events["connect_failed"]["error"]
    assert f"RuntimeError: boom with {redacted}" in events["crashed"]["exception"]

    with structlog.testing.capture_logs(processors=[logs.redact_secrets]) as captured:
        structlog.get_logger("drwatch.test").info("captured", dsn=dsn)
    assert captured[0]["dsn"] == redacted


async def test_secret_values_never_reach_stored_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finding whose text holds a secret drwatch read (a library's error echoing a DSN, in a failed run's
    finding or a ValidatorError's message) is stored with the value redacted: the store, and so the status page,
    the API and reports, never hold it (before, only log output was redacted)."""
    secret = "Sec-" + uuid.uuid4().hex
    monkeypatch.setenv("DRWATCH_TEST_FINDING_SECRET", secret)
    value = read_secret("store.postgres", env="DRWATCH_TEST_FINDING_SECRET", file=None, base_dir=tmp_path)
    dsn = f"postgresql://drwatch:{value}@db/x"

    class Leaky:
        def __init__(self, cfg: Any) -> None:
            self.cfg = cfg

        async def run(self, ctx: RunContext) -> Report:
            if ctx.asset_name == "a":
                return Report(Outcome.FAILED, (Finding(Severity.CRITICAL, "missing_file", f"{dsn} refused",
                                                       f"copy/{value}"),))
            raise ValidatorError("connection_failed", f"cannot reach {dsn}")

    monkeypatch.setitem(validators.REGISTRY, "replica", Leaky)
    path = write_config(tmp_path / "drwatch.yaml", probe_config(tmp_path, {"a": "la", "b": "lb"}))
    async with launching_runner(path) as runner:
        assert runner.launch("a", "replica") is True and runner.launch("b", "replica") is True
        await asyncio.gather(*runner.running.values())
    stored = [*await history(path, "a"), *await history(path, "b")]
    assert [r.outcome for r in stored] == [Outcome.FAILED, Outcome.ERROR]
    messages = [(f.message, f.subject) for r in stored for f in r.findings]
    assert ("postgresql://drwatch:<redacted>@db/x refused", "copy/<redacted>") in messages
    assert ("cannot reach postgresql://drwatch:<redacted>@db/x", "") in messages
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        rows = db.execute("SELECT * FROM results").fetchall()
    assert rows and secret not in repr(rows)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_format_on_a_tty_also_redacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              restore_logging: None) -> None:
    """On a tty the log is human console text, not JSON, and secrets are redacted there too (tracebacks
    included)."""
    secret = "Tty-" + uuid.uuid4().hex
    monkeypatch.setenv("DRWATCH_TEST_SECRET", secret)
    value = read_secret("store.postgres", env="DRWATCH_TEST_SECRET", file=None, base_dir=tmp_path)
    stream = _Terminal()
    logs.configure("info", "auto", stream=stream)
    log = structlog.get_logger("drwatch.test")
    log.info("connecting", dsn=f"postgresql://u:{value}@db/x")
    try:
        raise RuntimeError(f"boom {value}")
    except RuntimeError:
        log.exception("crashed")
    output = stream.getvalue()
    assert "connecting" in output and "crashed" in output and "RuntimeError: boom <redacted>" in output
    assert secret not in output
    with pytest.raises(json.JSONDecodeError):
        json.loads(output.splitlines()[0])


def test_daemon_sees_attestations_and_results_written_by_other_processes(tmp_path: Path) -> None:
    """`drwatch attest` (another process, same store) changes the running daemon's metrics without a
    restart: the daemon notices the store's revision changed and rebuilds its snapshot."""
    from tests.support.helpers import (
        DaemonProcess,
        basic_config,
        free_port,
        metric_value,
        populate,
        run_cli,
        write_config,
    )

    populate(tmp_path, copies=1)
    port = free_port()
    cfg = basic_config(tmp_path, http_port=port)
    cfg["locations"]["copy2"]["offline"] = True
    path = write_config(tmp_path / "drwatch.yaml", cfg)
    assert run_cli("check", "--config", str(path)).returncode in (1, 2)
    daemon = DaemonProcess(path, port)
    daemon.start()
    try:
        def immutable_state() -> float | None:
            return metric_value(daemon.metrics(), "drwatch_asset_rule_state", asset="data", rule="immutable",
                                state="pass")

        assert immutable_state() == 0
        assert run_cli("attest", "data", "copy2", "--note", "tape verified", "--config", str(path)).returncode == 0
        daemon.wait_for(lambda: immutable_state() == 1, timeout=25)
    finally:
        daemon.stop()


# --------------------------------------------------------------------------- heap


class _Node:
    def __init__(self) -> None:
        self.me: _Node | None = self


def test_heap_freezes_every_tick_and_collects_frozen_cycles_hourly() -> None:
    """What is alive at a tick is frozen (out of every full collection); garbage in cycles among frozen objects is
    collected by the hourly tick that unfreezes and collects everything."""
    clock = [0.0]
    heap = Heap(lambda: clock[0])
    try:
        node = _Node()
        ref = weakref.ref(node)
        heap.tick()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None  # frozen: its cycle waits for the hourly collection
        clock[0] += FULL_COLLECTION_INTERVAL - 1
        heap.tick()
        gc.collect()
        assert ref() is not None
        clock[0] += 1
        heap.tick()
        assert ref() is None and gc.get_freeze_count() > 0  # collected, and what is alive frozen again
    finally:
        gc.unfreeze()
