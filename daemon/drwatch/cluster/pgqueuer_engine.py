"""Cluster mode on pgqueuer: an existing PostgreSQL-backed job engine embedded in the daemon's event loop.

How a scheduled run happens exactly once, never overlapping itself (docs/scaling.md has the reasoning):

1. **Slots.** Every node computes the same slots for every validator (``slots.py``). The node preferred
   for a validator (a hash over the live nodes; any node once the slot is overdue) takes the due slot with
   a compare-and-set on ``slots.last_taken`` *and* enqueues the pgqueuer job in the same transaction. The
   job's dedupe key is the validator, so while one of its jobs is queued or running, the next slot waits
   (coalesced) instead of stacking up.
2. **Jobs.** pgqueuer hands jobs to nodes with free capacity (``limits.max_concurrent`` each) and, when a
   node stops heartbeating for ``cluster.lease``, hands its jobs to another node.
3. **Fence.** Before running, the handler takes the validator's session advisory lock (``fence.py``) and,
   under it, checks ``slots.last_done``: a frozen owner still holds the lock, so the new owner waits; when
   the owner resumes and finishes, the slot is done and nothing runs twice. A killed owner's lock is gone
   at once, so the slot runs again here.
4. **Record.** The run's id is written to ``slots`` before it starts; ``Runner.execute`` runs and stores the
   result under that id as on one node; then ``last_done``, the run row and the per-node counter are
   written in one transaction, still under the fence. A node killed between those two writes leaves a
   stored result whose id ``slots`` still names: the next owner completes the slot from it, no re-run.

pgqueuer's pitfalls and how they are avoided: its cron scheduler (which reclaims a dead node's schedule only
after a hard-coded 30 s and wakes late) is not used; re-picked jobs do not count attempts, so ``slots``
counts them and a slot that kept killing its nodes is recorded as an ``error`` result after
``cluster.max_attempts``; handlers never raise, so pgqueuer never deletes a failed job silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.core.qm import QueueManager
from pgqueuer.domain.errors import RetryRequested
from pgqueuer.domain.models import Job

from drwatch.cluster.confighash import config_hash
from drwatch.cluster.fence import Fence, FenceLost
from drwatch.cluster.heartbeat import ClusterView, beat, live_previous_owner
from drwatch.cluster.schema import SCHEMA, install, make_queries, queue_settings
from drwatch.cluster.slotrecords import begin_slot, finish_cancelled, finish_slot, slot_done
from drwatch.cluster.slots import Slot, SlotClock
from drwatch.config.model import Config
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Outcome, Result, Severity
from drwatch.engine.drain import drain_tasks
from drwatch.engine.runner import AppState, Runner
from drwatch.validators.config import ValidatorConfig

log = structlog.get_logger("drwatch.cluster")
ENTRYPOINT = "drwatch_run"
QUERY_TIMEOUT = 10.0
TICK = 0.5  # seconds between looks at the slot clocks (no database traffic unless a slot is due)
PRUNE_INTERVAL = 3600.0
UNKNOWN_VALIDATOR_RETRIES = 20  # a job for a validator this node does not know goes back for others


def _preference(asset: str, label: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{asset}\x1f{label}".encode(), digest_size=4).digest(), "big")


def _find(cfg: Config, asset: str, label: str) -> ValidatorConfig | None:
    acfg = cfg.assets.get(asset)
    return next((v for v in acfg.validators if v.label == label), None) if acfg else None


class PgQueuerEngine:
    def __init__(self, state: AppState, runner: Runner, dsn: str, on_agree: Callable[[], None],
                 clock: Callable[[], float]) -> None:
        self.state = state
        self.runner = runner
        self.clock = clock
        self._dsn = dsn
        self._on_agree = on_agree
        self._agree_signalled = ""
        ccfg = state.config.cluster
        self.ccfg = ccfg  # timings and node name apply from start to stop
        self.node = ccfg.node_name
        self.instance = uuid.uuid4().hex
        self.loaded: Config = state.config
        self.loaded_hash = self.active_hash = config_hash(state.config)
        self._view = ClusterView(self.node)
        self._pool: asyncpg.Pool | None = None
        self._qm_conn: asyncpg.Connection | None = None
        self._qm: QueueManager | None = None
        self.fence = Fence(self._connect)
        self._clocks: dict[tuple[str, str], SlotClock] = {}
        self._next_look: dict[tuple[str, str], float] = {}
        self._taken: dict[tuple[str, str], int] = {}  # newest slot known to be taken (by anyone)
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[asyncio.Task[Any], bool] = {}  # handler task -> run started (past the fence)
        self._accepting = True

    # ------------------------------------------------------------------ lifecycle

    @property
    def view(self) -> ClusterView:
        return self._view

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._dsn, timeout=QUERY_TIMEOUT, command_timeout=QUERY_TIMEOUT)

    async def start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2, timeout=QUERY_TIMEOUT,
                                                   command_timeout=QUERY_TIMEOUT)
            async with self._pool.acquire() as conn:
                await install(conn)
                if await live_previous_owner(conn, self.node, self.instance, self.ccfg.lease.total_seconds()):
                    log.warning("node_name_in_use", node=self.node,
                                message="another live process heartbeats as this node: give each node its own "
                                        "cluster.node")
            self._qm_conn = await self._connect()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise ValidatorError("cluster_unavailable",
                                 f"cannot join the cluster on the PostgreSQL store ({type(exc).__name__})") from None
        self._rebuild_clocks(self.state.config)
        await self._heartbeat_once()
        self._tasks = [asyncio.create_task(self._run_queue(), name="drwatch:cluster-queue"),
                       asyncio.create_task(self._ticker(), name="drwatch:cluster-ticker"),
                       asyncio.create_task(self._heartbeats(), name="drwatch:cluster-heartbeat")]
        log.info("cluster_joined", node=self.node, config_hash=self.active_hash,
                 nodes=len(self._view.live), lease=self.ccfg.lease.total_seconds())

    def stage(self, cfg: Config) -> bool:
        self.loaded = cfg
        self.loaded_hash = config_hash(cfg)
        if self.loaded_hash != self.active_hash and not self._view.agreed(self.loaded_hash):
            log.info("config_staged", config_hash=self.loaded_hash, active=self.active_hash,
                     message="applies once every live node has loaded the same configuration")
            return False
        if self.loaded_hash != self.active_hash:
            log.info("config_adopted", config_hash=self.loaded_hash, previous=self.active_hash,
                     nodes=len(self._view.live))
        self.active_hash = self.loaded_hash
        self._rebuild_clocks(cfg)
        return True

    async def drain(self, grace: float) -> None:
        self._accepting = False
        for task in self._tasks[1:]:  # ticker and heartbeats: no new slots, no adoption while stopping
            task.cancel()
        if self._qm is not None:
            self._qm.shutdown.set()
        waiting = [t for t, started in self._running.items() if not started]
        await drain_tasks(log, waiting, list(self._running), grace)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pool is not None:
            try:  # leave at once: the other nodes stop counting this one now, not after the lease
                await self._pool.execute(f"UPDATE {SCHEMA}.nodes SET last_seen = 'epoch' "
                                         "WHERE node = $1 AND instance = $2", self.node, self.instance)
            except Exception as exc:
                log.warning("cluster_leave_failed", error_type=type(exc).__name__)
        await self.fence.close()
        if self._qm_conn is not None:
            with contextlib.suppress(Exception):  # closing what may be broken already
                await asyncio.wait_for(self._qm_conn.close(), timeout=5)
            self._qm_conn = None
        if self._pool is not None:
            with contextlib.suppress(Exception):  # closing what may be broken already
                await asyncio.wait_for(self._pool.close(), timeout=5)
            self._pool = None

    # ------------------------------------------------------------------ heartbeats and reloads

    async def _heartbeat_once(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            self._view = await beat(conn, self.node, self.instance, os.getpid(), self.loaded_hash,
                                    self.active_hash, self.ccfg.lease.total_seconds())

    async def _heartbeats(self) -> None:
        last_prune = self.clock()
        while True:
            await asyncio.sleep(self.ccfg.heartbeat.total_seconds())
            try:
                await self._heartbeat_once()
                await self.fence.ping()
                if self.loaded_hash not in (self.active_hash, self._agree_signalled) \
                        and self._view.agreed(self.loaded_hash):
                    self._agree_signalled = self.loaded_hash
                    self._on_agree()  # the daemon reloads; stage() then says yes
                if self.clock() - last_prune >= PRUNE_INTERVAL:
                    await self._prune()
                    last_prune = self.clock()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat_failed", error_type=type(exc).__name__)

    def _rebuild_clocks(self, cfg: Config) -> None:
        clocks = {}
        for asset, vcfg in cfg.iter_validators():
            key = (asset, vcfg.label)
            old = self._clocks.get(key)
            clocks[key] = old if old is not None and old.schedule == vcfg.schedule else \
                SlotClock(asset, vcfg.label, vcfg.schedule)
            if clocks[key] is not old:
                self._next_look.pop(key, None)
        self._clocks = clocks

    async def _prune(self) -> None:
        assert self._pool is not None
        cutoff = self.clock() - self.state.config.store.retention.total_seconds()
        settings = queue_settings()
        await self._pool.execute(f"DELETE FROM {SCHEMA}.runs WHERE finished_at < $1", cutoff)
        await self._pool.execute(f"DELETE FROM {settings.qualified.queue_table_log} WHERE created < "
                                 "now() - make_interval(secs => $1)", self.state.config.store.retention.total_seconds())

    # ------------------------------------------------------------------ slots -> jobs

    def _preferred(self, key: tuple[str, str]) -> bool:
        live = sorted(n.node for n in self._view.live) or [self.node]
        return live[_preference(*key) % len(live)] == self.node

    async def _ticker(self) -> None:
        takeover = (self.ccfg.lease + self.ccfg.heartbeat).total_seconds()
        while True:
            now = self.clock()
            for key, sclock in list(self._clocks.items()):
                if self._next_look.get(key, 0.0) > now:
                    continue
                slot = sclock.current(now)
                if slot is None or slot.slot <= self._taken.get(key, -1):
                    self._next_look[key] = sclock.next_due(now)
                    continue
                if not self._preferred(key) and now < slot.due + takeover:
                    self._next_look[key] = slot.due + takeover
                    continue
                try:
                    await self._take(key, slot)
                except asyncio.CancelledError:
                    raise
                except _Busy:
                    self._next_look[key] = now + self.ccfg.poll.total_seconds()
                except Exception as exc:
                    log.warning("slot_take_failed", asset=key[0], validator=key[1], error_type=type(exc).__name__)
                    self._next_look[key] = now + self.ccfg.poll.total_seconds()
            await asyncio.sleep(TICK)

    async def _take(self, key: tuple[str, str], slot: Slot) -> None:
        """Compare-and-set the slot and enqueue its job, in one transaction: exactly one node wins."""
        assert self._pool is not None
        asset, label = key
        now = self.clock()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"SELECT last_taken FROM {SCHEMA}.slots WHERE asset = $1 AND validator = $2 "
                                      "FOR UPDATE", asset, label)
            if row is not None and row["last_taken"] >= slot.slot:
                self._taken[key] = int(row["last_taken"])
                return
            if row is None:
                stats = self.state.snapshot.stats(asset, label)
                if stats is not None and stats.last_run_at is not None and stats.last_run_at >= slot.due:
                    # History (a single node before, `drwatch check`) already covers this slot.
                    await conn.execute(f"INSERT INTO {SCHEMA}.slots (asset, validator, last_taken, last_done) "
                                       "VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING", asset, label, slot.slot)
                    self._taken[key] = slot.slot
                    return
                await conn.execute(f"INSERT INTO {SCHEMA}.slots (asset, validator, last_taken) VALUES ($1, $2, $3)",
                                   asset, label, slot.slot)
            else:
                await conn.execute(f"UPDATE {SCHEMA}.slots SET last_taken = $3 WHERE asset = $1 AND validator = $2",
                                   asset, label, slot.slot)
            payload = json.dumps({"asset": asset, "validator": label, "slot": slot.slot, "due": slot.due,
                                  "hash": self.active_hash}).encode()
            ids = await make_queries(AsyncpgDriver(conn)).enqueue(
                ENTRYPOINT, payload, dedupe_key=f"{asset}\x1f{label}", on_conflict="skip")
            if ids[0] is None:
                # A run of this validator is still queued or running: the slot waits (and coalesces with
                # later ones) until it is done. Roll back so that the slot is not marked taken.
                raise _Busy
            self._taken[key] = slot.slot
        log.debug("slot_taken", asset=asset, validator=label, slot=slot.slot, late=round(now - slot.due, 3))

    # ------------------------------------------------------------------ jobs -> runs

    async def _run_queue(self) -> None:
        """pgqueuer's worker, restarted after a lost connection."""
        limit = self.state.config.limits.max_concurrent
        while self._accepting:
            if self._qm_conn is None or self._qm_conn.is_closed():
                try:
                    self._qm_conn = await self._connect()
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("queue_connect_failed", error_type=type(exc).__name__)
                    await asyncio.sleep(self.ccfg.poll.total_seconds())
                    continue
            qm = QueueManager(make_queries(AsyncpgDriver(self._qm_conn)), channel=queue_settings().channel)
            qm.entrypoint(ENTRYPOINT, accepts_context=False)(self._handle)
            self._qm = qm
            try:
                # A node never holds more jobs than it may run (pgqueuer wants at least two per batch of one).
                await qm.run(dequeue_timeout=self.ccfg.poll, batch_size=1, max_concurrent_tasks=max(2, limit),
                             heartbeat_timeout=self.ccfg.lease, log_aggregation_interval=timedelta(seconds=60))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("queue_worker_failed", error_type=type(exc).__name__)
                with contextlib.suppress(Exception):  # closing what may be broken already
                    await asyncio.wait_for(self._qm_conn.close(), timeout=5)
                self._qm_conn = None
                await asyncio.sleep(self.ccfg.poll.total_seconds())
            else:
                return  # shut down

    async def _handle(self, job: Job) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running[task] = False
        try:
            await self._handle_job(job, task)
        except (RetryRequested, asyncio.CancelledError):
            raise
        except Exception:
            # Never let pgqueuer see a failure (it would delete the job quietly): log it loudly instead.
            log.exception("cluster_job_crashed", job_id=job.id)
        finally:
            self._running.pop(task, None)

    async def _handle_job(self, job: Job, task: asyncio.Task[Any]) -> None:
        assert job.payload is not None
        doc = json.loads(job.payload)
        asset, label, slot, due = str(doc["asset"]), str(doc["validator"]), int(doc["slot"]), float(doc["due"])
        cfg = self.state.config
        vcfg = _find(cfg, asset, label)
        if vcfg is None:
            if job.attempts < UNKNOWN_VALIDATOR_RETRIES:
                raise RetryRequested(self.ccfg.heartbeat, "validator not in this node's active configuration")
            log.warning("job_dropped_unknown_validator", asset=asset, validator=label)
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + vcfg.effective_timeout(cfg) + self.ccfg.lease.total_seconds() \
            + cfg.limits.drain_timeout.total_seconds()
        while True:
            if await slot_done(self._pool, asset, label, slot):
                log.info("slot_already_done", asset=asset, validator=label, slot=slot)
                return
            try:
                if await self.fence.try_acquire(asset, label):
                    break
            except FenceLost as exc:
                log.warning("fence_unavailable", asset=asset, validator=label, error=str(exc))
            if loop.time() > give_up:
                log.warning("fence_busy_slot_skipped", asset=asset, validator=label, slot=slot,
                            message="another node has held this validator's fence for longer than a run may "
                                    "take; this slot is skipped")
                return
            await asyncio.sleep(min(1.0, self.ccfg.poll.total_seconds()))
        try:
            begun = await begin_slot(self._pool, self.node, asset, label, slot, due)
            if begun is None:
                log.info("slot_already_done", asset=asset, validator=label, slot=slot)
                return
            attempts, run_id = begun
            self._running[task] = True
            if attempts > self.ccfg.max_attempts:
                result = self._abandoned(asset, vcfg, attempts - 1, run_id)
                await self.runner.record(result)
            else:
                result = await self.runner.execute(asset, vcfg, run_id=run_id)
            await finish_slot(self._pool, self.node, asset, label, slot, due, result)
        except asyncio.CancelledError:
            await asyncio.shield(finish_cancelled(self._pool, self.node, asset, label, slot))
            raise
        finally:
            await asyncio.shield(self.fence.release(asset, label))

    def _abandoned(self, asset: str, vcfg: ValidatorConfig, attempts: int, run_id: str) -> Result:
        now = self.clock()
        message = (f"this run was started {attempts} times and each time its node died before it finished; "
                   "it is not started again (cluster.max_attempts)")
        return Result(run_id=run_id, asset=asset, validator=vcfg.label, kind=vcfg.kind,
                      outcome=Outcome.ERROR, started_at=now, finished_at=now,
                      findings=(Finding(Severity.WARNING, "run_abandoned", message),))


class _Busy(Exception):
    """The validator still has a job queued or running (rolls back the slot's compare-and-set)."""
