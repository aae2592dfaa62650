"""Torch adapters of the ``openclip:`` and ``hf:`` backends (imported only when a model loads).

Each adapter is a ``torch.nn.Module`` following :class:`lexlens.models.base.TorchDualEncoder`
around the library's own model, and :class:`TorchEncoder` turns any such module into an
:class:`~lexlens.models.base.Encoder`. The encoder computes its embeddings through the very
module that :meth:`TorchEncoder.trainable` hands to the training loop, so a fine-tuned module
encodes exactly as it trained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lexlens.models.base import Encoder, PreprocessConfig

__all__ = ["TorchEncoder", "OpenClipDualEncoder", "HFDualEncoder"]


def _as_pixels(pixels: Any) -> torch.Tensor:
    return (
        pixels
        if isinstance(pixels, torch.Tensor)
        else torch.from_numpy(np.asarray(pixels, np.float32))
    )


def _features(out: Any) -> torch.Tensor:
    """transformers 4 returns a tensor from ``get_*_features``, 5 an output with ``pooler_output``."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _LibraryDualEncoder(nn.Module):
    """What the adapters share: the library model as ``self.model`` and its loss parameters."""

    model: nn.Module

    @property
    def logit_scale(self) -> nn.Parameter:
        """log(1 / temperature), the model's own parameter."""
        return self.model.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        """The SigLIP bias parameter; None for models trained with the CLIP loss."""
        return getattr(self.model, "logit_bias", None)

    def image_features(self, pixels: Any) -> torch.Tensor:
        raise NotImplementedError

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, pixels: Any, tokens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image features, text features), both unnormalised."""
        return self.image_features(pixels), self.text_features(tokens)


class OpenClipDualEncoder(_LibraryDualEncoder):
    """An open_clip ``CLIP`` / ``CustomTextCLIP`` model and its tokenizer as a TorchDualEncoder."""

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids ``[b, context_length]`` (open_clip pads to its fixed context length)."""
        return {"input_ids": self.tokenizer(list(texts))}

    def image_features(self, pixels: Any) -> torch.Tensor:
        """Unnormalised image embeddings ``[b, d]``."""
        return self.model.encode_image(_as_pixels(pixels))

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unnormalised text embeddings ``[b, d]``."""
        return self.model.encode_text(tokens["input_ids"])


class HFDualEncoder(_LibraryDualEncoder):
    """A transformers ``CLIPModel`` / ``SiglipModel`` and its tokenizer as a TorchDualEncoder.

    CLIP pads to the longest text and masks the padding (``padding="longest"``,
    ``attention_mask=True``); SigLIP was trained on texts padded to ``max_length`` tokens
    without a mask (``"max_length"``, ``False``).
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, max_length: int, padding: str, attention_mask: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.padding = padding
        self.use_attention_mask = attention_mask

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` (and ``attention_mask`` for families that use one)."""
        enc = self.tokenizer(
            list(texts),
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        keys = ("input_ids", "attention_mask") if self.use_attention_mask else ("input_ids",)
        return {k: enc[k] for k in keys if k in enc}

    def image_features(self, pixels: Any) -> torch.Tensor:
        """Unnormalised (projected) image embeddings ``[b, d]``."""
        return _features(self.model.get_image_features(pixel_values=_as_pixels(pixels)))

    def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unnormalised (projected) text embeddings ``[b, d]``."""
        return _features(self.model.get_text_features(**tokens))


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Inference in eval mode, then every submodule back in the mode it was in."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m, training in modes:
            m.training = training


class TorchEncoder(Encoder):
    """An :class:`Encoder` computing through a TorchDualEncoder module.

    ``save`` is the backend's writer (``save(module, path)``) of a checkpoint the same backend
    loads back.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        dim: int,
        preprocess_config: PreprocessConfig,
        save: Callable[[nn.Module, Path], None],
    ) -> None:
        self.module = module
        self.name = name
        self.dim = int(dim)
        self.preprocess_config = preprocess_config
        self._save = save

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        with _eval_mode(self.module):
            out = self.module.image_features(
                torch.from_numpy(np.ascontiguousarray(pixels, np.float32))
            )
        return out.float().cpu().numpy()

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        with _eval_mode(self.module):
            out = self.module.text_features(self.module.tokenize(texts))
        return out.float().cpu().numpy()

    def trainable(self) -> nn.Module:
        """The module itself: training it changes what this encoder computes and saves."""
        return self.module

    def save(self, path: str | Path) -> None:
        """Write a checkpoint directory that the same backend loads back (identical embeddings)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(self.module, path)
