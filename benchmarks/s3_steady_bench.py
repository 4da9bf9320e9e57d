#!/usr/bin/env python3
"""The S3 `replica` check in a running daemon vs `rclone check`, same buckets, same run.

`s3_replica_bench.py` times `drwatch check`, a fresh process per check: at a few thousand objects its wall time
is mostly the interpreter and library start-up (~0.5 s CPU), which a daemon pays once. This script measures
what the daemon pays per check: one process (the same code path as the daemon: a Runner with its S3 client
pool, its store, `Runner.execute`) runs the replica validator once to warm up (clients made, connections
opened), then `--repeat` more times; each run's wall time and the process's CPU time during it are reported,
beside `rclone check` of the same buckets (`--repeat` runs, each a fresh process, as rclone is used) and
`drwatch check` (cold, one process per check) for reference. Every run must be clean (outcome ok, rclone exit 0).

    python benchmarks/s3_steady_bench.py --objects 5000 --repeat 5            # moto server
    python benchmarks/s3_steady_bench.py --server rgw --objects 20000        # Ceph RGW (slower to set up)

Figures go to benchmarks/README.md with the machine's CPU and load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks", REPO / "daemon"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from s3_replica_bench import (  # noqa: E402  (after the path set-up)
    Bench,
    Row,
    Run,
    code_version,
    log,
    rclone_version,
    run_measured,
    start_server,
    write_config,
)

# Runs in its own process: one Runner (as the daemon has), the replica validator executed warmup + repeat times.
DRIVER = r"""
import asyncio, json, resource, sys, time
from pathlib import Path

from drwatch.config.model import load_config
from tests.support.runs import open_runner

def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime

async def main(path, repeat):
    cfg = load_config(Path(path))
    asset = next(iter(cfg.assets))
    vcfg = cfg.assets[asset].validators[0]
    out = []
    async with open_runner(cfg, Path(path).parent / "sandboxes") as runner:
        for i in range(repeat + 1):
            c0, t0 = cpu(), time.perf_counter()
            result = await runner.execute(asset, vcfg)
            out.append({"warmup": i == 0, "wall": time.perf_counter() - t0, "cpu": cpu() - c0,
                        "outcome": result.outcome.value,
                        "objects": min(c.objects.get("verified", 0) for c in result.copies)})
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def steady(bench: Bench, cfg: Path, repeat: int) -> tuple[list[dict[str, Any]], Run]:
    """The driver's per-run figures, and its whole process as measured from outside (requests, RSS)."""
    env = dict(bench.denv, PYTHONPATH=f"{REPO / 'daemon'}{os.pathsep}{REPO}")
    run = run_measured([sys.executable, "-c", DRIVER, str(cfg), str(repeat)], env, bench.srv, bench.alog)
    if run.rc != 0:
        raise SystemExit(f"the steady-state driver failed (rc {run.rc}): {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1]), run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=("moto", "rgw"), default="moto")
    ap.add_argument("--objects", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=16, help="uploader threads")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    a = ap.parse_args(argv)
    # what Bench's uploader and runs read
    args = argparse.Namespace(objects=a.objects, uploader="boto3", threads=a.threads, checksum="none",
                              quiet_wait=0.0)
    work = Path(tempfile.mkdtemp(prefix="s3steady-"))
    srv = start_server(a.server, a.objects)
    try:
        bench = Bench(args, work, srv, group=10_000)
        bench.upload()
        cfg = write_config(work, "steady", srv, "data/", None)
        runs, whole = steady(bench, cfg, a.repeat)
        warm = [r for r in runs if not r["warmup"]]
        bad = [r for r in runs if r["outcome"] != "ok" or r["objects"] != a.objects]
        rclone = [bench.rclone("data") for _ in range(a.repeat)]
        cold = [bench.drwatch(cfg) for _ in range(min(a.repeat, 3))]
        bad_rclone = [r.rc for r in rclone if r.rc != 0]
        bad_cold = [r.rc for r in cold if r.rc != 0]
        rows = {
            "drwatch in the daemon (warm, per run)": (statistics.median(r["wall"] for r in warm),
                                                      statistics.median(r["cpu"] for r in warm)),
            "drwatch in the daemon (first run)": (runs[0]["wall"], runs[0]["cpu"]),
            "rclone check (per process)": (Row(a.objects, "rclone", rclone).median("wall"),
                                           Row(a.objects, "rclone", rclone).median("cpu")),
            "drwatch check (per process)": (Row(a.objects, "drwatch", cold).median("wall"),
                                            Row(a.objects, "drwatch", cold).median("cpu")),
        }
        print(f"\n{code_version()}; {rclone_version()}; {srv.kind}; {a.objects} objects per bucket; "
              f"median of {a.repeat} (drwatch check: {len(cold)})")
        print(f"{'tool':<40} {'wall s':>8} {'cpu s':>8} {'objects/s':>10} {'vs rclone':>10}")
        base = rows["rclone check (per process)"][0]
        for name, (wall, cpu) in rows.items():
            print(f"{name:<40} {wall:>8.3f} {cpu:>8.3f} {a.objects / wall:>10.0f} {wall / base:>9.2f}x")
        print(f"daemon process: {whole.requests} requests over {a.repeat + 1} runs, peak RSS "
              f"{whole.maxrss_kib / 1024:.0f} MiB")
        if a.json:
            a.json.write_text(json.dumps({"runs": runs, "rows": rows, "objects": a.objects}, indent=2))
        problems = ([f"drwatch runs not ok/complete: {bad}"] if bad else []) + \
            ([f"rclone exit codes {bad_rclone}"] if bad_rclone else []) + \
            ([f"drwatch check exit codes {bad_cold}"] if bad_cold else [])
        for p in problems:
            log(f"FAIL: {p}")
        return 1 if problems else 0
    finally:
        srv.obj.cleanup()


if __name__ == "__main__":
    sys.exit(main())
