"""Cross-check against LAION CLIP_benchmark's retrieval recall on the same similarity matrices.

CLIP_benchmark (``clip_benchmark.metrics.zeroshot_retrieval``) ranks with ``torch.topk``,
whose order among equal scores is unspecified, while lexlens breaks ties by ``(-score, id)``.
The matrices here are therefore tie-free (continuous random scores); the tie rule itself
is tested against a naive loop in ``test_eval_metrics.py``. The package is installed with
``--no-deps`` (see the Makefile), so only its metric module (torch + tqdm) is imported.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clip_benchmark.metrics import zeroshot_retrieval as zr  # installed by `make install`

from lexlens.eval import metrics as M


def clip_benchmark_recalls(scores_t2i: np.ndarray, text_to_image: np.ndarray, ks, batch_size: int):
    """What CLIP_benchmark's ``evaluate`` does once it has the text x image score matrix."""
    scores = torch.from_numpy(scores_t2i)
    positive_pairs = torch.zeros_like(scores, dtype=torch.bool)
    positive_pairs[torch.arange(len(scores)), torch.from_numpy(text_to_image)] = True
    out = {}
    for k in ks:
        img = zr.batchify(zr.recall_at_k, scores, positive_pairs, batch_size, "cpu", k=k)
        txt = zr.batchify(zr.recall_at_k, scores.T, positive_pairs.T, batch_size, "cpu", k=k)
        out[f"image_retrieval_recall@{k}"] = (img > 0).float().mean().item()
        out[f"text_retrieval_recall@{k}"] = (txt > 0).float().mean().item()
    return out


@pytest.mark.parametrize("seed", range(6))
def test_same_recalls_as_clip_benchmark(seed):
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(12, 60))
    per = rng.integers(1, 6, size=n_images)  # varying caption counts per image
    t2i = rng.permutation(np.repeat(np.arange(n_images), per))
    img = rng.normal(size=(n_images, 16)).astype(np.float32)
    # texts near their image so that recalls are neither 0 nor 100
    txt = img[t2i] + rng.normal(scale=1.5, size=(len(t2i), 16)).astype(np.float32)
    scores = (txt / np.linalg.norm(txt, axis=1, keepdims=True)) @ (
        img / np.linalg.norm(img, axis=1, keepdims=True)
    ).T
    scores = scores.astype(np.float64)
    # tie-free within every row and every column (what both directions rank)
    assert all(len(np.unique(r)) == len(r) for r in scores)
    assert all(len(np.unique(c)) == len(c) for c in scores.T)
    ks = (1, 5, 10)
    theirs = clip_benchmark_recalls(scores, t2i, ks, batch_size=int(rng.integers(3, 40)))
    ours_t = M.t2i_recall(scores, t2i, ks)
    ours_i = M.i2t_recall(scores.T, t2i, ks)
    for k in ks:
        assert ours_t[f"R@{k}"] == pytest.approx(
            100 * theirs[f"image_retrieval_recall@{k}"], abs=1e-4
        )
        assert ours_i[f"R@{k}"] == pytest.approx(
            100 * theirs[f"text_retrieval_recall@{k}"], abs=1e-4
        )
    assert 0 < ours_t["R@1"] < 100
