"""``drwatch report`` at scale: 30 days of history for ``--assets`` assets and ``--results`` results.

Builds the estate of tests/support/reportestate.py (replica checks and a daily restore drill per asset, a
failure fixed, one still open, drills over the RTO, weekly attestations of an offline copy) into a SQLite store
(recorded through the store's own ``record``, so every result is chained; written with synchronous=OFF to make
the set-up quicker, which the timed part does not depend on), then times, ``--repeat`` times:

* ``drwatch report --since 30d --format html`` as a subprocess (start-up, store read, replay, render, write);
* ``drwatch report --since 30d --format json`` (every result listed with its digest);
* ``drwatch verify-report`` of the HTML report (the whole chain re-hashed);
* in process, the parts of the HTML report: store read, build (replay of every asset), render.

Baseline, same run: ``sqlite3`` reading the same period's rows (``SELECT * FROM results WHERE finished_at >= ?``)
into Python, which is the floor any report over the store pays.

    python benchmarks/report_scale.py                        # 100 assets, 100,000 results
    python benchmarks/report_scale.py --assets 5 --results 1000 --repeat 1
    python benchmarks/report_scale.py --keep /tmp/est --baseline-tree /tmp/base --baseline-label e137343
    python benchmarks/report_scale.py --postgres --repeat 2   # the same estate in a private PostgreSQL

Besides wall seconds it prints CPU seconds per command (user + system, the report's forked chain check
included): the robust figure on a shared, loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "daemon"))

from tests.support.reportestate import estate_config, record_estate  # noqa: E402

from drwatch.config.model import load_config  # noqa: E402
from drwatch.reporting import build, html, integrity  # noqa: E402
from drwatch.store.sqlite import SqliteStore  # noqa: E402

DAY = 86400.0


async def fill(cfg_path: Path, assets: int, results: int, now: float) -> None:
    cfg = load_config(str(cfg_path))
    store = SqliteStore(cfg.sqlite_path())
    await store.open()
    store.raw().execute("PRAGMA synchronous=OFF")
    await record_estate(store, now, "bench0000001", assets, results)
    await store.close()


async def parts(cfg_path: Path) -> tuple[float, float, float, int]:
    cfg = load_config(str(cfg_path))
    store = SqliteStore(cfg.sqlite_path())
    await store.open()
    now = time.time()
    gc.disable()  # as drwatch report does while it builds (cli/report.py)
    t0 = time.perf_counter()
    rows = await store.history_rows(now - 30 * DAY, now)
    t1 = time.perf_counter()
    doc = build.build(cfg, rows, now - 30 * DAY, now, every_run=False)
    t2 = time.perf_counter()
    page = integrity.seal_html(html.render(doc), None)
    t3 = time.perf_counter()
    gc.enable()
    await store.close()
    return t1 - t0, t2 - t1, t3 - t2, len(page)


CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], env: dict[str, str] | None = None, label: str = "") -> float:
    """Wall seconds of ``cmd``; its CPU seconds (user + system, with the children it forks: the report's chain
    check) are kept in CPU under the command's name (``report html``, ``verify-report``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600, env=env)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    name = cmd[3] + (f" {cmd[cmd.index('--format') + 1]}" if "--format" in cmd else "") + label
    CPU.setdefault(name, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=100)
    ap.add_argument("--results", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="directory to build the estate in and keep (reused when it has a store)")
    ap.add_argument("--baseline-tree", help="a checkout (e.g. `git archive REV daemon | tar -x -C DIR`) whose "
                    "drwatch report is timed too, alternated with this one's (it must read this store's schema)")
    ap.add_argument("--baseline-label", default="baseline")
    ap.add_argument("--postgres", action="store_true", help="the store in a PostgreSQL server of its own "
                    "(tests.support.pgserver, stopped at the end) instead of SQLite; the baseline is then a plain "
                    "asyncpg fetch of the period")
    args = ap.parse_args()
    if args.postgres:
        run_postgres(args)
        return
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="drwatch-report-bench-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        cfg_path = work / "drwatch.yaml"
        if not (work / "state.sqlite").exists():
            cfg_path.write_text(yaml.safe_dump(estate_config(work, args.assets)))
            t0 = time.perf_counter()
            asyncio.run(fill(cfg_path, args.assets, args.results, time.time()))
            print(f"set-up: {args.results} results recorded in {time.perf_counter() - t0:.1f} s", flush=True)
        env_cmd = [sys.executable, "-m", "drwatch"]
        figures: dict[str, list[float]] = {"html": [], "json": [], "verify": [], "read": [], "build": [],
                                           "render": [], "baseline": []}
        size = 0
        for _ in range(args.repeat):
            figures["html"].append(timed([*env_cmd, "report", "-c", str(cfg_path), "--since", "30d",
                                          "--format", "html", "--out", str(work / "report.html")]))
            figures["json"].append(timed([*env_cmd, "report", "-c", str(cfg_path), "--since", "30d",
                                          "--format", "json", "--out", str(work / "report.json")]))
            figures["verify"].append(timed([*env_cmd, "verify-report", "-c", str(cfg_path),
                                            str(work / "report.html")]))
            if args.baseline_tree:  # the same report by another checkout's drwatch, alternated in this loop
                env = {**os.environ, "PYTHONPATH": str(Path(args.baseline_tree) / "daemon")}
                for fmt in ("html", "json"):
                    figures.setdefault(f"base-{fmt}", []).append(timed(
                        [*env_cmd, "report", "-c", str(cfg_path), "--since", "30d", "--format", fmt,
                         "--out", str(work / f"base.{fmt}")], env, f" @ {args.baseline_label}"))
            read, built, render, size = asyncio.run(parts(cfg_path))
            figures["read"].append(read)
            figures["build"].append(built)
            figures["render"].append(render)
            t0 = time.perf_counter()
            with sqlite3.connect(work / "state.sqlite") as conn:
                conn.execute("SELECT * FROM results WHERE finished_at >= ?", (time.time() - 30 * DAY,)).fetchall()
            figures["baseline"].append(time.perf_counter() - t0)
        print(f"{args.assets} assets, {args.results} results over 30 days (median of {args.repeat}):")
        for name, label in (("html", "drwatch report --format html (subprocess)"),
                            ("json", "drwatch report --format json (subprocess)"),
                            ("verify", "drwatch verify-report (subprocess)"),
                            ("read", "  in process: store read"), ("build", "  in process: build (replay)"),
                            ("render", "  in process: render HTML"),
                            ("baseline", "baseline: sqlite3 SELECT of the period into Python"),
                            ("base-html", f"report --format html @ {args.baseline_label}"),
                            ("base-json", f"report --format json @ {args.baseline_label}")):
            if figures.get(name):
                print(f"  {label:<50} {statistics.median(figures[name]):7.3f} s")
        print(f"  HTML report size: {size / 1024:.0f} KiB; JSON: {(work / 'report.json').stat().st_size / 1e6:.1f} MB")
        print_cpu()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def print_cpu() -> None:
    print("CPU seconds (user + system, the forked chain check included; the robust figure on a loaded machine):")
    for name, values in CPU.items():
        print(f"  drwatch {name:<44} {statistics.median(values):7.3f} s")


def run_postgres(args: argparse.Namespace) -> None:
    """The same estate in PostgreSQL: report html/json and verify-report timed against a plain asyncpg fetch."""
    import asyncpg
    from tests.support.pgserver import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="drwatch-report-bench-pg-"))
    server = PostgresServer()
    try:
        server.start()
        dsn = server.create_database("report_bench")
        env = {**os.environ, "DRWATCH_BENCH_DSN": dsn}
        os.environ["DRWATCH_BENCH_DSN"] = dsn
        cfg_path = work / "drwatch.yaml"
        cfg_path.write_text(yaml.safe_dump(estate_config(work, args.assets,
                                                         store={"postgres": {"dsn_env": "DRWATCH_BENCH_DSN"}})))
        t0 = time.perf_counter()
        asyncio.run(fill_any(cfg_path, args.assets, args.results, time.time()))
        print(f"set-up: {args.results} results recorded in PostgreSQL in {time.perf_counter() - t0:.1f} s", flush=True)
        cmd = [sys.executable, "-m", "drwatch"]
        figures: dict[str, list[float]] = {"html": [], "json": [], "verify": [], "baseline": []}
        for _ in range(args.repeat):
            for fmt in ("html", "json"):
                figures[fmt].append(timed([*cmd, "report", "-c", str(cfg_path), "--since", "30d", "--format", fmt,
                                           "--out", str(work / f"report.{fmt}")], env))
            figures["verify"].append(timed([*cmd, "verify-report", "-c", str(cfg_path), str(work / "report.html")],
                                           env))

            async def fetch() -> float:
                conn = await asyncpg.connect(dsn)
                try:
                    t0 = time.perf_counter()
                    await conn.fetch("SELECT * FROM results WHERE finished_at >= $1", time.time() - 30 * DAY)
                    return time.perf_counter() - t0
                finally:
                    await conn.close()

            figures["baseline"].append(asyncio.run(fetch()))
        print(f"PostgreSQL: {args.assets} assets, {args.results} results over 30 days (median of {args.repeat}):")
        for name, label in (("html", "drwatch report --format html (subprocess)"),
                            ("json", "drwatch report --format json (subprocess)"),
                            ("verify", "drwatch verify-report (subprocess)"),
                            ("baseline", "baseline: asyncpg fetch of the period")):
            print(f"  {label:<50} {statistics.median(figures[name]):7.3f} s")
        print_cpu()
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


async def fill_any(cfg_path: Path, assets: int, results: int, now: float) -> None:
    from drwatch.store import open_store

    cfg = load_config(str(cfg_path))
    store = open_store(cfg)
    await store.open()
    try:
        await record_estate(store, now, "bench0000001", assets, results)
    finally:
        await store.close()


if __name__ == "__main__":
    main()
