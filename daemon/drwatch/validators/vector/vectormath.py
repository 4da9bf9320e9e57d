"""Vector math shared by the ``vector_restore`` backends: checksums, deterministic samples, exact top-k,
recall@k and the comparison of exact top-k lists.

Conventions (the same as pgvector's operators, so results computed here and by a database compare):

- ``metric`` is ``cosine`` (distance ``1 - cos``, pgvector ``<=>``), ``l2`` (Euclidean distance, ``<->``) or
  ``inner_product`` (the *negative* inner product, ``<#>``). Smaller is nearer for all three.
- A hit is ``(id, distance)``; result lists are sorted nearest first, ties broken by id.
- Ids are strings (compare ids of any type through their text form).

Everything here is pure and synchronous. numpy (the ``ml`` extra) is imported only by :func:`exact_topk`,
so the module imports on a core install. Call the heavy functions (``exact_topk``, digests of many
vectors) from a thread: they are CPU work.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Literal

Metric = Literal["cosine", "l2", "inner_product"]
METRICS: tuple[Metric, ...] = ("cosine", "l2", "inner_product")
Hit = tuple[str, float]  # (id, distance)


def vector_digest(values: Sequence[float]) -> str:
    """Checksum of a vector: BLAKE2b-128 of its float32 little-endian bytes (dimension included).

    Production and restore compare equal whatever text formatting or float width carried the values,
    as long as each component rounds to the same float32 (how pgvector and most vector stores keep them).
    """
    raw = struct.pack(f"<I{len(values)}f", len(values), *values)
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _rank(seed: int, ident: str) -> bytes:
    return hashlib.blake2b(ident.encode(), digest_size=8, key=str(seed).encode()).digest()


def sample_ids(ids: Iterable[str], n: int, seed: int) -> list[str]:
    """A deterministic sample of at most ``n`` distinct ids: those with the smallest keyed hash.

    The same seed gives the same sample whatever the order of ``ids``, and a sample of a superset keeps
    every chosen id that is still among the ``n`` smallest: samples drawn from production and from a backup
    that differ by a few rows overlap almost entirely. Memory is O(n) (``ids`` may be a stream).
    Returned in rank order.
    """
    if n <= 0:
        return []
    best = heapq.nsmallest(n, ((_rank(seed, i), i) for i in set(ids)))
    return [i for _, i in best]


def distance(a: Sequence[float], b: Sequence[float], metric: Metric) -> float:
    """The distance of two vectors under ``metric`` (pgvector's definitions; see the module docs)."""
    if len(a) != len(b):
        raise ValueError(f"dimensions differ: {len(a)} and {len(b)}")
    if metric == "l2":
        return math.sqrt(sum((x - y) * (x - y) for x, y in zip(a, b, strict=True)))
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    if metric == "inner_product":
        return -dot
    if metric == "cosine":
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return math.nan if norm == 0 else 1.0 - dot / norm
    raise ValueError(f"unknown metric {metric!r} (use one of {', '.join(METRICS)})")


def exact_topk(matrix: Any, ids: Sequence[str], queries: Any, k: int, metric: Metric) -> list[list[Hit]]:
    """Brute-force exact top-``k`` of each query among the rows of ``matrix`` (numpy, float64 math).

    ``matrix`` is (n, d) with row ``i`` the vector of ``ids[i]``; ``queries`` is (q, d). Returns one list
    of ``(id, distance)`` per query, nearest first, ties broken by id. For backends that cannot scan
    (they answer ANN only): fetch their vectors, then compute the truth here. CPU work: run in a thread.
    """
    import numpy as np

    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (use one of {', '.join(METRICS)})")
    mat = np.asarray(matrix, dtype=np.float64)
    qs = np.asarray(queries, dtype=np.float64)
    if mat.ndim != 2 or qs.ndim != 2:
        raise ValueError("matrix and queries must be two-dimensional")
    if mat.shape[0] != len(ids):
        raise ValueError(f"{mat.shape[0]} vectors but {len(ids)} ids")
    if mat.shape[0] and mat.shape[1] != qs.shape[1]:
        raise ValueError(f"dimensions differ: vectors {mat.shape[1]}, queries {qs.shape[1]}")
    if k <= 0 or mat.shape[0] == 0:
        return [[] for _ in range(qs.shape[0])]
    dots = qs @ mat.T
    if metric == "inner_product":
        dist = -dots
    elif metric == "l2":
        sq = (qs * qs).sum(axis=1)[:, None] + (mat * mat).sum(axis=1)[None, :] - 2.0 * dots
        dist = np.sqrt(np.maximum(sq, 0.0))
    else:
        norms = np.linalg.norm(qs, axis=1)[:, None] * np.linalg.norm(mat, axis=1)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            dist = 1.0 - dots / norms
        dist = np.where(norms == 0, np.inf, dist)
    order = np.asarray(ids, dtype=object)
    out: list[list[Hit]] = []
    take = min(k, mat.shape[0])
    for row in dist:
        # Candidates: everything up to the k-th smallest distance (ties at the boundary included), then
        # sorted by (distance, id) so equal distances come out in a stable order.
        kth = np.partition(row, take - 1)[take - 1]
        cand = np.nonzero(row <= kth)[0]
        hits = sorted(((str(order[j]), float(row[j])) for j in cand), key=lambda h: (h[1], h[0]))
        out.append(hits[:take])
    return out


def recall_at_k(ann: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int) -> float:
    """Mean over queries of ``|ann[:k] ∩ exact[:k]| / |exact[:k]|`` (a query with no exact neighbour
    counts 1.0). Raises ValueError when the two lists of queries differ in length or there are none."""
    if len(ann) != len(exact):
        raise ValueError(f"{len(ann)} ANN result lists for {len(exact)} exact ones")
    if not exact:
        raise ValueError("no queries")
    if k <= 0:
        raise ValueError("k must be positive")
    total = 0.0
    for got, truth in zip(ann, exact, strict=True):
        want = set(truth[:k])
        total += 1.0 if not want else len(want & set(got[:k])) / len(want)
    return total / len(exact)


def recall_at_k_ties(ann: Sequence[Sequence[Hit]], exact: Sequence[Sequence[Hit]], k: int,
                     tol: float = 1e-6) -> float:
    """recall@k where an ANN hit tied with the exact k-th neighbour counts as found.

    An ANN hit is correct when its id is in the exact top-k, or when its distance (computed exactly by the
    database for the returned row) is within ``tol`` of the exact k-th distance or nearer: with duplicate
    vectors, which of the tied ids make the cut is arbitrary.
    """
    if len(ann) != len(exact):
        raise ValueError(f"{len(ann)} ANN result lists for {len(exact)} exact ones")
    if not exact:
        raise ValueError("no queries")
    if k <= 0:
        raise ValueError("k must be positive")
    total = 0.0
    for got, truth in zip(ann, exact, strict=True):
        want = truth[:k]
        if not want:
            total += 1.0
            continue
        ids = {i for i, _ in want}
        bound = want[-1][1] + tol
        found = sum(1 for i, d in got[:k] if i in ids or d <= bound)
        total += min(found, len(want)) / len(want)
    return total / len(exact)


def _same_list(a: Sequence[Hit], b: Sequence[Hit], k: int, tol: float) -> bool:
    """Whether two exact top-k lists agree: same distances position by position (within ``tol``) and the
    same ids, where ids within a run of tied distances may come in any order, and ids in the last run
    may differ when that run continues past position k (the entry at index k, if given, shows it)."""
    la, lb = a[:k], b[:k]
    if len(la) != len(lb):
        return False
    if any(abs(da - db) > tol for (_, da), (_, db) in zip(la, lb, strict=True)):
        return False
    start = 0
    while start < len(la):
        end = start + 1
        while end < len(la) and la[end][1] - la[end - 1][1] <= tol:
            end += 1
        if {i for i, _ in la[start:end]} != {i for i, _ in lb[start:end]}:
            last = la[end - 1][1]
            spills = any(len(x) > k and x[k][1] - last <= tol for x in (a, b))
            if not (end == len(la) and spills):
                return False
        start = end
    return True


def exact_topk_match(a: Sequence[Sequence[Hit]], b: Sequence[Sequence[Hit]], k: int,
                     tol: float = 1e-6) -> tuple[float, list[int]]:
    """(ratio of queries whose exact top-k lists agree, indices of those that do not).

    Lists are ``(id, distance)`` nearest first. Tied distances (within ``tol``) make ids interchangeable:
    inside the top-k, in any order; at the boundary, when a list carries a (k+1)-th entry tied with the
    k-th, the tied ids may differ. Pass k+1 results per query to let boundary ties be recognised.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} result lists against {len(b)}")
    if not a:
        raise ValueError("no queries")
    bad = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not _same_list(x, y, k, tol)]
    return (len(a) - len(bad)) / len(a), bad
