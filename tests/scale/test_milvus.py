"""The Milvus backend on Milvus Lite against brute force and the local backend: dense and
sparse search, ties, ``where`` filters with the local (SQLite) semantics, add / remove,
reopen from the pointer file."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("pymilvus")

from lexlens.errors import UsageError  # noqa: E402
from lexlens.index.base import KindContext, SearchParams, Vectors  # noqa: E402
from lexlens.index.filters import parse_where, where_sql  # noqa: E402
from lexlens.index.spec import IndexSpec, create_kind, parse_spec  # noqa: E402
from lexlens.index.store import ItemRow, MetaDB  # noqa: E402
from lexlens.models.base import SparseBatch  # noqa: E402
from lexlens.results import topk  # noqa: E402
from lexlens.scale.milvus import MilvusKind, parse_backend, where_to_filter  # noqa: E402

DIM, VOCAB, N = 16, 40, 300


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _records(rng, n):
    """Item rows with mixed-type user fields, nested fields, missing fields and columns."""
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    rows = []
    for i in range(n):
        f = {"split": pick(["train", "val", "3"])}
        if rng.random() < 0.8:
            f["n"] = pick([0, 1, 2, 3, True, False, 1.5, "1", None])
        if rng.random() < 0.7:
            f["scene"] = {"kind": pick(["one", "two"]), "flag": bool(rng.random() < 0.5)}
        if rng.random() < 0.3:
            f["tags"] = ["a", "b"]
        rows.append(
            ItemRow(
                id=1000 + 3 * i,
                path=f"/data/img-{i:04d}.png",
                text=pick([None, "hello", "a red circle"]),
                size=pick([None, 1, 0, 120, 4096]),
                mtime=pick([None, 1.0, 5.25, 9.5]),
                fields=f,
            )
        )
    return rows


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    dense = _unit(rng.standard_normal((N, DIM)))
    dense[100:125] = dense[99]  # a run of 26 identical vectors (ties)
    lex = np.where(rng.random((N, VOCAB)) < 0.1, rng.integers(1, 5, (N, VOCAB)), 0).astype(
        np.float32
    )
    lex[5] = 0  # an item without any lexical weight
    recs = _records(rng, N)
    ids = np.array([r.id for r in recs], np.int64)
    return dict(dense=dense, lex=lex, ids=ids, recs=recs, order=rng.permutation(N))


def _fill(kind, data, sparse):
    for part in np.array_split(data["order"], 3):  # several adds, shuffled insertion order
        vec = (
            Vectors(sparse=SparseBatch.from_dense(data["lex"][part]))
            if sparse
            else Vectors(dense=data["dense"][part])
        )
        kind.add(data["ids"][part], vec, records=[data["recs"][i] for i in part])


@pytest.fixture(scope="module")
def milvus(data, tmp_path_factory):
    db = tmp_path_factory.mktemp("mv") / "lexlens.db"
    dense = MilvusKind.create(f"milvus://{db}", "flat", KindContext(dim=DIM), "lexlens_dense")
    sparse = MilvusKind.create(
        f"milvus://{db}", IndexSpec("sparse"), KindContext(vocab_size=VOCAB), "lexlens_sparse"
    )
    _fill(dense, data, False)
    _fill(sparse, data, True)
    yield dense, sparse
    dense.close()
    sparse.close()


def _assert_same(got, want):
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5)


def test_dense_and_sparse_match_brute_force_and_the_local_backend(milvus, data):
    dense, sparse = milvus
    rng = np.random.default_rng(1)
    q = _unit(rng.standard_normal((20, DIM)))
    q[0] = data["dense"][99]  # hits the tie run: the lowest ids must win the cut at k
    sim = q @ data["dense"].T
    local = create_kind(parse_spec("flat"), KindContext(dim=DIM))
    local.add(data["ids"], Vectors(dense=data["dense"]))
    for k in (1, 10, 40):
        got = dense.search(Vectors(dense=q), k)
        _assert_same(got, topk(sim, k, data["ids"]))
        _assert_same(got, local.search(Vectors(dense=q), k))
    assert dense.ntotal == N
    _, i = dense.search(Vectors(dense=q[:1]), 5)
    np.testing.assert_array_equal(i[0], data["ids"][99:104])
    # per-call parameters are accepted and do not change exact (FLAT) results
    _assert_same(
        dense.search(Vectors(dense=q), 10, SearchParams(nprobe=4, ef_search=16)),
        local.search(Vectors(dense=q), 10),
    )

    # sparse (lexical) queries: exact inner product; only items sharing a word come back
    ql = np.where(rng.random((15, VOCAB)) < 0.15, rng.random((15, VOCAB)), 0).astype(np.float32)
    ql[3] = 0
    lsim = ql @ data["lex"].T
    want = topk(np.where(lsim > 0, lsim, -np.inf), 12, data["ids"])
    want[1][np.isneginf(want[0])] = -1
    got = sparse.search(Vectors(sparse=SparseBatch.from_dense(ql)), 12)
    _assert_same(got, want)
    assert (got[1][3] == -1).all() and data["ids"][5] not in got[1]  # item 5 has no words


ATOMS = [
    "split=train", "split!=val", "split=3", "n=1", "n!=1", "n=0", "n=true", "n!=false",
    "n>0", "n<=1.5", "n>=2", "n='1'", "n=abc", "scene.kind=two", "scene.kind!=one",
    "scene.flag=true", "scene.flag!=true", "tags=a", "tags!=a", "nothing=1", "nothing!=1",
    "id>1400", "id=true", "id!=1003", "id=abc", "path=/data/img-0003.png",
    "path!=/data/img-0003.png", "path=5", "text=hello", "text!='a red circle'", "text=1",
    "size>100", "size=1", "size=true", "size!=0", "mtime<5.5", "mtime=true", "mtime!=1",
]  # fmt: skip


def test_where_filters_match_the_local_sqlite_filters(milvus, data, tmp_path):
    dense, _ = milvus
    db = MetaDB(tmp_path / "meta.sqlite", writable=True)
    db.insert(data["recs"])
    db.commit()
    db = MetaDB(tmp_path / "meta.sqlite")
    rng = np.random.default_rng(3)
    pairs = [" AND ".join(p) for p in itertools.combinations(ATOMS, 2)]
    exprs = ATOMS + [pairs[i] for i in rng.choice(len(pairs), 60, replace=False)]
    for expr in exprs:
        want = db.select_ids(*where_sql(parse_where(expr)))
        np.testing.assert_array_equal(
            dense.select_ids(expr), want, err_msg=f"{expr} -> {where_to_filter(expr)}"
        )
    assert len(dense.select_ids("n=1")) > 0 and len(dense.select_ids("n=true")) > 0  # both occur

    # search with a filter = brute force over the admitted items
    q = _unit(rng.standard_normal((5, DIM)))
    for expr in ("split=val AND n>=1", "scene.flag=true", "path=/data/img-0007.png"):
        ok = np.isin(data["ids"], db.select_ids(*where_sql(parse_where(expr))))
        want = topk((q @ data["dense"].T)[:, ok], 10, data["ids"][ok])
        _assert_same(dense.search(Vectors(dense=q), 10, where=expr), want)


def test_remove_add_and_reopen(milvus, data, tmp_path):
    dense, _ = milvus
    rng = np.random.default_rng(2)
    gone = data["ids"][rng.choice(N, 40, replace=False)]
    assert dense.remove(np.concatenate([gone, [-5, 10**9]])) == 40
    assert dense.remove(gone) == 0
    assert dense.ntotal == N - 40
    keep = ~np.isin(data["ids"], gone)
    q = _unit(rng.standard_normal((10, DIM)))
    sim = q @ data["dense"].T
    _assert_same(dense.search(Vectors(dense=q), 15), topk(sim[:, keep], 15, data["ids"][keep]))

    # re-adding a removed item brings it back with its vectors and record
    j = int(np.flatnonzero(~keep)[0])
    dense.add(
        data["ids"][j : j + 1], Vectors(dense=data["dense"][j : j + 1]), records=[data["recs"][j]]
    )
    keep[j] = True
    _assert_same(dense.search(Vectors(dense=q), 15), topk(sim[:, keep], 15, data["ids"][keep]))
    assert dense.get([data["ids"][j]])[int(data["ids"][j])]["path"] == data["recs"][j].path

    # the pointer file reopens the same collection
    assert dense.save(tmp_path) == ["milvus.json"]
    again = MilvusKind.load(
        tmp_path, {"context": KindContext(dim=DIM), "spec": parse_spec("milvus(flat)")}
    )
    assert again.ntotal == N - 39
    _assert_same(again.search(Vectors(dense=q), 15), topk(sim[:, keep], 15, data["ids"][keep]))

    with pytest.raises(UsageError, match="dimension"):
        dense.add(np.array([1]), Vectors(dense=np.zeros((1, 3), np.float32)))
    with pytest.raises(UsageError, match="--backend"):
        create_kind(parse_spec("milvus(flat)"), KindContext(dim=DIM))


def test_backend_strings():
    assert parse_backend("milvus://http://host:19530").uri == "http://host:19530"
    lite = parse_backend("milvus://rel/x.db")
    assert lite.lite and lite.uri.endswith("/rel/x.db") and lite.uri.startswith("/")
    assert parse_backend("milvus", default_lite="/tmp/d.db").uri == "/tmp/d.db"
    for bad in ("faiss://x", "milvus://x.txt", "milvus://"):
        with pytest.raises(UsageError):
            parse_backend(bad)


def test_a_milvus_build_with_decoding_workers_prints_no_grpc_fork_line(tmp_path):
    """Image decoders are forked while the Milvus client is open; gRPC printed a "skipping
    fork() handlers" line at every such build."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}

    def lexlens(*argv: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "lexlens", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    assert lexlens("data", "scenes", str(tmp_path / "ds"), "--n", "80").returncode == 0
    run = lexlens(
        "index", "build", str(tmp_path / "ds"), "--model", "native:scenes-mini", "--spec", "flat",
        "--out", str(tmp_path / "idx"), "--backend", "milvus", "--workers", "2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "fork" not in run.stderr, run.stderr
