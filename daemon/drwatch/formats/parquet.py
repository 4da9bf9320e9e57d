"""Parquet facts for seals and the ``dataset`` validator: footer checks, row counts, schema fingerprints.

A Parquet file is ``PAR1 <column chunks> <footer: FileMetaData> <footer length, 4 bytes LE> PAR1``. The
footer check proves, from the file's first 4 bytes and its tail only (a ranged read on S3):

- the magic ``PAR1`` at both ends, and a footer length that fits in the file;
- the metadata parses (pyarrow), the row groups' row counts add up to the file's, and every column chunk
  lies between the leading magic and the footer (a file cut short and re-terminated does not pass).

The *schema fingerprint* is the sha256 of a canonical JSON form of the Arrow schema the footer describes:
field names, types (with their parameters: unit, time zone, precision...), nullability and nesting. It
leaves out schema and field metadata (pandas' blob, ``PARQUET:field_id``...) and the names writers give to
list items and map entries (``item``/``element``, ``key``/``value``): they vary with the writer, not with
the data.

Parsing is blocking: call :func:`read_file_facts` and :func:`parse_footer` from a worker thread. pyarrow
(the ``ml`` extra) is imported only here, lazily; :func:`available` says whether it can be.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drwatch.storage.s3 import S3Location

MAGIC = b"PAR1"
TAIL_READ = 64 * 1024  # first read of a file's end; a larger footer costs one more read
MAX_FOOTER = 256 * 1024 * 1024  # a footer length beyond this is treated as damage, not read into memory
FINGERPRINT_VERSION = "drwatch-arrow-schema/1"
_SHA256_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class ParquetFacts:
    """What a seal records about one Parquet file (``error`` set: its footer was unreadable when sealed)."""

    rows: int = 0
    row_groups: int = 0
    schema: str = ""  # sha256 hex of the canonical Arrow schema
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return {"rows": self.rows, "row_groups": self.row_groups, "schema": self.schema}

    @classmethod
    def from_json(cls, data: Any) -> ParquetFacts:
        """Parse a manifest entry's ``parquet`` object; ValueError when it is malformed."""
        if not isinstance(data, dict):
            raise ValueError("parquet facts must be an object")
        if "error" in data:
            return cls(error=str(data["error"]))
        rows, groups, schema = data.get("rows"), data.get("row_groups"), data.get("schema")
        if not isinstance(rows, int) or not isinstance(groups, int) or rows < 0 or groups < 0 \
                or isinstance(rows, bool) or isinstance(groups, bool):
            raise ValueError("parquet rows/row_groups must be non-negative integers")
        if not isinstance(schema, str) or len(schema) != 64 or not set(schema) <= _SHA256_HEX:
            raise ValueError("parquet schema must be a sha256 hex digest")
        return cls(rows=rows, row_groups=groups, schema=schema)


class FooterError(Exception):
    """The footer is unreadable: not Parquet, truncated or damaged (a fact about the file, not about us)."""


@functools.cache
def available() -> bool:
    """Whether pyarrow (the ``ml`` extra) can be imported."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def is_parquet(key: str) -> bool:
    return key.lower().endswith(".parquet")


def footer_length(tail: bytes, size: int) -> int:
    """The footer length from the file's last bytes (``tail``, at least 8 of them); FooterError if damaged."""
    if size < len(MAGIC) * 2 + 4 or len(tail) < 8:
        raise FooterError(f"{size} bytes is too short for a Parquet file")
    end = tail[-4:]
    if end == b"PARE":
        raise FooterError("the footer is encrypted (PARE): it cannot be read without the key")
    if end != MAGIC:
        raise FooterError("no PAR1 magic at the end of the file (truncated or not Parquet)")
    n = int.from_bytes(tail[-8:-4], "little")
    if n <= 0 or n > size - len(MAGIC) - 8:
        raise FooterError(f"footer length {n} does not fit in a file of {size} bytes")
    if n > MAX_FOOTER:
        raise FooterError(f"footer length {n} exceeds the {MAX_FOOTER}-byte limit")
    return n


def parse_footer(head: bytes, footer: bytes, size: int) -> ParquetFacts:
    """Facts from the first 4 bytes and the last ``footer length + 8`` bytes of a file. Blocking (pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if head[:4] != MAGIC:
        raise FooterError("no PAR1 magic at the start of the file")
    n = footer_length(footer, size)
    if len(footer) < n + 8:
        raise FooterError("short read of the footer (the file changed during the check?)")
    try:
        # The footer alone, framed as a file: pyarrow reads only the end, so nothing else is needed.
        pf = pq.ParquetFile(pa.BufferReader(MAGIC + footer[-(n + 8):]))
        md = pf.metadata
        schema = pf.schema_arrow
        data_end = size - n - 8
        total = 0
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            total += rg.num_rows
            for j in range(rg.num_columns):
                col = rg.column(j)
                dict_at = col.dictionary_page_offset if col.has_dictionary_page else None
                start = dict_at if dict_at else col.data_page_offset
                if start < len(MAGIC) or start + col.total_compressed_size > data_end:
                    raise FooterError(f"row group {i} column {j} lies outside the file's data "
                                      f"({start}+{col.total_compressed_size} > {data_end})")
        rows = md.num_rows
        groups = md.num_row_groups
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FooterError(f"the footer metadata does not parse ({type(exc).__name__}: {str(exc)[:200]})") from None
    if total != rows:
        raise FooterError(f"row groups hold {total} rows, the footer says {rows}")
    return ParquetFacts(rows=rows, row_groups=groups, schema=schema_fingerprint(schema))


def read_file_facts(path: Path) -> ParquetFacts:
    """Footer facts of a local file, reading its first 4 bytes and its tail only. Blocking."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(4)
        fh.seek(max(0, size - TAIL_READ))
        tail = fh.read()
        n = footer_length(tail, size)
        if n + 8 > len(tail):
            fh.seek(size - n - 8)
            tail = fh.read(n + 8)
    return parse_footer(head, tail, size)


Fetch = Callable[[int, int], Awaitable[bytes]]  # (start, end exclusive) -> bytes


async def fetch_facts(fetch: Fetch, size: int) -> ParquetFacts:
    """Footer facts through ranged reads (S3): at most three small reads; parsing in a worker thread."""
    if size < len(MAGIC) * 2 + 4:
        raise FooterError(f"{size} bytes is too short for a Parquet file")
    if size <= TAIL_READ:
        tail = await fetch(0, size)
        head = tail[:4]
    else:
        head = await fetch(0, 4)
        tail = await fetch(size - TAIL_READ, size)
    if len(tail) < 8:
        raise FooterError("short read of the file's end (the object changed during the check?)")
    n = footer_length(tail, size)
    if n + 8 > len(tail):
        tail = await fetch(size - n - 8, size)
    return await asyncio.to_thread(parse_footer, head, tail, size)


async def s3_range(loc: S3Location, key: str, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of the object ``key`` by one ranged GET (errors classified like
    every S3 call: S3Missing, S3Unavailable)."""
    from drwatch.storage.s3 import classify

    client = await loc.client()
    try:
        resp = await client.get_object(Bucket=loc.cfg.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        body = resp["Body"]
        try:
            return bytes(await body.read())
        finally:
            body.close()
    except Exception as exc:
        raise classify(exc, loc.name) from None


def s3_fetcher(loc: S3Location, prefix: str, relkey: str) -> Fetch:
    """Ranged GETs of the object ``relkey`` under ``prefix`` (errors classified like every S3 call; a missing
    key is FileNotFoundError)."""
    from drwatch.storage.s3 import S3Missing

    base = prefix.strip("/")
    key = f"{base}/{relkey}" if base else relkey

    async def fetch(start: int, end: int) -> bytes:
        try:
            return await s3_range(loc, key, start, end)
        except S3Missing:
            raise FileNotFoundError(key) from None

    return fetch


def schema_fingerprint(schema: Any) -> str:
    """sha256 hex of the canonical form of an Arrow schema (see the module docstring)."""
    doc = {"v": FINGERPRINT_VERSION, "fields": [_field(schema.field(i)) for i in range(len(schema))]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _field(f: Any) -> dict[str, Any]:
    return {"name": f.name, "nullable": bool(f.nullable), "type": _type(f.type)}


def _child(f: Any) -> dict[str, Any]:
    """A list item or map entry: its name is the writer's convention, not part of the data's shape."""
    return {"nullable": bool(f.nullable), "type": _type(f.type)}


def _type(t: Any) -> Any:
    import pyarrow as pa

    types = pa.types
    if types.is_struct(t):
        return {"struct": [_field(t.field(i)) for i in range(t.num_fields)]}
    if types.is_map(t):
        return {"map": [_child(t.key_field), _child(t.item_field)], "keys_sorted": bool(t.keys_sorted)}
    if types.is_fixed_size_list(t):
        return {"fixed_size_list": _child(t.value_field), "size": int(t.list_size)}
    for kind in ("list", "large_list", "list_view", "large_list_view"):
        check = getattr(types, f"is_{kind}", None)
        if check is not None and check(t):
            return {kind: _child(t.value_field)}
    if types.is_dictionary(t):
        return {"dictionary": _type(t.value_type), "index": str(t.index_type), "ordered": bool(t.ordered)}
    if types.is_union(t):
        return {"union": str(t.mode), "type_codes": [int(c) for c in t.type_codes],
                "fields": [_field(t.field(i)) for i in range(t.num_fields)]}
    if isinstance(t, pa.BaseExtensionType):
        return {"extension": str(t.extension_name), "storage": _type(t.storage_type)}
    return str(t)
