"""Cluster mode: several `drwatch run` processes share one real PostgreSQL and split the work.

The multi-node test runs three real daemons against one database with 50 validators on short intervals,
SIGKILLs one node in the middle of a run and SIGSTOPs another for longer than the lease, and then checks
the store's own results: no slot ran twice, no validator overlapped itself, the killed node's run restarted
elsewhere within ``cluster.rerun_after``, and every node serves the same rule states.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from drwatch.cluster.confighash import config_hash
from drwatch.cluster.fence import Fence, fence_key
from drwatch.cluster.slots import SlotClock
from drwatch.config.model import parse_config
from drwatch.core.errors import ConfigError
from drwatch.validators.base import Schedule
from tests.support.cluster import (
    DSN_ENV,
    Cluster,
    cluster_config,
    duplicate_slots,
    make_estate,
    overlaps,
    query,
    results,
    rule_states,
    slow_s3_copies,
)
from tests.support.helpers import REPO, metric_value
from tests.support.pgserver import PostgresServer
from tests.support.s3servers import MotoServer

_dbs = iter(range(1, 1000))


def install(extra: str) -> str:
    """The install hint drwatch prints for a missing extra: this interpreter's pip, from a drwatch checkout."""
    return f"{Path(sys.prefix) / 'bin' / 'pip'} install '.[{extra}]' (in the drwatch checkout)"


@pytest.fixture
def cluster_db(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"drwatch_cluster_{os.getpid()}_{next(_dbs)}")


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cluster.yaml")
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------------------------------------- config


def test_cluster_mode_needs_a_shared_postgres_store() -> None:
    """cluster.enabled with the default SQLite store is a config error at `cluster.enabled`."""
    problems = _problems("cluster: {enabled: true, node: n1}\n")
    assert problems == ["cluster.enabled: cluster mode needs a shared PostgreSQL store: set store: {postgres: "
                        "{dsn_env: ...}} (SQLite is for a single node)"]


def test_cluster_timings_and_node_name_are_checked_with_their_path() -> None:
    """A lease shorter than two heartbeats, an unkeepable re-run bound and a bad node name are rejected."""
    store = "store: {postgres: {dsn_env: X}}\n"
    assert any(p.startswith("cluster: ") and "twice 'heartbeat'" in p
               for p in _problems(store + "cluster: {enabled: true, heartbeat: 10s, lease: 15s}\n"))
    assert any(p.startswith("cluster: ") and "'rerun_after' cannot be kept" in p
               for p in _problems(store + "cluster: {enabled: true, lease: 50s, poll: 5s, heartbeat: 5s, "
                                          "rerun_after: 59s}\n"))
    assert any(p.startswith("cluster.node: invalid node name")
               for p in _problems(store + "cluster: {enabled: true, node: 'a b'}\n"))
    assert any(p.startswith("cluster.surprise: unknown key")
               for p in _problems(store + "cluster: {enabled: true, surprise: 1}\n"))
    cfg = parse_config(store + "cluster: {enabled: true}\n", "cluster.yaml")
    assert cfg.cluster.rerun_after.total_seconds() == 60 and cfg.cluster.node_name  # defaults: host name


def test_config_hash_ignores_node_local_sections_only(tmp_path: Path) -> None:
    """Nodes differ in name, listen address, limits and logging; anything else changes the hash."""
    from tests.support.cluster import Estate

    est = Estate(tmp_path, ["a000", "a001"], [], [])
    base = cluster_config(est, "n1", 10101)
    h = config_hash(parse_config(yaml.safe_dump(base), "a.yaml"))
    other = cluster_config(est, "n2", 10102, max_concurrent=9)
    other["logging"] = {"format": "console"}
    assert config_hash(parse_config(yaml.safe_dump(other), "b.yaml")) == h
    changed = cluster_config(est, "n1", 10101, every="7s")
    assert config_hash(parse_config(yaml.safe_dump(changed), "c.yaml")) != h
    lease = cluster_config(est, "n1", 10101, lease="6s")
    assert config_hash(parse_config(yaml.safe_dump(lease), "d.yaml")) != h


# ---------------------------------------------------------------------------------------------- slots


def test_slots_are_identical_on_every_node_and_coalesce() -> None:
    """Two nodes computing independently agree on slot identity and due time; older slots coalesce."""
    sched = Schedule(every="10s", jitter="3s")
    a, b = SlotClock("db", "replica", sched), SlotClock("db", "replica", sched)
    now = 1_800_000_000.0
    seen = []
    for t in range(0, 60):
        sa, sb = a.current(now + t), b.current(now + t)
        assert sa == sb and sa is not None
        assert sa.due <= now + t < sa.due + 10 + 3  # the newest due slot, never a future one
        assert 0 <= sa.due - sa.slot / 1000 < 3  # jitter within [0, jitter)
        seen.append(sa.slot)
    assert seen == sorted(seen) and len(set(seen)) in (6, 7)  # ~one slot per period, monotone
    # A node that looks only once after a long pause sees only the newest slot (missed ones coalesce).
    assert a.current(now + 3600).slot > max(seen)
    # Different validators with the same period are spread over it.
    offsets = {SlotClock(f"a{i}", "replica", Schedule(every="1h")).offset for i in range(20)}
    assert len(offsets) == 20 and max(offsets) - min(offsets) > 1800
    # Cron: the latest fire time at or before now.
    cron = SlotClock("db", "drill", Schedule(cron="0 3 * * *"))
    slot = cron.current(1_800_000_000.0)
    assert slot is not None and time.gmtime(slot.slot / 1000)[3:6] == (3, 0, 0)
    assert 0 <= 1_800_000_000.0 - slot.due < 86400
    assert cron.next_due(1_800_000_000.0) - slot.due == 86400


# ---------------------------------------------------------------------------------------------- fence

_HOLDER = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", int(sys.argv[2]), int(sys.argv[3]))
    print("held", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


async def test_fence_holds_against_a_frozen_owner_and_frees_at_once_when_it_is_killed(cluster_db: str) -> None:
    """A live (or frozen) holder keeps the fence; SIGKILL of the holder frees it immediately; a fence whose
    connection is cut cancels the run that held it."""
    from drwatch.cluster.fence import FENCE_CLASS

    def connect() -> Any:
        return asyncpg.connect(cluster_db)

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, cluster_db, str(FENCE_CLASS),  # noqa: ASYNC220
                               str(fence_key("db", "replica"))], stdout=subprocess.PIPE)
    fence = Fence(connect)
    try:
        assert holder.stdout is not None
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == b"held"
        holder.send_signal(signal.SIGSTOP)  # frozen, its connection still open
        for _ in range(10):
            assert not await fence.try_acquire("db", "replica")
            await asyncio.sleep(0.1)
        assert await fence.try_acquire("db", "other")  # other validators are not blocked
        await fence.release("db", "other")
        holder.kill()  # SIGKILL (works on a stopped process)
        await asyncio.to_thread(holder.wait, 10)
        start = time.monotonic()
        while not await fence.try_acquire("db", "replica"):
            assert time.monotonic() - start < 5, "a killed holder's fence was not released"
            await asyncio.sleep(0.05)
        await fence.release("db", "replica")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()

    # The fence's own connection is cut while a run holds it: that run is cancelled.
    holding = asyncio.Event()

    async def run() -> None:
        assert await fence.try_acquire("db", "replica")
        holding.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(run())
    await asyncio.wait_for(holding.wait(), 10)
    admin = await asyncpg.connect(cluster_db)
    try:
        killed = await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                                      "WHERE locktype = 'advisory' AND classid = $1", FENCE_CLASS)
        assert killed == 1
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert task.cancelled() and not fence.held
        # A new session holds nothing: the next acquisition reconnects and succeeds.
        assert await fence.try_acquire("db", "replica")
        await fence.release("db", "replica")
    finally:
        await admin.close()
        await fence.close()


def test_cluster_mode_without_the_cluster_extra_is_a_clear_error(tmp_path: Path) -> None:
    """Without pgqueuer installed, cluster mode stops at start with an error naming the extra (exit 69)."""
    code = ("import sys; sys.modules['pgqueuer'] = None\n"
            "from drwatch.cluster.engine import open_engine\n"
            "from drwatch.core.errors import ValidatorError\n"
            "try:\n    open_engine(None, None, 'postgresql://x', lambda: None)\n"
            "except ValidatorError as exc:\n    print(exc.code, exc.message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=REPO)
    assert out.stdout.strip() == ("cluster_unavailable cluster mode needs the job engine of the 'cluster' extra: "
                                  + install("cluster"))


# ---------------------------------------------------------------------------------------------- multi-node


def _running_slow(dsn: str, assets: list[str], alive: set[str]) -> dict[str, Any] | None:
    rows = query(dsn, "SELECT asset, attempt_slot AS slot, running_node AS node FROM drwatch_cluster.slots "
                      "WHERE asset = ANY($1) AND running_node IS NOT NULL AND last_done < attempt_slot", assets)
    rows = [r for r in rows if r["node"] in alive]
    return rows[0] if rows else None


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_three_nodes_fifty_validators_survive_kill_and_freeze(cluster_db: str, tmp_path: Path,
                                                              moto: MotoServer) -> None:
    """3 daemons, 50 validators (every 5-8 s) for about a minute: zero duplicate slot runs, zero overlaps;
    SIGKILL of a node mid-run re-runs its slot on another node within rerun_after; SIGSTOP of a node
    past the lease causes no overlap and the node rejoins after SIGCONT; /metrics of all nodes agree."""
    est = make_estate(tmp_path / "estate", fast=47, slow=2, bad=1)
    proxy = slow_s3_copies(est, moto, get_delay=1.0)  # runs of slow0/slow1 take 3+ s, without CPU
    rerun_after = 20.0
    cl = Cluster(est, cluster_db, tmp_path, {"every": "5s", "slow_every": "6s", "lease": "5s",
                                                "heartbeat": "1s", "poll": "1s", "rerun_after": "20s"})
    try:
        for name in ("n1", "n2", "n3"):
            cl.add(name, start=False).proc.start(wait_ready=False)
        for node in cl.nodes.values():
            node.proc.wait_ready(timeout=90)
        n1 = cl.nodes["n1"].proc
        n1.wait_for(lambda: metric_value(n1.metrics(), "drwatch_cluster_nodes") == 3, timeout=30)
        time.sleep(8)  # all three take work

        # -- SIGKILL a node while it runs a slow validator: its slot runs again elsewhere within the bound.
        alive = {"n1", "n2", "n3"}
        victim = _wait(lambda: _running_slow(cluster_db, est.slow, alive), 60, "a slow run in progress")
        cl.nodes[victim["node"]].proc.kill()
        killed_at = time.time()
        alive.discard(victim["node"])
        rerun = _wait(lambda: query(cluster_db, "SELECT node, started_at FROM drwatch_cluster.runs "
                                                "WHERE asset = $1 AND slot = $2", victim["asset"], victim["slot"]),
                      90, "the killed node's slot re-run")
        assert len(rerun) == 1 and rerun[0]["node"] in alive
        assert rerun[0]["started_at"] - killed_at <= rerun_after, rerun[0]["started_at"] - killed_at

        # -- SIGSTOP a node in the middle of a slow run for longer than the lease, then SIGCONT.
        frozen = _wait(lambda: _running_slow(cluster_db, est.slow, alive), 60, "a slow run on a live node")
        frozen_proc = cl.nodes[frozen["node"]].proc
        other = cl.nodes[next(iter(alive - {frozen["node"]}))].proc
        frozen_proc.signal(signal.SIGSTOP)
        time.sleep(5 + 4)  # lease + margin: the other node takes over the frozen node's jobs
        assert metric_value(other.metrics(), "drwatch_cluster_nodes") == 1
        frozen_proc.signal(signal.SIGCONT)
        continued_at = time.time()
        other.wait_for(lambda: metric_value(other.metrics(), "drwatch_cluster_nodes") == 2, timeout=30)
        _wait(lambda: query(cluster_db, "SELECT 1 FROM drwatch_cluster.runs WHERE node = $1 AND started_at > $2",
                            frozen["node"], continued_at), 60, "the resumed node runs validators again")
        done = _wait(lambda: query(cluster_db, "SELECT node FROM drwatch_cluster.runs WHERE asset = $1 AND slot = $2",
                                   frozen["asset"], frozen["slot"]), 60, "the frozen slot finished")
        assert len(done) == 1  # ran once: by its frozen owner after it resumed, or by the other node

        # -- Every live node serves the same rule states (projected from the shared store).
        live = [cl.nodes[n].proc for n in sorted(alive)]

        def agreeing() -> dict[tuple[str, str], str] | None:
            states = [rule_states(p.metrics()) for p in live]
            return states[0] if all(s == states[0] for s in states) and len(states[0]) == 5 * 50 else None

        states = _wait(agreeing, 45, "all nodes agree on every rule state", interval=1)
        assert states[("bad0", "copies")] == "fail"
        assert {s for (asset, _rule), s in states.items() if asset != "bad0"} == {"pass"}
        text = live[0].metrics()
        for name in alive:
            assert (metric_value(text, "drwatch_node_runs_total", node=name, outcome="ok") or 0) > 0
        assert (metric_value(text, "drwatch_node_runs_total", node=victim["node"], outcome="ok") or 0) > 0
    finally:
        cl.stop_all()
        proxy.stop()

    rows = results(cluster_db)
    assert len(rows) > 200
    assert overlaps(rows) == []
    assert duplicate_slots(rows) == []
    assert all(r["started_at"] >= r["due"] for r in rows if r["due"] is not None)
    # Results without a run row are runs cancelled by the final shutdown (their slots count as done).
    assert {r["outcome"] for r in rows if r["slot"] is None} <= {"cancelled"}
    assert {r["node"] for r in rows if r["slot"] is not None} == {"n1", "n2", "n3"}


@pytest.mark.slow
def test_reload_applies_cluster_wide_only_when_every_node_has_the_same_config(cluster_db: str,
                                                                              tmp_path: Path) -> None:
    """A reload on one node is staged (drift shows in drwatch_config_hash_info); once the other node
    has loaded the same config, both switch and the new validator runs."""
    est = make_estate(tmp_path / "estate", fast=3)
    cl = Cluster(est, cluster_db, tmp_path, {"every": "3s"})
    try:
        a, b = cl.add("n1", start=False), cl.add("n2", start=False)
        a.proc.start(wait_ready=False)
        b.proc.start(wait_ready=False)
        a.proc.wait_ready(60)
        b.proc.wait_ready(60)
        a.proc.wait_for(lambda: metric_value(a.proc.metrics(), "drwatch_cluster_nodes") == 2, timeout=30)

        def add_validator(path: Path) -> None:
            data = yaml.safe_load(path.read_text())
            data["assets"]["a000"]["validators"].append({"kind": "replica", "name": "second",
                                                         "schedule": {"every": "2s"}})
            path.write_text(yaml.safe_dump(data))

        def hashes(text: str) -> dict[str, str]:
            from prometheus_client.parser import text_string_to_metric_families

            return {s.labels["node"]: s.labels["hash"] for f in text_string_to_metric_families(text)
                    for s in f.samples if s.name == "drwatch_config_hash_info"}

        add_validator(a.config)
        a.proc.signal(signal.SIGHUP)
        a.proc.wait_for(lambda: len(set(hashes(a.proc.metrics()).values())) == 2, timeout=20)  # drift
        time.sleep(6)
        assert query(cluster_db, "SELECT 1 FROM results WHERE validator = 'second'") == []  # staged, not applied
        add_validator(b.config)
        b.proc.signal(signal.SIGHUP)
        a.proc.wait_for(lambda: len(set(hashes(a.proc.metrics()).values())) == 1, timeout=20)
        _wait(lambda: query(cluster_db, "SELECT 1 FROM results WHERE validator = 'second'"), 30,
              "the new validator runs once both nodes have it")
        assert metric_value(a.proc.metrics(), "drwatch_config_last_reload_successful") == 1
    finally:
        cl.stop_all()
    assert duplicate_slots(results(cluster_db)) == []
    assert os.environ.get(DSN_ENV) is None  # the DSN only ever went to the daemons' environment


HOLD_FINISH = """
CREATE TABLE drwatch_test_hold (held BOOLEAN NOT NULL);
CREATE FUNCTION drwatch_test_hold_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.last_done > OLD.last_done THEN
        INSERT INTO drwatch_test_hold (held) VALUES (true);  -- visible to others only if this commits
        WHILE EXISTS (SELECT 1 FROM drwatch_test_hold_switch) LOOP
            PERFORM pg_sleep(0.05);
        END LOOP;
    END IF;
    RETURN NEW;
END $$;
CREATE TABLE drwatch_test_hold_switch (on_ BOOLEAN NOT NULL);
INSERT INTO drwatch_test_hold_switch VALUES (true);
CREATE TRIGGER drwatch_test_hold_finish BEFORE UPDATE ON drwatch_cluster.slots
    FOR EACH ROW EXECUTE FUNCTION drwatch_test_hold_finish();
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_node_killed_after_storing_its_result_is_not_run_again(cluster_db: str, tmp_path: Path) -> None:
    """The at-least-once window closed: a node is held (by a trigger on the cluster's slots table) after it
    stored a run's result and before it marked the slot done, and is SIGKILLed there. Another node picks the
    job up, finds the stored result under the run id the slot names, and completes the slot from it: the
    validator does not run again for that slot, and the run row and counter go to the node that ran it."""
    from drwatch.cluster.schema import install

    async def prepare() -> None:
        conn = await asyncpg.connect(cluster_db, timeout=10)
        try:
            await install(conn)
            await conn.execute(HOLD_FINISH)
        finally:
            await conn.close()

    asyncio.run(prepare())
    est = make_estate(tmp_path / "estate", fast=1)  # one validator, schedule 1 h: one slot in this test
    cl = Cluster(est, cluster_db, tmp_path, {"every": "1h", "lease": "3s", "heartbeat": "1s", "poll": "1s",
                                                "rerun_after": "10s"})
    try:
        n1 = cl.add("n1").proc
        stored = _wait(lambda: query(cluster_db, "SELECT run_id, outcome FROM results"), 60, "n1 stores its result")
        assert [r["outcome"] for r in stored] == ["ok"]
        # n1 is now inside the transaction that marks the slot done, held by the trigger.
        _wait(lambda: query(cluster_db, "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"), 30,
              "n1 held in its finishing transaction")
        n1.kill()
        query(cluster_db, "DELETE FROM drwatch_test_hold_switch")  # the held transaction ends (rolled back)
        slot_row = query(cluster_db, "SELECT attempt_slot, last_done, running_run_id, running_node "
                                     "FROM drwatch_cluster.slots")
        assert len(slot_row) == 1 and slot_row[0]["last_done"] < slot_row[0]["attempt_slot"]
        assert slot_row[0]["running_run_id"] == stored[0]["run_id"] and slot_row[0]["running_node"] == "n1"

        n2 = cl.add("n2").proc
        n2.wait_for(lambda: "slot_completed_from_stored_result" in n2.log(), timeout=60)
        done = query(cluster_db, "SELECT last_done, attempt_slot, running_run_id FROM drwatch_cluster.slots")
        assert done[0]["last_done"] == done[0]["attempt_slot"] and done[0]["running_run_id"] is None
        runs = query(cluster_db, "SELECT run_id, node, outcome FROM drwatch_cluster.runs")
        assert runs == [{"run_id": stored[0]["run_id"], "node": "n1", "outcome": "ok"}]
        counts = query(cluster_db, "SELECT node, outcome, count FROM drwatch_cluster.node_runs")
        assert counts == [{"node": "n1", "outcome": "ok", "count": 1}]
        time.sleep(3)  # n2 had every chance to run it again
        assert [r["run_id"] for r in query(cluster_db, "SELECT run_id FROM results")] == [stored[0]["run_id"]]
        n2.wait_for(lambda: metric_value(n2.metrics(), "drwatch_node_runs_total", node="n1", outcome="ok") == 1,
                    timeout=30)
    finally:
        cl.stop_all()
