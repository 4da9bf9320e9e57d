"""Structural integrity of safetensors files, read from the header alone (no tensor is loaded).

A safetensors file is ``N`` (8 bytes, little-endian u64), ``N`` bytes of UTF-8 JSON (the header, maybe
padded with spaces), then the data region. The header maps tensor names to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the data region) plus an optional ``__metadata__``
mapping of text to text. A well-formed file indexes its data region entirely: the ranges, sorted, are
contiguous from 0, never overlap and end exactly at the end of the file, and each range holds
``prod(shape) * dtype bits / 8`` bytes.

Everything here is pure: :func:`check_header` judges a header given the file size, :func:`check_index`
judges a sharded model's ``model.safetensors.index.json`` against the tensors of its shards. Reading is
left to the caller: :func:`check_file` reads a local file (blocking: call it from a thread), and
:func:`check_reader` takes any async byte-range reader (an S3 ranged GET), so a copy anywhere is checked by
reading ``8 + N`` bytes and knowing its size from the listing. No safetensors/torch import.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bits per element of every dtype the safetensors format defines (F4/F6: sub-byte floats, packed).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
MAX_HEADER = 100_000_000  # bytes: the limit the reference implementation enforces
FIRST_READ = 64 * 1024  # one ranged read of this size usually covers length and header together
INDEX_NAME = "model.safetensors.index.json"

# Problem codes (stable: they become finding codes).
TRUNCATED = "safetensors_truncated"  # the file ends before what its header describes
HEADER_INVALID = "safetensors_header_invalid"  # length, UTF-8, JSON or schema of the header
DTYPE_UNKNOWN = "safetensors_dtype_unknown"
SHAPE_MISMATCH = "safetensors_shape_mismatch"  # prod(shape) * dtype size != byte range
OFFSETS_INVALID = "safetensors_offsets_invalid"  # begin > end, negative, not integers
OVERLAP = "safetensors_overlap"
GAP = "safetensors_gap"
OUT_OF_BOUNDS = "safetensors_out_of_bounds"  # a range past the end in a layout that is not a clean truncation
TRAILING_BYTES = "safetensors_trailing_bytes"  # data region longer than the tensors cover
INDEX_INVALID = "safetensors_index_invalid"
INDEX_MISSING_SHARD = "safetensors_index_missing_shard"
INDEX_MISSING_TENSOR = "safetensors_index_missing_tensor"
INDEX_UNLISTED_TENSOR = "safetensors_index_unlisted_tensor"  # in a shard, not in weight_map (warning)


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Layout:
    """What a header says and what is wrong with it. ``ok`` when there is no problem."""

    size: int
    header_len: int | None = None
    tensors: tuple[Tensor, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tensors)

    @property
    def data_start(self) -> int:
        return 8 + (self.header_len or 0)


def header_length(first8: bytes) -> int:
    if len(first8) < 8:
        raise ValueError("fewer than 8 bytes")
    return int(struct.unpack("<Q", first8[:8])[0])


def _length_problem(n: int, size: int) -> Problem | None:
    if n == 0 or n > MAX_HEADER:
        return Problem(HEADER_INVALID, f"header length {n} is not plausible (1..{MAX_HEADER} bytes): "
                                       "not a safetensors file, or its first 8 bytes are damaged")
    if 8 + n > size:
        return Problem(TRUNCATED, f"the file ({size} bytes) ends inside its {n}-byte header")
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_header(header_len: int, header: bytes, size: int) -> Layout:
    """Judge a header (``header`` = the ``header_len`` bytes after the length) of a file of ``size`` bytes."""
    doc = _header_document(header_len, header, size)
    if isinstance(doc, Layout):
        return doc
    problems: list[Problem] = []
    metadata: dict[str, str] = {}
    meta = doc.pop("__metadata__", None)
    if meta is not None:
        if isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values()):
            metadata = dict(meta)
        else:
            problems.append(Problem(HEADER_INVALID, "__metadata__ is not a mapping of text to text"))
    tensors = [t for name, info in doc.items() if (t := _tensor(name, info, problems)) is not None]
    if len(tensors) == len(doc):  # a tensor without a usable range leaves the layout unknowable
        problems.extend(_layout_problems(tensors, size - 8 - header_len))
    return Layout(size, header_len, tuple(tensors), metadata, tuple(problems))


def _header_document(header_len: int, header: bytes, size: int) -> dict[Any, Any] | Layout:
    """The header's JSON object, or the Layout of a file whose header is not one."""
    if size < 8:
        return Layout(size, problems=(Problem(TRUNCATED, f"the file holds {size} bytes, fewer than the 8-byte "
                                                         "header length"),))
    early = _length_problem(header_len, size)
    if early is not None:
        return Layout(size, header_len, problems=(early,))
    if len(header) < header_len:
        return Layout(size, header_len, problems=(Problem(TRUNCATED, "the header could not be read in full"),))
    raw = header[:header_len]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Layout(size, header_len, problems=(Problem(HEADER_INVALID, "header is not UTF-8"),))
    if not text.startswith("{"):
        return Layout(size, header_len, problems=(Problem(HEADER_INVALID, "header does not start with '{'"),))
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return Layout(size, header_len, problems=(Problem(HEADER_INVALID, f"header is not JSON ({exc.msg} at "
                                                                          f"byte {exc.pos})"),))
    except (ValueError, RecursionError) as exc:  # an integer past the digit limit, nesting past the stack
        return Layout(size, header_len, problems=(Problem(HEADER_INVALID, "header is not JSON a parser accepts "
                                                                          f"({type(exc).__name__})"),))
    if not isinstance(doc, dict):
        return Layout(size, header_len, problems=(Problem(HEADER_INVALID, "header is not a JSON object"),))
    return doc


def _tensor(name: Any, info: Any, problems: list[Problem]) -> Tensor | None:
    """One tensor's entry, its problems appended; None when it has no usable range."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        problems.append(Problem(HEADER_INVALID, f"tensor {name!r}: expected exactly dtype, shape, data_offsets"))
        return None
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    dims = [_int(d) for d in shape] if isinstance(shape, list) else [None]
    if any(d is None or d < 0 for d in dims):
        problems.append(Problem(HEADER_INVALID, f"tensor {name!r}: shape {shape!r} is not a list of "
                                                "non-negative integers"))
        return None
    bounds = [_int(o) for o in offsets] if isinstance(offsets, list) and len(offsets) == 2 else [None]
    if any(b is None for b in bounds):
        problems.append(Problem(OFFSETS_INVALID, f"tensor {name!r}: data_offsets {offsets!r} are not two "
                                                 "integers"))
        return None
    begin, end = int(bounds[0] or 0), int(bounds[1] or 0)
    if begin < 0 or end < begin:
        problems.append(Problem(OFFSETS_INVALID, f"tensor {name!r}: data_offsets [{begin}, {end}] are "
                                                 "negative or reversed"))
        return None
    bits = DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None:
        problems.append(Problem(DTYPE_UNKNOWN, f"tensor {name!r}: unknown dtype {dtype!r}"))
    else:
        nbits = math.prod(int(d) for d in dims if d is not None) * bits
        if nbits % 8 or nbits // 8 != end - begin:
            problems.append(Problem(SHAPE_MISMATCH, f"tensor {name!r}: {dtype}{list(dims)} needs "
                                                    f"{nbits / 8:g} bytes, its range holds {end - begin}"))
    return Tensor(str(name), str(dtype), tuple(int(d) for d in dims if d is not None), begin, end)


def _layout_problems(tensors: list[Tensor], data_len: int) -> list[Problem]:
    """Sorted ranges must tile the data region [0, data_len) exactly."""
    problems: list[Problem] = []
    covered = 0
    irregular = False
    for t in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if t.begin > covered:
            irregular = True
            problems.append(Problem(GAP, f"{t.begin - covered} unindexed bytes before tensor {t.name!r} "
                                         f"(data bytes {covered}..{t.begin})"))
        elif t.begin < covered:
            irregular = True
            problems.append(Problem(OVERLAP, f"tensor {t.name!r} [{t.begin}, {t.end}] overlaps the bytes before "
                                             f"it (covered up to {covered})"))
        covered = max(covered, t.end)
    if covered > data_len:
        if irregular:
            problems.extend(Problem(OUT_OF_BOUNDS, f"tensor {t.name!r} ends at data byte {t.end}, past the end "
                                                   f"of the file's {data_len} data bytes")
                            for t in tensors if t.end > data_len)
        else:
            problems.append(Problem(TRUNCATED, f"the header describes {covered} data bytes, the file holds "
                                               f"{data_len}: {covered - data_len} bytes cut off"))
    elif covered < data_len:
        problems.append(Problem(TRAILING_BYTES, f"{data_len - covered} bytes after the last tensor are not "
                                                "indexed by the header"))
    return problems


def check_file(path: Path) -> Layout:
    """Read the length and header of a local file (blocking; at most 8 + N bytes are read)."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        first = fh.read(8)
        if len(first) < 8:
            return check_header(0, b"", size)
        n = header_length(first)
        if _length_problem(n, size) is not None:
            return check_header(n, b"", size)
        return check_header(n, fh.read(n), size)


RangeReader = Callable[[int, int], Awaitable[bytes]]  # (offset, length) -> bytes


async def check_reader(read: RangeReader, size: int) -> Layout:
    """The same check over an async byte-range reader; ``size`` from a listing. One read when the header
    fits into the first FIRST_READ bytes, two otherwise."""
    if size < 8:
        return check_header(0, b"", size)
    first = await read(0, min(size, FIRST_READ))
    n = header_length(first)
    if _length_problem(n, size) is not None:
        return check_header(n, b"", size)
    header = first[8:8 + n]
    if len(header) < n:
        header += await read(8 + len(header), n - len(header))
    return check_header(n, header, size)


def index_shards(index: bytes) -> tuple[dict[str, str], list[Problem]]:
    """Parse an index file: its ``weight_map`` (tensor -> shard file) and the problems of the file itself."""
    try:
        doc = json.loads(index.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, digits past the limit, nesting past the stack
        return {}, [Problem(INDEX_INVALID, "the index is not UTF-8 JSON")]
    wmap = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wmap.items()):
        return {}, [Problem(INDEX_INVALID, "the index has no weight_map of tensor names to shard files")]
    bad = [v for v in set(wmap.values()) if not v or v.startswith("/") or ".." in v.split("/")]
    if bad:
        return {}, [Problem(INDEX_INVALID, f"weight_map names shard paths outside the model: {sorted(bad)[:3]}")]
    return dict(wmap), []


def check_index(index: bytes, shards: Mapping[str, frozenset[str] | None], limit: int = 10) -> list[Problem]:
    """Every tensor of the index's weight_map exists in its shard. ``shards`` maps a shard file name
    (relative to the index) to its tensor names, or None when the shard is absent or unreadable."""
    wmap, problems = index_shards(index)
    if problems:
        return problems
    missing_shards = sorted({s for s in wmap.values() if s not in shards})
    problems += [Problem(INDEX_MISSING_SHARD, f"weight_map names shard {s!r}, which the model does not hold")
                 for s in missing_shards]
    absent = [(t, s) for t, s in sorted(wmap.items()) if s in shards and (names := shards[s]) is not None
              and t not in names]
    problems += [Problem(INDEX_MISSING_TENSOR, f"tensor {t!r} is not in its shard {s!r}") for t, s in absent[:limit]]
    if len(absent) > limit:
        problems.append(Problem(INDEX_MISSING_TENSOR, f"... and {len(absent) - limit} more tensors missing"))
    listed = set(wmap)
    for shard in sorted(set(wmap.values()) & set(shards)):
        names = shards[shard]
        extra = sorted(names - listed) if names is not None else []
        if extra:
            problems.append(Problem(INDEX_UNLISTED_TENSOR, f"shard {shard!r} holds {len(extra)} tensor(s) the "
                                                           f"weight_map does not list (e.g. {extra[0]!r})"))
    return problems


def encode(tensors: Iterable[tuple[str, str, list[int], int, int]], metadata: Mapping[str, str] | None = None,
           pad_to: int = 8) -> bytes:
    """Length + header bytes for ``(name, dtype, shape, begin, end)`` entries (tests, benchmarks)."""
    doc: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    for name, dtype, shape, begin, end in tensors:
        doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % pad_to)
    return struct.pack("<Q", len(raw)) + raw
