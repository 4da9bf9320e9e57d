#!/usr/bin/env python3
"""S3 Inventory as evidence (storage/inventory.py): HEADs saved, time, and memory at a million rows.

Usage::

    python benchmarks/inventory_bench.py [--objects 3000] [--rows 1000000] [--repeat 3]

Part 1, a COMPLIANCE-locked copy with a report vs an unlocked copy (moto on loopback): one production
bucket and three copies of the same ``--objects`` objects (1-4 KiB, each carrying a CRC32 checksum like
current AWS SDKs write): ``plain`` (no Object Lock: drwatch needs no HEAD), ``locked`` (COMPLIANCE for
30 days, no report: one HEAD per object) and ``locked+report`` (the same bucket with a fresh CSV report in
AWS's layout in a destination bucket). Each is checked ``--repeat`` times by the ``replica`` validator
in this process (a real Runner and S3 client pool, as the daemon runs it); the best wall time counts. The
HeadObject requests drwatch sent to each copy bucket are counted in moto's own request log.

Part 2, memory at ``--rows`` rows: a CSV-gzip report of that many objects (10 data files, rows in random
order) is put into moto; a fresh subprocess loads it through ``InventorySource`` (GET, MD5, parse, index)
and looks up every object of a synthetic listing of the same keys (streamed, as the merge does), counting
the lock states. Reported: peak RSS of that process (``VmHWM``: its own address space; ``ru_maxrss`` would
include the forking parent's RSS, which Linux carries over ``execve``), its RSS before loading, and times.
Exit status 1 if a check fails: any HEAD with a fresh report, a wrong lock count, a time ratio over 1.2,
or a peak RSS of 200 MB or more.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "daemon")):
    if p not in sys.path:
        sys.path.insert(0, p)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def heads_in_log(path: Path, offset: int, bucket: str) -> int:
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return text.count(f'"HEAD /{bucket}/')


def part1(n: int, repeat: int) -> tuple[dict[str, Any], bool]:
    import pytest
    from tests.support.inventory import take_inventory, write_report
    from tests.support.s3helpers import Locations, bucket, config, report, run, until
    from tests.support.s3helpers import client as s3
    from tests.support.s3servers import MotoServer

    rng = random.Random(1)
    files = {f"g{i // 1000:03d}/o{i:07d}.bin": rng.randbytes(1024 + i % 3072) for i in range(n)}
    ok = True
    out: dict[str, Any] = {"objects": n}
    with MotoServer("us-east-1") as moto, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        c = s3(moto)
        t0 = time.perf_counter()
        prod, plain = bucket(moto, "prod"), bucket(moto, "plain")
        locked, dest = bucket(moto, "locked", lock=True), bucket(moto, "inventory")

        def put(name: str, **extra: Any) -> None:
            from concurrent.futures import ThreadPoolExecutor

            def one(item: tuple[str, bytes]) -> None:
                c.put_object(Bucket=name, Key=f"data/{item[0]}", Body=item[1], ChecksumAlgorithm="CRC32", **extra)

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, files.items()))

        put(prod)
        time.sleep(1.05)
        put(plain)
        put(locked, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30))
        rows = take_inventory(moto, locked)
        time.sleep(1.05)
        write_report(moto, dest, prefix="reports", source_bucket=locked, config_id="daily", rows=rows)
        out["setup_s"] = round(time.perf_counter() - t0, 1)
        mp = pytest.MonkeyPatch()
        results: dict[str, dict[str, Any]] = {}
        for case, copy_bucket, inventory in (("plain", plain, None), ("locked", locked, None),
                                             ("locked+report", locked, "daily")):
            locs = Locations(mp)
            locs.s3("prod", moto, prod, site="dc-a", access_key="AKIDPROD")
            locs.s3("inv", moto, dest, site="dc-b", access_key="AKIDINV")
            report_ref = {"location": "inv", "prefix": "reports", "configuration_id": inventory}
            extra: dict[str, Any] = {"inventory": report_ref} if inventory else {}
            locs.s3("vault", moto, copy_bucket, site="dc-b", access_key="AKIDVAULT", **extra)
            cfg = config(tmp, locs, ("prod", "data"), [("vault", "data")],
                         compliance={"copies": 2, "media": 1, "offsite": 1, "immutable": 1})
            times, heads = [], []
            vault = None
            for _ in range(repeat):
                offset = moto.log_path.stat().st_size
                t = time.perf_counter()
                result, _ = asyncio.run(run(tmp, cfg))
                times.append(time.perf_counter() - t)
                time.sleep(0.3)  # moto's log line of the last request
                heads.append(heads_in_log(moto.log_path, offset, copy_bucket))
                vault = report(result, "vault")
                if result.outcome.value != "ok":
                    log(f"{case}: outcome {result.outcome.value}: {result.findings}")
                    ok = False
            assert vault is not None
            results[case] = {"best_s": round(min(times), 3), "times_s": [round(x, 3) for x in times],
                             "heads": heads[-1], "lock": vault.lock, "immutable": vault.immutable}
            log(f"{case}: {results[case]}")
        mp.undo()
    out["cases"] = results
    ratio = results["locked+report"]["best_s"] / results["plain"]["best_s"]
    out["report_vs_plain"] = round(ratio, 2)
    out["locked_vs_plain"] = round(results["locked"]["best_s"] / results["plain"]["best_s"], 2)
    if results["locked+report"]["heads"] != 0 or results["locked+report"]["lock"] != {"compliance": n}:
        ok = False
    if results["locked"]["heads"] != n:
        ok = False
    if ratio > 1.2:
        ok = False
    return out, ok


def part2(rows: int) -> tuple[dict[str, Any], bool]:
    from tests.support.s3helpers import bucket
    from tests.support.s3helpers import client as s3
    from tests.support.s3servers import MotoServer

    with MotoServer("us-east-1") as moto:
        dest = bucket(moto, "inventory")
        c = s3(moto)
        t0 = time.perf_counter()
        order = list(range(rows))
        random.Random(3).shuffle(order)
        created = time.time()
        base = "reports/vault/daily"
        files: list[dict[str, Any]] = []
        for part in range(10):
            lines = []
            for i in order[part::10]:
                etag = hashlib.md5(str(i).encode()).hexdigest()
                lines.append(f'"vault","data/g{i // 10000:03d}/o{i:07d}.bin","{1024 + i % 4096}",'
                             f'"2026-01-01T00:00:00.000Z","{etag}","STANDARD","false","","SSE-S3",'
                             f'"2036-01-01T00:00:00.000Z","COMPLIANCE","OFF","CRC32"\n')
            body = gzip.compress("".join(lines).encode(), compresslevel=1)
            key = f"{base}/data/part-{part}.csv.gz"
            c.put_object(Bucket=dest, Key=key, Body=body)
            files.append({"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()})
        schema = ("Bucket, Key, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, ReplicationStatus, "
                  "EncryptionStatus, ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus, "
                  "ChecksumAlgorithm")
        raw = json.dumps({"sourceBucket": "vault", "creationTimestamp": str(int(created * 1000)),
                          "fileFormat": "CSV", "fileSchema": schema, "files": files}).encode()
        stamp = time.strftime("%Y-%m-%dT%H-%MZ", time.gmtime(created))
        c.put_object(Bucket=dest, Key=f"{base}/{stamp}/manifest.json", Body=raw)
        c.put_object(Bucket=dest, Key=f"{base}/{stamp}/manifest.checksum", Body=hashlib.md5(raw).hexdigest().encode())
        gz_bytes = sum(f["size"] for f in files)
        setup = time.perf_counter() - t0
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'daemon'}"}
        proc = subprocess.run([sys.executable, __file__, "--child", moto.endpoint_url, dest, str(rows)],
                              capture_output=True, text=True, env=env, timeout=1800, check=False)
        if proc.returncode != 0:
            log(proc.stderr[-3000:])
            return {"error": proc.returncode}, False
        out = json.loads(proc.stdout)
    out.update({"rows": rows, "report_gz_mb": round(gz_bytes / 1e6, 1), "setup_s": round(setup, 1)})
    ok = out["maxrss_mb"] < 200 and out["lock"] == {"compliance": rows} and out["heads_needed"] == 0
    return out, ok


def child(endpoint: str, dest: str, rows: int) -> None:
    """Load the report and drive a listing of ``rows`` objects through it (a fresh process: its own peak RSS)."""
    from datetime import timedelta

    from drwatch.storage.config import InventoryReportConfig, S3LocationConfig
    from drwatch.storage.filesystem import Entry
    from drwatch.storage.inventory import InventorySource
    from drwatch.storage.s3 import Credentials, RequestMeter, S3Location

    def rss_mb(what: str = "VmRSS:") -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(what):
                    return int(line.split()[1]) / 1024
        return 0.0

    async def main() -> dict[str, Any]:
        cfg = S3LocationConfig(kind="s3", bucket=dest, endpoint_url=endpoint, region="us-east-1",
                               addressing_style="path")
        loc = S3Location("inv", cfg, Credentials("AKIDBENCH", "secret", None, None))
        inv = InventorySource(loc, InventoryReportConfig(configuration_id="daily", prefix="reports",
                                                         max_age=timedelta(days=2)), "vault", "data/", "vault")
        meter = RequestMeter("inv")
        await loc.client()
        before = rss_mb()
        lock: dict[str, int] = {}
        heads_needed = 0
        listed = time.time() - 86400 * 30
        t = time.perf_counter()
        first = Entry("data/g000/o0000000.bin", 1024, listed, etag=hashlib.md5(b"0").hexdigest())
        await inv.head(first.key, first, meter, time.time())
        load_s = time.perf_counter() - t
        after, peak_load = rss_mb(), rss_mb("VmHWM:")
        t = time.perf_counter()
        for i in range(rows):  # the listing, streamed in key order
            key = f"data/g{i // 10000:03d}/o{i:07d}.bin"
            e = Entry(key, 1024 + i % 4096, listed, etag=hashlib.md5(str(i).encode()).hexdigest())
            h = await inv.head(key, e, meter, time.time())
            if h is None:
                heads_needed += 1
                continue
            kind = (h.lock_mode or "none").lower()
            lock[kind] = lock.get(kind, 0) + 1
        lookup_s = time.perf_counter() - t
        await loc.close()
        return {"rss_before_load_mb": round(before, 1), "rss_after_load_mb": round(after, 1),
                "peak_during_load_mb": round(peak_load, 1), "maxrss_mb": round(rss_mb("VmHWM:"), 1),
                "load_s": round(load_s, 2),
            "lookup_s": round(lookup_s, 2), "lock": lock, "heads_needed": heads_needed,
            "findings": [f.code for f in inv.findings]}

    print(json.dumps(asyncio.run(main())))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=3000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    report: dict[str, Any] = {"cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                                          .splitlines() if line.startswith("model name")), "?")}
    ok = True
    if not args.skip_part1:
        report["part1"], ok1 = part1(args.objects, args.repeat)
        ok &= ok1
    report["part2"], ok2 = part2(args.rows)
    ok &= ok2
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
