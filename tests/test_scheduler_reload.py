"""The scheduler's job heap across reloads (drwatch.engine.scheduler): a reload that changes, removes or re-adds a
validator's schedule leaves exactly one live fire time per job, the one ``next_runs`` reports; an unchanged
schedule keeps its fire time. Real runner over a real SQLite store; nothing fires (the scheduler is not started)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from drwatch.config.model import parse_config
from drwatch.engine.scheduler import Scheduler, job_id
from tests.support.helpers import basic_config
from tests.support.runs import open_runner


def _config(tmp_path: Path, schedules: dict[str, dict[str, Any]]) -> Any:
    raw = basic_config(tmp_path, store={"sqlite": str(tmp_path / "state.sqlite")})
    asset = raw["assets"]["data"]
    raw["assets"] = {name: {**asset, "validators": [{"kind": "replica", "schedule": s}]}
                     for name, s in schedules.items()}
    return parse_config(yaml.safe_dump(raw))


def _live(scheduler: Scheduler) -> Counter[str]:
    """How many heap entries would fire, per job (a job has one, or it fires at times it no longer has)."""
    return Counter(e[3] for e in scheduler._heap if not scheduler._stale(e))


async def test_a_reload_leaves_one_fire_time_per_job(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"a": {"every": "1h"}, "b": {"every": "1h"}, "c": {"every": "1h"}})
    async with open_runner(cfg, None) as runner:
        state = runner.state
        scheduler = Scheduler(runner, seed=7)
        try:
            scheduler.apply(cfg, state.snapshot)
            first = scheduler.next_runs()
            # b's schedule changes before its first run, c is removed: their first fire times must not stay live.
            cfg2 = _config(tmp_path, {"a": {"every": "1h"}, "b": {"every": "2h"}})
            scheduler.apply(cfg2, state.snapshot)
            assert _live(scheduler) == {job_id("a", "replica"): 1, job_id("b", "replica"): 1}
            assert scheduler.next_runs()[("a", "replica")] == first[("a", "replica")]  # unchanged: kept
            # c comes back: a new job, not its old fire time revived next to the new one.
            cfg3 = _config(tmp_path, {"a": {"every": "1h"}, "b": {"every": "2h"}, "c": {"every": "1h"}})
            scheduler.apply(cfg3, state.snapshot)
            live = _live(scheduler)
            assert set(live.values()) == {1} and len(live) == 3, live
            live_times = {e[3]: e[0] for e in scheduler._heap if not scheduler._stale(e)}
            assert {job_id(*k): t for k, t in scheduler.next_runs().items()} == live_times
        finally:
            scheduler.shutdown()
