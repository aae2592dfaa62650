"""Named training recipes: everything needed to reproduce a shipped model with one command.

``lexlens train --recipe scenes-mini --out DIR`` generates its training and validation scenes
in memory, builds the registered config, trains it and saves the model to ``DIR``. The
recipe fixes every number (data size and seeds, objective, schedule), so the same command
gives the same model on the same software (up to floating-point non-determinism of threads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lexlens.errors import UsageError
from lexlens.train.loop import TrainConfig

__all__ = ["Recipe", "RECIPES", "get_recipe", "run_recipe"]


@dataclass(frozen=True)
class Recipe:
    """A model config, generated training data and the training hyper-parameters."""

    name: str
    config: str
    n_train: int
    train_seed: int
    n_val: int
    val_seed: int
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""


RECIPES: dict[str, Recipe] = {
    "scenes-mini": Recipe(
        name="scenes-mini",
        config="scenes-mini",
        n_train=20000,
        train_seed=1,
        n_val=500,
        val_seed=2,
        train=TrainConfig(
            objective="lexlip",
            epochs=7,
            batch_size=128,
            lr=2e-3,
            warmup_steps=300,
            hard_negatives=2,
        ),
        description="the shipped native:scenes-mini (LexLIP objectives on 20k generated scenes)",
    ),
    "tiny": Recipe(
        name="tiny",
        config="tiny",
        n_train=256,
        train_seed=1,
        n_val=64,
        val_seed=2,
        train=TrainConfig(
            objective="lexlip", epochs=2, batch_size=32, lr=3e-3, warmup_steps=5, hard_negatives=1
        ),
        description="a seconds-long smoke run of the tiny config",
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe ``name`` (exact)."""
    if name not in RECIPES:
        raise UsageError(f"no training recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def run_recipe(
    recipe: Recipe,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate the recipe's data, train, save the model (fp16 weights) into ``out_dir``."""
    from lexlens.models.native import build_native
    from lexlens.train.data import pairs_from_scenes
    from lexlens.train.loop import train

    cfg = replace(recipe.train, **(overrides or {}))
    from lexlens.models.native_config import load_config

    mcfg = load_config(recipe.config)
    size = mcfg.image.image_size
    tr = pairs_from_scenes(recipe.n_train, recipe.train_seed, size, "train", progress=progress)
    va = pairs_from_scenes(recipe.n_val, recipe.val_seed, size, "val", progress=progress)
    texts = [c for caps in tr.captions for c in caps]
    if tr.negatives:
        texts += [n for per in tr.negatives for ns in per for n in ns]
    enc = build_native(mcfg, texts=texts)
    summary = train(enc, tr, cfg, out_dir, val=va, resume=resume, progress=progress, log=log)
    enc.name = f"native:{recipe.name}"
    enc.meta = {
        "recipe": recipe.name,
        "trained": {k: summary[k] for k in ("steps", "seconds", "train_pairs", "source")},
    }
    enc.save(out_dir, half=True)
    summary["model_dir"] = str(out_dir)
    summary["recipe"] = recipe.name
    return summary
