"""Configured query vectors of ``vector_restore`` (``query_vectors``), used instead of vectors drawn from the
stored ones: real queries of the application, embedded by its model, make the drill ask what users ask.

The file (a path relative to the config file) is either **JSON Lines**, one ``{"id": ..., "vector": [...]}``
object per line (``id`` optional, shown in messages), or a **NumPy** ``.npy`` matrix with one query per row
(recognised by its magic bytes, not its name; needs numpy, the ``ml`` extra). It is read in a thread at the
start of every run (it may be replaced between runs). Every problem with it is ours, not the backup's:
error ``query_vectors_invalid`` (unreadable, malformed, values that are not finite numbers, a zero vector
under the cosine metric, more than :data:`MAX_QUERIES`) or ``query_dimension_mismatch`` (its vectors do not
have production's dimension), raised before anything is restored.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.errors import ValidatorError

if TYPE_CHECKING:
    from drwatch.validators.base import RunContext
    from drwatch.validators.vector.config import VectorRestoreConfig

MAX_QUERIES = 10_000
_NPY_MAGIC = b"\x93NUMPY"


def _invalid(name: str, why: str) -> ValidatorError:
    return ValidatorError("query_vectors_invalid", f"query_vectors {name}: {why}")


def _read_npy(path: Path) -> list[list[float]]:
    try:
        import numpy as np
    except ImportError:
        from drwatch.core.extras import NUMPY

        raise ValidatorError("extra_missing", f"query_vectors {path.name} is a .npy matrix: reading it needs numpy "
                             f"({NUMPY.install}), or give the queries as JSON Lines") from None
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _invalid(path.name, f"not a readable .npy matrix ({exc})") from None
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
        raise _invalid(path.name, f"a .npy file must hold a 2-D numeric matrix (one query per row), not "
                                  f"{matrix.ndim}-D {matrix.dtype}")
    if matrix.shape[0] > MAX_QUERIES:
        raise _invalid(path.name, f"{matrix.shape[0]} queries, at most {MAX_QUERIES}")
    return [[float(x) for x in row] for row in matrix.astype(np.float64)]


def _read_jsonl(path: Path) -> list[list[float]]:
    out: list[list[float]] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc: Any = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise _invalid(path.name, f"line {n} is not JSON ({exc.__class__.__name__})") from None
            vector = doc.get("vector") if isinstance(doc, dict) else None
            if not isinstance(vector, list) or not all(isinstance(x, int | float) and not isinstance(x, bool)
                                                       for x in vector):
                raise _invalid(path.name, f'line {n}: expected {{"id": ..., "vector": [numbers]}}')
            out.append([float(x) for x in vector])
            if len(out) > MAX_QUERIES:
                raise _invalid(path.name, f"more than {MAX_QUERIES} queries")
    return out


def read_query_vectors(path: Path, metric: str) -> list[list[float]]:
    """The query vectors in ``path`` (blocking: call it in a thread), checked for shape and values."""
    name = path.name
    try:
        with path.open("rb") as fh:
            npy = fh.read(len(_NPY_MAGIC)) == _NPY_MAGIC
        vectors = _read_npy(path) if npy else _read_jsonl(path)
    except UnicodeDecodeError:
        raise _invalid(name, "neither JSON Lines (UTF-8) nor a .npy matrix") from None
    except OSError as exc:
        raise _invalid(name, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not vectors:
        raise _invalid(name, "holds no query vectors")
    dims = {len(v) for v in vectors}
    if len(dims) > 1 or 0 in dims:
        raise _invalid(name, f"vectors of {', '.join(map(str, sorted(dims)))} dimensions: all must have the same, "
                             "non-zero dimension")
    for i, v in enumerate(vectors, 1):
        if not all(math.isfinite(x) for x in v):
            raise _invalid(name, f"query {i} holds a value that is not a finite number")
        if metric == "cosine" and not any(v):
            raise _invalid(name, f"query {i} is a zero vector: it has no cosine distance to anything")
    return vectors


async def configured_queries(ctx: RunContext, cfg: VectorRestoreConfig, dims: int | None, where: str
                             ) -> list[list[float]] | None:
    """The configured query vectors (None: none configured, draw them from the stored vectors), checked
    against production's dimension ``dims`` (None: unknown, not checked); ``where`` names production."""
    if cfg.query_vectors is None:
        return None
    path = ctx.config.resolve_path(cfg.query_vectors)
    vectors = await asyncio.to_thread(read_query_vectors, path, cfg.metric)
    if dims is not None and len(vectors[0]) != dims:
        raise ValidatorError("query_dimension_mismatch", f"query_vectors {path.name} holds {len(vectors[0])}-"
                             f"dimension vectors but {where} has {dims} dimensions: the queries come from another "
                             "embedding model (fix the file or the config; the backup was not checked)")
    ctx.log.info("vector_drill_configured_queries", file=path.name, queries=len(vectors))
    return vectors
