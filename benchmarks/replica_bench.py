#!/usr/bin/env python3
"""Benchmark drwatch's ``replica`` validator against plain hashlib and ``rclone check``, on the same data.

Usage::

    python benchmarks/replica_bench.py [--gb 2] [--small-files 200000] [--workdir DIR] [--keep]
    python benchmarks/replica_bench.py --quick          # ~200 MiB and 20k files, < 1 min (smoke test)

Part 1, throughput: a production tree and one copy (``--gb`` GiB each; a few large shards plus many
1-16 MiB parts, incompressible content), checked by

  (a) ``drwatch check`` with a replica validator and no manifest (hashes production and copy),
  (b) the same with a manifest written by ``drwatch seal`` (seal timed separately),
  (c) plain hashlib sha256 over both trees, one thread, 1 MiB chunks (the baseline), plus the same
      with ``hash_workers`` threads (what perfect parallel hashing would give),
  (d) ``rclone check PROD COPY`` (local: sizes and md5 of both sides), default and ``--checkers N``.

Part 2, memory: trees of tiny files (64-512 bytes), grown in steps (N/4, N/2, N files per side);
peak RSS (``wait4`` rusage of the child) and wall time of ``drwatch check`` and ``rclone check``.

Part 3, correctness: faults planted in the copies (one file deleted, one changed without changing its
size, in each tree); drwatch (with and without manifest) must exit 1 and name both, and rclone must
report both. The script exits 1 if any check, clean or faulty, gives the wrong answer.

Page cache: by default every measurement is preceded by one unmeasured run of the same command
(``warm``); ``--cold`` instead drops the page cache (root only) before each measured run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
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


# --------------------------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Run:
    rc: int
    wall: float
    maxrss_kib: int
    stdout: str
    stderr: str


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run a command; wall time and the child's own peak RSS (wait4 rusage, KiB on Linux)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, wall, usage.ru_maxrss, out.read(), err.read())


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Measure:
    """Runs a measurement the configured way (warm-up run or dropped cache first, median of repeats)."""

    cold: bool
    repeat: int

    def __call__(self, fn: Callable[[], Run]) -> tuple[Run, list[float]]:
        if not self.cold:
            fn()  # warm the page cache (and the interpreter's file caches); not measured
        runs: list[Run] = []
        for _ in range(self.repeat):
            if self.cold:
                drop_caches()
            runs.append(fn())
        walls = [r.wall for r in runs]
        med = statistics.median(walls)
        best = min(runs, key=lambda r: abs(r.wall - med))
        return Run(best.rc, med, max(r.maxrss_kib for r in runs), best.stdout, best.stderr), walls


def mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds if seconds > 0 else float("inf")


def human(nbytes: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes:.0f} B"


# ------------------------------------------------------------------------------------------- data sets


def plan_big(total: int, seed: int = 1) -> list[tuple[str, int]]:
    """A few large shards (about half the bytes) and many 1-16 MiB parts (not MiB-aligned)."""
    rng = random.Random(seed)
    large = min(256 * MiB, max(MiB, (total // 4) // MiB * MiB))
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
            head = hashlib.sha256(rel.encode()).digest()  # unique first bytes per file
            for fh in handles:
                fh.write(head[: min(size, len(head))])
            written = min(size, len(head))
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


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
            total += n
    return digest.hexdigest(), total


def hashlib_check(prod: Path, copy: Path, threads: int) -> tuple[int, list[str]]:
    """Hash every file of both trees; return bytes read and the relative paths that differ/are missing."""
    rels = [p.relative_to(prod) for p in iter_files(prod)]
    copy_rels = {p.relative_to(copy) for p in iter_files(copy)}
    jobs = [prod / r for r in rels] + [copy / r for r in rels if r in copy_rels]
    if threads <= 1:
        results = [sha256_file(p) for p in jobs]
    else:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(sha256_file, jobs))
    by_path = dict(zip(jobs, results, strict=True))
    bad = [str(r) for r in rels if r not in copy_rels or by_path[prod / r] != by_path[copy / r]]
    return sum(n for _, n in results), bad


def rclone_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone 1.60 breaks with it set
    env["RCLONE_CONFIG"] = "/dev/null"  # no remotes needed; silences the "config not found" notice
    return env


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
        # one production + one off-site copy is compliant here, so a clean check exits 0
        "compliance": {"copies": 2, "media": 1, "offsite": 1, "immutable": 0},
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
    """One ``drwatch check`` from a fresh store (a failure recorded earlier would fail later checks)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(cfg.with_name("state-" + cfg.stem + ".sqlite")) + suffix).unlink(missing_ok=True)
    return run_measured(["drwatch", "check", "--config", str(cfg), "--output", "json"])


def drwatch_result(run: Run) -> dict[str, Any]:
    try:
        return dict(json.loads(run.stdout)["results"][0])
    except (ValueError, KeyError, IndexError):
        raise RuntimeError(f"drwatch check gave no result (rc {run.rc}): {run.stderr.strip()[-2000:]}") from None


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    measure: Measure
    failures: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    mem_rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> None:
        self.checks.append({"check": what, "ok": ok})
        log(("ok:   " if ok else "FAIL: ") + what)
        if not ok:
            self.failures.append(what)

    # ---- part 1
    def throughput(self) -> None:
        a = self.args
        hw = a.hash_workers
        prod, copy = self.work / "prod" / "big", self.work / "copy" / "big"
        plan = plan_big(int(a.gb * GiB))
        side = sum(s for _, s in plan)
        both = 2 * side
        log(f"writing {len(plan)} files, {human(side)} per side ...")
        t = time.perf_counter()
        write_big([prod, copy], plan)
        log(f"  written in {time.perf_counter() - t:.1f}s")

        def row(tool: str, run: Run, walls: list[float], nbytes: int, note: str = "") -> dict[str, Any]:
            r = {"tool": tool, "wall_s": run.wall, "walls": walls, "bytes_read": nbytes,
                 "mib_s": mib_s(nbytes, run.wall), "maxrss_kib": run.maxrss_kib, "note": note}
            self.rows.append(r)
            log(f"  {tool}: {run.wall:.2f}s {r['mib_s']:.0f} MiB/s")
            return r

        # (a) drwatch, no manifest
        cfg_a = write_config(self.work, "big", "big", hw)
        log("(a) drwatch check, no manifest ...")
        run, walls = self.measure(lambda: drwatch_check(cfg_a))
        res = drwatch_result(run)
        fig = res["figures"]
        self.expect(run.rc == 0 and res["outcome"] == "ok" and fig["files_reference"] == len(plan)
                    and fig["files_missing"] == 0 and fig["files_mismatched"] == 0,
                    f"drwatch (no manifest) passes the clean copy: rc {run.rc}, {res['outcome']}, "
                    f"{fig['files_reference']:.0f}/{len(plan)} files")
        r = row("drwatch check (no manifest)", run, walls, both,
                f"validator {res['duration_seconds']:.2f}s; bytes_verified {human(fig['bytes_verified'])}")
        r["validator_s"] = res["duration_seconds"]

        # (b) seal, then drwatch with the manifest
        manifest = self.work / "big-manifest.jsonl"
        log("(b) drwatch seal ...")
        run, walls = self.measure(lambda: run_measured(
            ["drwatch", "seal", "--location-path", str(prod), "--out", str(manifest), "--workers", str(hw)]))
        self.expect(run.rc == 0 and manifest.is_file(), f"drwatch seal succeeds (rc {run.rc})")
        row("drwatch seal (production)", run, walls, side, "one side; hashes production once")
        cfg_b = write_config(self.work, "bigsealed", "big", hw, manifest=manifest)
        log("(b) drwatch check, with manifest ...")
        run, walls = self.measure(lambda: drwatch_check(cfg_b))
        res = drwatch_result(run)
        fig = res["figures"]
        self.expect(run.rc == 0 and res["outcome"] == "ok" and fig["files_reference"] == len(plan),
                    f"drwatch (manifest) passes the clean copy: rc {run.rc}, {res['outcome']}")
        read_b = int(fig["bytes_verified"])
        r = row("drwatch check (manifest)", run, walls, read_b,
                f"validator {res['duration_seconds']:.2f}s; bytes_verified {human(read_b)}"
                + (" (production re-hashed too)" if read_b >= both else ""))
        r["validator_s"] = res["duration_seconds"]

        # (c) hashlib
        for threads in sorted({1, hw}):
            log(f"(c) hashlib sha256, {threads} thread(s) ...")
            bad: list[str] = []

            def hl(threads: int = threads, bad: list[str] = bad) -> Run:
                t0 = time.perf_counter()
                _n, found = hashlib_check(prod, copy, threads)
                bad[:] = found
                return Run(0, time.perf_counter() - t0, 0, "", "")

            run, walls = self.measure(hl)
            self.expect(not bad, f"hashlib ({threads} thread(s)) finds the clean copy identical")
            row(f"hashlib sha256, {threads} thread{'s' if threads > 1 else ''}", run, walls, both,
                "baseline" if threads == 1 else "ideal parallel hashing")

        # (d) rclone
        for extra in ([], ["--checkers", str(hw)]):
            tool = "rclone check" + (f" --checkers {hw}" if extra else " (8 checkers)")
            log(f"(d) {tool} ...")
            cmd = ["rclone", "check", str(prod), str(copy), *extra]
            run, walls = self.measure(lambda cmd=cmd: run_measured(cmd, env=rclone_env()))
            self.expect(run.rc == 0, f"{tool} finds the clean copy identical (rc {run.rc})")
            row(tool, run, walls, both, "md5 both sides")

    # ---- part 2
    def memory(self) -> None:
        a = self.args
        n = a.small_files
        steps = sorted({max(1, n // 4), max(1, n // 2), n})
        prod, copy = self.work / "prod" / "small", self.work / "copy" / "small"
        cfg = write_config(self.work, "small", "small", a.hash_workers)
        have = 0
        for count in steps:
            log(f"tiny files: growing the trees to {count} files per side ...")
            t = time.perf_counter()
            write_small([prod, copy], have, count)
            have = count
            log(f"  written in {time.perf_counter() - t:.1f}s")
            run, walls = self.measure(lambda: drwatch_check(cfg))
            res = drwatch_result(run)
            fig = res["figures"]
            self.expect(run.rc == 0 and res["outcome"] == "ok" and fig["files_reference"] == count,
                        f"drwatch passes {count} tiny files: rc {run.rc}, {res['outcome']}, "
                        f"{fig['files_reference']:.0f} files")
            self.mem_rows.append({"files": count, "tool": "drwatch check", "wall_s": run.wall, "walls": walls,
                                  "validator_s": res["duration_seconds"], "maxrss_kib": run.maxrss_kib})
            log(f"  drwatch: {run.wall:.2f}s, peak RSS {human(run.maxrss_kib * KiB)}")
            cmd = ["rclone", "check", str(prod), str(copy)]
            run, walls = self.measure(lambda cmd=cmd: run_measured(cmd, env=rclone_env()))
            self.expect(run.rc == 0, f"rclone passes {count} tiny files (rc {run.rc})")
            self.mem_rows.append({"files": count, "tool": "rclone check", "wall_s": run.wall, "walls": walls,
                                  "maxrss_kib": run.maxrss_kib})
            log(f"  rclone:  {run.wall:.2f}s, peak RSS {human(run.maxrss_kib * KiB)}")

    # ---- part 3
    def faults(self) -> None:
        """Plant one missing file and one same-size change in each copy tree; every tool must name them."""
        a = self.args
        planted: list[tuple[str, str, str]] = []  # (tree, kind, relpath)
        rng = random.Random(7)
        for tree in (["big"] if not a.skip_throughput else []) + (["small"] if not a.skip_small else []):
            root = self.work / "copy" / tree
            files = sorted(str(p.relative_to(root)) for p in iter_files(root))
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
            self.expect(path.stat().st_size == size, f"{tree}: planted change keeps the size of {changed}")
            planted += [(tree, "missing", gone), (tree, "changed", changed)]
            log(f"{tree}: removed {gone}; changed 8 bytes in the middle of {changed}")

        configs = {"big": [self.work / "big.yaml", self.work / "bigsealed.yaml"], "small": [self.work / "small.yaml"]}
        for tree in sorted({t for t, _, _ in planted}):
            want = {(k, r) for t, k, r in planted if t == tree}
            for cfg in configs[tree]:
                run = drwatch_check(cfg)
                res = drwatch_result(run)
                subjects = {(f["code"], f["subject"]) for f in res["findings"]}
                code_of = {"missing": "missing_file", "changed": "content_mismatch"}
                named = {(k, r) for k, r in want if (code_of[k], f"copy:{r}") in subjects}
                fig = res["figures"]
                self.expect(run.rc == 1 and res["outcome"] == "failed" and named == want
                            and fig["files_missing"] == 1 and fig["files_mismatched"] == 1,
                            f"drwatch {cfg.stem} on the faulty copy: rc {run.rc}, {res['outcome']}, "
                            f"names {sorted(r for _, r in named)} of {sorted(r for _, r in want)}")
                self.checks[-1]["findings"] = sorted(f"{c} {s}" for c, s in subjects)
            combined = self.work / f"rclone-{tree}.txt"
            run = run_measured(["rclone", "check", str(self.work / "prod" / tree), str(self.work / "copy" / tree),
                                "--combined", str(combined)], env=rclone_env())
            lines = combined.read_text().splitlines() if combined.exists() else []
            found = {("missing", ln[2:]) for ln in lines if ln.startswith("- ")}
            found |= {("changed", ln[2:]) for ln in lines if ln.startswith("* ")}
            self.expect(run.rc == 1 and found == want,
                        f"rclone on the faulty {tree} copy: rc {run.rc}, reports {sorted(found)}")

    # ---- output
    def print_report(self) -> None:
        a = self.args
        print()
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, hash_workers={a.hash_workers}, "
              f"page cache {'cold (dropped before each run)' if a.cold else 'warm (one unmeasured run first)'}, "
              f"median of {a.repeat} run(s)")
        if self.rows:
            side = next(r["bytes_read"] for r in self.rows if r["tool"].startswith("drwatch seal"))
            print(f"\nthroughput: {human(side)} per side; MiB/s = bytes read (both sides unless noted) / wall time")
            base = next(r for r in self.rows if r["tool"].startswith("hashlib sha256, 1 thread"))
            rcl = next(r for r in self.rows if r["tool"].startswith("rclone check (8"))
            print(f"{'tool':34} {'wall s':>8} {'MiB/s':>7} {'x hashlib':>9} {'x rclone':>8} {'peak RSS':>10}  note")
            for r in self.rows:
                rss = human(r["maxrss_kib"] * KiB) if r["maxrss_kib"] else "-"
                print(f"{r['tool']:34} {r['wall_s']:8.2f} {r['mib_s']:7.0f} {r['mib_s'] / base['mib_s']:9.2f} "
                      f"{r['mib_s'] / rcl['mib_s']:8.2f} {rss:>10}  {r['note']}")
            print("(x hashlib / x rclone: throughput relative to the single-thread hashlib and default rclone rows;"
                  " >1 is faster)")
        if self.mem_rows:
            print("\ntiny files (64-512 B, nested tree), files per side; peak RSS of the child process")
            print(f"{'files':>8} {'tool':14} {'wall s':>8} {'files/s':>9} {'peak RSS':>10}  note")
            for r in self.mem_rows:
                note = f"validator {r['validator_s']:.2f}s" if "validator_s" in r else ""
                print(f"{r['files']:>8} {r['tool']:14} {r['wall_s']:8.2f} {r['files'] / r['wall_s']:9.0f} "
                      f"{human(r['maxrss_kib'] * KiB):>10}  {note}")
            for tool in ("drwatch check", "rclone check"):
                pts = [r for r in self.mem_rows if r["tool"] == tool]
                if len(pts) >= 2 and pts[-1]["files"] > pts[0]["files"]:
                    slope = (pts[-1]["maxrss_kib"] - pts[0]["maxrss_kib"]) / (pts[-1]["files"] - pts[0]["files"])
                    print(f"  {tool}: peak RSS grows {slope * 1000:.0f} KiB per 1000 files "
                          f"({pts[0]['files']} -> {pts[-1]['files']})")
        print("\ncorrectness:")
        for c in self.checks:
            print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}")
        print(f"\n{'ALL CHECKS PASSED' if not self.failures else f'{len(self.failures)} CHECK(S) FAILED'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=2.0, help="GiB per side for the throughput test (default 2)")
    p.add_argument("--small-files", type=int, default=200_000, help="tiny files per side, largest step (200000)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                   help="parent of the scratch directory (default: the temp dir, /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--quick", action="store_true", help="smoke test: 0.2 GiB and 20000 files (< 1 min)")
    p.add_argument("--hash-workers", type=int, default=os.cpu_count() or 2,
                   help="drwatch limits.hash_workers / seal --workers (default: CPU cores)")
    p.add_argument("--repeat", type=int, default=1, help="measured runs per tool; the median is shown")
    p.add_argument("--cold", action="store_true", help="drop the page cache before each measured run (root)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-small", action="store_true")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    a = p.parse_args(argv)
    if a.quick:
        a.gb, a.small_files = 0.2, 20_000
    for tool in ("drwatch", "rclone"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not on PATH")
    if a.cold and (os.geteuid() != 0 or not os.access("/proc/sys/vm/drop_caches", os.W_OK)):
        p.error("--cold needs root (writes /proc/sys/vm/drop_caches)")
    a.workdir.mkdir(parents=True, exist_ok=True)
    need = (0 if a.skip_throughput else 2 * a.gb * GiB) + (0 if a.skip_small else 2 * a.small_files * 8 * KiB)
    free = shutil.disk_usage(a.workdir).free
    if need * 1.1 > free:
        p.error(f"{a.workdir} has {human(free)} free; this run needs about {human(need)}")

    work = Path(tempfile.mkdtemp(prefix="drwatch-bench-", dir=a.workdir))
    log(f"scratch directory {work}{' (kept)' if a.keep else ''}")
    bench = Bench(a, work, Measure(a.cold, max(1, a.repeat)))
    started = time.perf_counter()
    try:
        if not a.skip_throughput:
            bench.throughput()
        if not a.skip_small:
            bench.memory()
        bench.faults()
    except RuntimeError as exc:
        bench.failures.append(str(exc))
        log(f"FAIL: {exc}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    bench.print_report()
    print(f"total benchmark time {time.perf_counter() - started:.0f}s")
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "cores": os.cpu_count(),
                                      "throughput": bench.rows, "tiny_files": bench.mem_rows,
                                      "checks": bench.checks, "failures": bench.failures}, indent=2))
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
