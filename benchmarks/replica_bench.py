#!/usr/bin/env python3
"""Benchmark drwatch's ``replica`` validator against plain hashlib and ``rclone check``, on the same data.

Usage::

    python benchmarks/replica_bench.py [--gb 2] [--small-files 200000] [--workdir DIR] [--keep]
    python benchmarks/replica_bench.py --quick          # 0.2 GiB and 10k files, < 1 min (smoke test)

Part 1, throughput: a production tree and one copy (``--gb`` GiB each: a few large shards holding half
the bytes plus many 1-16 MiB parts; incompressible content), checked by

  (a) ``drwatch check`` with a replica validator and no manifest (reads production and copy and compares
      their bytes: one copy against filesystem production needs no hash),
  (b) ``drwatch seal`` of production (timed on its own), then ``drwatch check`` with that manifest,
  (c) plain hashlib sha256 over both trees, one thread, 1 MiB chunks: the baseline; plus the same with
      ``hash_workers`` threads (what perfectly parallel hashing gives on this machine),
  (d) ``rclone check PROD COPY`` (local to local: sizes and md5 of both sides), with its default 8
      checkers and with ``--checkers`` = hash_workers; and ``rclone check --download`` (rclone reads both
      sides and compares the bytes: the like-for-like of (a)).

Part 2, many tiny files: trees of 64-512 byte files, grown in steps (N/4, N/2, N files per side); wall
time, CPU time and peak RSS (GNU ``time`` %M, see ``run_measured``) of ``drwatch check`` and ``rclone check``,
plus a single-thread hashlib pass for scale (not in ``--quick``).

Part 3, correctness: faults planted in the copies (in each tree one file deleted and one changed without
changing its size); drwatch (with and without the manifest) must exit 1 and name both, rclone must
report both. Every clean run must pass too. The script exits 1 if any of these checks fails.

Page cache: everything fits in RAM; by default one unmeasured warm-up round of every command precedes
the measured rounds (``--quick`` skips it: the data was just written). ``--cold`` instead drops the page
cache (root only) before every measured run. Rounds are interleaved (a b c d, a b c d, ...) so that load
from other processes hits every tool alike; tables show the fastest round (the least disturbed) and the
median, the ``bg`` column shows that load (CPU cores busy outside the measured process, from /proc/stat),
and CPU seconds are reported next to wall time (less sensitive to other load, not immune to it on a
shared VM).

``--quick``: 0.2 GiB per side, 10k tiny files in two steps (N/4, N), one round, no warm-up, without the
N-thread hashlib and ``--checkers N`` rclone rows and the tiny-file hashlib pass.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CHUNK = MiB
POOL = os.urandom(16 * MiB + 64 * KiB)  # source of incompressible content, sliced at pseudo-random offsets
MANIFEST_NAME = ".drwatch-manifest.jsonl"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def human(nbytes: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes:.0f} B"


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Run:
    rc: int
    wall: float
    cpu: float  # user + system seconds of the measured process (and its children)
    maxrss_kib: int  # 0: not measured (in-process baselines)
    bg: float  # CPU cores busy outside the measured process during the run
    stdout: str = ""
    stderr: str = ""


def system_busy() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    return (sum(f[:8]) - idle) / TICK


TIME = shutil.which("time", path="/usr/bin:/bin")  # GNU time: exact peak RSS of the command itself


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Run a command: wall time, CPU time and peak RSS of the command.

    Peak RSS is *not* taken from this process's wait4/RUSAGE_CHILDREN: Linux carries the RSS high-water
    mark of the forked parent image across exec into the child's ru_maxrss, so a child of a 200 MiB
    parent reports at least 200 MiB. GNU time (a small process) forks the command itself and reports
    its %M; without it, the child's VmHWM is polled from /proc (may miss growth in the last 20 ms).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as tfile:
        full = [TIME, "-f", "%M", "-o", tfile.name, *cmd] if TIME else cmd
        busy0, t0 = system_busy(), time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err, env=env, start_new_session=True)
        hwm = [0]
        poller = None if TIME else threading.Thread(target=poll_hwm, args=(proc.pid, hwm), daemon=True)
        if poller:
            poller.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)  # CPU: the command's (time's children included)
        except BaseException:  # Ctrl-C / SIGTERM: stop the tool (and GNU time's child) too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        wall, busy = time.perf_counter() - t0, system_busy() - busy0
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        if poller:
            poller.join()
            maxrss = hwm[0]
        else:
            lines = [ln for ln in tfile.read().splitlines() if ln.strip().isdigit()]
            maxrss = int(lines[-1]) if lines else 0
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, wall, cpu, maxrss, max(0.0, busy - cpu) / wall, out.read(), err.read())


def poll_hwm(pid: int, hwm: list[int]) -> None:
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                hwm[0] = max(hwm[0], int(line.split()[1]))
                break
        else:
            return  # a zombie has no memory lines: it has exited
        time.sleep(0.02)


def run_inprocess(fn: Callable[[], int]) -> Run:
    """Time a function in this process (rc is its return value)."""
    busy0, cpu0, t0 = system_busy(), time.process_time(), time.perf_counter()
    rc = fn()
    wall, cpu, busy = time.perf_counter() - t0, time.process_time() - cpu0, system_busy() - busy0
    return Run(rc, wall, cpu, 0, max(0.0, busy - cpu) / wall)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Job:
    """One tool on one data set; ``verify`` checks every run's answer (a clean tree must pass)."""

    name: str
    run: Callable[[], Run]
    nbytes: int = 0  # bytes read (for MiB/s)
    files: int = 0  # files per side (tiny-file part)
    note: str = ""
    verify: Callable[[Run], str | None] | None = None  # returns an error text, or None
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    def row(self) -> dict[str, Any]:
        """Figures of the fastest round (the one least disturbed by other load), plus the median wall."""
        best = min(self.runs, key=lambda r: r.wall)
        return {"tool": self.name, "files": self.files, "bytes_read": self.nbytes, "wall_s": best.wall,
                "median_wall_s": self.median("wall"), "walls": [round(r.wall, 3) for r in self.runs],
                "mib_s": self.nbytes / MiB / best.wall if best.wall else 0.0,
                "cpu_s": min(r.cpu for r in self.runs), "bg_cores": best.bg,
                "maxrss_kib": max(r.maxrss_kib for r in self.runs), "note": self.note, **self.extra}


# ------------------------------------------------------------------------------------------- data sets


def plan_big(total: int, seed: int = 1) -> list[tuple[str, int]]:
    """A few large shards (about half the bytes; 256 MiB at 2 GiB) and many 1-16 MiB parts (not aligned)."""
    rng = random.Random(seed)
    large = min(256 * MiB, max(MiB, (total // 8) // MiB * MiB))
    n_large = max(1, (total // 2) // large)
    files = [(f"shards/shard-{i:03d}.bin", large) for i in range(n_large)]
    rest = total - n_large * large
    i = 0
    while rest > 0:
        size = min(rest, rng.randint(MiB, 16 * MiB) + rng.randint(0, 4095))
        files.append((f"parts/d{i // 32:03d}/part-{i:05d}.bin", size))
        rest -= size
        i += 1
    return files


def write_big(roots: list[Path], plan: list[tuple[str, int]]) -> None:
    pool = memoryview(POOL)
    for n, (rel, size) in enumerate(plan):
        rng = random.Random(n)
        handles = []
        for root in roots:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            handles.append(path.open("wb"))
        try:
            head = hashlib.sha256(rel.encode()).digest()[: min(size, 32)]  # unique first bytes per file
            for fh in handles:
                fh.write(head)
            written = len(head)
            while written < size:
                k = min(CHUNK, size - written)
                off = rng.randrange(0, len(POOL) - k)
                for fh in handles:
                    fh.write(pool[off: off + k])
                written += k
        finally:
            for fh in handles:
                fh.close()


def small_rel(i: int) -> str:
    return f"t{i // 10000:03d}/m{(i // 100) % 100:02d}/f{i:07d}.dat"


def write_small(roots: list[Path], start: int, stop: int) -> None:
    """Files start..stop-1 of the tiny-file tree (64-512 bytes, 100 per leaf directory)."""
    made: set[str] = set()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i in range(start, stop):
        rel = small_rel(i)
        size = 64 + (i * 2654435761) % 449
        off = (i * 7919 * 104729) % (len(POOL) - 512)
        data = POOL[off: off + size]
        parent = rel.rpartition("/")[0]
        for root in roots:
            if parent not in made:
                (root / parent).mkdir(parents=True, exist_ok=True)
            fd = os.open(root / rel, flags, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        made.add(parent)


def iter_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name != MANIFEST_NAME:
                yield Path(dirpath) / name


# -------------------------------------------------------------------------------------------- baselines


def sha256_file(path: Path, buf: bytearray) -> tuple[str, int]:
    digest = hashlib.sha256()
    view = memoryview(buf)
    total = 0
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
            total += n
    return digest.hexdigest(), total


def hashlib_check(prod: Path, copy: Path, threads: int) -> tuple[int, list[str]]:
    """Hash every file of both trees; return bytes read and the relative paths that differ or are missing."""
    rels = [p.relative_to(prod) for p in iter_files(prod)]
    copy_rels = {p.relative_to(copy) for p in iter_files(copy)}
    jobs = [prod / r for r in rels] + [copy / r for r in rels if r in copy_rels]
    if threads <= 1:
        buf = bytearray(CHUNK)  # one buffer, reused
        results = [sha256_file(p, buf) for p in jobs]
    else:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(lambda p: sha256_file(p, bytearray(CHUNK)), jobs))
    by_path = dict(zip(jobs, results, strict=True))
    bad = [str(r) for r in rels if r not in copy_rels or by_path[prod / r] != by_path[copy / r]]
    return sum(n for _, n in results), bad


def rclone_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone 1.60 fails with it set
    env["RCLONE_CONFIG"] = "/dev/null"  # no remotes needed
    return env


def rclone_check(prod: Path, copy: Path, *extra: str) -> Run:
    return run_measured(["rclone", "check", str(prod), str(copy), *extra], env=rclone_env())


# ---------------------------------------------------------------------------------------------- drwatch


def write_config(work: Path, name: str, prefix: str, hash_workers: int, manifest: Path | None = None) -> Path:
    asset: dict[str, Any] = {
        "rpo": "7d",
        "rto": "1h",
        "production": {"location": "prod", "prefix": prefix},
        "copies": [{"location": "copy", "prefix": prefix}],
        "validators": [{"kind": "replica", "schedule": {"every": "1h"}, "timeout": "6h"}],
    }
    if manifest is not None:
        asset["manifest"] = str(manifest)
    cfg = {
        "store": {"sqlite": str(work / f"state-{name}.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "logging": {"level": "warning"},
        "limits": {"hash_workers": hash_workers, "default_timeout": "6h"},
        # production + one copy is compliant here, so a clean check exits 0 and a bad copy 1 (both trees lie
        # on one disk: never off-site, whatever the declared sites say — same_failure_domain)
        "compliance": {"copies": 2, "media": 1, "offsite": 0, "immutable": 0},
        "locations": {
            "prod": {"kind": "filesystem", "path": str(work / "prod"), "site": "dc-a"},
            "copy": {"kind": "filesystem", "path": str(work / "copy"), "site": "dc-b"},
        },
        "assets": {name: asset},
    }
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def drwatch_check(cfg: Path) -> Run:
    """One ``drwatch check`` on a fresh store (a failure recorded earlier would fail later checks)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        cfg.with_name(f"state-{cfg.stem}.sqlite{suffix}").unlink(missing_ok=True)
    return run_measured(["drwatch", "check", "--config", str(cfg), "--output", "json"])


def drwatch_result(run: Run) -> dict[str, Any]:
    try:
        return dict(json.loads(run.stdout)["results"][0])
    except (ValueError, KeyError, IndexError):
        raise RuntimeError(f"drwatch check gave no result (rc {run.rc}): {run.stderr.strip()[-2000:]}") from None


def fig(res: dict[str, Any], name: str) -> float:
    """A replica figure under its current (objects_*) or earlier (files_*) name."""
    figures = res.get("figures", {})
    for key in (f"objects_{name}", f"files_{name}", name):
        if key in figures:
            return float(figures[key])
    return float("nan")


def drwatch_clean(files: int) -> Callable[[Run], str | None]:
    def verify(run: Run) -> str | None:
        res = drwatch_result(run)
        if run.rc == 0 and res["outcome"] == "ok" and fig(res, "reference") == files \
                and fig(res, "missing") == 0 and fig(res, "mismatched") == 0:
            return None
        return (f"rc {run.rc}, outcome {res['outcome']}, {fig(res, 'reference'):.0f}/{files} files, "
                f"findings {[f['code'] + ' ' + f['subject'] for f in res['findings']][:5]}")
    return verify


def rc_zero(run: Run) -> str | None:
    return None if run.rc == 0 else f"rc {run.rc}: {run.stderr.strip()[-500:]}"


# ------------------------------------------------------------------------------------------------ bench


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    failures: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    big_rows: list[dict[str, Any]] = field(default_factory=list)
    tiny_rows: list[dict[str, Any]] = field(default_factory=list)
    side_bytes: int = 0
    versions: list[str] = field(default_factory=list)  # code under test at the start and at the end

    def expect(self, ok: bool, what: str) -> None:
        self.checks.append({"check": what, "ok": ok})
        log(("ok:   " if ok else "FAIL: ") + what)
        if not ok:
            self.failures.append(what)

    def rounds(self, jobs: list[Job], repeat: int) -> None:
        """Optional warm-up round, then ``repeat`` interleaved measured rounds; every run is verified."""
        a = self.args
        warm = not a.cold and not a.quick
        for rnd in range(-1 if warm else 0, repeat):
            for job in jobs:
                if a.cold and rnd >= 0:
                    drop_caches()
                run = job.run()
                problem = job.verify(run) if job.verify else None
                label = "warm-up" if rnd < 0 else f"round {rnd + 1}/{repeat}"
                if problem is not None:
                    job.problems.append(f"{label}: {problem}")
                    log(f"  FAIL: {job.name} ({label}) on the clean data: {problem}")
                if rnd >= 0:
                    job.runs.append(run)
                rss = f", peak RSS {human(run.maxrss_kib * KiB)}" if run.maxrss_kib else ""
                log(f"  {label}: {job.name}: {run.wall:.2f}s wall, {run.cpu:.2f}s CPU, bg {run.bg:.2f}{rss}")
        for job in jobs:
            if job.verify:
                self.expect(not job.problems, f"{job.name} passes the clean data"
                            + (f": {'; '.join(job.problems)}" if job.problems else ""))

    # ---- part 1
    def throughput(self) -> None:
        a = self.args
        hw = a.hash_workers
        prod, copy = self.work / "prod" / "big", self.work / "copy" / "big"
        plan = plan_big(int(a.gb * GiB))
        self.side_bytes = side = sum(s for _, s in plan)
        both = 2 * side
        log(f"throughput: writing {len(plan)} files, {human(side)} per side ...")
        t = time.perf_counter()
        write_big([prod, copy], plan)
        log(f"  written in {time.perf_counter() - t:.1f}s")
        manifest = self.work / "big-manifest.jsonl"
        seal_cmd = ["drwatch", "seal", "--location-path", str(prod), "--out", str(manifest), "--workers", str(hw)]
        cfg_a = write_config(self.work, "big", "big", hw)
        cfg_b = write_config(self.work, "bigsealed", "big", hw, manifest=manifest)

        def hl(threads: int) -> Callable[[], Run]:
            def go() -> int:
                _n, bad = hashlib_check(prod, copy, threads)
                return 1 if bad else 0
            return lambda: run_inprocess(go)

        jobs = [
            Job("drwatch check, no manifest", lambda: drwatch_check(cfg_a), both, note="compares both sides' bytes",
                verify=drwatch_clean(len(plan))),
            # runs before the manifest check in every round, so the manifest exists when that runs
            Job("drwatch seal (production)", lambda: run_measured(seal_cmd), side, note="one side",
                verify=lambda r: rc_zero(r) or (None if manifest.is_file() else "no manifest written")),
            Job("drwatch check, manifest", lambda: drwatch_check(cfg_b), both, verify=drwatch_clean(len(plan))),
            Job("hashlib sha256, 1 thread", hl(1), both, note="baseline", verify=rc_zero),
            Job("rclone check (8 checkers)", lambda: rclone_check(prod, copy), both, note="md5, both sides",
                verify=rc_zero),
        ]
        if not a.quick:
            jobs.insert(4, Job(f"hashlib sha256, {hw} threads", hl(hw), both, note="ideal parallel hashing",
                               verify=rc_zero))
            jobs.append(Job(f"rclone check --checkers {hw}", lambda: rclone_check(prod, copy, "--checkers", str(hw)),
                            both, note="md5, both sides", verify=rc_zero))
        # rclone's own byte-for-byte mode: reads both sides and compares the bytes, as drwatch does without a seal
        jobs.append(Job("rclone check --download", lambda: rclone_check(prod, copy, "--download"), both,
                        note="bytes compared, both sides", verify=rc_zero))
        self.rounds(jobs, a.repeat)
        for job in jobs:
            if job.name.startswith("drwatch check"):
                res = drwatch_result(job.runs[0])
                job.extra["validator_s"] = min(drwatch_result(r)["duration_seconds"] for r in job.runs)
                job.extra["bytes_verified"] = res["figures"]["bytes_verified"]
                job.note = (f"validator {job.extra['validator_s']:.2f}s; "
                            f"bytes_verified {human(job.extra['bytes_verified'])}")
                if "manifest" in job.name and not job.name.endswith("no manifest") \
                        and job.extra["bytes_verified"] >= both:
                    job.note += " (production re-hashed too)"
            self.big_rows.append(job.row())

    # ---- part 2
    def tiny(self) -> None:
        a = self.args
        n = a.small_files
        steps = sorted({max(1, n // 4), n} if a.quick else {max(1, n // 4), max(1, n // 2), n})
        prod, copy = self.work / "prod" / "small", self.work / "copy" / "small"
        cfg = write_config(self.work, "small", "small", a.hash_workers)
        have = 0
        for count in steps:
            log(f"tiny files: growing both trees to {count} files ...")
            t = time.perf_counter()
            write_small([prod, copy], have, count)
            have = count
            log(f"  written in {time.perf_counter() - t:.1f}s")

            def hl() -> int:
                _n, bad = hashlib_check(prod, copy, 1)
                return 1 if bad else 0

            jobs = [
                Job("drwatch check", lambda: drwatch_check(cfg), files=count, verify=drwatch_clean(count)),
                Job("rclone check", lambda: rclone_check(prod, copy), files=count, note="8 checkers", verify=rc_zero),
                Job("rclone check --download", lambda: rclone_check(prod, copy, "--download"), files=count,
                    note="bytes compared", verify=rc_zero),
            ]
            if not a.quick:
                jobs.append(Job("hashlib, 1 thread", lambda: run_inprocess(hl), files=count, note="in-process",
                                verify=rc_zero))
            self.rounds(jobs, 1)
            for job in jobs:
                if job.name == "drwatch check":
                    job.extra["validator_s"] = drwatch_result(job.runs[0])["duration_seconds"]
                    job.note = f"validator {job.extra['validator_s']:.2f}s"
                self.tiny_rows.append(job.row())

    # ---- part 3
    def faults(self) -> None:
        """Plant one missing file and one same-size change in each copy tree; every tool must name both."""
        a = self.args
        planted: list[tuple[str, str, str]] = []  # (tree, kind, relpath)
        rng = random.Random(7)
        trees = (["big"] if not a.skip_throughput else []) + (["small"] if not a.skip_small else [])
        for tree in trees:
            root = self.work / "copy" / tree
            files = sorted(p.relative_to(root).as_posix() for p in iter_files(root))
            gone, changed = rng.sample(files, 2)
            if tree == "big":  # change the largest file, in its middle
                changed = max((f for f in files if f != gone), key=lambda f: (root / f).stat().st_size)
            (root / gone).unlink()
            path = root / changed
            size = path.stat().st_size
            with path.open("r+b") as fh:
                fh.seek(size // 2)
                old = fh.read(8)
                fh.seek(size // 2)
                fh.write(bytes(b ^ 0xFF for b in old))
            self.expect(path.stat().st_size == size, f"{tree}: the planted change keeps the size of {changed}")
            planted += [(tree, "missing", gone), (tree, "changed", changed)]
            log(f"{tree}: removed {gone}; flipped 8 bytes in the middle of {changed}")

        configs = {"big": ["big", "bigsealed"], "small": ["small"]}
        codes = {"missing": "missing_file", "changed": "content_mismatch"}
        for tree in trees:
            want = {(k, r) for t, k, r in planted if t == tree}
            for name in configs[tree]:
                run = drwatch_check(self.work / f"{name}.yaml")
                res = drwatch_result(run)
                subjects = {(f["code"], f["subject"]) for f in res["findings"]}
                named = {(k, r) for k, r in want if (codes[k], f"copy:{r}") in subjects}
                self.expect(run.rc == 1 and res["outcome"] == "failed" and named == want
                            and fig(res, "missing") == 1 and fig(res, "mismatched") == 1,
                            f"drwatch ({name}.yaml) on the faulty copy: rc {run.rc}, {res['outcome']}, "
                            f"names {sorted(f'{k} {r}' for k, r in named)}")
                self.checks[-1]["findings"] = sorted(f"{c} {s}" for c, s in subjects)
            combined = self.work / f"rclone-{tree}.txt"
            run = rclone_check(self.work / "prod" / tree, self.work / "copy" / tree, "--combined", str(combined))
            lines = combined.read_text().splitlines() if combined.exists() else []
            found = {("missing", ln[2:]) for ln in lines if ln.startswith("+ ")}  # '+': only in the source
            found |= {("changed", ln[2:]) for ln in lines if ln.startswith("* ")}  # '*': differs
            self.expect(run.rc == 1 and found == want,
                        f"rclone check on the faulty {tree} copy: rc {run.rc}, "
                        f"reports {sorted(f'{k} {r}' for k, r in found)}")

    # ---- output
    def report(self) -> None:
        a = self.args
        cache = ("cold (page cache dropped before each measured run)" if a.cold else
                 "warm (data just written, no warm-up round)" if a.quick else
                 "warm (one unmeasured warm-up round first)")
        print()
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {rclone_version()}; "
              f"hash_workers={a.hash_workers}; page cache {cache}")
        print(f"code: {self.versions[0]}" + (f" (at the end: {self.versions[-1]})"
                                              if self.versions[-1] != self.versions[0] else ""))
        if self.big_rows:
            print(f"\nthroughput: {human(self.side_bytes)} per side; best (fastest) and median of {a.repeat} "
                  "interleaved round(s); MiB/s = bytes read / best wall")
            base = next((r for r in self.big_rows if r["tool"].startswith("hashlib sha256, 1 thread")), None)
            rcl = next((r for r in self.big_rows if r["tool"].startswith("rclone check (8")), None)
            print(f"{'tool':30} {'best s':>7} {'median':>7} {'MiB/s':>6} {'/hashlib':>8} {'/rclone':>7} {'CPU s':>6} "
                  f"{'bg':>4} {'peak RSS':>9}  note")
            for r in self.big_rows:
                rss = human(r["maxrss_kib"] * KiB) if r["maxrss_kib"] else "-"
                print(f"{r['tool']:30} {r['wall_s']:7.2f} {r['median_wall_s']:7.2f} {r['mib_s']:6.0f} "
                      f"{ratio(r, base):>8} {ratio(r, rcl):>7} {r['cpu_s']:6.1f} {r['bg_cores']:4.1f} {rss:>9}  "
                      f"{r['note']}")
            print("/hashlib, /rclone: throughput relative to 'hashlib sha256, 1 thread' and 'rclone check (8 "
                  "checkers)' (>1 = faster); CPU s: least of the rounds; bg: CPU cores busy outside the measured "
                  "process during the best round")
        if self.tiny_rows:
            print("\ntiny files (64-512 B, 100 per directory), N files per side; one measured run each")
            print(f"{'files':>7} {'tool':18} {'wall s':>7} {'files/s':>8} {'CPU s':>6} {'bg':>4} {'peak RSS':>9}  note")
            for r in self.tiny_rows:
                rss = human(r["maxrss_kib"] * KiB) if r["maxrss_kib"] else "-"
                print(f"{r['files']:>7} {r['tool']:18} {r['wall_s']:7.2f} {r['files'] / r['wall_s']:8.0f} "
                      f"{r['cpu_s']:6.1f} {r['bg_cores']:4.1f} {rss:>9}  {r['note']}")
            for tool in ("drwatch check", "rclone check"):
                pts = [r for r in self.tiny_rows if r["tool"] == tool]
                if len(pts) >= 2 and pts[-1]["files"] > pts[0]["files"]:
                    d = (pts[-1]["maxrss_kib"] - pts[0]["maxrss_kib"]) / (pts[-1]["files"] - pts[0]["files"])
                    print(f"  {tool}: peak RSS {human(pts[0]['maxrss_kib'] * KiB)} -> "
                          f"{human(pts[-1]['maxrss_kib'] * KiB)} ({d * 1000:+.1f} KiB per 1000 files)")
        print("\ncorrectness:")
        for c in self.checks:
            print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}")
        print(f"\n{'ALL CHECKS PASSED' if not self.failures else f'{len(self.failures)} CHECK(S) FAILED'}")


def ratio(row: dict[str, Any], ref: dict[str, Any] | None) -> str:
    return f"{row['mib_s'] / ref['mib_s']:.2f}" if ref and ref["mib_s"] else "-"


def rclone_version() -> str:
    try:
        out = subprocess.run(["rclone", "version"], capture_output=True, text=True, env=rclone_env(), check=False)
        return out.stdout.split("\n", 1)[0].strip()
    except OSError:
        return "rclone ?"


def code_version() -> str:
    """The drwatch under test: its git commit, and whether daemon/ has uncommitted changes."""
    try:
        import drwatch

        repo = Path(drwatch.__file__).resolve().parents[2]
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "daemon"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"drwatch {drwatch.__version__} @ {head}{' + uncommitted changes in daemon/' if dirty else ''}"
    except (ImportError, OSError, subprocess.CalledProcessError, AttributeError, IndexError):
        return "drwatch (version unknown)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--gb", type=float, default=2.0, help="GiB per side for the throughput test (default 2)")
    p.add_argument("--small-files", type=int, default=200_000, help="tiny files per side, last step (200000)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the scratch directory is made (default: the temp dir, /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 0.2 GiB, 10000 files, 1 round, no warm-up, fewer baselines (< 1 min)")
    p.add_argument("--hash-workers", type=int, default=os.cpu_count() or 2,
                   help="drwatch limits.hash_workers, seal --workers, baseline threads (default: CPU cores)")
    p.add_argument("--repeat", type=int, default=3,
                   help="measured throughput rounds; the best and the median are shown (3)")
    p.add_argument("--cold", action="store_true", help="drop the page cache before each measured run (root)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-small", action="store_true")
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.gb, a.small_files, a.repeat = 0.2, 10_000, 1
    a.repeat = max(1, a.repeat)
    for tool in ("drwatch", "rclone"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not on PATH")
    if a.cold and (os.geteuid() != 0 or not os.access("/proc/sys/vm/drop_caches", os.W_OK)):
        p.error("--cold needs root (it writes /proc/sys/vm/drop_caches)")
    a.workdir.mkdir(parents=True, exist_ok=True)
    need = (0 if a.skip_throughput else 2 * a.gb * GiB) + (0 if a.skip_small else 2 * a.small_files * 8 * KiB)
    free = shutil.disk_usage(a.workdir).free
    if need * 1.1 > free:
        p.error(f"{a.workdir} has {human(free)} free; this run needs about {human(need)}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the scratch directory on kill
    work = Path(tempfile.mkdtemp(prefix="drwatch-bench-", dir=a.workdir))
    log(f"scratch directory {work}{' (kept)' if a.keep else ''}")
    bench = Bench(a, work)
    bench.versions.append(code_version())
    started = time.perf_counter()
    try:
        try:
            if not a.skip_throughput:
                bench.throughput()
            if not a.skip_small:
                bench.tiny()
            bench.faults()
        except RuntimeError as exc:
            bench.expect(False, str(exc))
        bench.versions.append(code_version())
        bench.report()
        print(f"total benchmark time {time.perf_counter() - started:.0f}s (before cleanup)", flush=True)
        if a.json:
            raw = {"args": {k: str(v) for k, v in vars(a).items()}, "cores": os.cpu_count(), "code": bench.versions,
                   "throughput": bench.big_rows, "tiny_files": bench.tiny_rows, "checks": bench.checks,
                   "failures": bench.failures}
            a.json.write_text(json.dumps(raw, indent=2))
    finally:
        if not a.keep:
            log(f"removing {work} ...")
            shutil.rmtree(work, ignore_errors=True)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
