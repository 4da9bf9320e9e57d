#!/usr/bin/env python3
"""Model-weight verification throughput of the ``model_weights`` validator, as a ratio to plain hashlib.

Usage::

    python benchmarks/model_weights_bench.py [--shards 4] [--shard-mib 256] [--copies 2] [--rounds 3]
    python benchmarks/model_weights_bench.py --quick     # 2 x 64 MiB shards, 1 copy, 1 round

A synthetic sharded model (``--shards`` safetensors files of ``--shard-mib`` MiB each, F32 tensors of
random bytes, a ``model.safetensors.index.json``, config and tokenizer files) is written as production,
sealed (``seal_directory``, as ``drwatch seal``) and copied ``--copies`` times. Then, in one process and
with the page cache warm (one unmeasured read of every file first), rounds interleave:

  (a) the ``model_weights`` validator through a real Runner (no inference): listing, structural check of
      every shard header and index, sha256 of every file of production and each copy against the seal,
      with ``limits.hash_workers`` threads;
  (b) plain hashlib sha256 over the same files, one thread, 1 MiB chunks (the single-core limit);
  (c) the same with ``hash_workers`` threads (what perfectly parallel hashing gives on this machine).

It prints the fastest round of each (the least disturbed by other load on a shared machine) and the
ratios drwatch / (b) and drwatch / (c) of bytes per second; drwatch's bytes are its ``bytes_hashed``
figure and must equal the bytes hashlib read. It also times the structural check alone (headers only) and
exits 1 when the validator's outcome is not ``ok`` or the byte counts disagree.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from drwatch.config.model import parse_config
from drwatch.core import logs
from drwatch.core.sandbox import SandboxManager
from drwatch.engine.runner import AppState, Runner
from drwatch.formats import safetensors as st
from drwatch.formats.sealing import seal_directory
from drwatch.metrics.collector import ProcessState
from drwatch.state.snapshot import Snapshot
from drwatch.storage.filesystem import MANIFEST_NAME
from drwatch.store import open_store

MiB = 1024 * 1024


def write_model(root: Path, shards: int, shard_mib: int) -> None:
    root.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    tensor_bytes = 16 * MiB
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        count = max(1, shard_mib * MiB // tensor_bytes)
        tensors = [(f"layers.{s}.{t}.weight", "F32", [tensor_bytes // 4 // 1024, 1024], t * tensor_bytes,
                    (t + 1) * tensor_bytes) for t in range(count)]
        with (root / name).open("wb") as fh:
            fh.write(st.encode(tensors, {"format": "pt"}))
            for _ in range(count):
                fh.write(os.urandom(tensor_bytes))
        weight_map.update({t[0]: name for t in tensors})
    (root / st.INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({"architectures": ["Bench"], "hidden_size": 1024}))
    (root / "tokenizer.json").write_bytes(os.urandom(2 * MiB))


def files_of(roots: list[Path]) -> list[Path]:
    return [p for r in roots for p in sorted(r.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME]


def hash_one(path: Path) -> int:
    h = hashlib.sha256()
    n = 0
    buf = bytearray(MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while k := fh.readinto(buf):
            h.update(view[:k])
            n += k
    return n


def hashlib_pass(paths: list[Path], threads: int) -> tuple[float, int]:
    started = time.perf_counter()
    if threads == 1:
        total = sum(hash_one(p) for p in paths)
    else:
        with ThreadPoolExecutor(threads) as pool:
            total = sum(pool.map(hash_one, paths))
    return time.perf_counter() - started, total


async def drwatch_pass(work: Path, copies: int, workers: int) -> tuple[float, dict[str, float], str]:
    cfg_dict: dict[str, Any] = {
        "store": {"sqlite": str(work / "state.sqlite")},
        "limits": {"hash_workers": workers, "sandbox_dir": str(work / "sbx")},
        "locations": {"prod": {"kind": "filesystem", "path": str(work / "prod"), "site": "a"},
                      **{f"c{i}": {"kind": "filesystem", "path": str(work / f"c{i}"), "site": f"s{i}"}
                         for i in range(copies)}},
        "assets": {"m": {"rpo": "7d", "production": {"location": "prod", "prefix": "model"},
                         "copies": [{"location": f"c{i}", "prefix": "model"} for i in range(copies)],
                         "validators": [{"kind": "model_weights"}]}},
    }
    cfg = parse_config(yaml.safe_dump(cfg_dict), source=str(work / "bench.yaml"))
    store = open_store(cfg)
    await store.open()
    try:
        state = AppState(cfg, Snapshot.from_state(cfg, await store.load_state()), ProcessState(time.time()))
        runner = Runner(state, store, SandboxManager(work / "sbx"))
        try:
            started = time.perf_counter()
            result = await runner.execute("m", cfg.assets["m"].validators[0])
            wall = time.perf_counter() - started
        finally:
            await runner.aclose()
    finally:
        await store.close()
    return wall, dict(result.figures), result.outcome.value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-mib", type=int, default=256)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="limits.hash_workers (and hashlib threads in (c))")
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.shards, args.shard_mib, args.copies, args.rounds = 2, 64, 1, 1
    logs.configure("warning", "console")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="drwatch-mwbench-"))
    try:
        prod = work / "prod" / "model"
        t0 = time.perf_counter()
        write_model(prod, args.shards, args.shard_mib)
        header = asyncio.run(seal_directory(prod, out_path=prod / MANIFEST_NAME, workers=args.workers))
        for i in range(args.copies):
            shutil.copytree(prod, work / f"c{i}" / "model")
        print(f"model: {header.files} files, {header.bytes / MiB:.0f} MiB; production + {args.copies} copies "
              f"({(1 + args.copies) * header.bytes / MiB:.0f} MiB to verify); setup {time.perf_counter() - t0:.1f}s")
        paths = files_of([prod] + [work / f"c{i}" / "model" for i in range(args.copies)])
        hashlib_pass(paths, args.workers)  # warm the page cache (unmeasured)

        started = time.perf_counter()
        layouts = [st.check_file(p) for p in paths if p.name.endswith(".safetensors")]
        structure_s = time.perf_counter() - started
        assert all(layout.ok for layout in layouts)

        rows: dict[str, list[tuple[float, int]]] = {"drwatch": [], "hashlib1": [], "hashlibN": []}
        outcome, figures = "", {}
        for _ in range(args.rounds):
            wall, figures, outcome = asyncio.run(drwatch_pass(work, args.copies, args.workers))
            rows["drwatch"].append((wall, int(figures["bytes_hashed"])))
            rows["hashlib1"].append(hashlib_pass(paths, 1))
            rows["hashlibN"].append(hashlib_pass(paths, args.workers))
        best = {k: min(v) for k, v in rows.items()}
        rate = {k: b / s / MiB for k, (s, b) in best.items()}
        print(f"\n{'run':<34} {'best s':>8} {'MiB/s':>8}   (rounds: {args.rounds}, hash_workers {args.workers})")
        labels = {"drwatch": "model_weights validator (wall)", "hashlib1": "hashlib sha256, 1 thread",
                  "hashlibN": f"hashlib sha256, {args.workers} threads"}
        for k, label in labels.items():
            print(f"{label:<34} {best[k][0]:>8.2f} {rate[k]:>8.0f}")
        hash_rate = figures["bytes_hashed"] / figures["hash_seconds"] / MiB
        print(f"validator hash phase (hash_seconds)  {figures['hash_seconds']:>6.2f} {hash_rate:>8.0f}")
        print(f"structural check of {len(layouts)} shard headers: {structure_s * 1000:.1f} ms")
        ratio1, ratioN = rate["drwatch"] / rate["hashlib1"], rate["drwatch"] / rate["hashlibN"]
        print(f"\nratio drwatch / hashlib 1 thread: {ratio1:.2f}   drwatch / hashlib {args.workers} threads: "
              f"{ratioN:.2f}   (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        ok = outcome == "ok" and best["drwatch"][1] == best["hashlib1"][1]
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "rate_mib_s": rate, "ratio_1": ratio1,
                                                   "ratio_n": ratioN, "structure_seconds": structure_s,
                                                   "figures": figures, "outcome": outcome}, indent=1))
        if not ok:
            print(f"FAILED: outcome {outcome}, bytes {best['drwatch'][1]} vs {best['hashlib1'][1]}")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
