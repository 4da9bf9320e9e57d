"""When validators run: APScheduler 3.x triggers (interval with jitter, or cron), coalesced, never
overlapping (the runner refuses a second concurrent run of the same validator).

The triggers compute the fire times; the jobs themselves live in a heap here, fired from one timer on the event
loop (APScheduler's scheduler, job store and executor cost ~0.5-1 ms of loop time per fire: at 10,000
validators every 30 s that was a third of the loop). Due jobs are fired in batches of :data:`FIRE_BATCH`, each
batch its own loop callback, so a thousand jobs due at once never hold the loop for long.

A validator without a stored result, or whose last run is older than its period, runs soon after start
(spread over its jitter), not a whole period later.

A validator that judges others' results (a consistency group, see ``judges()``) never runs before they have
one: when it fires while one of them has no result, is due since (re)start and has not run yet, or is
running, it is deferred and launched as soon as they have. ``drwatch check`` orders its runs with the same
rule (:func:`stages`).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import structlog

from drwatch.config.model import Config
from drwatch.core.model import Result
from drwatch.engine.runner import Runner
from drwatch.state.snapshot import Snapshot
from drwatch.validators.base import Schedule
from drwatch.validators.config import ValidatorConfig

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

log = structlog.get_logger("drwatch.engine.scheduler")
_SEP = "\x1f"
STARTUP_SPREAD = 10.0  # seconds over which overdue validators without jitter are spread at start
FIRE_BATCH = 16  # due jobs fired per loop callback
MAX_SLEEP = 60.0  # seconds: the timer looks again at least this often (a wall-clock step moves fire times)


def job_id(asset: str, label: str) -> str:
    return f"{asset}{_SEP}{label}"


def make_trigger(schedule: Schedule) -> BaseTrigger:
    # APScheduler is imported by the daemon's scheduler only: `drwatch check` (which uses stages()) never
    # pays its start-up (tests/test_startup.py).
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    jitter = int(schedule.jitter.total_seconds()) or None
    if schedule.cron is not None:
        return CronTrigger(**_cron_fields(schedule.cron), timezone="UTC", jitter=jitter)
    assert schedule.every is not None
    return IntervalTrigger(seconds=schedule.every.total_seconds(), jitter=jitter, timezone="UTC")


def _cron_fields(expr: str) -> dict[str, str]:
    minute, hour, day, month, dow = expr.split()
    return {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": dow}


Key = tuple[str, str]  # (asset, validator label)
V = TypeVar("V", bound=ValidatorConfig)


def stages(cfg: Config, selected: Sequence[tuple[str, V]]) -> list[list[tuple[str, V]]]:
    """``selected`` in stages: a validator comes after the selected validators it judges (``judges()``), so
    running the stages one after the other gives each its inputs fresh. Order within a stage is kept."""
    keys = {(a, v.label) for a, v in selected}
    level: dict[Key, int] = {}

    def depth(asset: str, vcfg: ValidatorConfig) -> int:
        key = (asset, vcfg.label)
        if key not in level:
            level[key] = 0  # judged validators never judge others (no cycles); guards against one anyway
            level[key] = 1 + max((level.get(p, 0) for p in vcfg.judges(asset, cfg) if p in keys), default=-1)
        return level[key]

    out: list[list[tuple[str, V]]] = []
    for asset, vcfg in selected:
        d = depth(asset, vcfg)
        while len(out) <= d:
            out.append([])
        out[d].append((asset, vcfg))
    return [s for s in out if s]


def overdue(schedule: Schedule, last_run: float | None, now: float) -> bool:
    """Whether a validator is due at once at (re)start: it never ran, its last run is older than its period,
    or stamped in the future (the clock was stepped back since, or another host's clock is ahead: waiting
    for ``last_run + period`` would pause the check for the size of the step)."""
    return last_run is None or last_run > now or now - last_run >= schedule.interval_seconds()


def first_run(schedule: Schedule, last_run: float | None, now: float, rng: random.Random) -> float | None:
    """When a validator should first run after (re)start (:func:`overdue`: soon, spread over its jitter);
    None lets a cron trigger decide."""
    period = schedule.interval_seconds()
    spread = schedule.jitter.total_seconds() or min(STARTUP_SPREAD, period)
    if last_run is None or overdue(schedule, last_run, now):
        return now + rng.uniform(0, spread)
    if schedule.cron is not None:
        return None
    return last_run + period + rng.uniform(0, schedule.jitter.total_seconds())


class _Job:
    """One validator's schedule: its trigger and next fire time (None: the trigger has no more)."""

    __slots__ = ("key", "next_run", "trigger", "version")

    def __init__(self, key: Key, trigger: BaseTrigger, next_run: datetime | None, version: int) -> None:
        self.key = key
        self.trigger = trigger
        self.next_run = next_run
        # Drawn anew (Scheduler._version) when the job is made, rescheduled or removed: heap entries of older
        # versions are ignored. Unique across the scheduler, not per job: a job replaced by a reload (same id)
        # must not match the heap entry its predecessor left.
        self.version = version


class Scheduler:
    def __init__(self, runner: Runner, clock: Callable[[], float] = time.time, seed: int | None = None) -> None:
        self.runner = runner
        self.clock = clock
        self.rng = random.Random(seed)
        self._specs: dict[str, Schedule] = {}
        self._jobs: dict[str, _Job] = {}
        self._heap: list[tuple[float, int, int, str]] = []  # (fire time, sequence, job version, job id)
        self._seq = 0
        self._versions = 0  # the last job version drawn (_version)
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._timer_at: float | None = None  # the wall-clock time the timer was set for
        self.running = False
        self._waking = False  # inside _wakeup: it sets the timer itself when done
        # Validators due at (re)start whose first run in this process has not ended: what they judge is
        # stale until then.
        self._due: set[Key] = set()
        # Validators that fired while what they judge had no result yet, with the runs they wait for.
        self._deferred: dict[Key, set[asyncio.Task[Result | None]]] = {}
        runner.state.listeners.append(self._on_result)

    # --- the timer queue ------------------------------------------------------------------------------------

    def _add_job(self, jid: str, key: Key, trigger: BaseTrigger, next_run: datetime | None) -> None:
        self._remove_job(jid)
        job = self._jobs[jid] = _Job(key, trigger, next_run, self._version())
        self._push(jid, job)

    def _version(self) -> int:
        self._versions += 1
        return self._versions

    def _remove_job(self, jid: str) -> None:
        job = self._jobs.pop(jid, None)
        if job is not None:
            job.version = self._version()

    def _push(self, jid: str, job: _Job) -> None:
        if job.next_run is None:
            return
        at = job.next_run.timestamp()
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, job.version, jid))
        if self.running and not self._waking and (self._timer_at is None or at < self._timer_at):
            self._arm()

    def _arm(self) -> None:
        """(Re)set the one timer for the earliest job (in a context of its own: runs never inherit one)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        while self._heap and self._stale(self._heap[0]):
            heapq.heappop(self._heap)
        if not self.running or not self._heap:
            return
        at = self._heap[0][0]
        delay = min(max(0.0, at - time.time()), MAX_SLEEP)
        self._timer = asyncio.get_running_loop().call_later(delay, self._wakeup, context=contextvars.Context())
        self._timer_at = at if delay < MAX_SLEEP else time.time() + MAX_SLEEP

    def _stale(self, entry: tuple[float, int, int, str]) -> bool:
        job = self._jobs.get(entry[3])
        return job is None or job.version != entry[2]

    def _wakeup(self) -> None:
        """Fire up to :data:`FIRE_BATCH` due jobs (coalesced: a job late by several periods fires once), then
        look again at once (the next batch) or when the next job is due."""
        self._timer = None
        self._timer_at = None
        if not self.running:
            return
        now = datetime.now(UTC)
        now_ts = now.timestamp()
        fired = 0
        self._waking = True
        try:
            fired = self._fire_due(now, now_ts)
        finally:
            self._waking = False
        if fired >= FIRE_BATCH:
            self._timer = asyncio.get_running_loop().call_soon(self._wakeup, context=contextvars.Context())
            self._timer_at = now_ts
            return
        self._arm()

    def _fire_due(self, now: datetime, now_ts: float) -> int:
        fired = 0
        while self._heap and fired < FIRE_BATCH:
            entry = self._heap[0]
            if self._stale(entry):
                heapq.heappop(self._heap)
                continue
            if entry[0] > now_ts:
                break
            heapq.heappop(self._heap)
            jid = entry[3]
            job = self._jobs[jid]
            job.version = self._version()
            job.next_run = self._next_after(job, now)
            self._push(jid, job)
            fired += 1
            try:
                self._fire(*job.key)
            except Exception:  # never lose the schedule to one job
                log.exception("fire_failed", asset=job.key[0], validator=job.key[1])
        return fired

    @staticmethod
    def _next_after(job: _Job, now: datetime) -> datetime | None:
        """The job's next fire time after firing now: its missed fire times are coalesced into this one run (as
        APScheduler with ``coalesce``: the trigger is stepped through them, then once past the last)."""
        nxt = job.next_run
        while nxt is not None and nxt <= now:
            nxt = job.trigger.get_next_fire_time(nxt, now)
        return nxt

    def _fire(self, asset: str, label: str) -> None:
        key = (asset, label)
        waiting = self._waiting_for(key, None)
        if waiting is None:
            self._launch(key)
            return
        names, running = waiting
        if key not in self._deferred:
            log.info("run_deferred", asset=asset, validator=label, waiting_for=names[:10], waiting=len(names))
        self._deferred[key] = self._deferred.get(key, set()) | running

    def _waiting_for(self, key: Key, running_at_fire: set[asyncio.Task[Result | None]] | None,
                     ) -> tuple[list[str], set[asyncio.Task[Result | None]]] | None:
        """What ``key`` still waits for before it may run (names and the runs in flight); None: nothing.

        A judged validator is awaited while it has no result, while it is due since (re)start and its first
        run has not ended, and while a run of it that was in flight when ``key`` fired has not ended (later
        runs are not awaited: a validator that is always running cannot starve the judge).
        """
        cfg = self.runner.state.config
        acfg = cfg.assets.get(key[0])
        vcfg = next((v for v in acfg.validators if v.label == key[1]), None) if acfg else None
        if vcfg is None:
            return None
        snap = self.runner.state.snapshot
        names: list[str] = []
        running: set[asyncio.Task[Result | None]] = set()
        for pkey in vcfg.judges(key[0], cfg):
            task = self.runner.running.get(pkey)
            in_flight = task is not None and not task.done()
            stats = snap.stats(*pkey)
            waited = in_flight and (running_at_fire is None or task in running_at_fire)
            if waited and task is not None:
                running.add(task)
            if waited or pkey in self._due or stats is None or stats.last_result is None:
                names.append(f"{pkey[0]}/{pkey[1]}")
        return (names, running) if names else None

    def _launch(self, key: Key) -> None:
        self.runner.launch(*key)
        task = self.runner.running.get(key)
        if task is not None and key in self._due:
            task.add_done_callback(lambda _t: self._ran(key))

    def _ran(self, key: Key) -> None:
        """A run of ``key`` ended (with a result or not): it no longer counts as due since (re)start."""
        self._due.discard(key)
        self._retry_soon()

    def _on_result(self, result: Result) -> None:
        self._due.discard((result.asset, result.validator))
        self._retry_soon()

    def _retry_soon(self) -> None:
        """Retry from the loop in a context of its own: not inside the finishing run's (its run_id)."""
        asyncio.get_running_loop().call_soon(self._retry, context=contextvars.Context())

    def _retry(self) -> None:
        """Launch the deferred validators whose judged validators now all have their results."""
        if not self.running:
            return
        for key, running in list(self._deferred.items()):
            if self._waiting_for(key, running) is None:
                del self._deferred[key]
                log.info("run_undeferred", asset=key[0], validator=key[1])
                self._launch(key)

    def start(self, cfg: Config, snapshot: Snapshot) -> None:
        self.running = True
        self.apply(cfg, snapshot)
        self._arm()

    def apply(self, cfg: Config, snapshot: Snapshot) -> None:
        """Reconcile jobs with the config: unchanged schedules keep their next run time."""
        wanted: dict[str, tuple[str, str, Schedule]] = {
            job_id(a, v.label): (a, v.label, v.schedule) for a, v in cfg.iter_validators()
        }
        for jid in list(self._specs):
            if jid not in wanted:
                self._remove_job(jid)
                del self._specs[jid]
                asset, _, label = jid.partition(_SEP)
                self._due.discard((asset, label))
                self._deferred.pop((asset, label), None)
        now = self.clock()
        triggers: dict[Schedule, BaseTrigger] = {}  # one per distinct schedule: a trigger holds no job's state
        for jid, (asset, label, schedule) in wanted.items():
            if self._specs.get(jid) == schedule:
                continue
            stats = snapshot.stats(asset, label)
            last_run = stats.last_run_at if stats else None
            if overdue(schedule, last_run, now):
                self._due.add((asset, label))
            start = first_run(schedule, last_run, now, self.rng)
            trigger = triggers.get(schedule) or triggers.setdefault(schedule, make_trigger(schedule))
            # None: the trigger's own first fire time (a cron schedule whose last run is recent).
            next_run = (datetime.fromtimestamp(start, tz=UTC) if start is not None
                        else trigger.get_next_fire_time(None, datetime.now(UTC)))
            self._add_job(jid, (asset, label), trigger, next_run)
            self._specs[jid] = schedule
        log.info("schedule_applied", jobs=len(self._specs))
        self._retry()  # a reload may have removed what a deferred validator waited for

    def next_runs(self) -> dict[tuple[str, str], float]:
        return {job.key: job.next_run.timestamp() for job in self._jobs.values() if job.next_run is not None}

    def shutdown(self) -> None:
        self._deferred.clear()
        if self._on_result in self.runner.state.listeners:
            self.runner.state.listeners.remove(self._on_result)
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        self._jobs.clear()
        self._heap.clear()

