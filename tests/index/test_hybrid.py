"""The ``hybrid`` index kind against brute force: exact sparse candidates + dense scores / fusion."""

from __future__ import annotations

import numpy as np
import pytest
from test_fusion import _naive_minmax, _naive_rrf, _naive_top
from test_sparse import VOCAB, assert_threads_agree, brute, random_batch, take

from lexlens.errors import UsageError
from lexlens.index.base import KindContext, SearchParams, Vectors
from lexlens.index.hybrid import HybridKind, dense_vectors_of
from lexlens.index.spec import create_kind, load_kind, parse_spec
from lexlens.models.base import SparseBatch, l2_normalize

DIM = 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    n = 500
    items = random_batch(rng, n, 6)
    x = l2_normalize(rng.standard_normal((n, DIM)).astype(np.float32))
    qs = random_batch(rng, 25, 3, levels=3)
    # the last query has no words: only the dense part can answer it
    qs = SparseBatch.from_dense(np.vstack([qs.to_dense()[:-1], np.zeros((1, VOCAB), np.float32)]))
    qd = l2_normalize(rng.standard_normal((25, DIM)).astype(np.float32))
    ids = rng.permutation(10_000)[:n].astype(np.int64)
    return items, x, qs, qd, ids


def build(spec: str, data, batches: int = 1) -> HybridKind:
    items, x, _, _, ids = data
    kind = create_kind(parse_spec(spec), KindContext(dim=DIM, vocab_size=VOCAB))
    for part in np.array_split(np.arange(len(ids)), batches):
        kind.add(ids[part], Vectors(dense=x[part], sparse=take(items, part)))
    return kind


def dense_top(qd: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int):
    s = qd @ x.T
    out_s = np.full((len(qd), k), -np.inf, np.float32)
    out_i = np.full((len(qd), k), -1, np.int64)
    for r in range(len(qd)):
        order = sorted(range(len(ids)), key=lambda c: (-s[r, c], ids[c]))[:k]
        out_s[r, : len(order)] = s[r, order]
        out_i[r, : len(order)] = ids[order]
    return out_s, out_i


def rerank_reference(data, k: int, cand: int):
    items, x, qs, qd, ids = data
    _, sp_ids = brute(qs, items, ids, cand)
    _, de_ids = dense_top(qd, x, ids, k)
    row_of = {int(i): r for r, i in enumerate(ids)}
    out = []
    for r in range(len(qd)):
        pool = {int(i) for i in sp_ids[r] if i >= 0}
        if len(pool) < k:
            pool |= {int(i) for i in de_ids[r] if i >= 0}
        scored = sorted(
            ((float(np.dot(qd[r], x[row_of[i]])), i) for i in pool), key=lambda t: (-t[0], t[1])
        )[:k]
        out.append(scored)
    return out


def assert_rows(s: np.ndarray, i: np.ndarray, expected) -> None:
    for r, exp in enumerate(expected):
        got = [int(v) for v in i[r] if v >= 0]
        assert got == [e[1] for e in exp], r
        np.testing.assert_allclose(s[r, : len(got)], [e[0] for e in exp], rtol=1e-5, atol=1e-6)
        assert (i[r, len(got) :] == -1).all() and np.isneginf(s[r, len(got) :]).all()


@pytest.mark.parametrize("k,cand", [(5, 20), (10, 10), (30, 100)])
def test_rerank_equals_brute_force(data, k: int, cand: int) -> None:
    items, x, qs, qd, ids = data
    kind = build(f"hybrid(sparse(block=4),flat;candidates={cand})", data, batches=3)
    s, i = kind.search(Vectors(dense=qd, sparse=qs), k)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (len(qd), k)
    assert_rows(s, i, rerank_reference(data, k, cand))
    # the candidate count per call overrides the spec
    s2, i2 = kind.search(Vectors(dense=qd, sparse=qs), 5, SearchParams(candidates=7))
    assert_rows(s2, i2, rerank_reference(data, 5, 7))


@pytest.mark.parametrize("fusion", ["rrf", "minmax"])
def test_fusion_equals_brute_force_fusion(data, fusion: str) -> None:
    items, x, qs, qd, ids = data
    cand, k = 15, 8
    kind = build(f"hybrid(flat,sparse;fusion={fusion},candidates={cand},alpha=0.7)", data)
    s, i = kind.search(Vectors(dense=qd, sparse=qs), k)
    lists = [brute(qs, items, ids, cand), dense_top(qd, x, ids, cand)]
    for r in range(len(qd)):
        if fusion == "rrf":
            fused = _naive_rrf(lists, r, 60)
        else:
            fused = _naive_minmax(lists, r, (0.3, 0.7))
        es, ei = _naive_top(fused, k)
        assert i[r].tolist() == ei, r
        np.testing.assert_allclose(s[r], np.asarray(es, np.float32), rtol=1e-5)
    # alpha and fusion per call
    s3, i3 = kind.search(Vectors(dense=qd, sparse=qs), k, SearchParams(fusion="minmax", alpha=0.0))
    for r in range(len(qd)):
        es, ei = _naive_top(_naive_minmax(lists, r, (1.0, 0.0)), k)
        assert i3[r].tolist() == ei


@pytest.mark.parametrize("dense", ["hnsw8", "ivf4,flat", "sq8", "pq4"])
def test_rerank_uses_the_dense_childs_vectors(data, dense: str) -> None:
    items, x, qs, qd, ids = data
    # two batches: ivf/pq train on the second add, sq trains at once
    kind = build(f"hybrid(sparse,{dense};candidates=40)", data, batches=2)
    s, i = kind.search(Vectors(dense=qd, sparse=qs), 10)
    row_of = {int(v): r for r, v in enumerate(ids)}
    tol = {"hnsw8": 1e-5, "ivf4,flat": 1e-5, "sq8": 0.1, "pq4": 0.6}[dense]
    for r in range(len(qd)):
        for c in range(10):
            if i[r, c] >= 0:
                assert abs(s[r, c] - float(qd[r] @ x[row_of[int(i[r, c])]])) <= tol
    vecs, found = dense_vectors_of(kind.dense, np.array([ids[0], -7, ids[3]]))
    assert found.tolist() == [True, False, True]
    if dense in ("hnsw8", "ivf4,flat"):
        np.testing.assert_allclose(vecs[[0, 2]], x[[0, 3]], atol=1e-6)
    # an index that has not trained yet keeps its items in an exact buffer
    small = create_kind(
        parse_spec(f"hybrid(sparse,{dense})"), KindContext(dim=DIM, vocab_size=VOCAB)
    )
    small.add(ids[:20], Vectors(dense=x[:20], sparse=take(items, np.arange(20))))
    vecs, found = dense_vectors_of(small.dense, ids[:20])
    assert found.all()


def test_save_load_remove_round_trip(data, tmp_path) -> None:
    items, x, qs, qd, ids = data
    spec = parse_spec("hybrid(sparse,hnsw8;candidates=30)")
    kind = build(str(spec), data, batches=2)
    gone = ids[::7]
    assert kind.remove(gone) == len(gone)
    s, i = kind.search(Vectors(dense=qd, sparse=qs), 10)
    assert not np.isin(i, gone).any()
    kind.save(tmp_path)
    for mmap in (True, False):
        opened = load_kind(spec, tmp_path, KindContext(dim=DIM, vocab_size=VOCAB), mmap=mmap)
        assert isinstance(opened, HybridKind) and opened.ntotal == len(ids) - len(gone)
        s2, i2 = opened.search(Vectors(dense=qd, sparse=qs), 10)
        np.testing.assert_array_equal(i2, i)
        np.testing.assert_allclose(s2, s, rtol=1e-6)
    # without the spec (read from hybrid.json)
    opened = load_kind(spec, tmp_path, KindContext(dim=DIM, vocab_size=VOCAB))
    assert opened.spec == spec


def test_dense_only_queries_and_threads(data) -> None:
    items, x, qs, qd, ids = data
    kind = build("hybrid(sparse,flat)", data)
    s, i = kind.search(Vectors(dense=qd), 6)  # no lexical vectors: dense ranking
    es, ei = dense_top(qd, x, ids, 6)
    np.testing.assert_array_equal(i, ei)
    want = kind.search(Vectors(dense=qd, sparse=qs), 10)[1]
    assert_threads_agree(lambda: kind.search(Vectors(dense=qd, sparse=qs), 10), want, 3, 10)


@pytest.mark.parametrize(
    "bad",
    [
        "hybrid(flat,hnsw8)",
        "hybrid(sparse,sparse)",
        "hybrid(sparse)",
        "hybrid(sparse,flat;fusion=max)",
        "hybrid(sparse,flat;candidates=0)",
        "hybrid(sparse,flat;alpha=2)",
        "hybrid(sparse,flat;what=1)",
    ],
)
def test_bad_specs(bad: str) -> None:
    with pytest.raises(UsageError):
        create_kind(parse_spec(bad), KindContext(dim=DIM, vocab_size=VOCAB))


def test_bad_calls(data) -> None:
    items, x, qs, qd, ids = data
    kind = build("hybrid(sparse,flat)", data)
    with pytest.raises(UsageError):
        kind.search(Vectors(dense=qd, sparse=qs), 5, SearchParams(fusion="max"))
    with pytest.raises(UsageError):
        kind.search(Vectors(sparse=qs), 5)
    with pytest.raises(UsageError):
        kind.add(np.array([1]), Vectors(dense=x[:1]))


def test_default_index_of_a_lexical_model_is_hybrid_and_explains(tmp_path) -> None:
    from fakes import FakeEncoder, write_collection

    from lexlens.index.index import Index
    from lexlens.index.ingest import SourceItem
    from lexlens.search import Query, format_results

    recs = write_collection(tmp_path / "src", 30)
    items = [SourceItem(str(tmp_path / "src" / r["image"]), None, r["captions"], {}) for r in recs]
    enc = FakeEncoder()
    idx = Index.build(items, enc, tmp_path / "idx", progress=False, workers=0)
    assert idx.info()["spec"] == "hybrid(sparse,flat)"
    res = Index.open(tmp_path / "idx", model=enc).search(Query(text="red"), k=5, explain=True)
    assert len(res.hits[0]) == 5
    for h in res.hits[0]:
        assert [e["word"] for e in h.explain] == ["red"]  # the one word the query has
    # ranked by the hybrid score, so the line names the lexical score the words add up to
    lex = sum(e["contribution"] for e in res.hits[0][0].explain)
    assert f"shared words (lexical score {lex:.4f}): red" in format_results(res)
    # a raw embedding is answered by the dense part
    e = enc.encode_texts(["blue"])[0]
    res = idx.search(Query(embedding=e), k=4)
    assert (res.ids[0] >= 0).all()
