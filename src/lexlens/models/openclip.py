"""The ``openclip:`` backend: models of open_clip_torch.

Spec forms (``TARGET`` is everything after ``openclip:``):

* ``ARCH`` -- a built-in architecture (``ViT-B-32``), randomly initialised;
* ``ARCH:TAG`` -- with pretrained weights by tag (``ViT-B-32:laion2b_s34b_b79k``);
* ``ARCH:/path/to/checkpoint`` -- with weights from a file (``.bin``, ``.pt``, ``.pth``,
  ``.safetensors``, ``.npz``);
* ``hf-hub:ORG/REPO`` -- an open_clip repository of the Hugging Face hub;
* ``DIR`` (or ``local-dir:DIR``) -- a directory with ``open_clip_config.json`` and weights:
  what :meth:`Encoder.save` writes, and the layout of a hub repository; with lexicon heads
  (:mod:`lexlens.models.lexheads`) when it also holds ``lexlens_heads.json``;
* ``CONFIG.json[:/path/to/checkpoint]`` -- a custom architecture in open_clip's model-config
  format (``embed_dim``, ``vision_cfg``, ``text_cfg``), registered under the file's stem.

Weights come from local files or the Hugging Face / open_clip caches; nothing is downloaded
unless ``LEXLENS_ALLOW_DOWNLOADS=1`` (:mod:`lexlens.models.hub`). Images are preprocessed by
lexlens following the model's own preprocessing config (size, mean, std, resize mode,
interpolation), so torchvision is never used.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from lexlens.errors import LexlensError, ModelNotAvailableError, UsageError
from lexlens.models.base import Encoder, PreprocessConfig
from lexlens.models.hub import (
    cached_hub_file,
    downloads_allowed,
    hub_access,
    load_error,
    offline_hint,
    one_line,
)
from lexlens.models.torchvision_guard import (
    broken_torchvision_hidden,
    import_transformers,
    torchvision_error,
)

__all__ = [
    "load",
    "list_names",
    "import_open_clip",
    "parse_target",
    "OpenClipTarget",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
]

#: what :meth:`Encoder.save` writes (the names open_clip looks for in a ``local-dir:``)
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"

_CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz", ".ckpt")
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def _torchvision_stand_ins() -> dict[str, dict[str, object]]:
    """Placeholders for the torchvision names open_clip imports at module level.

    open_clip imports them in ``transform.py`` (PIL transforms) and ``utils.py``
    (``FrozenBatchNorm2d``, used only when freezing ResNet towers); lexlens calls neither, so
    each placeholder fails loudly if it is ever used. ``InterpolationMode`` is a real enum
    because open_clip reads its members in default arguments.
    """
    why = torchvision_error() or "torchvision is unavailable"

    class Unavailable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ModelNotAvailableError(
                f"{type(self).__name__} needs torchvision, which cannot be imported ({why})"
            )

    def stand_in(name: str) -> type:
        return type(name, (Unavailable,), {})

    transforms = {
        n: stand_in(n)
        for n in (
            "Normalize",
            "Compose",
            "RandomResizedCrop",
            "ToTensor",
            "Resize",
            "CenterCrop",
            "ColorJitter",
            "Grayscale",
        )
    }
    transforms["InterpolationMode"] = enum.Enum(
        "InterpolationMode", {"NEAREST": "nearest", "BILINEAR": "bilinear", "BICUBIC": "bicubic"}
    )
    return {
        "torchvision": {},
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": {},
        "torchvision.ops": {},
        "torchvision.ops.misc": {"FrozenBatchNorm2d": stand_in("FrozenBatchNorm2d")},
    }


def import_open_clip() -> ModuleType:
    """``import open_clip``, also where torchvision is installed but cannot be imported.

    Why and how: :mod:`lexlens.models.torchvision_guard`. Only when the real torchvision
    import fails, open_clip is imported with the placeholders of :func:`_torchvision_stand_ins`
    and with timm marked absent (timm imports torchvision too; open_clip treats it as
    optional, so only timm-tower architectures become unavailable). transformers is imported
    first, outside the placeholders, so that it records torchvision as absent.
    """
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    try:
        import_transformers()
    except ImportError:
        pass  # open_clip works without transformers (no HF text towers)
    try:
        with broken_torchvision_hidden(_torchvision_stand_ins(), also_hide=("timm",)):
            import open_clip
    except ImportError as e:
        raise ModelNotAvailableError(
            f"open_clip_torch is not installed ({e}); pip install 'lexlens[openclip]'"
        ) from e
    return open_clip


# ----------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class OpenClipTarget:
    """A parsed ``openclip:`` target: ``kind`` is arch | config | hub | dir."""

    kind: str
    name: str
    pretrained: str | None = None


def parse_target(target: str) -> OpenClipTarget:
    """Split an ``openclip:`` target into its form (see the module docstring)."""
    target = target.strip()
    for prefix, kind in (("hf-hub:", "hub"), ("local-dir:", "dir")):
        if target.startswith(prefix):
            rest = target[len(prefix) :]
            if not rest:
                raise UsageError(f"openclip:{target} names nothing after '{prefix}'")
            return OpenClipTarget(kind, rest)
    if Path(target).is_dir():
        return OpenClipTarget("dir", target)
    head, sep, tail = target.partition(".json:")
    if sep:
        return OpenClipTarget("config", head + ".json", tail or None)
    if target.endswith(".json"):
        return OpenClipTarget("config", target)
    arch, _, pretrained = target.partition(":")
    if not arch:
        raise UsageError(f"openclip:{target} names no architecture")
    if pretrained.startswith("hf-hub:"):
        raise UsageError(
            f"openclip:{target}: a hub repository carries its own architecture; write openclip:{pretrained}"
        )
    return OpenClipTarget("arch", arch, pretrained or None)


# ----------------------------------------------------------------------------- resolving
def _tag_checkpoint(oc: ModuleType, arch: str, tag: str, cfg: dict[str, Any]) -> str:
    """The local file of pretrained tag ``arch:tag``: cached, or downloaded when allowed."""
    hub = cfg.get("hf_hub") or ""
    url = cfg.get("url") or ""
    if hub:
        # open_clip's convention: "org/repo/file", or "org/repo/" for its default weights file,
        # preferring a .safetensors twin when one is there
        repo, filename = os.path.split(hub)
        filename = filename or oc.constants.HF_WEIGHTS_NAME
        names = [filename]
        if filename == oc.constants.HF_WEIGHTS_NAME:
            names.insert(0, oc.constants.HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for n in names:
            found = cached_hub_file(repo, n)
            if found:
                return found
        where = f"{filename} of the hub repository {repo}"
    else:
        filename = os.path.basename(url)
        found = os.path.join(os.path.expanduser("~/.cache/clip"), filename)
        if os.path.isfile(found):
            return found
        where = url
    if downloads_allowed():
        try:
            return str(oc.download_pretrained(cfg))
        except Exception as e:
            raise ModelNotAvailableError(
                f"cannot download weights for {arch}:{tag}: {one_line(e)}"
            ) from e
    raise ModelNotAvailableError(
        f"weights for {arch}:{tag} are not cached and downloads are off; download {where} elsewhere "
        f"and pass the checkpoint file: openclip:{arch}:/path/to/{filename} {offline_hint()}"
    )


def _resolve(oc: ModuleType, t: OpenClipTarget) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(open_clip model name, create_model keyword arguments, model config to save)."""
    if t.kind == "dir":
        d = Path(t.name)
        if not (d / CONFIG_NAME).is_file():
            raise ModelNotAvailableError(
                f"{d} has no {CONFIG_NAME}; expected a directory written by lexlens or a hub repo copy"
            )
        name = f"local-dir:{d}"
        return name, {"require_pretrained": True}, oc.get_model_config(name)
    if t.kind == "hub":
        if not downloads_allowed() and cached_hub_file(t.name, CONFIG_NAME) is None:
            raise ModelNotAvailableError(
                f"hf-hub:{t.name} is not in the Hugging Face cache and downloads are off; copy the repository "
                f"({CONFIG_NAME} + weights) here and pass its directory: openclip:/path/to/dir {offline_hint()}"
            )
        name = f"hf-hub:{t.name}"
        return name, {"require_pretrained": True}, oc.get_model_config(name)
    if t.kind == "config":
        arch = _register_config(oc, Path(t.name))
    else:
        arch = t.name
        if arch not in oc.list_models():
            raise ModelNotAvailableError(
                f"unknown open_clip architecture {arch!r}; `lexlens models` lists ARCH:TAG names, "
                "or pass a model config: openclip:/path/to/config.json[:/path/to/checkpoint]"
            )
    model_cfg = oc.get_model_config(arch)
    p = t.pretrained
    if p is None:
        return arch, {}, model_cfg
    if os.path.isfile(p):
        return arch, {"pretrained": p}, model_cfg
    cfg = oc.get_pretrained_cfg(arch, p) if t.kind == "arch" else {}
    if cfg:
        kwargs: dict[str, Any] = {"pretrained": _tag_checkpoint(oc, arch, p, cfg)}
        if cfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True
            model_cfg["quick_gelu"] = True
        kwargs["force_preprocess_cfg"] = {k: cfg[k] for k in _PREPROCESS_KEYS if k in cfg}
        return arch, kwargs, model_cfg
    if "/" in p or os.sep in p or p.endswith(_CHECKPOINT_SUFFIXES):
        raise ModelNotAvailableError(f"checkpoint file not found: {p}")
    tags = oc.list_pretrained_tags_by_model(arch)
    known = (
        f"known tags: {', '.join(tags)}"
        if tags
        else "it has no pretrained tags; pass a checkpoint file"
    )
    raise ModelNotAvailableError(f"unknown pretrained tag {p!r} for {arch} ({known})")


def _register_config(oc: ModuleType, path: Path) -> str:
    """Register a custom model config file with open_clip; returns its architecture name."""
    if not path.is_file():
        raise ModelNotAvailableError(f"model config not found: {path}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelNotAvailableError(f"cannot read model config {path}: {one_line(e)}") from e
    if isinstance(cfg, dict) and "model_cfg" in cfg:
        raise UsageError(
            f"{path} is a saved model's config; pass its directory: openclip:{path.parent}"
        )
    if not isinstance(cfg, dict) or not all(
        k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")
    ):
        raise ModelNotAvailableError(
            f"{path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)"
        )
    arch = path.stem
    builtin = oc.get_model_config(arch)
    if builtin is not None and builtin != cfg:
        raise UsageError(
            f"{path.name} would shadow open_clip's built-in architecture {arch}; rename the file"
        )
    oc.add_model_config(path)
    return arch


# ----------------------------------------------------------------------------- loading
def _preprocess_config(cfg: dict[str, Any], where: str) -> PreprocessConfig:
    """open_clip's preprocess config -> lexlens's (square sizes; shortest or squash resizing)."""
    size = cfg.get("size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    mode = cfg.get("resize_mode", "shortest")
    interp = cfg.get("interpolation", "bicubic")
    if (
        h != w
        or mode not in ("shortest", "squash")
        or interp not in ("bicubic", "bilinear", "nearest")
    ):
        raise ModelNotAvailableError(
            f"{where}: preprocessing size={size}, resize_mode={mode}, interpolation={interp} is not "
            "supported by lexlens (square sizes, shortest or squash, bicubic/bilinear/nearest)"
        )
    return PreprocessConfig(
        image_size=int(h),
        mean=tuple(float(x) for x in cfg["mean"]),
        std=tuple(float(x) for x in cfg["std"]),
        resize_mode=mode,
        interpolation=interp,
    )


def _save(module: Any, path: Path, model_cfg: dict[str, Any]) -> None:
    """Write ``open_clip_config.json`` (model + preprocess config), weights and tokenizer files."""
    from lexlens.models.files import save_safetensors

    oc = import_open_clip()
    cfg = json.loads(json.dumps(model_cfg))  # a copy, JSON-clean
    tok = module.tokenizer
    if hasattr(tok, "save_pretrained"):  # an HF tokenizer: its files go with the model
        tok.save_pretrained(str(path))
        # open_clip reads a local-dir's HF tokenizer from the directory itself when this is set
        cfg["text_cfg"].setdefault("hf_tokenizer_name", str(path))
    preprocess = dict(oc.get_model_preprocess_cfg(module.model))
    config = {"model_cfg": cfg, "preprocess_cfg": preprocess}
    state = {k: v.detach().contiguous() for k, v in module.model.state_dict().items()}
    save_safetensors(state, path / WEIGHTS_NAME)
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=list), encoding="utf-8")


def load(target: str) -> Encoder:
    """Load ``openclip:TARGET`` (see the module docstring for the forms of TARGET)."""
    oc = import_open_clip()
    t = parse_target(target)
    spec = f"openclip:{target}"
    try:
        with hub_access():
            name, kwargs, model_cfg = _resolve(oc, t)
            model = oc.create_model(name, **kwargs)
            tokenizer = oc.get_tokenizer(name)
    except LexlensError:
        raise
    except Exception as e:
        if "timm" in str(e).lower() and torchvision_error():
            raise ModelNotAvailableError(
                f"{spec} needs timm, which cannot be imported because torchvision cannot ({torchvision_error()})"
            ) from e
        raise load_error(spec, e) from e
    if model_cfg is None:
        raise ModelNotAvailableError(f"cannot load {spec}: no model config found")
    from lexlens.models.torch_modules import OpenClipDualEncoder, TorchEncoder

    model = model.float().eval()
    enc = TorchEncoder(
        OpenClipDualEncoder(model, tokenizer),
        name=spec,
        dim=int(model_cfg["embed_dim"]),
        preprocess_config=_preprocess_config(oc.get_model_preprocess_cfg(model), spec),
        # a partial of a module-level function, not a lambda: the encoder must pickle (it is
        # sent to decoding worker processes)
        save=functools.partial(_save, model_cfg=model_cfg),
    )
    from lexlens.models.lexheads import has_heads, load_heads

    # a directory written by `lexlens train --objective lexical-heads`: with its lexicon heads
    return load_heads(enc, t.name) if t.kind == "dir" and has_heads(t.name) else enc


def list_names() -> list[str]:
    """Every pretrained ``ARCH:TAG`` open_clip knows (weights must be cached or downloadable)."""
    oc = import_open_clip()
    return [f"{arch}:{tag}" for arch, tag in oc.list_pretrained()]
