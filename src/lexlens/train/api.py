"""One entry point for training, used by ``lexlens train`` and by Python callers.

>>> from lexlens.train.api import TrainRequest, run_training
>>> run_training(TrainRequest(out="runs/m", data="my-pairs/", config="scenes-mini"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import UsageError

__all__ = ["TrainRequest", "run_training", "check_output_folder"]


@dataclass
class TrainRequest:
    """What to train: a recipe, or data plus a starting model (``model``) or config."""

    out: str
    recipe: str | None = None
    data: str | None = None
    val: str | None = None
    split: str | None = None
    model: str | None = None
    config: str | None = None
    limit: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    text_expansion: bool | None = None  # native models: set ``lexicon.text_expansion``
    force: bool = False  # replace the model or run already in ``out``
    # how ``data`` and ``val`` are read (tables: which columns; the folder image paths start from)
    image_column: str | None = None
    caption_column: str | None = None
    images_root: str | None = None


def run_training(
    req: TrainRequest, progress: bool = True, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train as ``req`` says, save the model into ``req.out``; returns the JSON summary.

    The summary's ``model_spec`` loads the result (``native:OUT`` for native models).
    ``lexical-heads`` on an ``openclip:``/``hf:`` model fits new lexicon heads on its frozen
    towers (:mod:`lexlens.models.lexheads`); ``openclip:OUT`` / ``hf:OUT`` loads both.
    """
    from lexlens.train.loop import TrainConfig, train
    from lexlens.train.recipes import get_recipe, run_recipe

    check_output_folder(req.out, req.resume, req.force)
    early = {k: v for k, v in req.overrides.items() if k != "objective"}
    replace(TrainConfig(objective=req.overrides.get("objective") or "clip"), **early).check()
    if req.recipe:
        s = run_recipe(
            get_recipe(req.recipe),
            req.out,
            resume=req.resume,
            progress=progress,
            log=log,
            overrides=req.overrides,
        )
        s["model_spec"] = f"native:{req.out}"
        return s
    if not req.data:
        raise UsageError("nothing to train on: give data (or a recipe)")
    from lexlens.models.native import NativeEncoder
    from lexlens.train.data import pairs_from_dataset

    encoder, fresh = _starting_model(req)
    if fresh is not None and req.overrides.get("objective") == "lexical-heads":
        raise UsageError(
            "--objective lexical-heads fits lexicon heads on a trained, frozen encoder: give it "
            "with --model (a fresh --config has nothing worth freezing)"
        )
    if req.text_expansion is not None and not (
        isinstance(encoder, NativeEncoder) and encoder.has_lexical
    ):
        raise UsageError("--no-text-expansion applies to native models with lexicon heads")
    size = encoder.preprocess_config.image_size
    read = {
        "image_column": req.image_column,
        "caption_column": req.caption_column,
        "images_root": req.images_root,
    }
    data = pairs_from_dataset(
        req.data, size, limit=req.limit, progress=progress, split=req.split, **read
    )
    if req.val:
        val = pairs_from_dataset(req.val, size, progress=progress, **read)
    else:
        n_val = max(1, min(1000, len(data) // 20)) if len(data) >= 40 else 0
        perm = np.random.default_rng(0).permutation(len(data))
        val = data.subset(perm[:n_val]) if n_val else None
        data = data.subset(perm[n_val:]) if n_val else data
    if fresh is not None:  # a fresh native model: its lexicon covers the training words
        from lexlens.models.native import build_native

        texts = [c for caps in data.captions for c in caps]
        encoder = build_native(fresh, texts=texts)
    try:
        native = hasattr(encoder.trainable(), "image_states")
    except NotImplementedError as e:  # e.g. a lexical: adapter: its inner model trains
        raise UsageError(f"{e}; train the model it wraps instead") from None
    if req.text_expansion is not None:
        encoder.set_text_expansion(req.text_expansion)
    objective = req.overrides.get("objective") or ("lexlip" if native else "clip")
    if objective == "lexical-heads" and not native:
        encoder = _with_lexicon_heads(encoder, data, req)
    cfg = replace(
        TrainConfig(objective=objective),
        **{k: v for k, v in req.overrides.items() if k != "objective"},
    )
    summary = train(
        encoder, data, cfg, req.out, val=val, resume=req.resume, progress=progress, log=log
    )
    if hasattr(encoder, "meta"):  # native models and lexicon heads record their training
        encoder.meta = {
            "trained": {k: summary[k] for k in ("steps", "seconds", "train_pairs", "source")}
        }
    encoder.save(req.out)
    summary["model_dir"] = str(req.out)
    summary["model_spec"] = _spec_of_saved(encoder, req.out)
    return summary


#: what a training run writes into its output folder (a model, checkpoints, recipe stages)
_RUN_FILES = ("lexlens.json", "checkpoint.pt", "stage1", "open_clip_config.json", "config.json")


def check_output_folder(out: str | Path, resume: bool, force: bool) -> None:
    """Refuse an output folder that would be overwritten unasked: one holding a model or run
    needs ``resume`` (continue it) or ``force`` (replace it); one holding anything else (a
    dataset, an index) is refused either way, so training never writes over someone's files."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--out {p} is a file; give a folder for the model")
    if resume or not p.is_dir() or not any(p.iterdir()):
        return
    if not any((p / name).exists() for name in _RUN_FILES):
        raise UsageError(f"--out {p} is not empty and holds no model; choose a new folder")
    if not force:
        raise UsageError(
            f"--out {p} already holds a model or training run; continue it with --resume, "
            "replace it with --force, or choose a new folder"
        )


def _starting_model(req: TrainRequest) -> tuple[Any, str | None]:
    """``(encoder, None)`` for fine-tuning ``req.model``; ``(placeholder, config)`` for a fresh one."""
    from lexlens.models.native import build_native
    from lexlens.models.registry import load_encoder

    if req.model:
        return load_encoder(req.model), None
    config = req.config or "scenes-mini"
    return build_native(config), config


def _with_lexicon_heads(encoder: Any, data: Any, req: TrainRequest) -> Any:
    """An ``openclip:``/``hf:`` ``encoder`` with lexicon heads to train: its saved ones, or new
    ones over the word pieces of the training captions (:mod:`lexlens.models.lexheads`)."""
    from lexlens.models.lexheads import LexHeadsEncoder, attach_heads

    if isinstance(encoder, LexHeadsEncoder):
        return encoder
    if encoder.has_lexical:
        raise UsageError(
            f"lexical-heads fits heads on a dense model; give the model inside {req.model}"
        )
    texts = [c for caps in data.captions for c in caps]
    return attach_heads(encoder, texts, seed=int(req.overrides.get("seed") or 0))


def _spec_of_saved(encoder: Any, out: str) -> str:
    """The model spec that loads what :meth:`Encoder.save` wrote into ``out``."""
    backend = str(encoder.name).split(":", 1)[0] if ":" in str(encoder.name) else "native"
    if backend not in ("native", "openclip", "hf"):
        backend = "native"
    return f"{backend}:{Path(out)}"
