"""``lexlens bench encode``: where does image encoding time go?

On the same ``n`` image files, in one run, three measurements (images per second):

* ``decode``: reading, decoding and preprocessing alone, in ``workers`` processes
  (:func:`lexlens.data.images.iter_preprocessed`), exactly as the index builder does;
* ``forward``: the model alone (:meth:`Encoder.encode_images`) on the arrays the decode
  stage produced, after one warm-up batch;
* ``end_to_end``: both together, decoding in the workers while the model runs in this
  process, i.e. what ``lexlens index build`` achieves.

The files are read once before timing, so every stage sees the same (warm) page cache.
``end_to_end`` close to ``min(decode, forward)`` means the two overlap well; the smaller of
the two is the bottleneck. Unreadable files are skipped and counted. ``consistent`` checks
that the end-to-end embeddings equal the forward-alone ones.

The stages pass over the same images (the warm-up batch is the forward stage's first): an
encoder must not answer a repeated :meth:`Encoder.encode_images` from a cache. The
``lexical:`` adapter keeps a batch's forward pass only for its lexical pass over that batch
(:meth:`LexicalAdapter._handoff <lexlens.models.lexical_adapter.LexicalAdapter._handoff>`),
so every stage runs the model.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lexlens.errors import UsageError
from lexlens.models.base import Encoder

__all__ = ["bench_encode", "format_bench_encode", "MAX_KEPT_BYTES"]

#: at most this many bytes of preprocessed arrays are kept between the decode and forward stages
MAX_KEPT_BYTES = 2 << 30


def _warm(paths: Sequence[str]) -> int:
    """Read every file once (page cache); returns the bytes read."""
    total = 0
    for p in paths:
        try:
            with open(p, "rb") as f:
                total += len(f.read())
        except OSError:
            pass
    return total


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("inf")


def bench_encode(
    encoder: Encoder,
    paths: Sequence[str | os.PathLike[str]],
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure decode, forward and end-to-end image throughput (module docstring).

    Returns a JSON-able dict: ``model``, ``n``, ``failed``, ``image_size``, ``batch_size``,
    ``workers``, and per stage (``decode``, ``forward``, ``end_to_end``) ``seconds``,
    ``images`` and ``images_per_second``; ``bottleneck``, ``overlap`` (end-to-end rate over
    the slower stage's), ``consistent`` and ``max_abs_diff``.
    """
    from lexlens.data.images import iter_preprocessed

    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise UsageError("bench encode needs at least one image")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    cfg = encoder.preprocess_config
    n_workers = (os.cpu_count() or 1) if workers is None else max(0, int(workers))
    say = log or (lambda _: None)
    _warm(paths)

    # (a) decode + preprocess alone
    say(f"decode: {len(paths)} images on {n_workers} workers")
    per_image = 3 * cfg.image_size * cfg.image_size * 4
    keep_max = max(batch_size, MAX_KEPT_BYTES // per_image)
    kept: list[np.ndarray] = []
    t0 = time.perf_counter()
    batches = iter_preprocessed(
        paths, cfg, workers=n_workers, batch_size=batch_size, progress=progress
    )
    for _, arr in batches:
        if sum(len(k) for k in kept) < keep_max:
            kept.append(arr)
    t_decode = time.perf_counter() - t0
    report = batches.report
    if report.ok == 0:
        raise UsageError(f"none of the {len(paths)} images could be decoded")
    pixels = np.concatenate(kept)[:keep_max]

    # (b) forward alone, on the preprocessed arrays
    say(f"forward: {len(pixels)} preprocessed images, batch {batch_size}")
    encoder.encode_images(list(pixels[:batch_size]), batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    emb_forward = encoder.encode_images(list(pixels), batch_size=batch_size, progress=progress)
    t_forward = time.perf_counter() - t0

    # (c) end to end: decoding in the workers while the model runs here
    say("end to end: decode in workers + forward")
    t0 = time.perf_counter()
    n_e2e = 0
    first: list[np.ndarray] = []
    for _, arr in iter_preprocessed(
        paths, cfg, workers=n_workers, batch_size=batch_size, progress=progress
    ):
        emb = encoder.encode_images(list(arr), batch_size=batch_size)
        if n_e2e < len(pixels):
            first.append(emb[: len(pixels) - n_e2e])
        n_e2e += len(arr)
    t_e2e = time.perf_counter() - t0
    emb_e2e = np.concatenate(first)
    diff = (
        float(np.abs(emb_e2e - emb_forward).max())
        if emb_e2e.shape == emb_forward.shape
        else float("inf")
    )

    stages = {
        "decode": {
            "images": report.ok,
            "seconds": round(t_decode, 6),
            "images_per_second": _rate(report.ok, t_decode),
        },
        "forward": {
            "images": len(pixels),
            "seconds": round(t_forward, 6),
            "images_per_second": _rate(len(pixels), t_forward),
        },
        "end_to_end": {
            "images": n_e2e,
            "seconds": round(t_e2e, 6),
            "images_per_second": _rate(n_e2e, t_e2e),
        },
    }
    slower = min(("decode", "forward"), key=lambda s: stages[s]["images_per_second"])
    return {
        "model": encoder.name,
        "n": len(paths),
        "failed": report.n_failed,
        "failed_examples": [f"{p}: {why}" for p, why in report.failed[:5]],
        "image_size": cfg.image_size,
        "batch_size": batch_size,
        "workers": n_workers,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        **stages,
        "bottleneck": slower,
        "overlap": round(
            stages["end_to_end"]["images_per_second"] / stages[slower]["images_per_second"], 3
        ),
        "consistent": diff <= 1e-5,
        "max_abs_diff": diff,
    }


def format_bench_encode(r: dict[str, Any]) -> str:
    """A small text table of a :func:`bench_encode` result."""
    lines = [
        f"{r['model']}: {r['n']} images ({r['failed']} unreadable), {r['image_size']}px, "
        f"batch {r['batch_size']}, {r['workers']} decode workers on {r['cpus']} CPUs",
        f"{'stage':<12}{'images':>8}{'seconds':>10}{'images/s':>11}",
    ]
    for stage in ("decode", "forward", "end_to_end"):
        s = r[stage]
        lines.append(
            f"{stage:<12}{s['images']:>8}{s['seconds']:>10.3f}{s['images_per_second']:>11.1f}"
        )
    lines.append(
        f"bottleneck: {r['bottleneck']}; end to end reaches {100 * r['overlap']:.0f}% of it; "
        f"embeddings {'match' if r['consistent'] else 'DIFFER'} (max |diff| {r['max_abs_diff']:.2g})"
    )
    return "\n".join(lines)
