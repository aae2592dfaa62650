"""Metrics against naive references: ties, index results, ANN recall, fine-grained, ceiling."""

from __future__ import annotations

import itertools

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lexlens.eval import metrics as M
from lexlens.results import topk


# ----------------------------------------------------------------------------- naive references
def naive_rank(scores: list[float], gts: set[int]) -> int:
    """Sort candidates by (-score, id) and return the 1-based position of the first ground truth."""
    order = sorted(range(len(scores)), key=lambda c: (-scores[c], c))
    for pos, c in enumerate(order, start=1):
        if c in gts:
            return pos
    raise AssertionError("no ground truth")


def naive_recalls(sim: np.ndarray, gts: list[set[int]], ks) -> tuple[dict[str, float], list[int]]:
    ranks = [naive_rank([float(x) for x in sim[q]], gts[q]) for q in range(sim.shape[0])]
    rec = {f"R@{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in ks}
    return rec, ranks


@st.composite
def tied_problem(draw):
    """A small score matrix with many ties and a text->image assignment covering every image."""
    n_images = draw(st.integers(1, 7))
    per = draw(st.lists(st.integers(1, 4), min_size=n_images, max_size=n_images))
    t2i = np.repeat(np.arange(n_images), per)
    perm = draw(st.permutations(list(range(len(t2i)))))
    t2i = t2i[np.asarray(perm, dtype=np.int64)]
    sim = draw(hnp.arrays(np.float32, (len(t2i), n_images), elements=st.integers(-2, 2).map(float)))
    return sim, t2i


KS = (1, 2, 5, 10)


@settings(max_examples=150, deadline=None)
@given(tied_problem())
def test_t2i_and_i2t_match_naive_loop_with_ties(problem):
    sim, t2i = problem
    n_images = sim.shape[1]
    exp_t, ranks_t = naive_recalls(sim, [{int(g)} for g in t2i], KS)
    own = [set(np.flatnonzero(t2i == i).tolist()) for i in range(n_images)]
    exp_i, ranks_i = naive_recalls(sim.T, own, KS)

    assert M.t2i_ranks(sim, t2i).tolist() == ranks_t
    assert M.i2t_ranks(sim.T, t2i).tolist() == ranks_i
    assert M.t2i_recall(sim, t2i, KS) == pytest.approx(exp_t)
    assert M.i2t_recall(sim.T, [sorted(s) for s in own], KS) == pytest.approx(exp_i)
    assert M.i2t_recall(sim.T, t2i, KS) == pytest.approx(exp_i)
    assert M.mean_rank(np.array(ranks_t)) == pytest.approx(np.mean(ranks_t))
    assert M.median_rank(np.array(ranks_i)) == pytest.approx(np.median(ranks_i))
    assert M.rsum(exp_t, exp_i, (1, 5)) == pytest.approx(
        exp_t["R@1"] + exp_t["R@5"] + exp_i["R@1"] + exp_i["R@5"]
    )


@settings(max_examples=100, deadline=None)
@given(tied_problem(), st.integers(1, 6))
def test_ranks_from_exact_topk_equal_matrix_ranks(problem, k):
    """The position of the ground truth in (-score, id)-sorted results is the matrix rank."""
    sim, t2i = problem
    _, ids = topk(sim, k)
    from_results = M.ranks_from_results(ids, t2i)
    full = M.t2i_ranks(sim, t2i)
    assert np.array_equal(from_results, np.where(full <= k, full, k + 1))
    own = M.invert_mapping(t2i, sim.shape[1])
    _, ids_i = topk(sim.T, k)
    full_i = M.i2t_ranks(sim.T, own)
    assert np.array_equal(M.ranks_from_results(ids_i, own), np.where(full_i <= k, full_i, k + 1))


def test_tie_rule_smaller_id_wins():
    sim = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.1, 0.9, 0.9]])
    # text 0 -> image 0 (ties, smallest id): rank 1; text 1 -> image 2: two equal ids ahead
    assert M.t2i_ranks(sim[:2], [0, 2]).tolist() == [1, 3]
    # text 2 -> image 2 ties with image 1 (smaller id, ahead)
    assert M.t2i_ranks(sim[2:], [2]).tolist() == [2]


def test_nan_scores_count_as_minus_infinity():
    sim = np.array([[np.nan, 0.0, -1.0]])
    assert M.t2i_ranks(sim, [0]).tolist() == [3]
    assert M.t2i_ranks(sim, [2]).tolist() == [2]


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        M.t2i_ranks(np.zeros((2, 2)), [0])
    with pytest.raises(ValueError):
        M.t2i_ranks(np.zeros((1, 2)), [2])
    with pytest.raises(ValueError):
        M.i2t_ranks(np.zeros((2, 2)), [[0], []])
    with pytest.raises(ValueError):
        M.recall_from_ranks(np.array([]))


def test_ann_recall_against_set_loop():
    rng = np.random.default_rng(0)
    exact = np.array([rng.permutation(30)[:10] for _ in range(20)])
    approx = exact.copy()
    approx[:, 7:] = 100 + np.arange(3)  # 3 of 10 wrong everywhere
    approx[5, :] = -1  # nothing found for one query
    expected = np.mean(
        [len(set(a[a >= 0]) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)]
    )
    assert M.ann_recall_at_k(approx, exact, 10) == pytest.approx(100 * expected)
    assert M.ann_recall_at_k(exact, exact, 10) == 100.0
    # exact lists shorter than k (padded with -1) use the ids they have
    short = np.array([[3, 4, -1]])
    assert M.ann_recall_at_k(np.array([[4, 9, 8]]), short, 3) == 50.0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-2, 2), st.lists(st.integers(-2, 2), min_size=0, max_size=4)),
        min_size=1,
        max_size=10,
    )
)
def test_fine_grained_accuracy_ties_fail(items):
    pos = [float(p) for p, _ in items]
    negs = [[float(x) for x in n] for _, n in items]
    judged = [(p, n) for p, n in zip(pos, negs, strict=True) if n]
    if not judged:
        with pytest.raises(ValueError):
            M.fine_grained_accuracy(pos, negs)
        return
    wins = sum(all(p > x for x in n) for p, n in judged)
    assert M.fine_grained_accuracy(pos, negs) == pytest.approx(100.0 * wins / len(judged))


# ----------------------------------------------------------------------------- ceiling
def brute_force_ceiling(fits: np.ndarray, t2i: np.ndarray, ks) -> tuple[dict, dict]:
    """Average over every ordering of the fitting candidates (no sampling)."""
    n_texts, n_images = fits.shape
    f = fits.copy()
    f[np.arange(n_texts), t2i] = True
    t_res = {k: [] for k in ks}
    for t in range(n_texts):
        cands = np.flatnonzero(f[t]).tolist()
        perms = list(itertools.permutations(cands))
        for k in ks:
            t_res[k].append(np.mean([t2i[t] in p[:k] for p in perms]))
    i_res = {k: [] for k in ks}
    for i in range(n_images):
        cands = np.flatnonzero(f[:, i]).tolist()
        perms = list(itertools.permutations(cands))
        for k in ks:
            i_res[k].append(np.mean([any(t2i[c] == i for c in p[:k]) for p in perms]))
    return (
        {f"R@{k}": 100 * np.mean(v) for k, v in t_res.items()},
        {f"R@{k}": 100 * np.mean(v) for k, v in i_res.items()},
    )


def test_ceiling_matches_brute_force_on_hand_built_example():
    # 4 images, 2 captions each; caption 0 of image 0 ("a red circle") also fits images 1, 2;
    # caption 2 (image 1) also fits image 3; image 3's second caption fits everything.
    t2i = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    fits = np.zeros((8, 4), dtype=bool)
    fits[0, [1, 2]] = True
    fits[2, 3] = True
    fits[7, :] = True
    fits[5, 0] = True
    ks = (1, 2, 3, 5)
    exp_t, exp_i = brute_force_ceiling(fits, t2i, ks)
    assert M.ceiling_t2i(fits, t2i, ks) == pytest.approx(exp_t)
    assert M.ceiling_i2t(fits, t2i, ks) == pytest.approx(exp_i)
    # the ceiling is not trivially 100: caption 0 fits 3 images
    assert exp_t["R@1"] < 100


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_ceiling_matches_brute_force_random(seed):
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(1, 4))
    t2i = np.concatenate(
        [np.arange(n_images), rng.integers(0, n_images, size=int(rng.integers(0, 3)))]
    )
    fits = rng.random((len(t2i), n_images)) < 0.4
    exp_t, exp_i = brute_force_ceiling(fits, t2i, (1, 2, 3))
    assert M.ceiling_t2i(fits, t2i, (1, 2, 3)) == pytest.approx(exp_t)
    assert M.ceiling_i2t(fits, t2i, (1, 2, 3)) == pytest.approx(exp_i)
