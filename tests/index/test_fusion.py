"""Rank fusion functions against naive reference implementations (dicts and sorted())."""

from __future__ import annotations

import numpy as np
import pytest

from lexlens.index import fusion as fu


def _random_lists(rng: np.random.Generator, n: int, m: int, n_ids: int, ties: bool):
    """Result lists in contract order, with -1 padding and (optionally) tied scores."""
    scores = np.full((n, m), -np.inf, np.float32)
    ids = np.full((n, m), -1, np.int64)
    for r in range(n):
        cnt = int(rng.integers(0, m + 1))
        chosen = rng.choice(n_ids, size=cnt, replace=False)
        s = (
            rng.integers(0, 4, cnt).astype(np.float32)
            if ties
            else rng.random(cnt).astype(np.float32)
        )
        order = sorted(range(cnt), key=lambda j: (-s[j], chosen[j]))
        scores[r, :cnt] = s[order]
        ids[r, :cnt] = chosen[order]
    return scores, ids


def _naive_top(fused: dict[int, float], k: int) -> tuple[list[float], list[int]]:
    items = sorted(((np.float32(v), i) for i, v in fused.items()), key=lambda t: (-t[0], t[1]))[:k]
    s = [float(v) for v, _ in items] + [-np.inf] * (k - len(items))
    i = [int(x) for _, x in items] + [-1] * (k - len(items))
    return s, i


def _naive_rrf(lists, r: int, k0: float) -> dict[int, float]:
    out: dict[int, float] = {}
    for _, ids in lists:
        rank = 0
        for x in ids[r]:
            if x < 0:
                continue
            rank += 1
            out[int(x)] = out.get(int(x), 0.0) + 1.0 / (k0 + rank)
    return out


def _naive_minmax(lists, r: int, weights) -> dict[int, float]:
    out: dict[int, float] = {}
    for w, (s, ids) in zip(weights, lists, strict=True):
        valid = [(float(a), int(b)) for a, b in zip(s[r], ids[r], strict=True) if b >= 0]
        if not valid:
            continue
        lo, hi = min(v for v, _ in valid), max(v for v, _ in valid)
        for v, i in valid:
            norm = (v - lo) / (hi - lo) if hi > lo else 1.0
            out[i] = out.get(i, 0.0) + w * norm
    # ids present only in other lists still count (with 0 from this one)
    for _, ids in lists:
        for i in ids[r]:
            if i >= 0:
                out.setdefault(int(i), 0.0)
    return out


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_rrf_matches_naive(ties: bool, k: int) -> None:
    rng = np.random.default_rng(k + 7 * ties)
    lists = [_random_lists(rng, 12, 15, 30, ties), _random_lists(rng, 12, 9, 30, ties)]
    s, i = fu.rrf(lists, k, k0=60)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (12, k)
    for r in range(12):
        es, ei = _naive_top(_naive_rrf(lists, r, 60), k)
        assert i[r].tolist() == ei
        np.testing.assert_array_equal(s[r], np.asarray(es, np.float32))


@pytest.mark.parametrize("weights", [None, (0.3, 0.7), (1.0, 0.0)])
def test_minmax_matches_naive(weights) -> None:
    rng = np.random.default_rng(3)
    lists = [_random_lists(rng, 20, 12, 25, True), _random_lists(rng, 20, 12, 25, False)]
    k = 8
    s, i = fu.minmax(lists, k, weights)
    w = weights or (0.5, 0.5)
    for r in range(20):
        es, ei = _naive_top(_naive_minmax(lists, r, w), k)
        assert i[r].tolist() == ei
        np.testing.assert_allclose(s[r], np.asarray(es, np.float32), rtol=1e-6)


def test_rrf_ties_broken_by_id_and_padding() -> None:
    # the same rank in two lists for ids 7 and 3 -> equal fused scores -> id 3 first
    a = (np.array([[2.0, 1.0]], np.float32), np.array([[7, 3]]))
    b = (np.array([[5.0, -np.inf]], np.float32), np.array([[3, -1]]))
    c = (np.array([[5.0, -np.inf]], np.float32), np.array([[7, -1]]))
    s, i = fu.rrf([a, b, c], 4, k0=1)
    # 7: 1/2 + 1/2 ; 3: 1/3 + 1/2
    assert i.tolist() == [[7, 3, -1, -1]]
    s2, i2 = fu.rrf([(a[0], np.array([[3, 7]])), (a[0], np.array([[7, 3]]))], 3, k0=1)
    assert i2.tolist() == [[3, 7, -1]] and s2[0, 0] == s2[0, 1]
    assert np.isneginf(s[0, 2:]).all()


def test_minmax_normalize_constant_row_and_missing() -> None:
    s = np.array([[2.0, 2.0, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    i = np.array([[4, 5, -1], [-1, -1, -1]])
    n = fu.minmax_normalize(s, i)
    assert n.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]


def test_fusion_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        fu.rrf([], 3)
    with pytest.raises(ValueError):
        fu.minmax([(np.zeros((2, 3)), np.zeros((2, 3), np.int64))], 3, weights=[0.5, 0.5])
    with pytest.raises(ValueError):
        fu.rrf([(np.zeros((2, 3)), np.zeros((3, 3), np.int64))], 3)
