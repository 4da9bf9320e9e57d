"""The dashboard's drill panels and the AI/ML alerts against real drills: a real pgvector restore drill and a
real model inference smoke test (each once healthy, once degraded) and a real Redis restore drill, stored by
`drwatch check`, served by a real `drwatch run` and scraped by a real Prometheus. Every panel query that shows
drill metrics returns series, and the alert expressions of the AI/ML alerts select exactly the degraded assets."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helpers import DaemonProcess, PrometheusServer, free_port, run_cli, write_config
from tests.support.pgserver import PostgresServer
from tests.support.redisserver import RedisServer
from tests.support.vectorcorpus import corpus
from tests.test_dashboard import DRILL_METRICS, Stack, _dashboard, _metric_names, _substitute, _targets
from tests.test_model_weights import flip_byte_in_tensor, minilm_dir
from tests.test_vector_pgvector import _load, pgvector_bin

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "drwatch.rules.yml"


def _alert_expr(name: str) -> str:
    doc = yaml.safe_load(RULES.read_text())
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == name]
    return str(rule["expr"])


@pytest.fixture(scope="module")
def drills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("drills")
    base = Path(tempfile.mkdtemp(prefix="drw-dash-", dir="/tmp"))  # the postgres user must reach the sandbox
    base.chmod(0o755)
    server = PostgresServer(bin_dir=pgvector_bin())
    server.start()
    cache = RedisServer().start()  # production of the Redis drill: 300 keys, saved as the snapshot below
    daemon: DaemonProcess | None = None
    prometheus: PrometheusServer | None = None
    try:
        # vector index: production + a dump with its HNSW index, and a dump whose index is a weak IVFFlat
        server.create_database("vec_prod")
        asyncio.run(_load(server.dsn("vec_prod"), corpus()))
        dumps = tmp / "dumps"
        for name, sql in (("good", None), ("weak", "DROP INDEX docs_embedding_hnsw; CREATE INDEX docs_ivf ON docs "
                                                  "USING ivfflat (embedding vector_cosine_ops) WITH (lists = 300)")):
            db = "vec_prod"
            if sql is not None:
                db = f"vec_{name}"
                server.psql(f"CREATE DATABASE {db} TEMPLATE vec_prod")
                server.psql(sql, database=db)
            (dumps / name).mkdir(parents=True)
            out = run_cli_pg_dump(server, db, dumps / name / "docs.dump")
            assert out == 0
        # model: production MiniLM sealed, a good copy and a copy with one flipped byte in a tensor
        for where in ("prod", "good", "bad"):
            shutil.copytree(minilm_dir(), tmp / where / "model")
        assert run_cli("seal", "--location-path", str(tmp / "prod" / "model")).returncode == 0
        for where in ("good", "bad"):
            shutil.copy2(tmp / "prod" / "model" / ".drwatch-manifest.jsonl", tmp / where / "model")
        flip_byte_in_tensor(tmp / "bad" / "model")
        cache.fill(0, 300)
        cache.save(tmp / "redis" / "dump-1.rdb")

        port = free_port()
        vec_backend = {"type": "pgvector", "production": {"dsn_env": "DRW_DASH_VEC"}, "table": "docs",
                       "location": "dumps", "sandbox": {"mode": "ephemeral", "bin_dir": str(pgvector_bin())}}
        goldens = tmp / "goldens.json"

        def model_asset(copy: str) -> dict[str, Any]:
            return {"rpo": "7d", "rto": "1h", "production": {"location": "fs", "prefix": "prod/model"},
                    "copies": [{"location": "fs", "prefix": f"{copy}/model", "name": copy}],
                    "validators": [{"kind": "model_weights", "schedule": {"every": "24h"},
                                    "inference": {"engine": "sentence_transformers", "copy": copy,
                                                  "goldens": str(goldens)}}]}

        cfg: dict[str, Any] = {
            "store": {"sqlite": str(tmp / "state.sqlite")},
            "http": {"listen": f"127.0.0.1:{port}"},
            "limits": {"sandbox_dir": str(base / "sandboxes"), "max_concurrent": 2},
            "locations": {"dumps": {"kind": "filesystem", "path": str(dumps)},
                          "fs": {"kind": "filesystem", "path": str(tmp)}},
            "assets": {
                "rag-index": {"rpo": "7d", "rto": "1h", "production": {"location": "dumps"},
                              "validators": [{"kind": "vector_restore", "schedule": {"every": "24h"},
                                              "backend": {**vec_backend, "prefix": "good"}}]},
                "rag-index-weak": {"rpo": "7d", "rto": "1h", "production": {"location": "dumps"},
                                   "validators": [{"kind": "vector_restore", "schedule": {"every": "24h"},
                                                   "backend": {**vec_backend, "prefix": "weak",
                                                               "probes": 1}}]},
                "embeddings-cache": {"rpo": "7d", "production": {"location": "fs", "prefix": "redis"},
                                     "validators": [{"kind": "redis_restore", "schedule": {"every": "24h"},
                                                     "location": "fs", "prefix": "redis",
                                                     "production": {"url_env": "DRW_DASH_REDIS"}}]},
                "rag-model": model_asset("good"),
                "rag-model-bad": model_asset("bad"),
            },
        }
        path = write_config(tmp / "drwatch.yaml", cfg)
        env = {"DRW_DASH_VEC": server.dsn("vec_prod"), "DRW_DASH_REDIS": cache.url}
        recorded = run_cli("golden", "record", "--config", str(path), "--asset", "rag-model", "--copy", "good",
                           env=env, timeout=300)
        assert recorded.returncode == 0, recorded.stderr
        checked = run_cli("check", "--config", str(path), "--output", "json", env=env, timeout=600)
        assert checked.returncode == 1, checked.stdout + checked.stderr  # the degraded ones fail
        daemon = DaemonProcess(path, port, env=env)
        daemon.start()
        prometheus = PrometheusServer(tmp / "prometheus", [f"127.0.0.1:{port}"], scrape_interval="1s")
        prometheus.start()
        prometheus.wait_query("count_over_time(drwatch_build_info[1m]) >= 5", timeout=60)
        yield Stack(daemon, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if daemon is not None:
            daemon.stop()
        server.cleanup()
        cache.stop()
        shutil.rmtree(base, ignore_errors=True)


def run_cli_pg_dump(server: PostgresServer, db: str, dest: Path) -> int:
    import subprocess

    return subprocess.run([str(server.bin_dir / "pg_dump"), "-Fc", "-f", str(dest), server.dsn(db)],
                          capture_output=True, timeout=120, check=False).returncode


@pytest.mark.slow
def test_drill_panels_return_series(drills: Stack) -> None:
    """Every panel target that shows drill metrics returns series for all assets (instant and range)."""
    empty = []
    count = 0
    for title, target in _targets(_dashboard()):
        expr = _substitute(target["expr"], ".*")
        if not _metric_names(expr) & DRILL_METRICS:
            continue
        count += 1
        if not drills.query(expr):
            empty.append((title, target["refId"], "instant", expr))
        if target.get("range") and not drills.query_range(expr):
            empty.append((title, target["refId"], "range", expr))
    assert count >= 8
    assert not empty, empty


@pytest.mark.slow
def test_ml_alerts_select_exactly_the_degraded_drills(drills: Stack) -> None:
    """The alert expressions, evaluated on the scraped data: the weak index and the corrupt model, nothing else."""
    recall = drills.query(_alert_expr("DrwatchVectorRecallLow"))
    assert {r["metric"]["asset"] for r in recall} == {"rag-index-weak"}
    assert all(float(r["value"][1]) < 0.9 for r in recall)
    golden = drills.query(_alert_expr("DrwatchModelGoldenSimilarityLow"))
    assert {r["metric"]["asset"] for r in golden} == {"rag-model-bad"}
    healthy = {r["metric"]["asset"]: float(r["value"][1]) for r in drills.query("drwatch_model_golden_similarity")}
    assert healthy["rag-model"] > 0.9999
    files = drills.query('drwatch_model_files{asset="rag-model-bad",copy="bad",state="mismatch"}')
    assert [float(r["value"][1]) for r in files] == [1.0]
    assert not drills.query(_alert_expr("DrwatchRTOBreached"))  # every drill restored within its 1h RTO
