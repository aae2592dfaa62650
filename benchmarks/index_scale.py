"""An index of N scenes end to end: build, reopen, every query type, add, remove, dups.

    nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/index_scale.py \\
        --scenes data/scenes-100k --n 100000 --model native:scenes-mini --out /tmp/idx-100k \\
        --json benchmarks/results/scale/index_api_100k.json

Generates the scenes with ``lexlens data scenes`` when ``--scenes`` does not hold them yet,
builds an index with the default spec for the size (or ``--spec``), reopens it, answers
text, image, image+text, item, raw-embedding, filtered and cut-off queries and image -> text
over a caption index of the first ``--caption-images`` scenes, then adds and removes items
and looks for duplicates -- all through the Python API in one process (``index_100k.py``
does the same through the command line). Prints (and writes, as JSON and as Markdown next to
it) the wall-clock time of every step; one decoding worker throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "run", "to_markdown"]


def _timed(log: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    out = fn()
    log.setdefault("seconds", {})[name] = time.perf_counter() - t
    print(f"{name:>36}: {log['seconds'][name]:10.4f} s", flush=True)
    return out


def _records(scenes: Path) -> list[dict[str, Any]]:
    with open(scenes / "captions.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def run(
    scenes: Path, n: int, model: str, out: Path, spec: str | None, caption_images: int, seed: int
) -> dict[str, Any]:
    """Run every step; returns the timings and facts as a dict."""
    from lexlens import Index, Query, SearchParams
    from lexlens.models.registry import load_encoder

    log: dict[str, Any] = {"n": n, "model": model, "load_avg_start": os.getloadavg()}
    if not (scenes / "captions.jsonl").is_file():
        cmd = [
            sys.executable,
            "-m",
            "lexlens",
            "data",
            "scenes",
            "--out",
            str(scenes),
            "--n",
            str(n),
            "--seed",
            str(seed),
            "--workers",
            "1",
        ]
        _timed(log, "generate scenes", lambda: subprocess.run(cmd, check=True))
    records = _records(scenes)[:n]
    enc = _timed(log, "load model", lambda: load_encoder(model))
    shutil.rmtree(out, ignore_errors=True)
    idx = _timed(
        log, "build", lambda: Index.build(scenes, enc, out / "images", spec=spec, workers=1)
    )
    log["spec"] = str(idx.spec)
    log["build_report"] = idx.last_report
    idx = _timed(log, "reopen", lambda: Index.open(out / "images", model=enc))
    log["info"] = idx.info()
    img = str(scenes / records[0]["image"])
    queries = {
        "text": Query(text="a red circle"),
        "image": Query(image=img),
        "image+text": Query(image=img, text="a blue square", weight=0.5),
        "item": Query(item=123),
        "embedding": Query(embedding=enc.encode_texts(["two green stars"])[0]),
    }
    for name, q in queries.items():
        idx.search(q, k=10)  # warm
        res = _timed(log, f"query {name}", lambda q=q: idx.search(q, k=10))
        log[f"top {name}"] = [(h.id, round(h.score, 4)) for h in res.hits[0][:3]]
    _timed(
        log,
        "query 100 texts batched",
        lambda: idx.search([Query(text=f"a red circle {i}") for i in range(100)], k=10),
    )
    _timed(
        log, "query where (selective)", lambda: idx.search(queries["text"], k=10, where="id<500")
    )
    _timed(log, "query min-score", lambda: idx.search(queries["text"], k=100, min_score=0.3))
    _timed(
        log,
        "query ef=256 nprobe=64",
        lambda: idx.search(queries["text"], k=10, params=SearchParams(ef_search=256, nprobe=64)),
    )
    # a caption dataset of the first scenes (absolute paths: the same image files)
    caps = [
        {"image": str((scenes / r["image"]).resolve()), "captions": r["captions"]}
        for r in records[:caption_images]
    ]
    cap_dir = out / "caption-source"
    cap_dir.mkdir(parents=True, exist_ok=True)
    (cap_dir / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps))
    cidx = _timed(
        log,
        f"build caption index ({caption_images} images)",
        lambda: Index.build(cap_dir, enc, out / "captions", items="texts", workers=1),
    )
    res = _timed(log, "query image -> text", lambda: cidx.search(Query(image=img), k=5))
    log["top image -> text"] = [h.text for h in res.hits[0][:3]]
    removed = _timed(log, "remove 1000", lambda: idx.remove(list(range(1000))))
    log["removed"] = removed
    back = [str(scenes / r["image"]) for r in records[:1000]]
    rep = _timed(log, "add 1000 back (re-encoded)", lambda: idx.add(back, workers=1))
    log["add_report"] = rep
    rep = _timed(log, "add again (nothing to do)", lambda: idx.add(back, workers=1))
    groups = _timed(log, "dups 0.99", lambda: idx.dups(0.99))
    log["dup_groups"] = {
        "exact": sum(g.kind == "exact" for g in groups),
        "near": sum(g.kind == "near" for g in groups),
    }
    log["disk_bytes"] = idx.info()["disk_bytes"]
    log["load_avg_end"] = os.getloadavg()
    return log


def to_markdown(log: dict[str, Any]) -> str:
    """The step timings of :func:`run` as a Markdown table."""
    lines = [
        f"# Index of {log['n']:,} scenes through the Python API",
        "",
        f"Model `{log['model']}`, spec `{log['spec']}`, {log['disk_bytes'] / 2**20:,.1f} MiB on "
        f"disk at the end; load average {log['load_avg_start'][0]:.1f} at the start, "
        f"{log['load_avg_end'][0]:.1f} at the end (2 shared CPUs, one decoding worker).",
        "",
        "| step | time |",
        "| --- | ---: |",
    ]
    for name, sec in log["seconds"].items():
        lines.append(
            f"| {name} | {sec:.2f} s |" if sec >= 1 else f"| {name} | {1e3 * sec:.2f} ms |"
        )
    lines += ["", f"Duplicate groups at cosine 0.99: {log['dup_groups']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=Path, required=True)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--model", default="native:scenes-mini")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--spec")
    p.add_argument("--caption-images", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    log = run(a.scenes, a.n, a.model, a.out, a.spec, a.caption_images, a.seed)
    text = json.dumps(
        log, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)
    )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")
        a.json.with_suffix(".md").write_text(to_markdown(log))
    print(to_markdown(log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
