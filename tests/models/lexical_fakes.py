"""A deterministic dense dual encoder without torch, for the lexical adapter tests.

Texts embed to a vector drawn from a generator seeded by the text's SHA-256 (any text, any
process: the same vector); images to a fixed random projection of their 4x4 colour
thumbnail. It counts the texts and image batches it encodes, so tests can see what a cache
saved.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lexlens.models.base import Encoder, PreprocessConfig

__all__ = ["HashEncoder", "colour_image"]


class HashEncoder(Encoder):
    """Hash-based text vectors, projected-thumbnail image vectors (module docstring)."""

    preprocess_config = PreprocessConfig(image_size=4)

    def __init__(self, name: str = "test:hash", seed: int = 3, dim: int = 12) -> None:
        self.name = name
        self.dim = dim
        self.seed = seed
        self._proj = np.random.default_rng(seed).standard_normal((48, dim)).astype(np.float32)
        self.texts_encoded = 0
        self.image_batches = 0

    def preprocess(self, image) -> np.ndarray:
        from PIL import Image

        im = image if isinstance(image, Image.Image) else Image.open(image)
        small = im.convert("RGB").resize((4, 4), Image.Resampling.BILINEAR)
        return (np.asarray(small, np.float32) / 255.0).transpose(2, 0, 1).copy()

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        self.image_batches += 1
        return (pixels.reshape(len(pixels), -1) - 0.5) @ self._proj

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        self.texts_encoded += len(texts)
        out = []
        for t in texts:
            h = hashlib.sha256(f"{self.seed}:{t}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
            out.append(rng.standard_normal(self.dim))
        return np.asarray(out, np.float32)


def colour_image(rgb: tuple[int, int, int], seed: int = 0, size: int = 8):
    """A PIL image of colour ``rgb`` plus a little deterministic noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    px = np.clip(np.asarray(rgb, np.int16) + rng.integers(-40, 41, (size, size, 3)), 0, 255)
    return Image.fromarray(px.astype(np.uint8))
