"""Proof of read-only: across a full run of every validator, drwatch writes nothing it watches.

* S3: all of drwatch's S3 traffic goes through a recording proxy (tests/support/s3proxy.py) in front of moto. The only
  requests that are not GET/HEAD must be the immutability probe's canary writes under the canary prefix; every
  bucket holds, outside that prefix, exactly the object versions it held before. (The RDS API, a POST-only
  query protocol, is compared before/after instead: same instances, same snapshots.)
* PostgreSQL production (the restore drill's row-count source and the consistency group's document ids): the
  drill connects as a role whose every statement the server logs (``log_statement = 'all'`` for that role;
  ``'mod'`` for everyone else). The log shows drwatch's statements, none of them writes, and every transaction
  it opened is READ ONLY; nothing at all changed data in production meanwhile.
"""

from __future__ import annotations

import re
from typing import Any

import boto3
import pytest

from tests.faults.estate import (
    CANARY_PREFIX,
    COLUMNS,
    WHERE,
    Endpoints,
    Scenario,
    Watch,
    World,
    wait_until,
)
from tests.support.helpers import processes_mentioning
from tests.support.s3helpers import versions
from tests.support.s3proxy import RecordingProxy
from tests.support.s3servers import MotoServer

WRITE_SQL = re.compile(r"\b(?:INSERT|UPDATE|DELETE|TRUNCATE|MERGE|CREATE|DROP|ALTER|GRANT|REVOKE|COPY\s+\S+\s+FROM|"
                       r"VACUUM|REINDEX|CLUSTER|LOCK|COMMENT|SECURITY\s+LABEL|REFRESH|NOTIFY|"
                       r"SELECT\s+.*\bINTO|nextval|setval|pg_advisory\w*)\b", re.IGNORECASE)
STATEMENT = re.compile(r"user=drwatch_ro db=(\S*) app=(\S*): LOG:\s+(?:statement|execute [^:]*): (.*)")


def rds_state(moto: MotoServer) -> list[Any]:
    rds = boto3.client("rds", endpoint_url=moto.endpoint_url, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    instances = sorted((i["DBInstanceIdentifier"], i["DBInstanceStatus"], i["BackupRetentionPeriod"])
                       for i in rds.describe_db_instances()["DBInstances"])
    snaps = sorted((s["DBSnapshotIdentifier"], s["Status"], s["SnapshotType"])
                   for s in rds.describe_db_snapshots()["DBSnapshots"])
    return [instances, snaps]


@pytest.mark.slow
def test_a_full_run_of_every_validator_writes_only_canaries(world: World, moto: MotoServer,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Every validator runs once (all ok); S3 sees reads plus canary writes only, buckets are unchanged outside
    the canary prefix, RDS is unchanged, and production PostgreSQL received read-only statements only."""
    proxy = RecordingProxy("127.0.0.1", moto.port)
    proxy.start()
    ends = Endpoints(moto, proxy.endpoint_url, moto.access_key, moto.secret_key, world.primary.host,
                     world.primary.port, world.standby.port, world.vector.port, pg_user="drwatch_ro",
                     rds_url=moto.endpoint_url)
    sc = Scenario(world, "read_only", COLUMNS, ends)
    try:
        sc.build()
        before = {name: versions(moto, name, exclude_prefix=CANARY_PREFIX) for name in sc.buckets.values()}
        rds_before = rds_state(moto)
        servers = {"app": world.primary, "vec_prod": world.vector}
        offsets = {db: server.log_path.stat().st_size for db, server in servers.items()}
        daemon = sc.daemon()
        try:
            daemon.start(timeout=60)
            keys = [WHERE[c] for c in (*COLUMNS, "healthy")]
            got = Watch(daemon).wait(keys, {WHERE["consistency_group"]: [("cg_a", "replica"), ("cg_b", "replica")]})
            assert {k: r["outcome"] for k, r in got.items()} == dict.fromkeys(keys, "ok"), \
                {k: r["findings"] for k, r in got.items() if r["outcome"] != "ok"}
        finally:
            assert daemon.stop(timeout=60) == 0
        records = proxy.snapshot()
    except BaseException:
        sc.cleanup()
        raise
    finally:
        proxy.stop()
        wait_until(lambda: not processes_mentioning(str(sc.sandbox_dir)), 15, "sandbox processes to end")

    try:
        # --- S3: reads everywhere, writes only under the canary prefix of the probed bucket ---
        touched = {r.bucket for r in records}
        assert set(sc.buckets.values()) <= touched, (sc.buckets, touched)
        writes = [(r.method, r.bucket, r.key, r.query) for r in records if r.method not in ("GET", "HEAD")]
        outside = [w for w in writes if w[1] != sc.buckets["vault"] or not w[2].startswith(CANARY_PREFIX)]
        assert outside == [], outside
        assert any(m == "PUT" for m, *_ in writes), "the probe wrote no canary: the proof would prove nothing"
        assert any(m == "DELETE" for m, *_ in writes), "the probe never tried to delete its canary"
        for name, held in before.items():
            assert versions(moto, name, exclude_prefix=CANARY_PREFIX) == held, name
        assert rds_state(moto) == rds_before

        # --- PostgreSQL production: drwatch's statements are all reads inside read-only transactions ---
        counts = []
        for db, server in servers.items():
            with server.log_path.open("rb") as fh:
                fh.seek(offsets[db])
                log = fh.read().decode(errors="replace")
            statements = [m.groups() for m in map(STATEMENT.search, log.splitlines()) if m]
            assert statements, f"no statement of drwatch's production role was logged in {db}:\n{log[-3000:]}"
            assert {app for _db, app, _sql in statements} == {"drwatch"}
            assert {d for d, _app, _sql in statements} == {db}
            writing = [sql for _db, _app, sql in statements if WRITE_SQL.search(sql)]
            assert writing == [], writing
            begins = [sql for _db, _app, sql in statements if sql.strip().upper().startswith(("BEGIN", "START"))]
            assert all("READ ONLY" in sql.upper() for sql in begins), begins
            # log_statement=mod for every other session: no one changed production data during the run.
            mods = [line for line in log.splitlines() if f"db={db} " in line and "statement:" in line
                    and "user=drwatch_ro" not in line]
            assert mods == [], mods
            counts.append(f"{db}: {len(statements)} statements, {len(begins)} read-only transactions")
        with capsys.disabled():
            print(f"\nread-only proof: {len(records)} S3 requests ({len(records) - len(writes)} GET/HEAD, "
                  f"{len(writes)} canary writes: {sorted({m for m, *_ in writes})}); production "
                  f"{'; '.join(counts)}; 0 writes")
    finally:
        sc.cleanup()
