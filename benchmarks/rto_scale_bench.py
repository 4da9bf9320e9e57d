#!/usr/bin/env python3
"""The restore-time model at scale: a full projection (``drwatch status``/``report``, the first /metrics render
after a start) of N assets whose copies share one location, each with the 64 read samples the store keeps.

For each size in ``--assets`` a child process builds the snapshot (N assets, production and one copy each, the
copies all on location ``near``; 64 timed reads per asset, one an hour) and measures the CPU seconds of
``drwatch.state.rto.project`` over every asset, and of ``drwatch.metrics.restore.rate_expiries`` for every asset
(what /metrics evaluates per asset) with the number of times it returns. ``--baseline DIR`` runs the same with
the drwatch package under DIR (e.g. a clone at an earlier commit), in the same run, for sizes up to
``--baseline-max`` (the quadratic baseline takes minutes beyond).

    python benchmarks/rto_scale_bench.py --assets 500,2000,10000
    git clone -q . /tmp/base && git -C /tmp/base checkout -q <commit>
    python benchmarks/rto_scale_bench.py --baseline /tmp/base/daemon --baseline-max 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(n: int) -> dict[str, float]:
    import yaml

    from drwatch.config.model import parse_config
    from drwatch.metrics.restore import rate_expiries
    from drwatch.state.compliance import evaluate
    from drwatch.state.rto import project
    from drwatch.state.snapshot import Snapshot
    from drwatch.store.rates import KEEP, RateSample

    data = {"locations": {"prod": {"kind": "filesystem", "path": "/nonexistent/p", "site": "a"},
                          "near": {"kind": "filesystem", "path": "/nonexistent/n", "site": "b"}},
            "assets": {f"a{i}": {"rpo": "30d", "rto": "1h", "production": {"location": "prod", "prefix": f"a{i}"},
                                 "copies": [{"location": "near", "prefix": f"a{i}"}],
                                 "validators": [{"kind": "replica"}]} for i in range(n)}}
    cfg = parse_config(yaml.safe_dump(data), source="/nonexistent/drwatch.yaml")
    now = time.time()
    rates = {("read", f"a{i}", "near"): tuple(
        RateSample("read", f"a{i}", "near", f"r{i}-{j}", now - 3600 * (KEEP - j) - i, 10**8, 1.0)
        for j in range(KEEP)) for i in range(n)}
    snap = Snapshot(cfg, rates=rates)
    verdicts = evaluate(cfg, snap, now)
    started = time.process_time()
    project(cfg, snap, verdicts, now)
    projection = time.process_time() - started
    started = time.process_time()
    expiries = sum(len(rate_expiries(cfg, snap, f"a{i}")) for i in range(n))
    return {"assets": n, "project_cpu_s": projection, "expiries_cpu_s": time.process_time() - started,
            "expiries": expiries}


def measure(daemon: Path, n: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(daemon)}
    out = subprocess.run([sys.executable, __file__, "--child", str(n)], env=env, check=True, capture_output=True,
                         text=True, timeout=3600)
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", default="500,2000,10000")
    ap.add_argument("--baseline", type=Path, help="a drwatch 'daemon' folder to compare with, in the same run")
    ap.add_argument("--baseline-max", type=int, default=2000)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    print(f"load average {os.getloadavg()[0]:.1f}; CPU seconds (process time) per full pass")
    print(f"{'variant':<9} {'assets':>7} {'project':>9} {'rate_expiries':>14} {'expiry times':>13}")
    for n in (int(x) for x in args.assets.split(",")):
        variants = [("current", REPO / "daemon")]
        if args.baseline is not None and n <= args.baseline_max:
            variants.append(("baseline", args.baseline))
        for name, daemon in variants:
            f = measure(daemon, n)
            print(f"{name:<9} {n:>7} {f['project_cpu_s']:>8.2f}s {f['expiries_cpu_s']:>13.2f}s "
                  f"{int(f['expiries']):>13,}", flush=True)


if __name__ == "__main__":
    main()
