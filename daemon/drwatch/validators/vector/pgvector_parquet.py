"""A Parquet export as the recovery point of a pgvector drill: recognised by its bytes, read with pyarrow in a
thread and loaded into the sandbox table ``(id, vector(dim))`` with binary ``COPY``."""

from __future__ import annotations

import asyncio
import functools
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.errors import DrillFailed, ValidatorError
from drwatch.storage.filesystem import ThreadedIterator
from drwatch.validators.base import RunContext
from drwatch.validators.postgres import pgtools
from drwatch.validators.vector.pgvector_sandbox import cleanup, query_limit

if TYPE_CHECKING:
    from drwatch.validators.vector.config import ParquetColumns, PgvectorBackend
    from drwatch.validators.vector.pgvector_compare import Sides

_BATCH = 5000  # rows per COPY batch


def is_parquet(path: Path) -> bool:
    if path.is_dir() or path.stat().st_size < 12:
        return False
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(-4, 2)
        return head == b"PAR1" and fh.read(4) == b"PAR1"


async def load_parquet(ctx: RunContext, be: PgvectorBackend, sides: Sides, params: dict[str, str], path: Path,
                       name: str) -> None:
    """Create the table (id, vector(dim)) and COPY the export in binary batches (decoded in a thread)."""
    cols = be.parquet
    try:
        import numpy  # noqa: F401  (used by the batch decoder, in a thread)
        import pyarrow.parquet as pq
    except ImportError:
        from drwatch.core.extras import PARQUET_VECTORS

        raise ValidatorError("extra_missing", f"Parquet recovery points need pyarrow and numpy: "
                             f"{PARQUET_VECTORS.install}") from None
    try:
        schema = await asyncio.to_thread(lambda: pq.ParquetFile(path).schema_arrow)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for damaged files
        raise DrillFailed("recovery_point_unreadable", f"{name}: {exc}") from None
    for col in (cols.id_column, cols.vector_column):
        if col not in schema.names:
            raise DrillFailed("parquet_column_missing", f"{name} has no column {col!r} "
                              f"(columns: {', '.join(schema.names)})")
    id_type = "bigint" if str(schema.field(cols.id_column).type).startswith(("int", "uint")) else "text"
    # The batches hold the Parquet file open: closed when the run ends, however it ends (not by the GC).
    batches = ThreadedIterator(await asyncio.to_thread(parquet_batches, path, cols, id_type == "text"))
    ctx.exit_stack.callback(batches.close)
    import asyncpg  # imported with the first drill, not with the config (start-up of `drwatch check`)

    conn = await pgtools.connect(params, code="sandbox_unavailable", what="sandbox database")
    ctx.exit_stack.push_async_callback(cleanup, ctx, functools.partial(pgtools.close_connection, conn), 10,
                                       "close load connection")
    await conn.set_type_codec("vector", schema="public", encoder=bytes, decoder=bytes, format="binary")
    schema_name, table = sides.table
    dims: int | None = None
    rows = 0
    while (batch := await batches.next()) is not None:
        records, bdims = batch
        if dims is None and bdims is not None:
            dims = bdims
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {pgtools.quote_ident(schema_name)}; "
                               f"CREATE TABLE {sides.q} ({sides.id} {id_type} PRIMARY KEY, "
                               f"{sides.vec} vector({dims}))", timeout=60)
        elif bdims is not None and bdims != dims:
            raise DrillFailed("dimension_mismatch", f"{name}: vectors of {bdims} and {dims} dimensions")
        if dims is None:
            continue
        try:
            await conn.copy_records_to_table(table, schema_name=schema_name, records=records,
                                             columns=[be.id_column, be.vector_column],
                                             timeout=query_limit(ctx))
        except asyncpg.UniqueViolationError:
            raise DrillFailed("duplicate_ids", f"{name} holds an id twice") from None
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise DrillFailed("invalid_ids", f"{name}: {exc}") from None
        rows += len(records)
    if dims is None:
        raise DrillFailed("recovery_point_empty", f"{name} holds no vectors")


def parquet_batches(path: Path, cols: ParquetColumns, as_text: bool) -> Any:
    """An iterator of (records for COPY with vectors in pgvector's binary form, dimensions) per batch
    (pyarrow + numpy; blocking: advance it in a thread)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    def gen() -> Any:
        with pq.ParquetFile(path) as pf:  # closed when the generator ends or is closed
            yield from batches(pf)

    def batches(pf: Any) -> Any:
        for batch in pf.iter_batches(batch_size=_BATCH, columns=[cols.id_column, cols.vector_column]):
            ids = [None if i is None else str(i) for i in batch.column(0).to_pylist()] if as_text \
                else batch.column(0).to_pylist()
            vecs = batch.column(1)
            if isinstance(vecs.type, pa.FixedSizeListType):
                lengths = np.full(len(vecs), vecs.type.list_size)
            else:
                lengths = np.asarray(vecs.value_lengths().fill_null(0))
            valid = np.asarray(vecs.is_valid())
            dims = {int(n) for n, ok in zip(lengths, valid, strict=True) if ok}
            if len(dims) > 1:
                raise DrillFailed("dimension_mismatch", f"{path.name}: vectors of {sorted(dims)} dimensions")
            dim = dims.pop() if dims else None
            records: list[tuple[Any, bytes | None]] = []
            flat = np.asarray(vecs.flatten(), dtype=">f4")
            pos = 0
            for i, ident in enumerate(ids):
                if not valid[i]:
                    records.append((ident, None))
                    continue
                n = int(lengths[i])
                records.append((ident, struct.pack(">HH", n, 0) + flat[pos:pos + n].tobytes()))
                pos += n
            yield records, dim

    return gen()
