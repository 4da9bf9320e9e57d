"""The fault matrix: every validator kind x every applicable fault, against real servers and a real daemon.

One real ``drwatch run`` per fault, holding every validator the fault applies to plus one asset no fault
touches. Faults are injected for real: servers stopped, a loopback TCP proxy (tests/faults/proxy.py) adding
latency, stalling answers, resetting connections or answering S3 ``503 SlowDown``; wrong credentials (Ceph RGW
checks signatures; PostgreSQL refuses an unknown role; the Pinecone stand-in refuses a wrong API key with 401);
Pinecone throttling (the stand-in answers ``429``); a host name under ``.invalid``; a 1 MiB tmpfs mounted on the
sandbox directory; a flipped byte, a file cut in half, a deleted object; a copy's file hard-linked to production's
(no copy at all); every production time (files, dumps) dated 2099 (never a fresh recovery point); every other
case of issue 13 (a copy behind production within and past the RPO, a copy swapped for a symlink to production
while the daemon runs, a copy on production's disk or on a tmpfs, an edited signed seal and an unsigned one where
signatures are required, dumps of an empty database, of another one and of comments only, ``manifest:`` set with
production not mounted, a file replaced by zeros of the same size and mtime under a verification budget, a
repaired backup); and validator-specific bad backups (a bucket without Object Lock, a standby whose replay is
paused, skewed recovery points; for Pinecone, a backup whose restore has changed or missing vectors, or no backup
at all). A fault in ``LATER`` is made while the daemon runs, after the column's first result, and judged by a run
that started after it; ``FINDINGS`` names the findings that must explain a row's outcome.

Pinecone (``vector_pinecone``: ``vector_restore`` on the Pinecone backend) has no local server: it runs against
the stand-in of tests/support/pinecone_standin.py (NOT Pinecone), one per case, in this process; a "pc" fault hits its
control and data planes alike. ``vector_pinecone_parquet`` is the same drill taking its backup from a Parquet export
in S3 (issue 17): S3 faults hit the export, Pinecone faults the stand-in.

Each case asserts (a) the outcome per validator is the expected one: ``failed`` for a bad backup, ``error`` /
``timeout`` for a broken path to it, ``ok`` for a slow server that still answers (never the other way round);
(b) the daemon stays up and answers /metrics throughout; (c) the untouched asset stays ``ok``; (d) no sandbox
directory and no process under it is left, and no temporary ``drwatch-drill-*`` index on the Pinecone stand-in
(whose production index was never deleted). The session prints the table fault x validator -> outcome and the
number of mismatches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from drwatch.formats.sealsign import generate
from tests.faults.conftest import MATRIX
from tests.faults.estate import (
    COLUMNS,
    DNS_INVALID,
    GENERIC,
    PINECONE_BAD_BACKUPS,
    PINECONE_PROD,
    SIDES,
    WHERE,
    Endpoints,
    MatrixPinecone,
    Scenario,
    Watch,
    World,
    caught_up,
    flip_byte,
    truncate,
    wait_until,
)
from tests.faults.proxy import Fault, FaultProxy
from tests.support.helpers import metric_value, processes_mentioning, run_cli
from tests.support.s3servers import MotoServer

OK = frozenset({"ok"})
ERR = frozenset({"error"})
ERR_OR_TIMEOUT = frozenset({"error", "timeout"})  # a stalled server: our timeout or the client's
FAILED = frozenset({"failed"})
SHM = Path("/dev/shm")  # a tmpfs: another device than the estate's disk, and volatile

DEPENDENCY = "recovery_dependencies"  # reaches the S3 side too, but the S3 side down is what it reports (below)
S3_COLS = [c for c in COLUMNS if "s3" in SIDES[c] and c != DEPENDENCY]
PG_COLS = [c for c in COLUMNS if "pg" in SIDES[c]]
PC_COLS = [c for c in COLUMNS if "pc" in SIDES[c]]
BACKUP_COLS = ["replica_fs", "replica_s3", "postgres_restore", "postgres_restore_s3", "dataset", "model_weights",
               "vector_restore", "vector_pinecone", "redis_restore"]
# Pinecone from a Parquet export: one flipped byte mid-file may leave every value finite and the answers unchanged
# (Parquet has no page checksums here), so only a cut export (no footer) and no export at all are its bad backups.
PARQUET_EXPORT = "vector_pinecone_parquet"


def _row(cols: list[str], want: frozenset[str]) -> dict[str, frozenset[str]]:
    return dict.fromkeys(cols, want)


EXPECTED: dict[str, dict[str, frozenset[str]]] = {
    "none": _row(list(COLUMNS), OK),
    "s3_stopped": _row(S3_COLS, ERR),
    "pg_stopped": _row(PG_COLS, ERR),
    "pc_stopped": _row(PC_COLS, ERR),
    "s3_slow": _row(S3_COLS, OK),
    "pg_slow": _row(PG_COLS, OK),
    "pc_slow": _row(PC_COLS, OK),
    "s3_stall": _row(S3_COLS, ERR_OR_TIMEOUT),
    "pg_stall": _row(PG_COLS, ERR_OR_TIMEOUT),
    "pc_stall": _row(PC_COLS, ERR_OR_TIMEOUT),
    "s3_reset": _row(S3_COLS, ERR),
    "pg_reset": _row(PG_COLS, ERR),
    "pc_reset": _row(PC_COLS, ERR),
    "s3_slowdown": _row(S3_COLS, ERR),
    "pc_throttled": _row(PC_COLS, ERR),  # the stand-in answers every request 429 RESOURCE_EXHAUSTED
    # RGW checks signatures (moto's RDS does not: rds_snapshot has no access-denied case here).
    "s3_denied": _row(["replica_s3", "immutability_probe", "postgres_restore_s3", "dataset",
                        "model_weights", "redis_restore", "terraform_state", PARQUET_EXPORT, *GENERIC], ERR),
    "pg_denied": _row(PG_COLS, ERR),
    "pc_denied": _row(PC_COLS, ERR),  # a wrong API key: the stand-in answers 401 UNAUTHENTICATED, like Pinecone
    "dns_unresolvable": _row(S3_COLS + PG_COLS + PC_COLS, ERR),
    "disk_full_sandbox": _row(["postgres_restore", "postgres_restore_s3", "vector_restore"], ERR)
    | {"replica_fs": OK},
    "corrupt_byte": _row(BACKUP_COLS, FAILED),
    "truncated_file": _row([*BACKUP_COLS, "terraform_state", PARQUET_EXPORT], FAILED),  # a cut state is no JSON
    # generic: copy gone; terraform_state: the state object deleted
    "missing_object": _row([*BACKUP_COLS, "rds_snapshot", "consistency_group", "terraform_state", PARQUET_EXPORT,
                            *GENERIC], FAILED),
    "lock_missing": _row(["immutability_probe"], FAILED),
    "replication_disabled": _row(["s3_replication"], FAILED),  # the production bucket's rule put Disabled
    "replay_paused": _row(["postgres_replica_lag"], FAILED),
    "skew": _row(["consistency_group"], FAILED),
    # Not a copy, and times that cannot be believed (issue 13), observed by every run:
    "copy_hardlinked": _row(["replica_fs"], FAILED),  # a file of the DR copy is production's own inode
    "time_in_future": _row(["replica_fs", "postgres_restore", "vector_restore"], FAILED),  # every time is 2099
    # A valid pg_dump of the wrong, empty database: production's tables with rows do not come back (issue 13).
    "dump_of_empty_database": _row(["postgres_restore"], FAILED),
    # Production is live (issue 13): changed after the copy was taken, the copy is behind (ok within the RPO).
    "production_changed": _row(["replica_fs"], OK),
    # The rest of issue 13, one row per case (the findings that must explain each are in FINDINGS below):
    "copy_behind_past_rpo": _row(["replica_fs"], FAILED),  # the same copy, taken 8 days ago (RPO 7d)
    "copy_symlinked": _row(["replica_fs"], FAILED),  # the copy's directory swapped for a symlink to production
    "copy_on_production_disk": _row(["replica_fs"], OK),  # a copy still (own bytes), but never off-site
    "copy_on_tmpfs": _row(["replica_fs"], OK),  # another device, but volatile: no medium
    "seal_edited": _row(["replica_fs"], FAILED),  # signed seal, then one byte of it edited
    "seal_unsigned": _row(["replica_fs"], FAILED),  # an unsigned seal where signed seals are required
    "dump_of_wrong_database": _row(["postgres_restore"], FAILED),  # rows, but none of production's tables
    "dump_comment_only": _row(["postgres_restore"], FAILED),  # pg_dump's two comment lines, nothing else
    "production_unmounted_manifest": _row(["replica_fs"], ERR),  # `manifest:` set, production not mounted
    "replaced_by_zeros": _row(["replica_fs"], FAILED),  # same size and mtime, under a verification budget
    "repaired_backup": _row(["replica_fs"], OK),  # failed, then repaired: ok, restore_errors passes at once
}
# recovery_dependencies probes the S3 side (its host name, a TCP connection, KMS DescribeKey on moto): the side
# down, stalled (the probe's 5 s timeout), resetting or unresolvable is what it exists to report -- ``failed``, a
# restore would stop there --, a KMS answering 503 is could-not-check (``error``), a key pending deletion fails.
# Not in s3_denied (the wrong secret is for Ceph RGW, which has no KMS).
for _fault, _want in {"s3_stopped": FAILED, "s3_slow": OK, "s3_stall": FAILED, "s3_reset": FAILED,
                      "s3_slowdown": ERR, "dns_unresolvable": FAILED, "missing_object": FAILED}.items():
    EXPECTED[_fault][DEPENDENCY] = _want
# Findings that must (or, with "!", must not) be among a column's findings: the outcome for the right reason.
FINDINGS: dict[str, dict[str, set[str]]] = {
    "production_changed": {"replica_fs": {"copy_behind", "!rpo_exceeded"}},
    "replication_disabled": {"s3_replication": {"replication_rule_disabled"}},
    "copy_behind_past_rpo": {"replica_fs": {"copy_behind", "rpo_exceeded", "!content_mismatch"}},
    "copy_symlinked": {"replica_fs": {"copy_aliases_production"}},
    "copy_on_production_disk": {"replica_fs": {"same_failure_domain"}},
    "copy_on_tmpfs": {"replica_fs": {"volatile_media", "!same_failure_domain"}},
    "seal_edited": {"replica_fs": {"seal_signature_invalid"}},
    "seal_unsigned": {"replica_fs": {"seal_unsigned"}},
    "dump_of_wrong_database": {"postgres_restore": {"table_missing"}},
    "dump_comment_only": {"postgres_restore": {"restore_empty"}},
    "production_unmounted_manifest": {"replica_fs": {"manifest_unreadable", "!manifest_missing"}},
    "replaced_by_zeros": {"replica_fs": {"content_mismatch"}},
    "missing_object": {"terraform_state": {"state_missing"}, DEPENDENCY: {"dependency_key_unusable"},
                       PARQUET_EXPORT: {"no_backup"}},
    "truncated_file": {"terraform_state": {"state_invalid"}, PARQUET_EXPORT: {"recovery_point_unreadable"}},
    "s3_stopped": {DEPENDENCY: {"dependency_unreachable"}},
    "s3_stall": {DEPENDENCY: {"dependency_unreachable"}},
    "s3_reset": {DEPENDENCY: {"dependency_unreachable"}},
    "s3_slowdown": {DEPENDENCY: {"dependency_not_checked", "!dependency_unreachable"}},
    "dns_unresolvable": {DEPENDENCY: {"dependency_unreachable"}},
}
YEAR_2099 = 4_070_908_800.0
EIGHT_DAYS = 8 * 86400.0


def _swap_for_symlink(sc: Scenario) -> None:
    """The copy's directory replaced, while the daemon runs, by a symlink to production's (the config loaded
    with a real directory: only a check made on every run can see it)."""
    copy = sc.dir / "dr" / "files"
    shutil.rmtree(copy)
    copy.symlink_to(sc.dir / "local" / "files", target_is_directory=True)


def _replace_with_zeros(sc: Scenario) -> None:
    """One copy file replaced by zeros of the same size and mtime: written aside and renamed over it."""
    victim = sc.dir / "dr" / "files" / "file-0004.bin"
    st = victim.stat()
    aside = victim.with_name("file-0004.bin.new")
    aside.write_bytes(bytes(st.st_size))
    os.utime(aside, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(aside, victim)


def _repair(sc: Scenario) -> None:
    shutil.copy2(sc.dir / "local" / "files" / "file-0004.bin", sc.dir / "dr" / "files" / "file-0004.bin")


# Faults made while the daemon runs: the column (run every few seconds) first has this outcome, then the fault
# is made, and the column's outcome in the table is that of a run that started after it.
LATER: dict[str, tuple[frozenset[str], Callable[[Scenario], None]]] = {
    "copy_symlinked": (OK, _swap_for_symlink),
    "replaced_by_zeros": (OK, _replace_with_zeros),  # the first run read every byte; the next ones read nothing
    "repaired_backup": (FAILED, _repair),
}
SLOW_LATENCY = 0.05  # seconds per chunk: slow, but inside every timeout
# The finding the Pinecone drill must report per fault (an outcome for the right reason: a bad backup is found by
# the check meant for it, a broken path is named as such).
PINECONE_CODES = {"pc_stopped": "unreachable", "pc_stall": "timeout", "pc_reset": "unreachable",
                  "pc_throttled": "throttled", "pc_denied": "access_denied", "dns_unresolvable": "unreachable",
                  "corrupt_byte": "vector_mismatch", "truncated_file": "missing_rows", "missing_object": "no_backup"}


@pytest.fixture
def scenario(request: pytest.FixtureRequest, world: World, moto: MotoServer) -> Iterator[Scenario]:
    fault: str = request.param
    columns = tuple(c for c in COLUMNS if c in EXPECTED[fault])
    with ExitStack() as stack:
        ends = Endpoints(moto, moto.endpoint_url, moto.access_key, moto.secret_key, world.primary.host,
                         world.primary.port, world.standby.port, world.vector.port)
        pinecone = MatrixPinecone()  # the Pinecone stand-in (seeded by Scenario.build), started if a column uses it
        if "vector_pinecone" in columns or PARQUET_EXPORT in columns:
            ends.pinecone = pinecone
            pinecone.start()
            stack.callback(pinecone.stop)
        side, _, mode = fault.partition("_")
        proxy_fault = {"slow": Fault.LATENCY, "stall": Fault.STALL, "reset": Fault.RESET,
                       "slowdown": Fault.SLOWDOWN}.get(mode)
        if proxy_fault is not None:
            def proxy(host: str, port: int) -> FaultProxy:
                p = FaultProxy(host, port).start()
                stack.callback(p.stop)
                p.set(proxy_fault, SLOW_LATENCY)
                return p
            if side == "s3":
                ends.s3_url = proxy("127.0.0.1", moto.port).endpoint_url
            elif side == "pc":  # control plane and (advertised index hosts) data plane
                ends.pinecone_url = pinecone.advertised = proxy("127.0.0.1", pinecone.port).endpoint_url
            else:
                ends.pg_port = proxy(world.primary.host, world.primary.port).port
                ends.standby_port = proxy(world.standby.host, world.standby.port).port
                ends.vector_port = proxy(world.vector.host, world.vector.port).port
        elif fault == "s3_stopped":
            stopped = MotoServer()
            stopped.start()
            ends.s3_url = stopped.endpoint_url
            stopped.cleanup()  # the endpoint now refuses connections: a stopped server
        elif fault == "s3_denied":
            rgw = request.getfixturevalue("rgw")
            ends.s3_server, ends.s3_url = rgw, rgw.endpoint_url
            ends.s3_access_key, ends.s3_secret_key = rgw.access_key, "not-the-secret-key"
        elif fault == "pc_stopped":
            stopped_pc = MatrixPinecone()
            stopped_pc.start()
            ends.pinecone_url = stopped_pc.url
            stopped_pc.stop()  # the endpoint now refuses connections: a stopped server
        elif fault == "pg_denied":
            ends.pg_user = "drwatch_nobody"
        elif fault == "pc_denied":
            ends.pinecone_key = "pcsk-not-the-api-key-0000"
        elif fault == "dns_unresolvable":
            ends.s3_url = f"http://{DNS_INVALID}:9000"
            ends.pg_host = DNS_INVALID
            ends.pinecone_url = f"http://{DNS_INVALID}:443"
        sc = Scenario(world, fault, columns, ends)
        if mode == "stall":
            sc.timeout = "10s"  # a stalled answer ends in the client's timeout or ours: either is "error"-side
        stack.callback(sc.cleanup)
        sc.build()
        if fault in LATER:
            sc.assets["files"]["validators"][0]["schedule"] = {"every": "3s", "jitter": "0s"}
        if fault == "corrupt_byte":
            sc.damage(flip_byte)
        elif fault == "truncated_file":
            sc.damage(truncate)
        elif fault == "missing_object":
            sc.damage(None)  # (Pinecone: the stand-in was seeded without a backup)
        elif fault == "copy_hardlinked":
            victim = sc.dir / "dr" / "files" / "file-0004.bin"
            victim.unlink()
            os.link(sc.dir / "local" / "files" / "file-0004.bin", victim)
        elif fault == "production_changed":
            with (sc.dir / "local" / "files" / "file-0002.bin").open("ab") as fh:
                fh.write(b"appended after the backup\n")
            (sc.dir / "local" / "files" / "created-after-the-backup.log").write_bytes(b"new\n")
        elif fault == "copy_behind_past_rpo":
            when = time.time() - EIGHT_DAYS
            for path in (sc.dir / "dr" / "files").rglob("*"):
                if path.is_file():
                    os.utime(path, (when, when))
            with (sc.dir / "local" / "files" / "file-0002.bin").open("ab") as fh:
                fh.write(b"appended after the backup\n")
        elif fault == "copy_on_tmpfs":
            shm = Path(tempfile.mkdtemp(prefix="drw-fault-copy-", dir=SHM))
            stack.callback(shutil.rmtree, shm, ignore_errors=True)
            shutil.copytree(sc.dir / "dr" / "files", shm / "files")  # mtimes kept (copy2)
            sc.locations["tmpfs"] = {"kind": "filesystem", "path": str(shm), "site": "dc-c"}
            sc.assets["files"]["copies"] = [{"location": "tmpfs", "prefix": "files"}]
        elif fault in ("seal_edited", "seal_unsigned"):
            keys = sc.dir / "keys"
            keys.mkdir()
            generate(keys / "seal.key", keys / "seal.pub")
            sign = ["--sign", str(keys / "seal.key")] if fault == "seal_edited" else []
            sealed = run_cli("seal", "--location-path", str(sc.dir / "local" / "files"), *sign)
            assert sealed.returncode == 0, sealed.stderr
            sc.assets["files"]["seal_signature"] = {"public_key_path": str(keys / "seal.pub"), "required": True}
            if fault == "seal_edited":  # one hex digit of one file's checksum changed after signing
                seal_file = sc.dir / "local" / "files" / ".drwatch-manifest.jsonl"
                lines = seal_file.read_text().splitlines(keepends=True)
                entry = json.loads(lines[1])
                entry["sha256"] = ("0" if entry["sha256"][0] != "0" else "1") + entry["sha256"][1:]
                lines[1] = json.dumps(entry) + "\n"
                seal_file.write_text("".join(lines))
        elif fault in ("dump_of_wrong_database", "dump_comment_only"):
            # No `expect.tables`: what must come back is what production has (its tables with rows).
            del sc.assets["db"]["validators"][0]["expect"]
            header = "-- PostgreSQL database dump\n"
            body = ("CREATE TABLE invoices (id int PRIMARY KEY, total numeric);\n"
                    "INSERT INTO invoices SELECT g, g * 1.5 FROM generate_series(1, 500) g;\n"
                    if fault == "dump_of_wrong_database" else "")
            (sc.dir / "dumps" / "app.dump").write_text(f"{header}{body}-- PostgreSQL database dump complete\n")
        elif fault == "production_unmounted_manifest":
            mount_point = sc.dir / "mnt-production"  # an empty directory, not a mount point: a disk not mounted
            mount_point.mkdir()
            sc.locations["unmounted"] = {"kind": "filesystem", "path": str(mount_point), "site": "dc-a"}
            sc.assets["files"]["production"] = {"location": "unmounted", "prefix": "files"}
            sc.assets["files"]["manifest"] = str(mount_point / "files" / ".drwatch-manifest.jsonl")
        elif fault == "replaced_by_zeros":
            sc.assets["files"]["verification"] = {"read_every": "30d", "budget": {"egress_bytes_per_day": "1MiB"}}
        elif fault == "repaired_backup":
            flip_byte(sc.dir / "dr" / "files" / "file-0004.bin")
        elif fault == "dump_of_empty_database":
            subprocess.run([str(world.primary.bin_dir / "pg_dump"), "-Fc", "-f", str(sc.dir / "dumps" / "app.dump"),
                            world.primary.dsn("postgres")], check=True, capture_output=True, timeout=120)
        elif fault == "time_in_future":
            for path in (*(sc.dir / "local" / "files").rglob("*"), sc.dir / "dumps" / "app.dump",
                         sc.dir / "vecdumps" / "docs.dump"):
                os.utime(path, (YEAR_2099, YEAR_2099))
        elif fault == "pc_throttled":
            pinecone.fail("/", 429, times=10**6)
        elif fault == "disk_full_sandbox":
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "drwatch-faults", str(sc.sandbox_dir)],
                           check=True, capture_output=True, timeout=30)
            stack.callback(subprocess.run, ["umount", "-l", str(sc.sandbox_dir)], check=False, timeout=30)
        elif fault == "pg_stopped":
            world.standby.stop()
            world.primary.stop()
            world.vector.stop()

            def restart() -> None:
                world.vector.start()
                world.primary.start()
                world.standby.start()
                caught_up(world.primary, world.standby)
            stack.callback(restart)
        elif fault == "replay_paused":
            world.standby.psql("SELECT pg_wal_replay_pause()")

            def resume() -> None:
                world.standby.psql("SELECT pg_wal_replay_resume()")
                caught_up(world.primary, world.standby)
            stack.callback(resume)
            world.primary.psql("INSERT INTO beat DEFAULT VALUES", "app")
            target = world.primary.psql("SELECT pg_current_wal_lsn()")
            wait_until(lambda: world.standby.psql(f"SELECT pg_last_wal_receive_lsn() >= '{target}'::pg_lsn") == "t",
                       30, "the standby to receive the WAL")
            time.sleep(3.5)  # the oldest unreplayed transaction is now older than max_lag (3s)
        yield sc


# The faults are split over this module and test_matrix_more.py so that pytest-xdist (--dist loadfile, see
# scripts/test.sh) runs the two halves on different workers.
FIRST_HALF = list(EXPECTED)[: len(EXPECTED) // 2]
SECOND_HALF = list(EXPECTED)[len(EXPECTED) // 2:]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", FIRST_HALF, indirect=True)
def test_fault(scenario: Scenario, record_property: Any) -> None:
    check_fault(scenario, record_property)


def check_fault(scenario: Scenario, record_property: Any) -> None:
    """One fault, one daemon: each affected validator gets its expected outcome, the untouched asset stays ok,
    /metrics keeps answering, and no sandbox (directory or process) is left behind."""
    fault = scenario.fault
    daemon = scenario.daemon()
    try:
        daemon.start(timeout=60)
        watch = Watch(daemon)
        keys = {c: WHERE[c] for c in (*scenario.columns, "healthy")}
        after = {WHERE["consistency_group"]: [("cg_a", "replica"), ("cg_b", "replica")]}
        got = watch.wait(list(keys.values()), after)
        if fault in LATER:
            before, make = LATER[fault]
            key = WHERE["replica_fs"]
            assert got[key]["outcome"] in before, f"{fault}: before the fault {got[key]['outcome']}: {got[key]}"
            make(scenario)
            got[key] = watch.wait([key], {key: [key]})[key]  # the third run seen: it started after the fault
        observed = {c: got[k]["outcome"] for c, k in keys.items()}
        expected = {**EXPECTED[fault], "healthy": OK}
        MATRIX[fault] = {c: (observed[c], expected[c]) for c in keys}
        # the row also travels with the test report, so the table is printed under pytest-xdist too
        record_property("fault_matrix_row", {"fault": fault, "cells": {c: [observed[c], sorted(expected[c])]
                                                                       for c in keys}})
        details = {c: [(f["code"], f["subject"]) for f in got[k]["findings"]] for c, k in keys.items()}
        mismatched = {c: (observed[c], sorted(expected[c]), details[c]) for c in keys if observed[c] not in expected[c]}
        assert not mismatched, f"{fault}: outcome mismatches {mismatched}"
        for c, wanted in FINDINGS.get(fault, {}).items():
            found = {code for code, _ in details[c]}
            wrong = {w for w in wanted if (w[1:] in found if w.startswith("!") else w not in found)}
            assert not wrong, f"{fault}: {c} findings {sorted(found)} break {sorted(wrong)}"
        # (b) alive and serving after the faulty runs; every result is a metric too.
        text = daemon.metrics()
        for c, (asset, label) in keys.items():
            assert metric_value(text, "drwatch_validator_outcome", asset=asset, validator=label,
                                outcome=observed[c]) == 1, (c, asset, label)
        assert watch.slowest < 5, f"/metrics took {watch.slowest:.1f}s"
        if fault == "repaired_backup":  # proven fixed: restore_errors passes without waiting out the window
            assert metric_value(text, "drwatch_asset_rule_state", asset="files", rule="restore_errors",
                                state="pass") == 1, text
        # (d) every run has finished: nothing of theirs may remain.
        assert not list(scenario.sandbox_dir.glob("drwatch-sbx-*"))
        wait_until(lambda: not processes_mentioning(str(scenario.sandbox_dir)), 15, "sandbox processes to end")
        if "vector_pinecone" in keys:
            want = PINECONE_CODES.get(fault)
            assert want is None or want in {c for c, _ in details["vector_pinecone"]}, \
                f"{fault}: vector_pinecone {observed['vector_pinecone']} without {want}: {details['vector_pinecone']}"
            check_pinecone(scenario, drilled=observed["vector_pinecone"] == "ok" or fault in PINECONE_BAD_BACKUPS)
    finally:
        code = daemon.stop(timeout=60)
    assert code == 0, daemon.log()[-3000:]
    assert not list(scenario.sandbox_dir.glob("drwatch-sbx-*"))
    if "vector_pinecone" in scenario.columns or PARQUET_EXPORT in scenario.columns:
        check_pinecone(scenario)


def check_pinecone(scenario: Scenario, drilled: bool = False) -> None:
    """No temporary ``drwatch-drill-*`` index is left on the stand-in and production was never deleted; a drill
    that got as far as a restore (it passed, or found a bad backup's damage) did restore one and delete it."""
    server: MatrixPinecone = scenario.ends.pinecone
    assert server.temporary_indexes() == [], f"{scenario.fault}: temporary Pinecone indexes left behind"
    assert PINECONE_PROD in server.index_names()
    assert not server.requests_matching("DELETE", f"/indexes/{PINECONE_PROD}")
    if drilled:
        assert server.requests_matching("POST", "/create-index"), "no temporary index was restored"
        assert server.requests_matching("DELETE", "/indexes/drwatch-drill-"), "the temporary index was not deleted"


def test_every_registered_kind_is_in_the_matrix() -> None:
    """A validator kind added to the registry fails this until it has a column in the fault matrix."""
    from drwatch.validators import REGISTRY
    from tests.faults.estate import COLUMN_KIND

    assert set(REGISTRY) <= {COLUMN_KIND.get(c, c) for c in COLUMNS}
