#!/usr/bin/env python3
"""Start-up of ``drwatch check`` of one filesystem asset, side by side with ``python -c pass``.

Usage::

    python benchmarks/startup_bench.py [--runs 20] [--files 20] [--importtime 5] [--json FILE]
                                       [--compare DIR]   # also DIR's drwatch (e.g. a `git archive` of an
                                                         # older commit), PYTHONPATH=DIR/daemon

Builds a throwaway estate (one asset: production and two copies of FILES small files, one ``replica``
validator, SQLite store) and runs, interleaved, RUNS times each:

  (a) ``python -c pass``                                  (the interpreter alone: the floor)
  (b) ``python -m drwatch --version``                     (drwatch's CLI module and argument parsing)
  (c) ``python -m drwatch check --config CFG --output json`` (the whole command: imports, config, store,
      the replica comparison, the report, exit)

with this interpreter (``sys.executable``, never a pyenv shim: a shim is a bash script that costs more than
Python's start-up here). Bytecode: the commands run with ``PYTHONPYCACHEPREFIX`` set to a scratch folder and
``PYTHONDONTWRITEBYTECODE`` unset, after one warm-up run each, so imports read ``.pyc`` files as they do in an
installed drwatch (pip compiles on install); nothing is written into the source tree. ``--source`` measures
the other case (``PYTHONDONTWRITEBYTECODE=1``: a source tree without ``__pycache__``, e.g. this checkout,
compiles every drwatch module at each start).

Prints per command the median and minimum wall time and the median CPU time (user+sys of the child: less
sensitive than wall time to other jobs on a shared machine), the difference to (a), the 1-minute load
average, and the slowest imports of (c) from ``python -X importtime`` (minimum of IMPORTTIME runs per
module, cumulative). Exits 1 if a check does not exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.4  # seconds, wall, median: issue 14


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def make_estate(root: Path, files: int) -> Path:
    import random

    rng = random.Random(1)
    data = {f"dir{i % 3}/file-{i:04d}.bin": rng.randbytes(4096 + i) for i in range(files)}
    for side in ("prod", "copy1", "copy2"):
        for rel, blob in data.items():
            target = root / side / "data" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
    cfg = {
        "store": {"sqlite": str(root / "state.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "compliance": {"media": 1, "immutable": 0, "offsite": 0},
        "locations": {side: {"kind": "filesystem", "path": str(root / side), "site": f"dc-{i}"}
                      for i, side in enumerate(("prod", "copy1", "copy2"))},
        "assets": {"data": {"rpo": "7d", "rto": "1h", "production": {"location": "prod", "prefix": "data"},
                            "copies": [{"location": "copy1", "prefix": "data"},
                                       {"location": "copy2", "prefix": "data"}],
                            "validators": [{"kind": "replica", "schedule": {"every": "1h"}}]}},
    }
    path = root / "drwatch.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall, cpu of the child, exit code)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False,
                         timeout=300)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), res.returncode


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def slowest_imports(argv: list[str], env: dict[str, str], runs: int, top: int = 15) -> list[tuple[str, float]]:
    """Top-level and second-level imports of ``argv`` by cumulative time (minimum over ``runs``), seconds."""
    best: dict[str, int] = {}
    for _ in range(runs):
        res = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=env,
                             check=False, timeout=300)
        for line in res.stderr.splitlines():
            m = _IMPORT_LINE.match(line)
            if m and len(m.group(3)) <= 3:
                name = ("  " if len(m.group(3)) > 1 else "") + m.group(4)
                best[name] = min(best.get(name, 1 << 62), int(m.group(2)))
    return [(k, v / 1e6) for k, v in sorted(best.items(), key=lambda kv: -kv[1])[:top]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="runs per command, interleaved (20)")
    p.add_argument("--files", type=int, default=20, help="files per side of the estate (20)")
    p.add_argument("--importtime", type=int, default=5, help="-X importtime runs of the check (5; 0: none)")
    p.add_argument("--source", action="store_true", help="no bytecode cache: compile drwatch at every start")
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    p.add_argument("--compare", type=Path, help="a checkout whose daemon/ is timed too (before/after)")
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="drwatch-startup-"))
    try:
        cfg = make_estate(work, a.files)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        if a.source:  # the installed packages' and stdlib's own __pycache__ are still read
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        py = sys.executable
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "drwatch --version": [py, "-m", "drwatch", "--version"],
            "drwatch check (1 fs asset)": [py, "-m", "drwatch", "check", "--config", str(cfg), "--output", "json"],
        }
        if a.compare is not None:
            # the same interpreter with the other tree first on sys.path (`env`: ~1 ms more than a direct start)
            commands["  same, --compare tree"] = ["env", f"PYTHONPATH={a.compare.resolve() / 'daemon'}",
                                                 *commands["drwatch check (1 fs asset)"]]
        for name, cmd in commands.items():  # warm-up: writes the bytecode cache, warms the page cache
            _wall, _cpu, rc = timed(cmd, env)
            if rc not in (0,):
                print(f"FAIL {name}: exit {rc}", file=sys.stderr)
                return 1
        loads = [os.getloadavg()[0]]
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        failures = []
        for i in range(a.runs):
            order = list(commands.items())
            order = order[i % len(order):] + order[:i % len(order)]  # rotate: no command always first
            for name, cmd in order:
                wall, cpu, rc = timed(cmd, env)
                if rc != 0:
                    failures.append(f"{name}: exit {rc}")
                samples[name].append((wall, cpu))
            loads.append(os.getloadavg()[0])

        print(f"machine: {os.cpu_count()} cores, {cpu_model()}; Python {sys.version.split()[0]} ({py})")
        print(f"bytecode: {'none (compiled at every start)' if a.source else '.pyc cache (as installed)'}; "
              f"{a.runs} runs per command, interleaved; 1-min load average {min(loads):.1f}-{max(loads):.1f}")
        print(f"\n{'command':30} {'wall med':>9} {'wall min':>9} {'cpu med':>8} {'wall-base':>10} {'cpu-base':>9}")
        base_wall = statistics.median(w for w, _ in samples["python -c pass"])
        base_cpu = statistics.median(c for _, c in samples["python -c pass"])
        out: dict[str, Any] = {"cores": os.cpu_count(), "cpu": cpu_model(), "python": sys.version.split()[0],
                               "bytecode": not a.source, "runs": a.runs, "load": [min(loads), max(loads)],
                               "commands": {}}
        for name, vals in samples.items():
            walls, cpus = [w for w, _ in vals], [c for _, c in vals]
            wm, cm = statistics.median(walls), statistics.median(cpus)
            print(f"{name:30} {wm:9.3f} {min(walls):9.3f} {cm:8.3f} {wm - base_wall:10.3f} {cm - base_cpu:9.3f}")
            out["commands"][name] = {"wall": walls, "cpu": cpus, "wall_median": wm, "cpu_median": cm}
        check = out["commands"]["drwatch check (1 fs asset)"]["wall_median"]
        print(f"\ndrwatch check median wall {check:.3f}s: {'within' if check <= TARGET else 'ABOVE'} the "
              f"{TARGET}s target (wall on a {'loaded' if max(loads) > (os.cpu_count() or 1) / 2 else 'quiet'} "
              "machine; the CPU column is the steadier figure)")
        if a.importtime > 0:
            top = slowest_imports(commands["drwatch check (1 fs asset)"], env, a.importtime)
            print(f"\nslowest imports of the check (-X importtime, cumulative, min of {a.importtime} runs):")
            for name, secs in top:
                print(f"  {secs * 1000:8.1f} ms  {name}")
            out["imports"] = top
        if a.json:
            a.json.write_text(json.dumps(out, indent=2))
        for f in failures:
            print(f"FAIL {f}")
        return 1 if failures else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
