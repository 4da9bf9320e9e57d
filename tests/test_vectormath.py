"""The shared vector math of `vector_restore`: checksums, deterministic samples, exact top-k under the three
pgvector metrics, recall@k and the comparison of exact top-k lists with ties."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drwatch.validators.vector import vectormath
from drwatch.validators.vector.vectormath import (
    distance,
    exact_topk,
    exact_topk_match,
    recall_at_k,
    recall_at_k_ties,
    sample_ids,
    vector_digest,
)


def test_digest_is_of_float32_values_not_of_their_text() -> None:
    """The same float32 values give the same digest whether they come as float64, as float32 or parsed from
    differently formatted text; one ulp of difference or another dimension changes it."""
    values = [0.1, -0.25, 1e-7, 3.0]
    as32 = list(np.asarray(values, dtype=np.float32))
    parsed = [float(x) for x in ("0.100000001490116", "-0.25", "1.00000001e-07", "3")]
    assert vector_digest(values) == vector_digest(as32) == vector_digest(parsed)
    bumped = list(as32)
    bumped[2] = float(np.nextafter(np.float32(bumped[2]), np.float32(1)))
    assert vector_digest(bumped) != vector_digest(values)
    assert vector_digest(values[:3]) != vector_digest(values)
    assert vector_digest([*values, 0.0]) != vector_digest(values)  # a trailing zero is not "the same"
    assert len(vector_digest(values)) == 32


def test_sample_is_deterministic_order_free_and_stable_under_small_changes() -> None:
    """Same seed, same sample, whatever the input order; another seed, another sample; removing a few ids
    keeps the rest of the sample; a request larger than the population returns everything."""
    ids = [f"doc-{i}" for i in range(1000)]
    shuffled = list(ids)
    random.Random(3).shuffle(shuffled)
    first = sample_ids(ids, 50, seed=7)
    assert first == sample_ids(shuffled, 50, seed=7)
    assert first == sample_ids(iter(ids), 50, seed=7)
    assert len(set(first)) == 50 and set(first) <= set(ids)
    assert set(sample_ids(ids, 50, seed=8)) != set(first)
    dropped = set(first[:5])
    again = sample_ids([i for i in ids if i not in dropped], 50, seed=7)
    assert set(first[5:]) <= set(again)
    assert sorted(sample_ids(ids[:10], 50, seed=1)) == sorted(ids[:10])
    assert sample_ids(ids, 0, seed=1) == []
    assert sample_ids(["a", "a", "b"], 5, seed=1).count("a") == 1


@pytest.mark.parametrize("metric", ["cosine", "l2", "inner_product"])
def test_exact_topk_matches_pgvector_definitions(metric: vectormath.Metric) -> None:
    """Brute-force top-k agrees with the pairwise definitions (cosine 1-cos, l2 Euclidean, negative inner
    product), nearest first, for every metric."""
    rng = np.random.default_rng(5)
    mat = rng.normal(size=(200, 16)).astype(np.float32)
    ids = [f"v{i:03d}" for i in range(200)]
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    got = exact_topk(mat, ids, queries, 7, metric)
    for q, hits in zip(queries, got, strict=True):
        truth = sorted((distance(list(map(float, q)), list(map(float, row)), metric), ids[i])
                       for i, row in enumerate(mat))[:7]
        assert [h[0] for h in hits] == [i for _, i in truth]
        assert [h[1] for h in hits] == pytest.approx([d for d, _ in truth], abs=1e-9)
        assert [h[1] for h in hits] == sorted(h[1] for h in hits)


def test_metric_values_on_known_vectors() -> None:
    """Hand-checked values: orthogonal unit vectors are cosine 1 apart and l2 sqrt(2); inner product is
    negated so that nearer is smaller."""
    a, b = [1.0, 0.0], [0.0, 1.0]
    assert distance(a, b, "cosine") == pytest.approx(1.0)
    assert distance(a, b, "l2") == pytest.approx(math.sqrt(2))
    assert distance([1.0, 2.0], [3.0, 4.0], "inner_product") == pytest.approx(-11.0)
    assert distance(a, a, "cosine") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="dimensions differ"):
        distance(a, [1.0], "l2")
    hits = exact_topk(np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]), ["x", "y", "z"], np.array([[1.0, 1.0]]), 3,
                      "inner_product")
    assert hits == [[("y", -7.0), ("x", -3.0), ("z", -0.0)]]


def test_exact_topk_orders_ties_by_id_and_handles_edge_cases() -> None:
    """Duplicate vectors tie: they come out by id. k larger than the rows returns all; no rows, no hits;
    mismatched shapes are refused."""
    mat = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    hits = exact_topk(mat, ["c", "a", "z", "b"], np.array([[1.0, 0.0]]), 2, "l2")
    assert [h[0] for h in hits[0]] == ["a", "b"]
    assert len(exact_topk(mat, ["c", "a", "z", "b"], np.array([[1.0, 0.0]]), 10, "cosine")[0]) == 4
    assert exact_topk(np.zeros((0, 2)), [], np.array([[1.0, 0.0]]), 3, "l2") == [[]]
    with pytest.raises(ValueError, match="ids"):
        exact_topk(mat, ["a"], np.array([[1.0, 0.0]]), 2, "l2")
    with pytest.raises(ValueError, match="dimensions"):
        exact_topk(mat, ["c", "a", "z", "b"], np.array([[1.0, 0.0, 0.0]]), 2, "l2")


def test_recall_at_k() -> None:
    """recall@k is the mean share of the exact top-k found by ANN; order does not matter; extra ANN results
    beyond k do not count."""
    exact = [["a", "b", "c"], ["d", "e", "f"]]
    assert recall_at_k([["c", "b", "a"], ["d", "e", "f"]], exact, 3) == 1.0
    assert recall_at_k([["a", "x", "y"], ["d", "e", "z"]], exact, 3) == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert recall_at_k([["x", "y", "z", "a"], ["d"]], exact, 3) == pytest.approx((0 + 1 / 3) / 2)
    assert recall_at_k([[]], [[]], 3) == 1.0
    with pytest.raises(ValueError):
        recall_at_k([["a"]], exact, 3)
    with pytest.raises(ValueError):
        recall_at_k([], [], 3)


def test_recall_counts_an_ann_hit_tied_with_the_kth_neighbour() -> None:
    """With duplicate vectors, which tied id makes the exact cut is arbitrary: an ANN hit at the k-th
    distance counts as found; a farther one does not."""
    exact = [[("a", 0.1), ("b", 0.2)]]
    assert recall_at_k_ties([[("a", 0.1), ("b2", 0.2)]], exact, 2) == 1.0
    assert recall_at_k_ties([[("a", 0.1), ("c", 0.3)]], exact, 2) == 0.5
    assert recall_at_k([["a", "b2"]], [["a", "b"]], 2) == 0.5


def test_exact_lists_match_with_ties_in_any_order() -> None:
    """Identical lists match; tied ids may swap places; a different id at a distinct distance, a different
    distance (a changed vector) or a shorter list do not match."""
    base = [("a", 0.1), ("b", 0.2), ("c", 0.2), ("d", 0.4)]
    swapped = [("a", 0.1), ("c", 0.2), ("b", 0.2), ("d", 0.4)]
    assert exact_topk_match([base], [swapped], 4) == (1.0, [])
    other = [("a", 0.1), ("b", 0.2), ("c", 0.2), ("e", 0.4)]
    moved = [("a", 0.1), ("b", 0.2), ("c", 0.2), ("d", 0.41)]
    assert exact_topk_match([base, base, base], [base, other, moved], 4) == (pytest.approx(1 / 3), [1, 2])
    assert exact_topk_match([base], [base[:3]], 4) == (0.0, [0])
    assert exact_topk_match([base], [base[:3]], 3) == (1.0, [])  # only the first k count
    assert exact_topk_match([base], [moved], 4, tol=0.05) == (1.0, [])


def test_boundary_ties_need_the_k_plus_first_entry() -> None:
    """At position k, a tie with an entry beyond k makes the cut arbitrary: different ids match only when
    a (k+1)-th entry shows the tie; without it, they do not."""
    a = [("a", 0.1), ("b", 0.3), ("c", 0.3)]
    b = [("a", 0.1), ("c", 0.3), ("b", 0.3)]
    assert exact_topk_match([a], [b], 2) == (1.0, [])
    assert exact_topk_match([a[:2]], [b[:2]], 2) == (0.0, [0])
    no_tie_a = [("a", 0.1), ("b", 0.3), ("c", 0.5)]
    no_tie_b = [("a", 0.1), ("x", 0.3), ("c", 0.5)]
    assert exact_topk_match([no_tie_a], [no_tie_b], 2) == (0.0, [0])
    with pytest.raises(ValueError):
        exact_topk_match([], [], 2)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=1, max_size=25), st.integers(1, 6),
       st.sampled_from(["cosine", "l2", "inner_product"]))
def test_exact_topk_against_itself_and_a_shuffle(points: list[tuple[int, int]], k: int,
                                                  metric: vectormath.Metric) -> None:
    """Property: exact top-k of the same data in another row order (many exact ties: small integer grids)
    always matches, and ANN = exact has recall 1."""
    mat = np.array(points, dtype=np.float64) + 0.5  # no zero vectors (cosine is undefined for them)
    ids = [f"p{i}" for i in range(len(points))]
    order = list(range(len(points)))
    random.Random(len(points)).shuffle(order)
    queries = mat[:3]
    a = exact_topk(mat, ids, queries, k + 1, metric)
    b = exact_topk(mat[order], [ids[i] for i in order], queries, k + 1, metric)
    assert exact_topk_match(a, b, k, tol=1e-9)[0] == 1.0
    assert recall_at_k_ties(a, b, k, tol=1e-9) == 1.0


def test_digest_packs_little_endian_float32() -> None:
    """The digest input is documented: dimension (uint32 LE) then float32 LE values."""
    import hashlib

    raw = struct.pack("<I2f", 2, 1.5, -2.0)
    assert vector_digest([1.5, -2.0]) == hashlib.blake2b(raw, digest_size=16).hexdigest()
