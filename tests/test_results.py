"""The result contract: (scores, ids), -1 for missing, ties broken by (-score, id)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lexlens.results import merge_results, sort_results, topk


def _naive_topk(sim: np.ndarray, k: int):
    out_s, out_i = [], []
    for row in sim:
        pairs = sorted(((-float(s), j) for j, s in enumerate(row)))[:k]
        s = [-p[0] for p in pairs] + [-np.inf] * (k - len(pairs))
        i = [p[1] for p in pairs] + [-1] * (k - len(pairs))
        out_s.append(s)
        out_i.append(i)
    return np.array(out_s, np.float32), np.array(out_i, np.int64)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 4),
    m=st.integers(0, 12),
    k=st.integers(1, 15),
    levels=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_topk_matches_naive_with_ties(n, m, k, levels, seed):
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, levels, size=(n, m)).astype(np.float32)  # few levels -> many ties
    s, i = topk(sim, k)
    rs, ri = _naive_topk(sim, k)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(s, rs)


def test_sort_results_treats_negative_ids_as_missing():
    s, i = sort_results(np.array([[0.5, 0.9, 0.9]]), np.array([[3, -1, 7]]), 4)
    assert i.tolist() == [[7, 3, -1, -1]]
    assert s[0, 0] == np.float32(0.9) and np.isneginf(s[0, 2])


def test_merge_results_ties_by_id():
    a = (np.array([[1.0, 0.5]], np.float32), np.array([[9, 2]]))
    b = (np.array([[1.0, 0.7]], np.float32), np.array([[4, 5]]))
    s, i = merge_results([a, b], 3)
    assert i.tolist() == [[4, 9, 5]]
    assert s.tolist() == [[1.0, 1.0, np.float32(0.7)]]


def test_topk_custom_ids_and_k_larger_than_m():
    s, i = topk(np.array([[0.1, 0.3]]), 3, ids=np.array([10, 20]))
    assert i.tolist() == [[20, 10, -1]]


def test_a_nan_score_is_a_missing_hit() -> None:
    sim = np.array([[0.5, np.nan, 0.9, np.nan]], np.float32)
    s, i = topk(sim, 4)
    np.testing.assert_array_equal(i, [[2, 0, -1, -1]])
    np.testing.assert_array_equal(s, [[np.float32(0.9), np.float32(0.5), -np.inf, -np.inf]])
    s, i = topk(sim, 1)
    np.testing.assert_array_equal(i, [[2]])
