"""bench search on tiny collections: rows, recall vs a numpy brute force, synthesis, memory guard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lexlens.errors import UsageError
from lexlens.eval import bench_search as B
from lexlens.index.base import KindContext, SearchParams, Vectors
from lexlens.index.spec import create_kind, parse_spec
from lexlens.models.base import SparseBatch, l2_normalize


def clustered(n: int, dim: int, rng: np.random.Generator, centres: int = 20) -> np.ndarray:
    c = rng.standard_normal((centres, dim))
    return l2_normalize(c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, dim)))


def make_gallery(n: int = 500, dim: int = 16, nq: int = 40, seed: int = 0) -> B.Gallery:
    rng = np.random.default_rng(seed)
    return B.Gallery(
        dense=clustered(n, dim, rng),
        sparse=None,
        query_dense=clustered(nq, dim, rng),
        query_sparse=None,
        source="test vectors",
    )


def numpy_top10(q: np.ndarray, x: np.ndarray) -> list[set[int]]:
    sim = q @ x.T
    return [set(np.argsort(-row, kind="stable")[:10].tolist()) for row in sim]


def test_split_kinds_joins_ivf_with_its_encoding():
    assert B.split_kinds("flat,hnsw32,ivf64,pq8,pq8") == ["flat", "hnsw32", "ivf64,pq8", "pq8"]
    assert B.split_kinds("ivf64,flat;flat") == ["ivf64,flat", "flat"]
    assert B.split_kinds("hnsw16(ef=32),sq8") == ["hnsw16(ef=32)", "sq8"]
    with pytest.raises(UsageError):
        B.split_kinds("flat,nosuch")
    with pytest.raises(UsageError):
        B.split_kinds(" , ")


def test_bench_rows_and_recall_against_numpy(tmp_path):
    g = make_gallery()
    cfg = B.BenchSearchConfig(
        model="test",
        sizes=[300, 800],
        kinds=["flat", "hnsw8(ef=16)", "pq4"],
        queries=30,
        out=str(tmp_path / "out"),
        progress=False,
    )
    res = B.bench_search(cfg, gallery=g)
    rows = res["rows"]
    assert [(r["n"], r["kind"]) for r in rows] == [
        (n, k) for n in (300, 800) for k in ("flat", "hnsw8(ef=16)", "pq4")
    ]
    for r in rows:
        assert r["build_s"] >= 0 and r["disk_bytes"] > 0 and r["qps"] > 0
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        if r["kind"] == "flat":
            assert r["recall@10"] == 100.0
    # recall of the approximate kinds = a numpy brute-force recomputation
    q = g.query_dense[:30]
    items, info = B.gallery_of_size(g, 800, cfg.seed + 800, False)
    assert info == {
        "encoded": 500,
        "synthetic": 300,
        "dense_noise_sigma": pytest.approx(info["dense_noise_sigma"]),
    }
    truth = numpy_top10(q, items.dense)
    for r in rows:
        if r["n"] != 800 or r["kind"] == "flat":
            continue
        kind = create_kind(parse_spec(r["kind"]), KindContext(dim=16))
        kind.add(np.arange(800), items)
        _, ids = kind.search(Vectors(dense=q), 10, SearchParams())
        expected = 100 * np.mean(
            [len(set(i.tolist()) & t) / 10 for i, t in zip(ids, truth, strict=True)]
        )
        assert r["recall@10"] == pytest.approx(expected)
    pq = next(r for r in rows if r["n"] == 800 and r["kind"] == "pq4")
    flat = next(r for r in rows if r["n"] == 800 and r["kind"] == "flat")
    assert pq["memory_bytes"] < flat["memory_bytes"]
    out = tmp_path / "out"
    assert json.loads((out / "bench_search.json").read_text())["rows"] == json.loads(
        json.dumps(rows)
    )
    md = (out / "bench_search.md").read_text()
    assert md.count("\n| ") == len(rows) + 0 and "300 synthetic" in md
    assert (out / "bench_search.png").stat().st_size > 1000


def test_memory_guard_fails_up_front_in_one_line():
    g = make_gallery()
    cfg = B.BenchSearchConfig(model="test", sizes=[1000, 10**7], kinds=["flat"], max_memory=2**30)
    with pytest.raises(UsageError) as e:
        B.bench_search(cfg, gallery=g)
    msg = str(e.value)
    assert "N=10,000,000" in msg and "--max-memory" in msg and "\n" not in msg


def test_estimates_grow_with_n_and_compressed_kinds_are_smaller():
    for spec in ("flat", "hnsw32", "ivf1024,pq16", "pq16", "sq8"):
        s = parse_spec(spec)
        assert B.estimate_index_bytes(s, 10**6, 128, 0) > B.estimate_index_bytes(s, 10**4, 128, 0)
    flat = B.estimate_index_bytes(parse_spec("flat"), 10**6, 128, 0)
    assert B.estimate_index_bytes(parse_spec("pq16"), 10**6, 128, 0) < flat / 4
    assert B.available_memory() > 0


def test_synthetic_dense_stays_near_its_parent():
    rng = np.random.default_rng(1)
    base = clustered(400, 32, rng)
    parents = rng.integers(0, 400, 1000)
    syn, sigma = B.synthesize_dense(base, 1000, rng, parents)
    assert syn.shape == (1000, 32) and sigma > 0
    assert np.allclose(np.linalg.norm(syn, axis=1), 1, atol=1e-5)
    cos_parent = np.einsum("nd,nd->n", syn, base[parents])
    cos_other = np.einsum("nd,nd->n", syn, base[rng.integers(0, 400, 1000)])
    assert cos_parent.mean() > 0.8 and cos_parent.mean() > cos_other.mean() + 0.2


def test_synthetic_sparse_is_valid_csr_with_similar_statistics():
    rng = np.random.default_rng(2)
    dense = rng.random((300, 50)).astype(np.float32)
    dense[dense < 0.85] = 0
    base = SparseBatch.from_dense(dense)
    parents = rng.integers(0, 300, 2000)
    syn = B.synthesize_sparse(base, 2000, rng, parents)
    assert len(syn) == 2000 and syn.indptr[-1] == len(syn.indices) == len(syn.values)
    for r in range(0, 2000, 97):
        idx, val = syn.row(r)
        assert np.all(np.diff(idx) > 0) and np.all(val > 0) and idx.max() < 50
    base_nnz = base.indptr[-1] / len(base)
    syn_nnz = syn.indptr[-1] / len(syn)
    assert abs(syn_nnz - (0.9 * base_nnz + 1)) < 0.15 * base_nnz
    # most of a synthetic row's terms come from its parent
    own = [
        len(np.intersect1d(syn.row(r)[0], base.row(parents[r])[0])) / max(1, len(syn.row(r)[0]))
        for r in range(200)
    ]
    assert np.mean(own) > 0.8


@pytest.mark.parametrize("model", ["synthetic:nosuch", "nosuch:model"])
def test_unknown_model_error_lists_synthetic_lexical(tmp_path, capsys, model):
    from lexlens.cli import main

    cfg = B.BenchSearchConfig(model=model, sizes=[100], kinds=["flat"], progress=False)
    with pytest.raises(UsageError, match="unknown model spec") as e:
        B.bench_search(cfg)
    assert B.SYNTHETIC_MODEL in str(e.value) and "native:" in str(e.value)
    argv = ["bench", "search", "--model", model, "--sizes", "100", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert f"{B.SYNTHETIC_MODEL} or a saved lexlens model dir" in capsys.readouterr().err
