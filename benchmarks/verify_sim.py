"""Verification economy, simulated: rolling read coverage under an egress budget versus a naive full read.

A simulation with a controllable clock (one replica run per simulated day). It drives drwatch's own pure
planner (``drwatch.validators.copies.ledger``: ``daily_allowance``, ``select_reads``, ``shortfall``) over a synthetic
object
population held in memory; no S3 server and no store are involved (those are proven by
tests/test_verify_economy.py against moto through a recording proxy). Requests are modelled as an S3
client sends them: one LIST per 1,000 keys per run (the metadata pass; ETag evidence needs no HEAD),
one GET per object read.

Faults: silent corruptions (same size, same ETag: only a read can see them) planted on random days in
random objects; an object is detected the first day a read covers it after its corruption.

    python3 benchmarks/verify_sim.py                      # 100k objects, 10 GB, 2 %/day, 30 days
    python3 benchmarks/verify_sim.py --budget-pct 4 --faults 200
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daemon"))

from drwatch.core.sizes import format_size
from drwatch.validators.copies.ledger import (
    DAY,
    LedgerRow,
    Totals,
    VerificationPolicy,
    daily_allowance,
    due_cutoff,
    select_reads,
    shortfall,
)

LIST_PAGE = 1000


def population(n: int, total: int, rng: random.Random) -> list[int]:
    """n object sizes (lognormal, like backup chunks and files) scaled to sum to ``total`` bytes."""
    raw = [rng.lognormvariate(0, 1.0) for _ in range(n)]
    scale = total / sum(raw)
    sizes = [max(1, int(r * scale)) for r in raw]
    sizes[0] += total - sum(sizes)
    return sizes


def simulate(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    sizes = population(args.objects, args.bytes, rng)
    total = sum(sizes)
    budget = int(total * args.budget_pct / 100)
    policy = VerificationPolicy.model_validate(
        {"read_every": f"{args.read_every}d", "budget": {"egress_bytes_per_day": budget}})
    read_at: list[float | None] = [None] * len(sizes)
    # Faults: (day planted, object)
    faults = sorted((rng.randrange(args.days), rng.randrange(len(sizes))) for _ in range(args.faults))
    detected: dict[int, int] = {}  # fault index -> detection day
    corrupt_since: dict[int, list[int]] = {}  # object -> fault indices waiting for a read
    list_requests = math.ceil(len(sizes) / LIST_PAGE)
    period = policy.read_every.total_seconds()
    started = time.perf_counter()
    rows_out = []
    egress_total = requests_total = 0
    for day in range(args.days):
        now = args.t0 + day * DAY
        for i, (fday, obj) in enumerate(faults):
            if fday == day:
                corrupt_since.setdefault(obj, []).append(i)
        stale = due_cutoff(policy, now)  # one run a day: due = stale by tomorrow's run
        due = sum(s for s, r in zip(sizes, read_at, strict=True) if r is None or r < stale)
        allowance = daily_allowance(policy, Totals(len(sizes), total, due), 0)
        order = sorted(range(len(sizes)), key=lambda i: (read_at[i] is not None, read_at[i] or 0.0, i))
        plan = select_reads((LedgerRow("copy", str(i), sizes[i], read_at[i]) for i in order), allowance, None,
                            day_budget=budget, due_before=stale)
        for copy_key in plan.reads:
            obj = int(copy_key[1])
            read_at[obj] = now
            for f in corrupt_since.pop(obj, []):
                detected[f] = day
        egress = plan.egress_bytes
        requests = list_requests + plan.requests
        egress_total += egress
        requests_total += requests
        covered = sum(s for s, r in zip(sizes, read_at, strict=True) if r is not None and r >= now - period + DAY)
        rows_out.append((day + 1, covered / total, egress, requests))
    elapsed = time.perf_counter() - started

    naive_egress = total * args.days
    naive_requests = (list_requests + len(sizes)) * args.days
    print("verify_sim: drwatch's pure planner (validators.copies.ledger) over a synthetic population, simulated clock;")
    print("            no S3 server, no store (see tests/test_verify_economy.py for the real-server proof).")
    print(f"population: {len(sizes):,} objects, {format_size(total)} per copy; read_every {args.read_every}d; "
          f"budget {args.budget_pct:g}%/day = {format_size(budget)}/day; {args.days} days; seed {args.seed}")
    print()
    print(f"{'day':>4} {'read coverage':>14} {'egress/day':>12} {'requests/day':>13}")
    for day, cov, egress, requests in rows_out:
        print(f"{day:>4} {cov:>14.1%} {format_size(egress):>12} {requests:>13,}")
    print()
    print(f"total egress:   {format_size(egress_total)} vs naive full read every day {format_size(naive_egress)} "
          f"-> ratio {egress_total / naive_egress:.4f} (1/{naive_egress / max(1, egress_total):.0f})")
    print(f"total requests: {requests_total:,} vs naive {naive_requests:,} "
          f"-> ratio {requests_total / naive_requests:.4f} (1/{naive_requests / max(1, requests_total):.0f})")
    print(f"coverage after {args.days} days: {rows_out[-1][1]:.1%} read-verified (naive: 100.0% every day)")
    gap = shortfall(policy, Totals(len(sizes), total, 0), list_requests)
    if gap is not None:
        print(f"finding verify_budget_too_small: full reads within {args.read_every}d need "
              f"{format_size(gap.needed_bytes_per_day)}/day ({gap.needed_bytes_per_day / total:.2%} of the copy); "
              f"at this budget every byte is read every {gap.days_for_full_read:.0f} days")
    delays = sorted(detected[f] - faults[f][0] for f in detected)
    print()
    print(f"faults: {len(faults)} silent corruptions (same size and ETag) planted on random days")
    if delays:
        q = statistics.quantiles(delays, n=10) if len(delays) > 1 else [delays[0]] * 9
        print(f"  detected {len(delays)}/{len(faults)} within the {args.days} days; delay in days: min {delays[0]}, "
              f"median {statistics.median(delays):g}, p90 {q[8]:g}, max {delays[-1]}")
        hist: dict[int, int] = {}
        for d in delays:
            bucket = d // 5 * 5
            hist[bucket] = hist.get(bucket, 0) + 1
        print("  delay histogram: " + ", ".join(f"{b}-{b + 4}d: {n}" for b, n in sorted(hist.items())))
    print(f"  undetected at the end: {len(faults) - len(delays)} (naive full read: all detected the same day)")
    print(f"simulation wall time: {elapsed:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=100_000)
    p.add_argument("--bytes", type=int, default=10 * 2**30)
    p.add_argument("--budget-pct", type=float, default=2.0, help="egress budget per day, %% of the copy")
    p.add_argument("--read-every", type=int, default=30, help="days")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--faults", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--t0", type=float, default=1_900_000_000.0)
    simulate(p.parse_args())


if __name__ == "__main__":
    main()
