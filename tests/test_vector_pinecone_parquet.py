"""``vector_restore`` on the Pinecone backend from a Parquet export (issue 17 item 5), against the Pinecone stand-in
(tests/support/pinecone_standin.py, NOT Pinecone: the documented REST contract on 127.0.0.1) and a real Parquet
file on disk: the export is upserted into a temporary index and compared with production as a restored backup is.
Faults are real: a damaged file, an export that lacks vectors, the stand-in stopped, upserts answered late.
"""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Outcome, Result
from drwatch.validators.vector.config import PineconeParquetExport
from drwatch.validators.vector.pinecone_parquet import read_export
from tests.support.helpers import free_port
from tests.support.pinecone_standin import PineconeStandIn
from tests.support.runs import open_runner
from tests.support.s3helpers import Locations, bucket, upload
from tests.support.s3servers import MotoServer
from tests.test_vector_pinecone import (
    DIM,
    KEY_ENV,
    PROD,
    N,
    assert_production_untouched,
    codes,
    config_doc,
    standin,
    temp_indexes,
    vectors,
)

__all__ = ["standin"]  # the fixture, shared with test_vector_pinecone


def write_export(root: Path, data: dict[str, list[float]], name: str = "latest.parquet") -> Path:
    path = root / "exports" / "pinecone" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(data)
    pq.write_table(pa.table({"id": ids, "values": [data[i] for i in ids],
                             "metadata": [f'{{"n": {n}}}' for n in range(len(ids))]}), path)
    return path


async def check(tmp: Path, server: PineconeStandIn, monkeypatch: pytest.MonkeyPatch, *, url: str | None = None,
                exports: dict[str, Any] | None = None, **options: Any) -> Result:
    monkeypatch.setenv(KEY_ENV, server.api_key)
    doc = config_doc(tmp, url or server.url, parquet={"location": "exports", "prefix": "pinecone"}, **options)
    doc["locations"]["exports"] = exports or {"kind": "filesystem", "path": str(tmp / "exports")}
    cfg = parse_config(yaml.safe_dump(doc), source=str(tmp / "drwatch.yaml"))
    async with open_runner(cfg, tmp / "sbx", time.time) as runner:
        return await runner.execute("vectors", cfg.assets["vectors"].validators[0])


async def test_an_export_upserted_answers_like_production(tmp_path: Path, standin: PineconeStandIn,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An export of production's vectors: upserted into a temporary index (created empty, no restore job), same
    exact top-k and full recall: ok; the export's mtime is the recovery point; the temporary index is deleted and
    production only read."""
    standin.create_index(PROD, DIM, "cosine", vectors())
    path = write_export(tmp_path, vectors())
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.OK, result.findings
    f = result.figures
    assert f["rows_restored"] == N and f["id_coverage_ratio"] == 1.0 and f["vector_checksum_mismatches"] == 0
    assert f["recall_at_k"] == 1.0 and result.recovery_point == pytest.approx(path.stat().st_mtime)
    assert standin.requests_matching("POST", "/create-index") == []
    assert len(standin.requests_matching("POST", "/vectors/upsert")) == 3  # 300 vectors, 100 per request
    assert temp_indexes(standin) == []
    assert_production_untouched(standin)


async def test_an_export_in_s3_is_streamed_and_upserted(tmp_path: Path, standin: PineconeStandIn, moto: MotoServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The export as ``pinecone/latest.parquet`` in a bucket of the moto server (an older one beside it): the newest
    is streamed into the sandbox and upserted; its LastModified is the recovery point."""
    standin.create_index(PROD, DIM, "cosine", vectors())
    local = write_export(tmp_path, vectors())
    name = bucket(moto, "pc-export")
    old = vectors(seed=9)
    upload(moto, name, {"old.parquet": write_export(tmp_path, old, "old.parquet").read_bytes()}, prefix="pinecone/")
    await asyncio.sleep(1.1)
    upload(moto, name, {"latest.parquet": local.read_bytes()}, prefix="pinecone/")
    locs = Locations(monkeypatch)
    locs.s3("exports", moto, name, site="dc-b")
    result = await check(tmp_path, standin, monkeypatch, exports=locs.data["exports"])
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["rows_restored"] == N and result.figures["recall_at_k"] == 1.0
    assert result.recovery_point == pytest.approx(time.time(), abs=120)
    assert temp_indexes(standin) == []


async def test_a_corrupt_export_fails(tmp_path: Path, standin: PineconeStandIn,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncated export (its footer gone): failed (`recovery_point_unreadable`) before any index is created.
    Bytes of its values overwritten (Parquet without page checksums still decodes): with other finite floats,
    failed, the upserted index answers unlike production (`exact_topk_mismatch`, or `vector_mismatch` where
    the changed vector is sampled; the temporary index deleted); with
    NaNs, failed before anything is billed (`invalid_values`)."""
    standin.create_index(PROD, DIM, "cosine", vectors())
    path = write_export(tmp_path, vectors())
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    cut = await check(tmp_path, standin, monkeypatch)
    assert cut.outcome == Outcome.FAILED, cut.findings
    assert codes(cut) == {"recovery_point_unreadable"}
    assert standin.requests_matching("POST", "/indexes") == [] and temp_indexes(standin) == []
    values_at = whole.index(struct.pack("<d", vectors()[sorted(vectors())[150]][0]))  # a value mid-column
    changed = {"vector_mismatch", "exact_topk_mismatch", "recall_low"}  # found by a checksum or by the answers
    for fill, found in ((b"\x3f", changed), (b"\xff", {"invalid_values"})):  # 4.8e-4 (finite), NaN
        raw = bytearray(whole)
        raw[values_at: values_at + 64] = fill * 64
        path.write_bytes(bytes(raw))
        flipped = await check(tmp_path, standin, monkeypatch)
        assert flipped.outcome == Outcome.FAILED, flipped.findings
        assert codes(flipped) and codes(flipped) <= found, flipped.findings
        assert temp_indexes(standin) == []


async def test_an_export_with_malformed_rows_fails(tmp_path: Path, standin: PineconeStandIn,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows that decode but are not vectors (a values column of plain numbers, metadata that is not a JSON
    object): a bad backup, failed (`invalid_values`, `invalid_metadata`) before any index is created, never
    `internal_error`. An export gone between the listing and the read: could not check (`location_unavailable`)."""
    standin.create_index(PROD, DIM, "cosine", vectors())
    path = write_export(tmp_path, vectors())
    ids = sorted(vectors())
    for table, code in ((pa.table({"id": ids, "values": [1.0] * len(ids)}), "invalid_values"),
                        (pa.table({"id": ids, "values": [vectors()[i] for i in ids],
                                   "metadata": ["{not json"] * len(ids)}), "invalid_metadata"),
                        (pa.table({"id": ids, "values": [["x"] * DIM] * len(ids)}), "invalid_values")):
        pq.write_table(table, path)
        result = await check(tmp_path, standin, monkeypatch)
        assert result.outcome == Outcome.FAILED, result.findings
        assert codes(result) == {code}, result.findings
    assert standin.requests_matching("POST", "/indexes") == [] and temp_indexes(standin) == []
    path.unlink()
    with pytest.raises(ValidatorError) as gone:
        read_export(path, PineconeParquetExport(location="exports"), DIM, path.name)
    assert gone.value.code == "location_unavailable"


async def test_an_export_missing_vectors_fails(tmp_path: Path, standin: PineconeStandIn,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An export without 60 of production's 300 ids: failed (the comparison finds them missing); the temporary
    index is deleted."""
    standin.create_index(PROD, DIM, "cosine", vectors())
    data = vectors()
    for gone in sorted(data)[::5]:
        del data[gone]
    write_export(tmp_path, data)
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.FAILED, result.findings
    assert "missing_rows" in codes(result), result.findings
    assert result.figures["rows_restored"] == 240
    assert temp_indexes(standin) == []


async def test_the_standin_down_is_error(tmp_path: Path, standin: PineconeStandIn,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listening at the control plane: error (`unreachable`), never failed."""
    write_export(tmp_path, vectors())
    result = await check(tmp_path, standin, monkeypatch, url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    assert result.outcome == Outcome.ERROR, result.findings
    assert codes(result) == set()


async def test_the_temporary_index_is_deleted_on_timeout(tmp_path: Path, standin: PineconeStandIn,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Upserts answered 3 s late under a 1.5 s validator timeout: outcome timeout, and the temporary index that
    was created is deleted all the same."""
    standin.create_index(PROD, DIM, "cosine", vectors())
    write_export(tmp_path, vectors())
    standin.slow("/vectors/upsert", 3.0)
    result = await check(tmp_path, standin, monkeypatch, timeout="1500ms")
    assert result.outcome == Outcome.TIMEOUT, result.findings
    assert len(standin.requests_matching("POST", "/indexes")) == 1
    assert temp_indexes(standin) == []
