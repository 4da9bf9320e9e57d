"""The runner: the only place that turns a validator run (and its exceptions) into a Result.

It bounds concurrency globally and per location, enforces the timeout, records cancellation before
re-raising it, writes every result to the store *before* it becomes visible in the snapshot, and keeps
results in a bounded in-memory queue while the store is unavailable.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from drwatch import validators
from drwatch.cluster.confighash import cached_config_hash
from drwatch.config.model import Config
from drwatch.core import secrets
from drwatch.core.cancels import CancelWatch
from drwatch.core.errors import DrillFailed, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Result, Severity
from drwatch.core.sandbox import SandboxManager
from drwatch.engine.drain import drain_tasks
from drwatch.engine.process import ProcessState
from drwatch.engine.runlog import log_finished
from drwatch.state.snapshot import Snapshot
from drwatch.storage.filesystem import HashPool
from drwatch.storage.s3 import S3Pool
from drwatch.store.base import Store
from drwatch.store.chain import ChainHeadMissing
from drwatch.validators.base import RunContext
from drwatch.validators.config import ValidatorConfig

log = structlog.get_logger("drwatch.engine.runner")


def redacted(findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """The findings with every secret value drwatch read replaced by ``<redacted>``: a library's error text (a
    DSN in a connection error, a signed URL) must not reach the store, and from it the status page, the API and
    reports (logs are redacted by their own processor)."""
    if not secrets.registered():
        return findings
    out = []
    for f in findings:
        message, subject = secrets.redact(f.message), secrets.redact(f.subject)
        out.append(f if (message, subject) == (f.message, f.subject)
                   else Finding(f.severity, f.code, message, subject))
    return tuple(out)


@dataclass
class AppState:
    """The current config and snapshot; both are replaced, never mutated."""

    config: Config
    snapshot: Snapshot
    process: ProcessState
    ready: bool = False
    listeners: list[Callable[[Result], None]] = field(default_factory=list)


class GlobalSlot:
    """A global concurrency slot taken by :meth:`Limits.take_global`; released once, by whoever is first."""

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self._sem: asyncio.Semaphore | None = sem

    def release(self) -> None:
        sem, self._sem = self._sem, None
        if sem is not None:
            sem.release()


class Limits:
    def __init__(self, cfg: Config) -> None:
        self.global_sem = asyncio.Semaphore(cfg.limits.max_concurrent)
        self.per_location = {
            name: asyncio.Semaphore(loc.max_concurrency or cfg.limits.per_location)
            for name, loc in cfg.locations.items()
        }

    async def take_global(self) -> GlobalSlot:
        """The global slot, taken ahead of :meth:`slots` (which then releases it with the location slots)."""
        await self.global_sem.acquire()
        return GlobalSlot(self.global_sem)

    @asynccontextmanager
    async def slots(self, locations: list[str], held: GlobalSlot | None = None) -> AsyncIterator[None]:
        """The global slot (``held``: taken already), then each location's, in one global order; all are
        released together on exit."""
        async with AsyncExitStack() as stack:
            if held is None:
                await stack.enter_async_context(self.global_sem)
            else:
                stack.callback(held.release)
            for name in sorted(locations):  # one global order: no deadlock between validators
                sem = self.per_location.get(name)
                if sem is not None:
                    await stack.enter_async_context(sem)
            yield


class Runner:
    def __init__(self, state: AppState, store: Store, sandboxes: SandboxManager,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.store = store
        self.sandboxes = sandboxes
        self.clock = clock
        self.hashes = HashPool(state.config.limits.hash_workers)
        self.s3 = S3Pool(state.config.base_dir)  # one client per S3 location, reused by every run
        self._revision: tuple[int, int] | None = None
        self._hash_users: dict[HashPool, int] = {}  # runs holding each pool (a replaced pool closes when unused)
        self.limits = Limits(state.config)
        self._limits_from = (state.config.limits, state.config.locations)
        self.running: dict[tuple[str, str], asyncio.Task[Result | None]] = {}
        self._started: set[asyncio.Task[Any] | None] = set()  # runs past their slot wait (not queued)
        self.pending: collections.deque[Result] = collections.deque()
        self._store_lock = asyncio.Lock()
        self.accepting = True
        # Runs that did not prove their check log at warning (the daemon: what the journal must show);
        # ``drwatch check`` prints them in its table and logs them at info.
        self.warn_problems = True
        # Per validator, the warning codes of its last ``ok`` run that was logged at warning level: an ok run's
        # warnings (copy_behind, same_failure_domain...) reach `journalctl -p warning` when they change, not on
        # every run of a live estate.
        self._warned: dict[tuple[str, str], frozenset[str]] = {}

    def apply_config(self, cfg: Config) -> None:
        """New limits apply to runs that start after the reload; running ones keep their slots and pool.

        Compares with what the runner last applied, not with ``state.config``: the daemon may already
        have swapped ``state.config`` to ``cfg`` before calling this.
        """
        if (cfg.limits, cfg.locations) != self._limits_from:
            self.limits = Limits(cfg)
            self._limits_from = (cfg.limits, cfg.locations)
        if cfg.limits.hash_workers != self.hashes.workers:
            old, self.hashes = self.hashes, HashPool(cfg.limits.hash_workers)
            if not self._hash_users.get(old):
                old.close()

    def _hold_hashes(self) -> HashPool:
        pool = self.hashes
        self._hash_users[pool] = self._hash_users.get(pool, 0) + 1
        return pool

    def _release_hashes(self, pool: HashPool) -> None:
        users = self._hash_users.get(pool, 0) - 1
        if users > 0:
            self._hash_users[pool] = users
            return
        self._hash_users.pop(pool, None)
        if pool is not self.hashes:  # replaced by a reload while this run used it
            pool.close()

    def launch(self, asset: str, label: str) -> bool:
        """Start a run unless the same validator is still running (a validator never overlaps itself)."""
        key = (asset, label)
        if not self.accepting:
            return False
        task = self.running.get(key)
        if task is not None and not task.done():
            log.info("run_skipped_overlap", asset=asset, validator=label)
            return False
        acfg = self.state.config.assets.get(asset)
        vcfg = next((v for v in acfg.validators if v.label == label), None) if acfg else None
        if vcfg is None:
            return False
        task = asyncio.create_task(self._run_logged(asset, vcfg), name=f"drwatch:{asset}/{label}")
        self.running[key] = task
        task.add_done_callback(lambda t: self.running.pop(key, None) if self.running.get(key) is t else None)
        return True

    async def _run_logged(self, asset: str, vcfg: ValidatorConfig) -> Result | None:
        try:
            # Queued for the global slot here, before anything else of the run exists: with thousands of runs
            # queued (an estate larger than its limits), each waits as a task and one future, not a chain of
            # coroutines and context managers (memory, and objects for every full garbage collection to walk).
            limits = self.limits  # a reload meanwhile applies to later runs (as for a run past this point)
            slot = await limits.take_global()
            try:
                return await self.execute(asset, vcfg, held=(limits, slot))
            finally:
                slot.release()  # if the run ended before its slots were taken (they release it otherwise)
        except asyncio.CancelledError:
            raise
        except Exception:  # never lose the daemon to one run
            log.exception("run_crashed", asset=asset, validator=vcfg.label)
            return None

    async def execute(self, asset_name: str, vcfg: ValidatorConfig, run_id: str | None = None, *,
                      held: tuple[Limits, GlobalSlot] | None = None) -> Result:
        """Run one validator once (waiting for its concurrency slots) and record its result (under ``run_id``
        when given: the cluster engine names a run before it starts, to find its result after a crash).
        ``held``: the limits whose global slot the caller took already (the location slots are taken here)."""
        current = asyncio.current_task()
        try:
            return await self._execute(asset_name, vcfg, current, run_id or uuid.uuid4().hex, held)
        finally:
            self._started.discard(current)

    async def _execute(self, asset_name: str, vcfg: ValidatorConfig, current: asyncio.Task[Any] | None,
                       run_id: str, held: tuple[Limits, GlobalSlot] | None) -> Result:
        cfg = self.state.config
        asset = cfg.assets[asset_name]
        limits, slot = held if held is not None else (self.limits, None)
        with structlog.contextvars.bound_contextvars(run_id=run_id, asset=asset_name, validator=vcfg.label):
            async with limits.slots(vcfg.locations(asset), slot):
                self._started.add(current)
                started = self.clock()
                log.info("run_started", kind=vcfg.kind)
                hashes = self._hold_hashes()
                try:
                    report, bug = await self._attempt(run_id, asset_name, vcfg, started, hashes)
                finally:
                    self._release_hashes(hashes)
            result = self._result(run_id, asset_name, vcfg, started, report)
            key = (asset_name, vcfg.label)
            self._warned[key] = log_finished(result, bug, self.warn_problems, self._warned.get(key))
            await self.record(result)
            return result

    async def _attempt(self, run_id: str, asset_name: str, vcfg: ValidatorConfig, started: float,
                       hashes: HashPool) -> tuple[Report, Exception | None]:
        """Run the validator once, bounded by its timeout, and turn what it raised into a report (and a bug, if any).

        A cancelled run is recorded as ``cancelled`` (shielded) and the cancellation re-raised.
        """
        cfg = self.state.config
        timeout = vcfg.effective_timeout(cfg)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        cancel = CancelWatch()
        try:
            try:
                return await self._invoke(run_id, asset_name, vcfg, hashes, deadline, timeout), None
            finally:
                cancel.check()  # a library swallowed the cancel (into an error or a result): the run was cancelled
        except DrillFailed as exc:
            return Report(Outcome.FAILED, (Finding(Severity.CRITICAL, exc.code, exc.message),)), None
        except ValidatorError as exc:
            if loop.time() >= deadline:
                # A step bounded by what was left of the run (a query, a request) gave up as the time ran
                # out: the run timed out; the step's own complaint is context, not a finding of its own.
                return Report(Outcome.TIMEOUT, (Finding(
                    Severity.WARNING, "timeout", f"run exceeded its timeout of {timeout:g}s "
                    f"(while: {exc.code})"),)), None
            return Report(Outcome.ERROR, (Finding(Severity.WARNING, exc.code, exc.message),)), None
        except TimeoutError:
            return Report(Outcome.TIMEOUT, (Finding(Severity.WARNING, "timeout",
                                                    f"run exceeded its timeout of {timeout:g}s"),)), None
        except asyncio.CancelledError:
            result = self._result(run_id, asset_name, vcfg, started, Report(
                Outcome.CANCELLED, (Finding(Severity.INFO, "cancelled", "run was cancelled"),)))
            await asyncio.shield(self._record_bounded(result))
            log.info("run_cancelled")
            raise
        except Exception as exc:
            # logged with the run's one line, traceback included
            return Report(Outcome.ERROR, (Finding(Severity.WARNING, "internal_error",
                                                  f"validator crashed: {type(exc).__name__}"),)), exc

    async def _invoke(self, run_id: str, asset_name: str, vcfg: ValidatorConfig, hashes: HashPool,
                      deadline: float, limit_s: float) -> Report:
        cfg = self.state.config
        async with AsyncExitStack() as stack:
            ctx = RunContext(
                run_id=run_id, asset_name=asset_name, asset=cfg.assets[asset_name], config=cfg,
                log=log.bind(), deadline=deadline, exit_stack=stack,
                hashes=hashes, sandboxes=self.sandboxes, clock=self.clock, s3=self.s3,
                results=lambda: self.state.snapshot, ledger=self.store,
            )
            validator = validators.build(vcfg)
            async with asyncio.timeout(limit_s) as cm:
                try:
                    return await validator.run(ctx)
                except TimeoutError:
                    if cm.expired():
                        raise
                    raise ValidatorError("timeout", "an operation inside the check timed out") from None

    def _result(self, run_id: str, asset: str, vcfg: ValidatorConfig, started: float, report: Report) -> Result:
        return Result(
            run_id=run_id, asset=asset, validator=vcfg.label, kind=vcfg.kind, outcome=report.outcome,
            started_at=started, finished_at=max(started, self.clock()), findings=redacted(report.findings),
            figures=dict(report.figures), copies=report.copies, recovery_point=report.recovery_point,
        )

    async def _record_bounded(self, result: Result) -> None:
        try:
            await asyncio.wait_for(self.record(result), timeout=5)
        except TimeoutError:
            log.warning("cancelled_result_not_recorded")

    async def record(self, result: Result) -> None:
        """Durable first, then visible. If the store is down, queue (bounded) and retry later."""
        async with self._store_lock:
            self.pending.append(result)
            while len(self.pending) > self.state.config.limits.pending_results:
                dropped = self.pending.popleft()
                self.state.process.results_dropped += 1
                log.error("result_dropped_store_unavailable", asset=dropped.asset, validator=dropped.validator,
                          run_id=dropped.run_id, outcome=dropped.outcome.value,
                          pending=len(self.pending), limit=self.state.config.limits.pending_results)
            await self._flush_locked()

    async def flush(self) -> None:
        async with self._store_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        proc = self.state.process
        while self.pending:
            result = self.pending[0]
            try:
                await asyncio.wait_for(self.store.record(result, cached_config_hash(self.state.config)), timeout=30)
            except (OSError, TimeoutError, ConnectionError) as exc:
                proc.store_errors += 1
                log.warning("store_write_failed", error_type=type(exc).__name__, pending=len(self.pending))
                break
            except Exception as exc:
                proc.store_errors += 1
                if not _is_store_error(exc):
                    # Not the store being away: this result can never be written. Drop it (loudly) so it
                    # does not block every later result behind it.
                    self.pending.popleft()
                    log.exception("result_not_storable", asset=result.asset, validator=result.validator,
                                  run_id=result.run_id)
                    continue
                log.warning("store_write_failed", error_type=type(exc).__name__, pending=len(self.pending),
                            **({"error": str(exc)} if isinstance(exc, ChainHeadMissing) else {}))
                break
            self.pending.popleft()
            self.state.snapshot = self.state.snapshot.with_result(result, time.time())
            for listener in list(self.state.listeners):
                listener(result)
        proc.results_pending = len(self.pending)

    async def refresh(self) -> bool:
        """Reload the snapshot when another process (``drwatch check``, ``drwatch attest``, another node)
        wrote to the shared store. Cheap when nothing changed: one small query."""
        async with self._store_lock:
            if self.pending:
                return False
            revision = await self.store.revision()
            if revision == self._revision:
                return False
            state = await self.store.load_state()
            self.state.snapshot = self.state.snapshot.refreshed(state)
            self._revision = revision
            return True

    async def drain(self, grace: float) -> None:
        """Stop taking work, wait up to ``grace`` seconds for running validators, cancel the rest."""
        self.accepting = False
        tasks = [t for t in self.running.values() if not t.done()]
        # Runs still waiting for a concurrency slot never start during a drain.
        await drain_tasks(log, [t for t in tasks if t not in self._started], tasks, grace)

    def close(self) -> None:
        for pool in {self.hashes, *self._hash_users}:
            pool.close()
        self._hash_users.clear()

    async def aclose(self) -> None:
        """Close the S3 clients, then the hash pools."""
        await self.s3.close()
        self.close()


def _is_store_error(exc: BaseException) -> bool:
    if isinstance(exc, ChainHeadMissing):
        return True
    mod = type(exc).__module__
    return mod.startswith(("asyncpg", "sqlite3")) or type(exc).__name__ in ("OperationalError",
                                                                             "InterfaceError")


