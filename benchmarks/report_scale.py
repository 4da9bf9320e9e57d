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
"""

from __future__ import annotations

import argparse
import asyncio
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
    t0 = time.perf_counter()
    rows = await store.history_rows(now - 30 * DAY, now)
    t1 = time.perf_counter()
    doc = build.build(cfg, rows, now - 30 * DAY, now, every_run=False)
    t2 = time.perf_counter()
    page = integrity.seal_html(html.render(doc), None)
    t3 = time.perf_counter()
    await store.close()
    return t1 - t0, t2 - t1, t3 - t2, len(page)


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=100)
    ap.add_argument("--results", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="directory to build the estate in and keep (reused when it has a store)")
    args = ap.parse_args()
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
                            ("baseline", "baseline: sqlite3 SELECT of the period into Python")):
            print(f"  {label:<50} {statistics.median(figures[name]):7.3f} s")
        print(f"  HTML report size: {size / 1024:.0f} KiB; JSON: {(work / 'report.json').stat().st_size / 1e6:.1f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
