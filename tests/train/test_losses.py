"""Losses against naive loops on random tensors (with multi-positives and padding)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lexlens.train.losses import (
    contrastive_loss,
    flops_loss,
    masked_lm_loss,
    multi_positive_nce,
    positive_mask,
    siglip_loss,
)


def _naive_nce(logits: np.ndarray, pos: np.ndarray, valid: np.ndarray | None = None) -> float:
    total = 0.0
    for r in range(logits.shape[0]):
        cols = [c for c in range(logits.shape[1]) if valid is None or valid[r, c]]
        denom = sum(math.exp(logits[r, c]) for c in cols)
        num = sum(math.exp(logits[r, c]) for c in cols if pos[r, c])
        total += -math.log(num / denom)
    return total / logits.shape[0]


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 6)) * 3
    pos = np.eye(6, dtype=bool)
    pos[0, 3] = pos[4, 1] = True  # captions that also fit another image
    return logits, pos


def test_positive_mask_or_fits() -> None:
    fits = np.zeros((3, 3), bool)
    fits[2, 0] = True
    m = positive_mask(np.array([0, 1, 2]), 3, fits).numpy()
    assert m.tolist() == [[True, False, False], [False, True, False], [True, False, True]]


def test_multi_positive_nce_matches_loop(case) -> None:
    logits, pos = case
    got = multi_positive_nce(torch.tensor(logits), torch.tensor(pos)).item()
    assert got == pytest.approx(_naive_nce(logits, pos), rel=1e-9)


def test_contrastive_with_hard_negatives_matches_loop(case) -> None:
    logits, pos = case
    rng = np.random.default_rng(1)
    neg = rng.normal(size=(6, 2)) * 3
    valid = np.ones((6, 2), bool)
    valid[3, 1] = valid[5, :] = False
    got = contrastive_loss(
        torch.tensor(logits), torch.tensor(pos), torch.tensor(neg), torch.tensor(valid)
    ).item()
    t2i = _naive_nce(logits, pos)
    i2t_logits = np.concatenate([logits.T, neg], 1)
    i2t_pos = np.concatenate([pos.T, np.zeros((6, 2), bool)], 1)
    i2t_valid = np.concatenate([np.ones((6, 6), bool), valid], 1)
    want = 0.5 * (t2i + _naive_nce(i2t_logits, i2t_pos, i2t_valid))
    assert got == pytest.approx(want, rel=1e-9)


def test_hard_negatives_raise_the_loss(case) -> None:
    logits, pos = case
    base = contrastive_loss(torch.tensor(logits), torch.tensor(pos)).item()
    neg = torch.full((6, 1), 5.0, dtype=torch.float64)
    more = contrastive_loss(
        torch.tensor(logits), torch.tensor(pos), neg, torch.ones(6, 1, dtype=torch.bool)
    ).item()
    assert more > base


def test_siglip_matches_formula(case) -> None:
    logits, pos = case
    b = -1.5
    want = (
        -sum(
            math.log(1 / (1 + math.exp(-(1 if pos[t, i] else -1) * (logits[t, i] + b))))
            for t in range(6)
            for i in range(6)
        )
        / 6
    )
    got = siglip_loss(torch.tensor(logits), torch.tensor(pos), torch.tensor(b)).item()
    assert got == pytest.approx(want, rel=1e-9)


def test_flops_and_mlm_match_loops() -> None:
    rng = np.random.default_rng(2)
    w = np.abs(rng.normal(size=(4, 5)))
    want = sum((sum(w[i, j] for i in range(4)) / 4) ** 2 for j in range(5))
    assert flops_loss(torch.tensor(w)).item() == pytest.approx(want)
    logits = rng.normal(size=(2, 3, 4))
    targets = np.array([[1, -1, 3], [-1, -1, 0]])
    ce = []
    for b in range(2):
        for p in range(3):
            if targets[b, p] >= 0:
                row = logits[b, p]
                ce.append(-(row[targets[b, p]] - math.log(sum(math.exp(v) for v in row))))
    got = masked_lm_loss(torch.tensor(logits), torch.tensor(targets)).item()
    assert got == pytest.approx(sum(ce) / len(ce))
    assert masked_lm_loss(torch.tensor(logits), torch.full((2, 3), -1)).item() == 0.0
