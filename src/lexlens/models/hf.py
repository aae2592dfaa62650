"""The ``hf:`` backend: CLIP and SigLIP models of transformers.

``hf:REPO_OR_PATH`` loads a ``save_pretrained`` directory (what :meth:`Encoder.save` writes;
with lexicon heads, :mod:`lexlens.models.lexheads`, when it also holds ``lexlens_heads.json``) or
a hub repository id from the local Hugging Face cache; nothing is downloaded unless
``LEXLENS_ALLOW_DOWNLOADS=1`` (:mod:`lexlens.models.hub`). The family is chosen by the
``model_type`` of the checkpoint's ``config.json`` through :data:`FAMILIES` (never by the
name), the tokenizer is the one saved with the checkpoint (``AutoTokenizer``), and images are
preprocessed by lexlens following the saved ``preprocessor_config.json`` (size, crop, mean,
std, resampling) or the family's defaults, so neither torchvision nor the HF image
processors are used.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lexlens.errors import LexlensError, ModelNotAvailableError
from lexlens.models.base import Encoder, PreprocessConfig
from lexlens.models.hub import cached_hub_file, hub_access, load_error, offline_hint, one_line
from lexlens.models.torchvision_guard import import_transformers

__all__ = [
    "load",
    "list_names",
    "FAMILIES",
    "HFFamily",
    "KNOWN_REPOS",
    "preprocess_from_hf",
    "preprocess_to_hf",
]

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: PIL resampling codes as transformers stores them in preprocessor configs
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class HFFamily:
    """How lexlens runs one transformers model family.

    ``padding`` / ``attention_mask``: CLIP pads to the longest text and masks the padding;
    SigLIP was trained on texts padded to ``max_length`` without a mask. ``mean``, ``std`` and
    ``resize_mode`` are used when the checkpoint has no preprocessor config.
    """

    model_class: str
    image_processor: str
    padding: str
    attention_mask: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str
    dim: Callable[[Any], int]


def _clip_dim(c: Any) -> int:
    return int(c.projection_dim)


def _siglip_dim(c: Any) -> int:
    return int(getattr(c.text_config, "projection_size", None) or c.text_config.hidden_size)


#: ``config.json`` ``model_type`` -> family (module-level functions, so encoders pickle)
FAMILIES: dict[str, HFFamily] = {
    "clip": HFFamily(
        "CLIPModel",
        "CLIPImageProcessor",
        "longest",
        True,
        _OPENAI_MEAN,
        _OPENAI_STD,
        "shortest",
        _clip_dim,
    ),
    "siglip": HFFamily(
        "SiglipModel",
        "SiglipImageProcessor",
        "max_length",
        False,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        "squash",
        _siglip_dim,
    ),
}

#: well-known checkpoints (their files must be in the Hugging Face cache, or downloads allowed)
KNOWN_REPOS = (
    "openai/clip-vit-base-patch32",
    "openai/clip-vit-base-patch16",
    "openai/clip-vit-large-patch14",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "google/siglip-base-patch16-224",
    "google/siglip-so400m-patch14-384",
)


# ----------------------------------------------------------------------------- preprocessing
def _square(value: Any, what: str, where: str) -> int:
    if isinstance(value, int):
        return value
    h, w = value.get("height"), value.get("width")
    if h is None or h != w:
        raise ModelNotAvailableError(
            f"{where}: {what} {value} is not a square size, which lexlens preprocessing needs"
        )
    return int(h)


def preprocess_from_hf(
    pp: dict[str, Any] | None, family: HFFamily, image_size: int, where: str
) -> PreprocessConfig:
    """A transformers image-processor config (or None) -> :class:`PreprocessConfig`.

    Supported: resize of the shorter side then a centre crop of the same size (CLIP), or a
    resize to a square (SigLIP); anything lexlens would preprocess differently is an error.
    """
    if not pp:
        return PreprocessConfig(image_size, family.mean, family.std, family.resize_mode, "bicubic")
    if (
        not pp.get("do_resize", True)
        or abs(float(pp.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9
    ):
        raise ModelNotAvailableError(f"{where}: images are not resized or rescaled as lexlens does")
    size = pp.get("size", image_size)
    crop = pp.get("crop_size") if pp.get("do_center_crop", False) else None
    if isinstance(size, dict) and "shortest_edge" in size:
        side, mode = int(size["shortest_edge"]), "shortest"
        if crop is None or _square(crop, "crop size", where) != side:
            raise ModelNotAvailableError(
                f"{where}: resize to {side} then crop {crop} is not supported (equal sizes only)"
            )
    else:
        side, mode = _square(size, "size", where), "squash"
        if crop is not None and _square(crop, "crop size", where) != side:
            raise ModelNotAvailableError(
                f"{where}: resize to {side} then crop {crop} is not supported (equal sizes only)"
            )
    if side != image_size:
        raise ModelNotAvailableError(
            f"{where}: the image processor makes {side} px images, the model takes {image_size}"
        )
    resample = pp.get("resample", 3)
    interp = (
        _RESAMPLE.get(resample, str(resample).lower())
        if isinstance(resample, int)
        else str(resample).lower()
    )
    normalize = pp.get("do_normalize", True)
    mean = (
        tuple(float(x) for x in pp.get("image_mean", family.mean)) if normalize else (0.0, 0.0, 0.0)
    )
    std = tuple(float(x) for x in pp.get("image_std", family.std)) if normalize else (1.0, 1.0, 1.0)
    return PreprocessConfig(side, mean, std, mode, interp)  # type: ignore[arg-type]


def preprocess_to_hf(cfg: PreprocessConfig, family: HFFamily) -> dict[str, Any]:
    """The transformers image-processor config that :func:`preprocess_from_hf` reads back as ``cfg``."""
    s = cfg.image_size
    size: dict[str, int] = (
        {"shortest_edge": s} if cfg.resize_mode == "shortest" else {"height": s, "width": s}
    )
    code = {v: k for k, v in _RESAMPLE.items()}[cfg.interpolation]
    return {
        "image_processor_type": family.image_processor,
        "do_resize": True,
        "size": size,
        "resample": code,
        "do_center_crop": cfg.resize_mode == "shortest",
        "crop_size": {"height": s, "width": s},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(cfg.mean),
        "image_std": list(cfg.std),
        "do_convert_rgb": True,
    }


# ----------------------------------------------------------------------------- files
def _source(target: str, online: bool) -> tuple[str, Callable[[str], Path | None]]:
    """(what to pass to ``from_pretrained``, a lookup of the checkpoint's small files)."""
    p = Path(target).expanduser()
    if p.is_dir():
        return str(p), lambda name: (p / name) if (p / name).is_file() else None
    if p.exists() or target.startswith(("/", ".", "~")) or target.count("/") != 1:
        what = "is not a directory" if p.exists() else "no such directory"
        raise ModelNotAvailableError(
            f"hf:{target}: {what} (expected a save_pretrained directory or a hub id ORG/NAME)"
        )

    def hub_file(name: str) -> Path | None:
        found = cached_hub_file(target, name)
        if found is None and online:
            from huggingface_hub import hf_hub_download

            try:
                found = hf_hub_download(target, name)
            except Exception:
                found = None
        return Path(found) if found else None

    if hub_file("config.json") is None:
        if online:
            raise ModelNotAvailableError(f"hf:{target}: cannot fetch its config.json from the hub")
        raise ModelNotAvailableError(
            f"hf:{target} is not in the Hugging Face cache and downloads are off; download it elsewhere "
            f"(save_pretrained or a repository copy) and pass the directory: hf:/path/to/dir {offline_hint()}"
        )
    return target, hub_file


def _read_json(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelNotAvailableError(f"cannot read {path}: {one_line(e)}") from e
    return data if isinstance(data, dict) else None


def _image_processor_config(files: Callable[[str], Path | None]) -> dict[str, Any] | None:
    pp = _read_json(files("preprocessor_config.json"))
    if pp is None:  # newer transformers may nest it in processor_config.json
        proc = _read_json(files("processor_config.json")) or {}
        pp = proc.get("image_processor")
    return pp


# ----------------------------------------------------------------------------- loading
def _save(module: Any, path: Path, family: HFFamily, preprocess: PreprocessConfig) -> None:
    """``save_pretrained`` of model and tokenizer, plus the image-processor config."""
    from lexlens.models.files import default_modes

    with default_modes(path):  # save_pretrained's safetensors files would be 0600
        module.model.save_pretrained(str(path))
        module.tokenizer.save_pretrained(str(path))
    (path / "preprocessor_config.json").write_text(
        json.dumps(preprocess_to_hf(preprocess, family), indent=2), encoding="utf-8"
    )


def load(target: str) -> Encoder:
    """Load ``hf:TARGET`` (a ``save_pretrained`` directory or a cached hub repository id)."""
    spec = f"hf:{target}"
    try:
        transformers = import_transformers()
    except ImportError as e:
        raise ModelNotAvailableError(
            f"transformers is not installed ({e}); pip install 'lexlens[hf]'"
        ) from e
    try:
        with hub_access() as online:
            src, files = _source(target, online)
            config = _read_json(files("config.json"))
            if config is None:
                raise ModelNotAvailableError(
                    f"{spec}: no config.json (not a save_pretrained directory)"
                )
            model_type = config.get("model_type")
            family = FAMILIES.get(str(model_type))
            if family is None:
                raise ModelNotAvailableError(
                    f"{spec}: model_type {model_type!r} is not supported (supported: {', '.join(sorted(FAMILIES))})"
                )
            model = getattr(transformers, family.model_class).from_pretrained(
                src, local_files_only=not online
            )
            tokenizer = transformers.AutoTokenizer.from_pretrained(src, local_files_only=not online)
            pp = _image_processor_config(files)
    except LexlensError:
        raise
    except Exception as e:
        raise load_error(spec, e) from e
    from lexlens.models.torch_modules import HFDualEncoder, TorchEncoder

    model = model.float().eval()
    cfg = model.config
    preprocess = preprocess_from_hf(pp, family, int(cfg.vision_config.image_size), spec)
    module = HFDualEncoder(
        model,
        tokenizer,
        max_length=int(cfg.text_config.max_position_embeddings),
        padding=family.padding,
        attention_mask=family.attention_mask,
    )
    enc = TorchEncoder(
        module,
        name=spec,
        dim=family.dim(cfg),
        preprocess_config=preprocess,
        save=functools.partial(_save, family=family, preprocess=preprocess),
    )
    from lexlens.models.lexheads import has_heads, load_heads

    # a directory written by `lexlens train --objective lexical-heads`: with its lexicon heads
    return load_heads(enc, src) if Path(src).is_dir() and has_heads(src) else enc


def list_names() -> list[str]:
    """Well-known CLIP / SigLIP repository ids (loadable when their files are in the HF cache)."""
    return list(KNOWN_REPOS)
