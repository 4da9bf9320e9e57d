"""Cluster mode on this machine: scheduled-to-started latency, throughput and the database load the engine adds.

For each configuration a fresh database on one throwaway PostgreSQL 15 (tests/support/pgserver.py) and N real
`drwatch run` processes share V `replica` validators over small filesystem trees (3 files each), every
`--every` seconds, for `--seconds` after a warm-up:

* ``single``: one node without cluster mode (APScheduler, the same PostgreSQL store): the baseline;
* ``cluster-1``, ``cluster-2``, ``cluster-3``: 1, 2, 3 nodes in cluster mode (pgqueuer).

Reported per configuration: scheduled-to-started latency p50/p95 (``runs.started_at - runs.due``: from the
slot's due time, jitter included, to the validator starting, i.e. slot taking, enqueue, NOTIFY, dequeue,
fence and local limits), completed runs per minute (results stored in the window), database transactions
per second (``pg_stat_database`` ``xact_commit + xact_rollback`` delta over the window) and per run, and
the transactions the engine adds (cluster minus the single-node baseline, per run and per second).

    python benchmarks/cluster_bench.py                       # V=60, every 10 s, 60 s windows
    python benchmarks/cluster_bench.py --validators 30 --seconds 30 --json /tmp/cluster.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.cluster import Cluster, make_estate, percentile, query  # noqa: E402
from tests.support.pgserver import PostgresServer  # noqa: E402

_XACT = "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()"


def measure(server: PostgresServer, work: Path, name: str, nodes: int, cluster: bool, validators: int,
            every: float, warmup: float, seconds: float) -> dict[str, Any]:
    dsn = server.create_database(f"bench_{name.replace('-', '_')}")
    est = make_estate(work / name / "estate", fast=validators)
    opts = {"every": f"{every:g}s", "enabled": cluster, "lease": "10s", "heartbeat": "2s", "poll": "2s",
            "rerun_after": "30s", "max_concurrent": 4}
    cl = Cluster(est, dsn, work / name, opts)
    try:
        for i in range(nodes):
            cl.add(f"n{i + 1}", start=False).proc.start(wait_ready=False)
        for node in cl.nodes.values():
            node.proc.wait_ready(timeout=120)
        time.sleep(warmup)
        t0 = time.time()
        x0 = query(dsn, _XACT)[0]["n"]
        time.sleep(seconds)
        x1 = query(dsn, _XACT)[0]["n"]
        t1 = time.time()
    finally:
        cl.stop_all()
    done = query(dsn, "SELECT count(*) AS n FROM results WHERE finished_at >= $1 AND finished_at < $2", t0, t1)[0]["n"]
    lat = [r["lat"] for r in query(dsn, "SELECT started_at - due AS lat FROM drwatch_cluster.runs "
                                        "WHERE started_at >= $1 AND started_at < $2", t0, t1)] if cluster else []
    split = query(dsn, "SELECT node, count(*) AS n FROM drwatch_cluster.runs WHERE started_at >= $1 "
                       "AND started_at < $2 GROUP BY node ORDER BY node", t0, t1) if cluster else []
    # The transactions of the two snapshot queries themselves are negligible (2 in the window).
    xact = (x1 - x0) / (t1 - t0)
    return {
        "config": name, "nodes": nodes, "validators": validators, "every_s": every, "window_s": round(t1 - t0, 1),
        "runs_per_min": round(done * 60 / (t1 - t0), 1), "expected_runs_per_min": round(validators * 60 / every, 1),
        "latency_p50_s": round(percentile(lat, 50), 3) if lat else None,
        "latency_p95_s": round(percentile(lat, 95), 3) if lat else None,
        "db_xact_per_s": round(xact, 1), "db_xact_per_run": round(xact * (t1 - t0) / done, 1) if done else math.nan,
        "runs_by_node": {r["node"]: r["n"] for r in split},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--validators", type=int, default=60)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="drwatch-cluster-bench-"))
    server = PostgresServer()
    server.start()
    rows = []
    try:
        plan = [("single", 1, False), ("cluster-1", 1, True), ("cluster-2", 2, True), ("cluster-3", 3, True)]
        for name, nodes, cluster in plan:
            row = measure(server, work, name, nodes, cluster, args.validators, args.every, args.warmup,
                          args.seconds)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    print(f"\n{'config':<10} {'runs/min':>9} {'p50 s':>7} {'p95 s':>7} {'xact/s':>7} {'xact/run':>9} "
          f"{'engine xact/run':>16} {'engine xact/s':>14}  split")
    for r in rows:
        extra_run = r["db_xact_per_run"] - base["db_xact_per_run"]
        extra_s = r["db_xact_per_s"] - base["db_xact_per_s"]
        r["engine_xact_per_run"] = round(extra_run, 1)
        r["engine_xact_per_s"] = round(extra_s, 1)
        p50 = "-" if r["latency_p50_s"] is None else f"{r['latency_p50_s']:.3f}"
        p95 = "-" if r["latency_p95_s"] is None else f"{r['latency_p95_s']:.3f}"
        print(f"{r['config']:<10} {r['runs_per_min']:>9} {p50:>7} {p95:>7} {r['db_xact_per_s']:>7} "
              f"{r['db_xact_per_run']:>9} {extra_run:>16.1f} {extra_s:>14.1f}  {r['runs_by_node']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
