"""Tiny deterministic encoders for the evaluation tests (no torch, no model files).

* :class:`TableEncoder`: vectors looked up in tables (image key -> vector, text -> vector),
  so a test controls every score exactly (dyadic values: dot products are exact in float32,
  whatever the summation order, so ties are real ties everywhere).
* :class:`ColourEncoder`: reads image files; an image's embedding is its mean colour, a
  text's the colour it names; the lexical output weights the colour words.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lexlens.models.base import Encoder, PreprocessConfig, SparseBatch

__all__ = ["TableEncoder", "ColourEncoder", "COLOURS", "write_png"]

COLOURS = {
    "red": (230, 20, 20),
    "green": (20, 200, 40),
    "blue": (20, 40, 230),
    "yellow": (240, 230, 20),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
}


def write_png(path: Path, rgb: tuple[int, int, int], size: int = 12) -> Path:
    """A solid-colour PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path)
    return path


class TableEncoder(Encoder):
    """Vectors from tables; images are any hashable keys (e.g. ints or paths)."""

    def __init__(
        self,
        images: dict,
        texts: dict[str, np.ndarray],
        images_lex: dict | None = None,
        texts_lex: dict[str, np.ndarray] | None = None,
        name: str = "test:table",
    ) -> None:
        self.name = name
        self._img, self._txt = images, texts
        self._img_lex, self._txt_lex = images_lex, texts_lex
        self.dim = len(next(iter(texts.values())))

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:  # not used
        raise AssertionError

    def _forward_texts(self, texts: list[str]) -> np.ndarray:  # not used
        raise AssertionError

    def encode_images(self, images, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.stack([self._img[im] for im in images]).astype(np.float32)

    def encode_texts(self, texts, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        return np.stack([self._txt[t] for t in texts]).astype(np.float32)

    @property
    def has_lexical(self) -> bool:
        return self._img_lex is not None

    @property
    def vocab(self) -> Sequence[str]:
        if self._txt_lex is None:
            return ()
        return [f"w{i}" for i in range(len(next(iter(self._txt_lex.values()))))]

    def encode_images_lexical(self, images, batch_size: int = 64, progress: bool = False):
        assert self._img_lex is not None
        return SparseBatch.from_dense(np.stack([self._img_lex[im] for im in images]))

    def encode_texts_lexical(self, texts, batch_size: int = 256, progress: bool = False):
        assert self._txt_lex is not None
        return SparseBatch.from_dense(np.stack([self._txt_lex[t] for t in texts]))


def _colour(name: str | None) -> np.ndarray:
    rgb = COLOURS.get(name or "", (128, 128, 128))
    return np.asarray(rgb, np.float32) / 255.0 - 0.5


class ColourEncoder(Encoder):
    """Mean colour of an image file vs. the colour word of a text (see module docstring)."""

    dim = 3
    preprocess_config = PreprocessConfig(image_size=4)

    def __init__(self, name: str = "test:colour") -> None:
        self.name = name

    def preprocess(self, image) -> np.ndarray:
        from PIL import Image

        im = image if isinstance(image, Image.Image) else Image.open(image)
        small = im.convert("RGB").resize((4, 4))
        return (np.asarray(small, np.float32) / 255.0).transpose(2, 0, 1).copy()

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        return pixels.reshape(len(pixels), 3, -1).mean(axis=2) - 0.5 + 1e-3

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            words = t.lower().replace(".", " ").split()
            out.append(_colour(next((w for w in words if w in COLOURS), None)) + 1e-3)
        return np.stack(out)

    @property
    def has_lexical(self) -> bool:
        return True

    @property
    def vocab(self) -> Sequence[str]:
        return list(COLOURS)

    def encode_images_lexical(self, images, batch_size: int = 64, progress: bool = False):
        mean = self._forward_images(self._to_pixels(list(images)))
        ref = np.stack([_colour(c) for c in COLOURS])
        dist = ((mean[:, None, :] - ref[None]) ** 2).sum(-1)
        return SparseBatch.from_dense(np.exp(-4 * dist).astype(np.float32), vocab=self.vocab)

    def encode_texts_lexical(self, texts, batch_size: int = 256, progress: bool = False):
        rows = np.zeros((len(texts), len(COLOURS)), np.float32)
        for r, t in enumerate(texts):
            for w in t.lower().replace(".", " ").split():
                if w in COLOURS:
                    rows[r, list(COLOURS).index(w)] = 1.0
        return SparseBatch.from_dense(rows, vocab=self.vocab)
