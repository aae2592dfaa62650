"""The encoder interface every backend implements.

An encoder maps images and texts into one space:

* ``encode_images(images) -> float32 [n, d]`` and ``encode_texts(texts) -> float32 [n, d]``,
  rows L2-normalised, computed in batches;
* optionally a lexical (sparse) output over a word vocabulary, LexLIP style:
  ``encode_images_lexical`` / ``encode_texts_lexical`` return a :class:`SparseBatch`.
  Lexical *queries* (texts) can be encoded in one of :data:`QUERY_MODES`: ``"encoder"``
  (the full text encoder) or ``"inference-free"`` (tokenise + learned per-token weights, no
  network); :attr:`Encoder.lexical_query_modes` says which ones an encoder supports.

Images may be given as ``PIL.Image`` objects, file paths, or already-preprocessed
``float32 [3, H, W]`` arrays (what :meth:`Encoder.preprocess` returns). Decoding and
preprocessing can therefore run in worker processes (see ``lexlens.data.images``)
while the forward pass runs here.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

__all__ = [
    "Encoder",
    "WrappedEncoder",
    "TorchDualEncoder",
    "SparseBatch",
    "ImageInput",
    "PreprocessConfig",
    "l2_normalize",
    "QUERY_MODES",
    "encode_query_lexical",
    "check_batch_size",
    "uses_default_preprocess",
]

#: the ways a lexical query (a text) can be encoded: the full text encoder, or
#: inference-free (tokenise + learned per-token weights, no network at query time)
QUERY_MODES = ("encoder", "inference-free")

ImageInput = Union["Image.Image", str, Path, np.ndarray]  # noqa: F821 (PIL imported lazily)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation into a new float32 array."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes a tensor: resize (shorter side), centre crop, normalise."""

    image_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    resize_mode: str = "shortest"  # "shortest" (resize + centre crop) or "squash"
    interpolation: str = "bicubic"


@dataclass
class SparseBatch:
    """A batch of sparse non-negative vectors over a vocabulary, in CSR layout.

    ``indptr[n+1]`` (int64), ``indices[nnz]`` (int32 vocabulary ids), ``values[nnz]`` (float32).
    Row ``i`` is ``indices[indptr[i]:indptr[i+1]]`` with its ``values``.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int
    vocab: Sequence[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.indices[a:b], self.values[a:b]

    def rows(self, start: int, stop: int) -> SparseBatch:
        """Rows ``start:stop`` as a batch of their own (``0 <= start <= stop <= len``)."""
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        return replace(
            self,
            indptr=self.indptr[start : stop + 1] - a,
            indices=self.indices[a:b],
            values=self.values[a:b],
        )

    def to_dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.vocab_size), dtype=np.float32)
        for i in range(len(self)):
            idx, val = self.row(i)
            out[i, idx] = val
        return out

    @classmethod
    def from_dense(
        cls, x: np.ndarray, top_k: int | None = None, vocab: Sequence[str] | None = None
    ) -> SparseBatch:
        """Keep the positive entries of each row (optionally only the ``top_k`` largest)."""
        x = np.asarray(x, dtype=np.float32)
        n, v = x.shape
        indptr = [0]
        indices: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for r in range(n):
            nz = np.flatnonzero(x[r] > 0)
            if top_k is not None and len(nz) > top_k:
                # (-value, id) order so that the cut is deterministic under ties
                order = np.lexsort((nz, -x[r, nz]))[:top_k]
                nz = np.sort(nz[order])
            indices.append(nz.astype(np.int32))
            values.append(x[r, nz])
            indptr.append(indptr[-1] + len(nz))
        return cls(
            indptr=np.asarray(indptr, dtype=np.int64),
            indices=np.concatenate(indices) if indices else np.zeros(0, np.int32),
            values=np.concatenate(values) if values else np.zeros(0, np.float32),
            vocab_size=v,
            vocab=vocab,
        )

    @classmethod
    def concat(cls, parts: Sequence[SparseBatch]) -> SparseBatch:
        if not parts:
            raise ValueError("nothing to concatenate")
        offs = 0
        indptrs = [np.zeros(1, np.int64)]
        for p in parts:
            indptrs.append(p.indptr[1:] + offs)
            offs += int(p.indptr[-1])
        return cls(
            indptr=np.concatenate(indptrs),
            indices=np.concatenate([p.indices for p in parts]).astype(np.int32),
            values=np.concatenate([p.values for p in parts]).astype(np.float32),
            vocab_size=parts[0].vocab_size,
            vocab=parts[0].vocab,
        )


def encode_query_lexical(
    encoder: Encoder,
    texts: Sequence[str],
    mode: str = "encoder",
    batch_size: int = 256,
    progress: bool = False,
) -> SparseBatch:
    """Lexical weights of query texts in ``mode``, checked by :meth:`Encoder.check_query_mode`.

    The default mode is requested without the ``mode`` keyword, so encoders written before
    query modes existed keep working.
    """
    encoder.check_query_mode(mode)
    if mode == "encoder":
        return encoder.encode_texts_lexical(texts, batch_size=batch_size, progress=progress)
    return encoder.encode_texts_lexical(texts, batch_size=batch_size, progress=progress, mode=mode)


class TorchDualEncoder(Protocol):
    """What the training loop needs of a model (duck-typed ``torch.nn.Module``).

    * ``tokenize(texts) -> dict[str, Tensor]`` (e.g. ``input_ids``, ``attention_mask``);
    * ``image_features(pixels[b, 3, H, W]) -> Tensor[b, d]`` (unnormalised);
    * ``text_features(tokens) -> Tensor[b, d]`` (unnormalised);
    * ``logit_scale``: a parameter holding log(1 / temperature).
    """

    def tokenize(self, texts: list[str]) -> dict[str, Any]: ...

    def image_features(self, pixels: Any) -> Any: ...

    def text_features(self, tokens: dict[str, Any]) -> Any: ...


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` if it is a positive integer, else a one-line UsageError."""
    from lexlens.errors import UsageError

    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise UsageError(f"batch size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


class Encoder(abc.ABC):
    """A dual encoder: images and texts into one L2-normalised space.

    Subclasses implement :meth:`_forward_images` (preprocessed ``float32 [b, 3, H, W]``
    -> ``[b, d]``) and :meth:`_forward_texts` (list of str -> ``[b, d]``); batching,
    input conversion and normalisation live here.
    """

    #: the spec string this encoder was loaded from, e.g. ``"native:scenes-mini"``
    name: str = ""
    #: embedding dimension
    dim: int = 0
    preprocess_config: PreprocessConfig = PreprocessConfig()

    # -- to implement -------------------------------------------------------------
    @abc.abstractmethod
    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        """Unnormalised image embeddings of a preprocessed batch ``[b, 3, H, W]``."""

    @abc.abstractmethod
    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        """Unnormalised text embeddings of a batch of strings."""

    # -- lexical output (optional) --------------------------------------------------
    @property
    def has_lexical(self) -> bool:
        """True when this encoder produces sparse lexical weights."""
        return False

    @property
    def vocab(self) -> Sequence[str]:
        """The lexical vocabulary (index -> word); empty when there is no lexical output."""
        return ()

    def encode_images_lexical(
        self, images: Sequence[ImageInput], batch_size: int = 64, progress: bool = False
    ) -> SparseBatch:
        """Sparse lexical weights of images; raises when the encoder has no lexical output."""
        raise NotImplementedError(f"{self.name} has no lexical output")

    def encode_texts_lexical(
        self,
        texts: Sequence[str],
        batch_size: int = 256,
        progress: bool = False,
        mode: str = "encoder",
    ) -> SparseBatch:
        """Sparse lexical weights of texts in query ``mode`` (one of :attr:`lexical_query_modes`);
        raises when the encoder has no lexical output."""
        raise NotImplementedError(f"{self.name} has no lexical output")

    @property
    def lexical_query_modes(self) -> tuple[str, ...]:
        """The :data:`QUERY_MODES` :meth:`encode_texts_lexical` supports (``("encoder",)`` by
        default for a lexical encoder, none without lexical output)."""
        return ("encoder",) if self.has_lexical else ()

    def check_query_mode(self, mode: str) -> str:
        """``mode`` if this encoder can encode lexical queries that way, else a one-line
        :class:`~lexlens.errors.UsageError`."""
        from lexlens.errors import UsageError

        if mode not in QUERY_MODES:
            raise UsageError(
                f"unknown query mode {mode!r}: expected one of {', '.join(QUERY_MODES)}"
            )
        supported = self.lexical_query_modes
        if mode not in supported:
            has = f"only {', '.join(supported)}" if supported else "no lexical output"
            raise UsageError(f"model {self.name} cannot encode {mode} queries (it has {has})")
        return mode

    # -- shared machinery -------------------------------------------------------------
    def preprocess(self, image: Any) -> np.ndarray:
        """One image (PIL image or path) -> ``float32 [3, H, W]`` ready for the forward pass.

        A path that does not decode raises a one-line :class:`~lexlens.errors.DataError`
        naming the file."""
        from lexlens.data.images import preprocess_image, unreadable_image

        try:
            return preprocess_image(image, self.preprocess_config)
        except Exception as e:
            err = unreadable_image(image, e)
            if err is e:
                raise
            raise err from None

    def _to_pixels(self, images: Sequence[ImageInput]) -> np.ndarray:
        arrs = [im if isinstance(im, np.ndarray) else self.preprocess(im) for im in images]
        return np.stack(arrs).astype(np.float32, copy=False)

    def encode_images(
        self, images: Sequence[ImageInput], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """Embeddings ``float32 [n, dim]`` (rows L2-normalised) of images."""
        return self._encode_image_batches(images, batch_size, progress, self._forward_images)

    def _encode_image_batches(
        self,
        images: Sequence[ImageInput],
        batch_size: int,
        progress: bool,
        forward: Callable[[np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """Images preprocessed ``batch_size`` at a time, each batch through ``forward``
        (pixels ``[b, 3, H, W]`` -> ``[b, dim]``), rows L2-normalised."""
        from lexlens.progress import progress_bar

        check_batch_size(batch_size)
        images = list(images)
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with progress_bar(
            total=len(images), desc="encode images", unit="img", enabled=progress
        ) as bar:
            for a in range(0, len(images), batch_size):
                batch = self._to_pixels(images[a : a + batch_size])
                out[a : a + len(batch)] = l2_normalize(forward(batch))
                bar.update(len(batch))
        return out

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """Embeddings ``float32 [n, dim]`` (rows L2-normalised) of texts."""
        from lexlens.progress import progress_bar

        check_batch_size(batch_size)
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with progress_bar(
            total=len(texts), desc="encode texts", unit="txt", enabled=progress
        ) as bar:
            for a in range(0, len(texts), batch_size):
                batch = texts[a : a + batch_size]
                out[a : a + len(batch)] = l2_normalize(self._forward_texts(batch))
                bar.update(len(batch))
        return out

    def encode_text_queries(
        self, texts: Sequence[str], mode: str = "encoder", batch_size: int = 256
    ) -> tuple[np.ndarray, SparseBatch]:
        """Dense embeddings ``float32 [n, dim]`` and lexical weights (query ``mode``) of query
        texts: the vectors of :meth:`encode_texts` and :func:`encode_query_lexical`. A backend
        whose towers give both from one forward pass overrides this to run it once."""
        texts = [str(t) for t in texts]
        sparse = encode_query_lexical(self, texts, mode, batch_size=batch_size)
        return self.encode_texts(texts, batch_size=batch_size), sparse

    # -- training hooks (backends that can be fine-tuned implement these) -------------
    def trainable(self) -> Any:
        """The underlying ``torch.nn.Module`` following :class:`TorchDualEncoder`, for training.

        Backends that cannot be trained raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"{self.name} cannot be trained")

    def save(self, path: str | Path) -> None:
        """Write a checkpoint that this backend loads back from ``path`` (identical embeddings)."""
        raise NotImplementedError(f"{self.name} cannot be saved")

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (name, dimension, lexical output, preprocessing)."""
        return {
            "name": self.name,
            "dim": self.dim,
            "lexical": self.has_lexical,
            "vocab_size": len(self.vocab),
            "image_size": self.preprocess_config.image_size,
        }


def uses_default_preprocess(encoder: Encoder) -> bool:
    """Whether ``encoder`` preprocesses images with :meth:`Encoder.preprocess`, a function of
    its ``preprocess_config`` alone (decoding processes can then run it without the model)."""
    return type(encoder).preprocess is Encoder.preprocess


class WrappedEncoder(Encoder):
    """An encoder whose dense embeddings are those of another, ``inner``: the same name,
    dimension, preprocessing settings and forward passes (wrappers add to it)."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.preprocess_config = inner.preprocess_config

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        return self.inner._forward_images(pixels)

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        return self.inner._forward_texts(texts)
