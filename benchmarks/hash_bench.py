#!/usr/bin/env python3
"""BLAKE3 against sha256 (and md5/sha1 for scale), with and without the CPU's SHA extensions.

Usage::

    python benchmarks/hash_bench.py [--mib 256] [--rounds 5] [--json FILE]

Each algorithm hashes the same in-memory random buffer in 1 MiB updates (the chunk drwatch reads files in),
one thread, in child processes; speed is bytes per CPU second of the hashing thread (the machine this was
written on is shared: CPU time is far less disturbed by other load than wall time, which is shown too): one
with OpenSSL as it is, one with ``OPENSSL_ia32cap=:~0x20000000``, which
masks the SHA extensions (CPUID leaf 7 EBX bit 29) from OpenSSL's CPU detection, so hashlib's sha256/sha1 run
the plain x86-64 code — what a CPU without SHA-NI gets. Whether the mask took effect is read off the measured
speed (sha256 must slow down), not assumed. BLAKE3 (the ``blake3`` package, Rust) does not use OpenSSL, so the
mask cannot touch it; it is measured in both children all the same (a control for the load). Rounds alternate
between the two children so other load hits both alike; the best round of each is shown (MB/s = 10^6 B/s)
with the median. ``blake3 xN`` (``max_threads=AUTO``) is the same hash spread over all cores (its figure is per
wall second): shown for scale, drwatch hashes one file per thread.

The decision rule of issue 14 item 7: offer BLAKE3 seals if BLAKE3 is at least 2x faster than sha256 where
sha256 has no hardware help. The script prints the ratios and the verdict; exit 1 if the blake3 package is
missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

MASK_SHA = ":~0x20000000"  # OPENSSL_ia32cap: second word (CPUID.7.EBX), clear bit 29 (SHA)
ALGOS = ("sha256", "blake3", "md5", "sha1", "blake3 xN")


def child(mib: int) -> dict[str, Any]:
    """Runs in the child: one round of every algorithm over the same buffer."""
    import hashlib
    import ssl

    import blake3  # type: ignore[import-not-found,unused-ignore]

    buf = os.urandom(mib << 20)  # incompressible; the content does not change any hash's speed
    view = memoryview(buf)
    chunk = 1 << 20
    out: dict[str, Any] = {"openssl": ssl.OPENSSL_VERSION, "figures": {}}
    digests = {}
    for name in ALGOS:
        if name == "blake3":
            h: Any = blake3.blake3()
        elif name == "blake3 xN":
            h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        else:
            h = hashlib.new(name)
        cpu, wall = time.process_time(), time.perf_counter()
        for off in range(0, len(buf), chunk):
            h.update(view[off:off + chunk])
        digest = h.hexdigest()
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        # Single-threaded hashing: bytes per CPU second is its speed, and far less disturbed by other load on a
        # shared machine than bytes per wall second (kept too).
        out["figures"][name] = {"mb_s": len(buf) / max(cpu, 1e-9) / 1e6, "wall_mb_s": len(buf) / wall / 1e6,
                                "cpu_s": cpu, "wall_s": wall}
        digests[name] = digest
    if digests["blake3"] != digests["blake3 xN"]:
        raise SystemExit("blake3 single- and multi-threaded digests differ")
    return out


def cpu_facts() -> dict[str, Any]:
    model, flags = platform.processor() or "", set[str]()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "sha_ni": "sha_ni" in flags, "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags}


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="buffer hashed per algorithm and round (MiB)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.mib)))
        return 0
    try:
        import blake3  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        print("the blake3 package is not installed (pip install blake3)", file=sys.stderr)
        return 1

    modes = {"as is": {}, "SHA-NI masked": {"OPENSSL_ia32cap": MASK_SHA}}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    openssl = ""
    loads = [loadavg()]
    for r in range(a.rounds):
        for mode, extra in (modes.items() if r % 2 == 0 else reversed(modes.items())):
            env = {k: v for k, v in os.environ.items() if k != "OPENSSL_ia32cap"} | extra
            proc = subprocess.run([sys.executable, __file__, "--child", "--mib", str(a.mib)], env=env,
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            res = json.loads(proc.stdout)
            openssl = res["openssl"]
            runs[mode].append(res["figures"])
        loads.append(loadavg())

    cpu = cpu_facts()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, sha_ni={cpu['sha_ni']} avx2={cpu['avx2']} "
          f"avx512f={cpu['avx512f']}; {openssl}; Python {platform.python_version()}")
    print(f"{a.mib} MiB per algorithm and round, 1 MiB updates, {a.rounds} rounds; load average during the run: "
          f"{' -> '.join(loads)}")
    table: dict[str, dict[str, dict[str, float]]] = {}
    print(f"\n{'mode':<15}{'algorithm':<11}{'best MB/s':>10}{'median':>9}{'CPU s/GiB (best)':>18}"
          f"{'wall MB/s (best)':>18}")
    for mode, rounds in runs.items():
        table[mode] = {}
        for name in ALGOS:
            key = "wall_mb_s" if name == "blake3 xN" else "mb_s"
            speeds = [rd[name][key] for rd in rounds]
            best = max(rounds, key=lambda rd: rd[name][key])[name]
            cpu_gib = best["cpu_s"] / (a.mib / 1024)
            table[mode][name] = {"best_mb_s": max(speeds), "median_mb_s": statistics.median(speeds),
                                 "cpu_s_per_gib": cpu_gib}
            print(f"{mode:<15}{name:<11}{max(speeds):>10.0f}{statistics.median(speeds):>9.0f}{cpu_gib:>18.2f}"
                  f"{best['wall_mb_s']:>18.0f}")
    on, off = table["as is"], table["SHA-NI masked"]
    mask_effect = on["sha256"]["best_mb_s"] / off["sha256"]["best_mb_s"]
    ratio_off = off["blake3"]["best_mb_s"] / off["sha256"]["best_mb_s"]
    ratio_on = on["blake3"]["best_mb_s"] / on["sha256"]["best_mb_s"]
    print(f"\nsha256 as is / masked: {mask_effect:.2f}x "
          + ("(the mask took effect)" if mask_effect >= 1.5 else
             "(NO clear effect: the CPU has no SHA-NI, or OpenSSL ignores the mask; the masked row is not a "
             "no-SHA-NI measurement)"))
    print(f"md5 as is / masked: {on['md5']['best_mb_s'] / off['md5']['best_mb_s']:.2f}x (control: md5 never "
          "uses SHA-NI)")
    print(f"blake3 / sha256 with SHA-NI: {ratio_on:.2f}x; without SHA-NI (masked): {ratio_off:.2f}x")
    earns = mask_effect >= 1.5 and ratio_off >= 2.0
    print("verdict: BLAKE3 " + ("is" if earns else "is not") + " at least 2x faster than sha256 without hardware "
          "help" + ("" if mask_effect >= 1.5 else " (not measured: the mask had no effect)"))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"cpu": cpu, "openssl": openssl, "mib": a.mib, "rounds": a.rounds, "load": loads,
                       "table": table, "mask_effect": mask_effect, "blake3_over_sha256": {
                           "sha_ni": ratio_on, "masked": ratio_off}, "earns": earns}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
