"""Measurements behind docs/scale.md: Milvus Lite insert/search rates (dense, dense + sparse
in one collection), local index kinds per item, Ray encode throughput.

    nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_bench.py milvus \\
        --n 100000 --dim 512 --out benchmarks/results/scale/milvus_100k_512.json
    ... scale_bench.py hybrid --n 100000 --dim 512 --out .../milvus_hybrid_100k.json
    ... scale_bench.py kinds --n 100000 --dim 512 --out .../kinds_100k_512.json
    ... scale_bench.py ray --model proxy:vit-b-32 --workers 1 --out .../ray_vitb32_w1_400.json
    ... scale_bench.py report benchmarks/results/scale     # every JSON there -> summary.md

``milvus``: random unit vectors inserted into a Milvus Lite collection (FLAT and HNSW) through
:class:`lexlens.scale.milvus.MilvusKind`; rows/s for inserts, the Lite file's bytes per row,
single-query and batched QPS, recall@10 against exact search, and the same queries on the
local flat kind.

``hybrid``: the same with a synthetic lexical vector per row (``--nnz`` weights over a
``--vocab``-word vocabulary, terms drawn with Zipf-like document frequencies) in the same
collection (``milvus(sparse,flat)``): insert rate and bytes per row against dense only,
lexical-only, RRF (inside Milvus: ``hybrid_search``, the ``native`` option) and rerank QPS,
lexical recall@10 vs exact.

``kinds``: the local index kinds (``flat``, ``sq16``, ``hnsw32``, ``ivf1024,pq64``, ...)
through the ``lexlens bench search`` library on a synthetic clustered gallery: bytes per
item, latency, QPS, recall@10 -- the per-shard figures the scale plan multiplies.

``ray``: the same image files encoded by the local path (one process) and by
:func:`lexlens.scale.ray_encode.encode_with_ray` with ``--workers`` actors; images/s of each
and the per-stage timings of the Ray run. ``--model proxy:vit-b-32`` is a random-weight
network of CLIP ViT-B/32's image-tower shape (:class:`ViTB32Proxy`): its images/s per core
sizes an encoding cluster for the model clip-retrieval users run.

Every result records the machine (CPUs, threads, load average before and after: the CPUs are
shared, so a high load means slower figures) and is written as ``--out`` JSON plus a
Markdown file of the same name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.models.base import Encoder, PreprocessConfig

__all__ = [
    "bench_milvus",
    "bench_milvus_hybrid",
    "synthetic_sparse",
    "to_markdown",
    "bench_kinds",
    "bench_ray",
    "clustered_gallery",
    "write_jpegs",
    "ViTB32Proxy",
    "main",
]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _qps(search, queries: np.ndarray, batch: int) -> float:
    t = time.perf_counter()
    for a in range(0, len(queries), batch):
        search(queries[a : a + batch])
    return len(queries) / (time.perf_counter() - t)


def _machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "nice": os.nice(0),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_start": os.getloadavg(),
    }


def _du(path: Path) -> int:
    """Bytes of a file or of everything under a directory."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


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
    out: dict = {"n": n, "dim": dim, "n_queries": n_queries, "machine": _machine()}
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
            db = Path(tmp) / f"bench-{spec[:4]}.db"
            kind = MilvusKind.create(f"milvus://{db}", parse_spec(spec), ctx, f"bench_{spec[:4]}")
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
                "lite_file_bytes_per_row": _du(db) / n,
                "qps_1": _qps(lambda b, kind=kind: kind.search(Vectors(dense=b), 10), q, 1),
                "qps_batch64": _qps(lambda b, kind=kind: kind.search(Vectors(dense=b), 10), q, 64),
                "recall_at_10": recall,
            }
            kind.drop()
            kind.close()
    out["machine"]["load_avg_end"] = os.getloadavg()
    return out


def synthetic_sparse(n: int, vocab: int, nnz: int, rng: np.random.Generator) -> Any:
    """``n`` lexical rows of about ``nnz`` distinct terms (Zipf-like document frequency,
    ``p(term r) ~ 1 / (r + 10)``) with log-normal weights, as a ``SparseBatch``."""
    from lexlens.models.base import SparseBatch

    p = 1.0 / (np.arange(vocab) + 10.0)
    terms = rng.choice(vocab, size=(n, nnz), p=p / p.sum())
    indptr, indices = [0], []
    for row in terms:
        u = np.unique(row)
        indices.append(u)
        indptr.append(indptr[-1] + len(u))
    idx = np.concatenate(indices).astype(np.int32)
    val = rng.lognormal(-1.0, 0.5, len(idx)).astype(np.float32)
    return SparseBatch(np.asarray(indptr, np.int64), idx, val, vocab)


def bench_milvus_hybrid(
    n: int, dim: int, vocab: int, nnz: int, q_nnz: int, n_queries: int, seed: int = 0
) -> dict:
    """Dense-only vs dense + sparse in one Milvus Lite collection (see module docstring)."""
    from lexlens.eval.exact import sparse_scores
    from lexlens.index.base import KindContext, SearchParams, Vectors
    from lexlens.index.spec import IndexSpec
    from lexlens.results import topk
    from lexlens.scale.milvus import MilvusKind

    rng = np.random.default_rng(seed)
    x = _unit(rng.standard_normal((n, dim)))
    xs = synthetic_sparse(n, vocab, nnz, rng)
    q = _unit(rng.standard_normal((n_queries, dim)))
    qs = synthetic_sparse(n_queries, vocab, q_nnz, rng)
    ids = np.arange(n, dtype=np.int64)
    lsim = sparse_scores(qs, xs)
    exact = topk(np.where(lsim > 0, lsim, -np.inf), 10)[1]
    out: dict = {
        "n": n,
        "dim": dim,
        "vocab": vocab,
        "avg_nnz": float(np.diff(xs.indptr).mean()),
        "avg_query_nnz": float(np.diff(qs.indptr).mean()),
        "n_queries": n_queries,
        "machine": _machine(),
    }
    ctx = KindContext(dim=dim, vocab_size=vocab)
    specs = {
        "dense_only": IndexSpec("milvus", children=(IndexSpec("flat"),)),
        # RRF inside Milvus (hybrid_search) by default; rerank per call
        "dense_and_sparse": IndexSpec(
            "milvus",
            options=(("fusion", "rrf"), ("native", True)),
            children=(IndexSpec("sparse"), IndexSpec("flat")),
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in specs.items():
            db = Path(tmp) / f"{name}.db"
            kind = MilvusKind.create(f"milvus://{db}", spec, ctx, f"bench_{name}")
            vec = Vectors(dense=x, sparse=xs if kind.has_sparse else None)
            t = time.perf_counter()
            kind.add(ids, vec)
            add_s = time.perf_counter() - t
            t = time.perf_counter()
            kind.save(Path(tmp))
            row: dict[str, Any] = {
                "insert_rows_per_s": n / add_s,
                "flush_s": time.perf_counter() - t,
                "lite_file_bytes_per_row": _du(db) / n,
            }
            if kind.has_sparse:
                lex = Vectors(sparse=qs)
                both = Vectors(dense=q, sparse=qs)
                got = kind.search(lex, 10)[1]
                row["lexical_recall_at_10"] = float(
                    np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact, strict=True)])
                )
                row["lexical_qps_1"] = _qps(
                    lambda b, kind=kind: kind.search(Vectors(sparse=_rows(qs, b)), 10),
                    np.arange(n_queries),
                    1,
                )
                row["lexical_qps_batch64"] = _qps(
                    lambda b, kind=kind: kind.search(Vectors(sparse=_rows(qs, b)), 10),
                    np.arange(n_queries),
                    64,
                )
                for fusion in ("rrf", "rerank"):
                    p = SearchParams(fusion=fusion)
                    row[f"{fusion}_qps_1"] = _qps(
                        lambda b, kind=kind, p=p: kind.search(
                            Vectors(dense=q[b], sparse=_rows(qs, b)), 10, p
                        ),
                        np.arange(n_queries),
                        1,
                    )
                row["rrf_qps_batch64"] = _qps(
                    lambda b, kind=kind: kind.search(Vectors(dense=q[b], sparse=_rows(qs, b)), 10),
                    np.arange(n_queries),
                    64,
                )
                assert len(kind.search(both, 10)[1]) == n_queries
            row["dense_qps_1"] = _qps(
                lambda b, kind=kind: kind.search(Vectors(dense=q[b]), 10), np.arange(n_queries), 1
            )
            out[name] = row
            kind.drop()
            kind.close()
    out["machine"]["load_avg_end"] = os.getloadavg()
    return out


def _rows(batch: Any, which: np.ndarray) -> Any:
    """Rows ``which`` of a ``SparseBatch``."""
    from lexlens.index.ingest import sparse_from_rows

    return sparse_from_rows([batch.row(int(i)) for i in which], batch.vocab_size)


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
    machine = _machine()
    res = bench_search(cfg, gallery=clustered_gallery(n, dim, n_queries))
    res["meta"]["machine"] = {**machine, "load_avg_end": os.getloadavg()}
    for row in res["rows"]:
        row["memory_bytes_per_item"] = row["memory_bytes"] / row["n"]
        row["disk_bytes_per_item"] = row["disk_bytes"] / row["n"]
    return res


def _vit_b32_tower() -> Any:
    """CLIP ViT-B/32's image tower shape with random weights (pure torch)."""
    import torch

    torch.manual_seed(0)

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = torch.nn.Conv2d(3, 768, 32, 32)
            self.cls = torch.nn.Parameter(torch.zeros(1, 1, 768))
            self.pos = torch.nn.Parameter(torch.randn(1, 50, 768) * 0.02)
            layer = torch.nn.TransformerEncoderLayer(
                768, 12, 3072, batch_first=True, norm_first=True
            )
            self.blocks = torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)
            self.proj = torch.nn.Linear(768, 512, bias=False)

        def forward(self, x: Any) -> Any:
            t = self.patch(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
            return self.proj(self.blocks(t)[:, 0])

    return Tower().eval()


class ViTB32Proxy(Encoder):
    """A compute proxy for CLIP ViT-B/32's image tower (random weights, pure torch).

    224x224 input, 32x32 patches (49 + 1 tokens), 12 layers of width 768 with 12 heads and a
    3072-wide MLP, 512-d output: the forward cost of the model clip-retrieval users run, so its
    images/s per core sizes a real cluster. Not a model to search with. The class itself is the
    zero-argument factory handed to Ray; the network is never pickled (decoding workers
    only preprocess, with lexlens's own resize + centre crop + normalise at 224 px).
    """

    name = "proxy:vit-b-32"
    dim = 512
    preprocess_config = PreprocessConfig(image_size=224)

    def __init__(self) -> None:
        self._net: Any = _vit_b32_tower()  # built when the encoder is loaded, not on first use

    def __getstate__(self) -> dict[str, Any]:
        return {"_net": None}  # decoding workers only need preprocess()

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        if self._net is None:
            self._net = _vit_b32_tower()
        with torch.inference_mode():
            return self._net(torch.from_numpy(pixels)).numpy()

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError("image tower only")


def write_jpegs(folder: Path, n: int, size: int = 256, seed: int = 0) -> list[str]:
    """``n`` random smooth-ish JPEG photos-to-be (decode cost like real ones of that size)."""
    from PIL import Image, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = folder / f"img-{i:05d}.jpg"
        if not p.exists():
            arr = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            im = Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)
            im.filter(ImageFilter.GaussianBlur(2)).save(p, quality=90)
        out.append(str(p))
    return out


def bench_ray(
    model: str, images: list[str], workers: int, shard_size: int, batch_size: int = 32
) -> dict:
    """Images/s of the local encode path (:func:`lexlens.index.ingest.encode_items`, decoding in
    worker processes) and of ``encode_with_ray`` with ``workers`` actors on the same files.

    ``model`` is a model spec, or ``proxy:vit-b-32`` for :class:`ViTB32Proxy`."""
    import torch

    from lexlens.index.ingest import encode_items, read_source
    from lexlens.models.registry import load_encoder
    from lexlens.scale.ray_encode import encode_with_ray

    source: Any = ViTB32Proxy if model == "proxy:vit-b-32" else model
    enc = source() if callable(source) else load_encoder(model)
    enc.encode_images(images[:4], batch_size=4)  # warm-up (lazy weights, thread pools)
    machine = _machine()
    todo = read_source(images)
    t = time.perf_counter()
    batches = list(encode_items(todo, enc, "images", False, batch_size, None, False))
    local_s = time.perf_counter() - t
    local = np.concatenate([b.dense for b in batches])
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        items, stats = encode_with_ray(
            source,
            images,
            tmp,
            num_workers=workers,
            shard_size=shard_size,
            batch_size=batch_size,
            want_sparse=False,
        )
        total_s = time.perf_counter() - t
    machine["load_avg_end"] = os.getloadavg()
    return {
        "model": model,
        "n_images": len(images),
        "machine": machine,
        "local_threads": torch.get_num_threads(),
        "local_images_per_s": len(images) / local_s,
        "ray_workers": workers,
        "ray_images_per_s_encode_stage": stats.items_per_s,
        "ray_images_per_s_end_to_end": len(images) / total_s,
        "ray_images_per_s_per_worker_cpu": stats.worker_items_per_s,
        "ray_stats": stats.to_dict(),
        "max_abs_diff_vs_local": float(np.abs(items.dense - local).max()),
    }


def _load(m: dict[str, Any]) -> str:
    a, b = m.get("load_avg_start"), m.get("load_avg_end")
    if not a:
        return "load average not recorded"
    return f"load average {a[0]:.1f} -> {b[0]:.1f}" if b else f"load average {a[0]:.1f}"


def _md_milvus(r: dict[str, Any]) -> list[str]:
    lines = [
        f"Milvus Lite vs the local flat kind: {r['n']:,} random unit vectors, {r['dim']}-d, "
        f"{r['n_queries']} queries, k=10 ({_load(r.get('machine', {}))}).",
        "",
        "| engine | insert rows/s | Lite file B/row | QPS 1 query | QPS batch 64 | recall@10 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, v in r.items():
        if not isinstance(v, dict) or name == "machine":
            continue
        rate = v.get("insert_rows_per_s", v.get("add_rows_per_s", 0))
        size = v.get("lite_file_bytes_per_row")
        lines.append(
            f"| {name} | {rate:,.0f} | {'-' if size is None else f'{size:,.0f}'} | "
            f"{v['qps_1']:,.1f} | {v['qps_batch64']:,.1f} | {v.get('recall_at_10', 1.0):.3f} |"
        )
    return lines


def _md_hybrid(r: dict[str, Any]) -> list[str]:
    d, h = r["dense_only"], r["dense_and_sparse"]
    return [
        f"Dense + sparse in one Milvus Lite collection: {r['n']:,} rows, {r['dim']}-d dense, "
        f"{r['avg_nnz']:.1f} lexical weights per row over {r['vocab']:,} words (queries "
        f"{r['avg_query_nnz']:.1f}), {r['n_queries']} queries ({_load(r['machine'])}).",
        "",
        "| collection | insert rows/s | Lite file B/row | dense QPS | lexical QPS (1 / 64) | "
        "RRF in Milvus QPS (1 / 64) | rerank QPS | lexical recall@10 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| dense only | {d['insert_rows_per_s']:,.0f} | {d['lite_file_bytes_per_row']:,.0f} | "
        f"{d['dense_qps_1']:,.1f} | - | - | - | - |",
        f"| dense + sparse | {h['insert_rows_per_s']:,.0f} | {h['lite_file_bytes_per_row']:,.0f} | "
        f"{h['dense_qps_1']:,.1f} | {h['lexical_qps_1']:,.1f} / {h['lexical_qps_batch64']:,.1f} | "
        f"{h['rrf_qps_1']:,.1f} / {h['rrf_qps_batch64']:,.1f} | {h['rerank_qps_1']:,.1f} | "
        f"{h['lexical_recall_at_10']:.3f} |",
    ]


def _md_kinds(r: dict[str, Any]) -> list[str]:
    meta = r["meta"]
    lines = [
        f"Local index kinds (`lexlens bench search` library): {meta['vectors']}, "
        f"{meta['queries']} queries, k={meta['k']} ({_load(meta.get('machine', {}))}).",
        "",
        "| N | kind | build s | RAM B/item | disk B/item | p50 ms | QPS (batch) | recall@10 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['n']:,} | `{row['kind']}` | {row['build_s']:.1f} | "
            f"{row['memory_bytes'] / row['n']:,.1f} | {row['disk_bytes'] / row['n']:,.1f} | "
            f"{row['p50_ms']:.3f} | {row['qps']:,.0f} | {row['recall@10']:.1f} |"
        )
    return lines


def _md_ray(r: dict[str, Any]) -> list[str]:
    st = r["ray_stats"]
    m = r.get("machine", {"cpus": r.get("cpus")})
    return [
        f"Encoding {r['n_images']} images with `{r['model']}` on {m.get('cpus')} CPUs "
        f"({_load(m)}).",
        "",
        "| path | images/s | per worker CPU |",
        "| --- | ---: | ---: |",
        f"| local, {r['local_threads']} torch thread(s) | {r['local_images_per_s']:.1f} | - |",
        f"| Ray, {r['ray_workers']} actor(s), end to end | {r['ray_images_per_s_end_to_end']:.1f} "
        f"| {r['ray_images_per_s_per_worker_cpu']:.1f} |",
        "",
        f"Ray stages: {st['n_shards']} shards, decode {st['decode_s']:.1f} s, encode "
        f"{st['encode_s']:.1f} s, write {st['write_s']:.2f} s, merge {st['merge_s']:.2f} s, wall "
        f"{st['wall_s']:.1f} s; max |Ray - local| = {r['max_abs_diff_vs_local']:.2g}.",
    ]


def to_markdown(result: dict[str, Any], title: str = "") -> str:
    """A Markdown section for any result this script writes (the kind is read off its keys)."""
    if "ray_stats" in result:
        body = _md_ray(result)
    elif "rows" in result:
        body = _md_kinds(result)
    elif "dense_and_sparse" in result:
        body = _md_hybrid(result)
    else:
        body = _md_milvus(result)
    return "\n".join(([f"## {title}", ""] if title else []) + body) + "\n"


def report(folder: Path) -> str:
    """``summary.md`` of every result JSON in ``folder`` (also written there)."""
    parts = ["# Scale benchmarks (benchmarks/scale_bench.py)", ""]
    for f in sorted(folder.glob("*.json")):
        res = json.loads(f.read_text())
        if isinstance(res, dict) and ("n" in res or "rows" in res or "ray_stats" in res):
            if "seconds" in res:  # index_scale.py writes its own Markdown
                continue
            parts.append(to_markdown(res, f.name))
    text = "\n".join(parts)
    (folder / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark and print (and optionally write) its JSON and Markdown."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("milvus")
    m.add_argument("--n", type=int, default=50_000)
    m.add_argument("--dim", type=int, default=256)
    m.add_argument("--queries", type=int, default=256)
    h = sub.add_parser("hybrid")
    h.add_argument("--n", type=int, default=50_000)
    h.add_argument("--dim", type=int, default=512)
    h.add_argument("--vocab", type=int, default=30_522, help="lexical vocabulary size")
    h.add_argument("--nnz", type=int, default=64, help="lexical terms drawn per item")
    h.add_argument("--query-nnz", type=int, default=16, help="lexical terms drawn per query")
    h.add_argument("--queries", type=int, default=200)
    k = sub.add_parser("kinds")
    k.add_argument("--n", type=int, default=100_000)
    k.add_argument("--dim", type=int, default=512)
    k.add_argument("--queries", type=int, default=200)
    k.add_argument(
        "--kinds",
        default="flat;sq16;sq8;hnsw32;ivf1024,sq8;ivf1024,pq64",
        help="specs separated by ;",
    )
    r = sub.add_parser("ray")
    r.add_argument("--model", required=True, help="model spec or proxy:vit-b-32")
    r.add_argument("--images", help="folder of image files (default: generated JPEGs)")
    r.add_argument("--limit", type=int, default=2000)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--shard-size", type=int, default=256)
    for s in (m, h, k, r):
        s.add_argument("--out", help="also write the JSON here (and Markdown next to it)")
    rep = sub.add_parser("report", help="summary.md of every result JSON in a folder")
    rep.add_argument("folder", type=Path)
    a = p.parse_args(argv)
    if a.what == "report":
        print(report(a.folder))
        return 0
    if a.what == "milvus":
        res = bench_milvus(a.n, a.dim, a.queries)
    elif a.what == "hybrid":
        res = bench_milvus_hybrid(a.n, a.dim, a.vocab, a.nnz, a.query_nnz, a.queries)
    elif a.what == "kinds":
        res = bench_kinds(a.n, a.dim, a.kinds.split(";"), a.queries)
    else:
        if a.images:
            files = sorted(
                str(f)
                for f in Path(a.images).rglob("*")
                if f.suffix.lower() in {".png", ".jpg", ".jpeg"}
            )[: a.limit]
        else:
            files = write_jpegs(Path(tempfile.gettempdir()) / "lexlens-scale-jpegs", a.limit)
        res = bench_ray(a.model, files, a.workers, a.shard_size)
    text = json.dumps(res, indent=2)
    print(text)
    print(to_markdown(res))
    if a.out:
        out = Path(a.out)
        out.write_text(text + "\n")
        out.with_suffix(".md").write_text(to_markdown(res, out.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
