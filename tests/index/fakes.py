"""A tiny deterministic encoder and scene-like images for the index tests (no torch).

Images are solid colours with a little noise. The dense embedding of an image is its mean
colour (3 numbers) followed by a small fixed projection of its 4x4 thumbnail; a text's is
the colour it names (or grey) followed by a small hash of its words. So "red" finds the red
images, and everything is a pure function of the input (same vectors in any process).
The lexical output scores the colour words.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from lexlens.models.base import Encoder, PreprocessConfig, SparseBatch

__all__ = ["COLORS", "FakeEncoder", "SlowFakeEncoder", "write_collection"]

COLORS = {
    "red": (230, 20, 20),
    "green": (20, 200, 40),
    "blue": (20, 40, 230),
    "yellow": (240, 230, 20),
    "purple": (140, 30, 160),
    "gray": (128, 128, 128),
}
VOCAB = list(COLORS)


def _colour_vec(name: str | None) -> np.ndarray:
    rgb = COLORS.get(name or "", (128, 128, 128))
    return np.asarray(rgb, np.float32) / 255.0 - 0.5


class FakeEncoder(Encoder):
    name = "test:fake"
    dim = 8
    preprocess_config = PreprocessConfig(image_size=4)

    def __init__(self, name: str = "test:fake", seed: int = 7) -> None:
        self.name = name
        self._proj = np.random.default_rng(seed).standard_normal((48, 5)).astype(np.float32) * 0.02

    def preprocess(self, image) -> np.ndarray:
        from PIL import Image

        im = image if isinstance(image, Image.Image) else Image.open(image)
        small = im.convert("RGB").resize((4, 4), Image.Resampling.BILINEAR)
        return (np.asarray(small, np.float32) / 255.0).transpose(2, 0, 1).copy()

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        flat = pixels.reshape(len(pixels), -1)
        mean = pixels.reshape(len(pixels), 3, -1).mean(axis=2) - 0.5
        return np.concatenate([mean, flat @ self._proj], axis=1)

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            words = t.lower().split()
            colour = next((w for w in words if w in COLORS), None)
            h = np.frombuffer(hashlib.sha256(t.encode()).digest()[:5], np.uint8).astype(np.float32)
            out.append(np.concatenate([_colour_vec(colour), (h / 255.0 - 0.5) * 0.02]))
        return np.stack(out).astype(np.float32)

    @property
    def has_lexical(self) -> bool:
        return True

    @property
    def vocab(self):
        return VOCAB

    def encode_images_lexical(
        self, images, batch_size: int = 64, progress: bool = False
    ) -> SparseBatch:
        pix = self._to_pixels(list(images))
        mean = pix.reshape(len(pix), 3, -1).mean(axis=2) - 0.5
        cols = np.stack([_colour_vec(c) for c in VOCAB])
        return SparseBatch.from_dense(np.maximum(mean @ cols.T, 0), top_k=2, vocab=VOCAB)

    def encode_texts_lexical(
        self, texts, batch_size: int = 256, progress: bool = False
    ) -> SparseBatch:
        x = np.asarray(
            [[1.0 if c in t.lower().split() else 0.0 for c in VOCAB] for t in texts], np.float32
        )
        return SparseBatch.from_dense(x, vocab=VOCAB)


class SlowFakeEncoder(FakeEncoder):
    """The same vectors, slowly (for the crash test: time to kill it mid-add)."""

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        time.sleep(0.15)
        return super()._forward_images(pixels)


def write_collection(folder: Path, n: int, seed: int = 0, start: int = 0) -> list[dict]:
    """``n`` PNG files ``img-NNNN.png`` of colour ``COLORS[i % 6]`` plus noise; and
    ``captions.jsonl`` records ``{"image", "captions", "color", "n"}`` (returned)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLORS)
    records = []
    for i in range(start, start + n):
        colour = names[i % len(names)]
        base = np.asarray(COLORS[colour], np.int16)
        px = np.clip(base + rng.integers(-25, 26, (6, 6, 3)), 0, 255).astype(np.uint8)
        rel = f"img-{i:04d}.png"
        Image.fromarray(px).save(folder / rel)
        records.append(
            {
                "image": rel,
                "captions": [f"a {colour} picture", f"{colour} number {i}"],
                "color": colour,
                "n": i % 5,
            }
        )
    return records
