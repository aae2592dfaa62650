"""Training losses, split into labels, logits and forward (shapes in the comments).

* labels: which (text, image) pairs are positives. Besides each caption's own image, a caption
  that also *fits* another image of the batch ("a red circle" for any image showing one) is a
  positive there too, not a false negative (multi-positive contrastive learning);
* logits: scaled similarities ``[T, I]`` (dense cosine, or lexical dot products);
* forward: symmetric multi-positive InfoNCE (CLIP), the sigmoid loss (SigLIP), the FLOPS
  regulariser of sparse weights, the lexicon-bottleneck masked-language-model loss and
  score distillation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "positive_mask",
    "scaled_logits",
    "multi_positive_nce",
    "contrastive_loss",
    "siglip_loss",
    "flops_loss",
    "masked_lm_loss",
    "distill_loss",
]


def positive_mask(text_to_image: np.ndarray, n_images: int, fits: np.ndarray | None = None) -> Any:
    """Positives ``bool [T, I]``: each text's own image, or'ed with ``fits`` when given."""
    import torch

    pos = np.zeros((len(text_to_image), n_images), dtype=bool)
    pos[np.arange(len(text_to_image)), np.asarray(text_to_image)] = True
    if fits is not None:
        pos |= np.asarray(fits, dtype=bool)
    return torch.from_numpy(pos)


def scaled_logits(txt: Any, img: Any, log_scale: Any, max_scale: float = 100.0) -> Any:
    """``txt [T, d]``, ``img [I, d]`` -> ``exp(log_scale) * txt @ img.T`` ``[T, I]`` (scale capped)."""
    return log_scale.exp().clamp(max=max_scale) * txt @ img.t()


def multi_positive_nce(logits: Any, pos: Any, valid: Any | None = None) -> Any:
    """Row-wise multi-positive InfoNCE: ``-log(sum_pos exp / sum_all exp)`` averaged over rows.

    ``logits [R, C]``, ``pos bool [R, C]`` (every row has a positive), ``valid bool [R, C]``
    marks columns that exist (padding excluded).
    """
    import torch

    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    all_ = torch.logsumexp(logits, dim=1)  # [R]
    pos_ = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)  # [R]
    return (all_ - pos_).mean()


def contrastive_loss(
    logits_t2i: Any, pos: Any, neg_logits: Any | None = None, neg_valid: Any | None = None
) -> Any:
    """Symmetric multi-positive InfoNCE over ``logits_t2i [T, I]`` and ``pos [T, I]``.

    Image-to-text rows also see each image's own hard negatives ``neg_logits [I, H]``
    (swapped captions, ``neg_valid [I, H]`` marks real ones).
    """
    import torch

    t2i = multi_positive_nce(logits_t2i, pos)
    i2t_logits, i2t_pos = logits_t2i.t(), pos.t()  # [I, T]
    valid = None
    if neg_logits is not None and neg_logits.shape[1] > 0:
        i2t_logits = torch.cat([i2t_logits, neg_logits], dim=1)  # [I, T + H]
        i2t_pos = torch.cat([i2t_pos, torch.zeros_like(neg_valid)], dim=1)
        valid = torch.cat([torch.ones_like(pos.t()), neg_valid], dim=1)
    keep = i2t_pos.any(dim=1)  # images without any caption in the batch have no i2t row
    i2t = multi_positive_nce(
        i2t_logits[keep], i2t_pos[keep], None if valid is None else valid[keep]
    )
    return 0.5 * (t2i + i2t)


def siglip_loss(logits_t2i: Any, pos: Any, bias: Any) -> Any:
    """Sigmoid loss (SigLIP): every pair is a binary problem; ``-mean log sigmoid(z * (2y - 1))``.

    ``logits_t2i [T, I]`` (already scaled), ``pos bool [T, I]``, ``bias`` a learnable scalar.
    Normalised by the number of texts as in the paper.
    """
    import torch.nn.functional as F

    sign = pos.float() * 2 - 1
    return -F.logsigmoid(sign * (logits_t2i + bias)).sum() / logits_t2i.shape[0]


def flops_loss(w: Any) -> Any:
    """FLOPS regulariser ``sum_j (mean_i |w[i, j]|)^2`` of sparse weights ``w [b, V]``."""
    return (w.abs().mean(dim=0) ** 2).sum()


def masked_lm_loss(logits: Any, targets: Any) -> Any:
    """Cross-entropy of ``logits [b, L, V]`` at positions where ``targets [b, L] >= 0``."""
    import torch.nn.functional as F

    m = targets >= 0
    if not bool(m.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[m], targets[m])


def distill_loss(student_t2i: Any, teacher_t2i: Any) -> Any:
    """KL(teacher || student) of row-wise softmaxes, both ways (teacher detached) ``[T, I]``."""
    import torch.nn.functional as F

    t = teacher_t2i.detach()
    kl_rows = F.kl_div(
        F.log_softmax(student_t2i, 1), F.log_softmax(t, 1), log_target=True, reduction="batchmean"
    )
    kl_cols = F.kl_div(
        F.log_softmax(student_t2i, 0).t(),
        F.log_softmax(t, 0).t(),
        log_target=True,
        reduction="batchmean",
    )
    return 0.5 * (kl_rows + kl_cols)
