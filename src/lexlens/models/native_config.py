"""Named configurations of the native dual encoder: JSON files -> typed dataclasses.

Each ``configs/NAME.json`` describes one architecture (image tower, text tower, lexicon
heads, preprocessing). :func:`registered_configs` lists them, :func:`load_config` reads one
by its exact name, and :func:`config_from_dict` / :func:`config_to_dict` convert between the
JSON form (also written into a saved model's ``lexlens.json``) and :class:`NativeConfig`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lexlens.errors import ModelNotAvailableError

__all__ = [
    "ImageTowerConfig",
    "TextTowerConfig",
    "LexiconConfig",
    "DecoderConfig",
    "NativeConfig",
    "RESIZE_MODES",
    "CONFIG_DIR",
    "registered_configs",
    "load_config",
    "config_from_dict",
    "config_to_dict",
]

CONFIG_DIR = Path(__file__).parent / "configs"


#: how a native model makes a picture of another shape square (see ImageTowerConfig.resize)
RESIZE_MODES = ("shortest", "squash")


@dataclass
class ImageTowerConfig:
    """A small ResNet-style CNN, then a transformer over the last feature map's patches."""

    image_size: int = 64
    # how a picture of another shape becomes a square: "shortest" (resize the shorter side,
    # centre crop; CLIP's way) or "squash" (resize both sides: nothing is cut off)
    resize: str = "shortest"
    stem_width: int = 32
    stem_stride: int = 2  # 2: a 3x3 stride-2 convolution; 4: a 4x4 patchify convolution
    widths: tuple[int, ...] = (48, 96, 160)  # one residual stage each
    strides: tuple[int, ...] = (1, 2, 2)  # 64 px -> 32 (stem) -> 32 -> 16 -> 8x8 patches
    blocks_per_stage: int = 1
    width: int = 192  # transformer width over the patches
    patch_layers: int = 2  # transformer layers over the last feature map (positions matter)
    pool: str = "cls"  # "cls": the [CLS] state; "mean": the mean of all states
    input_norm: bool = False  # LayerNorm on the projected patches (before positions)
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0


@dataclass
class TextTowerConfig:
    """Frozen MiniLM word-piece embeddings -> projection -> a small transformer from scratch."""

    max_tokens: int = 32
    width: int = 256
    layers: int = 2
    pool: str = "cls"  # "cls": the [CLS] state; "mean": the mean of the real tokens' states
    input_norm: bool = False  # LayerNorm on the projected word embeddings (before positions)
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0


@dataclass
class LexiconConfig:
    """LexLIP lexicon heads over the MiniLM word-piece vocabulary.

    The output layer is tied to the frozen MiniLM word-embedding table, and only the
    ``active`` word pieces get logits (all other vocabulary ids are always 0). ``active``
    holds word strings; their word pieces form the active set. When ``extend_from_data`` is
    true, training adds every word piece of the training captions.
    """

    enabled: bool = True
    active: list[str] = field(default_factory=list)
    extend_from_data: bool = True
    hidden: int = 384  # the MiniLM embedding width the heads project into
    top_k_image: int = 64  # index-time cut per image
    top_k_text: int = 32  # cut per query text
    quant_bits: int = 8  # values snapped to this many bits (0 = float)
    quant_max: float = 4.0  # the weight that maps to the top quantisation level
    # True: a text's lexicon may weigh any active piece (LexLIP/SPLADE expansion, with
    # [CLS]/[SEP] pooled too). False: each word token weighs only its own word piece, so a
    # query vector holds the query's own words (uniCOIL-style; readable explanations)
    text_expansion: bool = True


@dataclass
class DecoderConfig:
    """The weak (shallow) text decoder of the lexicon-bottleneck objective (training only)."""

    width: int = 256
    layers: int = 1
    heads: int = 4
    mask_ratio: float = 0.6


@dataclass
class NativeConfig:
    """Everything needed to build a native dual encoder (saved as ``lexlens.json``)."""

    name: str = "custom"
    embed_dim: int = 256
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    lexicon: LexiconConfig = field(default_factory=LexiconConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    init_logit_scale: float = 2.6593  # log(1 / 0.07)
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    description: str = ""


def _sub(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelNotAvailableError(f"unknown keys {unknown} in {where}")
    for f in fields(cls):
        if f.name in data and isinstance(data[f.name], list) and "tuple" in str(f.type):
            data[f.name] = tuple(data[f.name])
    return cls(**data)


def config_from_dict(data: dict[str, Any], where: str = "config") -> NativeConfig:
    """Build a :class:`NativeConfig` from its JSON form (unknown keys are an error)."""
    data = dict(data)
    parts = {
        "image": ImageTowerConfig,
        "text": TextTowerConfig,
        "lexicon": LexiconConfig,
        "decoder": DecoderConfig,
    }
    sub = {k: _sub(cls, data.pop(k, None), f"{where}.{k}") for k, cls in parts.items()}
    top = _sub(NativeConfig, data, where)
    for k, v in sub.items():
        setattr(top, k, v)
    if top.image.resize not in RESIZE_MODES:
        raise ModelNotAvailableError(
            f"{where}.image.resize must be one of {', '.join(RESIZE_MODES)}, "
            f"got {top.image.resize!r}"
        )
    return top


def config_to_dict(cfg: NativeConfig) -> dict[str, Any]:
    """The JSON form of ``cfg`` (tuples as lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def registered_configs() -> list[str]:
    """Names of the JSON configs shipped in ``lexlens/models/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name: str) -> NativeConfig:
    """The registered config ``name`` (exact file name without ``.json``)."""
    if name not in registered_configs():
        known = ", ".join(registered_configs())
        raise ModelNotAvailableError(f"no native config named {name!r} (known: {known})")
    path = CONFIG_DIR / f"{name}.json"
    return config_from_dict(json.loads(path.read_text()), where=str(path.name))
