"""Issue #5's done-check at size: an index of 100,000 scenes builds, reopens and answers every
query type -- all through the ``lexlens`` command line with ``--json``.

    nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/index_100k.py \\
        --work /tmp/idx100k --n 100000 --model native:scenes-mini

Steps (each a ``python -m lexlens ...`` process, wall-clock timed):

1. ``lexlens data scenes`` writes ``--n`` scenes and 1,000 more (another seed) for the add;
2. ``lexlens index build`` (default spec for the size or ``--spec``, one decoding worker);
3. ``lexlens index info`` reopens it (count, spec, bytes on disk);
4. ``lexlens search ... --json`` for every query type: text -> image, image -> image,
   image + text, item ("more like this"), raw embedding (``--embedding q.npy``), ``--where``
   filter, ``--min-score`` cut-off, and image -> text over a caption index built from the
   scenes' captions (``index build --items texts``). Each CLI query runs ``--repeat`` times;
   its median wall time includes starting Python, loading the model and opening the index.
   The same queries are then timed in one process on the opened index (median of
   ``--inproc-repeat`` warm calls): the latency a server sees;
5. ``lexlens index add`` of the 1,000 new scenes, then ``index info`` and queries for a new
   scene (its image; the same restricted to its path).

Every answer is checked (a failed check makes the exit status 1): an image, item or
embedding query finds its own item in the top k (first for the raw embedding; the rank is
recorded); filtered hits satisfy the filter (read back from
``captions.jsonl``); cut-off hits score at least the cut-off; caption hits are captions; the
add adds 1,000 items that are then found. Results: ``--out`` (JSON and Markdown).

Without a trained model, ``--tiny-model DIR`` writes a tiny random open_clip model to ``DIR``
and uses it (``openclip:DIR``): the timings of the index then hold, its answers' quality not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "run", "make_tiny_openclip", "to_markdown"]

K = 10
TEXT = "a red circle"
EDIT = "but blue"
WHERE = "scene.kind=pair AND scene.background=gray"
TINY_NOTE = (
    "a tiny random open_clip ViT (64 px, 32-d) made by --tiny-model: the index's timings "
    "hold, the answers' relevance does not"
)


def make_tiny_openclip(folder: Path) -> str:
    """A tiny random open_clip model (64 px ViT, 32-d) saved to ``folder``; its model spec."""
    from lexlens.models.registry import load_encoder

    spec = f"openclip:{folder.resolve()}"
    if (folder / "open_clip_config.json").is_file():
        return spec
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder.parent / "lexlens-bench-tiny.json"
    cfg.write_text(
        json.dumps(
            {
                "embed_dim": 32,
                "vision_cfg": {
                    "image_size": 64,
                    "layers": 2,
                    "width": 64,
                    "head_width": 32,
                    "patch_size": 16,
                },
                "text_cfg": {
                    "context_length": 32,
                    "vocab_size": 49408,
                    "width": 64,
                    "heads": 2,
                    "layers": 2,
                },
            }
        )
    )
    torch.manual_seed(0)
    load_encoder(f"openclip:{cfg}").save(folder)
    return spec


def _cli(args: list[str], json_out: bool = True) -> tuple[float, Any]:
    """Run ``python -m lexlens ARGS``; returns (wall seconds, parsed JSON stdout)."""
    cmd = [sys.executable, "-m", "lexlens", *args] + (["--json"] if json_out else [])
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return dt, json.loads(proc.stdout) if json_out else proc.stdout


def _abs(p: Path | str) -> str:
    """A path compared by the file it names (readers may resolve symlinks, the CLI keeps them)."""
    return os.path.realpath(p)


def _records(folder: Path) -> list[dict[str, Any]]:
    with open(folder / "captions.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def _scenes(folder: Path, n: int, seed: int, log: dict[str, Any], step: str) -> None:
    if (folder / "captions.jsonl").is_file() and len(_records(folder)) == n:
        log["steps"][step] = {"seconds": None, "note": "reused"}
        return
    dt, out = _cli(["data", "scenes", str(folder), "--n", str(n), "--seed", str(seed)]
                   + ["--workers", "1"])  # fmt: skip
    log["steps"][step] = {"seconds": dt, "images_per_s": out.get("images_per_second")}


def _hits(res: dict[str, Any]) -> list[dict[str, Any]]:
    return res["results"][0]["hits"]


def _fields(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("image", "captions")}


def _sorted_ok(hits: list[dict[str, Any]]) -> bool:
    keys = [(-h["score"], h["id"]) for h in hits]
    return keys == sorted(keys)


def run(
    work: Path,
    n: int,
    model: str,
    repeat: int = 3,
    inproc_repeat: int = 20,
    caption_scenes: int | None = None,
    seed: int = 777,
    spec: str | None = None,
    decode_workers: int = 1,
) -> dict[str, Any]:
    """All steps of the module docstring; returns the JSON-able log."""
    work.mkdir(parents=True, exist_ok=True)
    log: dict[str, Any] = {
        "n": n,
        "model": model,
        "k": K,
        "decode_workers": decode_workers,
        "steps": {},
        "queries": {},
        "checks": {},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "nice": os.nice(0),
            "load_avg_start": os.getloadavg(),
        },
    }
    scenes, extra = work / "scenes", work / "scenes-new"
    idx, cidx = work / "idx", work / "idx-captions"
    _scenes(scenes, n, seed, log, "generate scenes")
    _scenes(extra, 1000, seed + 1, log, "generate 1000 new scenes")
    records = _records(scenes)

    # build + reopen
    for d in (idx, cidx):
        shutil.rmtree(d, ignore_errors=True)
    spec_args = ["--spec", spec] if spec else []
    dt, rep = _cli(["index", "build", str(scenes), "--model", model, "--out", str(idx)]
                   + ["--workers", str(decode_workers), *spec_args])  # fmt: skip
    log["steps"]["index build"] = {"seconds": dt, "images_per_s": n / dt, "report": rep}
    dt, info = _cli(["index", "info", str(idx)])
    log["steps"]["reopen (index info)"] = {"seconds": dt}
    log["index"] = {k: info[k] for k in ("spec", "count", "dim", "disk_bytes", "memory_bytes")}
    log["checks"]["build: every scene indexed"] = info["count"] == n

    # caption index for image -> text
    m = min(n, caption_scenes or n)
    cap_src = scenes
    if m < n:
        cap_src = work / "caption-source"
        cap_src.mkdir(exist_ok=True)
        rows = [{**r, "image": _abs(scenes / r["image"])} for r in records[:m]]
        (cap_src / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dt, rep = _cli(["index", "build", str(cap_src), "--model", model, "--out", str(cidx)]
                   + ["--items", "texts"])  # fmt: skip
    n_caps = sum(len(r["captions"]) for r in records[:m])
    log["steps"]["caption index build"] = {
        "seconds": dt,
        "scenes": m,
        "captions": n_caps,
        "captions_per_s": n_caps / dt,
        "report": rep,
    }

    # queries
    qi = 4242 % n
    img = _abs(scenes / records[qi]["image"])
    from lexlens.index.index import Index

    opened = Index.open(idx)
    self_id = next(i for i, r in opened.rows(range(n)).items() if _abs(r.path) == img)
    emb = np.asarray(opened.vectors([self_id]).dense[0], np.float32)
    emb_file = work / "query-embedding.npy"
    np.save(emb_file, emb)
    _, base = _cli(["search", str(idx), TEXT, "--k", "20"])
    cut = float(_hits(base)[4]["score"])
    log["min_score_cut"] = cut
    cli_queries: dict[str, list[str]] = {
        "text -> image": [str(idx), TEXT],
        "image -> image": [str(idx), img],
        "image + text": [str(idx), "--image", img, "--text", EDIT, "--weight", "0.5"],
        "item (more like this)": [str(idx), "--item", str(self_id)],
        "raw embedding": [str(idx), "--embedding", str(emb_file)],
        "--where filter": [str(idx), TEXT, "--where", WHERE],
        "--min-score cut-off": [str(idx), TEXT, "--k", "100", "--min-score", repr(cut)],
        "image -> text (captions)": [str(cidx), "--image", img],
    }
    answers: dict[str, list[dict[str, Any]]] = {}
    for name, args in cli_queries.items():
        times = []
        k_args = [] if "--k" in args else ["--k", str(K)]
        for _ in range(repeat):
            dt, res = _cli(["search", *args, *k_args])
            times.append(dt)
        answers[name] = _hits(res)
        log["queries"][name] = {
            "cli": " ".join(["lexlens", "search", *args]),
            "cli_wall_s_median": statistics.median(times),
            "hits": len(answers[name]),
            "top": [
                (h["id"], round(h["score"], 4), h.get("text") or Path(h["path"]).name)
                for h in answers[name][:3]
            ],  # fmt: skip
        }
    by_path = {_abs(scenes / r["image"]): r for r in records}
    c = log["checks"]
    c["text -> image: k hits, (-score, id) order"] = len(
        answers["text -> image"]
    ) == K and _sorted_ok(answers["text -> image"])
    # a dense index ranks the query's own scene first; a hybrid one (rerank) re-scores lexical
    # candidates, so its own scene is first when it is among them -- the rank is recorded
    for name in ("image -> image", "item (more like this)", "raw embedding"):
        ids = [h["id"] for h in answers[name]]
        log["queries"][name]["own_scene_rank"] = ids.index(self_id) + 1 if self_id in ids else None
        c[f"{name}: own scene in the top k"] = self_id in ids
    c["raw embedding: own scene first (dense semantics)"] = (
        answers["raw embedding"][0]["id"] == self_id
    )
    c["image + text: k hits"] = len(answers["image + text"]) == K
    want = [(by_path[_abs(h["path"])]["scene"]["kind"], by_path[_abs(h["path"])]["scene"]["background"])
            for h in answers["--where filter"]]  # fmt: skip
    c["--where: k hits, all satisfy the filter"] = len(want) == K and all(
        w == ("pair", "gray") for w in want
    )
    cut_hits = answers["--min-score cut-off"]
    c["--min-score: >= 5 hits, all >= cut-off"] = len(cut_hits) >= 5 and all(
        h["score"] >= cut for h in cut_hits
    )
    caps = answers["image -> text (captions)"]
    c["image -> text: k caption hits"] = len(caps) == K and all(h["text"] for h in caps)
    own = set(records[qi]["captions"])
    log["queries"]["image -> text (captions)"]["own_captions_in_top_k"] = sum(
        h["text"] in own for h in caps
    )

    # the same queries in one process, warm
    log["inproc"] = _inproc(idx, cidx, img, self_id, emb, cut, inproc_repeat)

    # add 1,000 new scenes
    dt, rep = _cli(["index", "add", str(idx), str(extra), "--workers", str(decode_workers)])
    log["steps"]["index add 1000 new"] = {"seconds": dt, "images_per_s": 1000 / dt, "report": rep}
    dt, info2 = _cli(["index", "info", str(idx)])
    log["index_after_add"] = {k: info2[k] for k in ("count", "disk_bytes", "generation")}
    new_rec = _records(extra)[17]
    new_img = _abs(extra / new_rec["image"])
    _, res = _cli(["search", str(idx), new_img, "--k", "3"])
    _, only = _cli(["search", str(idx), new_img, "--k", "3", "--where", f"path={new_img}"])
    c["add: 1000 added, count + 1000"] = rep["added"] == 1000 and info2["count"] == n + 1000
    log["new_scene_rank_by_its_image"] = next(
        (h["rank"] for h in _hits(res) if _abs(h["path"]) == new_img), None
    )
    c["add: a new scene is searchable (--where path=...)"] = [h["path"] for h in _hits(only)] == [
        new_img
    ]
    log["machine"]["load_avg_end"] = os.getloadavg()
    log["all_checks_pass"] = all(c.values())
    return log


def _inproc(
    idx: Path, cidx: Path, img: str, self_id: int, emb: np.ndarray, cut: float, repeat: int
) -> dict[str, Any]:
    """Median warm latency (ms) of each query type in one process (model and index loaded)."""
    from lexlens.index.index import Index
    from lexlens.search import Query

    t = time.perf_counter()
    index = Index.open(idx)
    index.search(TEXT, k=K)  # loads the model
    cap = Index.open(cidx)
    cap.search(Query(image=img), k=K)
    out: dict[str, Any] = {"open_and_first_query_s": time.perf_counter() - t}
    calls = {
        "text -> image": lambda: index.search(Query(text=TEXT), k=K),
        "image -> image": lambda: index.search(Query(image=img), k=K),
        "image + text": lambda: index.search(Query(image=img, text=EDIT, weight=0.5), k=K),
        "item (more like this)": lambda: index.search(Query(item=self_id), k=K),
        "raw embedding": lambda: index.search(Query(embedding=emb), k=K),
        "--where filter": lambda: index.search(Query(text=TEXT), k=K, where=WHERE),
        "--min-score cut-off": lambda: index.search(Query(text=TEXT), k=100, min_score=cut),
        "image -> text (captions)": lambda: cap.search(Query(image=img), k=K),
    }
    for name, fn in calls.items():
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = {"median_ms": 1e3 * statistics.median(times), "max_ms": 1e3 * max(times)}
    return out


def _mb(b: float) -> str:
    return f"{b / 2**20:,.1f} MiB"


def to_markdown(log: dict[str, Any]) -> str:
    """A Markdown report of :func:`run`'s log."""
    ix = log["index"]
    lines = [
        f"# Index of {log['n']:,} scenes through the CLI",
        "",
        f"Model `{log['model']}`, spec `{ix['spec']}` ({ix['dim']}-d), {ix['count']:,} items, "
        f"{_mb(ix['disk_bytes'])} on disk; machine: {log['machine']['cpus']} CPUs shared with "
        f"other jobs (load average {log['machine']['load_avg_start'][0]:.1f} at the start, "
        f"{log['machine']['load_avg_end'][0]:.1f} at the end), `nice 15`, "
        f"OMP_NUM_THREADS={log['machine']['omp_num_threads']}, "
        f"{log.get('decode_workers', 1)} decoding worker(s)."
        + (f" Model: {log['model_note']}." if log.get("model_note") else ""),
        "",
        "| step | seconds | rate |",
        "| --- | ---: | --- |",
    ]
    for name, s in log["steps"].items():
        sec = "reused" if s["seconds"] is None else f"{s['seconds']:.1f}"
        rate = next((f"{v:,.0f} {k.replace('_per_s', '')}/s" for k, v in s.items()
                     if k.endswith("_per_s") and v), "")  # fmt: skip
        lines.append(f"| {name} | {sec} | {rate} |")
    lines += [
        "",
        f"After adding 1,000 scenes: {log['index_after_add']['count']:,} items, "
        f"{_mb(log['index_after_add']['disk_bytes'])} on disk.",
        "",
        f"| query (k={log['k']}) | CLI wall s (median) | in-process ms (median) | hits | top hit |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, q in log["queries"].items():
        top = q["top"][0] if q["top"] else ("-", "-", "-")
        lines.append(
            f"| {name} | {q['cli_wall_s_median']:.2f} | {log['inproc'][name]['median_ms']:.2f} | "
            f"{q['hits']} | #{top[0]} ({top[1]}) {top[2]} |"
        )
    lines += [
        "",
        "CLI wall time includes starting Python, importing, loading the model and opening the "
        "index; the in-process column is the same query on an opened index (warm).",
        f"The `--min-score` cut-off is the 5th best score of the text query ({log['min_score_cut']:.4f}).",
        "",
        "Checks:",
        "",
    ]
    lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in log["checks"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write ``OUT.json`` and ``OUT.md``; exit 1 when a check fails."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder for scenes and indexes")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--model", default="native:scenes-mini")
    p.add_argument(
        "--tiny-model", type=Path, help="make and use a tiny random open_clip model here"
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each CLI query")
    p.add_argument("--inproc-repeat", type=int, default=20, help="warm runs in one process")
    p.add_argument("--spec", help="index spec of the image index (default: by size)")
    p.add_argument(
        "--decode-workers", type=int, default=1, help="image decoding processes (0: in process)"
    )
    p.add_argument("--caption-scenes", type=int, help="scenes whose captions are indexed (all)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/index_100k"))
    a = p.parse_args(argv)
    model = make_tiny_openclip(a.tiny_model) if a.tiny_model else a.model
    log = run(
        a.work,
        a.n,
        model,
        a.repeat,
        a.inproc_repeat,
        a.caption_scenes,
        spec=a.spec,
        decode_workers=a.decode_workers,
    )
    if a.tiny_model:
        log["model_note"] = TINY_NOTE
    text = json.dumps(log, indent=2, default=str)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(text + "\n")
    a.out.with_suffix(".md").write_text(to_markdown(log))
    print(to_markdown(log))
    return 0 if log["all_checks_pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
