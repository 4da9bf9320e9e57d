"""No handle outlives a validator run that is cut off: every validator kind of the registry, timed out and cancelled
mid-work, against real data and real servers.

Each case runs one validator through a real Runner (store, S3 client pool, sandboxes) while a sampler watches
this process's open file descriptors (``/proc/self/fd``) and its descendant processes. The cut lands mid-work by
construction, not by luck: the work is made long (GiB-sized sparse files to hash, a loopback proxy that delays
every answer of S3, RDS or PostgreSQL, a sandbox cluster being initialised and restored into) and the test
checks what was open at the cut:

- ``timeout``: the validator's timeout expires while the sampler sees its work in progress (the sample just
  before the deadline shows the case's evidence: the seal open, a data file being hashed, a connection, a
  child process); the outcome is ``timeout``. A timeout that expired before the work began (a client still
  being built on a loaded machine) is retried with twice the timeout.
- ``cancel``: the run task is cancelled once the sampler sees that evidence (the case's ``cancel_at``: the seal
  opened but not read yet, a dump being written, a sandbox server running...); the recorded outcome is
  ``cancelled``.

Then, with the garbage collector off until the descriptors are counted (what only a collection would close counts
as left open), under ``-W error`` semantics (``warnings.simplefilter("error")``, then ``gc.collect()``, with an
unraisable-exception hook and tracemalloc on to say where a leaked object came from): no ``ResourceWarning`` or
other unraisable error, no async generator left to the garbage collector unfinished, every file descriptor opened
during the run closed again, no process started by the run left (alive or zombie; a sandbox cluster's server,
which pg_ctl daemonizes, is looked for by its data directory), the sandbox directory empty and no task of the run
pending. A last test does the same cuts in a real daemon and drains it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch import validators
from drwatch.config.model import Config, parse_config
from drwatch.core.model import Outcome, Result
from drwatch.core.sandbox import make_dirs
from drwatch.engine.runner import Runner
from drwatch.formats.parquet import ParquetFacts, read_file_facts
from drwatch.formats.sealing import seal_directory, seal_entries
from drwatch.storage.filesystem import MANIFEST_NAME, Entry, alist, sha256_file
from drwatch.validators.postgres.pgtemplate import PREFIX as TEMPLATE_PREFIX
from tests.faults.estate import (
    GENERIC,
    Endpoints,
    MatrixPinecone,
    Scenario,
    World,
    make_world,
    minilm_estate,
    redis_rdb,
)
from tests.support.helpers import (
    REPO,
    DaemonProcess,
    free_port,
    processes_mentioning,
    sparse_file,
    write_config,
    write_tree,
)
from tests.support.runs import open_runner
from tests.support.s3helpers import bucket, upload
from tests.support.s3helpers import client as s3client
from tests.support.s3servers import MotoServer

pytestmark = pytest.mark.slow

BLOB = 256 << 20  # each sparse blob: 256 MiB of zeros (no disk space), read and hashed for real
BLOBS = 32  # more than a merge keeps in flight: the seal is still being read when the run is cut
LATENCY = 0.3  # seconds added by the proxies to every chunk a server sends back


# --- what the process holds ----------------------------------------------------------------------------


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what they point at."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed meanwhile
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


def descendants() -> set[int]:
    """Every process below this one, zombies included (a child that was killed but never waited for)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def describe(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} [{state}] {cmd[:160]}"


@dataclass
class Sample:
    at: float  # time.time()
    fds: dict[int, str]  # descriptors opened since the baseline
    procs: set[int]  # processes started since the baseline
    servers: list[str] = field(default_factory=list)  # command lines of processes running in the sandbox dir


class Watcher:
    """Samples, every 20 ms, what the process holds beyond its baseline."""

    def __init__(self, sandboxes: Path | None = None) -> None:
        self.base_fds = open_fds()
        self.base_procs = descendants()
        self.sandboxes = sandboxes
        self.samples: list[Sample] = []

    def sample(self) -> Sample:
        fds = {fd: t for fd, t in open_fds().items() if self.base_fds.get(fd) != t}
        servers = [describe(p) for p in processes_mentioning(str(self.sandboxes))] if self.sandboxes else []
        return Sample(time.time(), fds, descendants() - self.base_procs, servers)

    async def run(self, seen: asyncio.Event, evidence: Callable[[Sample], bool]) -> None:
        while True:
            s = await asyncio.to_thread(self.sample)
            self.samples.append(s)
            if evidence(s):
                seen.set()
            await asyncio.sleep(0.02)

    def before(self, at: float) -> Sample | None:
        return next((s for s in reversed(self.samples) if s.at < at), None)


# --- evidence of work in progress ------------------------------------------------------------------


def holds(fragment: str) -> Callable[[Sample], bool]:
    return lambda s: any(fragment in target for target in s.fds.values())


def holds_all(*fragments: str) -> Callable[[Sample], bool]:
    return lambda s: all(holds(f)(s) for f in fragments)


def socket_open(s: Sample) -> bool:
    return any(t.startswith("socket:") for t in s.fds.values())


def child_running(s: Sample) -> bool:
    """A child process of the run, or the pipes of one being started or reaped."""
    return bool(s.procs) or any(t.startswith("pipe:") for t in s.fds.values())


def child_or_socket(s: Sample) -> bool:
    return child_running(s) or socket_open(s)


def child_alive(s: Sample) -> bool:
    return bool(s.procs)


def sandbox_server(s: Sample) -> bool:
    """A PostgreSQL server runs on a data directory in the sandbox (pg_ctl started it: not a descendant)."""
    return any(" -D " in cmd and "postgres" in cmd for cmd in s.servers)


@dataclass(frozen=True)
class Case:
    kind: str  # the registry's kind
    asset: str
    label: str
    timeout: float  # the validator's timeout in the ``timeout`` variant (seconds)
    evidence: Callable[[Sample], bool]  # what the run holds while it works
    what: str  # the evidence, in words
    cancel_at: Callable[[Sample], bool] | None = None  # when to cancel, if not at the first evidence
    cancel_delay: float = 0.0  # seconds from that evidence to the cancellation (deeper into the work)
    leftovers: Callable[[Estate], list[str]] | None = None  # what else the run may leave behind (none expected)
    # A validator that bounds its own step by the run's deadline ends as ``error`` with this finding just before
    # the timeout would have cut it (the step was killed: the same cleanup is under test).
    own_deadline: str | None = None


CASES: dict[str, Case] = {
    # Hashing GiBs of a production and a copy directory against the seal; the seal stays open while the merge
    # waits for a free place in its window.
    "replica": Case("replica", "big_files", "replica", 1.5, holds_all(MANIFEST_NAME, "/blobs/"),
                    "the seal and a data file open"),
    "dataset": Case("dataset", "big_dataset", "dataset", 1.5, holds_all(MANIFEST_NAME, "/blobs/"),
                    "the seal and a data file open"),
    # The seal is opened, then the S3 copy is listed (slowly): a cancellation there meets a seal that was opened
    # but not read yet (what CI once caught leaking when a run timed out).
    "dataset_s3": Case("dataset", "s3_dataset", "dataset", 1.5, socket_open, "a connection to S3 (the seal open, "
                       "when cancelled)", cancel_at=holds(MANIFEST_NAME)),
    # Objects streamed from an S3 copy through the slow proxy (2 MiB each, 64 KiB per delayed chunk): the cut
    # lands while GET bodies are being read.
    "replica_s3": Case("replica", "big_objects", "replica", 4.0, socket_open, "a connection to S3",
                       cancel_delay=3.0),
    "replica_s3_ledger": Case("replica", "big_objects_ledger", "replica", 4.0, socket_open, "a connection to S3",
                              cancel_delay=3.0),
    "model_weights": Case("model_weights", "big_model", "model_weights", 1.5, holds("/blobs/"),
                          "a weights file being hashed"),
    # Servers behind a proxy that delays every answer.
    "immutability_probe": Case("immutability_probe", "vault", "immutability_probe", 1.5, socket_open,
                               "a connection to S3"),
    "s3_replication": Case("s3_replication", "repl", "s3_replication", 1.0, socket_open, "a connection to S3"),
    "rds_snapshot": Case("rds_snapshot", "rds", "rds_snapshot", 3.0, socket_open, "a connection to the RDS API"),
    "postgres_replica_lag": Case("postgres_replica_lag", "standby", "lag", 1.2, socket_open,
                                 "a connection to the standby"),
    "consistency_group": Case("consistency_group", "cg_a", "consistency_group", 1.2, socket_open,
                              "a connection to the document ids database"),
    # Drills: connections to production (behind the proxy) and a sandbox cluster (initdb, pg_ctl, pg_restore as
    # child processes). Cancelled once a child process runs.
    "postgres_restore": Case("postgres_restore", "db", "postgres_restore", 2.0, child_or_socket,
                             "a connection or a sandbox cluster's processes", cancel_at=child_alive),
    # Cancelled once the sandbox cluster's server runs (then it must be stopped, not only its directory removed).
    "postgres_restore_cluster": Case("postgres_restore", "db", "postgres_restore", 2.0, child_or_socket,
                                     "a connection or a sandbox cluster's processes", cancel_at=sandbox_server),
    # The dump fetched from S3 through the slow proxy into the sandbox: cancelled while it is being written.
    "postgres_restore_s3": Case("postgres_restore", "db_s3", "postgres_restore", 2.0, child_or_socket,
                                "a connection or a sandbox cluster's processes", cancel_at=holds("/dump/")),
    "vector_restore": Case("vector_restore", "index", "vector_restore", 2.0, child_or_socket,
                           "a connection or a sandbox cluster's processes", cancel_at=child_alive),
    "vector_restore_cluster": Case("vector_restore", "index", "vector_restore", 2.0, child_or_socket,
                                   "a connection or a sandbox cluster's processes", cancel_at=sandbox_server),
    # The real MiniLM restored into a sandbox and run by the inference worker (a subprocess loading torch).
    "model_weights_inference": Case("model_weights", "mwi", "model_weights", 3.0,
                                    lambda s: child_running(s) or holds("/sandboxes/")(s),
                                    "the model being restored or the inference worker", cancel_at=child_alive,
                                    cancel_delay=1.0, own_deadline="inference_timeout"),
    # A Parquet export loaded into the sandbox in 5000-row batches (read in threads): cancelled mid-load, the
    # export's file is closed with the run, not by the garbage collector.
    "vector_restore_parquet": Case("vector_restore", "pq_index", "vector_restore", 2.0, child_or_socket,
                                   "a connection or a sandbox cluster's processes", cancel_at=holds("export.parquet"),
                                   cancel_delay=0.3),
    # The Pinecone backend against the stand-in (every request answered 0.3 s late): a temporary index is
    # restored from the backup, then queried; none may be left. Its requests are bounded by the run's deadline: on
    # a busy loop the next request finds no time left before the runner's timeout fires (error, code timeout).
    "vector_restore_pinecone": Case("vector_restore", "pcindex", "vector_restore", 2.0, socket_open,
                                    "a connection to the Pinecone API", cancel_delay=1.0,
                                    leftovers=lambda e: e.pinecone_temporary(), own_deadline="timeout"),
    # The RDB fetched from S3 through the slow proxy (then checked and loaded into a sandbox redis-server): cut
    # while it is being fetched.
    "redis_restore": Case("redis_restore", "redis", "redis_restore", 1.0, socket_open, "a connection to S3"),
    # The state object's bucket facts, GET and lock-file HEAD through the slow proxy: cut while talking to S3.
    "terraform_state": Case("terraform_state", "tfstate", "terraform_state", 1.0, socket_open, "a connection to S3"),
    # Probes of the S3 side's name and port, and KMS DescribeKey through a proxy that answers 5 minutes late (the
    # probe's own timeout is a minute): cut while the KMS request is in flight.
    "recovery_dependencies": Case("recovery_dependencies", "deps", "recovery_dependencies", 1.0, socket_open,
                                  "a connection to the KMS endpoint"),
}
# Every kind of the plugin tuple without a hand-made column in the fault estate runs on its generic one
# (tests/faults/estate.py GENERIC: its S3 copy behind the slow proxy, so each request takes a while): cut while
# it talks to S3.
CASES.update({kind: Case(kind, f"gen_{kind}", kind, 1.0, socket_open, "a connection to S3") for kind in GENERIC})



def sandbox_leftovers(sandboxes: Path) -> list[Path]:
    """What a run left in the sandbox root. A completed initdb template (``drwatch-pgtemplate-*``,
    :mod:`drwatch.validators.postgres.pgtemplate`) is a cache kept on purpose, not a leftover; its
    temporary copy (a dot name) would be."""
    return sorted(p for p in sandboxes.iterdir() if not p.name.startswith(TEMPLATE_PREFIX))

def test_a_thread_cut_off_never_re_creates_a_removed_sandbox(tmp_path: Path) -> None:
    """make_dirs (the directories a worker thread writes into) creates below the sandbox only: once the sandbox is
    removed (the run was cut off, the thread went on) it raises FileNotFoundError instead of re-creating it, the
    leftover mkdir(parents=True) left behind."""
    sandbox = tmp_path / "drwatch-sbx-run"
    sandbox.mkdir()
    make_dirs(sandbox, sandbox / "dump" / "a" / "b")
    make_dirs(sandbox, sandbox / "dump" / "a")  # existing: fine
    assert (sandbox / "dump" / "a" / "b").is_dir()
    (sandbox / "dump" / "file").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        make_dirs(sandbox, sandbox / "dump" / "file" / "c")
    shutil.rmtree(sandbox)
    with pytest.raises(FileNotFoundError):
        make_dirs(sandbox, sandbox / "dump" / "a")
    assert not sandbox.exists()
    with pytest.raises(ValueError):
        make_dirs(sandbox, tmp_path / "elsewhere")


def test_every_registered_kind_has_a_case() -> None:
    """A kind added to the registry without a case here fails this test (and so is never left untested)."""
    assert {c.kind for c in CASES.values()} == set(validators.REGISTRY)


# --- the estate -------------------------------------------------------------------------------------

PROXY = """
import sys
from tests.faults.proxy import Fault, FaultProxy
proxy = FaultProxy(sys.argv[1], int(sys.argv[2])).start()
proxy.set(Fault.LATENCY, float(sys.argv[3]))
print(proxy.port, flush=True)
sys.stdin.read()
proxy.stop()
"""


@contextlib.contextmanager
def slow_proxy(host: str, port: int, latency: float = LATENCY) -> Iterator[int]:
    """A loopback proxy delaying every chunk the server sends by ``latency``, in its own process (so that its
    sockets are not counted as this process's)."""
    proc = subprocess.Popen([sys.executable, "-c", PROXY, host, str(port), str(latency)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def zero_digest(size: int) -> str:
    h = hashlib.sha256()
    chunk = bytes(1 << 20)
    for _ in range(size >> 20):
        h.update(chunk)
    return h.hexdigest()


async def seal_tree(root: Path, zeros: str) -> None:
    """Seal ``root`` with drwatch's own seal writer; the sparse blobs (all zeros) are not hashed again: their
    digest is the known one of BLOB zero bytes."""
    async def digest(entry: Entry) -> tuple[str, int]:
        if entry.key.startswith("blobs/"):
            assert entry.size == BLOB
            return zeros, BLOB
        return await asyncio.to_thread(sha256_file, root.joinpath(*entry.parts))

    async def footer(entry: Entry) -> ParquetFacts:
        return await asyncio.to_thread(read_file_facts, root.joinpath(*entry.parts))

    await seal_entries(alist(root), digest, 8, out_path=root / MANIFEST_NAME, parquet=footer)


def export_parquet(path: Path, rows: int) -> None:
    """A Parquet export (id, vector) of ``rows`` rows: the test corpus's vectors over and over."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.support.vectorcorpus import corpus

    vectors = np.resize(corpus().vectors, (rows, 384)).astype(np.float32)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array(range(1, rows + 1), pa.int64()),
                             "vector": pa.array(list(vectors), pa.list_(pa.float32()))}), path)


def big_tree(root: Path, files: dict[str, bytes]) -> None:
    write_tree(root, files)
    for i in range(BLOBS):
        sparse_file(root / "blobs" / f"b{i:02d}.bin", BLOB)


@dataclass
class Estate:
    scenario: Scenario
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    def pinecone_temporary(self) -> list[str]:
        server: MatrixPinecone = self.scenario.ends.pinecone
        return server.temporary_indexes()


@pytest.fixture(scope="module")
def estate(moto: MotoServer) -> Iterator[Estate]:
    """The fault suites' estate (tests/faults/estate.py: PostgreSQL primary + standby, pgvector server, pg_dump
    archives, an RDS instance and buckets in moto), with S3/RDS and PostgreSQL reached through slow proxies, plus
    three filesystem assets of 8 GiB (sparse) per location for the hashing validators."""
    from drwatch.formats import safetensors as st
    from tests.test_dataset import parquet_bytes, table
    from tests.test_model_weights import _shard

    with contextlib.ExitStack() as stack:
        world: World = stack.enter_context(make_world(moto))
        s3_port = stack.enter_context(slow_proxy("127.0.0.1", moto.port))
        pg_port = stack.enter_context(slow_proxy(world.primary.host, world.primary.port))
        standby_port = stack.enter_context(slow_proxy(world.standby.host, world.standby.port))
        # RDS: the client takes a second to build (service model) before its first request; slower answers
        # keep the requests in flight at the cut.
        rds_port = stack.enter_context(slow_proxy("127.0.0.1", moto.port, 1.5))
        ends = Endpoints(s3_server=moto, s3_url=f"http://127.0.0.1:{s3_port}", s3_access_key=moto.access_key,
                         s3_secret_key=moto.secret_key, pg_host="127.0.0.1", pg_port=pg_port,
                         standby_port=standby_port, vector_port=world.vector.port,
                         rds_url=f"http://127.0.0.1:{rds_port}",
                         minilm=minilm_estate(Path(stack.enter_context(tempfile.TemporaryDirectory(dir="/tmp")))))
        sc = Scenario(world, "none", ("immutability_probe", "postgres_restore", "postgres_replica_lag",
                                      "rds_snapshot", "consistency_group", "vector_restore", "dataset",
                                      "vector_pinecone", "postgres_restore_s3", "model_weights_inference",
                                      "redis_restore", "s3_replication", "terraform_state", "recovery_dependencies",
                                      *GENERIC),
                      ends)
        stack.callback(sc.cleanup)
        sc.build()
        zeros = zero_digest(BLOB)
        trees = {
            "big_files": {"README.txt": b"files\n"},
            "big_dataset": {"events/part-0000.parquet": parquet_bytes(table(1000)), "README.txt": b"data\n"},
            "big_model": {"model.safetensors": _shard([("a", 3000)]), "config.json": b"{}"},
        }
        kinds = {"big_files": "replica", "big_dataset": "dataset", "big_model": "model_weights"}
        for asset, files in trees.items():
            big_tree(sc.dir / "local" / asset, files)
            asyncio.run(seal_tree(sc.dir / "local" / asset, zeros))
            big_tree(sc.dir / "dr" / asset, files)
            sc.assets[asset] = sc._asset(asset, [{"kind": kinds[asset]}], copies=["dr"])
        assert st.INDEX_NAME not in trees["big_model"]
        objects = {f"obj-{i}.bin": os.urandom(2 << 20) for i in range(4)}
        write_tree(sc.dir / "local" / "big_objects", objects)
        name = bucket(moto, "leak-objects")
        upload(moto, name, objects, prefix="big_objects/")
        sc.s3_location("s3objects", name)
        sc.assets["big_objects"] = sc._asset("big_objects", [{"kind": "replica"}], copies=["s3objects"])
        # A dataset whose S3 copy takes many seconds to read through the proxy (2 MiB objects).
        data = {"events/part-0000.parquet": parquet_bytes(table(1000)),
                **{f"blobs/r{i}.bin": os.urandom(2 << 20) for i in range(3)}}
        write_tree(sc.dir / "local" / "s3_dataset", data)
        asyncio.run(seal_directory(sc.dir / "local" / "s3_dataset",
                                   out_path=sc.dir / "local" / "s3_dataset" / MANIFEST_NAME))
        name = bucket(moto, "leak-dataset")
        upload(moto, name, data, prefix="s3_dataset/")
        sc.s3_location("s3dataset_big", name)
        sc.assets["s3_dataset"] = sc._asset("s3_dataset", [{"kind": "dataset"}], copies=["s3dataset_big"])
        # The same with a verification policy: the run keeps a ledger in the store and flushes it when cut off.
        sc.assets["big_objects_ledger"] = {**sc._asset("big_objects", [{"kind": "replica"}], copies=["s3objects"]),
                                           "verification": {"read_every": "1d"}}
        # KMS answers 5 minutes late (in effect never: the probe's own timeout is a minute)
        kms_port = stack.enter_context(slow_proxy("127.0.0.1", moto.port, 300.0))
        kms = sc.assets["deps"]["validators"][0]["dependencies"][2]
        kms.update(endpoint_url=f"http://127.0.0.1:{kms_port}", timeout="60s")
        # A 2 MiB RDB: fetching it through the slow proxy takes seconds.
        s3client(moto).put_object(Bucket=sc.buckets["redis"], Key="redis/dump.rdb", Body=redis_rdb(blobs=8))
        ends.pinecone.slow("", LATENCY)
        export_parquet(sc.dir / "pqexports" / "export.parquet", 25_000)
        sc.locations["pqexports"] = {"kind": "filesystem", "path": str(sc.dir / "pqexports"), "site": "dc-b"}
        index = sc.assets["index"]["validators"][0]
        sc.assets["pq_index"] = sc._asset("", [{
            "kind": "vector_restore", "backend": {**index["backend"], "location": "pqexports",
                                                  "pattern": "*.parquet"}}], production="pqexports")
        # The S3 dump: production plus 6 MB of filler, so that fetching it through the proxy takes many seconds.
        world.primary.psql("CREATE DATABASE leak_big TEMPLATE app")
        world.primary.psql("CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || "
                           "md5((g * 13)::text) AS pad FROM generate_series(1, 60000) g", "leak_big")
        big_dump = sc.dir / "big.dump"
        subprocess.run([str(world.primary.bin_dir / "pg_dump"), "-Fc", "-f", str(big_dump),
                        world.primary.dsn("leak_big")], check=True, capture_output=True, timeout=120)
        s3client(moto).put_object(Bucket=sc.buckets["dumps"], Key="db/app.dump", Body=big_dump.read_bytes())
        cfg = yaml.safe_load(sc.config(0).read_text())
        cfg["limits"]["max_concurrent"] = 16
        saved = {k: os.environ.get(k) for k in sc.env}
        os.environ.update(sc.env)
        try:
            yield Estate(sc, cfg, dict(sc.env))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def case_config(estate: Estate, case: Case, timeout: float) -> Config:
    cfg = yaml.safe_load(yaml.safe_dump(estate.config))
    for v in cfg["assets"][case.asset]["validators"]:
        v["timeout"] = f"{int(timeout * 1000)}ms"
    return parse_config(yaml.safe_dump(cfg), source=str(estate.scenario.dir / "drwatch.yaml"))


# --- the test -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def abandoned_async_generators() -> Iterator[list[str]]:
    """Names of async generators started meanwhile that were left to the garbage collector, unfinished: asyncio
    then closes them some time later (and one that holds a file or a connection holds it until then)."""
    found: list[str] = []
    hooks = sys.get_asyncgen_hooks()

    def finalizer(agen: Any) -> None:
        found.append(agen.__qualname__)
        if hooks.finalizer is not None:
            hooks.finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        yield found
    finally:
        sys.set_asyncgen_hooks(*hooks)


@contextlib.contextmanager
def unraisables() -> Iterator[list[str]]:
    """Collects what would otherwise only be printed: exceptions in ``__del__`` (ResourceWarning as error)."""
    found: list[str] = []
    previous = sys.unraisablehook

    def hook(u: Any) -> None:
        found.append(f"{u.exc_type.__name__}: {u.exc_value} ({u.err_msg or ''} {u.object!r})")

    sys.unraisablehook = hook
    try:
        yield found
    finally:
        sys.unraisablehook = previous


async def settle(check: Callable[[], Any], within: float, in_thread: bool = True) -> Any:
    """Poll ``check`` (in a thread: it reads /proc) until it returns something falsy or ``within`` seconds pass;
    return the last value (what is still left). Worker threads and killed processes take a moment to finish."""
    deadline = time.monotonic() + within
    while True:
        left = await asyncio.to_thread(check) if in_thread else check()
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def runner_for(cfg: Config, sandboxes: Path, results: list[Result]) -> AsyncIterator[Runner]:
    async with open_runner(cfg, sandboxes) as runner:
        runner.state.listeners.append(results.append)
        yield runner


@pytest.mark.parametrize("how", ["timeout", "cancel"])
@pytest.mark.parametrize("name", list(CASES))
async def test_a_run_cut_off_mid_work_leaks_nothing(estate: Estate, name: str, how: str) -> None:
    """The run ends as ``timeout`` / ``cancelled`` while its work is visibly in progress, and afterwards this
    process holds exactly what it held before: no descriptor, no child process, no sandbox, no pending task,
    no ResourceWarning, no async generator left to the garbage collector.

    A timeout that expired before the work even began (building a client can take seconds on a loaded machine)
    proves little: the run is repeated with twice the timeout; a run that finished inside it (a quiet machine is
    fast) is repeated with half of it (at most four tries; every try is checked for leaks all the same)."""
    case = CASES[name]
    if how == "cancel":
        await cut_once(estate, case, how, 120.0)
        return
    timeout, tried = case.timeout, []
    for _ in range(4):
        landed = await cut_once(estate, case, how, timeout)
        tried.append(f"{timeout:g}s: {landed}")
        if landed == "mid-work":
            return
        timeout = timeout * 2 if landed == "before the work" else timeout / 2
    pytest.fail(f"the timeout never landed mid-work ({case.what} not seen just before it): {tried}")


# Seconds a result may be timed after its validator returned inside the limit: the run's exit stack (a drill's
# sandbox server stopped, its connections closed) runs after the timeout's scope.
AFTER = 2.0


async def cut_once(estate: Estate, case: Case, how: str, limit: float) -> str:
    """One run cut off by its timeout (``limit`` seconds) or cancelled; asserts that nothing is left. Where the
    cut landed: "mid-work" (always for a cancellation, which waits for the evidence), "before the work", or
    "after the work" (the run ended ok inside the limit: nothing was cut)."""
    cfg = case_config(estate, case, limit)
    vcfg = next(v for v in cfg.assets[case.asset].validators if v.label == case.label)
    assert vcfg.kind == case.kind
    sandboxes = estate.scenario.sandbox_dir
    results: list[Result] = []
    gc.collect()
    await asyncio.sleep(0.2)  # descriptors of earlier cases' threads and servers are closed
    others = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    watcher = Watcher(sandboxes)
    landed = "mid-work"
    expected = Outcome.CANCELLED
    tracemalloc.start()
    gc.disable()  # what only a garbage collection would close counts as left open
    try:
        with warnings.catch_warnings(), unraisables() as unraisable, abandoned_async_generators() as abandoned:
            warnings.simplefilter("error")
            seen = asyncio.Event()
            trigger = case.cancel_at or case.evidence if how == "cancel" else case.evidence
            sampler = asyncio.create_task(watcher.run(seen, trigger))
            try:
                async with runner_for(cfg, sandboxes, results) as runner:
                    task = asyncio.create_task(runner.execute(case.asset, vcfg))
                    if how == "cancel":
                        waiting = asyncio.create_task(seen.wait())
                        await asyncio.wait({task, waiting}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
                        waiting.cancel()
                        assert not task.done(), f"the run ended before {case.what} was seen: {results}"
                        assert seen.is_set(), f"{case.what} never seen within 60 s"
                        await asyncio.sleep(case.cancel_delay)
                        assert not task.done(), f"the run ended before it was cancelled: {results}"
                        task.cancel()
                        with pytest.raises(asyncio.CancelledError):
                            await task
                    else:
                        result = await task
                        expected = result.outcome
                        if case.own_deadline is not None and result.outcome == Outcome.ERROR:
                            assert case.own_deadline in {f.code for f in result.findings}, result.findings
                            if not any(case.evidence(s) for s in watcher.samples if s.at < result.finished_at):
                                landed = "before the work"
                        elif result.outcome == Outcome.OK and result.finished_at < result.started_at + limit + AFTER:
                            # Done inside the limit: nothing to cut this time (its result is timed after the exit
                            # stack: a drill that returned just inside 2 s was recorded at 2.012 s, Debian-venv run).
                            landed = "after the work"
                        else:
                            assert result.outcome == Outcome.TIMEOUT, result.findings
                            cut = watcher.before(result.started_at + limit)
                            if cut is None or not case.evidence(cut):
                                landed = "before the work"
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            # Before any garbage collection: threads finishing their step may still close what they hold.
            left_fds = await settle(lambda: watcher.sample().fds, 15)
            gc.enable()
            gc.collect()
            await asyncio.sleep(0)
            gc.collect()
    finally:
        gc.enable()
        tracemalloc.stop()

    assert [r.outcome for r in results] == [expected]
    assert unraisable == []
    assert abandoned == [], "async generators left to the garbage collector (not closed when the run ended)"
    assert left_fds == {}, f"descriptors left open after the run (or closed only by the garbage collector): {left_fds}"
    left_procs = await settle(lambda: watcher.sample().procs, 15)
    assert not left_procs, f"processes left: {[describe(p) for p in left_procs]}"
    # A sandbox cluster's postmaster is not a descendant (pg_ctl daemonizes it): found by its data directory.
    left_servers = await settle(lambda: watcher.sample().servers, 15)
    assert not left_servers, f"processes left in the sandbox: {left_servers}"
    assert await settle(lambda: sandbox_leftovers(sandboxes), 15) == []
    if case.leftovers is not None:
        assert await settle(lambda: case.leftovers(estate), 15) == []  # type: ignore[misc]
    pending = await settle(lambda: [t for t in asyncio.all_tasks() - others
                                    if t is not asyncio.current_task() and not t.done()], 15, in_thread=False)
    assert not pending, f"tasks of the run still pending: {pending}"
    return landed


async def test_a_cancelled_seal_stops_hashing_without_blocking_the_loop(tmp_path: Path) -> None:
    """``drwatch seal`` cancelled while huge files are being hashed: the cancellation returns at once, the event
    loop is never held until the files are read to their end (its hashing threads stop at their next chunk), no
    file stays open and no seal is written."""
    root = tmp_path / "data"
    for i in range(2):
        sparse_file(root / f"big-{i}.bin", 16 << 30)  # 16 GiB of zeros each: many seconds of hashing
    loop = asyncio.get_running_loop()
    watcher = Watcher()
    seen = asyncio.Event()
    sampler = asyncio.create_task(watcher.run(seen, holds("/big-")))
    sealing = asyncio.create_task(seal_directory(root, out_path=tmp_path / "seal.jsonl"))
    await asyncio.wait_for(seen.wait(), 30)
    gaps: list[float] = []

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    sealing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sealing
    took = time.monotonic() - started
    await asyncio.sleep(0.3)
    for task in (ticker, sampler):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert took < 2.0, f"cancelling the seal took {took:.1f}s"
    assert max(gaps) < 1.0, f"the event loop was held for {max(gaps):.1f}s"
    assert await settle(lambda: watcher.sample().fds, 10) == {}
    assert not (tmp_path / "seal.jsonl").exists()


def first_results(daemon: DaemonProcess, keys: list[tuple[str, str]], within: float) -> dict[tuple[str, str], Any]:
    """The first result of each key, from /api/v1/status. Patient: this test is about what the runs leave behind,
    not about how promptly a daemon starting a dozen drills at once on a busy machine answers (building the
    botocore clients of every location at start holds its event loop for a while)."""
    deadline = time.monotonic() + within
    while True:
        assert daemon.proc is not None and daemon.proc.poll() is None, f"drwatch died:\n{daemon.log()[-4000:]}"
        try:
            status, body = daemon.get("/api/v1/status", timeout=60)
        except OSError:
            status, body = 0, ""
        if status == 200:
            res = {(r["asset"], r["validator"]): r for r in json.loads(body)["results"]}
            if all(k in res for k in keys):
                return res
        if time.monotonic() > deadline:
            raise AssertionError(f"no result for every case in {within:g}s:\n{daemon.log()[-5000:]}")
        time.sleep(0.5)


def test_a_daemon_whose_runs_time_out_and_are_drained_warns_of_nothing(estate: Estate, tmp_path: Path) -> None:
    """The same cuts in a real ``drwatch run`` started with ``-W error::ResourceWarning`` and tracemalloc: the cases'
    validators time out (or end at their own deadline; at most two finish in time), SIGTERM drains and cancels
    whatever still runs, and the daemon's log holds no ResourceWarning, no "Exception ignored", no destroyed
    pending task; it exits 0 and leaves no sandbox and no process in the sandbox directory."""
    cfg = yaml.safe_load(yaml.safe_dump(estate.config))
    keys: dict[tuple[str, str], Case] = {}
    for case in CASES.values():
        keys.setdefault((case.asset, case.label), case)
        for v in cfg["assets"][case.asset]["validators"]:
            if v.get("name", v["kind"]) == case.label:
                v["timeout"] = f"{int(case.timeout * 1000)}ms"
    port = free_port()
    cfg["http"] = {"listen": f"127.0.0.1:{port}"}
    cfg["store"] = {"sqlite": str(tmp_path / "state.sqlite")}
    daemon = DaemonProcess(write_config(tmp_path / "drwatch.yaml", cfg), port,
                           env={**estate.env, "PYTHONWARNINGS": "error::ResourceWarning", "PYTHONTRACEMALLOC": "1"})
    sandboxes = estate.scenario.sandbox_dir
    daemon.start(timeout=60)
    try:
        got = first_results(daemon, list(keys), 240)
        daemon.signal(signal.SIGTERM)
        code = daemon.proc.wait(90) if daemon.proc is not None else None
    finally:
        daemon.stop()
    log = daemon.log()
    cut = 0
    for key, case in keys.items():
        outcome, found = got[key]["outcome"], {f["code"] for f in got[key]["findings"]}
        # A run whose work happened to end in time (a warm server, a quick answer) is ok: nothing else.
        assert outcome in ("timeout", "ok") or (outcome == "error" and case.own_deadline in found), (key, got[key])
        cut += outcome != "ok"
    assert cut >= len(keys) - 2, {k: r["outcome"] for k, r in got.items() if k in keys}
    for sign in ("ResourceWarning", "Exception ignored", "Task was destroyed", "unclosed", "never awaited"):
        assert sign not in log, f"{sign!r} in the daemon's log:\n{log[-6000:]}"
    assert code == 0, log[-4000:]
    assert not processes_mentioning(str(sandboxes))
    assert sandbox_leftovers(sandboxes) == []
