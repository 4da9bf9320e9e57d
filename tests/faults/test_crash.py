"""Crash safety: ``drwatch run`` killed with SIGKILL at random points of restore drills, then restarted.

For each drill kind and store backend (SQLite, PostgreSQL), N times (``DRWATCH_CRASH_N``, default 3; the seed
of each kill point is printed so a failure can be replayed with ``DRWATCH_CRASH_SEEDS=s1,s2``): the daemon
runs drills back to back and is killed at a random moment (before, during or after the restore, while the
result is written). After a restart:

* no orphan: the crashed run's sandbox directory is gone and no process (cluster, pg_restore, psql) runs under
  it any more;
* no partial result: every stored result row is counted in ``run_counts`` and ``validator_state`` and vice
  versa (one transaction per result);
* metrics equal the stored state (runs by outcome, last run timestamp) right after the restart;
* the next scheduled run happens and is ``ok``.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.estate import WHERE, Endpoints, Scenario, World, processes_mentioning, wait_until
from tests.helpers import DaemonProcess, metric_value
from tests.pgserver import PostgresServer
from tests.s3servers import MotoServer

N = int(os.environ.get("DRWATCH_CRASH_N", "3"))
SEEDS = [int(s) for s in os.environ.get("DRWATCH_CRASH_SEEDS", "").split(",") if s.strip()] or \
    [random.SystemRandom().randrange(1, 10**6) for _ in range(N)]
# Drills that restore into something drwatch creates: a sandbox cluster, or a drill database on a staging server.
DRILLS = ["postgres_restore", "postgres_restore_target", "vector_restore"]


class StoreView:
    """Reads the store's tables directly (not through drwatch): the ground truth for the checks."""

    def __init__(self, sqlite_path: Path | None = None, pg: PostgresServer | None = None, db: str = "") -> None:
        self.sqlite_path, self.pg, self.db = sqlite_path, pg, db

    def rows(self, sql: str) -> list[tuple[str, ...]]:
        if self.sqlite_path is not None:
            with sqlite3.connect(self.sqlite_path, timeout=30) as conn:
                return [tuple(str(v) for v in r) for r in conn.execute(sql).fetchall()]
        assert self.pg is not None
        out = self.pg.psql(sql, self.db)
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def state(self) -> dict[str, Any]:
        return {
            "results": sorted(self.rows("SELECT asset, validator, outcome, count(*) FROM results GROUP BY 1, 2, 3")),
            "run_counts": sorted(self.rows("SELECT asset, validator, outcome, count FROM run_counts WHERE count > 0")),
            "durations": sorted(self.rows("SELECT asset, validator, duration_count FROM validator_state")),
            "per_validator": sorted(self.rows("SELECT asset, validator, count(*) FROM results GROUP BY 1, 2")),
            "last_run": sorted(self.rows("SELECT asset, validator, last_run_at FROM validator_state")),
            "run_ids": sorted(r[0] for r in self.rows("SELECT run_id FROM results")),
        }


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, Any], dict[str, str], StoreView]]:
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite"
        yield {"sqlite": str(path)}, {}, StoreView(sqlite_path=path)
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    db = f"drwatch_crash_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    dsn = server.create_database(db)
    try:
        env = {"DRW_CRASH_STORE_DSN": dsn}
        yield {"postgres": {"dsn_env": "DRW_CRASH_STORE_DSN"}}, env, StoreView(pg=server, db=db)
    finally:
        server.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def drill_databases(server: PostgresServer) -> list[str]:
    out = server.psql(r"SELECT datname FROM pg_database WHERE datname LIKE 'drwatch\_drill\_%' ORDER BY 1")
    return out.split()


def scenario(world: World, moto: MotoServer, kind: str, target: PostgresServer) -> Scenario:
    ends = Endpoints(moto, moto.endpoint_url, moto.access_key, moto.secret_key, world.primary.host,
                     world.primary.port, world.standby.port, world.vector.port, target_dsn=target.dsn())
    sc = Scenario(world, f"crash-{kind}", (kind,), ends)
    sc.build()
    del sc.assets["healthy"]  # only drills: no result can land between the restart and the first scrape
    for asset in sc.assets.values():
        for v in asset["validators"]:
            v["schedule"] = {"every": "2s", "jitter": "0s"}
    return sc


def stored_metrics_match(daemon: DaemonProcess, view: StoreView) -> dict[str, Any]:
    """Scrape between two identical reads of the store, and compare."""
    for _ in range(20):
        before = view.state()
        text = daemon.metrics()
        if view.state() == before:
            break
    else:
        raise AssertionError("the store kept changing while scraping")
    for asset, validator, outcome, count in before["run_counts"]:
        got = metric_value(text, "drwatch_validator_runs_total", asset=asset, validator=validator, outcome=outcome)
        assert got == float(count), (asset, validator, outcome, got, count)
    for asset, validator, last in before["last_run"]:
        got = metric_value(text, "drwatch_validator_last_run_timestamp_seconds", asset=asset, validator=validator)
        assert got == pytest.approx(float(last)), (asset, validator, got, last)
    return before


def assert_whole_results(state: dict[str, Any]) -> None:
    """Every result row is counted, every count has its row: nothing was written half."""
    assert state["results"] == state["run_counts"], state
    assert state["per_validator"] == state["durations"], state


@pytest.mark.slow
@pytest.mark.parametrize("kind", DRILLS)
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_at_a_random_point_then_restart(world: World, moto: MotoServer, kind: str, seed: int,
                                                store: tuple[dict[str, Any], dict[str, str], StoreView],
                                                pg_server: PostgresServer,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL at a random moment of back-to-back drills; the restarted daemon sweeps the orphan, its metrics
    equal the stored state, no result is partial, and the next drill runs and passes."""
    store_cfg, store_env, view = store
    rng = random.Random(seed)
    kill_after = rng.uniform(0.3, 9.0)
    with capsys.disabled():
        print(f"\ncrash: kind={kind} store={next(iter(store_cfg))} seed={seed} kill_after={kill_after:.2f}s")
    sc = scenario(world, moto, kind, pg_server)
    try:
        first = sc.daemon(store_cfg, store_env)
        try:
            first.start(timeout=60)
        except BaseException:
            first.stop()  # closes its log
            raise
        time.sleep(kill_after)
        first.kill()  # SIGKILL to the daemon's process group; drill subprocesses lead their own groups
        left = list(sc.sandbox_dir.glob("drwatch-sbx-*"))
        dead_dbs = drill_databases(pg_server)
        with capsys.disabled():
            running = sum(1 for p in left if list(p.glob("**/postmaster.pid")))
            print(f"crash: killed with {len(left)} sandbox(es) left ({running} with a PostgreSQL cluster), "
                  f"{len(dead_dbs)} drill database(s), "
                  f"{len(view.state()['run_ids'])} result(s) stored")
        assert_whole_results(view.state())

        second = DaemonProcess(first.config, first.port, env={**sc.env, **store_env},
                               log_path=sc.dir / "second.log")
        try:
            second.start(timeout=60)
            # The orphan sweep runs before the daemon reports ready.
            assert not [p for p in left if p.exists()], left
            wait_until(lambda: not any(processes_mentioning(str(p)) for p in left), 15,
                       "processes under the crashed run's sandbox to end")
            state = stored_metrics_match(second, view)
            assert_whole_results(state)
            asset, label = WHERE[kind]
            old = set(state["run_ids"])

            def new_result() -> dict[str, Any] | None:
                import json

                doc = json.loads(second.get("/api/v1/status")[1])
                fresh = [r for r in doc["results"] if (r["asset"], r["validator"]) == (asset, label)
                         and r["run_id"] not in old]
                return fresh[0] if fresh else None
            result = second.wait_for(new_result, timeout=120)
            assert result["outcome"] == "ok", result["findings"]
            # The dead run's drill database is dropped by the new run's sweep (its run lock died with it).
            assert not set(dead_dbs) & set(drill_databases(pg_server)), dead_dbs
        finally:
            assert second.stop(timeout=60) == 0
        assert_whole_results(view.state())
        assert not list(sc.sandbox_dir.glob("drwatch-sbx-*"))
        assert drill_databases(pg_server) == []
        wait_until(lambda: not processes_mentioning(str(sc.sandbox_dir)), 15, "sandbox processes to end")
    finally:
        for proc in processes_mentioning(str(sc.sandbox_dir)):
            os.kill(proc, signal.SIGKILL)
        sc.cleanup()
