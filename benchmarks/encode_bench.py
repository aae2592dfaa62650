"""Image encoding throughput: decode+preprocess, model forward, end to end; JPEG draft mode.

    .venv/bin/python benchmarks/encode_bench.py [--n 1000] [--image-size 224] [--workers 2]

1. Generates ``--n`` scenes (64 px PNGs) and runs :func:`lexlens.eval.bench_encode.bench_encode`
   (the code behind ``lexlens bench encode``) with a random-initialised convolutional encoder
   in torch (no model files needed; a stand-in for a small dual encoder's image tower).
2. Writes ``--jpegs`` photo-sized JPEGs (1024x768) and times preprocessing to
   ``--image-size`` with draft-mode decoding (what lexlens does) against full decoding.

Results go to ``benchmarks/results/encode/encode_bench.json`` and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from lexlens.data.images import preprocess_image
from lexlens.data.scenes import generate_scenes
from lexlens.eval.bench_encode import bench_encode, format_bench_encode
from lexlens.models.base import Encoder, PreprocessConfig

__all__ = ["ConvEncoder", "main"]


class ConvEncoder(Encoder):
    """A random small CNN image tower (4 strided conv layers + pooling + projection)."""

    def __init__(self, image_size: int, dim: int = 256) -> None:
        import torch

        torch.manual_seed(0)
        self.name = f"bench:conv{image_size}"
        self.dim = dim
        self.preprocess_config = PreprocessConfig(image_size=image_size)
        chans = [3, 32, 64, 128, 256]
        layers: list = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.ReLU()]
        layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(256, dim)]
        self.net = torch.nn.Sequential(*layers).eval()

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.net(torch.from_numpy(pixels)).numpy()

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


def _jpeg_draft(n: int, image_size: int, folder: Path) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:768, 0:1024]
    paths = []
    for i in range(n):
        base = np.stack([(x + 3 * i) % 256, (y + 5 * i) % 256, (x + y) % 256], -1)
        px = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        p = folder / f"{i:04d}.jpg"
        Image.fromarray(px).save(p, quality=90)
        paths.append(p)
    cfg = PreprocessConfig(image_size=image_size)

    def full(p: Path) -> np.ndarray:
        with Image.open(p) as im:
            return preprocess_image(im.convert("RGB"), cfg)

    out = {}
    for name, fn in (("draft", lambda p: preprocess_image(p, cfg)), ("full_decode", full)):
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        out[name] = round(n / (time.perf_counter() - t0), 1)
    diff = float(np.mean([np.abs(preprocess_image(p, cfg) - full(p)).mean() for p in paths[:10]]))
    return {
        "n": n,
        "source": "1024x768 JPEG q90",
        "target": image_size,
        "images_per_second_one_process": out,
        "mean_abs_diff": round(diff, 4),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--jpegs", type=int, default=100)
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "encode" / "encode_bench.json")
    )
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lexlens-encode-bench-") as tmp:
        root = Path(tmp)
        gen = generate_scenes(
            root / "scenes", a.n, seed=0, split="test", workers=a.workers, progress=False
        )
        paths = [str(root / "scenes" / "images" / f"{i:06d}.png") for i in range(a.n)]
        enc = ConvEncoder(a.image_size)
        result = bench_encode(enc, paths, batch_size=a.batch_size, workers=a.workers)
        print(format_bench_encode(result))
        (root / "jpg").mkdir()
        jpeg = _jpeg_draft(a.jpegs, a.image_size, root / "jpg")
        print(
            f"JPEG 1024x768 -> {a.image_size}: {jpeg['images_per_second_one_process']} images/s (one process)"
        )
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "arch": platform.machine(),
            "python": platform.python_version(),
        },
        "scenes_generation": {
            k: gen[k] for k in ("n", "size", "workers", "seconds", "images_per_second")
        },
        "bench_encode": result,
        "jpeg_draft": jpeg,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
