"""Dense and sparse vectors in one Milvus (Lite) collection: ``milvus(sparse,flat)``.

Each field alone gives the results of brute force (and of the local ``flat`` / ``sparse``
kinds); fused queries give naive reference implementations of RRF (Milvus's
``hybrid_search``) and of sparse candidates re-scored densely; filters apply to both fields;
records, removal and reopening keep both vectors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymilvus")

from lexlens.errors import UsageError  # noqa: E402
from lexlens.index.base import KINDS, KindContext, SearchParams, Vectors  # noqa: E402
from lexlens.index.spec import IndexSpec, create_kind, ensure_builtin_kinds  # noqa: E402
from lexlens.index.store import ItemRow  # noqa: E402
from lexlens.models.base import SparseBatch  # noqa: E402
from lexlens.results import topk  # noqa: E402
from lexlens.scale.milvus import MilvusKind, wrap_spec  # noqa: E402

DIM, VOCAB, N, C = 12, 30, 240, 20
HYBRID = IndexSpec(
    "milvus",
    options=(("candidates", C),),
    children=(IndexSpec("sparse"), IndexSpec("flat")),
)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """Continuous random values: no two scores tie inside one field (ties are tested elsewhere)."""
    rng = np.random.default_rng(11)
    dense = _unit(rng.standard_normal((N, DIM)))
    lex = np.where(rng.random((N, VOCAB)) < 0.12, rng.random((N, VOCAB)) + 0.1, 0)
    lex = lex.astype(np.float32)
    lex[7] = 0  # no lexical weight at all
    ids = 5 + 2 * rng.permutation(N).astype(np.int64)  # not positions, not sorted
    split = np.where(rng.random(N) < 0.5, "a", "b")
    recs = [ItemRow(id=int(i), path=f"/x/{i}.png", fields={"split": str(s)}) for i, s in zip(ids, split, strict=True)]  # fmt: skip
    q = _unit(rng.standard_normal((9, DIM)))
    ql = np.where(rng.random((9, VOCAB)) < 0.2, rng.random((9, VOCAB)) + 0.1, 0)
    ql = ql.astype(np.float32)
    ql[4] = 0  # a query without lexical weights
    return dict(dense=dense, lex=lex, ids=ids, split=split, recs=recs, q=q, ql=ql)


@pytest.fixture(scope="module")
def hybrid(data, tmp_path_factory):
    db = tmp_path_factory.mktemp("mvh") / "h.db"
    kind = MilvusKind.create(f"milvus://{db}", HYBRID, KindContext(DIM, VOCAB), "lexlens_hybrid")
    for part in np.array_split(np.arange(N), 2):
        kind.add(
            data["ids"][part],
            Vectors(dense=data["dense"][part], sparse=SparseBatch.from_dense(data["lex"][part])),
            records=[data["recs"][i] for i in part],
        )
    yield kind
    kind.close()


def _ranked(scores, ids, width):
    """``(scores, ids)`` of the best ``width`` by (-score, id); ``-inf`` scores are left out."""
    order = np.lexsort((ids, -scores))
    order = order[np.isfinite(scores[order])][:width]
    return scores[order], ids[order]


def _lists(data, r, mask, width):
    """Query ``r``'s exact dense and lexical candidate lists (``width`` long) among ``mask``."""
    ds = np.where(mask, data["dense"] @ data["q"][r], -np.inf)
    ls = data["lex"] @ data["ql"][r]
    ls = np.where(mask & (ls > 0), ls, -np.inf)  # no shared word: unreachable
    return _ranked(ds, data["ids"], width), _ranked(ls, data["ids"], width)


def _rrf_reference(data, k, mask, rrf_k=60):
    out_s, out_i = [], []
    for r in range(len(data["q"])):
        fused: dict[int, float] = {}
        for _, ids in _lists(data, r, mask, max(k, C)):  # candidates: at least k
            for rank, i in enumerate(ids, start=1):
                fused[int(i)] = fused.get(int(i), 0.0) + 1.0 / (rrf_k + rank)
        ids = np.array(list(fused), np.int64)
        s, i = _ranked(np.array([fused[j] for j in ids]), ids, k)
        out_s.append(np.pad(s, (0, k - len(s)), constant_values=-np.inf))
        out_i.append(np.pad(i, (0, k - len(i)), constant_values=-1))
    return np.array(out_s, np.float32), np.array(out_i)


def _rerank_reference(data, k, mask):
    pos = {int(i): p for p, i in enumerate(data["ids"])}
    out_s, out_i = [], []
    for r in range(len(data["q"])):
        _, cand = _lists(data, r, mask, max(k, C))[1]
        s = np.array([data["dense"][pos[int(i)]] @ data["q"][r] for i in cand], np.float64)
        s, i = _ranked(s, cand, k)
        out_s.append(np.pad(s, (0, k - len(s)), constant_values=-np.inf))
        out_i.append(np.pad(i, (0, k - len(i)), constant_values=-1))
    return np.array(out_s, np.float32), np.array(out_i)


def _same(got, want):
    np.testing.assert_array_equal(got[1], want[1])
    live = want[1] >= 0
    np.testing.assert_allclose(got[0][live], want[0][live], rtol=0, atol=1e-5)


def _queries(data, dense=True, sparse=True):
    return Vectors(
        dense=data["q"] if dense else None,
        sparse=SparseBatch.from_dense(data["ql"]) if sparse else None,
    )


def test_each_field_alone_matches_brute_force_and_the_local_kinds(hybrid, data):
    got = hybrid.search(_queries(data, sparse=False), 15)
    _same(got, topk(data["q"] @ data["dense"].T, 15, data["ids"]))
    flat = create_kind(IndexSpec("flat"), KindContext(dim=DIM))
    flat.add(data["ids"], Vectors(dense=data["dense"]))
    _same(got, flat.search(_queries(data, sparse=False), 15))

    lsim = data["ql"] @ data["lex"].T
    want = topk(np.where(lsim > 0, lsim, -np.inf), 15, data["ids"])
    want[1][np.isneginf(want[0])] = -1
    got = hybrid.search(_queries(data, dense=False), 15)
    _same(got, want)
    assert (got[1][4] == -1).all()  # the query without lexical weights matches nothing


def test_sparse_field_equals_the_local_sparse_kind(hybrid, data):
    ensure_builtin_kinds()
    if "sparse" not in KINDS:
        pytest.skip("the local sparse kind (lexlens.index.sparse) is not registered yet")
    local = create_kind(IndexSpec("sparse"), KindContext(vocab_size=VOCAB))
    local.add(data["ids"], Vectors(sparse=SparseBatch.from_dense(data["lex"])))
    for k in (1, 15, N):
        want = local.search(_queries(data, dense=False), k)
        _same(hybrid.search(_queries(data, dense=False), k), want)


@pytest.mark.parametrize("where", [None, "split=a"])
def test_rrf_fusion_is_milvus_hybrid_search_equal_to_naive_rrf(hybrid, data, where):
    mask = np.ones(N, bool) if where is None else data["split"] == "a"
    for k in (1, 10, 2 * C):
        got = hybrid.search(_queries(data), k, where=where)
        _same(got, _rrf_reference(data, k, mask))
    # a query without lexical weights ranks by its dense list alone: 1 / (60 + rank)
    assert got[0][4][0] == pytest.approx(1 / 61, abs=1e-7)


@pytest.mark.parametrize("where", [None, "split=b"])
def test_rerank_fusion_rescores_lexical_candidates_densely(hybrid, data, where):
    mask = np.ones(N, bool) if where is None else data["split"] == "b"
    got = hybrid.search(_queries(data), 10, SearchParams(fusion="rerank"), where=where)
    _same(got, _rerank_reference(data, 10, mask))
    assert (got[1][4] == -1).all()  # no lexical candidates


def test_records_removal_and_reopen_keep_both_fields(hybrid, data, tmp_path):
    at = [0, 1, 2, 3, 7]  # item 7 has no lexical weight (stored as the sentinel)
    some = [int(i) for i in data["ids"][at]]
    assert (
        hybrid.update_records(
            [ItemRow(id=i, path=f"/moved/{i}.png", fields={"split": "c"}) for i in some]
        )
        == 5
    )
    got = hybrid.get(some)
    pos = {int(i): p for p, i in enumerate(data["ids"])}
    for i in some:
        assert got[i]["path"] == f"/moved/{i}.png"
        np.testing.assert_allclose(got[i]["dense"], data["dense"][pos[i]], atol=1e-6)
        lex = data["lex"][pos[i]]
        want = {int(j): float(lex[j]) for j in np.flatnonzero(lex)} or {VOCAB: 1.0}  # sentinel
        stored = {int(j): float(v) for j, v in dict(got[i]["sparse"]).items()}
        assert stored.keys() == want.keys()
        np.testing.assert_allclose([stored[j] for j in want], list(want.values()), rtol=1e-6)
    assert set(hybrid.select_ids("split=c")) == set(some)

    hybrid.save(tmp_path)
    again = MilvusKind.load(tmp_path, {"context": KindContext(DIM, VOCAB), "spec": HYBRID})
    assert again.remove(np.array(some)) == 5
    keep = ~np.isin(data["ids"], some)
    sub = {key: data[key][keep] for key in ("dense", "lex", "ids", "split")}
    _same(
        again.search(_queries(data), 10),
        _rrf_reference({**data, **sub}, 10, np.ones(keep.sum(), bool)),
    )
    again.add(
        data["ids"][at],
        Vectors(dense=data["dense"][at], sparse=SparseBatch.from_dense(data["lex"][at])),
        records=[data["recs"][i] for i in at],
    )
    _same(again.search(_queries(data), 10), _rrf_reference(data, 10, np.ones(N, bool)))


def test_specs():
    hyb = IndexSpec(
        "hybrid",
        options=(("fusion", "rerank"),),
        children=(IndexSpec("sparse"), IndexSpec("hnsw", 16)),
    )
    assert str(wrap_spec(hyb)) == "milvus(sparse,hnsw16;fusion=rerank)"
    ctx = KindContext(DIM, VOCAB)
    bad = [
        IndexSpec("milvus", options=(("fusion", "minmax"),), children=HYBRID.children),
        IndexSpec("milvus", options=(("alpha", 0.5),), children=HYBRID.children),
        IndexSpec("milvus", options=(("candidates", 0),), children=HYBRID.children),
        IndexSpec("milvus", options=(("fusion", "rrf"),), children=(IndexSpec("flat"),)),
        IndexSpec("milvus", children=(IndexSpec("flat"), IndexSpec("hnsw", 8))),
        IndexSpec("milvus", children=(IndexSpec("sparse"), IndexSpec("flat"), IndexSpec("flat"))),
    ]
    for spec in bad:
        with pytest.raises(UsageError):
            MilvusKind.create("milvus://unused.db", spec, ctx, "lexlens_never")
