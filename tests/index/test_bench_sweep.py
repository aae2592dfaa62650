"""``lexlens bench search --sweep``: latency/recall curves with per-call query parameters, and
the sparse-vs-HNSW comparison at equal recall, against naive recomputation."""

from __future__ import annotations

import numpy as np
import pytest

from lexlens.errors import UsageError
from lexlens.eval.bench_search import (
    SYNTHETIC_MODEL,
    BenchSearchConfig,
    bench_search,
    compare_at_recall,
    markdown_table,
    parse_sweep,
    sweep_points,
    synthesize_lexical_gallery,
)
from lexlens.index.spec import parse_spec


def test_parse_sweep_and_which_kinds_take_what() -> None:
    sw = parse_sweep("ef=64,16, 256;budget=0.01,0.002")
    assert sw == {"ef": [16, 64, 256], "budget": [0.002, 0.01]}
    assert parse_sweep(None) == {} and parse_sweep("") == {}
    # the kind's own default (ef=64 for hnsw, budget=1 for sparse) is its default point
    assert sweep_points(parse_spec("hnsw32"), sw) == [("ef", 16), ("ef", 256)]
    assert sweep_points(parse_spec("hnsw32(ef=16)"), sw) == [("ef", 64), ("ef", 256)]
    assert sweep_points(parse_spec("sparse"), sw) == [("budget", 0.002), ("budget", 0.01)]
    assert sweep_points(parse_spec("flat"), sw) == []
    hybrid = sweep_points(parse_spec("hybrid(sparse,hnsw32)"), sw)
    assert ("ef", 64) in hybrid and ("budget", 0.01) in hybrid
    for bad in ("ef", "ef=abc", "foo=1", "budget=2", "ef=0"):
        with pytest.raises(UsageError):
            parse_sweep(bad)


def _row(kind: str, n: int, p50: float, recall: float, curve: list[tuple]) -> dict:
    name = "ef" if kind.startswith("hnsw") else "budget"
    return {
        "kind": kind,
        "n": n,
        "p50_ms": p50,
        "recall@10": recall,
        "curve": [
            {"param": name, "value": v, "p50_ms": p, "p95_ms": p, "recall@10": r}
            for v, p, r in curve
        ],
    }


def test_compare_at_recall_takes_the_smallest_ef_reaching_the_sparse_recall() -> None:
    rows = [
        _row("hnsw32", 100, 0.5, 80.0, [(16, 0.2, 60.0), (256, 1.5, 97.0), (1024, 4.0, 99.0)]),
        _row("sparse", 100, 1.0, 100.0, [(0.01, 0.4, 96.0), (0.002, 0.3, 50.0)]),
        _row("hnsw32", 200, 0.7, 90.0, []),
        _row("flat", 100, 9.0, 100.0, []),
    ]
    comp = {(c["n"], c["budget"]): c for c in compare_at_recall(rows, 10)}
    assert set(comp) == {(100, 1.0), (100, 0.01), (100, 0.002)}
    exact = comp[(100, 1.0)]  # recall 100: never reached; best is ef=1024 at 99
    assert (exact["reached"], exact["ef"], exact["hnsw_p50_ms"], exact["hnsw_recall"]) == (
        False,
        1024,
        4.0,
        99.0,
    )
    assert exact["sparse_faster"]
    mid = comp[(100, 0.01)]  # recall 96: ef=256 (97) is the smallest that reaches it
    assert (mid["reached"], mid["ef"], mid["hnsw_p50_ms"], mid["sparse_faster"]) == (
        True,
        256,
        1.5,
        True,
    )
    low = comp[(100, 0.002)]  # recall 50: ef=16 (60) reaches it, at 0.2 ms < 0.3 ms
    assert (low["ef"], low["sparse_faster"]) == (16, False)


def test_bench_sweep_curves_match_searches_with_the_same_params(tmp_path) -> None:
    from lexlens.eval.exact import exact_search
    from lexlens.eval.metrics import ann_recall_at_k
    from lexlens.index.base import KindContext, SearchParams, Vectors
    from lexlens.index.spec import create_kind

    cfg = BenchSearchConfig(
        model=SYNTHETIC_MODEL,
        sizes=[1500],
        kinds=["flat", "hnsw8", "sparse"],
        queries=20,
        out=str(tmp_path),
        progress=False,
        sweep=parse_sweep("ef=1,4,200;budget=0.001,0.05"),
    )
    res = bench_search(cfg)
    rows = {r["kind"]: r for r in res["rows"]}
    assert rows["flat"]["curve"] == []
    assert [(c["param"], c["value"]) for c in rows["hnsw8"]["curve"]] == [
        ("ef", 1),
        ("ef", 4),
        ("ef", 200),
    ]
    assert [c["value"] for c in rows["sparse"]["curve"]] == [0.001, 0.05]
    # recompute the sparse curve's recalls by hand (the sparse search is deterministic)
    g = synthesize_lexical_gallery(1500, 20, seed=0)
    ctx = KindContext(dim=g.dim, vocab_size=g.sparse.vocab_size)
    items, queries = Vectors(sparse=g.sparse), Vectors(sparse=g.query_sparse)
    exact = exact_search(parse_spec("sparse"), items, queries, 10, ctx)[1]
    kind = create_kind(parse_spec("sparse"), ctx)
    kind.add(np.arange(1500), items)
    for c in rows["sparse"]["curve"]:
        got = kind.search(queries, 10, SearchParams(sparse_budget=c["value"]))[1]
        assert c["recall@10"] == pytest.approx(ann_recall_at_k(got, exact, 10))
    assert rows["sparse"]["recall@10"] == 100.0
    assert rows["sparse"]["curve"][0]["recall@10"] < 100.0
    # a larger efSearch never loses recall on this graph by much, and ef=200 is exact-ish
    assert rows["hnsw8"]["curve"][-1]["recall@10"] >= rows["hnsw8"]["curve"][0]["recall@10"]
    comp = res["comparison"]
    assert len(comp) == 3 and {c["budget"] for c in comp} == {1.0, 0.001, 0.05}
    for c in comp:
        pts = [(rows["hnsw8"]["p50_ms"], rows["hnsw8"]["recall@10"], 64)] + [
            (x["p50_ms"], x["recall@10"], x["value"]) for x in rows["hnsw8"]["curve"]
        ]
        ok = sorted((p for p in pts if p[1] >= c["sparse_recall"]), key=lambda p: p[2])
        if ok:
            assert (c["ef"], c["hnsw_p50_ms"]) == (ok[0][2], ok[0][0])
        else:
            assert not c["reached"] and c["hnsw_recall"] == max(p[1] for p in pts)
    text = markdown_table(res)
    assert "Latency/recall curves" in text and "smallest ef reaching it" in text
    assert (tmp_path / "bench_search.png").is_file()
