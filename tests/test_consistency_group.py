"""Consistency groups: newest consistent set (pure), and the ``consistency_group`` validator on a real estate
(three sealed assets in filesystem copies, document ids in a real PostgreSQL), through ``drwatch check``."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drwatch.config.model import load_config
from drwatch.formats.sealing import seal_directory
from drwatch.metrics.collector import ProcessState, make_registry, render
from drwatch.state.snapshot import load_snapshot
from drwatch.validators.groups import judge_skew, newest_consistent_set, skew
from tests.support.helpers import metric_value, run_cli, sample_files, write_config, write_tree
from tests.support.pgserver import PostgresServer

HOUR = 3600.0

# --- pure logic -------------------------------------------------------------------------------------------


def test_within_skew_is_the_newest_set() -> None:
    cands = {"a": [100.0, 200.0], "b": [150.0, 190.0], "c": [180.0]}
    v = judge_skew(cands, 30)
    assert v is not None and not v.skewed
    assert v.newest == {"a": 200.0, "b": 190.0, "c": 180.0} and v.skew == 20.0


def test_skewed_names_the_newest_consistent_set() -> None:
    cands = {"index": [1000.0, 5000.0], "docs": [1100.0, 1500.0], "model": [900.0]}
    v = judge_skew(cands, 300)
    assert v is not None and v.skewed and v.skew == 5000.0 - 900.0
    assert v.consistent_set == {"index": 1000.0, "docs": 1100.0, "model": 900.0}
    assert v.consistent_set_point() == 900.0


def test_no_consistent_set_and_unproven_member() -> None:
    assert newest_consistent_set({"a": [0.0], "b": [10 * HOUR]}, HOUR) is None
    assert judge_skew({"a": [1.0], "b": []}, HOUR) is None


def _brute(cands: dict[str, list[float]], max_skew: float) -> float | None:
    best: float | None = None
    for combo in itertools.product(*cands.values()):
        if skew(dict(zip(cands, combo, strict=True))) <= max_skew:
            best = max(best if best is not None else min(combo), min(combo))
    return best


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("abcd"), st.lists(st.integers(0, 50).map(float), min_size=1, max_size=5),
                       min_size=1, max_size=4),
       st.integers(0, 20).map(float))
def test_consistent_set_is_optimal_and_valid(cands: dict[str, list[float]], max_skew: float) -> None:
    got = newest_consistent_set(cands, max_skew)
    want = _brute(cands, max_skew)
    if want is None:
        assert got is None
        return
    assert got is not None and set(got) == set(cands)
    assert all(got[m] in cands[m] for m in cands)
    assert skew(got) <= max_skew
    assert min(got.values()) == want


# --- the validator on a real estate ------------------------------------------------------------------------

DOC_IDS = [f"doc-{i:03d}" for i in range(40)]


def _seal(root: Path, sealed_at: float, extra: dict[str, Any] | None = None) -> Path:
    """Seal like `drwatch seal` would, then date the seal (the backup tool's clock)."""
    out = root / ".drwatch-manifest.jsonl"
    asyncio.run(seal_directory(root, out_path=out, extra=extra))
    lines = out.read_text().splitlines()
    head = json.loads(lines[0])
    head["sealed_at"] = sealed_at
    out.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    return out


class Estate:
    def __init__(self, tmp: Path, dsn_env: str) -> None:
        self.tmp = tmp
        self.dsn_env = dsn_env
        self.files = {
            "vectors": sample_files(6, 2048, seed=1),
            "model": {"model.safetensors": b"\0" * 4096, "config.json": b"{}", "tokenizer.json": b"{}"},
            "docs": {f"docs/{d}.md": f"# {d}\n".encode() for d in DOC_IDS},
        }
        for asset, files in self.files.items():
            for loc in ("prod", "copyA", "copyB"):
                write_tree(tmp / loc / asset, files)

    def seal_all(self, ages: dict[str, float] | None = None, stamp: str | None = None, now: float = 0.0) -> None:
        import time

        now = now or time.time()
        ages = {"vectors": 60.0, "model": 120.0, "docs": 90.0, **(ages or {})}
        model_seal = _seal(self.tmp / "prod" / "model", now - ages["model"])
        from drwatch.formats.seals import seal_digest_sync

        _seal(self.tmp / "prod" / "docs", now - ages["docs"])
        stamp_value = stamp if stamp is not None else seal_digest_sync(model_seal)
        _seal(self.tmp / "prod" / "vectors", now - ages["vectors"],
              {"embedding_model": stamp_value} if stamp_value else None)

    def config(self, **group: Any) -> Path:
        def asset(name: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
            return {
                "rpo": "1d",
                "production": {"location": "prod", "prefix": name},
                "copies": [{"location": "copyA", "prefix": name}, {"location": "copyB", "prefix": name}],
                "validators": [{"kind": "replica"}, *(extra or [])],
            }

        cfg = {
            "store": {"sqlite": str(self.tmp / "state.sqlite")},
            "compliance": {"media": 1, "immutable": 0, "offsite": 0},  # one disk, no lock here: judged elsewhere
            "locations": {
                "prod": {"kind": "filesystem", "path": str(self.tmp / "prod"), "site": "dc-a"},
                "copyA": {"kind": "filesystem", "path": str(self.tmp / "copyA"), "site": "dc-b"},
                "copyB": {"kind": "filesystem", "path": str(self.tmp / "copyB"), "site": "dc-c"},
            },
            "assets": {
                "vectors": asset("vectors", [{"kind": "consistency_group", "group": "rag"}]),
                "model": asset("model"),
                "docs": asset("docs"),
            },
            "consistency_groups": {"rag": {
                "assets": ["vectors", "model", "docs"], "max_skew": "1h",
                "embedding_model": {"vectors": "vectors", "model": "model"},
                "documents": {"asset": "docs", "path": "docs/{id}.md", "sample": 25,
                              "ids": {"dsn_env": self.dsn_env, "table": "public.chunks", "column": "doc_id"}},
                **group,
            }},
        }
        return write_config(self.tmp / "drwatch.yaml", cfg)

    def check(self, path: Path) -> tuple[int, dict[str, Any]]:
        out = run_cli("check", "--config", str(path), "--output", "json")
        assert out.stdout, out.stderr
        return out.returncode, json.loads(out.stdout)


@pytest.fixture(scope="module")
def ids_dsn(pg_server: PostgresServer) -> str:
    """Production vector index's chunk table (only the document ids matter here): 3 chunks per document."""
    dsn = pg_server.create_database("rag_chunks")
    rows = ",".join(f"({i}, '{d}')" for i, d in enumerate(d for d in DOC_IDS for _ in range(3)))
    pg_server.psql(f"CREATE TABLE chunks (id int PRIMARY KEY, doc_id text); INSERT INTO chunks VALUES {rows}",
                   database="rag_chunks")
    return dsn


@pytest.fixture
def estate(tmp_path: Path, ids_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Estate:
    monkeypatch.setenv("RAG_IDS_DSN", ids_dsn)
    return Estate(tmp_path, "RAG_IDS_DSN")


def _group_result(doc: dict[str, Any]) -> dict[str, Any]:
    [res] = [r for r in doc["results"] if r["validator"] == "consistency_group"]
    return res


def _codes(res: dict[str, Any]) -> set[str]:
    return {f["code"] for f in res["findings"]}


async def _metrics(path: Path) -> str:
    """What a freshly started daemon would export: the collector over the stored state."""
    snap = await load_snapshot(load_config(path))
    import time

    return render(make_registry(lambda: snap, ProcessState(started_at=time.time()))).decode()


def test_consistent_group_is_ok(estate: Estate) -> None:
    estate.seal_all()
    path = estate.config()
    code, doc = estate.check(path)
    res = _group_result(doc)
    assert res["outcome"] == "ok", res
    assert code == 0
    assert res["figures"]["skew_seconds"] == pytest.approx(60.0, abs=1)
    assert res["figures"]["documents_missing"] == 0 and res["figures"]["embedding_model_match"] == 1
    assert doc["consistency_groups"]["rag"]["state"] == "consistent"
    text = asyncio.run(_metrics(path))
    assert metric_value(text, "drwatch_consistency_group_state", group="rag", state="consistent") == 1
    assert metric_value(text, "drwatch_consistency_group_state", group="rag", state="skewed") == 0
    assert metric_value(text, "drwatch_consistency_group_skew_seconds", group="rag") == pytest.approx(60, abs=1)
    assert metric_value(text, "drwatch_consistency_group_max_skew_seconds", group="rag") == 3600


def test_skewed_recovery_points_fail(estate: Estate) -> None:
    estate.seal_all(ages={"docs": 5 * HOUR})
    path = estate.config()
    code, doc = estate.check(path)
    res = _group_result(doc)
    assert res["outcome"] == "failed" and code == 1
    assert "skew_exceeded" in _codes(res)
    assert res["figures"]["skew_seconds"] == pytest.approx(5 * HOUR - 60, abs=2)
    text = asyncio.run(_metrics(path))
    assert metric_value(text, "drwatch_consistency_group_state", group="rag", state="skewed") == 1


def test_mismatched_embedding_model_stamp_fails(estate: Estate) -> None:
    estate.seal_all(stamp="sha256:" + "0" * 64)
    _, doc = estate.check(estate.config())
    res = _group_result(doc)
    assert res["outcome"] == "failed" and _codes(res) == {"embedding_model_mismatch"}
    assert doc["consistency_groups"]["rag"]["state"] == "inconsistent"


def test_unstamped_vector_index_fails(estate: Estate) -> None:
    estate.seal_all(stamp="")
    _, doc = estate.check(estate.config())
    assert _codes(_group_result(doc)) == {"embedding_model_unstamped"}


def test_model_changed_after_embedding_fails(estate: Estate) -> None:
    """The vectors were embedded with the model as sealed; a new model backup (other bytes) breaks the pair."""
    estate.seal_all()
    for loc in ("prod", "copyA", "copyB"):
        (estate.tmp / loc / "model" / "config.json").write_bytes(b'{"v": 2}')
    import time

    _seal(estate.tmp / "prod" / "model", time.time() - 30)
    _, doc = estate.check(estate.config())
    res = _group_result(doc)
    assert res["outcome"] == "failed" and "embedding_model_mismatch" in _codes(res)


def test_documents_missing_from_store_fail(estate: Estate) -> None:
    """Documents the index references were never backed up: neither the seal nor any copy holds them."""
    for loc in ("prod", "copyA", "copyB"):
        for d in DOC_IDS[:20]:
            (estate.tmp / loc / "docs" / "docs" / f"{d}.md").unlink()
    estate.seal_all()
    _, doc = estate.check(estate.config(documents={
        "asset": "docs", "path": "docs/{id}.md", "sample": 40,
        "ids": {"dsn_env": estate.dsn_env, "table": "chunks", "column": "doc_id"}}))
    res = _group_result(doc)
    assert res["outcome"] == "failed" and "documents_missing" in _codes(res)
    assert res["figures"]["documents_missing"] == 20
    assert {f["subject"] for f in res["findings"]} == {"seal", "copyA", "copyB"}


def test_document_lost_in_one_copy_fails(estate: Estate) -> None:
    estate.seal_all()
    shutil.rmtree(estate.tmp / "copyB" / "docs" / "docs")
    _, doc = estate.check(estate.config(documents={
        "asset": "docs", "path": "docs/{id}.md", "sample": 10,
        "ids": {"dsn_env": estate.dsn_env, "table": "chunks", "column": "doc_id"}}))
    res = _group_result(doc)
    assert res["outcome"] == "failed"
    [missing] = [f for f in res["findings"] if f["code"] == "documents_missing"]
    assert missing["subject"] == "copyB" and res["figures"]["documents_missing"] == 10


def test_ids_database_down_is_error_not_failed(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.helpers import free_port

    monkeypatch.setenv("RAG_IDS_DSN", f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    estate.seal_all()
    code, doc = estate.check(estate.config())
    res = _group_result(doc)
    assert res["outcome"] == "error" and code == 2
    assert "ids_unavailable" in _codes(res)
    assert doc["consistency_groups"]["rag"]["state"] == "unknown"


def test_member_without_proven_recovery_point_is_error(estate: Estate) -> None:
    """Every copy of the model is gone: its replica check fails; the group cannot be judged (error)."""
    estate.seal_all()
    for loc in ("copyA", "copyB"):
        shutil.rmtree(estate.tmp / loc / "model")
    _, doc = estate.check(estate.config(embedding_model=None, documents=None))
    res = _group_result(doc)
    assert res["outcome"] == "error"
    assert [f["subject"] for f in res["findings"] if f["code"] == "member_unproven"] == ["model"]


@pytest.mark.parametrize(("change", "path", "message"), [
    ({"group": "nope"}, "assets.vectors.validators[1].group", "unknown consistency group"),
    ({"group": "rag", "_member": False}, "assets.vectors.validators[1].group", "not a member"),
])
def test_bad_group_reference_exits_78(estate: Estate, change: dict[str, Any], path: str, message: str) -> None:
    cfg_path = estate.config()
    import yaml

    data = yaml.safe_load(cfg_path.read_text())
    if change.pop("_member", True) is False:
        data["consistency_groups"]["rag"]["assets"] = ["model", "docs"]
        data["consistency_groups"]["rag"].pop("embedding_model")
        data["consistency_groups"]["rag"]["documents"]["asset"] = "docs"
    data["assets"]["vectors"]["validators"][1].update(change)
    write_config(cfg_path, data)
    out = run_cli("check-config", str(cfg_path))
    assert out.returncode == 78
    assert path in out.stderr and message in out.stderr


def test_check_reference_outside_group_exits_78(estate: Estate) -> None:
    import yaml

    cfg_path = estate.config()
    data = yaml.safe_load(cfg_path.read_text())
    data["consistency_groups"]["rag"]["assets"] = ["vectors", "docs"]
    write_config(cfg_path, data)
    out = run_cli("check-config", str(cfg_path))
    assert out.returncode == 78
    assert "consistency_groups.rag.embedding_model.model" in out.stderr


def test_members_requiring_signed_seals_fail_the_group_on_unsigned_seals(estate: Estate) -> None:
    """The group reads its members' seals through the same point as their validators: with
    `seal_signature` required on the model and the document store, their unsigned seals fail the group
    (`seal_unsigned` for the embedding-model stamp and for the documents check), not a quiet pass."""
    import yaml

    estate.seal_all()
    keys = estate.tmp / "keys"
    keys.mkdir()
    out = run_cli("seal-keygen", "--private-key", str(keys / "job.key"), "--public-key", str(keys / "job.pub"))
    assert out.returncode == 0, out.stderr
    cfg_path = estate.config()
    data = yaml.safe_load(cfg_path.read_text())
    for member in ("model", "docs"):
        data["assets"][member]["seal_signature"] = {"public_key_path": str(keys / "job.pub")}
    write_config(cfg_path, data)
    _, doc = estate.check(cfg_path)
    res = _group_result(doc)
    assert res["outcome"] == "failed", res
    assert {(f["code"], f["subject"]) for f in res["findings"] if f["code"] == "seal_unsigned"} == {
        ("seal_unsigned", "embedding_model"), ("seal_unsigned", "seal")}
