#!/usr/bin/env python3
"""Benchmark the restore-time model (drwatch.state.rto): projected restore time against full restores of three
sizes, beside a bare ``pg_restore`` of the same dumps.

Usage::

    python benchmarks/rto_projection_bench.py [--scales 1,3,6] [--calibrate 1] [--jobs 2] [--json FILE]

Setup: a private PostgreSQL (``tests.support.pgserver``), one database per scale loaded by ``pgbench -i -s S``
(100,000 x S rows), each dumped with ``pg_dump -Fc``. One asset ``db`` with one ``postgres_restore`` drill of the
location ``dumps`` (a directory holding one dump at a time, as a backup job's newest), a SQLite store.

1. Calibration: the dump of scale ``--calibrate`` is drilled twice (the model's samples: the dump location's fetch
   throughput and pg_restore's seconds per byte beyond the fetch).
2. For each scale, in increasing order: the dump is put in place; the model projects its restore time from the
   samples stored so far (``size / throughput + seconds-per-byte x size``: what drwatch would export for this
   dump before any drill of it); then the full restore drill runs (its ``restore_seconds``: fetch + pg_restore);
   then a bare ``createdb`` + ``pg_restore -j JOBS`` of the same dump on the private server (the baseline: a full
   restore outside drwatch, timed from outside).

Reported per scale: dump bytes, projected, drill measured, error (projected - measured) / measured, bare
pg_restore and the error against it, and the projection from the calibration alone (``calib_only``: rates from
the smallest dump extrapolated by size, no sample of the larger ones). The 1-minute load average at the start is
shown. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from tests.support.pgserver import PostgresServer  # noqa: E402
from tests.support.runs import open_runner  # noqa: E402

from drwatch.config.model import Config, parse_config  # noqa: E402
from drwatch.core.model import Outcome  # noqa: E402
from drwatch.state.rto_drills import restore_work, throughput  # noqa: E402
from drwatch.state.snapshot import Snapshot  # noqa: E402


def _dump(server: PostgresServer, scale: int, dest: Path) -> Path:
    db = f"rto_bench_s{scale}"
    dsn = server.create_database(db)
    subprocess.run([str(server.bin_dir / "pgbench"), "-i", "-s", str(scale), "-q", dsn], check=True,
                   capture_output=True, timeout=600)
    subprocess.run([str(server.bin_dir / "pg_dump"), "-Fc", "-f", str(dest), dsn], check=True, capture_output=True,
                   timeout=600)
    server.psql(f"DROP DATABASE {db} WITH (FORCE)")
    return dest


def _bare_restore(server: PostgresServer, dump: Path, jobs: int) -> float:
    db = "rto_bench_bare"
    server.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    started = time.monotonic()
    dsn = server.create_database(db)
    subprocess.run([str(server.bin_dir / "pg_restore"), "-j", str(jobs), "--exit-on-error", "--no-owner",
                    "--no-privileges", "-d", dsn, str(dump)], check=True, capture_output=True, timeout=600)
    seconds = time.monotonic() - started
    server.psql(f"DROP DATABASE {db} WITH (FORCE)")
    return seconds


def _project(cfg: Config, snap: Snapshot, size: float, now: float) -> float | None:
    rate, _n = throughput(cfg, snap, "dumps", now)
    work = restore_work(cfg, snap, "db", size, now)
    return None if rate is None or work is None else size / rate + work


def _place(dump: Path, dumps: Path) -> None:
    for old in dumps.glob("*.dump"):
        old.unlink()
    shutil.copy(dump, dumps / "prod.dump")
    os.utime(dumps / "prod.dump")


async def _bench(args: argparse.Namespace, server: PostgresServer, work: Path) -> list[dict[str, Any]]:
    scales = sorted({int(s) for s in args.scales.split(",")} | {args.calibrate})
    made = {s: _dump(server, s, work / f"s{s}.dump") for s in scales}
    dumps = work / "dumps"
    dumps.mkdir()
    cfg = parse_config(yaml.safe_dump({
        "store": {"sqlite": str(work / "state.sqlite")},
        "locations": {"dumps": {"kind": "filesystem", "path": str(dumps)}},
        "assets": {"db": {"rpo": "7d", "rto": "1h", "production": {"location": "dumps"},
                          "validators": [{"kind": "postgres_restore", "location": "dumps", "pattern": "*.dump",
                                          "jobs": args.jobs}]}}}), source=str(work / "drwatch.yaml"))
    rows: list[dict[str, Any]] = []
    async with open_runner(cfg, work / "sandboxes") as runner:
        vcfg = cfg.assets["db"].validators[0]

        async def drill() -> float:
            result = await runner.execute("db", vcfg)
            if result.outcome != Outcome.OK:
                raise SystemExit(f"drill not ok: {result.outcome} {result.findings}")
            return result.figures["restore_seconds"]

        async def snapshot() -> Snapshot:
            return Snapshot.from_state(cfg, await runner.store.load_state())

        _place(made[args.calibrate], dumps)
        for _ in range(2):
            await drill()
        calibrated = await snapshot()
        for s in [s for s in scales if str(s) in args.scales.split(",")]:
            _place(made[s], dumps)
            size = float(made[s].stat().st_size)
            now = time.time()
            projected = _project(cfg, await snapshot(), size, now)
            calib_only = _project(cfg, calibrated, size, now)
            measured = await drill()
            bare = _bare_restore(server, made[s], args.jobs)
            assert projected is not None and calib_only is not None
            rows.append({"scale": s, "rows": 100_000 * s, "dump_bytes": int(size), "projected_s": round(projected, 3),
                         "drill_s": round(measured, 3), "error": round((projected - measured) / measured, 3),
                         "bare_pg_restore_s": round(bare, 3), "error_vs_bare": round((projected - bare) / bare, 3),
                         "calib_only_s": round(calib_only, 3),
                         "calib_only_error": round((calib_only - measured) / measured, 3)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="1,3,6")
    parser.add_argument("--calibrate", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="drw-rto-bench-", dir="/tmp"))
    base.chmod(0o755)  # the postgres user reaches the sandboxes
    server = PostgresServer(base / "pg")
    try:
        server.start()
        rows = asyncio.run(_bench(args, server, base))
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average (1 min) at start: {load:.2f}; jobs {args.jobs}; calibrated on scale {args.calibrate}")
    print(f"{'scale':>5} {'dump MB':>8} {'projected':>9} {'drill':>7} {'error':>7} {'bare':>7} {'err/bare':>8} "
          f"{'calib-only':>10} {'error':>7}")
    for r in rows:
        print(f"{r['scale']:>5} {r['dump_bytes'] / 1e6:>8.1f} {r['projected_s']:>8.2f}s {r['drill_s']:>6.2f}s "
              f"{r['error']:>+7.0%} {r['bare_pg_restore_s']:>6.2f}s {r['error_vs_bare']:>+8.0%} "
              f"{r['calib_only_s']:>9.2f}s {r['calib_only_error']:>+7.0%}")
    if args.json is not None:
        args.json.write_text(json.dumps({"load": load, "jobs": args.jobs, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
