"""Crash safety: ``drwatch run`` killed with SIGKILL at random points of restore drills, then restarted.

For each drill kind and store backend (SQLite, PostgreSQL), N times (``DRWATCH_CRASH_N``, default 1: new seeds
on every run; the seed of each kill point is printed so a failure can be replayed with
``DRWATCH_CRASH_SEEDS=s1,s2``): the daemon runs drills back to back and is killed at a random moment (before,
during or after the restore, while the result is written). After a restart:

* no orphan: the crashed run's sandbox directory is gone and no process (cluster, pg_restore, psql) runs under
  it any more;
* no partial result: every stored result row is counted in ``run_counts`` and ``validator_state`` and vice
  versa (one transaction per result);
* metrics equal the stored state (runs by outcome, last run timestamp) right after the restart;
* the next scheduled run happens and is ``ok``.

Two more drill kinds are killed at the moment their orphan exists (a random delay after it appears; one seed each
by default, ``DRWATCH_CRASH_N`` repeats them too): ``model_weights`` with ``inference`` (SIGKILL while the
inference worker, which leads its own process group and so survives the daemon, runs inside the sandbox: the
restart's sandbox sweep kills it and removes the sandbox) and ``vector_restore`` on Pinecone (SIGKILL while the
temporary ``drwatch-drill-*`` index exists in the stand-in, which runs in the test process and so keeps its state:
the restart's background sweep deletes it).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.estate import (
    PINECONE_PROD,
    WHERE,
    Endpoints,
    Scenario,
    World,
    minilm_estate,
    public_tmpdir,
    wait_until,
)
from tests.support.helpers import DaemonProcess, metric_value, processes_mentioning
from tests.support.pgserver import PostgresServer
from tests.support.pinecone_standin import PineconeStandIn, pinecone_standin
from tests.support.s3servers import MotoServer

N = int(os.environ.get("DRWATCH_CRASH_N", "1"))  # new random seeds on every run; more: DRWATCH_CRASH_N=3
# New seeds every run; under pytest-xdist every worker must collect the same ones: derive them from the run's id.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_SEEDER = random.Random(_RUN) if _RUN else random.SystemRandom()
SEEDS = [int(s) for s in os.environ.get("DRWATCH_CRASH_SEEDS", "").split(",") if s.strip()] or \
    [_SEEDER.randrange(1, 10**6) for _ in range(N)]
# Drills that restore into something drwatch creates: a sandbox cluster, or a drill database on a staging server.
DRILLS = ["postgres_restore", "postgres_restore_target", "vector_restore"]
# Drills killed while their orphan exists: one seed each unless DRWATCH_CRASH_N / DRWATCH_CRASH_SEEDS say more.
ORPHAN_SEEDS = SEEDS if ("DRWATCH_CRASH_N" in os.environ or "DRWATCH_CRASH_SEEDS" in os.environ) else SEEDS[:1]


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


def scenario(world: World, moto: MotoServer, kind: str, target: PostgresServer, **ends_extra: Any) -> Scenario:
    ends = Endpoints(moto, moto.endpoint_url, moto.access_key, moto.secret_key, world.primary.host,
                     world.primary.port, world.standby.port, world.vector.port, target_dsn=target.dsn(),
                     **ends_extra)
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
        dead_dbs = pg_server.drill_databases()
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
            assert not set(dead_dbs) & set(pg_server.drill_databases()), dead_dbs
        finally:
            assert second.stop(timeout=60) == 0
        assert_whole_results(view.state())
        assert not list(sc.sandbox_dir.glob("drwatch-sbx-*"))
        assert pg_server.drill_databases() == []
        wait_until(lambda: not processes_mentioning(str(sc.sandbox_dir)), 15, "sandbox processes to end")
    finally:
        for proc in processes_mentioning(str(sc.sandbox_dir)):
            os.kill(proc, signal.SIGKILL)
        sc.cleanup()


def next_result(daemon: DaemonProcess, kind: str, old: set[str]) -> dict[str, Any] | None:
    """The first stored result of ``kind``'s drill whose run is not in ``old`` (None until there is one)."""
    import json

    asset, label = WHERE[kind]
    doc = json.loads(daemon.get("/api/v1/status")[1])
    fresh = [r for r in doc["results"] if (r["asset"], r["validator"]) == (asset, label) and r["run_id"] not in old]
    return fresh[0] if fresh else None


def crash_while(sc: Scenario, kind: str, store: tuple[dict[str, Any], dict[str, str], StoreView], seed: int,
                orphan: Callable[[], Any], swept: Callable[[Any], bool], capsys: pytest.CaptureFixture[str],
                window: float) -> Any:
    """Start drwatch, wait until ``orphan()`` is truthy (what a kill now would leave behind), SIGKILL it after a random
    delay in ``[0, window)`` (seeded), check the orphan is still there, restart, and prove: ``swept(orphan)`` becomes
    true, metrics equal the stored state, no result is partial, the next drill runs and is ``ok``."""
    store_cfg, store_env, view = store
    delay = random.Random(seed).uniform(0.0, window)
    first = sc.daemon(store_cfg, store_env)
    try:
        first.start(timeout=60)
        wait_until(orphan, 120, f"the {kind} drill's orphan-to-be")
    except BaseException:
        first.stop()
        raise
    time.sleep(delay)
    first.kill()
    left = orphan()
    with capsys.disabled():
        print(f"\ncrash: kind={kind} store={next(iter(store_cfg))} seed={seed} killed {delay:.2f}s after the orphan "
              f"appeared; left: {left}")
    assert left, "the orphan ended with the daemon: this case would not test the sweep"
    assert_whole_results(view.state())
    second = DaemonProcess(first.config, first.port, env={**sc.env, **store_env}, log_path=sc.dir / "second.log")
    try:
        second.start(timeout=60)
        wait_until(lambda: swept(left), 30, f"the restarted daemon to sweep {left}")
        state = stored_metrics_match(second, view)
        assert_whole_results(state)
        old = set(state["run_ids"])
        result = second.wait_for(lambda: next_result(second, kind, old), timeout=180)
        assert result["outcome"] == "ok", result["findings"]
    finally:
        assert second.stop(timeout=60) == 0
    assert_whole_results(view.state())
    assert not list(sc.sandbox_dir.glob("drwatch-sbx-*"))
    return left


def inference_workers(sandbox_dir: Path) -> list[int]:
    in_sandbox = processes_mentioning(str(sandbox_dir))
    return [p for p in processes_mentioning("drwatch.inference.worker") if p in in_sandbox]


@pytest.fixture(scope="module")
def minilm() -> Iterator[tuple[Path, Path]]:
    root = public_tmpdir("drw-crash-minilm-")
    try:
        yield minilm_estate(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", ORPHAN_SEEDS)
def test_sigkill_during_inference_then_restart(world: World, moto: MotoServer, seed: int, minilm: tuple[Path, Path],
                                              store: tuple[dict[str, Any], dict[str, str], StoreView],
                                              pg_server: PostgresServer,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``model_weights`` with ``inference``: SIGKILL while the inference worker runs in the sandbox. The worker leads
    its own process group, so it outlives the daemon; the restart's sandbox sweep kills it (PID-reuse safe, by its
    working directory) and removes the sandbox before the daemon is ready; the next drill reproduces the goldens."""
    kind = "model_weights_inference"
    sc = scenario(world, moto, kind, pg_server, minilm=minilm)
    try:
        def orphan() -> tuple[list[int], list[Path]]:
            workers = inference_workers(sc.sandbox_dir)
            return (workers, list(sc.sandbox_dir.glob("drwatch-sbx-*"))) if workers else ([], [])

        def swept(left: tuple[list[int], list[Path]]) -> bool:
            workers, dirs = left
            return not any(p.exists() for p in dirs) and not set(workers) & set(inference_workers(sc.sandbox_dir))

        workers, dirs = crash_while(sc, kind, store, seed, lambda: orphan()[0] and orphan(), swept, capsys, 1.5)
        assert workers and dirs
        wait_until(lambda: not processes_mentioning(str(sc.sandbox_dir)), 15, "sandbox processes to end")
    finally:
        for proc in processes_mentioning(str(sc.sandbox_dir)):
            os.kill(proc, signal.SIGKILL)
        sc.cleanup()


@pytest.fixture
def standin() -> Iterator[PineconeStandIn]:
    """The Pinecone stand-in in this (the test) process: its indexes survive the daemon's SIGKILL."""
    from tests.test_vector_pinecone import vectors

    with pinecone_standin() as server:
        server.create_index(PINECONE_PROD, 8, "cosine", vectors())
        server.create_backup(PINECONE_PROD, created=time.time() - 60)
        server.ready_delay = 3.0  # the temporary index exists (not ready yet) for 3 s of every drill
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("seed", ORPHAN_SEEDS)
def test_sigkill_while_a_temporary_pinecone_index_exists_then_restart(
        world: World, moto: MotoServer, seed: int, standin: PineconeStandIn,
        store: tuple[dict[str, Any], dict[str, str], StoreView], pg_server: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``vector_restore`` on Pinecone: SIGKILL while the temporary ``drwatch-drill-*`` index exists. The restarted
    daemon's start-up sweep deletes it (its owner PID is gone), the next drill passes, and when drwatch stops no
    temporary index remains; production was never written."""
    kind = "vector_restore_pinecone"
    sc = scenario(world, moto, kind, pg_server, pinecone=standin)

    def temps() -> list[str]:
        return [n for n in standin.index_names() if n.startswith("drwatch-drill-")]

    try:
        left = crash_while(sc, kind, store, seed, temps, lambda left: not set(left) & set(temps()), capsys, 2.5)
        deleted = {p.rsplit("/", 1)[-1] for p in standin.requests_matching("DELETE", "/indexes/drwatch-drill-")}
        assert set(left) <= deleted, (left, deleted)
        assert "pinecone_orphan_deleted" in (sc.dir / "second.log").read_text(), "not deleted as an orphan"
        assert temps() == []
        assert not standin.requests_matching("DELETE", PINECONE_PROD)
        assert PINECONE_PROD in standin.index_names()
    finally:
        sc.cleanup()
