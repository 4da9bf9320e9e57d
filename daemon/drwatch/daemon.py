"""The long-running service: lifecycle, signals, reload, systemd notify, watchdog, maintenance.

One exit stack owns every resource (store, HTTP server, scheduler, runner). SIGTERM/SIGINT: stop
scheduling, drain running validators up to the drain timeout, cancel the rest (sandboxes unwind).
SIGHUP or POST /-/reload: reload; an invalid config is rejected and the running one stays.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import structlog

from drwatch import logs
from drwatch.compliance import RuleState, evaluate
from drwatch.config import Config, config_or_problem
from drwatch.metrics import ProcessState
from drwatch.runner import AppState, Runner
from drwatch.sandbox import SandboxManager
from drwatch.scheduler import Scheduler
from drwatch.sdnotify import Notifier
from drwatch.snapshot import Snapshot
from drwatch.store import open_store

log = structlog.get_logger("drwatch.daemon")
MAINTENANCE_INTERVAL = 10.0
PRUNE_INTERVAL = 3600.0


def sandbox_manager(cfg: Config) -> SandboxManager:
    return SandboxManager(cfg.resolve_path(cfg.limits.sandbox_dir) if cfg.limits.sandbox_dir else None)


def summary(state: AppState, now: float) -> str:
    verdicts = evaluate(state.config, state.snapshot, now)
    ok = sum(1 for v in verdicts.values() if v.compliant)
    failing = sum(1 for v in verdicts.values() if any(r.state == RuleState.FAIL for r in v.rules.values()))
    return f"{len(verdicts)} assets: {ok} compliant, {failing} failing, {len(verdicts) - ok - failing} unknown"


class Daemon:
    def __init__(self, config: Config, config_path: str, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time, on_listening: Callable[[int], None] | None = None) -> None:
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.clock = clock
        self._initial = config
        self._stop = asyncio.Event()
        self._on_listening = on_listening
        self.state: AppState | None = None
        self.runner: Runner | None = None
        self.scheduler: Scheduler | None = None
        self.http_port = 0
        self._reload_lock = asyncio.Lock()

    def request_stop(self) -> None:
        self._stop.set()

    async def reload(self) -> tuple[bool, list[str]]:
        assert self.state is not None and self.runner is not None and self.scheduler is not None
        async with self._reload_lock:
            self.notifier.reloading()
            new, err = await asyncio.to_thread(config_or_problem, self.config_path)
            proc = self.state.process
            if new is None:
                assert err is not None
                problems = [str(p) for p in err.problems]
                proc.reload_successful = False
                log.error("reload_rejected", problems=problems, config=self.config_path)
                self.notifier.ready(f"reload rejected; {summary(self.state, self.clock())}")
                return False, problems
            old = self.state.config
            for section in ("store", "http"):
                if getattr(old, section) != getattr(new, section):
                    log.warning("restart_required", section=section,
                                message=f"changes to '{section}' take effect after a restart")
            self.state.config = new
            self.state.snapshot = self.state.snapshot.with_config(new)
            self.runner.apply_config(new)
            self.scheduler.apply(new, self.state.snapshot)
            proc.reload_successful = True
            proc.reload_success_at = self.clock()
            log.info("reload_applied", assets=len(new.assets), validators=len(new.iter_validators()))
            self.notifier.ready(summary(self.state, self.clock()))
            return True, []

    async def run(self) -> int:
        cfg = self._initial
        loop = asyncio.get_running_loop()
        sandboxes = sandbox_manager(cfg)
        removed = await asyncio.to_thread(sandboxes.sweep_orphans)
        if removed:
            log.warning("orphaned_sandboxes_removed", count=len(removed))
        async with AsyncExitStack() as stack:
            store = open_store(cfg)
            await store.open()
            stack.push_async_callback(store.close)
            stored = await store.load_state()
            process = ProcessState(started_at=self.clock())
            state = self.state = AppState(cfg, Snapshot.from_state(cfg, stored), process)
            runner = self.runner = Runner(state, store, sandboxes, self.clock)
            stack.callback(runner.close)

            from drwatch.httpserver import HttpServer

            if cfg.http.enabled:
                http = HttpServer(state, self.reload, self.clock)
                await http.start(cfg.http.host, cfg.http.port)
                stack.push_async_callback(http.stop)
                self.http_port = http.port
                log.info("listening", address=f"http://{cfg.http.host}:{http.port}/metrics")
                if self._on_listening is not None:
                    self._on_listening(http.port)

            scheduler = self.scheduler = Scheduler(runner, self.clock)
            scheduler.start(cfg, state.snapshot)
            stack.callback(scheduler.shutdown)

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
                stack.callback(loop.remove_signal_handler, sig)
            reloads: set[asyncio.Task[tuple[bool, list[str]]]] = set()

            def on_hup() -> None:
                task = asyncio.create_task(self.reload())
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            loop.add_signal_handler(signal.SIGHUP, on_hup)
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)

            background = [asyncio.create_task(self._maintenance(store, runner)),
                          asyncio.create_task(self._watchdog())]
            state.ready = True
            self.notifier.ready(summary(state, self.clock()))
            log.info("started", assets=len(cfg.assets), validators=len(cfg.iter_validators()),
                     store=store.backend)
            await self._stop.wait()

            log.info("stopping")
            self.notifier.stopping()
            state.ready = False
            scheduler.shutdown()
            await runner.drain(state.config.limits.drain_timeout.total_seconds())
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await runner.flush()
            if runner.pending:
                log.error("results_not_persisted", count=len(runner.pending))
        log.info("stopped")
        return 0

    async def _maintenance(self, store: object, runner: Runner) -> None:
        assert self.state is not None
        last_prune = 0.0
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                if runner.pending:
                    await runner.flush()
                now = self.clock()
                if now - last_prune >= PRUNE_INTERVAL:
                    cutoff = now - self.state.config.store.retention.total_seconds()
                    pruned = await runner.store.prune(cutoff)
                    last_prune = now
                    if pruned:
                        log.info("history_pruned", rows=pruned)
                self.notifier.status(summary(self.state, now))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("maintenance_failed", error_type=type(exc).__name__)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


def run_daemon(cfg: Config, config_path: str) -> int:
    logs.configure(cfg.logging.level, cfg.logging.format)
    return asyncio.run(Daemon(cfg, config_path).run())
