"""The tables of docs/scale.md, computed from the measurements in benchmarks/results/.

    .venv/bin/python benchmarks/scale_plan.py [--results benchmarks/results] > plan.md

Inputs (each written by a benchmark of this repository on this machine):

* ``scale/ray_vitb32_w1_400.json``: images/s of one CPU core running a CLIP ViT-B/32-shaped
  image tower, locally and as a Ray actor (``scale_bench.py ray``);
* ``encode/encode_bench.json``: JPEG decode + resize to 224 px per process (draft mode);
* ``scale/kinds_100k_512.json``: bytes per item, single-query latency and recall@10 of the
  local index kinds at 100,000 512-d vectors (``scale_bench.py kinds``);
* ``scale/milvus_hybrid_100k_512.json``: Milvus Lite bytes per row, dense only vs dense +
  lexical vectors in one collection (``scale_bench.py hybrid``).

Everything else is a stated assumption (:data:`ASSUMPTIONS`): node sizes, the GPU rate (not
measurable here: published by clip-retrieval), the share of RAM Milvus may fill, how latency
grows with shard size. Change them on the command line to re-plan.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

__all__ = [
    "ASSUMPTIONS",
    "PLAN",
    "load_measurements",
    "encode_table",
    "serve_table",
    "plans_table",
    "main",
]

SIZES = (100_000_000, 1_000_000_000, 5_000_000_000)
LABELS = ("100M", "1B", "5B")

ASSUMPTIONS: dict[str, Any] = {
    # encoding
    "cpu_node_cores": 32,  # one Ray actor per core (num_cpus=1)
    "gpu_images_per_s": 1500,  # ViT-B/32 on one RTX 3080 (clip-retrieval README), not measured here
    "gpus_per_node": 8,
    "dim": 512,  # ViT-B/32 embedding width
    # serving
    "node_ram_gib": 256,
    "ram_share": 0.7,  # Milvus: loaded data < 90% of query-node RAM; keep headroom for growth
    "node_cores": 32,
    "meta_bytes_per_item": 200,  # primary key, path, JSON user fields (loaded with the vectors)
    "lexical_nnz": 64,  # weights kept per image (LexLIP-style top-k)
    "replicas": 2,  # for availability; throughput scales with replicas
}


def load_measurements(results: Path) -> dict[str, Any]:
    """The figures the plan extrapolates from, with the file each comes from."""
    ray = json.loads((results / "scale" / "ray_vitb32_w1_400.json").read_text())
    enc = json.loads((results / "encode" / "encode_bench.json").read_text())
    kinds = json.loads((results / "scale" / "kinds_100k_512.json").read_text())
    hyb = json.loads((results / "scale" / "milvus_hybrid_100k_512.json").read_text())
    rows = {r["kind"]: r for r in kinds["rows"]}
    dense_row = hyb["dense_only"]["lite_file_bytes_per_row"]
    both_row = hyb["dense_and_sparse"]["lite_file_bytes_per_row"]
    return {
        "core_images_per_s": ray["local_images_per_s"],
        "ray_worker_images_per_s": ray["ray_images_per_s_per_worker_cpu"],
        "ray_overhead_s": ray["ray_stats"]["write_s"] + ray["ray_stats"]["merge_s"],
        "ray_images": ray["n_images"],
        "ray_load": ray.get("machine", {}).get("load_avg_start"),
        "decode_per_process": enc["jpeg_draft"]["images_per_second_one_process"]["draft"],
        "kinds": rows,
        "kinds_n": kinds["rows"][0]["n"],
        "kinds_load": kinds["meta"].get("machine", {}).get("load_avg_start"),
        "milvus_bytes_per_nonzero": (both_row - dense_row) / hyb["avg_nnz"],
        "milvus_avg_nnz": hyb["avg_nnz"],
    }


def _h(seconds: float) -> str:
    return f"{seconds / 3600:,.0f} h" if seconds >= 3600 else f"{seconds / 60:,.0f} min"


def encode_table(m: dict[str, Any], a: dict[str, Any]) -> str:
    """Node-hours to encode 100M / 1B / 5B images on CPU nodes and on GPU nodes."""
    per_core = m["ray_worker_images_per_s"]
    cpu_node = per_core * a["cpu_node_cores"]
    gpu_node = a["gpu_images_per_s"] * a["gpus_per_node"]
    decode_cores = a["gpu_images_per_s"] / m["decode_per_process"]
    lines = [
        "| images | CPU node-hours | wall, 100 CPU nodes | GPU-hours | wall, 8 nodes x "
        f"{a['gpus_per_node']} GPUs | embeddings fp32 / fp16 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, label in zip(SIZES, LABELS, strict=True):
        cpu_s, gpu_s = n / cpu_node, n / a["gpu_images_per_s"]
        size = n * a["dim"] * 4
        lines.append(
            f"| {label} | {cpu_s / 3600:,.0f} | {_h(cpu_s / 100)} | {gpu_s / 3600:,.0f} | "
            f"{_h(n / gpu_node / 8)} | {size / 1e12:,.1f} TB / {size / 2e12:,.1f} TB |"
        )
    lines += [
        "",
        f"Per CPU core {per_core:.1f} images/s (a Ray actor, measured), so a "
        f"{a['cpu_node_cores']}-core node encodes {cpu_node:,.0f} images/s; a GPU node "
        f"{gpu_node:,} images/s ({a['gpus_per_node']} x {a['gpu_images_per_s']:,}), which needs "
        f"{decode_cores:.0f} decoding cores per GPU at {m['decode_per_process']:.0f} "
        "JPEG decodes/s per core (measured).",
    ]
    return "\n".join(lines)


#: how a kind's single-query time grows with the items ``n`` of a shard (from ``n0``)
def _latency_growth(kind: str, n: float, n0: float) -> float:
    if kind.startswith("ivf"):  # nlist ~ 4 sqrt(n) (default_spec), fixed nprobe: scan ~ sqrt(n)
        return math.sqrt(n / n0)
    if kind.startswith("hnsw"):  # graph hops ~ log n
        return math.log(n) / math.log(n0)
    return n / n0  # flat / sq: a full scan


SERVE_KINDS = [
    ("flat", "fp32, exact scan"),
    ("sq16", "fp16, exact scan"),
    ("hnsw32", "fp32 + HNSW graph"),
    ("ivf1024,sq8", "IVF + 8-bit scalar"),
    ("ivf1024,pq64", "IVF + PQ 64 B"),
]


def serve_table(m: dict[str, Any], a: dict[str, Any]) -> str:
    """Bytes per item, items per node, nodes and QPS per replica group for each dense kind and
    the lexical vectors, at 100M / 1B / 5B items."""
    budget = a["node_ram_gib"] * 2**30 * a["ram_share"]
    lexical = a["lexical_nnz"] * 2 * 8  # forward (term, weight) + posting (doc, weight)
    lines = [
        "| structure | B/item (measured) | + metadata | items per node | nodes 100M / 1B / 5B "
        "| QPS per replica group at 1B (p50 ms per shard) | recall@10 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, label in SERVE_KINDS:
        row = m["kinds"].get(kind)
        if row is None:
            continue
        per = row["memory_bytes"] / row["n"]
        total = per + a["meta_bytes_per_item"]
        per_node = budget / total
        nodes = [max(1, math.ceil(n / per_node)) for n in SIZES]
        shard = min(per_node, 1e9 / nodes[1])
        ms = row["p50_ms"] * _latency_growth(kind, shard, row["n"])
        qps = a["node_cores"] * 1000 / ms
        lines.append(
            f"| `{kind}` ({label}) | {per:,.0f} | {total:,.0f} | {per_node / 1e6:,.0f}M | "
            f"{' / '.join(str(x) for x in nodes)} | {qps:,.0f} ({ms:,.1f} ms) | "
            f"{row['recall@10']:.0f}% |"
        )
    per_node = budget / (lexical + a["meta_bytes_per_item"])
    nodes = [max(1, math.ceil(n / per_node)) for n in SIZES]
    lines.append(
        f"| lexical, {a['lexical_nnz']} weights/item (forward + inverted, fp32) | {lexical:,} "
        f"(formula) | {lexical + a['meta_bytes_per_item']:,} | {per_node / 1e6:,.0f}M | "
        f"{' / '.join(str(x) for x in nodes)} | see text | exact |"
    )
    lines += [
        "",
        f"A node holds {a['node_ram_gib']} GiB, of which {a['ram_share']:.0%} for loaded data; "
        f"items per node = that budget / (B/item + {a['meta_bytes_per_item']} B of metadata). "
        f"Nodes are per replica group (x{a['replicas']} replicas for availability and "
        "throughput). QPS per replica group: every query visits every shard, so the group "
        f"answers as fast as one shard: {a['node_cores']} cores / the single-query time of a 1B "
        "shard, grown from the measured 100,000-item time (flat/sq: x n, HNSW: x log n, IVF with "
        "nlist ~ sqrt(n): x sqrt(n)).",
        f"Milvus Lite stored {m['milvus_bytes_per_nonzero']:.1f} bytes per lexical weight on disk "
        f"(measured, {m['milvus_avg_nnz']:.0f} weights per row).",
    ]
    return "\n".join(lines)


#: the structure chosen per collection size, and the lexical weights kept (count, bytes each)
PLAN = (
    (100_000_000, "hnsw32", (64, 4)),
    (1_000_000_000, "ivf1024,sq8", (16, 1)),
    (5_000_000_000, "ivf1024,pq64", (16, 1)),
)


def _shard(kind_row: dict[str, Any], kind: str, n: int, a: dict[str, Any]) -> tuple[int, float]:
    """(nodes per replica group, single-query ms on one node's shard) for ``n`` items."""
    budget = a["node_ram_gib"] * 2**30 * a["ram_share"]
    per = kind_row["memory_bytes"] / kind_row["n"] + a["meta_bytes_per_item"]
    nodes = max(1, math.ceil(n * per / budget))
    ms = kind_row["p50_ms"] * _latency_growth(kind, n / nodes, kind_row["n"])
    return nodes, ms


def plans_table(m: dict[str, Any], a: dict[str, Any]) -> str:
    """The chosen structure per size: nodes for dense and lexical, QPS with the replicas."""
    budget = a["node_ram_gib"] * 2**30 * a["ram_share"]
    per_gpu_node = a["gpu_images_per_s"] * a["gpus_per_node"]
    lines = [
        "| | " + " | ".join(LABELS) + " |",
        "| --- | " + " | ".join("---" for _ in LABELS) + " |",
    ]
    cells: dict[str, list[str]] = {k: [] for k in ("encode", "dense", "lexical", "qps")}
    for n, kind, (nnz, wbytes) in PLAN:
        cpu_h = n / (m["ray_worker_images_per_s"] * a["cpu_node_cores"]) / 3600
        gpu_nodes = 8 if n <= 1_000_000_000 else 32
        cells["encode"].append(
            f"{cpu_h:,.0f} CPU node-h; {gpu_nodes} GPU nodes: {_h(n / per_gpu_node / gpu_nodes)}"
        )
        nodes, ms = _shard(m["kinds"][kind], kind, n, a)
        cells["dense"].append(f"`{kind}`: {nodes} nodes, {ms:.1f} ms/query/shard")
        lex_nodes = math.ceil(n * nnz * 2 * (4 + wbytes) / budget)
        cells["lexical"].append(f"{nnz} weights x {wbytes} B: +{lex_nodes} nodes")
        qps = a["replicas"] * a["node_cores"] * 1000 / ms
        cells["qps"].append(f"~{qps:,.0f} dense ({a['replicas']} replicas)")
    names = {
        "encode": "encode",
        "dense": "dense index (per replica)",
        "lexical": "lexical (per replica)",
        "qps": "QPS ceiling",
    }
    for key, label in names.items():
        lines.append(f"| {label} | " + " | ".join(cells[key]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the encode and serve tables (Markdown)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    for key, val in ASSUMPTIONS.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(val), default=val)
    a = vars(p.parse_args(argv))
    m = load_measurements(a.pop("results"))
    print(
        "## Encoding\n\n" + encode_table(m, a) + "\n\n## Serving\n\n" + serve_table(m, a)
        + "\n\n## Plans by size\n\n" + plans_table(m, a)
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
