"""Which image weights, vocabulary, prompts and top-k make the training-free ``lexical:``
adapter retrieve best? Measured on generated held-out scenes with a real encoder.

    python benchmarks/lexical_adapter_bench.py --model native:scenes-mini --n 1000 \
        [--data DIR] [--weights z,sim,img,softmax] [--topk 8,16,32,64] \
        [--words scenes,minilm] [--prompts photo,plain] [--qtopk 0,16] \
        [--out benchmarks/results/lexical_adapter]

The dense embeddings of the images and captions are computed once; every variant turns the
same image embeddings into lexical vectors (``LexicalAdapter.lexical_from_dense``) and the
captions into query vectors in both query modes (``encoder``: words + the caption
embedding's ``qtopk`` nearest words; ``inference-free``: the words alone, so it is measured
once per variant whatever ``--qtopk`` lists), and is scored with the standard protocol (R@1/5/10
both ways, rSum; ties by (-score, id)) on the full sparse score matrix. Writes
``OUT/<model>.json`` and ``.md``: per variant the lexical rSum and its share of the dense rSum
of the same model, and the command that produced them.

The README's table (``native:scenes-mini``, ``benchmarks/results/lexical_adapter/``) is::

    python benchmarks/lexical_adapter_bench.py --model native:scenes-mini --n 1000 \
        --weights center,z,sim --topk 32 --prompts photo --qtopk 16,32
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from lexlens.data.scenes import generate_scenes
    from lexlens.eval.exact import sparse_scores
    from lexlens.eval.protocol import load_eval_set, retrieval_block
    from lexlens.models.lexical_adapter import LexicalAdapter, LexicalOptions
    from lexlens.models.registry import load_encoder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the inner model spec")
    p.add_argument("--data", help="a scenes folder (default: N generated held-out scenes)")
    p.add_argument("--n", type=int, default=1000, help="generated scenes (without --data)")
    p.add_argument("--size", type=int, default=64, help="generated image size")
    p.add_argument("--weights", default="z,center,sim,img,softmax")
    p.add_argument("--topk", default="8,16,32,64")
    p.add_argument("--words", default="scenes,minilm")
    p.add_argument("--prompts", default="photo,plain")
    p.add_argument("--temps", default="0.01,0.05", help="softmax temperatures")
    p.add_argument("--qtopk", default="16", help="encoder-mode query words (comma list)")
    p.add_argument("--out", default="benchmarks/results/lexical_adapter")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = a.data
        if data_dir is None:
            data_dir = str(Path(tmp) / "scenes")
            generate_scenes(data_dir, a.n, seed=12345, size=a.size, split="test", progress=False)
        data = load_eval_set(data_dir)
        inner = load_encoder(a.model)
        t0 = time.perf_counter()
        img = inner.encode_images(data.images, progress=True)
        txt = inner.encode_texts(data.texts, progress=True)
        encode_s = time.perf_counter() - t0
    t2i = data.text_to_image
    dense = retrieval_block(txt @ img.T, t2i, (1, 5, 10))
    print(f"{a.model}: dense rSum {dense['rsum']:.1f} ({len(img)} images)", file=sys.stderr)

    rows = []
    free_done: set[tuple[str, str, str, str, str]] = set()  # inference-free ignores qtopk
    grid = itertools.product(
        a.words.split(","),
        a.prompts.split(","),
        a.weights.split(","),
        a.topk.split(","),
        a.qtopk.split(","),
    )
    for words, prompts, weight, topk, qtopk in grid:
        temps = a.temps.split(",") if weight == "softmax" else ["0.01"]
        for temp in temps:
            opts = LexicalOptions(
                topk=int(topk),
                weight=weight,
                words=words,
                prompts=prompts,
                temp=float(temp),
                qtopk=int(qtopk),
            )
            enc = LexicalAdapter(inner, opts)
            t0 = time.perf_counter()
            enc.word_embeddings(progress=True)
            if weight in ("z", "center"):
                enc.reference_stats(progress=True)
            tables_s = time.perf_counter() - t0
            img_s = enc.lexical_from_dense(img)
            modes = ["encoder"] if int(qtopk) else []
            if (words, prompts, weight, topk, temp) not in free_done:
                free_done.add((words, prompts, weight, topk, temp))
                modes.append("inference-free")
            for mode in modes:
                t0 = time.perf_counter()
                txt_s = enc.encode_texts_lexical(data.texts, mode=mode)
                lex_s = time.perf_counter() - t0
                block = retrieval_block(sparse_scores(txt_s, img_s), t2i, (1, 5, 10))
                row = {
                    "spec": enc.name,
                    "mode": mode,
                    "words": words,
                    "vocab": len(enc.vocab),
                    "prompts": prompts,
                    "weight": weight,
                    "temp": float(temp) if weight == "softmax" else None,
                    "topk": int(topk),
                    "qtopk": int(qtopk) if mode == "encoder" else 0,
                    "rsum": block["rsum"],
                    "share_of_dense": block["rsum"] / dense["rsum"] if dense["rsum"] else None,
                    "t2i_R@1": block["t2i"]["R@1"],
                    "i2t_R@1": block["i2t"]["R@1"],
                    "nnz_per_image": float(len(img_s.indices) / max(len(img_s), 1)),
                    "nnz_per_query": float(len(txt_s.indices) / max(len(txt_s), 1)),
                    "tables_s": tables_s,
                    "query_encode_s": lex_s,
                }
                rows.append(row)
                print(
                    f"{words:>6} {prompts:>5} {weight:>7} t={temp:<5} k={topk:>3} {mode:>14}: "
                    f"rSum {row['rsum']:6.1f} ({100 * (row['share_of_dense'] or 0):5.1f}% of "
                    "dense)",
                    file=sys.stderr,
                )
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/lexical_adapter_bench.py", *map(shlex.quote, args)])
    result = {
        "command": command,
        "model": a.model,
        "data": a.data or f"generated scenes n={a.n} size={a.size} seed=12345 split=test",
        "n_images": len(img),
        "n_texts": len(data.texts),
        "dense": dense,
        "dense_encode_s": encode_s,
        "variants": rows,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", a.model)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# lexical adapter on {a.model}: {len(img)} images, dense rSum {dense['rsum']:.1f}",
        "",
        f"`{command}`",
        "",
        "| mode | words | prompts | weight | temp | topk | qtopk | rSum | % of dense | t2i R@1 "
        "| i2t R@1 | words/image | words/query |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(rows, key=lambda r: -r["rsum"]):
        lines.append(
            f"| {r['mode']} | {r['words']} | {r['prompts']} | {r['weight']} | {r['temp'] or ''} "
            f"| {r['topk']} | {r['qtopk']} | {r['rsum']:.1f} "
            f"| {100 * (r['share_of_dense'] or 0):.1f} | {r['t2i_R@1']:.1f} "
            f"| {r['i2t_R@1']:.1f} | {r['nnz_per_image']:.1f} | {r['nnz_per_query']:.1f} |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
