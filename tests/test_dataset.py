"""The `dataset` validator on real Parquet files (pyarrow), a filesystem copy and an S3 copy on a real moto
server, and a real MLflow-style file store written by the tests: pass, every failure it claims to detect
(corrupt data page, truncated file, same-size rewrites with another schema or fewer rows, missing and extra
files, a broken run directory), and "could not check" (location not mounted, S3 server stopped, wrong keys,
pyarrow missing). Every fault is made for real, on disk or through the S3 API; every run goes through a real
Runner and its S3 client pool."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.errors import ConfigError
from drwatch.core.model import CopyState, Outcome, Result
from drwatch.formats.sealing import seal_directory
from drwatch.state.compliance import RuleState
from drwatch.storage.filesystem import MANIFEST_NAME
from tests.support.helpers import REPO, backdate, run_cli, write_config, write_tree
from tests.support.s3helpers import Locations, bucket, codes, config, report, rules, run, subjects, upload, versions
from tests.support.s3helpers import client as s3
from tests.support.s3servers import MotoServer, iam_moto_server, s3_client

RULES = {"copies": 3, "media": 1, "offsite": 1, "immutable": 0}


def table(rows: int, seed: int = 0) -> pa.Table:
    return pa.table({
        "id": pa.array(range(seed, seed + rows), pa.int64()),
        "score": pa.array([(i * 7919 % 1000) / 10 for i in range(rows)], pa.float64()),
        "user": pa.array([{"name": f"u{i % 97}", "tags": [f"t{i % 5}"] * (i % 3)} for i in range(rows)],
                         pa.struct([("name", pa.string()), ("tags", pa.list_(pa.string()))])),
    })


def parquet_bytes(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf, row_group_size=700)
    return buf.getvalue()


def same_size(original: bytes, altered: pa.Table, row_group_size: int = 700) -> bytes:
    """A valid Parquet file of ``altered`` padded to the original's size (zeros between the data and the
    footer, which readers never look at)."""
    buf = io.BytesIO()
    pq.write_table(altered, buf, row_group_size=row_group_size)
    data = buf.getvalue()
    assert len(data) < len(original)
    n = int.from_bytes(data[-8:-4], "little")
    cut = len(data) - n - 8
    out = data[:cut] + b"\0" * (len(original) - len(data)) + data[cut:]
    assert len(out) == len(original) and pq.read_table(io.BytesIO(out)).num_rows == altered.num_rows
    return out


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {
        "events/part-0000.parquet": parquet_bytes(table(3000)),
        "events/part-0001.parquet": parquet_bytes(table(2000, seed=3000)),
        "features/user.parquet": parquet_bytes(table(1000, seed=9)),
        "labels.csv": b"id,label\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(500)),
        "README.txt": b"daily feature snapshot\n",
    }


ROWS = 6000


async def estate(tmp: Path, locs: Locations, server: MotoServer, files: dict[str, bytes],
                 validator: dict[str, Any] | None = None, *, sha256: bool = False,
                 algorithm: str = "sha256") -> tuple[dict[str, Any], str]:
    """Production and a NAS copy on disk, a cloud copy in S3; production sealed (digests in ``algorithm``).
    Returns (config, bucket)."""
    for root in (tmp / "prod" / "data", tmp / "nas" / "data"):
        write_tree(root, files)
    backdate(tmp / "prod" / "data")  # production was written before the backups were taken
    await seal_directory(tmp / "prod" / "data", out_path=tmp / "prod" / "data" / MANIFEST_NAME, algorithm=algorithm)
    name = bucket(server, "dataset")
    upload(server, name, files, **({"ChecksumAlgorithm": "SHA256"} if sha256 else {}))
    locs.fs("prod", tmp / "prod", site="dc-a")
    locs.fs("nas", tmp / "nas", site="dc-b")
    locs.s3("cloud", server, name, site="aws")
    cfg = config(tmp, locs, ("prod", "data"), [("nas", "data"), ("cloud", "data")],
                 validators=[{"kind": "dataset", **(validator or {})}], compliance=RULES)
    return cfg, name


def states(result: Result) -> dict[str, CopyState]:
    return {c.copy: c.state for c in result.copies}


async def test_intact_dataset_is_proven_everywhere(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                   files: dict[str, bytes]) -> None:
    """Every file in every location matches the seal; Parquet rows and schemas are proven; S3 SHA256 checksums
    stand in for reads; the copies count for 3-2-1-1-0; nothing is written to the bucket."""
    cfg, name = await estate(tmp_path, locs, moto, files, sha256=True)
    before = versions(moto, name)
    result, parsed = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert set(states(result).values()) == {CopyState.VERIFIED}
    f = result.figures
    total = sum(map(len, files.values()))
    assert f["files_verified"] == 3 * len(files) and f["parquet_files"] == 3
    assert f["rows_verified"] == 3 * ROWS
    assert f["bytes_hashed"] == 2 * total  # production and the NAS are read; S3 proved by its SHA256 checksums
    cloud = report(result, "cloud")
    assert cloud.evidence == {"checksum": len(files)} and cloud.bytes_verified == total
    assert cloud.objects == {"verified": 5, "missing": 0, "mismatch": 0, "corrupt": 0, "extra": 0}
    assert cloud.recovery_point == result.recovery_point and cloud.media == "object-storage"
    # The reads are timed for the restore-time model: the NAS's bytes, none of the S3 copy's (checksums only).
    nas = next(r for r in result.copies if r.role == "copy" and r.copy != "cloud")
    assert nas.read_bytes == total and nas.read_seconds > 0 and cloud.read_bytes == 0
    assert rules(parsed, result)["copies"] == RuleState.PASS
    assert versions(moto, name) == before


async def test_corrupt_data_page_is_caught_by_sha256(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                     files: dict[str, bytes]) -> None:
    """One byte flipped inside a column chunk: the footer still reads and agrees with the seal, only the hash
    tells (content_mismatch); in size-and-structure mode it passes (the documented trade-off)."""
    cfg, _ = await estate(tmp_path, locs, moto, files)
    victim = tmp_path / "nas" / "data" / "events" / "part-0000.parquet"
    col = pq.ParquetFile(victim).metadata.row_group(2).column(1)
    at = col.data_page_offset + col.total_compressed_size // 2
    data = bytearray(victim.read_bytes())
    data[at] ^= 0xFF
    victim.write_bytes(bytes(data))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "content_mismatch") == ["nas:events/part-0000.parquet"]
    assert not {c for c in codes(result) if c.startswith("parquet_")}
    assert states(result) == {"production": CopyState.VERIFIED, "nas": CopyState.FAILED, "cloud": CopyState.VERIFIED}
    assert result.figures["rows_verified"] == 3 * ROWS - 3000

    cfg["assets"]["data"]["validators"] = [{"kind": "dataset", "verify_content": False}]
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK and result.figures["bytes_hashed"] == 0


async def test_blake3_seal_is_verified_by_reads_not_sha256_checksums(
        tmp_path: Path, locs: Locations, moto: MotoServer, files: dict[str, bytes]) -> None:
    """A BLAKE3 seal: every location is hashed with BLAKE3. The S3 copy's SHA256 checksums prove nothing against
    it, so its objects are read (evidence read, never checksum); a flipped byte on the NAS is a content_mismatch."""
    cfg, _ = await estate(tmp_path, locs, moto, files, sha256=True, algorithm="blake3")
    assert '"algorithm": "blake3"' in (tmp_path / "prod" / "data" / MANIFEST_NAME).read_text().splitlines()[0]
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    total = sum(map(len, files.values()))
    assert result.figures["bytes_hashed"] == 3 * total  # production, the NAS and every S3 object read
    assert report(result, "cloud").evidence == {"read": len(files)}

    victim = tmp_path / "nas" / "data" / "events" / "part-0000.parquet"
    col = pq.ParquetFile(victim).metadata.row_group(2).column(1)
    data = bytearray(victim.read_bytes())
    data[col.data_page_offset + col.total_compressed_size // 2] ^= 0xFF  # inside a column chunk: only a hash tells
    victim.write_bytes(bytes(data))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "content_mismatch") == ["nas:events/part-0000.parquet"]
    assert states(result)["cloud"] == CopyState.VERIFIED


@pytest.mark.parametrize("verify_content", [True, False])
async def test_truncated_parquet_is_caught_by_its_footer(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                          files: dict[str, bytes], verify_content: bool) -> None:
    """A Parquet file cut short (on disk and in S3) fails its footer check (parquet_footer_unreadable, counted
    as corrupt) without reading the file, in both modes."""
    cfg, name = await estate(tmp_path, locs, moto, files, {"verify_content": verify_content})
    key = "features/user.parquet"
    cut = files[key][: len(files[key]) - 4096]
    (tmp_path / "nas" / "data" / key).write_bytes(cut)
    s3(moto).put_object(Bucket=name, Key=f"data/{key}", Body=cut)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "parquet_footer_unreadable") == ["cloud:" + key, "nas:" + key]
    assert "size_mismatch" in codes(result) and "content_mismatch" not in codes(result)
    assert report(result, "nas").objects["corrupt"] == 1 and report(result, "cloud").objects["corrupt"] == 1
    assert states(result)["cloud"] == CopyState.FAILED
    if not verify_content:
        assert result.figures["bytes_hashed"] == 0  # caught structurally, from the footer alone


@pytest.mark.parametrize("verify_content", [False, True])
async def test_same_size_rewrites_give_precise_codes(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                      files: dict[str, bytes], verify_content: bool) -> None:
    """Valid Parquet files rewritten to the same size: one with another schema (S3 copy), one with rows dropped
    and one with the same rows in other row groups (NAS copy). Sizes alone would pass them; the footer facts
    name what changed, even without hashing."""
    cfg, name = await estate(tmp_path, locs, moto, files, {"verify_content": verify_content})
    key = "events/part-0001.parquet"
    original = files[key]
    t = table(2000, seed=3000)
    retyped = same_size(original, t.cast(pa.schema([t.schema.field(0), pa.field("score", pa.float32()),
                                                      t.schema.field(2)])))
    fewer = same_size(original, t.slice(0, 1990))
    s3(moto).put_object(Bucket=name, Key=f"data/{key}", Body=retyped)
    (tmp_path / "nas" / "data" / key).write_bytes(fewer)
    regrouped = same_size(files["features/user.parquet"], table(1000, seed=9), row_group_size=1000)
    (tmp_path / "nas" / "data" / "features/user.parquet").write_bytes(regrouped)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "parquet_schema_mismatch") == [f"cloud:{key}"]
    assert subjects(result, "parquet_rows_mismatch") == [f"nas:{key}"]
    assert subjects(result, "parquet_row_groups_mismatch") == ["nas:features/user.parquet"]
    assert report(result, "cloud").objects["mismatch"] == 1 and report(result, "nas").objects["mismatch"] == 2
    assert "content_mismatch" not in codes(result)  # the footer already said why; no bytes read for it
    if not verify_content:
        assert result.figures["bytes_hashed"] == 0


async def test_missing_file_fails_extra_file_warns(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                   files: dict[str, bytes]) -> None:
    """An object deleted from the S3 copy fails it (missing_file); an extra file in the NAS copy is a warning
    that leaves the copy verified."""
    cfg, name = await estate(tmp_path, locs, moto, files)
    s3(moto).delete_object(Bucket=name, Key="data/events/part-0000.parquet")
    write_tree(tmp_path / "nas" / "data", {"events/part-0002.parquet": parquet_bytes(table(10))})
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "missing_file") == ["cloud:events/part-0000.parquet"]
    assert subjects(result, "extra_file") == ["nas:events/part-0002.parquet"]
    assert states(result) == {"production": CopyState.VERIFIED, "nas": CopyState.VERIFIED, "cloud": CopyState.FAILED}
    assert report(result, "nas").objects["extra"] == 1 and report(result, "cloud").objects["missing"] == 1


async def test_seal_missing_or_corrupt_fails(tmp_path: Path, locs: Locations, moto: MotoServer,
                                             files: dict[str, bytes]) -> None:
    """The seal is the only reference for rows and schemas: none means the recovery point was never sealed
    (failed, manifest_missing); a damaged one is manifest_corrupt (failed). Copies are then unproven."""
    cfg, _ = await estate(tmp_path, locs, moto, files)
    seal = tmp_path / "prod" / "data" / MANIFEST_NAME
    lines = seal.read_text().splitlines()
    seal.write_text("\n".join([*lines[:2], lines[2].replace('"rows": 3000', '"rows": "3000"'), *lines[3:]]) + "\n")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED and "manifest_corrupt" in codes(result)
    assert result.recovery_point is None
    seal.unlink()
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED and "manifest_missing" in codes(result)
    assert CopyState.VERIFIED not in states(result).values()


async def test_unmounted_locations_are_errors(tmp_path: Path, locs: Locations, moto: MotoServer,
                                              files: dict[str, bytes]) -> None:
    """A copy location that is not mounted is `error` (the other copies are still proven); production not
    mounted means its seal cannot be read: `error`, never `failed`."""
    cfg, _ = await estate(tmp_path, locs, moto, files)
    os.rename(tmp_path / "nas", tmp_path / "nas-unmounted")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR, result.findings
    assert subjects(result, "location_unavailable") == ["nas"]
    assert states(result) == {"production": CopyState.VERIFIED, "nas": CopyState.ERROR, "cloud": CopyState.VERIFIED}
    os.rename(tmp_path / "prod", tmp_path / "prod-unmounted")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR and "manifest_unreadable" in codes(result)


@pytest.fixture(scope="module")
def guarded_moto() -> Iterator[tuple[MotoServer, str, str]]:
    """A moto server of its own that checks credentials (IAM enforced after the first 3 requests, which create
    the one user allowed to use S3); tests may stop it. Yields (server, access key, secret key)."""
    with iam_moto_server() as guarded:
        yield guarded

async def test_s3_denied_or_down_is_an_error(tmp_path: Path, locs: Locations, files: dict[str, bytes],
                                             guarded_moto: tuple[MotoServer, str, str]) -> None:
    """The S3 copy with a wrong secret key is access_denied, and with its server stopped unreachable: `error`
    both times, with the filesystem copy still proven."""
    server, ak, sk = guarded_moto
    for root in (tmp_path / "prod" / "data", tmp_path / "nas" / "data"):
        write_tree(root, files)
    await seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "prod" / "data" / MANIFEST_NAME)

    owner = s3_client(server.endpoint_url, ak, sk)
    owner.create_bucket(Bucket="guarded-dataset")
    for key, body in files.items():
        owner.put_object(Bucket="guarded-dataset", Key=key, Body=body)  # at the root: moto's signature check
        # rejects a listing whose prefix holds a "/" (it signs the query unencoded)
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    locs.fs("nas", tmp_path / "nas", site="dc-b")
    locs.s3("cloud", server, "guarded-dataset", site="aws", access_key=ak, secret_key="not-the-secret")
    cfg = config(tmp_path, locs, ("prod", "data"), [("nas", "data"), ("cloud", "")],
                 validators=[{"kind": "dataset"}], compliance=RULES)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR, result.findings
    assert subjects(result, "access_denied") == ["cloud"]
    assert states(result) == {"production": CopyState.VERIFIED, "nas": CopyState.VERIFIED, "cloud": CopyState.ERROR}

    locs.s3("cloud", server, "guarded-dataset", site="aws", access_key=ak, secret_key=sk)
    cfg["locations"] = dict(locs.data)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    server.stop()
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR
    assert subjects(result, "unreachable") == ["cloud"] and states(result)["cloud"] == CopyState.ERROR


async def test_seal_without_facts_and_seal_of_a_broken_file(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                            files: dict[str, bytes]) -> None:
    """A seal without Parquet facts (older drwatch, or no pyarrow) is said so (parquet_not_sealed) and footers are
    still checked; a recovery point sealed with an already unreadable Parquet file fails."""
    cfg, _ = await estate(tmp_path, locs, moto, files)
    seal = tmp_path / "prod" / "data" / MANIFEST_NAME
    lines = [json.loads(line) for line in seal.read_text().splitlines()]
    lines[0].pop("parquet_facts")
    for rec in lines[1:]:
        rec.pop("parquet", None)
    seal.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK and "parquet_not_sealed" in codes(result)
    assert result.figures["rows_verified"] == 3 * ROWS  # rows of footers that read, though not compared

    broken = {**files, "features/user.parquet": files["features/user.parquet"][:-10]}
    for root in (tmp_path / "prod" / "data", tmp_path / "nas" / "data"):
        write_tree(root, broken)
    await seal_directory(tmp_path / "prod" / "data", out_path=seal)
    cfg["assets"]["data"]["copies"] = [{"location": "nas", "prefix": "data"}]
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert "parquet_sealed_unreadable" in codes(result)
    assert subjects(result, "parquet_footer_unreadable") == ["nas:features/user.parquet",
                                                             "production:features/user.parquet"]


def mlflow_run(exp: str, run_id: str, *, meta_id: str | None = None, model: bool = True) -> dict[str, bytes]:
    """The files MLflow's file store writes for one run that logged a model."""
    base = f"{exp}/{run_id}"
    meta = {"artifact_uri": f"file:///srv/mlruns/{base}/artifacts", "end_time": 1732780900000, "entry_point_name": "",
            "experiment_id": exp, "lifecycle_stage": "active", "run_id": meta_id or run_id, "run_name": "bright-owl",
            "run_uuid": meta_id or run_id, "source_name": "", "source_type": 4, "source_version": "",
            "start_time": 1732780800000, "status": 3, "tags": [], "user_id": "ml"}
    history = [{"run_id": run_id, "artifact_path": "model", "utc_time_created": "2024-11-28 08:00:00.000000",
                "flavors": {"python_function": {"loader_module": "mlflow.sklearn"}}, "model_uuid": "5" * 32}]
    out = {
        f"{base}/meta.yaml": yaml.safe_dump(meta).encode(),
        f"{base}/params/lr": b"0.01",
        f"{base}/metrics/loss": b"1732780850000 0.42 0\n1732780860000 0.31 1\n",
        f"{base}/tags/mlflow.runName": b"bright-owl",
        f"{base}/tags/mlflow.log-model.history": json.dumps(history).encode(),
        f"{base}/artifacts/model/model.pkl": os.urandom(2048),
        f"{base}/artifacts/eval.parquet": parquet_bytes(table(300)),
    }
    if model:
        out[f"{base}/artifacts/model/MLmodel"] = b"artifact_path: model\nflavors:\n  sklearn: {}\n"
    return out


def mlruns(*runs: dict[str, bytes]) -> dict[str, bytes]:
    tree = {"0/meta.yaml": yaml.safe_dump({"experiment_id": "0", "name": "Default", "lifecycle_stage": "active",
                                           "artifact_location": "file:///srv/mlruns/0"}).encode()}
    for r in runs:
        tree.update(r)
    return tree


async def test_mlflow_tree_is_verified_with_its_structure(tmp_path: Path, locs: Locations, moto: MotoServer) -> None:
    """An intact MLflow store passes with layout: mlflow in every location; a recovery point whose runs are
    broken (meta.yaml naming another run, a logged model without its MLmodel, a run without meta.yaml) fails
    with a code per problem, though every file matches the seal (layout: files passes it)."""
    good = "a" * 32
    cfg, _ = await estate(tmp_path, locs, moto, mlruns(mlflow_run("0", good)), {"layout": "mlflow"})
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["parquet_files"] == 1 and result.figures["rows_verified"] == 3 * 300

    wrong, nomodel, nometa, garbled = "b" * 32, "c" * 32, "d" * 32, "f" * 32
    bare = {k: v for k, v in mlflow_run("0", nometa).items() if not k.endswith("meta.yaml")}
    tree = mlruns(mlflow_run("0", good), mlflow_run("0", wrong, meta_id="e" * 32),
                  mlflow_run("0", nomodel, model=False), bare,
                  {**mlflow_run("0", garbled), f"0/{garbled}/meta.yaml": b"run_id: [unclosed\n"})
    round2 = tmp_path / "round2"
    locs2 = Locations(locs.monkeypatch)
    cfg, _ = await estate(round2, locs2, moto, tree, {"layout": "mlflow"})
    result, _ = await run(round2, cfg)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "mlflow_run_id_mismatch") == [f"{c}:0/{wrong}/meta.yaml" for c in
                                                          ("cloud", "nas", "production")]
    assert subjects(result, "mlflow_artifact_missing") == [f"{c}:0/{nomodel}" for c in ("cloud", "nas", "production")]
    assert subjects(result, "mlflow_meta_missing") == [f"{c}:0/{nometa}" for c in ("cloud", "nas", "production")]
    assert subjects(result, "mlflow_meta_invalid") == [f"{c}:0/{garbled}/meta.yaml" for c in
                                                       ("cloud", "nas", "production")]
    assert set(states(result).values()) == {CopyState.FAILED}
    cfg["assets"]["data"]["validators"] = [{"kind": "dataset"}]
    result, _ = await run(round2, cfg)
    assert result.outcome == Outcome.OK


async def test_mlflow_layout_on_a_tree_without_runs_fails(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                          files: dict[str, bytes]) -> None:
    """layout: mlflow on a tree holding no run directory is a wrong or emptied recovery point."""
    cfg, _ = await estate(tmp_path, locs, moto, files, {"layout": "mlflow"})
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED and "mlflow_no_runs" in codes(result)


def test_config_is_strict(tmp_path: Path, locs: Locations, moto: MotoServer) -> None:
    """Unknown options and a layout that does not exist are refused with their field paths; S3 production
    without a configured seal is refused (the dataset validator needs one)."""
    locs.fs("prod", tmp_path / "prod", site="a")
    locs.s3("cloud", moto, "any-bucket", site="b")
    base = config(tmp_path, locs, ("prod", "data"), [("cloud", "data")],
                  validators=[{"kind": "dataset", "layout": "mlflow", "verify_content": False, "read_sample": 0.5}])
    parse_config(yaml.safe_dump(base), source="x.yaml")
    for bad, where in (({"kind": "dataset", "layuot": "mlflow"}, "layuot"),
                       ({"kind": "dataset", "layout": "dvc"}, "layout"),
                       ({"kind": "dataset", "read_sample": 2}, "read_sample")):
        cfg = {**base, "assets": {"data": {**base["assets"]["data"], "validators": [bad]}}}
        with pytest.raises(ConfigError, match=rf"assets\.data\.validators\[0\]\.{where}"):
            parse_config(yaml.safe_dump(cfg), source="x.yaml")
    s3prod = config(tmp_path, locs, ("cloud", "data"), [("prod", "data")], validators=[{"kind": "dataset"}])
    with pytest.raises(ConfigError, match="manifest"):
        parse_config(yaml.safe_dump(s3prod), source="x.yaml")


def test_without_pyarrow_the_check_is_an_error(tmp_path: Path, files: dict[str, bytes]) -> None:
    """Where pyarrow cannot be imported (core install), drwatch still starts and the run is `error`
    (pyarrow_missing): it could not check, the backup is not blamed."""
    write_tree(tmp_path / "prod" / "data", files)
    path = write_config(tmp_path / "drwatch.yaml", {
        "store": {"sqlite": str(tmp_path / "s.sqlite")},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "a"}},
        "assets": {"data": {"rpo": "1d", "production": {"location": "prod", "prefix": "data"},
                            "validators": [{"kind": "dataset"}]}},
    })
    code = ("import sys; sys.modules['pyarrow'] = None; from drwatch.cli.main import main; "
            f"sys.exit(main(['check', '--config', {str(path)!r}, '--output', 'json']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         cwd=REPO)
    [res] = json.loads(out.stdout)["results"]
    assert res["outcome"] == "error", res
    assert [f["code"] for f in res["findings"]] == ["pyarrow_missing"]


async def test_s3_seal_records_parquet_facts_and_verifies_s3_production(
        tmp_path: Path, locs: Locations, moto: MotoServer, files: dict[str, bytes]) -> None:
    """`drwatch seal s3://...` records the same Parquet facts as a local seal (footers read by ranged GETs); with
    that seal configured, an asset whose production is in S3 is verified. A rows-dropped rewrite in S3
    production after the seal (a later LastModified) is a live change, counted, and the run stays ok; with
    `production.frozen` it is production drift: failed."""
    write_tree(tmp_path / "local", files)
    await seal_directory(tmp_path / "local", out_path=tmp_path / "local.jsonl")
    name = bucket(moto, "dataset-prod")
    upload(moto, name, files)
    locs.s3("cloud", moto, name, site="aws")
    locs.fs("nas", tmp_path / "nas", site="dc-b")
    write_tree(tmp_path / "nas" / "data", files)
    cfg_path = write_config(tmp_path / "drwatch.yaml", config(tmp_path, locs, ("cloud", "data"), [("nas", "data")]))
    out = await asyncio.to_thread(run_cli, "seal", f"s3://{name}/data", "--config", str(cfg_path), "--location",
                                  "cloud", "--out", str(tmp_path / "s3.jsonl"))
    assert out.returncode == 0, out.stderr
    s3_lines = [json.loads(line) for line in (tmp_path / "s3.jsonl").read_text().splitlines()]
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert s3_lines[0]["parquet_facts"] is True
    assert [(r["path"], r.get("parquet")) for r in s3_lines[1:]] == [(r["path"], r.get("parquet")) for r in local[1:]]

    cfg = config(tmp_path, locs, ("cloud", "data"), [("nas", "data")], validators=[{"kind": "dataset"}])
    cfg["assets"]["data"]["manifest"] = str(tmp_path / "s3.jsonl")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["rows_verified"] == 2 * ROWS
    key = "events/part-0000.parquet"
    await asyncio.sleep(1.1)  # LastModified strictly after the seal, at S3's one-second resolution
    s3(moto).put_object(Bucket=name, Key=f"data/{key}", Body=same_size(files[key], table(2990)))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["production_changed_since_seal"] == 1
    assert states(result)["production"] == CopyState.VERIFIED
    cfg["assets"]["data"]["production"]["frozen"] = True
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "parquet_rows_mismatch") == [f"production:{key}"]
    assert "production_drift" in codes(result) and states(result)["production"] == CopyState.FAILED


async def test_timeout_ends_the_run_as_timeout(tmp_path: Path, locs: Locations, files: dict[str, bytes]) -> None:
    """A run longer than its timeout is `timeout` (its hashing and footer reads are abandoned), neither failed
    nor error; the next run with time enough proves the same dataset."""
    big = {**files, **{f"blobs/b{i:02d}.bin": os.urandom(1 << 20) for i in range(24)}}
    write_tree(tmp_path / "prod" / "data", big)
    write_tree(tmp_path / "nas" / "data", big)
    await seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "prod" / "data" / MANIFEST_NAME)
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    locs.fs("nas", tmp_path / "nas", site="dc-b")
    cfg = config(tmp_path, locs, ("prod", "data"), [("nas", "data")],
                 validators=[{"kind": "dataset", "timeout": "1ms"}])
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.TIMEOUT
    cfg["assets"]["data"]["validators"] = [{"kind": "dataset"}]
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK and result.figures["files_verified"] == 2 * len(big)


async def test_stale_empty_or_vanished_copy_fails(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                  files: dict[str, bytes]) -> None:
    """A seal older than the RPO (rpo_exceeded), a copy directory that is gone from a mounted location
    (copy_missing) and a recovery point sealed empty (empty_recovery_point) all fail."""
    cfg, _ = await estate(tmp_path, locs, moto, files)
    result, _ = await run(tmp_path, cfg, clock=lambda: time.time() + 2 * 86400)
    assert result.outcome == Outcome.FAILED and "rpo_exceeded" in codes(result)
    os.rename(tmp_path / "nas" / "data", tmp_path / "nas" / "gone")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED and subjects(result, "copy_missing") == ["nas"]
    empty = tmp_path / "prod" / "empty"
    empty.mkdir()
    await seal_directory(empty, out_path=empty / MANIFEST_NAME)
    cfg["assets"]["data"]["production"]["prefix"] = "empty"
    cfg["assets"]["data"]["copies"] = []
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED and "empty_recovery_point" in codes(result)


# Root without the capabilities that let it read any file: what a backup job running as a normal user sees.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
          "--inh-caps=-dac_override,-dac_read_search", "--"]


@pytest.mark.parametrize("also_missing", [True, False])
def test_unreadable_directory_is_could_not_check_and_the_rest_is_still_proven(
        tmp_path: Path, files: dict[str, bytes], also_missing: bool) -> None:
    """A NAS copy whose events/ cannot be listed (mode 000; as root with CAP_DAC_* dropped): its files are
    "could not check" (one `unreadable` finding naming the directory, never missing_file) while the rest is
    still proven: a file missing from features/ fails the copy and the run; without it the run is an error."""
    prefix = NO_DAC if os.geteuid() == 0 else []
    assert not prefix or shutil.which("setpriv"), "needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
    for root in (tmp_path / "prod" / "data", tmp_path / "nas" / "data"):
        write_tree(root, files)
    asyncio.run(seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "prod" / "data" / MANIFEST_NAME))
    if also_missing:
        (tmp_path / "nas" / "data" / "features" / "user.parquet").unlink()
    path = write_config(tmp_path / "drwatch.yaml", {
        "store": {"sqlite": str(tmp_path / "s.sqlite")},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "a"},
                      "nas": {"kind": "filesystem", "path": str(tmp_path / "nas"), "site": "b"}},
        "assets": {"data": {"rpo": "1d", "production": {"location": "prod", "prefix": "data"},
                            "copies": [{"location": "nas", "prefix": "data"}],
                            "validators": [{"kind": "dataset"}]}},
    })
    bad = tmp_path / "nas" / "data" / "events"
    bad.chmod(0)
    try:
        out = subprocess.run([*prefix, sys.executable, "-m", "drwatch", "check", "--config", str(path),
                              "--output", "json"], capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    finally:
        bad.chmod(0o755)
    [res] = json.loads(out.stdout)["results"]
    found = {f["code"]: sorted(g["subject"] for g in res["findings"] if g["code"] == f["code"])
             for f in res["findings"]}
    assert found.get("unreadable") == ["nas:events/"], res["findings"]
    nas = next(c for c in res["copies"] if c["copy"] == "nas")
    if also_missing:
        assert res["outcome"] == "failed", res["findings"]
        assert found.get("missing_file") == ["nas:features/user.parquet"]
        assert nas["state"] == "failed" and nas["objects"]["missing"] == 1
    else:
        assert res["outcome"] == "error", res["findings"]
        assert "missing_file" not in found
        assert nas["state"] == "error"
    assert nas["objects"]["verified"] == 3 - also_missing  # labels.csv, README.txt, features/user.parquet


async def test_a_file_a_copy_lacks_is_always_judged(tmp_path: Path, locs: Locations, moto: MotoServer,
                                                    files: dict[str, bytes]) -> None:
    """A file the NAS copy lacks is judged at the end of the listing even when it is the first key (nothing of
    the copy listed yet to date it): missing when production's file is older than the copy, behind (a warning,
    an older recovery point within the RPO) when production wrote it after the copy was taken."""
    cfg, _ = await estate(tmp_path, locs, moto, files)
    nas = tmp_path / "nas" / "data"
    hour_ago = time.time() - 3600
    for path in nas.rglob("*"):
        if path.is_file():
            os.utime(path, (hour_ago, hour_ago))  # the copy was taken an hour ago (mtimes kept)
    (nas / "README.txt").unlink()  # the first key in order: nothing of the copy is listed yet when it comes up
    prod_readme = tmp_path / "prod" / "data" / "README.txt"
    os.utime(prod_readme, (hour_ago - 3600, hour_ago - 3600))  # production's file predates the copy
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED, result.findings
    assert subjects(result, "missing_file") == ["nas:README.txt"]
    assert report(result, "nas").objects["missing"] == 1

    os.utime(prod_readme, (hour_ago + 60, hour_ago + 60))  # written after the copy was taken
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert "nas:README.txt" in subjects(result, "copy_behind") and not subjects(result, "missing_file")
