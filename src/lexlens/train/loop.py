"""The training loop: contrastive dual-encoder training with LexLIP objectives.

:func:`train` takes an encoder whose :meth:`~lexlens.models.base.Encoder.trainable` module
follows :class:`~lexlens.models.base.TorchDualEncoder`, a :class:`~lexlens.train.data.PairSet`
and a :class:`TrainConfig`. Native models get every objective (dense, lexical, inference-free
query table, lexicon bottleneck, distillation); other backends (``openclip:``, ``hf:``) are
fine-tuned with the dense objective, or get lexicon heads fitted on their frozen towers
(``lexical-heads``, :mod:`lexlens.models.lexheads`).

Checkpoints (``OUT/checkpoint.pt``: weights, optimiser, schedule, step, history) are written
atomically after every epoch and every ``checkpoint_every`` steps; ``resume=True`` continues
from the last one at the same step with the same data order.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import TrainingError, TrainingInterrupted, UsageError
from lexlens.train.data import PairSet, batch_fits
from lexlens.train.losses import (
    contrastive_loss,
    distill_loss,
    flops_loss,
    masked_lm_loss,
    multi_positive_nce,
    positive_mask,
    scaled_logits,
    siglip_loss,
)

__all__ = ["TrainConfig", "OBJECTIVES", "train", "evaluate_pairs", "augment"]

#: named objectives -> which loss terms are on (weights come from :class:`TrainConfig`)
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "clip": ("dense",),
    "siglip": ("dense",),
    "lexlip": ("dense", "lexical", "free", "bottleneck"),
    "lexlip-words": ("dense", "lexical", "free", "bottleneck", "words"),
    "lexlip-grounded": ("dense", "lexical", "free", "bottleneck", "words", "text_words"),
    "lexlip-twins": ("dense", "lexical", "free", "bottleneck", "words", "text_words", "twins"),
    "lexlip-roles": (
        "dense",
        "lexical",
        "free",
        "bottleneck",
        "words",
        "text_words",
        "twins",
        "roles",
    ),
    "lexlip-distill": ("dense", "lexical", "free", "bottleneck", "distill"),
    "lexical-heads": ("lexical", "free", "distill"),
}


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (all saved with the checkpoint)."""

    objective: str = "lexlip"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.05
    warmup_steps: int = 200
    hard_negatives: int = 4  # swapped captions per image (when the data has them)
    augment: bool = True
    w_lexical: float = 1.0
    w_free: float = 0.5
    w_bottleneck: float = 0.2
    w_distill: float = 1.0
    w_words: float = 1.0  # image -> caption words (multi-label) through the image lexicon head
    w_twins: float = 1.0  # text -> image InfoNCE with counterfactual twin images added
    w_roles: float = 1.0  # object words and patches: which side of the other object (roles.py)
    w_layout: float = 1.0  # pooled embeddings -> the pair's layout code through a linear probe
    flops_image: float = 2e-3
    flops_text: float = 1e-3
    flops_ramp: float = 0.3  # share of the steps over which the FLOPS weights ramp up (quadratic)
    mask_ratio: float = 0.6
    seed: int = 0
    threads: int = 0  # 0: all cores
    checkpoint_every: int = 200
    log_every: int = 50  # steps between loss lines in the log
    val_every: int = 1  # epochs
    max_steps: int = 0  # 0: epochs * steps per epoch
    stop_after: int = 0  # stop after this many steps (the schedule still spans the whole run)
    extra: dict[str, Any] = field(default_factory=dict)

    def terms(self) -> tuple[str, ...]:
        if self.objective not in OBJECTIVES:
            raise UsageError(
                f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}"
            )
        return OBJECTIVES[self.objective]

    def check(self) -> TrainConfig:
        """``self`` when every setting is usable, else a one-line :class:`UsageError` naming it
        (as the ``lexlens train`` option where there is one)."""
        self.terms()
        whole = {
            "--epochs": (self.epochs, 1 if not self.max_steps else 0),
            "--batch-size": (self.batch_size, 1),
            "--hard-negatives": (self.hard_negatives, 0),
            "--seed": (self.seed, 0),
            "--threads": (self.threads, 0),
            "warmup_steps": (self.warmup_steps, 0),
            "max_steps": (self.max_steps, 0),
            "stop_after": (self.stop_after, 0),
        }
        for name, (value, low) in whole.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr!r}")
        weights = [f.name for f in fields(self) if f.name.startswith("w_")]
        for f in (
            "weight_decay",
            "flops_image",
            "flops_text",
            "min_lr_ratio",
            "mask_ratio",
            *weights,
        ):
            v = getattr(self, f)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise UsageError(f"{f} must be a number >= 0, got {v!r}")
        if self.min_lr_ratio > 1 or self.mask_ratio >= 1:
            raise UsageError("min_lr_ratio must be <= 1 and mask_ratio < 1")
        return self


#: settings a resumed run may change (how it runs, not what it learns)
_RUN_CONTROL = ("threads", "checkpoint_every", "log_every", "val_every", "stop_after")


def augment(x: Any, gen: Any) -> Any:
    """Photometric and small geometric changes of images ``[b, 3, S, S]`` in ``[0, 1]``.

    No flips and no hue changes: left/right and colours are what captions say.
    """
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def u(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return torch.rand(n, generator=gen) * (hi - lo) + lo

    # affine: scale 0.9-1.1, rotation +-4 degrees, shift +-5% (border pixels repeat)
    s, r = u(0.9, 1.1), u(-4, 4) * math.pi / 180
    tx, ty = u(-0.05, 0.05), u(-0.05, 0.05)
    theta = torch.stack(
        [
            torch.stack([torch.cos(r) / s, -torch.sin(r) / s, tx], 1),
            torch.stack([torch.sin(r) / s, torch.cos(r) / s, ty], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # blur a random third of the batch (one sigma per batch)
    sigma = float(u(0.4, 1.2, 1))
    k = torch.arange(-2, 3, dtype=x.dtype)
    g = torch.exp(-(k**2) / (2 * sigma**2))
    g = g / g.sum()
    blur = torch.rand(b, generator=gen) < 0.33
    if bool(blur.any()):
        xb = x[blur]
        xb = F.conv2d(
            F.pad(xb, (2, 2, 0, 0), mode="replicate"),
            g.view(1, 1, 1, 5).repeat(3, 1, 1, 1),
            groups=3,
        )
        xb = F.conv2d(
            F.pad(xb, (0, 0, 2, 2), mode="replicate"),
            g.view(1, 1, 5, 1).repeat(3, 1, 1, 1),
            groups=3,
        )
        x = x.clone()
        x[blur] = xb
    # brightness, contrast, noise
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.85, 1.15).view(b, 1, 1, 1) + mean * u(0.9, 1.1).view(b, 1, 1, 1)
    x = x + torch.randn(x.shape, generator=gen) * u(0.0, 0.03).view(b, 1, 1, 1)
    return x.clamp(0.0, 1.0)


def _normalise(x: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    import torch

    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    )


def _frozen_heads(net: Any, terms: tuple[str, ...]) -> bool:
    """True when ``net`` is lexicon heads on a frozen encoder (:mod:`lexlens.models.lexheads`)
    and ``terms`` train those heads (a dense objective fine-tunes the encoder itself)."""
    return hasattr(net, "frozen_image") and set(terms) != {"dense"}


def _param_groups(net: Any, heads_only: bool) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if heads_only and not name.startswith(
            ("image_lex.", "text_lex.", "free_table.", "lex_logit_scale", "free_logit_scale")
        ):
            p.requires_grad_(False)
            continue
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "pos" in name or "cls" in name else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def _train_mode(net: Any, heads_only: bool) -> None:
    """Training mode; a frozen encoder keeps its batch-norm statistics (eval mode) too."""
    from torch import nn

    net.train()
    if heads_only:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _batch_positives(data: PairSet, idx: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """``bool [B, B]``: text ``t`` (caption ``cap[t]`` of image ``idx[t]``) fits image ``idx[i]``."""
    if data.meanings is not None and data.scenes is not None:
        return batch_fits(
            [data.meanings[i][j] for i, j in zip(idx, cap, strict=True)],
            [data.scenes[i] for i in idx],
        )
    texts = [data.captions[i][j].strip().lower() for i, j in zip(idx, cap, strict=True)]
    sets = [{c.strip().lower() for c in data.captions[i]} for i in idx]
    return np.array([[t in s for s in sets] for t in texts], dtype=bool)


def _encode_eval(
    encoder: Any, data: PairSet, mean: Any, std: Any
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    import torch

    px = _normalise(torch.from_numpy(data.images).float() / 255.0, mean, std).numpy()
    img = encoder.encode_images(list(px), batch_size=256)
    texts = [c for caps in data.captions for c in caps]
    t2i = np.asarray([i for i, caps in enumerate(data.captions) for _ in caps], np.int64)
    txt = encoder.encode_texts(texts)
    return img, txt, texts, t2i


def evaluate_pairs(encoder: Any, data: PairSet, lexical: bool = True) -> dict[str, Any]:
    """Recall@1/5/10 both ways and rSum (dense, and lexical when the encoder has it), in percent."""
    from lexlens.eval.metrics import i2t_recall, invert_mapping, rsum, t2i_recall

    cfg = encoder.preprocess_config
    img, txt, texts, t2i = _encode_eval(encoder, data, cfg.mean, cfg.std)
    i2t_map = invert_mapping(t2i, len(img))
    out: dict[str, Any] = {}
    sim = txt @ img.T
    a, b = t2i_recall(sim, t2i), i2t_recall(sim.T, i2t_map)
    out["dense"] = {"t2i": a, "i2t": b, "rsum": rsum(a, b)}
    if lexical and getattr(encoder, "has_lexical", False):
        import torch

        px = _normalise(torch.from_numpy(data.images).float() / 255.0, cfg.mean, cfg.std).numpy()
        si = encoder.encode_images_lexical(list(px), batch_size=256).to_dense()
        st = encoder.encode_texts_lexical(texts).to_dense()
        lsim = st @ si.T
        a, b = t2i_recall(lsim, t2i), i2t_recall(lsim.T, i2t_map)
        nnz = float(np.mean((si > 0).sum(1)))
        out["lexical"] = {
            "t2i": a,
            "i2t": b,
            "rsum": rsum(a, b),
            "nnz_image": nnz,
            "nnz_text": float(np.mean((st > 0).sum(1))),
        }
    return out


def _save_checkpoint(
    path: Path, net: Any, opt: Any, state: dict[str, Any], heads: bool = False
) -> None:
    """Weights (``heads``: only the lexicon heads, not the frozen encoder), optimiser, state."""
    import torch

    weights = net.heads_state() if heads else net.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save({"model": weights, "optimizer": opt.state_dict(), **state}, tmp)
    os.replace(tmp, path)


def train(
    encoder: Any,
    data: PairSet,
    cfg: TrainConfig,
    out_dir: str | Path,
    val: PairSet | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``encoder`` in place on ``data``; write checkpoints and the final model to ``out_dir``.

    Returns the JSON summary (steps, time, throughput, final losses, validation history).
    """
    import torch

    from lexlens.progress import progress_bar

    terms = cfg.check().terms()
    net = encoder.trainable()
    native = hasattr(net, "image_states")
    heads = _frozen_heads(net, terms)
    if not (native or heads) and set(terms) - {"dense"}:
        raise UsageError(
            f"objective {cfg.objective!r} needs a native model with lexicon heads; use clip or "
            "siglip (or lexical-heads through lexlens train / run_training)"
        )
    if heads and set(terms) - set(OBJECTIVES["lexical-heads"]):
        raise UsageError(
            f"objective {cfg.objective!r} cannot train a frozen encoder's lexicon heads; "
            "use lexical-heads"
        )
    if len(data) < 2:
        raise UsageError("training needs at least two image-caption pairs")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt_path = Path(out_dir) / "checkpoint.pt"
    bsz = min(cfg.batch_size, len(data))
    steps_per_epoch = len(data) // bsz
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    heads_only = cfg.objective == "lexical-heads"
    groups = _param_groups(net, heads_only)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    siglip_bias = torch.nn.Parameter(torch.tensor(-10.0))
    if cfg.objective == "siglip":
        opt.add_param_group({"params": [siglip_bias], "weight_decay": 0.0})
    if "twins" in terms and (data.twins is None or data.twin_scenes is None):
        raise UsageError(
            f"objective {cfg.objective!r} needs counterfactual twin images, which the scenes "
            "training recipes make as they generate their data (lexlens train --recipe); "
            "datasets read from files, scenes folders too, have none: use lexlip-grounded"
        )
    roles = None
    if "roles" in terms:
        if data.scenes is None or data.meanings is None or not native:
            raise UsageError(
                f"objective {cfg.objective!r} needs a native model and generated scenes (their "
                "records and caption meanings: the training recipes); use lexlip-grounded"
            )
        from lexlens.train.roles import RoleHeads

        roles = RoleHeads.for_net(net)
        opt.add_param_group({"params": list(roles.module.parameters()), "weight_decay": 0.0})
    out = Path(out_dir)
    try:  # only now: a run refused above leaves no empty folder behind
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot use {out} as the output folder: {e.strerror}") from None
    step, history, seconds = 0, [], 0.0
    if resume:
        if not ckpt_path.is_file():
            raise UsageError(f"--resume: no checkpoint at {ckpt_path}")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        _check_same_run(ck, cfg, data, ckpt_path)
        try:
            net.load_state_dict(ck["model"], strict=not heads)  # heads: the encoder is not saved
            opt.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UsageError(
                f"--resume: {ckpt_path} was saved by another model or objective ({first}); "
                "start with the model and settings of that run, or train into a new folder"
            ) from None
        step, history, seconds = int(ck["step"]), list(ck["history"]), float(ck.get("seconds", 0.0))
        if "siglip_bias" in ck:
            siglip_bias.data.fill_(float(ck["siglip_bias"]))
        if roles is not None and "role_heads" in ck:
            roles.module.load_state_dict(ck["role_heads"])
    mean, std = encoder.preprocess_config.mean, encoder.preprocess_config.std
    images_t = torch.from_numpy(data.images)
    # [n, V] 0/1: the word pieces of each image's captions (targets of the "words" term)
    word_bags = net.word_bags(data.captions) if "words" in terms else None
    say = log or (lambda s: None)
    last: dict[str, float] = {}
    t_start = time.perf_counter()

    def state() -> dict[str, Any]:
        return {
            "step": step,
            "history": history,
            "seconds": seconds + time.perf_counter() - t_start,
            "config": asdict(cfg),
            "data": _data_identity(data),
            "siglip_bias": float(siglip_bias.detach()),
            **({"role_heads": roles.module.state_dict()} if roles is not None else {}),
        }

    _train_mode(net, heads_only)
    with (
        progress_bar(total, "train", "step", progress, initial=step) as bar,
        _DeferredInterrupt() as interrupt,
    ):
        while step < total:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            rng = np.random.default_rng([cfg.seed, epoch])
            perm = rng.permutation(len(data))
            caps_pick = np.array([rng.integers(len(c)) for c in data.captions])
            neg_rng = np.random.default_rng([cfg.seed, epoch, 1])
            for done in range(in_epoch):  # resumed mid-epoch: draw the earlier steps' negatives
                sl = perm[done * bsz : (done + 1) * bsz]
                _pick_negatives(data, sl, caps_pick[sl], cfg.hard_negatives, neg_rng)
            while in_epoch < steps_per_epoch and step < total:
                idx = perm[in_epoch * bsz : (in_epoch + 1) * bsz]
                cap = caps_pick[idx]
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, total, cfg)
                losses = _step(
                    net,
                    native or heads,
                    terms,
                    cfg,
                    data,
                    images_t,
                    idx,
                    cap,
                    gen,
                    neg_rng,
                    mean,
                    std,
                    siglip_bias,
                    step / max(1, total),
                    word_bags,
                    roles,
                )
                loss = sum(losses.values())
                if not bool(torch.isfinite(loss)):
                    bad = {k: float(v.detach()) for k, v in losses.items()}
                    raise TrainingError(
                        f"training diverged at step {step + 1}: the loss is not a number "
                        f"({json.dumps(bad)}); lower --lr (now {cfg.lr:g}). The last checkpoint "
                        f"({ckpt_path}) is from before; nothing else was saved"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for g in opt.param_groups for p in g["params"]], 5.0
                )
                opt.step()
                if not heads_only:  # a frozen encoder's own temperature stays as it is
                    with torch.no_grad():
                        net.logit_scale.clamp_(0, math.log(100))
                step += 1
                in_epoch += 1
                last = {k: round(float(v.detach()), 4) for k, v in losses.items()}
                el = seconds + time.perf_counter() - t_start
                if cfg.log_every and step % cfg.log_every == 0:
                    say(
                        f"step {step}/{total} loss {json.dumps(last)} lr {_lr_at(step, total, cfg):.2e} {step * bsz / max(el, 1e-9):.0f} img/s"
                    )
                bar.set_postfix(
                    loss=f"{float(loss.detach()):.3f}", img_s=f"{step * bsz / max(el, 1e-9):.0f}"
                )
                bar.update(1)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    _save_checkpoint(ckpt_path, net, opt, state(), heads)
                if interrupt.requested:
                    _save_checkpoint(ckpt_path, net, opt, state(), heads)
                    raise TrainingInterrupted(
                        f"interrupted at step {step} of {total}; the checkpoint is saved in "
                        f"{ckpt_path} (no model yet): run the same command with --resume to "
                        "continue"
                    )
                if cfg.stop_after and step >= cfg.stop_after:
                    break
            if in_epoch >= steps_per_epoch:  # an epoch ended
                entry: dict[str, Any] = {"epoch": epoch + 1, "step": step, "loss": last}
                if val is not None and cfg.val_every and (epoch + 1) % cfg.val_every == 0:
                    net.eval()
                    entry["val"] = evaluate_pairs(
                        encoder, val, lexical=(native or heads) and "lexical" in terms
                    )
                    _train_mode(net, heads_only)
                history.append(entry)
                say(_epoch_line(entry))
                _save_checkpoint(ckpt_path, net, opt, state(), heads)
            if cfg.stop_after and step >= cfg.stop_after:
                break
    net.eval()
    _save_checkpoint(ckpt_path, net, opt, state(), heads)
    elapsed = seconds + time.perf_counter() - t_start
    return {
        "steps": step,
        "epochs": step / max(1, steps_per_epoch),
        "batch_size": bsz,
        "seconds": round(elapsed, 1),
        "images_per_second": round(step * bsz / max(elapsed, 1e-9), 1),
        "final_loss": last,
        "history": history,
        "config": asdict(cfg),
        "train_pairs": len(data),
        "source": data.source,
    }


def _data_identity(data: PairSet) -> dict[str, Any]:
    """What a checkpoint records of its training pairs, to recognise them on ``--resume``."""
    return {"source": str(data.source), "pairs": len(data)}


def _check_same_run(ck: dict[str, Any], cfg: TrainConfig, data: PairSet, path: Path) -> None:
    """A one-line :class:`UsageError` when ``--resume`` would continue a checkpoint made with
    other data or settings (it would report a run that never happened)."""
    was, now = dict(ck.get("config") or {}), asdict(cfg)
    diff = [
        f"{k} {was[k]!r} -> {now[k]!r}"
        for k in now
        if k in was and k not in _RUN_CONTROL and was[k] != now[k]
    ]
    seen = ck.get("data")
    if seen is not None and seen != _data_identity(data):
        diff.append(
            f"data {seen['source']} ({seen['pairs']} pairs) -> {data.source} ({len(data)} pairs)"
        )
    if diff:
        raise UsageError(
            f"--resume: {path} is of another run ({'; '.join(diff)}); resume with that run's "
            "data and settings, or train into a new folder"
        )


class _DeferredInterrupt:
    """While active (in the main thread), the first Ctrl-C only sets :attr:`requested`, so the
    loop can finish its step and save a checkpoint; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._installed = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> _DeferredInterrupt:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


def _twins_loss(
    net: Any,
    data: PairSet,
    idx: np.ndarray,
    cap: np.ndarray,
    tidx: np.ndarray,
    logits: Any,
    txt: Any,
    tw: Any,
    pos: Any,
) -> Any:
    """Text-to-image multi-positive InfoNCE over the batch's images *and* the counterfactual
    twins of those that have one (:func:`lexlens.train.data.twin_scene`: the same picture with
    the objects' places changed). A twin is a negative for a caption naming the place or
    relation it changed, a positive for one it still fits. A swapped caption cannot teach a
    place while the text tower reads "left" and "right" alike (its gradient on the image tower
    is the difference of the two texts); a twin pushes the two images apart along the caption.
    Measured on unseen scenes (one 100k-scene stage): a place caption picks its own picture
    over the twin 100% of the time instead of 85%; for a pair's relation it stays at chance.

    ``logits [B, B]`` the batch's scaled text-image scores, ``txt [B, d]`` and ``tw [T, d]``
    (the twins of images ``tidx``) normalised; ``pos bool [B, B]``."""
    import torch

    assert data.twin_scenes is not None and data.meanings is not None
    if len(tidx) == 0:
        return logits.sum() * 0.0
    fits = batch_fits(
        [data.meanings[i][j] for i, j in zip(idx, cap, strict=True)],
        [data.twin_scenes[i] for i in tidx],
    )  # [B, T]
    with_twins = torch.cat([logits, scaled_logits(txt, tw, net.logit_scale)], 1)  # [B, B + T]
    return multi_positive_nce(with_twins, torch.cat([pos, torch.from_numpy(fits)], 1))


def _role_terms(
    net: Any,
    roles: Any,
    cfg: TrainConfig,
    data: PairSet,
    idx: np.ndarray,
    cap: np.ndarray,
    tidx: np.ndarray,
    texts: list[str],
    tst: Any,
    ist: Any,
    txt: Any,
    img: Any,
) -> dict[str, Any]:
    """The ``roles`` and ``layout`` terms (:mod:`lexlens.train.roles`) of a batch: ``tst [B+N,
    L, w]`` and ``txt [B+N, d]`` (the first ``B`` are ``texts``), ``ist [B+T, 1+P, w]`` and
    ``img [B+T, d]`` (images ``idx``, then the twins of images ``tidx``)."""
    from lexlens.models import minilm
    from lexlens.train.roles import (
        image_role_targets,
        layout_targets,
        role_losses,
        text_role_targets,
    )

    assert data.scenes is not None and data.meanings is not None
    B = len(idx)
    meanings = [data.meanings[i][j] for i, j in zip(idx, cap, strict=True)]
    scenes = [data.scenes[i] for i in idx]
    if len(tidx):
        assert data.twin_scenes is not None
        scenes += [data.twin_scenes[i] for i in tidx]
    encs = minilm.get_tokenizer(net.cfg.text.max_tokens).encode_batch(texts)
    words = [e.word_ids for e in encs]
    offsets = [e.offsets for e in encs]
    tt, tm = text_role_targets(meanings, words, texts, offsets)
    out = role_losses(
        roles,
        tst[:B],
        ist,
        txt[:B],
        img,
        (tt, tm),
        image_role_targets(scenes, int(net.grid)),
        layout_targets(meanings),
        layout_targets(scenes),
    )
    return {"roles": cfg.w_roles * out["roles"], "layout": cfg.w_layout * out["layout"]}


def _epoch_line(entry: dict[str, Any]) -> str:
    parts = [f"epoch {entry['epoch']} step {entry['step']}", "loss " + json.dumps(entry["loss"])]
    for kind, v in entry.get("val", {}).items():
        parts.append(
            f"val {kind} rSum {v['rsum']:.1f} (t2i R@1 {v['t2i']['R@1']:.1f} R@5 {v['t2i']['R@5']:.1f}; i2t R@1 {v['i2t']['R@1']:.1f})"
        )
    return " | ".join(parts)


def _pick_negatives(
    data: PairSet, idx: np.ndarray, cap: np.ndarray, hard: int, neg_rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Hard negatives of a batch: up to ``hard`` swapped captions of each image's sampled
    caption. ``(neg_idx [B, H]`` (the negative's position among the batch's texts, after the
    ``B`` positives; -1: none), ``texts)``. Draws from ``neg_rng`` (one stream per epoch)."""
    B = len(idx)
    H = hard if data.negatives is not None else 0
    neg_idx = np.full((B, H), -1, np.int64)
    extra: list[str] = []
    for b, (i, j) in enumerate(zip(idx, cap, strict=True)):
        if H == 0:
            break
        pool = data.negatives[i][j] if j < len(data.negatives[i]) else []
        if not pool:
            continue
        pick = neg_rng.choice(len(pool), size=min(H, len(pool)), replace=False)
        for h, p in enumerate(pick):
            neg_idx[b, h] = B + len(extra)
            extra.append(pool[p])
    return neg_idx, extra


def _step(
    net: Any,
    lexical: bool,
    terms: tuple[str, ...],
    cfg: TrainConfig,
    data: PairSet,
    images_t: Any,
    idx: np.ndarray,
    cap: np.ndarray,
    gen: Any,
    neg_rng: np.random.Generator,
    mean: Any,
    std: Any,
    siglip_bias: Any,
    progress_frac: float,
    word_bags: Any = None,
    roles: Any = None,
) -> dict[str, Any]:
    """The loss terms of one batch (``lexical``: ``net`` has lexicon heads)."""
    import torch
    import torch.nn.functional as F

    B = len(idx)
    texts = [data.captions[i][j] for i, j in zip(idx, cap, strict=True)]
    neg_idx, extra = _pick_negatives(data, idx, cap, cfg.hard_negatives, neg_rng)
    H = neg_idx.shape[1]
    pos = positive_mask(np.arange(B), B, _batch_positives(data, idx, cap))  # [B texts, B images]
    x = images_t[torch.from_numpy(idx)].float() / 255.0  # [B, 3, S, S]
    tidx = np.zeros(0, np.int64)  # images of the batch whose twins join it (after the B)
    if "twins" in terms:
        assert data.twins is not None and data.twin_scenes is not None
        tidx = idx[np.array([data.twin_scenes[i] is not None for i in idx], dtype=bool)]
        # one forward pass for images and twins: batch-norm statistics of a separate twin
        # batch would tell twins apart without looking at where the objects are
        x = torch.cat([x, torch.from_numpy(data.twins[tidx]).float() / 255.0])  # [B + T, ...]
    if cfg.augment:
        x = augment(x, gen)
    px = _normalise(x, mean, std)
    tok = net.tokenize(texts + extra)
    n_valid = torch.from_numpy(neg_idx >= 0)  # [B, H]
    safe = torch.from_numpy(np.where(neg_idx >= 0, neg_idx, 0))
    out: dict[str, Any] = {}

    def neg_scores(txt_all: Any, img: Any, scale: Any) -> Any:
        """``[B, H]`` scores of each image with its own negatives."""
        if H == 0:
            return None
        return scale * (img[:, None, :] * txt_all[safe]).sum(-1)

    def dense_loss(txt: Any, img: Any, logits: Any) -> Any:
        """SigLIP or multi-positive InfoNCE (with each image's hard negatives) on ``[B, B]``."""
        if cfg.objective == "siglip":
            return siglip_loss(logits, pos, siglip_bias)
        scale = net.logit_scale.exp().clamp(max=100)
        return contrastive_loss(logits, pos, neg_scores(txt, img, scale), n_valid)

    if not lexical:
        img = F.normalize(net.image_features(px), dim=-1)
        txt = F.normalize(net.text_features(tok), dim=-1)
        out["dense"] = dense_loss(txt, img, scaled_logits(txt[:B], img, net.logit_scale))
        return out

    if hasattr(net, "frozen_image"):  # heads on a frozen encoder: its states, no gradients
        ist, img = net.frozen_image(px)  # [B, N, w], [B, d]
        tst, mask, txt = net.frozen_text(tok)  # [B+N, L, w], [B+N, L], [B+N, d]
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    else:
        ist = net.image_states(px)  # [B (+ T twins), 1+P, w]
        tst = net.text_states(tok)  # [B+N, L, w]
        mask = tok["attention_mask"]
        img = F.normalize(net.image_pool(ist), dim=-1)  # [B (+ T), d]
        txt = F.normalize(net.text_pool(tst, mask), dim=-1)  # [B+N, d]
        if "roles" in terms:
            out.update(
                _role_terms(net, roles, cfg, data, idx, cap, tidx, texts, tst, ist, txt, img)
            )
        img, tw, ist = img[:B], img[B:], ist[:B]
    logits = scaled_logits(txt[:B], img, net.logit_scale)  # [B, B]
    if "dense" in terms:
        out["dense"] = dense_loss(txt, img, logits)
    if "twins" in terms:
        out["twins"] = cfg.w_twins * _twins_loss(
            net, data, idx, cap, tidx, logits, txt[:B], tw, pos
        )
    if not {"lexical", "free", "bottleneck"} & set(terms):
        return out
    il, zmax = net.image_lexical_with_logits(ist)  # [B, V] weights and max-pooled word logits
    if "words" in terms:
        bags = word_bags[torch.from_numpy(idx)]  # [B, V] 0/1
        out["words"] = cfg.w_words * F.binary_cross_entropy_with_logits(zmax, bags)
    ramp = min(1.0, progress_frac / max(cfg.flops_ramp, 1e-6)) ** 2
    if "lexical" in terms:
        if hasattr(net, "text_lexical_with_logits"):  # native: [B+N, V] each
            tl, tz = net.text_lexical_with_logits(tst, tok)
        else:
            tl, tz = net.text_lex.forward_with_logits(tst, mask, net.active_table())
        if "text_words" in terms:  # a text's lexicon weighs the word pieces it contains
            out["text_words"] = cfg.w_words * F.binary_cross_entropy_with_logits(
                tz, net.text_presence(tok)
            )
        lscale = net.lex_logit_scale.exp().clamp(max=100)
        llog = lscale * tl[:B] @ il.t()  # [B, B]
        out["lexical"] = cfg.w_lexical * contrastive_loss(
            llog, pos, neg_scores(tl, il, lscale), n_valid
        )
        out["flops"] = ramp * (
            cfg.flops_image * flops_loss(il) + cfg.flops_text * flops_loss(tl[:B])
        )
        if "distill" in terms:
            out["distill"] = cfg.w_distill * distill_loss(llog, logits)
    if "free" in terms:
        fl = net.text_lexical_free(tok)  # [B+N, V]
        fscale = net.free_logit_scale.exp().clamp(max=100)
        flog = fscale * fl[:B] @ il.t()
        out["free"] = cfg.w_free * contrastive_loss(flog, pos, neg_scores(fl, il, fscale), n_valid)
    if "bottleneck" in terms:
        ids = tok["input_ids"][:B]
        m = mask[:B]
        special = (ids == 101) | (ids == 102) | (m == 0)
        hide = (torch.rand(ids.shape, generator=gen) < cfg.mask_ratio) & ~special
        targets = torch.where(hide, net.active_lut[ids], torch.full_like(ids, -1))
        masked = torch.where(hide, torch.full_like(ids, 103), ids)  # [MASK]
        out["bottleneck"] = cfg.w_bottleneck * masked_lm_loss(
            net.bottleneck_logits(il, masked, m), targets
        )
    return out
