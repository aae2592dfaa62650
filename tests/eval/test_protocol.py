"""The evaluation protocol: full matrix vs. naive loops, through indexes, fine-grained, ceiling."""

from __future__ import annotations

import numpy as np
import pytest
from eval_fakes import TableEncoder

from lexlens.errors import DataError, UsageError
from lexlens.eval import protocol as P
from lexlens.eval.protocol import EvalSet, FGItem, evaluate
from lexlens.index.spec import known_kinds

KS = (1, 5, 10)


def naive_ranks(scores: list[list[float]], gts: list[set[int]]) -> list[int]:
    out = []
    for row, g in zip(scores, gts, strict=True):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))
        out.append(next(p for p, c in enumerate(order, 1) if c in g))
    return out


def dot(a, b) -> float:
    return float(sum(float(x) * float(y) for x, y in zip(a, b, strict=True)))


def make_problem(seed: int, n_images: int = 24, dim: int = 4, lexical: bool = False):
    """Dyadic vectors (exact dot products, many ties); 1-3 captions per image."""
    rng = np.random.default_rng(seed)
    levels = np.array([-1.0, -0.5, 0.0, 0.5, 1.0], np.float32)
    per = rng.integers(1, 4, size=n_images)
    captions = [[f"img{i} cap{j}" for j in range(per[i])] for i in range(n_images)]
    img = {i: levels[rng.integers(0, 5, dim)] for i in range(n_images)}
    txt = {c: levels[rng.integers(0, 5, dim)] for caps in captions for c in caps}
    img_lex = txt_lex = None
    if lexical:
        pos = np.array([0.0, 0.0, 0.5, 1.0], np.float32)
        img_lex = {i: pos[rng.integers(0, 4, 6)] for i in range(n_images)}
        txt_lex = {c: pos[rng.integers(0, 4, 6)] for caps in captions for c in caps}
    enc = TableEncoder(img, txt, img_lex, txt_lex)
    return enc, EvalSet(images=list(range(n_images)), captions=captions)


def expected_block(img: dict, txt: dict, es: EvalSet) -> dict:
    texts, t2i = es.texts, es.text_to_image.tolist()
    sim = [[dot(txt[t], img[i]) for i in es.images] for t in texts]
    r_t = naive_ranks(sim, [{g} for g in t2i])
    own = [{t for t, g in enumerate(t2i) if g == i} for i in range(len(es.images))]
    r_i = naive_ranks([list(col) for col in zip(*sim, strict=True)], own)
    out = {}
    for name, r in (("t2i", r_t), ("i2t", r_i)):
        out[name] = {f"R@{k}": 100.0 * np.mean([x <= k for x in r]) for k in KS}
        out[name]["ranks"] = r
    out["rsum"] = sum(out[d][f"R@{k}"] for d in ("t2i", "i2t") for k in KS)
    return out


def check_recalls(got: dict, exp: dict) -> None:
    for d in ("t2i", "i2t"):
        for k in KS:
            assert got[d][f"R@{k}"] == pytest.approx(exp[d][f"R@{k}"]), (d, k)
    assert got["rsum"] == pytest.approx(exp["rsum"])


@pytest.mark.parametrize("seed", range(4))
def test_full_matrix_matches_naive_loop(seed):
    enc, es = make_problem(seed)
    res = evaluate(enc, es, progress=False)
    exp = expected_block(enc._img, enc._txt, es)
    check_recalls(res, exp)
    for d in ("t2i", "i2t"):
        assert res[d]["mean_rank"] == pytest.approx(np.mean(exp[d]["ranks"]))
        assert res[d]["median_rank"] == pytest.approx(np.median(exp[d]["ranks"]))
    assert res["n_images"] == len(es.images) and res["n_texts"] == len(es.texts)
    assert "lexical" not in res and "ceiling" not in res and "fg_acc" not in res


@pytest.mark.parametrize("seed", range(4))
def test_exact_index_gives_full_matrix_numbers(seed):
    enc, es = make_problem(seed)
    full = evaluate(enc, es, progress=False)
    flat = evaluate(enc, es, index_spec="flat", progress=False)
    assert flat["index"] == "flat"
    check_recalls(flat, full)
    exp = expected_block(enc._img, enc._txt, es)
    kmax = max(KS)
    for d in ("t2i", "i2t"):
        capped = [min(r, kmax + 1) for r in exp[d]["ranks"]]
        assert flat[d]["mean_rank_lower_bound"] == pytest.approx(np.mean(capped))
        assert flat[d]["mean_rank_lower_bound"] <= full[d]["mean_rank"]
        assert "mean_rank" not in flat[d]
    assert "ann_recall@10" not in flat


def test_approximate_index_reports_ann_recall_and_exact_block():
    enc, es = make_problem(11, n_images=300, dim=8)
    # continuous vectors: no ties, so the exact lists are unambiguous
    rng = np.random.default_rng(0)
    enc._img = {k: rng.normal(size=8).astype(np.float32) for k in enc._img}
    enc._txt = {k: rng.normal(size=8).astype(np.float32) for k in enc._txt}
    full = evaluate(enc, es, progress=False)
    res = evaluate(enc, es, index_spec="ivf16,pq2(nbits=4)", progress=False)
    check_recalls(res["exact"], full)
    ann = res["ann_recall@10"]
    assert set(ann) == {"t2i", "i2t"}
    assert all(0 <= v <= 100 for v in ann.values())
    assert ann["t2i"] < 100  # 2 bytes per vector cannot keep the exact order


def test_fine_grained_accuracy_counts_ties_as_failures():
    img = {0: np.array([1, 0], np.float32), 1: np.array([0, 1], np.float32)}
    txt = {
        "a": np.array([1, 0], np.float32),
        "b": np.array([0, 1], np.float32),
        "a-swapped": np.array([0.5, 0], np.float32),  # loses to "a" on image 0
        "a-tie": np.array([1, 0], np.float32),  # ties with "a" on image 0
        "b-swapped": np.array([0, 0.5], np.float32),
    }
    enc = TableEncoder(img, txt)
    fg = [
        FGItem(0, "a", ["a-swapped"]),
        FGItem(0, "a", ["a-swapped", "a-tie"]),
        FGItem(1, "b", ["b-swapped", "a"]),
        FGItem(1, "b", []),  # skipped: no negatives
    ]
    es = EvalSet(images=[0, 1], captions=[["a"], ["b"]], fg=fg)
    res = evaluate(enc, es, progress=False)
    assert res["fg_n"] == 3
    assert res["fg_acc"] == pytest.approx(100 * 2 / 3)


def test_ceiling_through_evaluate_uses_caption_fits(monkeypatch):
    # scenes are colours; a caption's meaning is a set of colours it allows
    records = [{"c": "red"}, {"c": "red"}, {"c": "blue"}]
    meta = [[["red"], ["red", "blue"]], [["red"]], [["blue"]]]
    captions = [["r1", "rb"], ["r2"], ["b"]]
    monkeypatch.setattr(P, "_caption_fits", lambda: lambda m, s: s["c"] in m)
    enc = TableEncoder(
        {i: np.eye(3, dtype=np.float32)[i] for i in range(3)},
        {c: np.ones(3, np.float32) for caps in captions for c in caps},
    )
    es = EvalSet(images=[0, 1, 2], captions=captions, records=records, caption_meta=meta)
    res = evaluate(enc, es, k_values=(1, 2), progress=False)
    # t2i: "r1" fits 2 images, "rb" 3, "r2" 2, "b" 1 -> R@1 = mean(1/2, 1/3, 1/2, 1)
    assert res["ceiling"]["t2i"]["R@1"] == pytest.approx(100 * np.mean([1 / 2, 1 / 3, 1 / 2, 1]))
    # i2t image 0: fitting captions r1, rb, r2 (own: r1, rb) -> R@1 = 2/3;
    # image 1: r1, rb, r2 (own r2) -> 1/3; image 2: rb, b (own b) -> 1/2
    assert res["ceiling"]["i2t"]["R@1"] == pytest.approx(100 * np.mean([2 / 3, 1 / 3, 1 / 2]))
    assert res["ceiling"]["i2t"]["R@2"] == pytest.approx(100 * np.mean([1, 1 - 1 / 3, 1]))


def test_fits_matrix_calls_each_distinct_pair_once():
    calls = []

    def fits(m, s):
        calls.append((m, s))
        return m == s

    meta = ["x", "y", "x", "x"]
    recs = ["x", "x", "z"]
    f = fits_matrix_ = P.fits_matrix(meta, recs, fits)
    assert f.tolist() == [[m == s for s in recs] for m in meta]
    assert len(calls) == 2 * 2
    assert fits_matrix_.dtype == bool


@pytest.mark.skipif("sparse" not in known_kinds(), reason="the sparse kind is not registered yet")
@pytest.mark.parametrize("seed", range(3))
def test_lexical_full_matrix_and_sparse_index(seed):
    enc, es = make_problem(seed, lexical=True)
    res = evaluate(enc, es, progress=False)
    exp = expected_block(enc._img_lex, enc._txt_lex, es)
    check_recalls(res["lexical"], exp)
    through = evaluate(enc, es, index_spec="sparse", progress=False)
    assert through["ann_recall@10"]["t2i"] == pytest.approx(100.0)


def test_lexical_full_matrix_matches_naive_loop():
    enc, es = make_problem(5, lexical=True)
    res = evaluate(enc, es, progress=False)
    check_recalls(res["lexical"], expected_block(enc._img_lex, enc._txt_lex, es))
    check_recalls(res, expected_block(enc._img, enc._txt, es))


def test_errors_are_one_line_usage_errors():
    enc, es = make_problem(0)
    with pytest.raises(UsageError):
        evaluate(enc, es, k_values=(0,), progress=False)
    with pytest.raises(UsageError):
        evaluate(enc, es, index_spec="nosuchkind", progress=False)
    with pytest.raises(DataError):
        EvalSet(images=[0], captions=[[]])
    with pytest.raises(UsageError):
        es.limit(0)


def test_limit_keeps_first_images_and_their_fg():
    enc, es = make_problem(0, n_images=10)
    es.fg = [FGItem(1, es.captions[1][0], [es.captions[2][0]]), FGItem(8, es.captions[8][0], ["x"])]
    small = es.limit(3)
    assert small.images == [0, 1, 2] and small.captions == es.captions[:3]
    assert [f.image for f in small.fg] == [1]
