"""Dense and sparse vectors in one Milvus (Lite) collection: ``milvus(sparse,flat)``.

Each field alone gives the results of brute force and of the local ``flat`` / ``sparse``
kinds; fused queries (rerank, RRF, min-max, and RRF inside Milvus's ``hybrid_search``) give
naive reference implementations and the local ``hybrid`` kind's results; filters apply to
both fields; records, removal and reopening keep both vectors."""

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
CHILDREN = (IndexSpec("sparse"), IndexSpec("flat"))
HYBRID = IndexSpec("milvus", options=(("candidates", C),), children=CHILDREN)
NATIVE = IndexSpec(
    "milvus",
    options=(("candidates", C), ("fusion", "rrf"), ("native", True)),
    children=CHILDREN,
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


def _fill(kind, data):
    for part in np.array_split(np.arange(N), 2):
        kind.add(
            data["ids"][part],
            Vectors(dense=data["dense"][part], sparse=SparseBatch.from_dense(data["lex"][part])),
            records=[data["recs"][i] for i in part],
        )
    return kind


@pytest.fixture(scope="module")
def kinds(data, tmp_path_factory):
    db = tmp_path_factory.mktemp("mvh") / "h.db"
    ctx = KindContext(DIM, VOCAB)
    made = [
        _fill(MilvusKind.create(f"milvus://{db}", spec, ctx, name), data)
        for spec, name in ((HYBRID, "lexlens_hybrid"), (NATIVE, "lexlens_native"))
    ]
    yield made
    for kind in made:
        kind.close()


@pytest.fixture(scope="module")
def hybrid(kinds):
    return kinds[0]


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


def _pad(rows, k):
    s = [np.pad(x, (0, k - len(x)), constant_values=-np.inf) for x, _ in rows]
    i = [np.pad(y, (0, k - len(y)), constant_values=-1) for _, y in rows]
    return np.array(s, np.float32), np.array(i, np.int64)


def _fused_reference(data, k, mask, contribution):
    """Sum ``contribution(rank, score, list_no, list)`` per id over the two candidate lists."""
    rows = []
    for r in range(len(data["q"])):
        fused: dict[int, float] = {}
        dense_list, lexical_list = _lists(data, r, mask, max(k, C))  # candidates: at least k
        for no, (scores, ids) in enumerate((lexical_list, dense_list)):
            for rank, (sc, i) in enumerate(zip(scores, ids, strict=True), start=1):
                fused[int(i)] = fused.get(int(i), 0.0) + contribution(rank, sc, no, scores)
        ids = np.array(list(fused), np.int64)
        rows.append(_ranked(np.array([fused[j] for j in ids]), ids, k))
    return _pad(rows, k)


def _rrf_reference(data, k, mask, rrf_k=60):
    return _fused_reference(data, k, mask, lambda rank, sc, no, lst: 1.0 / (rrf_k + rank))


def _minmax_reference(data, k, mask, alpha):
    def part(rank, sc, no, lst):
        lo, hi = float(np.min(lst)), float(np.max(lst))
        norm = (sc - lo) / (hi - lo) if hi > lo else 1.0
        return (alpha if no == 1 else 1.0 - alpha) * norm

    return _fused_reference(data, k, mask, part)


def _rerank_reference(data, k, mask):
    """Lexical candidates (plus the dense top k when fewer than k) scored densely."""
    pos = {int(i): p for p, i in enumerate(data["ids"])}
    rows = []
    for r in range(len(data["q"])):
        (_, dense_top), (_, cand) = _lists(data, r, mask, max(k, C))
        cand = list(cand)
        if len(cand) < k:
            cand += [i for i in dense_top[:k] if i not in cand]
        cand = np.array(cand, np.int64)
        s = np.array([data["dense"][pos[int(i)]] @ data["q"][r] for i in cand], np.float64)
        rows.append(_ranked(s, cand, k))
    return _pad(rows, k)


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
def test_rrf_fusion_equals_naive_rrf_client_side_and_inside_milvus(kinds, data, where):
    mask = np.ones(N, bool) if where is None else data["split"] == "a"
    hybrid, native = kinds
    for k in (1, 10, 2 * C):
        want = _rrf_reference(data, k, mask)
        _same(hybrid.search(_queries(data), k, SearchParams(fusion="rrf"), where=where), want)
        got = native.search(_queries(data), k, where=where)  # Milvus hybrid_search + RRFRanker
        _same(got, want)
    # a query without lexical weights ranks by its dense list alone: 1 / (60 + rank)
    assert got[0][4][0] == pytest.approx(1 / 61, abs=1e-7)


@pytest.mark.parametrize("where", [None, "split=b"])
def test_rerank_and_minmax_fusions_equal_naive_references(hybrid, data, where):
    mask = np.ones(N, bool) if where is None else data["split"] == "b"
    for k in (3, 10):
        got = hybrid.search(_queries(data), k, where=where)  # rerank: the default
        _same(got, _rerank_reference(data, k, mask))
        for alpha in (0.5, 0.8):
            got = hybrid.search(
                _queries(data), k, SearchParams(fusion="minmax", alpha=alpha), where=where
            )
            _same(got, _minmax_reference(data, k, mask, alpha))


def test_fusions_equal_the_local_hybrid_kind(hybrid, data):
    ensure_builtin_kinds()
    if "hybrid" not in KINDS or "sparse" not in KINDS:
        pytest.skip("the local sparse / hybrid kinds are not registered")
    local = create_kind(
        IndexSpec("hybrid", options=(("candidates", C),), children=CHILDREN),
        KindContext(DIM, VOCAB),
    )
    local.add(data["ids"], Vectors(dense=data["dense"], sparse=SparseBatch.from_dense(data["lex"])))
    for fusion in ("rerank", "rrf", "minmax"):
        for k in (1, 10, 2 * C):
            p = SearchParams(fusion=fusion, alpha=0.7)
            _same(hybrid.search(_queries(data), k, p), local.search(_queries(data), k, p))
            # raw embeddings (no words) are answered the same way
            dense_only = _queries(data, sparse=False)
            _same(hybrid.search(dense_only, k, p), local.search(dense_only, k, p))


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
        _rerank_reference({**data, **sub}, 10, np.ones(keep.sum(), bool)),
    )
    again.add(
        data["ids"][at],
        Vectors(dense=data["dense"][at], sparse=SparseBatch.from_dense(data["lex"][at])),
        records=[data["recs"][i] for i in at],
    )
    _same(again.search(_queries(data), 10), _rerank_reference(data, 10, np.ones(N, bool)))


def test_specs():
    hyb = IndexSpec(
        "hybrid",
        options=(("fusion", "rerank"),),
        children=(IndexSpec("sparse"), IndexSpec("hnsw", 16)),
    )
    assert str(wrap_spec(hyb)) == "milvus(sparse,hnsw16;fusion=rerank)"
    ctx = KindContext(DIM, VOCAB)
    bad = [
        IndexSpec("milvus", options=(("fusion", "max"),), children=CHILDREN),
        IndexSpec("milvus", options=(("alpha", 1.5),), children=CHILDREN),
        IndexSpec("milvus", options=(("budget", 0.5),), children=CHILDREN),
        IndexSpec("milvus", options=(("candidates", 0),), children=CHILDREN),
        IndexSpec("milvus", options=(("rrf_k", -1),), children=CHILDREN),
        IndexSpec("milvus", options=(("native", True),), children=CHILDREN),  # rerank
        IndexSpec("milvus", options=(("fusion", "rrf"),), children=(IndexSpec("flat"),)),
        IndexSpec("milvus", children=(IndexSpec("flat"), IndexSpec("hnsw", 8))),
        IndexSpec("milvus", children=(*CHILDREN, IndexSpec("flat"))),
    ]
    for spec in bad:
        with pytest.raises(UsageError):
            MilvusKind.create("milvus://unused.db", spec, ctx, "lexlens_never")


def test_index_with_a_hybrid_spec_on_milvus_equals_the_local_index(tmp_path):
    """``Index.build(..., spec="hybrid(...)", backend=...)`` records ``milvus(sparse,flat;...)``
    and answers image, item and raw-embedding queries like the local index with every fusion,
    also after an add and a remove. (Filters differ by design for fused lists: Milvus filters
    inside each field's search, the local engine filters the fused list; both are tested
    against their references above and in tests/index.)"""
    from scale_fakes import FakeEncoder, write_images

    from lexlens.index.index import Index
    from lexlens.index.ingest import SourceItem
    from lexlens.search import Query

    ensure_builtin_kinds()
    if "hybrid" not in KINDS or "sparse" not in KINDS:
        pytest.skip("the local sparse / hybrid kinds are not registered")
    paths = write_images(tmp_path / "imgs", 40, seed=3)
    items = [SourceItem(str(p), fields={"split": "ab"[i % 2], "n": i % 5}) for i, p in enumerate(paths)]  # fmt: skip
    spec = "hybrid(sparse,flat;candidates=6)"
    common = dict(spec=spec, progress=False, workers=0)
    local = Index.build(items[:30], FakeEncoder(), tmp_path / "local", **common)
    milvus = Index.build(items[:30], FakeEncoder(), tmp_path / "mv", backend="milvus", **common)
    assert milvus.info()["spec"] == "milvus(sparse,flat;candidates=6)"
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((2, FakeEncoder.dim)).astype(np.float32)

    def check(n_items):
        queries = [Query(image=str(paths[i])) for i in (0, 7, 33)]
        queries += [Query(item=5), *(Query(embedding=e) for e in emb)]
        for fusion in ("rerank", "rrf", "minmax"):
            p = SearchParams(fusion=fusion)
            want = local.search(queries, k=8, params=p)
            got = milvus.search(queries, k=8, params=p)
            np.testing.assert_array_equal(got.ids, want.ids, err_msg=fusion)
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        got = milvus.search(queries, k=8, where="n>=3 AND split!=b")
        rows = milvus.rows(got.ids[got.ids >= 0])
        assert rows and all(r.fields["n"] >= 3 and r.fields["split"] == "a" for r in rows.values())
        assert len(milvus) == len(local) == n_items

    check(30)
    for idx in (local, milvus):
        idx.add(items[30:], progress=False, workers=0)
        idx.remove([str(paths[2]), str(paths[31])])
    check(38)


def test_default_fusion_options_are_the_local_kinds() -> None:
    """Without options, milvus(sparse,DENSE) answers like hybrid(sparse,DENSE): same defaults."""
    from lexlens.index.hybrid import DEFAULT_CANDIDATES
    from lexlens.scale.milvus import MilvusKind

    opts = MilvusKind._fusion_options(IndexSpec("milvus", children=CHILDREN))
    assert opts["candidates"] == DEFAULT_CANDIDATES and opts["fusion"] == "rerank"
