"""Measurements behind docs/scale.md: Milvus Lite insert/search rates, Ray encode throughput.

    .venv/bin/python benchmarks/scale_bench.py milvus --n 100000 --dim 512 --out milvus.json
    .venv/bin/python benchmarks/scale_bench.py kinds --n 100000 --dim 512 --out kinds.json
    .venv/bin/python benchmarks/scale_bench.py ray --model native:scenes-mini --images DIR \\
        --workers 2 --out ray.json

``milvus``: random unit vectors inserted into a Milvus Lite collection (FLAT and HNSW) through
:class:`lexlens.scale.milvus.MilvusKind`; rows/s for inserts, single-query and batched QPS,
recall@10 of HNSW against exact search, and the same queries on the local flat kind.

``kinds``: the local index kinds (``flat``, ``hnsw32``, ``ivf1024,pq64``, ...) through the
``lexlens bench search`` library on a synthetic clustered gallery: bytes per item, latency,
QPS, recall@10 -- the per-shard figures the scale plan multiplies.

``ray``: the same image files encoded by the local path (one process, all cores) and by
:func:`lexlens.scale.ray_encode.encode_with_ray` with ``--workers`` actors; images/s of each
and the per-stage timings of the Ray run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bench_milvus", "bench_kinds", "bench_ray", "clustered_gallery", "main"]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _qps(search, queries: np.ndarray, batch: int) -> float:
    t = time.perf_counter()
    for a in range(0, len(queries), batch):
        search(queries[a : a + batch])
    return len(queries) / (time.perf_counter() - t)


def bench_milvus(n: int, dim: int, n_queries: int, seed: int = 0) -> dict:
    """Milvus Lite FLAT and HNSW vs the local flat kind on ``n`` random ``dim``-d vectors."""
    from lexlens.index.base import KindContext, Vectors
    from lexlens.index.spec import create_kind, parse_spec
    from lexlens.results import topk
    from lexlens.scale.milvus import MilvusKind

    rng = np.random.default_rng(seed)
    x = _unit(rng.standard_normal((n, dim)))
    q = _unit(rng.standard_normal((n_queries, dim)))
    ids = np.arange(n, dtype=np.int64)
    exact = topk(q @ x.T, 10)[1]
    out: dict = {"n": n, "dim": dim, "n_queries": n_queries}
    ctx = KindContext(dim=dim)

    local = create_kind(parse_spec("flat"), ctx)
    t = time.perf_counter()
    local.add(ids, Vectors(dense=x))
    out["local_flat"] = {
        "add_rows_per_s": n / (time.perf_counter() - t),
        "qps_1": _qps(lambda b: local.search(Vectors(dense=b), 10), q, 1),
        "qps_batch64": _qps(lambda b: local.search(Vectors(dense=b), 10), q, 64),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for spec in ("flat", "hnsw16(efc=100,ef=64)"):
            kind = MilvusKind.create(
                f"milvus://{tmp}/bench.db", parse_spec(spec), ctx, f"bench_{spec[:4]}"
            )
            t = time.perf_counter()
            kind.add(ids, Vectors(dense=x))
            add_s = time.perf_counter() - t
            t = time.perf_counter()
            kind.save(Path(tmp))  # flush: Milvus Lite seals the segment and builds the index
            flush_s = time.perf_counter() - t
            got = kind.search(Vectors(dense=q), 10)[1]
            recall = float(
                np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact, strict=True)])
            )
            out[f"milvus_lite_{spec.split('(')[0]}"] = {
                "insert_rows_per_s": n / add_s,
                "flush_s": flush_s,
                "qps_1": _qps(lambda b, kind=kind: kind.search(Vectors(dense=b), 10), q, 1),
                "qps_batch64": _qps(lambda b, kind=kind: kind.search(Vectors(dense=b), 10), q, 64),
                "recall_at_10": recall,
            }
            kind.drop()
            kind.close()
    return out


def clustered_gallery(n: int, dim: int, n_queries: int, seed: int = 0) -> Any:
    """A synthetic :class:`~lexlens.eval.bench_search.Gallery`: unit vectors around ``n / 100``
    random centres (clustered like real embeddings, unlike uniform noise); queries alike."""
    from lexlens.eval.bench_search import Gallery

    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((max(1, n // 100), dim)))

    def draw(m: int) -> np.ndarray:
        pick = rng.integers(len(centres), size=m)
        return _unit(centres[pick] + rng.standard_normal((m, dim)).astype(np.float32) * 0.04)

    return Gallery(draw(n), None, draw(n_queries), None, f"synthetic clustered, dim {dim}")


def bench_kinds(n: int, dim: int, kinds: list[str], n_queries: int) -> dict:
    """``lexlens bench search`` (the library) over a synthetic ``dim``-d gallery of ``n`` items:
    bytes per item, latency, QPS and recall@10 of each local index kind."""
    from lexlens.eval.bench_search import BenchSearchConfig, bench_search

    cfg = BenchSearchConfig(
        model="synthetic", sizes=[n], kinds=kinds, queries=n_queries, progress=False
    )
    res = bench_search(cfg, gallery=clustered_gallery(n, dim, n_queries))
    for row in res["rows"]:
        row["memory_bytes_per_item"] = row["memory_bytes"] / row["n"]
        row["disk_bytes_per_item"] = row["disk_bytes"] / row["n"]
    return res


def bench_ray(model: str, images: list[str], workers: int, shard_size: int) -> dict:
    """Images/s of the local encode path and of ``encode_with_ray`` on the same files."""
    from lexlens.models.registry import load_encoder
    from lexlens.scale.ray_encode import encode_with_ray

    enc = load_encoder(model)
    enc.encode_images(images[:8])  # warm-up (lazy weights, thread pools)
    t = time.perf_counter()
    local = enc.encode_images(images, batch_size=64)
    local_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        items, stats = encode_with_ray(
            model, images, tmp, num_workers=workers, shard_size=shard_size
        )
        total_s = time.perf_counter() - t
    max_diff = float(np.abs(items.dense - local[items.ids]).max()) if len(items) else 0.0
    return {
        "model": model,
        "n_images": len(images),
        "local_images_per_s": len(images) / local_s,
        "ray_images_per_s_encode_stage": stats.items_per_s,
        "ray_images_per_s_end_to_end": len(images) / total_s,
        "ray_worker_images_per_s": stats.worker_items_per_s,
        "ray_stats": stats.to_dict(),
        "max_abs_diff_vs_local": max_diff,
    }


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark and print (and optionally write) its JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("milvus")
    m.add_argument("--n", type=int, default=50_000)
    m.add_argument("--dim", type=int, default=256)
    m.add_argument("--queries", type=int, default=256)
    k = sub.add_parser("kinds")
    k.add_argument("--n", type=int, default=100_000)
    k.add_argument("--dim", type=int, default=512)
    k.add_argument("--queries", type=int, default=200)
    k.add_argument("--kinds", default="flat;hnsw32;ivf1024,pq64", help="specs separated by ;")
    r = sub.add_parser("ray")
    r.add_argument("--model", required=True)
    r.add_argument("--images", required=True, help="folder of image files")
    r.add_argument("--limit", type=int, default=2000)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--shard-size", type=int, default=256)
    for s in (m, k, r):
        s.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    if a.what == "milvus":
        res = bench_milvus(a.n, a.dim, a.queries)
    elif a.what == "kinds":
        res = bench_kinds(a.n, a.dim, a.kinds.split(";"), a.queries)
    else:
        files = sorted(
            str(f)
            for f in Path(a.images).rglob("*")
            if f.suffix.lower() in {".png", ".jpg", ".jpeg"}
        )[: a.limit]
        res = bench_ray(a.model, files, a.workers, a.shard_size)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
