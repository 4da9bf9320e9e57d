"""/metrics at scale: one real `drwatch run` daemon with thousands of assets, scraped while validators run.

For each size in ``--assets`` (default 1000,3000,10000) it builds an estate of tiny filesystem assets
(production + one copy of one small file each, a ``replica`` validator on a short ``--every`` schedule with
jitter, so results keep arriving and the snapshot changes all the time), starts the daemon and waits for its
first exposition. Then, after ``--warmup`` seconds of the same scraping (not counted), for ``--duration`` seconds:

* ``--scrapers`` threads (two Prometheus replicas) each GET ``/metrics`` every ``--scrape-interval`` seconds
  with ``Accept-Encoding: gzip`` (as Prometheus does) and time the whole response;
* one thread GETs ``/-/healthy`` every 20 ms.

The event loop's lag comes from the daemon's own ``drwatch_event_loop_lag_seconds`` histogram (its heartbeat,
every 0.1 s), read at the start and the end of the window: the share of beats late by at most 50 ms, and the p99
as a bucket bound. (Before the endpoints moved to their own thread, ``/-/healthy`` was answered on the event loop
and its latency was the loop's lag; code without the histogram reports the lag as "n/a".)

``--baseline DIR`` measures, in the same run, each size with the drwatch package under DIR (its ``daemon``
folder, e.g. a clone at an earlier commit) too, alternating baseline and current: the same machine and load.

It prints per size: /metrics latency p50/p99/max, /-/healthy p50/p99/max during the scrapes, the daemon's RSS
(total and per 1,000 assets), series (total and per asset), body size plain/gzip, runs completed during the
window (proof the validators were running). ``--json PATH`` writes the figures.

    python benchmarks/metrics_scale.py                                # 1k, 3k, 10k assets, 60 s each
    python benchmarks/metrics_scale.py --assets 200 --duration 10     # short form (tests/test_metrics_scale.py)
    git clone -q . /tmp/base && git -C /tmp/base checkout -q <commit>
    python benchmarks/metrics_scale.py --assets 10000 --baseline /tmp/base/daemon   # before/after, same run

The daemon is stopped with SIGTERM (must exit 0; killed if the measurement failed) and the temp dir removed.
The machine's 1-minute load average before and after each window is printed: on a shared machine the tails are
its load as much as the daemon's. ``--profile DIR`` records the daemon with py-spy during the window (collapsed
stacks per thread).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.helpers import DaemonProcess, free_port, write_config  # noqa: E402


def build_estate(tmp: Path, assets: int, every: str, jitter: str, port: int) -> dict[str, Any]:
    for loc in ("prod", "copy1"):
        for i in range(assets):
            d = tmp / loc / f"a{i:05d}"
            d.mkdir(parents=True)
            (d / "part.bin").write_bytes(b"drwatch %d\n" % i)
    schedule = {"every": every, "jitter": jitter}
    return {
        "store": {"sqlite": str(tmp / "state.sqlite")},
        "http": {"listen": f"127.0.0.1:{port}"},
        "limits": {"max_concurrent": 8, "per_location": 8, "sandbox_dir": str(tmp / "sandboxes"),
                   "default_timeout": "60s"},
        "logging": {"level": "warning", "format": "json"},
        "compliance": {"copies": 2, "media": 1, "offsite": 1, "immutable": 0},
        "locations": {
            "prod": {"kind": "filesystem", "path": str(tmp / "prod"), "site": "dc-a"},
            "copy1": {"kind": "filesystem", "path": str(tmp / "copy1"), "site": "dc-b"},
        },
        "assets": {
            f"a{i:05d}": {"rpo": "7d", "production": {"location": "prod", "prefix": f"a{i:05d}"},
                          "copies": [{"location": "copy1", "prefix": f"a{i:05d}"}],
                          "validators": [{"kind": "replica", "schedule": schedule}]}
            for i in range(assets)
        },
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


FIRST_BYTE: dict[str, float] = {}  # url -> seconds to the response's header, of the latest fetch


def fetch(url: str, gzip_ok: bool, timeout: float = 60) -> tuple[float, bytes, bool]:
    """Seconds for the whole response, its body (decompressed) and whether it came gzipped."""
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip_ok else {})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        FIRST_BYTE[f"{threading.get_ident()}"] = time.perf_counter() - t0
        body = resp.read()
        zipped = resp.headers.get("Content-Encoding") == "gzip"
    elapsed = time.perf_counter() - t0
    return elapsed, gzip.decompress(body) if zipped else body, zipped


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def runs_total(text: bytes) -> float:
    return sum(float(line.rsplit(b" ", 1)[1]) for line in text.splitlines()
               if line.startswith(b"drwatch_validator_runs_total{"))


LAG = "drwatch_event_loop_lag_seconds"


def lag_buckets(text: bytes) -> dict[float, float]:
    """The event-loop lag histogram's cumulative buckets (empty where the daemon has none)."""
    out = {}
    for line in text.splitlines():
        if line.startswith(LAG.encode() + b"_bucket{"):
            le = line.split(b'le="', 1)[1].split(b'"', 1)[0]
            out[float(le)] = float(line.rsplit(b" ", 1)[1])
    return out


def lag_figures(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """Beats during the window, the share late by at most 50 ms, the p99 and the worst as bucket bounds."""
    if not after:
        return {"loop_beats": 0, "loop_lag_le_50ms": None, "loop_lag_p99_le_ms": None, "loop_lag_max_le_ms": None}
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta[float("inf")]
    if total <= 0:
        return {"loop_beats": 0, "loop_lag_le_50ms": None, "loop_lag_p99_le_ms": None, "loop_lag_max_le_ms": None}
    p99 = next(le for le, n in delta.items() if n >= 0.99 * total)
    worst = next(le for le, n in delta.items() if n >= total)
    return {"loop_beats": int(total), "loop_lag_le_50ms": round(delta[0.05] / total, 4),
            "loop_lag_p99_le_ms": p99 * 1000, "loop_lag_max_le_ms": worst * 1000}


def measure(assets: int, args: argparse.Namespace, code: Path | None = None) -> dict[str, Any]:
    """One window at ``assets``; ``code``: the ``daemon`` folder whose drwatch the daemon runs (default: this
    checkout's, as the environment says)."""
    tmp = Path(tempfile.mkdtemp(prefix="drwatch-metrics-scale-"))
    started: list[DaemonProcess] = []
    started_procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        t0 = time.monotonic()
        cfg_path = write_config(tmp / "drwatch.yaml", build_estate(tmp, assets, args.every, args.jitter, port))
        daemon = DaemonProcess(cfg_path, port, env={"PYTHONPATH": str(code)} if code is not None else None)
        started.append(daemon)
        daemon.start(wait_ready=True, timeout=args.start_timeout)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        started_s = time.monotonic() - t0
        url = daemon.url("/metrics")
        first_s, plain, _ = fetch(url, gzip_ok=False, timeout=args.start_timeout)  # the first (full) render
        scrape_s: list[float] = []
        header_s: list[tuple[float, float]] = []  # per scrape: whole response, header only
        healthy_s: list[float] = []
        sizes: list[tuple[int, int]] = []
        errors: list[str] = []
        stop = threading.Event()

        def scraper(offset: float) -> None:
            if stop.wait(offset):
                return
            while not stop.is_set():
                t = time.monotonic()
                try:
                    elapsed, body, zipped = fetch(url, gzip_ok=True)
                    scrape_s.append(elapsed)
                    header_s.append((elapsed, FIRST_BYTE[f"{threading.get_ident()}"]))
                    sizes.append((len(body), int(zipped)))
                except OSError as exc:
                    errors.append(f"/metrics: {exc}")
                stop.wait(max(0.0, args.scrape_interval - (time.monotonic() - t)))

        def healthy(url: str, into: list[float]) -> None:
            while not stop.is_set():
                try:
                    elapsed, _, _ = fetch(url, gzip_ok=False, timeout=30)
                    into.append(elapsed)
                except OSError as exc:
                    errors.append(f"{url}: {exc}")
                stop.wait(0.02)

        threads = [threading.Thread(target=scraper, args=(i * args.scrape_interval / args.scrapers,))
                   for i in range(args.scrapers)]
        threads.append(threading.Thread(target=healthy, args=(daemon.url("/-/healthy"), healthy_s)))
        # The machine's floor: an idle `python3 -m http.server` in its own process, polled the same way at the
        # same time (on a loaded 2-CPU machine, waiting for a CPU is most of any tail).
        control_s: list[float] = []
        control_port = free_port()
        control = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(control_port)],
                                   cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started_procs.append(control)
        wait_listening(control_port)
        threads.append(threading.Thread(target=healthy, args=(f"http://127.0.0.1:{control_port}/", control_s)))
        for th in threads:
            th.start()
        # Warm-up: the scrapes right after the first (full) render wait for a render of everything that ran
        # meanwhile (its state is older than a scrape may be served); a Prometheus scraping since the start never
        # sees that. The window starts after --warmup seconds of scraping, for every code measured.
        time.sleep(args.warmup)
        _, plain, _ = fetch(url, gzip_ok=False)
        runs_before = runs_total(plain)
        lag_before = lag_buckets(plain)
        for figures in (scrape_s, header_s, healthy_s, control_s, sizes):
            figures.clear()
        profiler = None
        if args.profile:
            # py-spy over the scrape window: collapsed stacks per thread (where the event loop's time goes).
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                ["py-spy", "record", "-p", str(pid), "-r", "100", "-d", str(int(args.duration)), "--threads",
                 "-f", "raw", "-o", str(args.profile / f"metrics-scale-{assets}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load_before = os.getloadavg()[0]
        time.sleep(args.duration)
        stop.set()
        for th in threads:
            th.join()
        if profiler is not None:
            try:
                profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()
        load_after = os.getloadavg()[0]
        rss = rss_kib(pid)
        _, plain, _ = fetch(url, gzip_ok=False)
        _, zipped_len = len(plain), len(gzip.compress(plain, 6))
        _, status, _ = fetch(daemon.url("/api/v1/status"), gzip_ok=True, timeout=args.start_timeout)
        runtime = json.loads(status).get("runtime", {})
        series = sum(1 for line in plain.splitlines() if line and not line.startswith(b"#"))
        runs = runs_total(plain) - runs_before
        lag = lag_figures(lag_before, lag_buckets(plain))
        daemon.signal(signal.SIGTERM)
        exit_code = daemon.proc.wait(timeout=120)
        return {
            "assets": assets,
            "code": str(code) if code is not None else "current",
            "start_s": round(started_s, 1),
            "first_scrape_s": round(first_s, 3),
            "scrapes": len(scrape_s),
            "metrics_p50_ms": round(pct(scrape_s, 0.5) * 1000, 1),
            "metrics_p99_ms": round(pct(scrape_s, 0.99) * 1000, 1),
            "metrics_max_ms": round(max(scrape_s, default=float("nan")) * 1000, 1),
            "healthy_p50_ms": round(pct(healthy_s, 0.5) * 1000, 1),
            "healthy_p99_ms": round(pct(healthy_s, 0.99) * 1000, 1),
            "healthy_max_ms": round(max(healthy_s, default=float("nan")) * 1000, 1),
            "healthy_polls": len(healthy_s),
            "control_p50_ms": round(pct(control_s, 0.5) * 1000, 1),
            "control_p99_ms": round(pct(control_s, 0.99) * 1000, 1),
            "metrics_slowest_ms": [round(x * 1000) for x in sorted(scrape_s)[-3:]],
            # the slowest scrapes' time to the response header (the server's part; the rest is the body's transfer)
            "metrics_slowest_header_ms": [round(h * 1000) for _, h in sorted(header_s)[-3:]],
            "rss_mib": round(rss / 1024, 1),
            "rss_mib_per_1k_assets": round(rss / 1024 / assets * 1000, 1),
            "series": series,
            "series_per_asset": round(series / assets, 1),
            "body_mib": round(len(plain) / 2**20, 2),
            "body_gzip_mib": round(zipped_len / 2**20, 2),
            "runs_during": int(runs),
            # over the daemon's life (warm-up included): renders, and scrapes that waited for one
            "renders": runtime.get("metrics_renders"), "scrapes_waited": runtime.get("metrics_scrapes_waited"),
            **lag,
            "load_1m": [round(load_before, 1), round(load_after, 1)],  # the machine's, before/after the window
            "errors": errors[:5],
            "exit_code": exit_code,
        }
    except BaseException:
        for d in started:
            print(f"daemon log (tail):\n{d.log()[-4000:]}", file=sys.stderr)
        raise
    finally:
        for proc in started_procs:
            proc.kill()
            proc.wait()
        for d in started:  # a failed measurement never leaves its daemon running
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", default="1000,3000,10000", help="comma-separated estate sizes")
    ap.add_argument("--duration", type=float, default=60, help="seconds of scraping per size")
    ap.add_argument("--warmup", type=float, default=10, help="seconds of scraping before the measured window")
    ap.add_argument("--scrapers", type=int, default=2, help="concurrent scrapers (Prometheus replicas)")
    ap.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between one scraper's scrapes")
    ap.add_argument("--every", default="60s", help="validator schedule")
    ap.add_argument("--jitter", default="30s")
    ap.add_argument("--start-timeout", type=float, default=600)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", type=Path, help="py-spy record the daemon during the scrapes into this folder")
    ap.add_argument("--baseline", type=Path, help="a drwatch checkout's daemon folder to measure too (before/after)")
    args = ap.parse_args()
    results = []
    codes: list[Path | None] = [args.baseline.resolve(), None] if args.baseline else [None]
    for n in (int(x) for x in args.assets.split(",")):
        for code in codes:
            r = measure(n, args, code)
            results.append(r)
            report(n, r)
    if args.json:
        args.json.write_text(json.dumps({"cpu": os.cpu_count(), "results": results}, indent=2))
    return 0 if all(r["exit_code"] == 0 and not r["errors"] for r in results) else 1


def report(n: int, r: dict[str, Any]) -> None:
    lag = (f"loop lag <= 50 ms for {r['loop_lag_le_50ms']:.2%} of {r['loop_beats']} beats, p99 <= "
           f"{r['loop_lag_p99_le_ms']:g} ms, max <= {r['loop_lag_max_le_ms']:g} ms"
           if r["loop_lag_le_50ms"] is not None else "loop lag n/a")
    print(f"{n:>6} assets [{r['code']}]: /metrics p50 {r['metrics_p50_ms']} ms p99 {r['metrics_p99_ms']} ms "
          f"(max {r['metrics_max_ms']}, {r['scrapes']} scrapes); /-/healthy p50 {r['healthy_p50_ms']} ms p99 "
          f"{r['healthy_p99_ms']} ms (max {r['healthy_max_ms']}); idle control server p50 {r['control_p50_ms']} ms p99 "
          f"{r['control_p99_ms']} ms; slowest scrapes {r['metrics_slowest_ms']} ms "
          f"(header after {r['metrics_slowest_header_ms']} ms); renders {r['renders']}, "
          f"scrapes that waited for one {r['scrapes_waited']} (since start); {lag}; RSS {r['rss_mib']} MiB "
          f"({r['rss_mib_per_1k_assets']} per 1k assets); {r['series']} series ({r['series_per_asset']} per asset); "
          f"body {r['body_mib']} MiB, gzip {r['body_gzip_mib']} MiB; first scrape {r['first_scrape_s']} s; "
          f"{r['runs_during']} runs during; load {r['load_1m'][0]}-{r['load_1m'][1]} on {os.cpu_count()} CPUs; "
          f"exit {r['exit_code']}{'; errors: ' + '; '.join(r['errors']) if r['errors'] else ''}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
