"""Seismic (PyPI ``pyseismic-lsr``) against lexlens's ``sparse`` kind on the same vectors.

The evaluation that decided the engine of the ``sparse`` index kind (issue 6, item 5):
both indexes are built over ``synthetic:lexical`` items (lexlens.eval.bench_search), and
each is asked the same queries one at a time. Reported per engine and setting: build time,
bytes on disk, p50 latency and recall@10 against the exact sparse top 10.

Seismic is not a lexlens dependency: ``pip install pyseismic-lsr`` first.

    python benchmarks/seismic_compare.py --n 100000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lexlens.eval.bench_search import synthesize_lexical_gallery
from lexlens.index.base import KindContext, SearchParams, Vectors
from lexlens.index.spec import create_kind, parse_spec
from lexlens.models.base import SparseBatch


def _exact(queries: SparseBatch, items: SparseBatch, k: int) -> np.ndarray:
    """The exact top ``k`` (lexlens's exact mode, tested equal to brute force)."""
    kind = create_kind(parse_spec("sparse"), KindContext(vocab_size=items.vocab_size))
    kind.add(np.arange(len(items)), Vectors(sparse=items))
    return kind.search(Vectors(sparse=queries), k)[1]


def _recall(got: list[list[int]], exact: np.ndarray) -> float:
    per = []
    for g, e in zip(got, exact, strict=True):
        want = {int(x) for x in e if x >= 0}
        if want:
            per.append(len(want & set(g)) / len(want))
    return float(np.mean(per))


def run_seismic(items: SparseBatch, queries: SparseBatch, exact: np.ndarray, k: int) -> list:
    import seismic

    rows = []
    for n_postings in (1000, 3500):
        t = time.perf_counter()
        ds = seismic.SeismicDataset()
        ds.add_documents_by_id(
            [str(i) for i in range(len(items))],
            np.asarray(items.indices, np.int64),
            np.asarray(items.values, np.float32),
            np.asarray(items.indptr, np.int64),
        )
        index = seismic.SeismicIndex.build_from_dataset(ds, n_postings=n_postings, num_threads=1)
        build = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            index.save(str(Path(tmp) / "idx"))
            disk = sum(p.stat().st_size for p in Path(tmp).iterdir())
        st = seismic.get_seismic_string()
        qs = [
            (np.array([str(w) for w in queries.row(r)[0]], dtype=st), queries.row(r)[1])
            for r in range(len(queries))
        ]
        for heap_factor in (0.7, 0.9):
            lat, got = [], []
            for r, (words, vals) in enumerate(qs):
                t = time.perf_counter()
                res = index.search(str(r), words, vals, k=k, query_cut=10, heap_factor=heap_factor)
                lat.append(time.perf_counter() - t)
                got.append([int(x[2]) for x in res])
            rows.append(
                {
                    "engine": f"seismic(n_postings={n_postings},heap_factor={heap_factor})",
                    "build_s": build,
                    "bytes_per_item": disk / len(items),
                    "p50_ms": float(np.median(lat) * 1e3),
                    "recall": _recall(got, exact),
                }
            )
    return rows


def run_lexlens(items: SparseBatch, queries: SparseBatch, exact: np.ndarray, k: int) -> list:
    rows = []
    t = time.perf_counter()
    kind = create_kind(parse_spec("sparse"), KindContext(vocab_size=items.vocab_size))
    kind.add(np.arange(len(items)), Vectors(sparse=items))
    build = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        kind.save(Path(tmp))
        disk = sum(p.stat().st_size for p in Path(tmp).iterdir())
    singles = [
        Vectors(
            sparse=SparseBatch(
                np.array([0, len(queries.row(r)[0])]), *queries.row(r), queries.vocab_size
            )
        )
        for r in range(len(queries))
    ]
    for budget in (1.0, 0.005, 0.002):
        p = SearchParams(sparse_budget=budget)
        lat, got = [], []
        for q in singles:
            t = time.perf_counter()
            _, ids = kind.search(q, k, p)
            lat.append(time.perf_counter() - t)
            got.append([int(x) for x in ids[0] if x >= 0])
        rows.append(
            {
                "engine": f"lexlens sparse(budget={budget})",
                "build_s": build,
                "bytes_per_item": disk / len(items),
                "p50_ms": float(np.median(lat) * 1e3),
                "recall": _recall(got, exact),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", help="write the rows as JSON here")
    a = ap.parse_args()
    g = synthesize_lexical_gallery(a.n, a.queries, dim=8, seed=0)
    exact = _exact(g.query_sparse, g.sparse, 10)
    rows = run_lexlens(g.sparse, g.query_sparse, exact, 10)
    try:
        rows += run_seismic(g.sparse, g.query_sparse, exact, 10)
    except ModuleNotFoundError:
        print("seismic is not installed (pip install pyseismic-lsr); lexlens only")
    for r in rows:
        print(
            f"{r['engine']:<45} build {r['build_s']:6.1f}s  {r['bytes_per_item']:6.1f} B/item  "
            f"p50 {r['p50_ms']:7.3f} ms  recall@10 {r['recall']:.3f}"
        )
    if a.out:
        Path(a.out).write_text(json.dumps({"n": a.n, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
