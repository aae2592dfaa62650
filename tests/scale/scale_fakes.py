"""A tiny deterministic encoder for the scale tests (dense + lexical, no torch).

Images are decoded with PIL and shrunk to 4x4; the dense embedding is a fixed random
projection of the pixels, the lexical weights a fixed non-negative projection onto a
12-word vocabulary keeping the 4 largest. Everything is a pure function of the file, so
any process (a Ray worker, the test itself) computes the same vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lexlens.models.base import Encoder, PreprocessConfig, SparseBatch

__all__ = ["FakeEncoder", "make_fake_encoder", "write_images", "register_fake_backend"]

VOCAB = [f"w{i}" for i in range(12)]


class FakeEncoder(Encoder):
    name = "fake:tiny"
    dim = 16
    preprocess_config = PreprocessConfig(image_size=4)

    def __init__(self) -> None:
        rng = np.random.default_rng(1234)
        self._w = rng.standard_normal((48, self.dim)).astype(np.float32)
        self._lex = rng.standard_normal((48, len(VOCAB))).astype(np.float32)

    def preprocess(self, image) -> np.ndarray:
        from PIL import Image

        if not isinstance(image, Image.Image):
            with Image.open(image) as im:
                return self.preprocess(im.convert("RGB"))
        small = image.convert("RGB").resize((4, 4), Image.Resampling.BILINEAR)
        return (np.asarray(small, np.float32) / 255.0).transpose(2, 0, 1).copy()

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        return pixels.reshape(len(pixels), -1) @ self._w

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack(
            [np.resize(np.frombuffer(t.encode() or b"x", np.uint8), self.dim) for t in texts]
        ).astype(np.float32)

    @property
    def has_lexical(self) -> bool:
        return True

    @property
    def vocab(self):
        return VOCAB

    def encode_images_lexical(
        self, images, batch_size: int = 64, progress: bool = False
    ) -> SparseBatch:
        x = self._to_pixels(list(images)).reshape(len(images), -1) @ self._lex
        return SparseBatch.from_dense(np.maximum(x, 0), top_k=4, vocab=VOCAB)


def make_fake_encoder() -> FakeEncoder:
    """Zero-argument factory (what ``encode_with_ray`` ships to its workers)."""
    return FakeEncoder()


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` random 6x5 PNG files named ``img-000.png`` ..."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = folder / f"img-{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def register_fake_backend() -> None:
    """Make the model spec ``fake:tiny`` loadable in this process (driver or Ray worker)."""
    from lexlens.models import registry

    registry._ensure_builtin_backends()  # builtins first: the registry fills itself only when empty
    registry.register_backend("fake", lambda target: FakeEncoder(), lambda: ["tiny"], "test fake")
