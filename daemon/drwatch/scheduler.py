"""When validators run: APScheduler 3.x triggers (interval with jitter, or cron), coalesced, never
overlapping (the runner refuses a second concurrent run of the same validator).

A validator without a stored result, or whose last run is older than its period, runs soon after start
(spread over its jitter), not a whole period later.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from drwatch.config import Config
from drwatch.runner import Runner
from drwatch.snapshot import Snapshot
from drwatch.validators.base import Schedule

log = structlog.get_logger("drwatch.scheduler")
_SEP = "\x1f"
STARTUP_SPREAD = 10.0  # seconds over which overdue validators without jitter are spread at start


def job_id(asset: str, label: str) -> str:
    return f"{asset}{_SEP}{label}"


def make_trigger(schedule: Schedule) -> BaseTrigger:
    jitter = int(schedule.jitter.total_seconds()) or None
    if schedule.cron is not None:
        return CronTrigger(**_cron_fields(schedule.cron), timezone="UTC", jitter=jitter)
    assert schedule.every is not None
    return IntervalTrigger(seconds=schedule.every.total_seconds(), jitter=jitter, timezone="UTC")


def _cron_fields(expr: str) -> dict[str, str]:
    minute, hour, day, month, dow = expr.split()
    return {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": dow}


def first_run(schedule: Schedule, last_run: float | None, now: float, rng: random.Random) -> float | None:
    """When a validator should first run after (re)start; None lets a cron trigger decide.

    A last run stamped in the future means the clock was stepped back since (or another host's clock is
    ahead): waiting for ``last_run + period`` would pause the check for the size of the step, so it counts
    as overdue.
    """
    period = schedule.interval_seconds()
    spread = schedule.jitter.total_seconds() or min(STARTUP_SPREAD, period)
    if last_run is None or last_run > now or now - last_run >= period:
        return now + rng.uniform(0, spread)
    if schedule.cron is not None:
        return None
    return last_run + period + rng.uniform(0, schedule.jitter.total_seconds())


class Scheduler:
    def __init__(self, runner: Runner, clock: Callable[[], float] = time.time, seed: int | None = None) -> None:
        self.runner = runner
        self.clock = clock
        self.rng = random.Random(seed)
        self._sched = AsyncIOScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None,
        })
        self._specs: dict[str, Schedule] = {}

    async def _fire(self, asset: str, label: str) -> None:
        self.runner.launch(asset, label)

    def start(self, cfg: Config, snapshot: Snapshot) -> None:
        self._sched.start()
        self.apply(cfg, snapshot)

    def apply(self, cfg: Config, snapshot: Snapshot) -> None:
        """Reconcile jobs with the config: unchanged schedules keep their next run time."""
        wanted: dict[str, tuple[str, str, Schedule]] = {
            job_id(a, v.label): (a, v.label, v.schedule) for a, v in cfg.iter_validators()
        }
        for jid in list(self._specs):
            if jid not in wanted:
                self._sched.remove_job(jid)
                del self._specs[jid]
        now = self.clock()
        for jid, (asset, label, schedule) in wanted.items():
            if self._specs.get(jid) == schedule:
                continue
            if jid in self._specs:
                self._sched.remove_job(jid)
            stats = snapshot.stats(asset, label)
            start = first_run(schedule, stats.last_run_at if stats else None, now, self.rng)
            kwargs = {}
            if start is not None:
                kwargs["next_run_time"] = datetime.fromtimestamp(start, tz=UTC)
            self._sched.add_job(self._fire, make_trigger(schedule), args=(asset, label), id=jid,
                                name=f"{asset}/{label}", **kwargs)
            self._specs[jid] = schedule
        log.info("schedule_applied", jobs=len(self._specs))

    def next_runs(self) -> dict[tuple[str, str], float]:
        out = {}
        for job in self._sched.get_jobs():
            asset, _, label = job.id.partition(_SEP)
            if job.next_run_time is not None:
                out[(asset, label)] = job.next_run_time.timestamp()
        return out

    def shutdown(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)

