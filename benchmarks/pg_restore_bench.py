#!/usr/bin/env python3
"""Benchmark drwatch's ``postgres_restore`` drill against a bare initdb + pg_restore of the same dump.

Usage::

    python benchmarks/pg_restore_bench.py [--scale 20] [--jobs 2] [--repeat 3] [--variants tables,proof,proof-all]
                                          [--workdir /tmp] [--json FILE]
    python benchmarks/pg_restore_bench.py --quick        # scale 2, 1 round, < 1 min (smoke test)

Setup (once): a production PostgreSQL (``tests.support.pgserver.PostgresServer``) loaded by ``pgbench -i -s SCALE``
(100,000 x SCALE rows in pgbench_accounts) plus a ``docs`` table with jsonb and bytea columns (2,000 x
SCALE rows), dumped with ``pg_dump -Fc``. With a proof variant, the production-side cost of its queries
(row counts and ordered-md5 checksums of every table) is timed once.

Then REPEAT interleaved rounds, each of

  (a) baseline: a fresh ephemeral cluster made exactly as drwatch makes one - drwatch's own
      ``pgcluster.EphemeralCluster`` (initdb as ``postgres`` through runuser when root, scram password,
      ``pg_ctl start`` with fsync off and drwatch's other settings) in a sandbox directory opened the same
      way (``pgcluster.open_sandbox_for``) - then ``CREATE DATABASE drill TEMPLATE template0`` (psql) and a
      raw ``pg_restore -j JOBS --exit-on-error --no-owner --no-privileges -d drill DUMP`` (the flags drwatch
      passes; ``--no-owner`` is needed anyway: the sandbox has no role ``postgres``). ``total`` runs from
      before initdb to after pg_restore returns; ``pg_restore`` is that command alone. Not in the total,
      timed afterwards on the same restored cluster: the verification queries drwatch runs there (a
      count(*) per table; the ordered md5 of the tables up to 100,000 rows, as ``proof``) and the teardown
      (``pg_ctl stop -m immediate`` + removal of the directory);
  (b) ``drwatch check --config CFG --output json -v`` (a fresh store each time; ``python -m drwatch`` with
      this interpreter, not a pyenv shim on PATH, reading a warm bytecode cache) for an asset whose only
      validator is a postgres_restore of that dump (ephemeral sandbox, ``jobs: JOBS``), in three variants:
        - ``tables``: ``expect.tables`` only (presence). drwatch still counts every restored table
          (the ``rows_restored`` figure), so one count(*) per table is always paid;
        - ``proof``: plus ``production``, ``expect.row_counts`` and ``expect.checksums`` of every table
          with the default ``max_rows`` (100,000: pgbench_accounts is skipped from SCALE 2 up);
        - ``proof-all``: the same with ``max_rows`` = the largest table, so the 100,000 x SCALE rows of
          pgbench_accounts are checksummed on both sides too.
      For each: the wall time of the whole command, drwatch's own ``restore_seconds`` figure, and the
      phases from drwatch's JSON log lines (``run_started``, ``drill_recovery_point``,
      ``drill_restore_started``, ``drill_restored``, ``run_finished``): process start-up, setup (tool
      version, ``pg_restore --list``, initdb, start, CREATE DATABASE), restore, checks + teardown, exit.

Before every measured step the script runs ``sync`` (not timed; its duration is shown), so that the
writeback of what earlier steps (or other jobs) left dirty does not land in the next measurement, and the
order of the steps is rotated per round. Identical restores still vary by +-30% on a shared 2-core machine,
so the report also gives a figure free of that noise: ``extra_s`` = (drill wall - restore_seconds) -
(baseline total - baseline pg_restore), what drwatch adds outside the restore, and the ``same-rs`` ratio
(baseline total + extra_s) / baseline total, the wall ratio had both restores taken equally long.

Reported per round and as medians: baseline total, baseline pg_restore, drill wall, restore_seconds, and the
ratios drill_wall / baseline_total and restore_seconds / baseline pg_restore (paired within a round; target
<= 1.1). Every cluster and directory is removed in all cases (also on SIGTERM); a postmaster left under the
scratch directory is stopped before it is removed. Load from other processes is shown as the 1-minute load
average at the start of each run. Exits 1 if a drill does not come back ``ok`` or a step fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.pgserver import PostgresServer  # noqa: E402

from drwatch.core.errors import ValidatorError  # noqa: E402
from drwatch.core.sandbox import stop_postmaster  # noqa: E402
from drwatch.validators.postgres import pgcluster, pgtools  # noqa: E402

DUMP_NAME = "prod.dump"
PROD_DB = "bench_prod"
PROD_ENV = "DRW_BENCH_PROD_DSN"
TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "docs"]
NEEDED = ("initdb", "pg_ctl", "postgres", "pg_restore", "psql")  # what the validator looks for (ephemeral)
VARIANTS = ("tables", "proof", "proof-all")
PHASES = ("startup", "setup", "restore", "checks+teardown", "exit")
TARGET = 1.1


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load1() -> float:
    return os.getloadavg()[0]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def settle() -> float:
    """``sync``: write back what earlier steps left dirty, so that I/O does not land in the next measurement."""
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# ------------------------------------------------------------------------------------------ production


def run(argv: list[str], what: str, timeout: float = 1800, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed (rc {res.returncode}): {res.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def load_production(server: PostgresServer, scale: int, docs: int) -> tuple[str, float]:
    dsn = server.create_database(PROD_DB)
    t0 = time.perf_counter()
    run([str(server.bin_dir / "pgbench"), "-i", "-s", str(scale), "-q", dsn], f"pgbench -i -s {scale}")
    server.psql("CREATE TABLE docs (id serial PRIMARY KEY, body jsonb NOT NULL, blob bytea);"
                "INSERT INTO docs (body, blob) SELECT jsonb_build_object('n', g, 'name', 'doc ' || g, "
                "'tags', jsonb_build_array('a', g, g % 7)), decode(md5(g::text) || md5((-g)::text), 'hex') "
                f"FROM generate_series(1, {docs}) g", PROD_DB)
    server.psql("VACUUM ANALYZE docs", PROD_DB)
    return dsn, time.perf_counter() - t0


async def production_proof_cost(params: dict[str, str]) -> dict[str, float]:
    """What the proof variants ask of production: a count(*) and an ordered md5 per table (timed once)."""
    conn = await pgtools.connect(params, code="x", what="production", read_only=True, statement_timeout=1800)
    try:
        t0 = time.perf_counter()
        counts, _rows = await pgtools.table_counts(conn, 1800)
        t1 = time.perf_counter()
        sums = {}
        for table in counts:
            s0 = time.perf_counter()
            await pgtools.table_checksum(conn, table, 1800)
            sums[table[1]] = time.perf_counter() - s0
        return {"counts_s": t1 - t0, **{f"md5 {name}": s for name, s in sums.items()},
                "md5_all_s": sum(sums.values())}
    finally:
        await pgtools.close_connection(conn)


# -------------------------------------------------------------------------------------------- baseline


@dataclass
class Baseline:
    round: int
    load: float
    initdb: float = 0.0
    start: float = 0.0
    createdb: float = 0.0
    pg_restore: float = 0.0
    total: float = 0.0
    counts: float = 0.0  # not in total: count(*) of every table, as drwatch's table_counts
    md5_small: float = 0.0  # not in total: ordered md5 of the tables up to 100,000 rows
    teardown: float = 0.0  # not in total: pg_ctl stop -m immediate + rmtree
    stop: float = 0.0  # of teardown: pg_ctl stop -m immediate
    running: float = 0.0  # pg_restore -j into the already running production server (its own database)
    rows: int = 0
    sync: float = 0.0  # the sync before the step (not timed in it)


async def verification_cost(b: Baseline, params: dict[str, str]) -> None:
    """The queries drwatch runs on the restored database (count(*) per table; ordered md5 of the tables up to
    100,000 rows: the ``proof`` variant's), timed here."""
    conn = await pgtools.connect(params, code="x", what="baseline", read_only=True, statement_timeout=1800)
    try:
        c0 = time.perf_counter()
        counts, b.rows = await pgtools.table_counts(conn, 1800)
        b.counts = time.perf_counter() - c0
        s0 = time.perf_counter()
        for table in [t for t, n in counts.items() if n <= 100_000]:
            await pgtools.table_checksum(conn, table, 1800)
        b.md5_small = time.perf_counter() - s0
    finally:
        await pgtools.close_connection(conn)


def running_server_restore(server: PostgresServer, round_no: int, dump: Path, jobs: int) -> float:
    """``pg_restore -j JOBS`` (same flags) into a fresh database of the already running production server
    (tests.support.pgserver: fsync off, full_page_writes off, wal_level replica): no initdb, no start, no stop."""
    name = f"raw_{round_no}"
    server.psql(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        argv = [str(server.bin_dir / "pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges", "-d",
                server.dsn(name), "-j", str(jobs), str(dump)]
        return run(argv, "pg_restore into the running server", timeout=3600)
    finally:
        server.psql(f"DROP DATABASE {name} WITH (FORCE)")


def baseline(round_no: int, root: Path, bin_dir: Path, run_as: str | None, dump: Path, jobs: int) -> Baseline:
    b = Baseline(round_no, load1())
    sandbox = root / f"drwatch-sbx-baseline-{round_no}"
    cluster = pgcluster.EphemeralCluster(bin_dir, sandbox / "pg", run_as)
    try:
        t0 = time.perf_counter()
        sandbox.mkdir(mode=0o700)
        if run_as is not None:
            pgcluster.open_sandbox_for(sandbox, run_as)
        asyncio.run(cluster.init(limit=300))
        t1 = time.perf_counter()
        asyncio.run(cluster.start(limit=120))
        t2 = time.perf_counter()
        env = pgtools.libpq_env({k: v for k, v in cluster.params().items() if k != "dbname"})
        run([str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c",
             "CREATE DATABASE drill TEMPLATE template0"], "CREATE DATABASE", env=env)
        t3 = time.perf_counter()
        argv = [str(bin_dir / "pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges", "-d", "drill",
                "-j", str(jobs), str(dump)]
        res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=3600)
        t4 = time.perf_counter()
        if res.returncode != 0:
            raise RuntimeError(f"baseline pg_restore failed (rc {res.returncode}): {res.stderr.strip()[-2000:]}")
        b.initdb, b.start, b.createdb, b.pg_restore, b.total = t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0
        asyncio.run(verification_cost(b, cluster.params("drill")))
    finally:
        d0 = time.perf_counter()
        asyncio.run(cluster.stop())
        b.stop = time.perf_counter() - d0
        shutil.rmtree(sandbox, ignore_errors=True)
        b.teardown = time.perf_counter() - d0
    return b


# ---------------------------------------------------------------------------------------------- drwatch


@dataclass
class Drill:
    round: int
    variant: str
    load: float
    wall: float = 0.0
    restore_seconds: float = float("nan")
    duration: float = float("nan")  # drwatch's own run duration (run_started -> run_finished)
    outcome: str = "?"
    phases: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    sync: float = 0.0


def write_config(work: Path, variant: str, dumps: Path, jobs: int, tables_max: int) -> Path:
    expect: dict[str, Any] = {"tables": TABLES}
    validator: dict[str, Any] = {"kind": "postgres_restore", "location": "dumps", "pattern": DUMP_NAME,
                                 "jobs": jobs, "sandbox": {"mode": "ephemeral"}, "expect": expect}
    if variant != "tables":
        validator["production"] = {"dsn_env": PROD_ENV}
        expect["row_counts"] = {"pgbench_accounts": 1}  # compared with production (and at least 1 row)
        expect["checksums"] = {"tables": TABLES}
        if variant == "proof-all":
            expect["checksums"]["max_rows"] = tables_max
    cfg = {
        "store": {"sqlite": str(work / f"state-{variant}.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "logging": {"format": "json"},
        "limits": {"sandbox_dir": str(work / "sandboxes"), "default_timeout": "2h"},
        "locations": {"dumps": {"kind": "filesystem", "path": str(dumps)}},
        "assets": {"db": {"rpo": "7d", "rto": "1h", "production": {"location": "dumps"},
                          "validators": [validator]}},
    }
    path = work / f"drill-{variant}.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def drwatch_command() -> list[str]:
    """``python -m drwatch`` with this interpreter: what the console script runs, without a pyenv shim on PATH
    (a bash script that costs 0.2-0.9 s per call here, which is not drwatch's) and without depending on a
    console script generated for an older layout of the package."""
    return [sys.executable, "-m", "drwatch"]


def bytecode_env(env: dict[str, str], work: Path) -> dict[str, str]:
    """Imports read ``.pyc`` files as in an installed drwatch (pip compiles on install): a bytecode cache in
    the scratch folder (nothing written into the source tree), warmed up before the first measured run."""
    out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    subprocess.run([sys.executable, "-c", "import drwatch.cli.main, drwatch.config.model, drwatch.validators"],
                   env=out, check=True, timeout=300)
    return out


def drill(round_no: int, variant: str, cfg: Path, env: dict[str, str], drwatch: list[str]) -> Drill:
    d = Drill(round_no, variant, load1())
    for suffix in ("", "-wal", "-shm", "-journal"):
        (cfg.parent / f"state-{variant}.sqlite{suffix}").unlink(missing_ok=True)
    spawned = time.time()
    t0 = time.perf_counter()
    res = subprocess.run([*drwatch, "check", "--config", str(cfg), "--output", "json", "-v"], capture_output=True,
                         text=True, env=env, check=False, timeout=7200)
    d.wall = time.perf_counter() - t0
    ended = spawned + d.wall
    try:
        result = json.loads(res.stdout)["results"][0]
    except (ValueError, KeyError, IndexError):
        raise RuntimeError(f"drwatch check gave no result (rc {res.returncode}): {res.stderr.strip()[-2000:]}") \
            from None
    d.outcome = str(result.get("outcome"))
    d.figures = {k: float(v) for k, v in result.get("figures", {}).items()}
    d.restore_seconds = d.figures.get("restore_seconds", float("nan"))
    d.duration = float(result.get("duration", float("nan")))
    d.findings = [f"{f.get('severity')}:{f.get('code')}:{f.get('subject', '')}" for f in result.get("findings", [])]
    events: dict[str, float] = {}
    fields: dict[str, dict[str, Any]] = {}
    for line in res.stderr.splitlines():
        try:
            rec = json.loads(line)
            events.setdefault(str(rec["event"]), _ts(str(rec["timestamp"])))
            fields.setdefault(str(rec["event"]), rec)
        except (ValueError, KeyError, TypeError):
            continue
    marks = ["run_started", "drill_recovery_point", "drill_restore_started", "drill_restored", "run_finished"]
    if all(m in events for m in marks):
        started, point, rs, rd, finished = (events[m] for m in marks)
        d.phases = {"startup": started - spawned, "setup": rs - point, "restore": rd - rs,
                    "checks+teardown": finished - rd, "exit": ended - finished, "list": point - started}
        ready, checked = fields.get("drill_sandbox_ready", {}), fields.get("drill_checked", {})
        for key in ("initdb", "start", "createdb"):
            if f"{key}_seconds" in ready:
                d.phases[key] = float(ready[f"{key}_seconds"])
        if "seconds" in checked:
            d.phases["checks"] = float(checked["seconds"])
            d.phases["teardown"] = d.phases["checks+teardown"] - d.phases["checks"]
    return d


# ---------------------------------------------------------------------------------------------- report


def extra(d: Drill, b: Baseline) -> float:
    """Seconds drwatch spends outside the restore beyond what the baseline spends outside it."""
    return (d.wall - d.restore_seconds) - (b.total - b.pg_restore)


def same_restore(d: Drill, b: Baseline) -> float:
    """drill_wall / baseline_total had drwatch's restore taken exactly the baseline's pg_restore time."""
    return (b.total + extra(d, b)) / b.total


def report(a: argparse.Namespace, info: dict[str, Any], bases: list[Baseline], drills: list[Drill]) -> None:
    print()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {info['pg']}; run as "
          f"{'root (server as ' + str(info['run_as']) + ' via runuser)' if info['run_as'] else 'a normal user'}")
    print(f"drwatch: {info['drwatch']}")
    print(f"load at start: {info['uptime_start']}")
    print(f"load at end:   {info.get('uptime_end', '?')}")
    print(f"data: pgbench -i -s {a.scale} ({info['rows']:,} rows in {len(TABLES)} tables incl. docs "
          f"jsonb/bytea); dump -Fc {info['dump_bytes'] / 1e6:.1f} MB in {info['dump_s']:.1f}s "
          f"(load {info['load_s']:.1f}s); pg_restore -j {a.jobs}; {a.repeat} round(s), interleaved")
    prod = info.get("prod_cost")
    if prod:
        print(f"production side of the proof (timed once): count(*) of every table {prod['counts_s']:.2f}s; "
              f"ordered md5 of every table {prod['md5_all_s']:.2f}s "
              f"({', '.join(f'{k[4:]} {v:.2f}' for k, v in prod.items() if k.startswith('md5 '))})")
    print("\nbaseline (EphemeralCluster init/start + psql CREATE DATABASE + raw pg_restore); seconds")
    print(f"{'round':>5} {'load':>5} {'sync':>5} {'initdb':>7} {'start':>6} {'createdb':>8} {'pg_restore':>10} "
          f"{'TOTAL':>7} | {'counts':>6} {'md5<=100k':>9} {'teardown':>8}")
    for b in bases:
        print(f"{b.round:>5} {b.load:5.1f} {b.sync:5.2f} {b.initdb:7.2f} {b.start:6.2f} {b.createdb:8.2f} "
              f"{b.pg_restore:10.2f} {b.total:7.2f} | {b.counts:6.2f} {b.md5_small:9.2f} {b.teardown:8.2f}")
    print("(right of |: not in TOTAL; the verification queries drwatch runs, timed on the restored baseline "
          "cluster, and the teardown)")

    by_round = {b.round: b for b in bases}
    print("\ndrwatch check (whole command); seconds; phases from drwatch's log timestamps")
    print(f"{'round':>5} {'variant':9} {'load':>5} {'sync':>5} {'WALL':>6} {'restore_s':>9} | " +
          " ".join(f"{p:>{max(7, len(p))}}" for p in PHASES) +
          f" | {'wall/base':>9} {'rs/pg_r':>7} {'extra_s':>7} {'same-rs':>7}  outcome")
    for d in drills:
        if d.round not in by_round:
            continue
        b = by_round[d.round]
        ph = " ".join(f"{d.phases.get(p, float('nan')):>{max(7, len(p))}.2f}" for p in PHASES)
        print(f"{d.round:>5} {d.variant:9} {d.load:5.1f} {d.sync:5.2f} {d.wall:6.2f} {d.restore_seconds:9.2f} | {ph} | "
              f"{d.wall / b.total:9.2f} {d.restore_seconds / b.pg_restore:7.2f} {extra(d, b):7.2f} "
              f"{same_restore(d, b):7.2f}  {d.outcome}{' ' + ','.join(d.findings) if d.findings else ''}")
    print("extra_s: drwatch's time outside the restore minus the baseline's, (WALL - restore_s) - (TOTAL - "
          "pg_restore): what drwatch adds, free of the restore's noise; same-rs: wall/base had both restores "
          "taken the baseline's pg_restore time, (TOTAL + extra_s) / TOTAL")

    print(f"\nmedians over {a.repeat} round(s) (ratios: median of the per-round paired ratios; target <= {TARGET})")
    print(f"  baseline total (initdb -> pg_restore done)   {median([b.total for b in bases]):7.2f}s   "
          f"{[round(b.total, 2) for b in bases]}")
    print(f"  baseline pg_restore only                     {median([b.pg_restore for b in bases]):7.2f}s   "
          f"{[round(b.pg_restore, 2) for b in bases]}")
    print(f"  baseline total + teardown                    {median([b.total + b.teardown for b in bases]):7.2f}s")
    full = [b.total + b.stop for b in bases]
    running = [b.running for b in bases]
    print(f"  raw A: initdb+start+createdb+pg_restore+stop {median(full):7.2f}s   {[round(x, 2) for x in full]}")
    print(f"  raw B: pg_restore -j{a.jobs} into a running server   {median(running):7.2f}s   "
          f"{[round(x, 2) for x in running]}  (tests.support.pgserver: fsync/full_page_writes off, wal_level replica)")
    print("\nphases side by side (medians; seconds)")
    cols = [v for v in VARIANTS if any(d.variant == v and d.round in by_round for d in drills)]
    print(f"  {'phase':34} {'raw A':>7} {'raw B':>7} " + " ".join(f"{v:>9}" for v in cols))

    def dmed(v: str, key: str) -> float:
        return median([d.phases[key] for d in drills if d.variant == v and key in d.phases])

    rows = [("process start-up + config + list", None, None, "startup"),
            ("tool versions + pg_restore --list", None, None, "pre"),
            ("initdb", [b.initdb for b in bases], None, "initdb"),
            ("server start", [b.start for b in bases], None, "start"),
            ("CREATE DATABASE", [b.createdb for b in bases], None, "createdb"),
            (f"pg_restore -j{a.jobs}", [b.pg_restore for b in bases], running, "restore"),
            ("checks (counts, checksums, production)", None, None, "checks"),
            ("teardown (stop; drill: + rmtree)", [b.stop for b in bases], None, "teardown"),
            ("exit (store, report, interpreter)", None, None, "exit"),
            ("TOTAL", full, running, "wall")]
    for d in drills:
        if "setup" in d.phases:
            d.phases["pre"] = d.phases["setup"] - sum(d.phases.get(k, 0.0) for k in ("initdb", "start", "createdb"))
        d.phases["wall"] = d.wall
    for label, ra, rb, key in rows:
        print(f"  {label:34} {median(ra) if ra else float('nan'):7.2f} {median(rb) if rb else float('nan'):7.2f} "
              + " ".join(f"{dmed(v, key):9.2f}" for v in cols))
    for v in cols:
        w = median([d.wall for d in drills if d.variant == v and d.round in by_round])
        print(f"  {v}: drill wall / raw A {w / median(full):.2f}; / raw B {w / median(running):.2f}; restore_seconds /"
              f" raw B {median([d.restore_seconds for d in drills if d.variant == v]) / median(running):.2f}")
    for v in VARIANTS:
        ds = [d for d in drills if d.variant == v and d.round in by_round]
        if not ds:
            continue
        r1 = [d.wall / by_round[d.round].total for d in ds]
        r2 = [d.restore_seconds / by_round[d.round].pg_restore for d in ds]
        print(f"  drwatch {v:9} drill wall                  {median([d.wall for d in ds]):7.2f}s   "
              f"{[round(d.wall, 2) for d in ds]}")
        print(f"  drwatch {v:9} restore_seconds             {median([d.restore_seconds for d in ds]):7.2f}s   "
              f"{[round(d.restore_seconds, 2) for d in ds]}")
        print(f"  drwatch {v:9} drill_wall/baseline_total   {median(r1):7.2f}    {[round(x, 2) for x in r1]}"
              f"{'' if median(r1) <= TARGET else '   ABOVE TARGET'}")
        print(f"  drwatch {v:9} restore_s/pg_restore_only   {median(r2):7.2f}    {[round(x, 2) for x in r2]}"
              f"{'' if median(r2) <= TARGET else '   ABOVE TARGET'}")
        phases = {p: median([d.phases[p] for d in ds if p in d.phases]) for p in PHASES}
        print(f"  drwatch {v:9} median phases: " + ", ".join(f"{p} {s:.2f}" for p, s in phases.items()))
        ex = [extra(d, by_round[d.round]) for d in ds]
        sr = [same_restore(d, by_round[d.round]) for d in ds]
        print(f"  drwatch {v:9} extra_s {median(ex):.2f} {[round(x, 2) for x in ex]}; same-restore ratio "
              f"{median(sr):.2f} {[round(x, 2) for x in sr]}{'' if median(sr) <= TARGET else '   ABOVE TARGET'}")


# ------------------------------------------------------------------------------------------------ main


def stop_leftovers(work: Path) -> None:
    """Stop any postmaster still running from a cluster under ``work`` (a failed or killed step)."""
    for pid_file in work.glob("**/postmaster.pid"):
        try:
            stop_postmaster(pid_file)
        except Exception as exc:  # cleanup goes on
            log(f"could not stop the postmaster of {pid_file}: {exc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--scale", type=int, default=20, help="pgbench scale: 100,000 x SCALE accounts (default 20)")
    p.add_argument("--jobs", type=int, default=2, help="pg_restore -j for the baseline and the validator (2)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians are shown (3)")
    p.add_argument("--quick", action="store_true", help="smoke test: scale 2, 1 round (< 1 min)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"drill variants to run ({','.join(VARIANTS)})")
    p.add_argument("--workdir", type=Path, default=Path("/tmp"),
                   help="where the scratch directory is made; must be traversable by user postgres (/tmp)")
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.scale, a.repeat = 2, 1
    a.repeat = max(1, a.repeat)
    variants = [v for v in a.variants.split(",") if v]
    if any(v not in VARIANTS for v in variants):
        p.error(f"--variants: choose from {', '.join(VARIANTS)}")
    drwatch = drwatch_command()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on kill
    info: dict[str, Any] = {"uptime_start": uptime(), "drwatch": " ".join(drwatch)}
    log(info["uptime_start"])
    a.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="drwatch-pgbench-", dir=a.workdir))
    work.chmod(0o755)  # the postgres user must reach the clusters below
    log(f"scratch directory {work}")
    server = PostgresServer(work)
    bases: list[Baseline] = []
    drills: list[Drill] = []
    failures: list[str] = []
    started = time.perf_counter()
    try:
        server.start()
        bin_dir = pgtools.find_bin_dir(None, NEEDED)  # what the validator will use
        run_as = pgcluster.sandbox_user(None)
        info["run_as"] = run_as
        info["pg"] = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True,
                                    check=False).stdout.strip() + f" ({bin_dir})"
        docs = 2000 * a.scale
        log(f"loading pgbench -i -s {a.scale} + {docs} docs ...")
        prod_dsn, info["load_s"] = load_production(server, a.scale, docs)
        dumps = work / "dumps"
        dumps.mkdir()
        dump = dumps / DUMP_NAME
        info["dump_s"] = run([str(server.bin_dir / "pg_dump"), "-Fc", "-f", str(dump), prod_dsn], "pg_dump -Fc")
        info["dump_bytes"] = dump.stat().st_size
        info["rows"] = 100_000 * a.scale + 10 * a.scale + a.scale + docs
        log(f"dump {info['dump_bytes'] / 1e6:.1f} MB in {info['dump_s']:.1f}s")
        if any(v != "tables" for v in variants):
            info["prod_cost"] = asyncio.run(production_proof_cost(pgtools.parse_dsn(prod_dsn)))
        env = bytecode_env({**os.environ, PROD_ENV: prod_dsn}, work)
        cfgs = {v: write_config(work, v, dumps, a.jobs, 100_000 * a.scale) for v in variants}
        bl_root = work / "baseline"
        bl_root.mkdir(mode=0o700)
        steps = ["baseline", *variants]
        for r in range(1, a.repeat + 1):
            shift = (r - 1) % len(steps)  # rotate the order: no step always runs first (or after the same one)
            for step in steps[shift:] + steps[:shift]:
                log(f"round {r}/{a.repeat}: {step} ...")
                synced = settle()
                if step == "baseline":
                    b = baseline(r, bl_root, bin_dir, run_as, dump, a.jobs)
                    b.sync = synced
                    settle()
                    b.running = running_server_restore(server, r, dump, a.jobs)
                    bases.append(b)
                    log(f"  total {b.total:.2f}s (pg_restore {b.pg_restore:.2f}s), {b.rows:,} rows")
                    continue
                d = drill(r, step, cfgs[step], env, drwatch)
                d.sync = synced
                drills.append(d)
                log(f"  wall {d.wall:.2f}s, restore_seconds {d.restore_seconds:.2f}s, outcome {d.outcome}")
                if d.outcome != "ok":
                    failures.append(f"round {r} {step}: outcome {d.outcome} {d.findings}")
                if d.figures.get("rows_restored") != info["rows"]:
                    failures.append(f"round {r} {step}: rows_restored {d.figures.get('rows_restored')} != "
                                    f"{info['rows']}")
        failures += [f"round {b.round} baseline: {b.rows} rows restored != {info['rows']}" for b in bases
                     if b.rows != info["rows"]]
        info["uptime_end"] = uptime()
        report(a, info, bases, drills)
        print(f"\ntotal benchmark time {time.perf_counter() - started:.0f}s (before cleanup)")
        if a.json:
            raw = {"args": {k: str(v) for k, v in vars(a).items()}, "cores": os.cpu_count(), "info": info,
                   "baseline": [vars(b) for b in bases], "drills": [vars(d) for d in drills], "failures": failures}
            a.json.write_text(json.dumps(raw, indent=2))
    except (RuntimeError, subprocess.SubprocessError, OSError, ValidatorError) as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        log(f"removing {work} ...")
        try:
            server.cleanup()
        finally:
            stop_leftovers(work)
            shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        print(f"FAIL {f}")
    if failures:
        return 1
    print("ALL DRILLS OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
