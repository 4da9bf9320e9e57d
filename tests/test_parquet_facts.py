"""Parquet facts on real files written with pyarrow: footer checks, schema fingerprints, and the seal's
Parquet extension (recorded, read back, old manifests still valid, honest when pyarrow is missing)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drwatch.formats.manifest import ManifestError, aread, iter_entries, read_header
from drwatch.formats.parquet import (
    FooterError,
    ParquetFacts,
    fetch_facts,
    parse_footer,
    read_file_facts,
    schema_fingerprint,
)
from drwatch.formats.sealing import seal_directory
from drwatch.storage.filesystem import MANIFEST_NAME
from tests.support.helpers import REPO


def table(rows: int = 3000, seed: int = 0) -> pa.Table:
    """Flat, nested struct, list and map columns; no byte sequence 'PAR1' in the data."""
    return pa.table({
        "id": pa.array(range(seed, seed + rows), pa.int64()),
        "name": pa.array([f"user-{i}" for i in range(rows)], pa.string()),
        "score": pa.array([i * 0.5 for i in range(rows)], pa.float64()),
        "profile": pa.array([{"age": i % 90, "tags": [f"t{i % 7}", f"u{i % 3}"]} for i in range(rows)],
                            pa.struct([("age", pa.int32()), ("tags", pa.list_(pa.string()))])),
        "attrs": pa.array([[("k", i)] for i in range(rows)], pa.map_(pa.string(), pa.int64())),
    })


def parquet_bytes(t: pa.Table, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf, **{"row_group_size": 700, **kwargs})  # type: ignore[arg-type]
    return buf.getvalue()


@pytest.fixture(scope="module")
def sample() -> bytes:
    return parquet_bytes(table())


def facts_of(data: bytes, tmp: Path, name: str = "f.parquet") -> ParquetFacts:
    path = tmp / name
    path.write_bytes(data)
    return read_file_facts(path)


def test_footer_facts_of_a_real_file(sample: bytes, tmp_path: Path) -> None:
    """Rows, row groups and the fingerprint of the schema pyarrow wrote, from the footer alone."""
    facts = facts_of(sample, tmp_path)
    assert (facts.rows, facts.row_groups) == (3000, 5)
    assert facts.schema == schema_fingerprint(table(10).schema)
    assert facts.error is None and len(facts.schema) == 64


def test_fingerprint_ignores_metadata_and_writer_layout(sample: bytes, tmp_path: Path) -> None:
    """Schema metadata (a pandas-style blob), field metadata, row-group size, compression and the list item name
    a writer picks do not change the fingerprint; the row-group count is recorded separately."""
    base = facts_of(sample, tmp_path, "a.parquet")
    t = table()
    fields = [t.schema.field(0).with_metadata({"PARQUET:field_id": "7"}), *list(t.schema)[1:]]
    meta = pa.schema(fields, metadata={"pandas": json.dumps({"index_columns": [], "creator": "x" * 50})})
    variant = parquet_bytes(t.cast(meta), row_group_size=1000, compression="zstd", use_compliant_nested_type=False)
    other = facts_of(variant, tmp_path, "b.parquet")
    assert variant != sample
    assert pq.read_schema(io.BytesIO(variant)).field("profile").type.field("tags").type.value_field.name == "item"
    assert other.schema == base.schema
    assert (other.rows, other.row_groups) == (3000, 3)


def test_fingerprint_sees_names_types_nullability_and_nesting() -> None:
    """Each change to a field's name, type, type parameter, nullability or a nested child changes it."""
    item = pa.struct([("age", pa.int32()), ("tags", pa.list_(pa.string()))])
    base = [pa.field("id", pa.int64()), pa.field("at", pa.timestamp("us", tz="UTC")), pa.field("p", item)]
    variants = [
        base,
        [pa.field("ID", pa.int64()), *base[1:]],
        [pa.field("id", pa.int32()), *base[1:]],
        [pa.field("id", pa.int64(), nullable=False), *base[1:]],
        [base[0], pa.field("at", pa.timestamp("ms", tz="UTC")), base[2]],
        [base[0], pa.field("at", pa.timestamp("us")), base[2]],
        [*base[:2], pa.field("p", pa.struct([("age", pa.int64()), ("tags", pa.list_(pa.string()))]))],
        [*base[:2], pa.field("p", pa.struct([("years", pa.int32()), ("tags", pa.list_(pa.string()))]))],
        [*base[:2], pa.field("p", pa.struct([("age", pa.int32()),
                                             ("tags", pa.list_(pa.field("x", pa.string(), nullable=False)))]))],
        [*base[:2], pa.field("p", pa.struct([("age", pa.int32()), ("tags", pa.large_list(pa.string()))]))],
        [base[2], *base[:2]],  # order
        base[:2],
    ]
    prints = [schema_fingerprint(pa.schema(v)) for v in variants]
    assert len(set(prints)) == len(variants)
    assert schema_fingerprint(pa.schema(base, metadata={"k": "v"})) == prints[0]


@pytest.mark.parametrize("cut", [1, 4, 8, 100, 5000, -12])
def test_truncated_file_has_an_unreadable_footer(sample: bytes, tmp_path: Path, cut: int) -> None:
    """A file cut short anywhere has no footer: FooterError, whatever is left."""
    data = sample[:cut] if cut < 0 else sample[:-cut]
    with pytest.raises(FooterError):
        facts_of(data, tmp_path)


def test_damaged_magic_and_footer_length(sample: bytes, tmp_path: Path) -> None:
    """Each structural check has its own reason: leading magic, trailing magic, encrypted footer, length."""
    cases = {
        b"XAR1" + sample[4:]: "start",
        sample[:-4] + b"PARX": "end of the file",
        sample[:-4] + b"PARE": "encrypted",
        sample[:-8] + (len(sample)).to_bytes(4, "little") + b"PAR1": "does not fit",
        sample[:-8] + (0).to_bytes(4, "little") + b"PAR1": "does not fit",
        b"PAR1PAR1": "too short",
    }
    for data, reason in cases.items():
        with pytest.raises(FooterError, match=reason):
            facts_of(data, tmp_path)


def test_footer_over_garbage_is_caught(sample: bytes, tmp_path: Path) -> None:
    """A file cut short and re-terminated with its own footer passes the magic and length checks, but its
    column chunks point past the data that is left."""
    n = int.from_bytes(sample[-8:-4], "little")
    footer = sample[-(n + 8):]
    refooted = sample[: len(sample) // 2] + footer
    with pytest.raises(FooterError, match="outside the file's data"):
        facts_of(refooted, tmp_path)
    # Damage inside the metadata itself: it no longer parses, or no longer adds up.
    mangled = bytearray(sample)
    mangled[len(sample) - 8 - n: len(sample) - 8 - n + 40] = b"\xff" * 40
    with pytest.raises(FooterError):
        facts_of(bytes(mangled), tmp_path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keep=st.integers(min_value=0, max_value=20_000), flips=st.lists(st.integers(1, 3000), max_size=4))
def test_any_damage_is_a_footer_error_never_a_crash(sample: bytes, keep: int, flips: list[int]) -> None:
    """Truncated files always fail with FooterError; bytes flipped in the footer region give FooterError or
    facts, never another exception."""
    size = len(sample)
    if keep < size:
        data = sample[:keep]
        with pytest.raises(FooterError):
            parse_footer(data[:4], data[-(min(len(data), 65536)):], len(data))
        return
    mangled = bytearray(sample)
    for back in flips:
        mangled[size - back] ^= 0x5A
    with contextlib.suppress(FooterError):
        parse_footer(bytes(mangled[:4]), bytes(mangled[-65536:]), size)


async def test_ranged_reads_fetch_only_the_ends(tmp_path: Path) -> None:
    """Through ranged reads the facts equal the local ones, and only the head and the footer are fetched."""
    data = parquet_bytes(table(30_000))
    path = tmp_path / "big.parquet"
    path.write_bytes(data)
    fetched: list[tuple[int, int]] = []

    async def fetch(start: int, end: int) -> bytes:
        fetched.append((start, end))
        return data[start:end]

    facts = await fetch_facts(fetch, len(data))
    assert facts == await asyncio.to_thread(read_file_facts, path)
    assert facts.rows == 30_000
    assert fetched[0] == (0, 4) and all(end == len(data) for _, end in fetched[1:])
    assert sum(e - s for s, e in fetched) <= 64 * 1024 + 4 < len(data) / 4


def test_facts_json_roundtrip_and_validation() -> None:
    facts = ParquetFacts(rows=5, row_groups=1, schema="ab" * 32)
    assert ParquetFacts.from_json(json.loads(json.dumps(facts.to_json()))) == facts
    assert ParquetFacts.from_json({"error": "no magic"}).error == "no magic"
    for bad in ([], {"rows": -1, "row_groups": 1, "schema": "ab" * 32}, {"rows": 1, "row_groups": 1},
                {"rows": True, "row_groups": 1, "schema": "ab" * 32},
                {"rows": 1, "row_groups": 1, "schema": "zz" * 32}):
        with pytest.raises(ValueError):
            ParquetFacts.from_json(bad)


async def test_seal_records_parquet_facts_in_path_order(sample: bytes, tmp_path: Path) -> None:
    """drwatch's seal records rows, row groups and schema for each *.parquet file (an unreadable one as such),
    nothing for other files, keeps string path order, and reads back into entries."""
    root = tmp_path / "ds"
    (root / "part").mkdir(parents=True)
    (root / "part" / "b.parquet").write_bytes(sample)
    (root / "part" / "a.PARQUET").write_bytes(parquet_bytes(table(10)))
    (root / "part.txt").write_bytes(b"notes")
    (root / "broken.parquet").write_bytes(sample[:-100])
    header = await seal_directory(root, out_path=root / MANIFEST_NAME)
    assert header.parquet_facts is True
    lines = (root / MANIFEST_NAME).read_text().splitlines()
    assert json.loads(lines[0])["parquet_facts"] is True
    recs = [json.loads(line) for line in lines[1:]]
    assert [r["path"] for r in recs] == ["broken.parquet", "part.txt", "part/a.PARQUET", "part/b.parquet"]
    assert "error" in recs[0]["parquet"] and "parquet" not in recs[1]
    assert recs[2]["parquet"]["rows"] == 10
    assert recs[3]["parquet"] == {"rows": 3000, "row_groups": 5, "schema": schema_fingerprint(table(1).schema)}
    head, entries = await aread(root / MANIFEST_NAME)
    got = [e async for e in entries]
    assert head.parquet_facts is True
    assert [e.parquet.rows if e.parquet and e.parquet.error is None else None for e in got] == [None, None, 10, 3000]


def test_old_manifests_stay_valid_and_bad_facts_are_corrupt(tmp_path: Path) -> None:
    """A manifest without the Parquet fields reads as before (facts unknown); a malformed parquet object or
    header flag makes the manifest corrupt."""
    old = '{"drwatch_manifest": 1, "sealed_at": 1.0, "algorithm": "sha256", "files": 1, "bytes": 3}\n' \
          '{"path": "x.parquet", "size": 3, "sha256": "' + "0" * 64 + '"}\n'
    fh = io.StringIO(old)
    header = read_header(fh)
    [entry] = list(iter_entries(fh, header))
    assert header.parquet_facts is None and entry.parquet is None
    bad = old.replace('"}', '", "parquet": {"rows": "many"}}')
    fh = io.StringIO(bad)
    with pytest.raises(ManifestError, match="malformed"):
        list(iter_entries(fh, read_header(fh)))
    with pytest.raises(ManifestError, match="parquet_facts"):
        read_header(io.StringIO(old.replace('"bytes": 3', '"bytes": 3, "parquet_facts": "yes"')))


def test_seal_without_pyarrow_says_so(sample: bytes, tmp_path: Path) -> None:
    """Where pyarrow cannot be imported (a core install), `drwatch seal` still seals sizes and sha256 and flags
    the header ``parquet_facts: false`` instead of failing or pretending."""
    root = tmp_path / "ds"
    root.mkdir()
    (root / "a.parquet").write_bytes(sample)
    code = ("import sys; sys.modules['pyarrow'] = None; from drwatch.cli.main import main; "
            f"sys.exit(main(['seal', '--location-path', {str(root)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = (root / MANIFEST_NAME).read_text().splitlines()
    assert json.loads(lines[0])["parquet_facts"] is False
    assert "parquet" not in json.loads(lines[1]) and json.loads(lines[1])["size"] == len(sample)
