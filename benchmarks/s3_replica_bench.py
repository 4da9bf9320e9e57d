#!/usr/bin/env python3
"""Benchmark drwatch's ``replica`` validator on S3 against ``rclone check``, on one real S3 server.

Usage::

    python benchmarks/s3_replica_bench.py [--objects 100000] [--server rgw|moto] [--quick]
    python benchmarks/s3_replica_bench.py --quick        # 5k objects, ~1 min (smoke test, no profile)

Setup (timed on its own): one throwaway S3 server on loopback (default a one-host Ceph RADOS Gateway,
``tests.support.s3servers.CephRGW``: a real S3 implementation; ``--server moto`` for moto's server), a
production bucket and a copy bucket holding the same ``--objects`` objects (1-8 KiB random bodies,
uploaded by a thread pool of boto3 clients, or by ``rclone copy`` with ``--uploader rclone``). Keys are
``data/gNNN/oNNNNNNN.bin`` with 10,000 objects per group (N/5 below 50k objects), so the first group is
a subset of the same buckets that both tools can check on their own.

Part 1, speed and memory: on the subset (10k objects) and on all N objects,

  (a) ``drwatch check --config CFG --output json`` of an asset whose production is the prod bucket and
      whose one copy is the copy bucket (replica validator, no manifest);
  (b) ``rclone check prod:BUCKET copy:BUCKET`` (sizes and MD5s, which rclone takes from the listings'
      ETags), default 8 checkers;

each with wall time, CPU time and peak RSS of the measured process (``wait4`` rusage), the CPU time the
server's own processes spent meanwhile, and the S3 requests the tool made (counted in the server's
access log: LIST, HEAD object, GET object, other). The copy bucket has no Object Lock and its objects'
single-part ETags equal production's, so drwatch must send no HEAD at all, whether or not the objects
carry an additional checksum (``--checksum CRC32``: what current AWS SDKs write by default). The evidence
drwatch used comes from the result's ``copies[].evidence``.

Part 2, where drwatch's time goes: when drwatch is more than 3x slower than rclone, one more drwatch
run under ``py-spy record`` (sampling its CPU) is summarised by package and by function.

Part 3, correctness: 10 objects deleted from the copy and 10 overwritten with same-size different
bodies; drwatch must exit 1 with 10 missing and 10 mismatched (and name all 20), rclone must report 20
differences (and name all 20). Every clean run must pass too. The script exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
PROD_BUCKET = "prod-bkt"
COPY_BUCKET = "copy-bkt"
LOCK_BUCKET = "lock-bkt"  # --locked: the same objects, COMPLIANCE-locked for 30 days
INV_BUCKET = "inv-bkt"  # --locked: the S3 Inventory report of LOCK_BUCKET (AWS's layout, CSV)
# production and copy use different S3 users (keys): shared credentials would make drwatch count the copy
# as dependent on production (finding shared_credentials; the offsite rule fails)
ENV_KEYS = {PROD_BUCKET: ("BENCH_PROD_ACCESS_KEY", "BENCH_PROD_SECRET_KEY"),
            COPY_BUCKET: ("BENCH_COPY_ACCESS_KEY", "BENCH_COPY_SECRET_KEY")}
COPY_USER = ("bench-copy", "BENCHCOPYACCESSKEY01", "bench-copy-secret-key-0123456789abcdef")
POOL = os.urandom(8 * MiB + 16 * KiB)  # source of incompressible bodies, sliced at pseudo-random offsets
TICK = os.sysconf("SC_CLK_TCK")
FAULTS = 10  # objects deleted, and objects changed, in the copy
RATIO_TO_PROFILE = 3.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def human(nbytes: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes:.0f} B"


# ------------------------------------------------------------------------------------------ objects


def group_size(n: int) -> int:
    return 10_000 if n >= 50_000 else max(1, n // 5)


def key_of(i: int, group: int) -> str:
    return f"data/g{i // group:03d}/o{i:07d}.bin"


def body_of(i: int) -> bytes:
    """1-8 KiB, incompressible, unique (the first 8 bytes are the index), the same on every call."""
    rng = random.Random(i)
    size = rng.randint(KiB, 8 * KiB)
    off = rng.randrange(0, len(POOL) - size)
    return i.to_bytes(8, "big") + POOL[off + 8: off + size]


# ------------------------------------------------------------------------------------------ servers


@dataclass
class Server:
    kind: str
    endpoint: str
    keys: dict[str, tuple[str, str]]  # bucket -> (access key, secret key) of the user that owns it
    region: str
    access_log: Path
    pids: Callable[[], dict[str, int]]
    obj: Any  # the CephRGW / MotoServer instance

    def client(self, bucket: str) -> Any:
        from tests.support.s3servers import s3_client

        return s3_client(self.endpoint, *self.keys[bucket], self.region)

    def cpu(self) -> float:
        """CPU seconds used so far by the server's processes."""
        total = 0.0
        for pid in self.pids().values():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / TICK
            except (OSError, IndexError, ValueError):
                pass
        return total


def start_server(kind: str, n: int) -> Server:
    from tests.support.s3servers import CephRGW, MotoServer, ceph_available

    if kind == "rgw":
        if not ceph_available():
            raise SystemExit("Ceph binaries missing (scripts/ceph-rgw-deps.sh); or use --server moto")
        # the OSD keeps every object in RAM (memstore): room for both buckets with a wide margin
        rgw = CephRGW(memstore_bytes=max(GiB, 2 * n * 16 * KiB))
        try:
            rgw.start()
        except BaseException:
            rgw.cleanup()
            raise
        srv = Server("Ceph RGW 16.2 (memstore)", rgw.endpoint_url, {PROD_BUCKET: (rgw.access_key, rgw.secret_key)},
                     rgw.region, rgw.root_dir / "log" / "client.rgw.log", lambda: rgw.pids, rgw)
        uid, key, secret = COPY_USER
        try:
            made = subprocess.run(["radosgw-admin", "user", "create", "--uid", uid, "--display-name", uid,
                                   "--access-key", key, "--secret", secret], capture_output=True, text=True,
                                  timeout=60, check=False, env=dict(os.environ, CEPH_CONF=str(rgw.conf_path)))
            if made.returncode != 0:
                raise RuntimeError(f"radosgw-admin user create {uid} failed: {made.stderr[-1000:]}")
        except BaseException:
            rgw.cleanup()
            raise
        srv.keys[COPY_BUCKET] = (key, secret)
        log(f"Ceph RGW ready in {rgw.start_seconds:.1f}s at {rgw.endpoint_url}")
        return srv
    moto = MotoServer()
    try:
        moto.start()
    except BaseException:
        moto.cleanup()
        raise
    log(f"moto server ready at {moto.endpoint_url}")
    return Server("moto server", moto.endpoint_url,
                  {PROD_BUCKET: (moto.access_key, moto.secret_key), COPY_BUCKET: COPY_USER[1:]}, moto.region,
                  moto.log_path, lambda: {"moto": moto.pid} if moto.pid else {}, moto)


def serve(path: Path, bench: Bench) -> None:
    """--serve: write what --attach needs and wait for SIGTERM/SIGINT (the caller cleans the server up)."""
    import signal

    srv = bench.srv
    root = str(getattr(srv.obj, "root_dir", "")) or None
    path.write_text(json.dumps({"kind": srv.kind, "endpoint": srv.endpoint, "keys": srv.keys, "region": srv.region,
                                "log": str(srv.access_log), "root": root, "pids": srv.pids(),
                                "setup": bench.setup}))
    log(f"serving: {path} (SIGTERM or Ctrl-C to stop and clean up)")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def attach_server(path: Path) -> Server:
    """The server a --serve run described (its processes found again by their pids, or by the Ceph root)."""
    d = json.loads(path.read_text())
    root = d.get("root") or str(Path(d["log"]).parent.parent)
    pids = {str(k): int(v) for k, v in (d.get("pids") or {}).items()}
    if not pids:  # a description written before --serve existed: the Ceph daemons named by their config path
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if proc.name.isdigit() and f"{root}/ceph.conf" in cmd:
                pids[f"{cmd.split()[0]}-{proc.name}"] = int(proc.name)
    keys = {b: (k[0], k[1]) for b, k in d["keys"].items()}
    return Server(d.get("kind", "Ceph RGW 16.2 (memstore)"), d["endpoint"], keys, d["region"], Path(d["log"]),
                  lambda: pids, None)


# ----------------------------------------------------------------------------- access-log request counts

_REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')
_SUBRESOURCES = ("location", "versioning", "object-lock", "encryption", "acl", "policy", "tagging", "uploads")


def classify_request(method: str, path: str) -> str:
    path, _, query = path.partition("?")
    bucket, _, key = path.lstrip("/").partition("/")
    if method == "HEAD":
        return "HEAD object" if key else "HEAD bucket"
    if method == "GET" and key:
        return "GET object"
    if method == "GET" and bucket:
        params = {p.partition("=")[0] for p in query.split("&") if p}
        return "bucket config" if params & set(_SUBRESOURCES) else "LIST"
    return f"{method} {'object' if key else 'bucket' if bucket else 'service'}"


class AccessLog:
    """Counts the requests one tool made, from the server's access log (one tool runs at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def since(self, offset: int) -> dict[str, int]:
        # the server writes its log from its own thread: wait until it stops growing
        last, stable, deadline = -1, 0, time.monotonic() + 5
        while stable < 2 and time.monotonic() < deadline:
            size = self.mark()
            stable = stable + 1 if size == last else 0
            last = size
            time.sleep(0.15)
        counts: collections.Counter[str] = collections.Counter()
        with self.path.open("rb") as fh:
            fh.seek(offset)
            for raw in fh:
                m = _REQUEST.search(raw.decode(errors="replace"))
                if m:
                    counts[classify_request(m["method"], m["path"])] += 1
                    if m["status"][0] in "45":
                        counts["errors (4xx/5xx)"] += 1
        return dict(counts)


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Run:
    rc: int
    wall: float
    cpu: float  # user + system seconds of the measured process (and its reaped children)
    maxrss_kib: int
    server_cpu: float  # CPU seconds of the S3 server's processes during the run
    bg: float  # CPU cores busy outside the measured process and the server during the run (other load)
    requests: dict[str, int]
    stdout: str = ""
    stderr: str = ""


def system_busy() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    return (sum(f[:8]) - idle) / TICK


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most ``max_wait`` s) until other processes keep less than ``threshold`` cores busy."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = system_busy()
        time.sleep(1.0)
        load = system_busy() - b0
        if load < threshold or time.monotonic() >= deadline:
            return load
        log(f"  machine busy ({load:.1f} cores used by other processes): waiting")


def run_measured(cmd: list[str], env: dict[str, str], srv: Server, alog: AccessLog) -> Run:
    """Run a command: wall time, CPU time and peak RSS (wait4 rusage; ru_maxrss is KiB on Linux)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        offset, scpu0, busy0 = alog.mark(), srv.cpu(), system_busy()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        scpu, busy = srv.cpu() - scpu0, system_busy() - busy0
        cpu = usage.ru_utime + usage.ru_stime
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, wall, cpu, usage.ru_maxrss, scpu, max(0.0, busy - cpu - scpu) / wall,
                   alog.since(offset), out.read(), err.read())


# ------------------------------------------------------------------------------------------ tools


def rclone_env(srv: Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone 1.60 fails with it set
    env["RCLONE_CONFIG"] = "/dev/null"  # remotes come from the environment only
    for name, bucket in (("PROD", PROD_BUCKET), ("COPY", COPY_BUCKET)):
        key, secret = srv.keys[bucket]
        env.update({
            f"RCLONE_CONFIG_{name}_TYPE": "s3",
            f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
            f"RCLONE_CONFIG_{name}_ENDPOINT": srv.endpoint,
            f"RCLONE_CONFIG_{name}_REGION": srv.region,
            f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true",
            f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": key,
            f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": secret,
        })
    return env


def rclone_version() -> str:
    try:
        out = subprocess.run(["rclone", "version"], capture_output=True, text=True, check=False,
                             env={k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"})
        return out.stdout.split("\n", 1)[0].strip()
    except OSError:
        return "rclone ?"


def code_version() -> str:
    """The drwatch under test: its git commit, and whether daemon/ has uncommitted changes."""
    try:
        import drwatch

        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "daemon"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"drwatch {drwatch.__version__} @ {head}{' + uncommitted changes in daemon/' if dirty else ''}"
    except (ImportError, OSError, subprocess.CalledProcessError, AttributeError):
        return "drwatch (version unknown)"


def write_config(work: Path, name: str, srv: Server, prefix: str, head_concurrency: int | None,
                 copy_bucket: str = COPY_BUCKET, inventory: bool = False) -> Path:
    def location(bucket: str, site: str) -> dict[str, Any]:
        keys = ENV_KEYS[PROD_BUCKET if bucket == PROD_BUCKET else COPY_BUCKET]
        loc: dict[str, Any] = {
            "kind": "s3", "bucket": bucket, "endpoint_url": srv.endpoint, "region": srv.region,
            "addressing_style": "path", "provider": "bench", "site": site,
            "access_key_id_env": keys[0], "secret_access_key_env": keys[1],
        }
        if head_concurrency is not None:
            loc["head_concurrency"] = head_concurrency
        return loc

    cfg = {
        "store": {"sqlite": str(work / f"state-{name}.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "logging": {"level": "warning"},
        "limits": {"hash_workers": os.cpu_count() or 2, "default_timeout": "6h"},
        # production + one copy, no lock required: a clean check exits 0, a bad copy 1. Both buckets are on one
        # server, so drwatch rightly observes one region (not off-site): the offsite rule is not asked for.
        "compliance": {"copies": 2, "media": 1, "offsite": 0, "immutable": 0},
        "locations": {"prod": location(PROD_BUCKET, "dc-a"), "copy": location(copy_bucket, "dc-b")},
        "assets": {name: {
            "rpo": "7d",
            "production": {"location": "prod", "prefix": prefix},
            "copies": [{"location": "copy", "prefix": prefix}],
            "validators": [{"kind": "replica", "schedule": {"every": "1h"}, "timeout": "6h"}],
        }},
    }
    if inventory:  # the copy's S3 Inventory report, in a destination bucket of its own
        cfg["locations"]["inv"] = location(INV_BUCKET, "dc-b")  # type: ignore[index]
        cfg["locations"]["copy"]["inventory"] = {"location": "inv", "prefix": "reports",  # type: ignore[index]
                                                 "configuration_id": "daily"}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def fresh_store(cfg: Path) -> None:
    """Each check starts on an empty store (a failure recorded earlier would fail later checks)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        cfg.with_name(f"state-{cfg.stem}.sqlite{suffix}").unlink(missing_ok=True)


def drwatch_result(run: Run) -> dict[str, Any]:
    try:
        return dict(json.loads(run.stdout)["results"][0])
    except (ValueError, KeyError, IndexError):
        raise RuntimeError(f"drwatch check gave no result (rc {run.rc}): {run.stderr.strip()[-2000:]}") from None


def rules_not_passed(run: Run) -> dict[str, str]:
    """Compliance rules that did not pass (they decide the exit code too), with drwatch's reason."""
    try:
        assets = json.loads(run.stdout)["assets"]
    except (ValueError, KeyError):
        return {}
    return {f"{name}.{rule}": f"{r.get('state')}: {r.get('detail')}" for name, a in assets.items()
            for rule, r in a.get("rules", {}).items() if r.get("state") != "pass"}


def copy_report(res: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in res.get("copies", []) if c.get("role") == "copy")


_RCLONE_COUNT = re.compile(r"(\d+) (differences found|matching files|files missing|hashes could not be checked)")


def rclone_counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in _RCLONE_COUNT.finditer(text):  # the last line repeats "N differences found": keep the largest
        out[m[2]] = max(out.get(m[2], 0), int(m[1]))
    return out


# ------------------------------------------------------------------------------------------ bench


@dataclass
class Row:
    objects: int
    tool: str
    runs: list[Run]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    def as_dict(self) -> dict[str, Any]:
        wall = self.median("wall")
        return {"objects": self.objects, "tool": self.tool, "wall_s": round(wall, 3),
                "walls": [round(r.wall, 3) for r in self.runs], "objects_per_s": round(self.objects / wall, 1),
                "cpu_s": round(self.median("cpu"), 2), "server_cpu_s": round(self.median("server_cpu"), 2),
                "bg_cores": round(self.median("bg"), 2),
                "maxrss_kib": max(r.maxrss_kib for r in self.runs), "requests": self.runs[0].requests,
                "note": self.note, **self.extra}


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    srv: Server
    group: int
    failures: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    lock_rows: list[Row] = field(default_factory=list)  # --locked: (shape in Row.tool) plain / locked / report

    def __post_init__(self) -> None:
        self.alog = AccessLog(self.srv.access_log)
        self.renv = rclone_env(self.srv)
        self.denv = dict(os.environ)
        for bucket, (key_env, secret_env) in ENV_KEYS.items():
            self.denv[key_env], self.denv[secret_env] = self.srv.keys[bucket]

    def expect(self, ok: bool, what: str) -> None:
        self.checks.append({"check": what, "ok": ok})
        log(("ok:   " if ok else "FAIL: ") + what)
        if not ok:
            self.failures.append(what)

    # ---- setup
    def upload(self) -> None:
        a = self.args
        n = a.objects
        for bucket in (PROD_BUCKET, COPY_BUCKET):
            self.srv.client(bucket).create_bucket(Bucket=bucket)
        log(f"setup: uploading {n} objects to each of 2 buckets ({a.uploader}, {a.threads} threads) ...")
        t0 = time.perf_counter()
        nbytes = self._upload_rclone(n) if a.uploader == "rclone" else self._upload_boto3(n)
        wall = time.perf_counter() - t0
        self.setup = {"objects_per_bucket": n, "bytes_per_bucket": nbytes, "uploader": a.uploader,
                      "checksum": a.checksum if a.uploader == "boto3" else "none",
                      "threads": a.threads, "wall_s": round(wall, 1), "puts_per_s": round(2 * n / wall, 1)}
        log(f"  uploaded 2 x {n} objects ({human(2 * nbytes)}) in {wall:.1f}s: {2 * n / wall:.0f} PUT/s")

    def _upload_boto3(self, n: int) -> int:
        local = threading.local()
        done = [0]
        lock = threading.Lock()
        t0 = time.perf_counter()

        def put(i: int) -> int:
            clients = getattr(local, "clients", None)
            if clients is None:
                clients = local.clients = {b: self.srv.client(b) for b in (PROD_BUCKET, COPY_BUCKET)}
            key, body = key_of(i, self.group), body_of(i)
            extra = {"ChecksumAlgorithm": self.args.checksum} if self.args.checksum != "none" else {}
            for bucket, client in clients.items():
                client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
            with lock:
                done[0] += 1
                if done[0] % 10_000 == 0:
                    el = time.perf_counter() - t0
                    log(f"  {done[0]}/{n} objects, {2 * done[0] / el:.0f} PUT/s")
            return len(body)

        with ThreadPoolExecutor(self.args.threads) as pool:
            return sum(pool.map(put, range(n)))

    def _upload_rclone(self, n: int) -> int:
        stage = self.work / "stage"
        nbytes = 0
        for i in range(n):
            path = stage / key_of(i, self.group)
            path.parent.mkdir(parents=True, exist_ok=True)
            body = body_of(i)
            path.write_bytes(body)
            nbytes += len(body)
        t = str(self.args.threads)
        for remote, bucket in (("prod", PROD_BUCKET), ("copy", COPY_BUCKET)):
            r = subprocess.run(["rclone", "copy", str(stage), f"{remote}:{bucket}", "--transfers", t, "--checkers", t,
                                "--s3-no-check-bucket", "--no-check-dest"], env=self.renv, capture_output=True,
                               text=True, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"rclone copy to {bucket} failed: {r.stderr[-1500:]}")
        shutil.rmtree(stage, ignore_errors=True)
        return nbytes

    # ---- runs
    def drwatch(self, cfg: Path, prefix_cmd: list[str] | None = None, tree: Path | None = None) -> Run:
        """``python -m drwatch check`` of this checkout, or of the checkout ``tree`` (a baseline commit)."""
        fresh_store(cfg)
        wait_quiet(self.args.quiet_wait)
        cmd = [sys.executable, "-m", "drwatch", "check", "--config", str(cfg), "--output", "json"]
        env = self.denv if tree is None else dict(self.denv, PYTHONPATH=str(tree / "daemon"))
        return run_measured([*(prefix_cmd or []), *cmd], env, self.srv, self.alog)

    def rclone(self, prefix: str, *extra: str, copy_bucket: str = COPY_BUCKET) -> Run:
        src, dst = f"prod:{PROD_BUCKET}/{prefix}".rstrip("/"), f"copy:{copy_bucket}/{prefix}".rstrip("/")
        wait_quiet(self.args.quiet_wait)
        return run_measured(["rclone", "check", src, dst, *extra], self.renv, self.srv, self.alog)

    def measure(self) -> None:
        a = self.args
        n = a.objects
        steps = [(self.group, f"data/g{0:03d}"), (n, "")] if self.group < n else [(n, "")]
        for count, prefix in steps:
            name = f"s{count}"
            cfg = write_config(self.work, name, self.srv, prefix, a.head_concurrency)
            d_runs: list[Run] = []
            r_runs: list[Run] = []
            for rnd in range(a.repeat):
                log(f"{count} objects, round {rnd + 1}/{a.repeat}: drwatch check ...")
                run = self.drwatch(cfg)
                d_runs.append(run)
                log(f"  {run.wall:.1f}s, rc {run.rc}, requests {run.requests}")
                log(f"{count} objects, round {rnd + 1}/{a.repeat}: rclone check ...")
                run = self.rclone(prefix)
                r_runs.append(run)
                log(f"  {run.wall:.1f}s, rc {run.rc}, requests {run.requests}")
            for run in d_runs:
                res = drwatch_result(run)
                cp = copy_report(res)
                figs = res.get("figures", {})
                heads = run.requests.get("HEAD object", 0)
                self.expect(run.rc == 0 and res["outcome"] == "ok" and figs.get("objects_reference") == count
                            and cp.get("objects", {}).get("verified") == count,
                            f"drwatch, clean copy of {count}: rc {run.rc}, {res['outcome']}, "
                            f"{figs.get('objects_reference', 0):.0f} objects, copy {cp.get('objects')}"
                            + (f", rules not passed {rules_not_passed(run)}" if run.rc else ""))
                # The copy bucket has no Object Lock and every object's single-part ETag equals production's:
                # a HEAD could not change the verdict (listed checksum or not), so drwatch sends none.
                self.expect(heads == 0, f"drwatch skips useless HEADs (no Object Lock, equal ETags): "
                                        f"{heads} HEAD for {count} objects")
            res = drwatch_result(d_runs[0])
            cp = copy_report(res)
            evidence = ", ".join(f"{k} {v}" for k, v in sorted(cp.get("evidence", {}).items())) or "none"
            self.rows.append(Row(count, "drwatch check", d_runs, f"evidence: {evidence}",
                                 {"evidence": cp.get("evidence", {}),
                                  "validator_s": res.get("duration_seconds")}))
            for run in r_runs:
                counts = rclone_counts(run.stderr)
                self.expect(run.rc == 0 and counts.get("matching files") == count
                            and counts.get("differences found", 0) == 0,
                            f"rclone, clean copy of {count}: rc {run.rc}, {counts}")
            self.rows.append(Row(count, "rclone check", r_runs, "md5 from listing ETags, 8 checkers"))

    def maybe_profile(self) -> None:
        a = self.args
        d = [r for r in self.rows if r.tool == "drwatch check"]
        r = [r for r in self.rows if r.tool == "rclone check"]
        ratio = d[-1].median("wall") / r[-1].median("wall")
        if a.profile == "never" or (a.profile == "auto" and ratio <= RATIO_TO_PROFILE):
            log(f"drwatch/rclone = {ratio:.1f}: no profile")
            return
        if shutil.which("py-spy") is None:
            log("py-spy is not installed (pip install py-spy): no profile")
            self.profile = {"error": "py-spy not installed"}
            return
        count, prefix = (self.group, "data/g000") if a.objects > 2 * self.group else (a.objects, "")
        cfg = write_config(self.work, f"p{count}", self.srv, prefix, a.head_concurrency)
        raw = self.work / "profile.txt"
        log(f"drwatch/rclone = {ratio:.1f} > {RATIO_TO_PROFILE}: profiling drwatch on {count} objects (py-spy) ...")
        run = self.drwatch(cfg, ["py-spy", "record", "--rate", str(a.profile_rate), "--format", "raw", "--output",
                                 str(raw), "--"])
        if run.rc != 0 or not raw.is_file():
            self.profile = {"error": f"py-spy rc {run.rc}: {run.stderr.strip()[-500:]}"}
            log(f"  profile failed: {self.profile['error']}")
            return
        self.profile = summarize_profile(raw.read_text(), a.profile_rate)
        self.profile.update(objects=count, wall_s=round(run.wall, 2), cpu_s=round(run.cpu, 2),
                            requests=run.requests)
        if a.keep_profile:
            dest = Path(a.keep_profile)
            shutil.copyfile(raw, dest)
            self.profile["raw_file"] = str(dest)

    # ---- COMPLIANCE-locked copy, without and with an S3 Inventory report (--locked; moto)
    def locked(self) -> None:
        """The same objects in a COMPLIANCE-locked bucket: drwatch HEADs each object for its lock state without a
        report (this checkout, and ``--baseline-tree`` for the per-object path before the lean path) and reads
        it from a fresh report with one (zero HEADs); the unlocked copy and rclone in the same rounds."""
        from tests.support.inventory import take_inventory, write_report

        a = self.args
        count, prefix = (self.group, f"data/g{0:03d}") if a.objects > 2 * self.group else (a.objects, "")
        c = self.srv.client(COPY_BUCKET)
        c.create_bucket(Bucket=LOCK_BUCKET, ObjectLockEnabledForBucket=True)
        c.create_bucket(Bucket=INV_BUCKET)
        retain = datetime.now(UTC) + timedelta(days=30)
        algorithm = a.checksum if a.checksum != "none" else "CRC32"  # a locked PUT needs a checksum or MD5
        log(f"locked: uploading {count} objects to {LOCK_BUCKET} (COMPLIANCE, 30 days, {algorithm}) ...")

        def put(i: int) -> None:
            c.put_object(Bucket=LOCK_BUCKET, Key=key_of(i, self.group), Body=body_of(i), ObjectLockMode="COMPLIANCE",
                         ObjectLockRetainUntilDate=retain, ChecksumAlgorithm=algorithm)

        with ThreadPoolExecutor(a.threads) as pool:
            list(pool.map(put, range(count)))
        time.sleep(1.05)  # the report is taken after the objects' last-modified second
        rows = take_inventory(self.srv.obj, LOCK_BUCKET, prefix)
        time.sleep(1.05)
        write_report(self.srv.obj, INV_BUCKET, prefix="reports", source_bucket=LOCK_BUCKET, config_id="daily",
                     rows=rows)
        shapes: list[tuple[str, Path, Path | None]] = [
            ("unlocked copy", write_config(self.work, "lk-plain", self.srv, prefix, a.head_concurrency), None),
            ("locked, no report", write_config(self.work, "lk-head", self.srv, prefix, a.head_concurrency,
                                               LOCK_BUCKET), None),
            ("locked + report", write_config(self.work, "lk-inv", self.srv, prefix, a.head_concurrency,
                                             LOCK_BUCKET, inventory=True), None)]
        if a.baseline_tree is not None:
            shapes.append((f"locked, no report @ {a.baseline_label}", shapes[1][1], a.baseline_tree))
        runs: dict[str, list[Run]] = {label: [] for label, _, _ in shapes}
        runs["rclone check (locked copy)"] = []
        for rnd in range(a.repeat):
            for label, cfg, tree in shapes:
                log(f"locked, round {rnd + 1}/{a.repeat}: drwatch {label} ...")
                run = self.drwatch(cfg, tree=tree)
                runs[label].append(run)
                log(f"  {run.wall:.1f}s, {run.cpu:.1f}s CPU, rc {run.rc}, requests {run.requests}")
            run = self.rclone(prefix, copy_bucket=LOCK_BUCKET)
            runs["rclone check (locked copy)"].append(run)
            log(f"  rclone: {run.wall:.1f}s, rc {run.rc}, requests {run.requests}")
        for label, _cfg, _tree in shapes:
            locked = label.startswith("locked")
            for run in runs[label]:
                res = drwatch_result(run)
                cp = copy_report(res)
                heads = run.requests.get("HEAD object", 0)
                # this checkout HEADs the locked copy once per object (its lock state); the baseline may HEAD
                # production too, to compare the listed CRC32s
                want_heads = count if locked and "+ report" not in label else 0
                self.expect(res["outcome"] == "ok" and cp.get("objects", {}).get("verified") == count
                            and cp.get("lock") == ({"compliance": count} if locked else {"none": count})
                            and (heads == want_heads or ("@" in label and heads >= want_heads)),
                            f"drwatch {label}, {count} objects: {res['outcome']}, copy {cp.get('objects')}, lock "
                            f"{cp.get('lock')}, {heads} HEAD (expected {want_heads})")
            evidence = copy_report(drwatch_result(runs[label][0])).get("evidence")
            self.lock_rows.append(Row(count, label, runs[label], f"evidence: {evidence}"))
        for run in runs["rclone check (locked copy)"]:
            counts = rclone_counts(run.stderr)
            self.expect(run.rc == 0 and counts.get("matching files") == count,
                        f"rclone, locked copy of {count}: rc {run.rc}, {counts}")
        self.lock_rows.append(Row(count, "rclone check (locked copy)", runs["rclone check (locked copy)"],
                                  "md5 from listing ETags"))

    def report_locked(self) -> None:
        if not self.lock_rows:
            return
        n = self.lock_rows[0].objects
        print(f"\nCOMPLIANCE-locked copy of {n} objects (median of {self.args.repeat} round(s)); HEAD counted in "
              "the server's access log")
        print(f"{'copy / tool':42} {'wall s':>7} {'CPU s':>6} {'srv CPU':>7} {'HEAD':>6} {'HEAD/s':>7} "
              f"{'CPU ms/obj':>10}")
        rows = {r.tool: r for r in self.lock_rows}
        base = rows["unlocked copy"]
        for r in self.lock_rows:
            heads = r.runs[0].requests.get("HEAD object", 0)
            rate = heads / r.median("wall") if heads else 0.0
            per = (r.median("cpu") - base.median("cpu")) / n * 1000 if r is not base and "rclone" not in r.tool else 0.0
            print(f"{r.tool:42} {r.median('wall'):7.2f} {r.median('cpu'):6.2f} {r.median('server_cpu'):7.2f} "
                  f"{heads:6d} {rate:7.0f} {per:10.3f}")
        plain, head, report = base.median("wall"), rows["locked, no report"], rows["locked + report"]
        print(f"  locked + report / unlocked = {report.median('wall') / plain:.2f}x wall (target <= 1.2x, 0 HEAD); "
              f"locked without report / unlocked = {head.median('wall') / plain:.2f}x")
        old = next((r for r in self.lock_rows if "@" in r.tool), None)
        if old is not None:
            per_new = (head.median("cpu") - base.median("cpu")) / n
            per_old = (old.median("cpu") - base.median("cpu")) / n
            print(f"  per-object path (client CPU per object over the unlocked copy): {per_old * 1000:.3f} ms @ "
                  f"{self.args.baseline_label} -> {per_new * 1000:.3f} ms now ({per_old / max(per_new, 1e-9):.1f}x); "
                  f"wall {old.median('wall'):.2f} -> {head.median('wall'):.2f} s "
                  f"({old.median('wall') / head.median('wall'):.1f}x)")

    # ---- faults
    def faults(self) -> None:
        n = self.args.objects
        rng = random.Random(7)
        picked = rng.sample(range(n), 2 * FAULTS)
        gone = sorted(key_of(i, self.group) for i in picked[:FAULTS])
        changed = sorted(key_of(i, self.group) for i in picked[FAULTS:])
        c = self.srv.client(COPY_BUCKET)
        for key in gone:
            c.delete_object(Bucket=COPY_BUCKET, Key=key)
        for i in picked[FAULTS:]:
            body = bytearray(body_of(i))
            mid = len(body) // 2
            body[mid: mid + 8] = bytes(b ^ 0xFF for b in body[mid: mid + 8])
            c.put_object(Bucket=COPY_BUCKET, Key=key_of(i, self.group), Body=bytes(body))
        for key in changed:
            size_p = self.srv.client(PROD_BUCKET).head_object(Bucket=PROD_BUCKET, Key=key)["ContentLength"]
            size_c = c.head_object(Bucket=COPY_BUCKET, Key=key)["ContentLength"]
            if size_p != size_c:
                self.expect(False, f"planted change keeps the size of {key} ({size_p} != {size_c})")
        log(f"faults: deleted {FAULTS} objects from the copy, changed {FAULTS} (same size, 8 bytes flipped)")

        cfg = write_config(self.work, "faults", self.srv, "", self.args.head_concurrency)
        run = self.drwatch(cfg)
        res = drwatch_result(run)
        figs = res.get("figures", {})
        cp = copy_report(res)
        subjects = {(f["code"], f["subject"]) for f in res.get("findings", [])}
        label = cp["copy"]
        named_gone = {k for k in gone if ("missing_file", f"{label}:{k}") in subjects}
        named_changed = {k for k in changed if ("content_mismatch", f"{label}:{k}") in subjects}
        self.expect(run.rc == 1 and res["outcome"] == "failed" and figs.get("objects_missing") == FAULTS
                    and figs.get("objects_mismatched") == FAULTS and len(named_gone) == FAULTS
                    and len(named_changed) == FAULTS,
                    f"drwatch on the faulty copy: rc {run.rc}, {res['outcome']}, objects_missing "
                    f"{figs.get('objects_missing', 0):.0f}, objects_mismatched "
                    f"{figs.get('objects_mismatched', 0):.0f}, "
                    f"names {len(named_gone)}/{FAULTS} missing and {len(named_changed)}/{FAULTS} changed; "
                    f"evidence {cp.get('evidence')}; {run.wall:.1f}s wall, {run.cpu:.1f}s CPU, bg {run.bg:.1f}, "
                    f"requests {run.requests}")
        self.checks[-1]["findings"] = sorted(f"{c} {s}" for c, s in subjects)

        combined = self.work / "rclone-combined.txt"
        run = self.rclone("", "--combined", str(combined))
        counts = rclone_counts(run.stderr)
        lines = combined.read_text().splitlines() if combined.exists() else []
        found_gone = {ln[2:] for ln in lines if ln.startswith("+ ")}  # '+': only in the source
        found_changed = {ln[2:] for ln in lines if ln.startswith("* ")}  # '*': differs
        self.expect(run.rc == 1 and counts.get("differences found") == 2 * FAULTS and found_gone == set(gone)
                    and found_changed == set(changed),
                    f"rclone on the faulty copy: rc {run.rc}, {counts}, names {len(found_gone & set(gone))}/{FAULTS} "
                    f"missing and {len(found_changed & set(changed))}/{FAULTS} changed; {run.wall:.1f}s wall, "
                    f"requests {run.requests}")

    # ---- output
    def report(self) -> None:
        a = self.args
        print()
        print(f"machine: {os.cpu_count()} cores, {mem_total()} RAM, Python {sys.version.split()[0]}, "
              f"{rclone_version()}; server: {self.srv.kind} on loopback")
        print(f"code: {self.versions[0]}" + (f" (at the end: {self.versions[-1]})"
                                              if self.versions[-1] != self.versions[0] else ""))
        s = self.setup
        if s:
            print(f"\nsetup: 2 buckets x {s['objects_per_bucket']} objects ({human(s['bytes_per_bucket'])} each), "
                  f"{s['uploader']} with {s['threads']} threads: {s['wall_s']:.1f}s ({s['puts_per_s']:.0f} PUT/s)")
        if self.rows:
            print(f"\nchecks of a clean copy (median of {a.repeat} round(s)); requests counted in the server's "
                  "access log")
            print(f"{'objects':>7} {'tool':14} {'wall s':>7} {'obj/s':>7} {'CPU s':>6} {'srv CPU':>7} {'bg':>4} "
                  f"{'peak RSS':>9} {'LIST':>5} {'HEAD':>7} {'GET':>5}  note")
            for r in self.rows:
                d = r.as_dict()
                q = d["requests"]
                print(f"{d['objects']:>7} {d['tool']:14} {d['wall_s']:7.2f} {d['objects_per_s']:7.0f} "
                      f"{d['cpu_s']:6.1f} {d['server_cpu_s']:7.1f} {d['bg_cores']:4.1f} "
                      f"{human(d['maxrss_kib'] * KiB):>9} "
                      f"{q.get('LIST', 0):>5} {q.get('HEAD object', 0):>7} {q.get('GET object', 0):>5}  {d['note']}")
            for count in sorted({r.objects for r in self.rows}):
                d = next(r for r in self.rows if r.objects == count and r.tool == "drwatch check")
                c = next(r for r in self.rows if r.objects == count and r.tool == "rclone check")
                print(f"  {count} objects: drwatch/rclone wall = {d.median('wall') / c.median('wall'):.1f}x, "
                      f"own CPU = {d.median('cpu') / c.median('cpu'):.1f}x, "
                      f"server CPU = {d.median('server_cpu') / max(c.median('server_cpu'), 0.01):.1f}x; "
                      f"drwatch {count / d.median('wall'):.0f} obj/s, rclone {count / c.median('wall'):.0f} obj/s")
            for tool in ("drwatch check", "rclone check"):
                pts = [r for r in self.rows if r.tool == tool]
                if len(pts) >= 2:
                    lo, hi = pts[0].as_dict(), pts[-1].as_dict()
                    per = (hi["maxrss_kib"] - lo["maxrss_kib"]) / (hi["objects"] - lo["objects"]) * 1000
                    print(f"  {tool}: peak RSS {human(lo['maxrss_kib'] * KiB)} at {lo['objects']} objects -> "
                          f"{human(hi['maxrss_kib'] * KiB)} at {hi['objects']} ({per:+.1f} KiB per 1000 objects)")
        self.report_locked()
        if self.profile:
            print_profile(self.profile)
        print("\ncorrectness:")
        for c in self.checks:
            print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}")
        print(f"\n{'ALL CHECKS PASSED' if not self.failures else f'{len(self.failures)} CHECK(S) FAILED'}")


def mem_total() -> str:
    try:
        with open("/proc/meminfo") as fh:
            return human(int(fh.readline().split()[1]) * KiB)
    except (OSError, ValueError, IndexError):
        return "? RAM"


# ------------------------------------------------------------------------------------------ profile

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PACKAGES = ("aiobotocore", "botocore", "aiohttp", "aioboto3", "boto3", "urllib3", "yarl", "multidict",
             "dateutil", "pydantic", "structlog", "drwatch", "asyncio", "importlib", "ssl", "http", "email",
             "xml", "json", "hashlib", "sqlite3", "aiosqlite", "concurrent", "threading", "logging")
# phases of a drwatch check, by the first matching frame from the leaf up (order matters)
_PHASES = (
    ("HEAD object (S3Location.head)", ("S3Location.head",)),
    ("GET object + hash (S3Location.sha256)", ("S3Location.sha256",)),
    ("LIST (S3Location.objects)", ("S3Location.objects",)),
    ("bucket facts / probe", ("S3Location.bucket_facts", "S3Location.bucket_exists", "S3Source.probe")),
    ("merge loop (ReplicaMerge, Prover: own code)",
     ("ReplicaMerge.run", "ReplicaMerge._key", "ReplicaMerge._object", "Prover.verify", "Prover._ledger")),
    ("S3 client creation", ("S3Location.client",)),
    (
        "store, report, compliance",
        ("file:drwatch/store", "file:drwatch/state/report.py", "file:drwatch/state/compliance.py"),
    ),
    ("imports / start-up", ("_find_and_load", "<module>")),
)


def _hit(frame: tuple[str, str], marker: str) -> bool:
    func, file = frame
    if marker.startswith("file:"):
        return marker[5:] in file
    return func == marker or func.endswith("." + marker)


def package_of(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    for part in parts[:-1]:
        if part in _PACKAGES:
            return part
    stem = parts[-1].removesuffix(".py")
    if stem in _PACKAGES:
        return stem
    if path.startswith("<frozen"):
        return "importlib"
    return parts[0] if len(parts) > 1 else stem


def summarize_profile(text: str, rate: int) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> samples by package (self time), by phase and by function (inclusive)."""
    total = 0
    by_package: collections.Counter[str] = collections.Counter()
    by_phase: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    botocore_steps: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for fr in stack.split(";"):
            m = _FRAME.match(fr)
            frames.append((m["func"], m["file"]) if m else (fr, ""))
        leaf_func, leaf_file = frames[-1]
        by_package[package_of(leaf_file)] += count
        self_fn[f"{leaf_func} ({package_of(leaf_file)})"] += count
        names = {f"{func} ({package_of(file)})" for func, file in frames}
        for name in names:
            inclusive[name] += count
        funcs = [func for func, _ in frames]
        phase = next((label for label, markers in _PHASES if any(_hit(fr, mk) for fr in frames for mk in markers)),
                     "other")
        by_phase[phase] += count
        # inside an S3 call: which step of botocore's request pipeline
        step = next((f for f in funcs if f in _BOTOCORE_STEPS), None)
        if step is not None:
            botocore_steps[_BOTOCORE_STEPS[step]] += count

    def top(counter: collections.Counter[str], k: int) -> list[tuple[str, int, float]]:
        return [(name, c, 100.0 * c / total) for name, c in counter.most_common(k)] if total else []

    return {"samples": total, "rate_hz": rate,
            "by_package": top(by_package, 12), "by_phase": top(by_phase, 12),
            "inclusive": top(inclusive, 30), "self": top(self_fn, 20), "botocore_steps": top(botocore_steps, 12)}


_BOTOCORE_STEPS = {
    "AioHTTPSessionMixin.send": "HTTP send/receive (aiohttp)",
    "AIOHTTPSession.send": "HTTP send/receive (aiohttp)",
    "RequestSigner.sign": "SigV4 signing",
    "AioRequestSigner.sign": "SigV4 signing",
    "ResponseParser.parse": "response parsing",
    "RestXMLParser.parse": "response parsing",
    "BaseRestParser.parse": "response parsing",
    "AioSession.create_client": "client creation",
    "AioClientCreator.create_client": "client creation",
    "serialize_to_request": "request serialisation",
    "Serializer.serialize_to_request": "request serialisation",
    "BaseRestSerializer.serialize_to_request": "request serialisation",
    "HierarchicalEmitter._emit": "event hooks (handlers)",
    "AioHierarchicalEmitter._emit": "event hooks (handlers)",
    "EndpointRulesetResolver.construct_endpoint": "endpoint rule resolution",
    "AioEndpointRulesetResolver.construct_endpoint": "endpoint rule resolution",
}


def print_profile(p: dict[str, Any]) -> None:
    if "error" in p:
        print(f"\nprofile: {p['error']}")
        return
    print(f"\nwhere drwatch's time goes: py-spy at {p['rate_hz']} Hz on {p['objects']} objects: "
          f"wall {p['wall_s']:.1f}s, process CPU {p['cpu_s']:.1f}s, {p['samples']} samples of running threads; "
          f"requests {p['requests']}")
    sections = (("by phase (first matching frame, leaf up)", "by_phase"),
                ("inside botocore's request pipeline (share of all samples)", "botocore_steps"),
                ("by package of the running (leaf) frame", "by_package"),
                ("functions, inclusive (share of samples with it on the stack)", "inclusive"),
                ("functions, self", "self"))
    for title, key in sections:
        print(f"  {title}:")
        for name, count, pct in p[key][: 16 if key == "inclusive" else 12]:
            print(f"    {pct:5.1f}%  {count:6d}  {name}")


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--objects", type=int, default=100_000, help="objects per bucket (default 100000)")
    p.add_argument("--server", choices=("rgw", "moto"), default="rgw", help="S3 server (default rgw: Ceph RGW)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 5000 objects, rclone uploader, no profile, no waiting for quiet (~1 min)")
    p.add_argument("--threads", type=int, default=16, help="upload threads (default 16)")
    p.add_argument("--uploader", choices=("boto3", "rclone"), default=None,
                   help="setup: boto3 thread pool (default) or 'rclone copy' of a staged local tree (faster; "
                        "--quick's default)")
    p.add_argument("--checksum", choices=("none", "CRC32", "CRC32C", "CRC64NVME", "SHA256"), default="none",
                   help="boto3 uploader: the additional checksum each PUT carries (CRC32: what current AWS SDKs "
                        "send by default; the listing then names the algorithm). Default none")
    p.add_argument("--locked", action="store_true",
                   help="also a COMPLIANCE-locked copy of the same objects, without and with an S3 Inventory report "
                        "(moto: the report's rows are taken with HEADs before the measured runs)")
    p.add_argument("--baseline-tree", type=Path, default=None,
                   help="with --locked: also run the locked check with the drwatch of this checkout (e.g. "
                        "'git archive COMMIT daemon | tar -x -C DIR': the per-object path before the lean path)")
    p.add_argument("--baseline-label", default="baseline", help="what --baseline-tree is (a commit)")
    p.add_argument("--serve", type=Path, metavar="FILE",
                   help="set up only (server + upload), describe the server in FILE, and keep it until SIGTERM/SIGINT "
                        "(the setup of 100k objects per bucket takes 15-25 min here; measure with --attach)")
    p.add_argument("--attach", type=Path, metavar="FILE",
                   help="measure against the server a --serve run described in FILE (same --objects and --server)")
    p.add_argument("--no-faults", action="store_true",
                   help="skip part 3 (it deletes and changes objects of the copy: an attached server's next run "
                        "would find them)")
    p.add_argument("--repeat", type=int, default=1, help="measured rounds per size; medians are shown (1)")
    p.add_argument("--head-concurrency", type=int, default=None,
                   help="drwatch S3 location head_concurrency (default: drwatch's own default)")
    p.add_argument("--profile", choices=("auto", "always", "never"), default=None,
                   help=f"py-spy profile of drwatch: auto = when it is > {RATIO_TO_PROFILE:.0f}x slower than rclone "
                        "(default; --quick: never)")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (100)")
    p.add_argument("--keep-profile", metavar="FILE", help="also keep py-spy's raw collapsed stacks in FILE")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="before each measured run, wait up to this many seconds for other load to stop "
                        "(30; --quick: 0)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the scratch directory is made (default: the temp dir)")
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.objects = 5_000
    if a.quiet_wait is None:
        a.quiet_wait = 0.0 if a.quick else 30.0
    if a.uploader is None:
        a.uploader = "rclone" if a.quick else "boto3"
    if a.profile is None:
        a.profile = "never" if a.quick else "auto"
    if a.objects < 2 * FAULTS:
        p.error(f"--objects must be at least {2 * FAULTS}")
    a.repeat = max(1, a.repeat)
    for tool in ("rclone",):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not on PATH")

    a.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="drwatch-s3bench-", dir=a.workdir))
    log(f"scratch directory {work}")
    started = time.perf_counter()
    srv: Server | None = None
    bench: Bench | None = None
    try:
        srv = attach_server(a.attach) if a.attach else start_server(a.server, a.objects)
        bench = Bench(a, work, srv, group_size(a.objects))
        bench.versions.append(code_version())
        try:
            if not a.attach:
                bench.upload()
            if a.serve:
                serve(a.serve, bench)
                return 0
            bench.measure()
            bench.maybe_profile()
            if a.locked:
                bench.locked()
            if not a.no_faults:
                bench.faults()
        except RuntimeError as exc:
            bench.expect(False, str(exc))
        bench.versions.append(code_version())
        bench.report()
    finally:
        if srv is not None and not a.attach:
            srv.obj.cleanup()
            log("server cleaned up")
        shutil.rmtree(work, ignore_errors=True)
    print(f"total benchmark time {time.perf_counter() - started:.0f}s")
    if a.json and bench is not None:
        raw = {"args": {k: str(v) for k, v in vars(a).items()}, "cores": os.cpu_count(), "server": srv.kind if srv
               else None, "code": bench.versions, "setup": bench.setup, "rows": [r.as_dict() for r in bench.rows],
               "profile": bench.profile, "checks": bench.checks, "failures": bench.failures}
        a.json.write_text(json.dumps(raw, indent=2))
    return 1 if bench is None or bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
