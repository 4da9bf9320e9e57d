"""A sealed filesystem production checked again while unchanged: hashed in full vs proven by stat.

    python benchmarks/unchanged_bench.py [--mib 512] [--files 8] [--tiny 10000] [--workdir DIR] [--keep]

Builds production (``--files`` files of ``--mib``/``--files`` MiB, incompressible, plus ``--tiny`` files of
64-512 B) and one copy of it, seals production (``drwatch seal``), then runs ``drwatch check`` (replica
validator) three times on one store: the first run hashes every production file (nothing is in the ledger
yet), the next two find them unchanged by stat (size, mtime, inode, ctime) and hash only the copy. The same
three checks with ``production_reread: null`` (hash production every run, the behaviour before) run on a
second store as the baseline, interleaved. Prints wall and CPU seconds of each ``drwatch check`` process and
the production evidence it reported; exits 1 if any check is not ``ok`` or the evidence is not as expected.
Page cache warm (the data was just written and read).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def build(root: Path, mib: int, files: int, tiny: int) -> None:
    rng = random.Random(11)
    pool = os.urandom(16 * 2**20)
    size = mib * 2**20 // max(1, files)
    for i in range(files):
        out = root / "big" / f"shard-{i:03d}.bin"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as fh:
            fh.write(os.urandom(32))
            left = size - 32
            while left > 0:
                n = min(left, 2**20)
                at = rng.randrange(0, len(pool) - n)
                fh.write(pool[at:at + n])
                left -= n
    for i in range(tiny):
        out = root / "tiny" / f"d{i // 100:04d}" / f"f{i:06d}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(os.urandom(rng.randrange(64, 513)))


def config(work: Path, name: str, reread: str | None) -> Path:
    cfg: dict[str, Any] = {
        "store": {"sqlite": str(work / f"state-{name}.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "logging": {"level": "warning"},
        "limits": {"hash_workers": os.cpu_count() or 2, "default_timeout": "6h"},
        "compliance": {"copies": 2, "media": 1, "offsite": 0, "immutable": 0},
        "locations": {
            "prod": {"kind": "filesystem", "path": str(work / "prod"), "site": "dc-a"},
            "copy": {"kind": "filesystem", "path": str(work / "copy"), "site": "dc-b"},
        },
        "assets": {"data": {
            "rpo": "3650d", "rto": "1h",
            "production": {"location": "prod", "prefix": "data"},
            "copies": [{"location": "copy", "prefix": "data"}],
            "validators": [{"kind": "replica", "schedule": {"every": "1h"}, "timeout": "6h",
                            "production_reread": reread}],
        }},
    }
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def check(cfg: Path) -> tuple[float, float, dict[str, Any]]:
    """Wall and CPU seconds of one ``drwatch check`` and its result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "drwatch", "check", "--config", str(cfg), "--output", "json"],
                         capture_output=True, text=True, timeout=3600, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    try:
        result = dict(json.loads(out.stdout)["results"][0])
    except (ValueError, KeyError, IndexError):
        print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
        raise
    return wall, cpu, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--tiny", type=int, default=10000)
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="drwatch-unchanged-", dir=args.workdir))
    ok = True
    try:
        build(work / "prod" / "data", args.mib, args.files, args.tiny)
        shutil.copytree(work / "prod" / "data", work / "copy" / "data")
        seal = subprocess.run([sys.executable, "-m", "drwatch", "seal", "--location-path", str(work / "prod" / "data"),
                               "--out", str(work / "prod" / "data" / ".drwatch-manifest.jsonl")],
                              capture_output=True, text=True, timeout=3600, check=False)
        if seal.returncode != 0:
            print(seal.stderr, file=sys.stderr)
            return 1
        n = args.files + args.tiny
        stat_cfg, full_cfg = config(work, "stat", "7d"), config(work, "full", None)
        print(f"{n} files, {args.mib} MiB + {args.tiny} tiny per side; CPU {os.cpu_count()} cores")
        print("run | production_reread | wall s | CPU s | production evidence")
        for i in range(3):
            for label, cfg in (("7d (stat)", stat_cfg), ("null (hash)", full_cfg)):
                wall, cpu, res = check(cfg)
                prod = next(c for c in res["copies"] if c["copy"] == "production")
                evidence = prod.get("evidence", {})
                want = {"read": n} if i == 0 or cfg is full_cfg else {"unchanged": n}
                good = res["outcome"] == "ok" and evidence == want
                ok = ok and good
                print(f"{i + 1} | {label} | {wall:.2f} | {cpu:.2f} | {evidence}{'' if good else '  <-- UNEXPECTED'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
