"""The ``sparse`` index kind against a naive brute force (dense loops) on random data with ties."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from lexlens.errors import IndexMismatchError, UsageError
from lexlens.index.base import KindContext, SearchParams, Vectors
from lexlens.index.sparse import SparseKind, explain
from lexlens.index.spec import create_kind, load_kind, parse_spec
from lexlens.models.base import SparseBatch

VOCAB = 60


def random_batch(
    rng: np.random.Generator, n: int, max_nnz: int, levels: int = 8, vocab: int = VOCAB
) -> SparseBatch:
    """Rows with 0..max_nnz words; weights on a coarse grid so that scores tie often."""
    dense = np.zeros((n, vocab), np.float32)
    popular = rng.permutation(vocab)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    for r in range(n):
        cnt = int(rng.integers(0, max_nnz + 1))
        words = rng.choice(popular, size=cnt, replace=False, p=p)
        dense[r, words] = rng.integers(1, levels + 1, cnt) * np.float32(0.25)
    return SparseBatch.from_dense(dense, vocab=[f"w{i}" for i in range(vocab)])


def brute(queries: SparseBatch, items: SparseBatch, ids: np.ndarray, k: int):
    """Naive reference: float64 sums in ascending word order, rounded to float32; items with
    score 0 are not hits; order (-score, id); -1 / -inf padding."""
    x = items.to_dense().astype(np.float64)
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    for r in range(len(queries)):
        words, vals = queries.row(r)
        order = np.argsort(words)
        acc = np.zeros(len(ids), np.float64)
        for j in order:
            acc += np.float64(vals[j]) * x[:, int(words[j])]
        s32 = acc.astype(np.float32)
        hits = sorted(
            ((float(s32[c]), int(ids[c])) for c in range(len(ids)) if s32[c] > 0),
            key=lambda t: (-t[0], t[1]),
        )[:k]
        for c, (s, i) in enumerate(hits):
            out_s[r, c], out_i[r, c] = s, i
    return out_s, out_i


def build(spec: str, items: SparseBatch, ids: np.ndarray, batches: int = 1) -> SparseKind:
    kind = create_kind(parse_spec(spec), KindContext(vocab_size=VOCAB))
    for part in np.array_split(np.arange(len(ids)), batches):
        kind.add(ids[part], Vectors(sparse=take(items, part)))
    return kind


def take(b: SparseBatch, rows: np.ndarray) -> SparseBatch:
    return SparseBatch.from_dense(b.to_dense()[rows], vocab=b.vocab)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    items = random_batch(rng, 700, 8)
    queries = random_batch(rng, 40, 4, levels=3)
    ids = rng.permutation(100_000)[:700].astype(np.int64)
    return items, queries, ids


@pytest.mark.parametrize(
    "spec,batches",
    [("sparse", 1), ("sparse(block=1)", 3), ("sparse(block=4)", 5), ("sparse(block=7)", 2)],
)
@pytest.mark.parametrize("k", [1, 10, 800])
def test_exact_search_equals_brute_force(data, spec: str, batches: int, k: int) -> None:
    items, queries, ids = data
    kind = build(spec, items, ids, batches)
    s, i = kind.search(Vectors(sparse=queries), k)
    es, ei = brute(queries, items, ids, k)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (len(queries), k)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(s, es)
    assert kind.ntotal == len(ids)


@pytest.mark.parametrize("budget", [1.0, 0.05])
def test_a_batch_split_over_threads_gives_the_same_results(data, monkeypatch, budget) -> None:
    """Rows split over 3 threads (each through all segments): exactly the one-thread results
    and stats."""
    import lexlens.index.sparse as sparse_mod

    items, queries, ids = data
    kind = build("sparse", items, ids, batches=3)
    monkeypatch.setattr(sparse_mod, "ROWS_PER_THREAD", 10**9)
    q = sparse_mod.clean_queries(queries)
    one = kind._search(q, 10, budget)
    monkeypatch.setattr(sparse_mod, "ROWS_PER_THREAD", 1)
    monkeypatch.setattr(sparse_mod.os, "cpu_count", lambda: 3)
    many = kind._search(q, 10, budget)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)
    if budget == 1.0:
        np.testing.assert_array_equal(many[1], brute(queries, items, ids, 10)[1])


def test_padding_when_few_items_share_a_word() -> None:
    rng = np.random.default_rng(1)
    items = random_batch(rng, 50, 3, vocab=VOCAB)
    dense = np.zeros((2, VOCAB), np.float32)
    used = np.unique(items.indices)
    unused = np.setdiff1d(np.arange(VOCAB), used)
    dense[0, used[-1]] = 1.0  # a rare word: few hits, rest padded
    if len(unused):
        dense[1, unused[0]] = 2.0  # a word no item has: no hits at all
    q = SparseBatch.from_dense(dense)
    kind = build("sparse", items, np.arange(50))
    s, i = kind.search(Vectors(sparse=q), 20)
    es, ei = brute(q, items, np.arange(50), 20)
    np.testing.assert_array_equal(i, ei)
    assert (i[0] == -1).any() and np.isneginf(s[i == -1]).all()
    if len(unused):
        assert (i[1] == -1).all()


def test_save_load_round_trip_and_mmap(data, tmp_path) -> None:
    items, queries, ids = data
    spec = parse_spec("sparse(block=8,budget=1.0)")
    kind = build(str(spec), items, ids, batches=3)
    kind.remove(ids[:5])
    kind.save(tmp_path)
    want = kind.search(Vectors(sparse=queries), 10)
    for mmap in (True, False):
        opened = load_kind(spec, tmp_path, KindContext(vocab_size=VOCAB), mmap=mmap)
        assert isinstance(opened.segments[0].post_code, np.memmap) == mmap
        got = opened.search(Vectors(sparse=queries), 10)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
        assert opened.ntotal == kind.ntotal
    # a loaded (memory-mapped) index accepts changes and saves again
    opened = load_kind(spec, tmp_path, KindContext(vocab_size=VOCAB), mmap=True)
    opened.remove(ids[5:10])
    out = tmp_path / "again"
    out.mkdir()
    opened.save(out)
    again = load_kind(spec, out, KindContext(vocab_size=VOCAB))
    es, ei = brute(queries, take(items, np.arange(10, len(ids))), ids[10:], 10)
    np.testing.assert_array_equal(again.search(Vectors(sparse=queries), 10)[1], ei)


def test_remove_matches_brute_force_on_the_rest(data) -> None:
    items, queries, ids = data
    kind = build("sparse(block=4)", items, ids, batches=4)
    rng = np.random.default_rng(5)
    gone = rng.choice(ids, size=300, replace=False)  # enough to rebuild some segments
    assert kind.remove(np.concatenate([gone, [-5, 10**9]])) == 300
    assert kind.remove(gone[:10]) == 0
    keep = ~np.isin(ids, gone)
    es, ei = brute(queries, take(items, np.flatnonzero(keep)), ids[keep], 15)
    s, i = kind.search(Vectors(sparse=queries), 15)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(s, es)
    assert kind.ntotal == int(keep.sum())
    # removed ids can come back
    kind.add(gone[:3], Vectors(sparse=take(items, np.flatnonzero(np.isin(ids, gone[:3])))))
    assert kind.ntotal == int(keep.sum()) + 3


def test_budget_is_approximate_but_scores_are_true(data) -> None:
    rng = np.random.default_rng(11)
    # clustered items: each item draws most words from one of a few topics
    topics = [rng.choice(VOCAB, 8, replace=False) for _ in range(12)]
    dense = np.zeros((3000, VOCAB), np.float32)
    for r in range(3000):
        t = topics[r % 12]
        words = np.concatenate([rng.choice(t, 4, replace=False), rng.choice(VOCAB, 2)])
        dense[r, words] = rng.integers(1, 255, len(words)) * np.float32(4 / 255)
    items = SparseBatch.from_dense(dense)
    queries = SparseBatch.from_dense(dense[rng.choice(3000, 30)] * (rng.random((30, VOCAB)) < 0.5))
    ids = np.arange(3000)
    kind = build("sparse(block=8)", items, ids)
    exact = kind.search(Vectors(sparse=queries), 10)[1]
    ref_scores = (queries.to_dense().astype(np.float64) @ dense.T.astype(np.float64)).astype(
        np.float32
    )
    recalls = []
    for budget in (0.02, 0.2, 1.0):
        s, i = kind.search(Vectors(sparse=queries), 10, SearchParams(sparse_budget=budget))
        for r in range(len(i)):
            got = i[r][i[r] >= 0]
            np.testing.assert_allclose(s[r][: len(got)], ref_scores[r, got], rtol=1e-5)
        recalls.append(np.mean([len(set(i[r]) & set(exact[r])) / 10 for r in range(len(i))]))
    stats = kind.search_stats(Vectors(sparse=queries), 10, SearchParams(sparse_budget=0.02))
    assert stats["postings_scored"] < 0.2 * stats["postings_total"]
    assert recalls[-1] == 1.0
    assert recalls[0] <= recalls[1] + 0.05
    with pytest.raises(UsageError):
        kind.search(Vectors(sparse=queries), 10, SearchParams(sparse_budget=0.0))


def assert_threads_agree(search, want: np.ndarray, threads: int = 4, repeats: int = 20) -> None:
    """``search()`` from several threads at once always returns the ids ``want``."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(repeats):
                np.testing.assert_array_equal(search()[1], want)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors


def test_threads_search_at_once(data) -> None:
    items, queries, ids = data
    kind = build("sparse(block=4)", items, ids, batches=2)
    want = kind.search(Vectors(sparse=queries), 10)[1]
    assert_threads_agree(lambda: kind.search(Vectors(sparse=queries), 10), want)


def test_explain_lists_shared_words_and_contributions(data) -> None:
    items, queries, ids = data
    kind = build("sparse", items, ids, batches=2)
    s, i = kind.search(Vectors(sparse=take(queries, np.array([0]))), 5)
    q = take(queries, np.array([0]))
    row = {int(x): r for r, x in enumerate(ids)}
    from_kind = kind.explain(q, [int(x) for x in i[0] if x >= 0], vocab=items.vocab)
    for c, hit in enumerate(i[0]):
        if hit < 0:
            continue
        item = take(items, np.array([row[int(hit)]]))
        ex = explain(q, item, items.vocab)
        assert ex == from_kind[c]
        contrib = [e["contribution"] for e in ex]
        assert contrib == sorted(contrib, reverse=True)
        assert np.float32(sum(contrib)) == pytest.approx(s[0, c], rel=1e-6)
        for e in ex:
            assert e["word"] == f"w{e['id']}"
            assert e["contribution"] == pytest.approx(e["query"] * e["item"])
    assert kind.explain(q, [123456789])[0] == []


def test_topk_and_q8_options() -> None:
    rng = np.random.default_rng(2)
    dense = rng.random((200, VOCAB)).astype(np.float32) * (rng.random((200, VOCAB)) < 0.3)
    items = SparseBatch.from_dense(dense)
    queries = SparseBatch.from_dense(
        rng.random((10, VOCAB)).astype(np.float32) * (rng.random((10, VOCAB)) < 0.2)
    )
    ids = np.arange(200)
    # more than 256 distinct weights: stored without loss (16-bit codes)
    s, i = build("sparse", items, ids).search(Vectors(sparse=queries), 7)
    es, ei = brute(queries, items, ids, 7)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(s, es)
    # topk: only the heaviest words of each item are kept
    top3 = SparseBatch.from_dense(dense, top_k=3)
    s, i = build("sparse(topk=3)", items, ids).search(Vectors(sparse=queries), 7)
    es, ei = brute(queries, top3, ids, 7)
    np.testing.assert_array_equal(i, ei)
    # q8: weights on a uniform 8-bit grid of 0..max
    top = float(dense.max())
    grid = (np.rint(dense / (top / 255)) * np.float32(top / 255)).astype(np.float32)
    s, i = build("sparse(q8)", items, ids).search(Vectors(sparse=queries), 7)
    es, ei = brute(queries, SparseBatch.from_dense(grid), ids, 7)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_allclose(s, es, rtol=1e-6)


def test_spec_options_and_bad_input(data) -> None:
    items, queries, ids = data
    assert str(parse_spec("sparse(budget=0.05,block=8)")) == "sparse(budget=0.05,block=8)"
    assert str(parse_spec("sparse(topk=24,q8)")) == "sparse(topk=24,q8)"
    assert create_kind(parse_spec("sparse(topk=24)"), KindContext(vocab_size=VOCAB)).topk == 24
    for bad in (
        "sparse(budget=2)",
        "sparse(block=0)",
        "sparse(block=9)",
        "sparse(foo=1)",
        "sparse4",
        "sparse(q8=3)",
    ):
        with pytest.raises(UsageError):
            create_kind(parse_spec(bad), KindContext(vocab_size=VOCAB))
    kind = build("sparse", items, ids)
    neg = SparseBatch(
        np.array([0, 1]), np.array([3], np.int32), np.array([-1.0], np.float32), VOCAB
    )
    with pytest.raises(UsageError):
        kind.search(Vectors(sparse=neg), 3)
    other = SparseBatch(np.array([0, 1]), np.array([3], np.int32), np.array([1.0], np.float32), 99)
    with pytest.raises(UsageError):
        kind.search(Vectors(sparse=other), 3)
    with pytest.raises(UsageError):
        kind.add(np.array([1]), Vectors(sparse=neg))
    with pytest.raises(UsageError):
        kind.search(Vectors(dense=np.zeros((1, 4), np.float32)), 3)
    # duplicate words in a query are summed
    dup = SparseBatch(
        np.array([0, 2]), np.array([3, 3], np.int32), np.array([0.5, 0.5], np.float32), VOCAB
    )
    one = SparseBatch(np.array([0, 1]), np.array([3], np.int32), np.array([1.0], np.float32), VOCAB)
    np.testing.assert_array_equal(
        kind.search(Vectors(sparse=dup), 5)[1], kind.search(Vectors(sparse=one), 5)[1]
    )


def test_bench_search_measures_sparse_and_hybrid_on_synthetic_vectors(tmp_path) -> None:
    from lexlens.eval.bench_search import (
        SYNTHETIC_MODEL,
        BenchSearchConfig,
        bench_search,
        synthesize_lexical_gallery,
    )

    g = synthesize_lexical_gallery(3000, 30, dim=32, seed=1)
    assert 15 < g.avg_nnz() < 30 and len(np.unique(g.sparse.values)) <= 255
    q_nnz = np.diff(g.query_sparse.indptr)
    assert q_nnz.min() >= 1 and q_nnz.max() <= 11 and g.dense.shape == (3000, 32)
    cfg = BenchSearchConfig(
        model=SYNTHETIC_MODEL,
        sizes=[400, 1200],
        kinds=["flat", "sparse", "sparse(budget=0.01)", "hybrid(sparse,flat)"],
        queries=25,
        out=str(tmp_path),
        progress=False,
    )
    res = bench_search(cfg)
    rows = {(r["n"], r["kind"]): r for r in res["rows"]}
    for n in (400, 1200):
        assert rows[(n, "sparse")]["recall@10"] == 100.0
        assert rows[(n, "hybrid(sparse,flat)")]["recall@10"] == 100.0
        assert rows[(n, "sparse")]["smaller_than_flat"] > 1.0
        assert rows[(n, "flat")]["faster_than_flat"] == 1.0
    assert "disk vs flat" in (tmp_path / "bench_search.md").read_text()


def test_reference_scores_equal_the_naive_sums(data) -> None:
    from lexlens.index.sparse import sparse_scores_reference

    items, queries, ids = data
    got = sparse_scores_reference(queries, items)
    x = items.to_dense().astype(np.float64)
    for r in range(len(queries)):
        words, vals = queries.row(r)
        acc = np.zeros(len(items), np.float64)
        for j in np.argsort(words):
            acc += np.float64(vals[j]) * x[:, int(words[j])]
        np.testing.assert_array_equal(got[r], acc.astype(np.float32))


def test_eval_scores_equal_the_index_reference_bit_for_bit() -> None:
    """The evaluation's exact lexical matrix ties exactly where the index's scores do, so both
    order equal scores by id (float32 sums in another word order would differ by an ulp)."""
    from lexlens.eval.exact import sparse_scores
    from lexlens.index.sparse import sparse_scores_reference

    rng = np.random.default_rng(7)
    vocab = [f"w{i}" for i in range(60)]
    x = np.zeros((300, 60), np.float32)  # 8-bit codes over [0, 4], as the lexicon heads give
    for r in range(300):
        x[r, rng.choice(60, 20, replace=False)] = rng.integers(1, 256, 20) * np.float32(4 / 255)
    q = np.where(rng.random((40, 60)) < 0.25, rng.random((40, 60)), 0).astype(np.float32)
    items, queries = SparseBatch.from_dense(x, vocab=vocab), SparseBatch.from_dense(q, vocab=vocab)
    np.testing.assert_array_equal(
        sparse_scores(queries, items), sparse_scores_reference(queries, items)
    )


# ----------------------------------------------------------------------------- layout 2
@pytest.mark.parametrize("ratio", [0.0, float("inf")])
def test_rows_only_and_gap_lists_only_equal_brute_force(data, monkeypatch, ratio) -> None:
    """Every word as a LEB128 gap list (ratio 0) or as a dense row (inf): same exact results,
    explanations, removals and reopened copies as the brute force."""
    import lexlens.index.sparse as sparse_mod

    monkeypatch.setattr(sparse_mod, "ROW_RATIO", ratio)
    items, queries, ids = data
    kind = build("sparse(block=5)", items, ids, batches=2)
    for seg in kind.segments:
        assert ((np.asarray(seg.dense_of) >= 0) == (ratio > 0)).all()
        assert (len(seg.gaps) > 0) == (ratio == 0)
    for k in (1, 10, 800):
        s, i = kind.search(Vectors(sparse=queries), k)
        es, ei = brute(queries, items, ids, k)
        np.testing.assert_array_equal(i, ei)
        np.testing.assert_array_equal(s, es)
    q = take(queries, np.array([1]))
    hit = int(kind.search(Vectors(sparse=q), 1)[1][0, 0])
    pos = int(np.flatnonzero(ids == hit)[0])
    assert kind.explain(q, [hit], vocab=items.vocab)[0] == explain(
        q, take(items, np.array([pos])), items.vocab
    )
    gone = ids[::3]
    kind.remove(gone)
    keep = ~np.isin(ids, gone)
    es, ei = brute(queries, take(items, np.flatnonzero(keep)), ids[keep], 10)
    np.testing.assert_array_equal(kind.search(Vectors(sparse=queries), 10)[1], ei)


def test_gap_lists_with_long_gaps_and_wide_ids(monkeypatch) -> None:
    """Rare words whose gaps need 2 and 3 LEB128 bytes and span many checkpoints, queries with
    many list words whose decoded documents overflow the search's buffer (grown for the call,
    then kept larger), ids above 2**32 and negative ids: all equal to the brute force."""
    import lexlens.index.sparse as sparse_mod

    monkeypatch.setattr(sparse_mod, "ROW_RATIO", 0.0)
    monkeypatch.setattr(sparse_mod, "_BUF0", 64)
    monkeypatch.setattr(sparse_mod, "_SCRATCH", threading.local())
    rng = np.random.default_rng(7)
    n, vocab = 40_000, 48
    dense = np.zeros((n, vocab), np.float32)
    dense[np.arange(n), rng.integers(0, 8, n)] = rng.integers(1, 9, n) * np.float32(0.5)
    # word 40: every 200th item (2-byte gaps), word 41: 3 items far apart (3-byte gaps)
    dense[::200, 40] = 3.0
    dense[[5, 20_000, 39_999], 41] = 9.0
    # words 8..39: many small lists so that a query has > 32 list words
    for w in range(8, 40):
        dense[rng.choice(n, 300, replace=False), w] = rng.integers(1, 5, 300) * np.float32(0.5)
    items = SparseBatch.from_dense(dense)
    qd = np.zeros((3, vocab), np.float32)
    qd[0, 40] = 1.0
    qd[1, [41, 0, 3]] = [1.0, 0.25, 0.5]
    qd[2, :42] = rng.random(42).astype(np.float32) + 0.1
    queries = SparseBatch.from_dense(qd)
    for ids in (np.arange(n) * 3 + 2**33, np.arange(n) - 20_000):
        kind = SparseKind(vocab_size=vocab)
        kind.add(ids, Vectors(sparse=items))
        seg = kind.segments[0]
        assert seg.ids.shape[1] == (5 if ids.min() > 0 else 8)
        assert np.asarray(seg.gaps).max() >= 128  # multi-byte gaps exist
        s, i = kind.search(Vectors(sparse=queries), 25)
        es, ei = brute(queries, items, ids, 25)
        np.testing.assert_array_equal(i, ei)
        np.testing.assert_array_equal(s, es)
        assert (i[1] != -1).sum() == 25 and set(ids[[5, 20_000, 39_999]]) <= set(i[1])
        assert kind.explain(take(queries, np.array([1])), [int(ids[20_000])])[0][0]["id"] == 41
    # the first search overflowed the 64-entry buffer; the next ones ran with a larger one
    assert len(sparse_mod._SCRATCH.arrays[2]) > 64


def test_layout_is_smaller_than_raw_and_old_layouts_are_refused(data, tmp_path) -> None:
    items, _, ids = data
    kind = build("sparse", items, ids)
    kind.save(tmp_path)
    nnz = int(items.indptr[-1])
    on_disk = sum(np.load(tmp_path / f).nbytes for f in os.listdir(tmp_path) if f.endswith("npy"))
    # raw CSR: 4-byte word id + 4-byte weight per non-zero, 8 bytes per id
    assert on_disk < 0.5 * (8 * nnz + 8 * len(ids))
    meta = json.loads((tmp_path / "sparse.json").read_text())
    meta["format"] = 1
    (tmp_path / "sparse.json").write_text(json.dumps(meta))
    with pytest.raises(IndexMismatchError, match="rebuild"):
        load_kind(parse_spec("sparse"), tmp_path, KindContext(vocab_size=VOCAB))
