"""The long-running service: lifecycle, signals, reload, systemd notify, watchdog, maintenance.

One exit stack owns every resource (store, HTTP server, scheduler, runner). SIGTERM/SIGINT: stop
scheduling, drain running validators up to the drain timeout, cancel the rest (sandboxes unwind).
SIGHUP or POST /-/reload: reload; an invalid config is rejected and the running one stays.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import structlog

from drwatch.config.model import Config, HttpConfig, config_or_problem
from drwatch.config.web import WebConfig, describe, exposed_files, for_config
from drwatch.core import logs
from drwatch.core.errors import ConfigError
from drwatch.core.sandbox import SandboxManager
from drwatch.engine.runner import AppState, Runner
from drwatch.engine.scheduler import Scheduler
from drwatch.engine.sdnotify import Notifier
from drwatch.http.webconfig import WebGuard
from drwatch.metrics.collector import ProcessState
from drwatch.state.compliance import RuleState, evaluate
from drwatch.state.snapshot import Snapshot
from drwatch.store import daemonlock, open_store
from drwatch.validators import ORPHANS, PLUGINS

if TYPE_CHECKING:
    from drwatch.cluster.engine import ClusterEngine
    from drwatch.http.server import HttpServer

log = structlog.get_logger("drwatch.engine.daemon")
MAINTENANCE_INTERVAL = 10.0
FULL_COLLECTION_INTERVAL = 3600.0  # seconds between full garbage collections of the whole (unfrozen) heap
# How long a thread holding the GIL (rendering /metrics, the store's JSON, file system calls) keeps the event loop
# waiting for it, at most, each time the loop comes back from a system call: Python's default is 5 ms, paid
# several times per request served. 1 ms keeps /-/healthy and the watchdog near their own cost.
SWITCH_INTERVAL = 0.001
PRUNE_INTERVAL = 3600.0


def sandbox_manager(cfg: Config) -> SandboxManager:
    return SandboxManager(cfg.resolve_path(cfg.limits.sandbox_dir) if cfg.limits.sandbox_dir else None)


async def _sweep(cfg: Config, stack: AsyncExitStack) -> SandboxManager:
    """What crashed runs left: sandboxes on this host (removed before anything runs) and, outside it (temporary
    Pinecone indexes...), each plugin's sweep in the background (never delays readiness; every run of those kinds
    sweeps again before it starts)."""
    sandboxes = sandbox_manager(cfg)
    removed = await asyncio.to_thread(sandboxes.sweep_orphans, ORPHANS)
    if removed:
        log.warning("orphaned_sandboxes_removed", count=len(removed), root=str(sandboxes.root))
    remote_sweeps = [asyncio.create_task(p.sweep(cfg, log, 60)) for p in PLUGINS if p.sweep is not None]
    stack.push_async_callback(_cancel_all, remote_sweeps)
    return sandboxes


def summary(state: AppState, now: float) -> str:
    verdicts = evaluate(state.config, state.snapshot, now)
    ok = sum(1 for v in verdicts.values() if v.compliant)
    failing = sum(1 for v in verdicts.values() if any(r.state == RuleState.FAIL for r in v.rules.values()))
    return f"{len(verdicts)} assets: {ok} compliant, {failing} failing, {len(verdicts) - ok - failing} unknown"


class Daemon:
    def __init__(self, config: Config, config_path: str, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time,
                 on_listening: Callable[[int, str], None] | None = None) -> None:
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.clock = clock
        self._initial = config
        self._stop = asyncio.Event()
        self._on_listening = on_listening
        self.state: AppState | None = None
        self.runner: Runner | None = None
        self.scheduler: Scheduler | None = None
        self.cluster: ClusterEngine | None = None  # cluster mode: a job engine instead of the scheduler
        self.http_port = 0
        self.web_guard: WebGuard | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_requested = False
        self._reloads: set[asyncio.Task[tuple[bool, list[str]]]] = set()
        self.heap = Heap()
        self._heap_timer: asyncio.TimerHandle | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def reload(self) -> tuple[bool, list[str]]:
        assert self.state is not None and self.runner is not None
        if self._stop.is_set():
            return False, ["drwatch is shutting down; the configuration is not reloaded"]
        async with self._reload_lock:
            self.notifier.reloading()
            new, err = await asyncio.to_thread(config_or_problem, self.config_path)
            web_cfg: WebConfig | None = None
            if new is not None:  # the web config is re-read on every reload (certificate rotation)
                web_cfg, err = await asyncio.to_thread(_web_config_or_problem, new)
                new = new if err is None else None
            proc = self.state.process
            if new is None:
                assert err is not None
                problems = [str(p) for p in err.shown] + ([err.more_text] if err.more else [])
                proc.reload_successful = False
                log.error("reload_rejected", problems=problems, config=self.config_path)
                self.notifier.ready(f"reload rejected; {summary(self.state, self.clock())}")
                return False, problems
            if self.cluster is not None and not self.cluster.stage(new):
                # Cluster mode: applied (by a reload the engine triggers) once every live node has loaded it.
                proc.reload_successful = True
                self.notifier.ready(f"reload staged until every node has it; {summary(self.state, self.clock())}")
                return True, []
            old = self.state.config
            for section in ("store", "http"):
                if _without_web_file(getattr(old, section)) != _without_web_file(getattr(new, section)):
                    log.warning("restart_required", section=section,
                                message=f"changes to '{section}' take effect after a restart")
            if old.limits.sandbox_dir != new.limits.sandbox_dir:
                log.warning("restart_required", section="limits.sandbox_dir",
                            message="changes to 'limits.sandbox_dir' take effect after a restart")
            if old.logging != new.logging:
                logs.configure(new.logging.level, new.logging.format)
            self.state.config = new
            if self.web_guard is not None:
                for problem in self.web_guard.apply(web_cfg):
                    log.warning("restart_required", section="http.web_config_file", message=problem)
            await _warn_exposed(new, web_cfg)
            self.state.snapshot = self.state.snapshot.with_config(new)
            self.runner.apply_config(new)
            if self.scheduler is not None:
                self.scheduler.apply(new, self.state.snapshot)
            proc.reload_successful = True
            proc.reload_success_at = self.clock()
            self.heap.settle()
            log.info("reload_applied", assets=len(new.assets), validators=len(new.iter_validators()))
            self.notifier.ready(summary(self.state, self.clock()))
            return True, []

    async def run(self) -> int:
        cfg = self._initial
        async with AsyncExitStack() as stack:
            self._install_signals(stack)
            # Watchdog pings from the first moment to the last (drain included): they prove the loop runs.
            watchdog = asyncio.create_task(self._watchdog())
            stack.push_async_callback(_cancel_all, [watchdog])
            stack.callback(sys.setswitchinterval, sys.getswitchinterval())  # as it was (in-process tests)
            sys.setswitchinterval(SWITCH_INTERVAL)
            stack.callback(gc.unfreeze)  # what the heap froze is collected as usual again (in-process tests)
            if cfg.store.postgres is None:  # one daemon per SQLite store (cluster mode shares PostgreSQL)
                # Before anything else: a daemon refused here must not sweep the first one's sandboxes.
                stack.callback(os.close, await asyncio.to_thread(daemonlock.claim, cfg.sqlite_path()))
            sandboxes = await _sweep(cfg, stack)
            store = open_store(cfg)
            await store.open()
            stack.push_async_callback(store.close)
            stored = await store.load_state()
            process = ProcessState(started_at=self.clock())
            state = self.state = AppState(cfg, Snapshot.from_state(cfg, stored), process)
            runner = self.runner = Runner(state, store, sandboxes, self.clock)
            stack.push_async_callback(runner.aclose)
            http = await self._start_http(stack, cfg, state)
            await self._start_engine(stack, cfg, state, runner, http)

            maintenance = asyncio.create_task(self._maintenance(store, runner))
            # Its own timer: maintenance can wait long for the store (behind thousands of results being recorded).
            self._heap_timer = asyncio.get_running_loop().call_later(MAINTENANCE_INTERVAL, self._heap_tick)
            stack.callback(lambda: self._heap_timer.cancel() if self._heap_timer is not None else None)
            self.heap.settle()
            state.ready = True
            self.notifier.ready(summary(state, self.clock()))
            log.info("started", assets=len(cfg.assets), validators=len(cfg.iter_validators()),
                     store=store.backend)
            if self._reload_requested and not self._stop.is_set():
                self._on_hup()
            await self._stop.wait()
            await self._shut_down(state, runner, maintenance)
        log.info("stopped")
        return 0

    def _install_signals(self, stack: AsyncExitStack) -> None:
        """Signals first: a SIGTERM during start-up stops cleanly, and an early SIGHUP (whose default action
        would kill the process) is remembered and applied once ready."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
            stack.callback(loop.remove_signal_handler, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)

    async def _start_http(self, stack: AsyncExitStack, cfg: Config, state: AppState) -> HttpServer | None:
        from drwatch.http.server import HttpServer

        web_cfg = await asyncio.to_thread(for_config, cfg)
        await _warn_exposed(cfg, web_cfg)
        if not cfg.http.enabled:
            return None
        http = HttpServer(state, self.reload, self.clock, web_cfg)
        await http.start(cfg.http.host, cfg.http.port)
        stack.push_async_callback(http.stop)
        self.http_port = http.port
        self.web_guard = http.guard
        base = f"{http.guard.scheme}://{cfg.http.host}:{http.port}"
        log.info("listening", address=f"{base}/metrics", status=f"{base}/api/v1/status", **describe(web_cfg))
        if self._on_listening is not None:
            self._on_listening(http.port, http.guard.scheme)
        return http

    async def _start_engine(self, stack: AsyncExitStack, cfg: Config, state: AppState, runner: Runner,
                            http: HttpServer | None) -> None:
        if cfg.cluster.enabled:  # several nodes share the store: a job engine instead of the scheduler
            from drwatch.cluster.engine import cluster_dsn, open_engine
            from drwatch.metrics.cluster import ClusterCollector

            cluster = self.cluster = open_engine(state, runner, cluster_dsn(cfg), self._on_hup, self.clock)
            stack.push_async_callback(cluster.close)
            await cluster.start()
            if http is not None:
                http.registry.register(ClusterCollector(lambda: cluster.view))
        else:
            scheduler = self.scheduler = Scheduler(runner, self.clock)
            scheduler.start(cfg, state.snapshot)
            stack.callback(scheduler.shutdown)

    async def _shut_down(self, state: AppState, runner: Runner, maintenance: asyncio.Task[None]) -> None:
        log.info("stopping")
        self.notifier.stopping()
        state.ready = False
        if self.scheduler is not None:
            self.scheduler.shutdown()
        await _cancel_all(list(self._reloads))
        if self.cluster is not None:
            await self.cluster.drain(state.config.limits.drain_timeout.total_seconds())
        else:
            await runner.drain(state.config.limits.drain_timeout.total_seconds())
        await _cancel_all([maintenance])
        await runner.flush()
        if runner.pending:
            log.error("results_not_persisted", count=len(runner.pending))

    def _on_hup(self) -> None:
        if self._stop.is_set():
            log.info("reload_ignored_stopping")
            return
        if self.state is None or not self.state.ready:
            self._reload_requested = True
            return
        self._reload_requested = False
        task = asyncio.create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _maintenance(self, store: object, runner: Runner) -> None:
        assert self.state is not None
        last_prune = 0.0
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                if runner.pending:
                    await runner.flush()
                if await runner.refresh():
                    log.debug("snapshot_refreshed_from_store")
                now = self.clock()
                if now - last_prune >= PRUNE_INTERVAL:
                    cutoff = now - self.state.config.store.retention.total_seconds()
                    pruned = await runner.store.prune(cutoff)
                    last_prune = now
                    if pruned:
                        log.info("history_pruned", rows=pruned)
                if self.notifier.enabled:  # under systemd: the compliance of every asset, off the loop
                    self.notifier.status(await asyncio.to_thread(summary, self.state, now))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("maintenance_failed", error_type=type(exc).__name__)

    def _heap_tick(self) -> None:
        self._heap_timer = None
        try:
            self.heap.tick()
        finally:
            if not self._stop.is_set():
                self._heap_timer = asyncio.get_running_loop().call_later(MAINTENANCE_INTERVAL, self._heap_tick)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


class Heap:
    """Keeps full garbage collections short at thousands of assets.

    A full collection walks every object the collector tracks, the event loop stopped meanwhile: at 10,000 assets
    the config, the snapshot, the metrics' per-asset entries and the schedule are ~500,000 objects, a pause of
    0.2-0.4 s of CPU, every ten to thirty seconds as results replace the snapshot's entries. So what is alive is
    frozen (``gc.freeze``: out of every collection) after start-up, after a reload, and every maintenance tick
    (:meth:`tick`, every 10 s): a full collection then walks only what was made since the last tick. Frozen objects are
    still freed when their reference count drops (a replaced result, a replaced config); only garbage in cycles
    among them waits, for the hourly :meth:`tick` that unfreezes and collects everything (one full pause per
    :data:`FULL_COLLECTION_INTERVAL`, its cost logged at debug).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_full = clock()

    def settle(self) -> None:
        """Collect everything, then freeze what is alive (start-up and reload: the config is new)."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._last_full = self._clock()

    def tick(self) -> None:
        if self._clock() - self._last_full >= FULL_COLLECTION_INTERVAL:
            started = time.process_time()
            self.settle()
            log.debug("heap_collected", cpu_seconds=round(time.process_time() - started, 3),
                      frozen=gc.get_freeze_count())
        else:
            gc.freeze()


def _web_config_or_problem(cfg: Config) -> tuple[WebConfig | None, ConfigError | None]:
    try:
        return for_config(cfg), None
    except ConfigError as exc:
        return None, exc


def _without_web_file(section: object) -> object:
    """A config section, ignoring ``http.web_config_file`` (a reload applies that one)."""
    return section.model_copy(update={"web_config_file": None}) if isinstance(section, HttpConfig) else section


async def _warn_exposed(cfg: Config, web_cfg: WebConfig | None) -> None:
    for warning in await asyncio.to_thread(exposed_files, cfg, web_cfg):
        log.warning("secret_file_readable_by_others", problem=warning)


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def run_daemon(cfg: Config, config_path: str) -> int:
    logs.configure(cfg.logging.level, cfg.logging.format)
    return asyncio.run(Daemon(cfg, config_path).run())
