"""The Milvus backend on Milvus Lite against brute force: dense and sparse search, ties,
filters on path and user metadata, add / remove, reopen from the pointer file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymilvus")

from lexlens.errors import UsageError  # noqa: E402
from lexlens.index.base import KindContext, SearchParams, Vectors  # noqa: E402
from lexlens.models.base import SparseBatch  # noqa: E402
from lexlens.results import topk  # noqa: E402
from lexlens.scale.milvus import MilvusKind, parse_backend, where_to_filter  # noqa: E402

DIM, VOCAB, N = 16, 40, 300


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    dense = _unit(rng.standard_normal((N, DIM)))
    # a run of 25 identical vectors (ties) under ids inserted in shuffled order
    dense[100:125] = dense[99]
    lex = np.where(rng.random((N, VOCAB)) < 0.1, rng.integers(1, 5, (N, VOCAB)), 0).astype(
        np.float32
    )
    lex[5] = 0  # an item without any lexical weight
    ids = np.arange(N, dtype=np.int64) * 3 + 1000  # external ids, not positions
    meta = [{"split": ["train", "val", "test"][i % 3], "n": int(i % 5)} for i in range(N)]
    paths = [f"/data/img-{i:04d}.png" for i in range(N)]
    order = rng.permutation(N)
    return dict(dense=dense, lex=lex, ids=ids, meta=meta, paths=paths, order=order)


@pytest.fixture(scope="module")
def milvus(data, tmp_path_factory):
    db = tmp_path_factory.mktemp("mv") / "lexlens.db"
    kind = MilvusKind.create(
        f"milvus://{db}", "lexlens_test", KindContext(dim=DIM, vocab_size=VOCAB)
    )
    o = data["order"]
    for part in np.array_split(o, 3):  # several adds, shuffled order
        kind.add(
            data["ids"][part],
            Vectors(dense=data["dense"][part], sparse=SparseBatch.from_dense(data["lex"][part])),
            paths=[data["paths"][i] for i in part],
            metadata=[data["meta"][i] for i in part],
        )
    yield kind
    kind.close()


def _brute(sim, ids, k, mask=None):
    if mask is not None:
        sim, ids = sim[:, mask], ids[mask]
    return topk(sim, k, ids)


def _assert_same(got, want):
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5)


def test_dense_sparse_and_filters_match_brute_force(milvus, data):
    rng = np.random.default_rng(1)
    q = _unit(rng.standard_normal((20, DIM)))
    q[0] = data["dense"][99]  # hits the tie run: lowest ids must win the cut at k
    sim = q @ data["dense"].T
    for k in (1, 10, 40):
        _assert_same(milvus.search(Vectors(dense=q), k), _brute(sim, data["ids"], k))
    assert milvus.ntotal == N

    # the 25 + 1 tied items come back by ascending id, cut at k = 5
    s, i = milvus.search(Vectors(dense=q[:1]), 5)
    np.testing.assert_array_equal(i[0], data["ids"][99:104])

    # filters on user metadata (equality, membership) and on the path
    split = np.array([m["split"] for m in data["meta"]])
    nval = np.array([m["n"] for m in data["meta"]])
    mask = (split == "val") & np.isin(nval, [1, 3])
    got = milvus.search(Vectors(dense=q), 10, where={"split": "val", "n": [1, 3]})
    _assert_same(got, _brute(sim, data["ids"], 10, mask))
    one = milvus.search(Vectors(dense=q[:2]), 3, where={"path": data["paths"][7]})
    np.testing.assert_array_equal(one[1][:, 0], data["ids"][7])
    assert (one[1][:, 1:] == -1).all() and np.isneginf(one[0][:, 1:]).all()

    # sparse (lexical) queries: exact inner product over the vocabulary; no weight -> no hit
    ql = np.where(rng.random((15, VOCAB)) < 0.15, rng.random((15, VOCAB)), 0).astype(np.float32)
    ql[3] = 0
    lsim = ql @ data["lex"].T
    got = milvus.search(Vectors(sparse=SparseBatch.from_dense(ql)), 12)
    want = _brute(np.where(lsim > 0, lsim, -np.inf), data["ids"], 12)
    want[1][np.isneginf(want[0])] = -1  # the local sparse contract: only items sharing a word
    _assert_same(got, want)
    assert (got[1][3] == -1).all() and 1015 not in got[1]  # item 5 (id 1015) has no words

    # per-call parameters are accepted (FLAT ignores them) and do not change exact results
    _assert_same(
        milvus.search(Vectors(dense=q), 10, SearchParams(nprobe=4, ef_search=16)),
        _brute(sim, data["ids"], 10),
    )


def test_remove_add_and_reopen(milvus, data, tmp_path):
    rng = np.random.default_rng(2)
    gone = data["ids"][rng.choice(N, 40, replace=False)]
    assert milvus.remove(np.concatenate([gone, [-5, 10**9]])) == 40
    assert milvus.remove(gone) == 0
    assert milvus.ntotal == N - 40
    keep = ~np.isin(data["ids"], gone)
    q = _unit(rng.standard_normal((10, DIM)))
    sim = q @ data["dense"].T
    _assert_same(milvus.search(Vectors(dense=q), 15), _brute(sim, data["ids"], 15, keep))

    # re-adding a removed item brings it back with its vectors
    j = int(np.flatnonzero(~keep)[0])
    milvus.add(
        data["ids"][j : j + 1],
        Vectors(
            dense=data["dense"][j : j + 1], sparse=SparseBatch.from_dense(data["lex"][j : j + 1])
        ),
    )
    keep[j] = True
    _assert_same(milvus.search(Vectors(dense=q), 15), _brute(sim, data["ids"], 15, keep))

    # the pointer file reopens the same collection
    names = milvus.save(tmp_path)
    again = MilvusKind.load(tmp_path, {"context": KindContext(dim=DIM, vocab_size=VOCAB)})
    assert names == ["milvus.json"] and again.ntotal == N - 39
    _assert_same(again.search(Vectors(dense=q), 15), _brute(sim, data["ids"], 15, keep))

    with pytest.raises(UsageError, match="dimension"):
        milvus.add(
            np.array([1]),
            Vectors(
                dense=np.zeros((1, 3), np.float32),
                sparse=SparseBatch.from_dense(np.ones((1, VOCAB))),
            ),
        )


def test_backend_strings_and_filter_expressions(tmp_path):
    assert parse_backend("milvus://http://host:19530").uri == "http://host:19530"
    lite = parse_backend("milvus://rel/x.db")
    assert lite.lite and lite.uri.endswith("/rel/x.db") and lite.uri.startswith("/")
    assert parse_backend("milvus", default_lite=tmp_path / "d.db").uri == str(tmp_path / "d.db")
    for bad in ("faiss://x", "milvus://x.txt", "milvus://"):
        with pytest.raises(UsageError):
            parse_backend(bad)
    expr = where_to_filter({"split": 'a"b', "n": [1, 2], "path": "/p"})
    assert (
        expr == 'meta["split"] == "a\\"b" and (meta["n"] == 1 or meta["n"] == 2) and path == "/p"'
    )
    with pytest.raises(UsageError):
        where_to_filter({"a] or 1==1 or meta[": 1})
