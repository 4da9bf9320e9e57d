"""Soak: one real `drwatch run` daemon with hundreds of validators on short intervals, observed over time.

The estate: ``--fs`` filesystem assets (production + two copies of a few small files, `replica` validator) and
``--s3`` assets whose copy lives in a bucket of a moto S3 server started by this script (`replica` against
S3), all on ``--every`` schedules with jitter. Every ``--sample`` seconds it records, for the daemon process:

* RSS (``/proc/PID/status`` VmRSS) and open file descriptors (``/proc/PID/fd``),
* asyncio task count (``runtime.asyncio_tasks`` of ``/api/v1/status``),
* event-loop lag, as an upper bound: the worst round trip of five ``GET /-/healthy`` (answered on the loop),
* runs completed (sum of ``drwatch_validator_runs_total``).

At the end it compares the first and last quarter after warm-up (``--warmup`` seconds): RSS and FD growth
must be flat (RSS below ``--max-rss-growth`` MiB, FDs below ``--max-fd-growth``), and exits 1 otherwise.

    python benchmarks/soak.py --duration 1800                    # the 30-minute run in benchmarks/README.md
    python benchmarks/soak.py --duration 60 --warmup 20 --fs 60 --s3 20   # short form

Nothing is left behind: the daemon is stopped with SIGTERM (must exit 0), moto and the temp dir are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.helpers import DaemonProcess, free_port, write_config, write_tree  # noqa: E402
from tests.support.s3servers import MotoServer  # noqa: E402


def files(seed: int, n: int = 4) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"part-{i}.bin": rng.randbytes(2048 + i) for i in range(n)}


def build_estate(tmp: Path, args: argparse.Namespace, moto: MotoServer | None) -> dict[str, Any]:
    locations: dict[str, Any] = {
        "prod": {"kind": "filesystem", "path": str(tmp / "prod"), "site": "dc-a"},
        "copy1": {"kind": "filesystem", "path": str(tmp / "copy1"), "site": "dc-b"},
        "copy2": {"kind": "filesystem", "path": str(tmp / "copy2"), "site": "dc-c"},
    }
    schedule = {"every": args.every, "jitter": args.jitter}
    assets: dict[str, Any] = {}
    for i in range(args.fs):
        name = f"fs{i:04d}"
        body = files(i)
        for loc in ("prod", "copy1", "copy2"):
            write_tree(tmp / loc / name, body)
        assets[name] = {"rpo": "7d", "production": {"location": "prod", "prefix": name},
                        "copies": [{"location": "copy1", "prefix": name}, {"location": "copy2", "prefix": name}],
                        "validators": [{"kind": "replica", "schedule": schedule}]}
    if args.s3 and moto is not None:
        client = moto.client()
        client.create_bucket(Bucket="soak-copies")
        os.environ["SOAK_AK"], os.environ["SOAK_SK"] = moto.access_key, moto.secret_key
        locations["s3copy"] = {"kind": "s3", "bucket": "soak-copies", "endpoint_url": moto.endpoint_url,
                               "region": "us-east-1", "addressing_style": "path", "site": "dc-s3",
                               "access_key_id_env": "SOAK_AK", "secret_access_key_env": "SOAK_SK",
                               "max_attempts": 2, "connect_timeout": "5s", "read_timeout": "20s"}
        for i in range(args.s3):
            name = f"s3{i:04d}"
            body = files(100_000 + i)
            write_tree(tmp / "prod" / name, body)
            for key, data in body.items():
                client.put_object(Bucket="soak-copies", Key=f"{name}/{key}", Body=data)
            assets[name] = {"rpo": "7d", "production": {"location": "prod", "prefix": name},
                            "copies": [{"location": "s3copy", "prefix": name}],
                            "validators": [{"kind": "replica", "schedule": schedule}]}
    return {
        "store": {"sqlite": str(tmp / "state.sqlite")},
        "http": {"listen": f"127.0.0.1:{args.port}"},
        "limits": {"max_concurrent": 8, "per_location": 8, "sandbox_dir": str(tmp / "sandboxes"),
                   "default_timeout": "60s"},
        "logging": {"level": "warning", "format": "json"},
        "compliance": {"copies": 2, "media": 1, "immutable": 0},
        "locations": locations,
        "assets": assets,
    }


def proc_tree(pid: int) -> list[int]:
    """The daemon and its descendants (hash pools are threads, drills may start processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sample(daemon: DaemonProcess, pid: int, started: float) -> dict[str, Any]:
    lags = []
    for _ in range(5):
        t0 = time.perf_counter()
        urllib.request.urlopen(daemon.url("/-/healthy"), timeout=10).read()
        lags.append(time.perf_counter() - t0)
        time.sleep(0.05)
    status = json.loads(daemon.get("/api/v1/status", timeout=30)[1])
    text = daemon.metrics()
    runs = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("drwatch_validator_runs_total{"))
    outcomes: dict[str, int] = {}
    for r in status["results"]:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    tree = proc_tree(pid)
    return {
        "t": round(time.monotonic() - started, 1),
        "rss_mib": round(rss_kib(pid) / 1024, 1),
        "tree_rss_mib": round(sum(rss_kib(p) for p in tree if Path(f"/proc/{p}").exists()) / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                            if line.startswith("Threads:"))),
        "tasks": status.get("runtime", {}).get("asyncio_tasks"),
        "lag_ms_max": round(max(lags) * 1000, 1),
        "lag_ms_median": round(statistics.median(lags) * 1000, 1),
        "runs": int(runs),
        "outcomes": outcomes,
    }


def growth(samples: list[dict[str, Any]], key: str, warmup: float) -> tuple[float, float, float]:
    """(median of the first quarter after warm-up, median of the last quarter, difference)."""
    after = [s[key] for s in samples if s["t"] >= warmup]
    if len(after) < 4:
        after = [s[key] for s in samples]
    q = max(1, len(after) // 4)
    first, last = statistics.median(after[:q]), statistics.median(after[-q:])
    return first, last, last - first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=1800, help="seconds to run (default 1800)")
    ap.add_argument("--warmup", type=float, default=120, help="seconds excluded from the growth figures")
    ap.add_argument("--sample", type=float, default=10, help="seconds between samples")
    ap.add_argument("--fs", type=int, default=240, help="filesystem replica validators")
    ap.add_argument("--s3", type=int, default=60, help="S3 replica validators (moto)")
    ap.add_argument("--every", default="15s", help="schedule period of every validator")
    ap.add_argument("--jitter", default="5s")
    ap.add_argument("--max-rss-growth", type=float, default=16.0, help="MiB allowed after warm-up")
    ap.add_argument("--max-fd-growth", type=int, default=8)
    ap.add_argument("--json", type=Path, help="write all samples and the summary here")
    args = ap.parse_args()
    args.port = free_port()

    tmp = Path(tempfile.mkdtemp(prefix="drwatch-soak-"))
    moto = MotoServer() if args.s3 else None
    daemon: DaemonProcess | None = None
    samples: list[dict[str, Any]] = []
    try:
        if moto is not None:
            moto.start()
        cfg = write_config(tmp / "drwatch.yaml", build_estate(tmp, args, moto))
        daemon = DaemonProcess(cfg, args.port, env={"PYTHONPATH": str(REPO / "daemon")})
        daemon.start(timeout=120)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        started = time.monotonic()
        print(f"soak: {args.fs} filesystem + {args.s3} S3 replica validators every {args.every} "
              f"(jitter {args.jitter}) for {args.duration:.0f}s; daemon pid {pid}", flush=True)
        print(f"{'t[s]':>7} {'rss MiB':>8} {'tree':>7} {'fds':>5} {'thr':>4} {'tasks':>6} {'lag max':>8} "
              f"{'lag med':>8} {'runs':>7}  outcomes", flush=True)
        while time.monotonic() - started < args.duration:
            if daemon.proc.poll() is not None:
                raise SystemExit(f"drwatch exited with {daemon.proc.returncode}:\n{daemon.log()[-3000:]}")
            s = sample(daemon, pid, started)
            samples.append(s)
            print(f"{s['t']:7.0f} {s['rss_mib']:8.1f} {s['tree_rss_mib']:7.1f} {s['fds']:5d} {s['threads']:4d} "
                  f"{s['tasks']!s:>6} {s['lag_ms_max']:8.1f} {s['lag_ms_median']:8.1f} {s['runs']:7d}  "
                  f"{s['outcomes']}", flush=True)
            time.sleep(max(0.0, args.sample - 1))
        code = daemon.stop(timeout=120)
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        if moto is not None:
            moto.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    rss = growth(samples, "rss_mib", args.warmup)
    fds = growth(samples, "fds", args.warmup)
    tasks = growth(samples, "tasks", args.warmup) if all(s["tasks"] is not None for s in samples) else None
    duration = samples[-1]["t"] if samples else 0.0
    runs = samples[-1]["runs"] - samples[0]["runs"] if samples else 0
    summary = {
        "duration_s": duration, "validators": args.fs + args.s3, "every": args.every,
        "runs": runs, "runs_per_s": round(runs / duration, 2) if duration else 0.0,
        "rss_mib": {"after_warmup": rss[0], "end": rss[1], "growth": round(rss[2], 1),
                    "max": max(s["rss_mib"] for s in samples)},
        "fds": {"after_warmup": fds[0], "end": fds[1], "growth": fds[2]},
        "tasks": {"after_warmup": tasks[0], "end": tasks[1], "max": max(s["tasks"] for s in samples)}
        if tasks else None,
        "lag_ms": {"median_of_max": statistics.median(s["lag_ms_max"] for s in samples),
                   "max": max(s["lag_ms_max"] for s in samples)},
        "outcomes_end": samples[-1]["outcomes"] if samples else {},
        "exit_code": code,
    }
    ok = code == 0 and rss[2] <= args.max_rss_growth and fds[2] <= args.max_fd_growth
    summary["verdict"] = "flat" if ok else "GROWING"
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "summary": summary, "samples": samples}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
