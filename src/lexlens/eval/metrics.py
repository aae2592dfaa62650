"""Retrieval metrics as small pure functions on similarity matrices and result lists.

The tie rule (the same ``(-score, id)`` order as the search contract of
:mod:`lexlens.results`): the **rank** of a ground-truth candidate ``g`` is ::

    rank(g) = 1 + #{c : s_c > s_g} + #{c : s_c == s_g and c < g}

so a candidate with an equal score and a smaller id is ranked ahead of the ground truth.
Ranks are deterministic, and the ranks found in a full similarity matrix are exactly the
positions at which an exact index returns the ground truth. When a query has several
ground-truth candidates (image-to-text: an image's own captions), its rank is the rank of
the first of them in that order. ``NaN`` scores count as ``-inf``.

``R@K`` is the share of queries whose rank is at most ``K``, in percent. Every recall and
accuracy returned here is in percent (0-100).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "t2i_ranks",
    "i2t_ranks",
    "recall_from_ranks",
    "t2i_recall",
    "i2t_recall",
    "mean_rank",
    "median_rank",
    "rsum",
    "ranks_from_results",
    "ann_recall_at_k",
    "fine_grained_accuracy",
    "invert_mapping",
    "ceiling_t2i",
    "ceiling_i2t",
]

#: rows of a similarity matrix processed at once (bounds the temporary boolean matrices)
_CHUNK = 1024


def _as_sim(sim: np.ndarray) -> np.ndarray:
    s = np.asarray(sim)
    if s.ndim != 2:
        raise ValueError(f"a similarity matrix must be 2-D, got shape {s.shape}")
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    if np.isnan(s).any():
        s = np.where(np.isnan(s), -np.inf, s)
    return s


def _ranks_of(sim: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Rank (tie rule above) of column ``gt[r]`` in each row ``r`` of ``sim``."""
    n, m = sim.shape
    rows = np.arange(n)
    s_gt = sim[rows, gt][:, None]
    cols = np.arange(m)[None, :]
    out = np.empty(n, dtype=np.int64)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        block = sim[a:b]
        ahead = (block > s_gt[a:b]) | ((block == s_gt[a:b]) & (cols < gt[a:b, None]))
        out[a:b] = 1 + ahead.sum(axis=1)
    return out


def invert_mapping(text_to_image: Sequence[int] | np.ndarray, n_images: int) -> list[np.ndarray]:
    """``text_to_image[t] = i`` -> ``image_to_texts[i] = sorted array of texts t``."""
    t2i = np.asarray(text_to_image, dtype=np.int64).reshape(-1)
    if len(t2i) and (t2i.min() < 0 or t2i.max() >= n_images):
        raise ValueError(f"text_to_image holds image ids outside [0, {n_images})")
    order = np.argsort(t2i, kind="stable")
    bounds = np.searchsorted(t2i[order], np.arange(n_images + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_images)]


def _image_to_texts(
    image_to_texts: Sequence[Sequence[int]] | np.ndarray, n_images: int, n_texts: int
) -> list[np.ndarray]:
    if (
        isinstance(image_to_texts, np.ndarray)
        and image_to_texts.ndim == 1
        and (image_to_texts.dtype.kind in "iu")
    ):
        if len(image_to_texts) != n_texts:
            raise ValueError(f"text_to_image has {len(image_to_texts)} entries for {n_texts} texts")
        return invert_mapping(image_to_texts, n_images)
    lists = [np.asarray(t, dtype=np.int64).reshape(-1) for t in image_to_texts]
    if len(lists) != n_images:
        raise ValueError(f"image_to_texts has {len(lists)} entries for {n_images} images")
    return lists


def t2i_ranks(sim_t2i: np.ndarray, text_to_image: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rank (1-based, tie rule of the module) of each text's own image; ``int64 [n_texts]``.

    ``sim_t2i[t, i]`` is the score of image ``i`` for text ``t``; ``text_to_image[t]`` is
    the id (column) of text ``t``'s own image.
    """
    sim = _as_sim(sim_t2i)
    gt = np.asarray(text_to_image, dtype=np.int64).reshape(-1)
    if len(gt) != sim.shape[0]:
        raise ValueError(f"text_to_image has {len(gt)} entries for {sim.shape[0]} texts")
    if len(gt) and (gt.min() < 0 or gt.max() >= sim.shape[1]):
        raise ValueError("text_to_image holds image ids outside the similarity matrix")
    return _ranks_of(sim, gt)


def i2t_ranks(
    sim_i2t: np.ndarray, image_to_texts: Sequence[Sequence[int]] | np.ndarray
) -> np.ndarray:
    """Rank of the first of each image's own captions; ``int64 [n_images]``.

    ``sim_i2t[i, t]`` is the score of text ``t`` for image ``i``. ``image_to_texts`` is
    either a list (one entry per image) of the ids of its captions, or a 1-D integer array
    ``text_to_image`` (one entry per text), which is inverted. Every image needs at least
    one caption. The rank is the smallest rank over the image's captions, i.e. the rank of
    the caption that comes first under ``(-score, id)``.
    """
    sim = _as_sim(sim_i2t)
    n_images, n_texts = sim.shape
    lists = _image_to_texts(image_to_texts, n_images, n_texts)
    best = np.empty(n_images, dtype=np.int64)
    for i, texts in enumerate(lists):
        if len(texts) == 0:
            raise ValueError(f"image {i} has no caption; image-to-text rank is undefined")
        if texts.min() < 0 or texts.max() >= n_texts:
            raise ValueError(f"image {i} lists caption ids outside [0, {n_texts})")
        s = sim[i, texts]
        top = s.max()
        best[i] = texts[s == top].min()
    return _ranks_of(sim, best)


def recall_from_ranks(ranks: np.ndarray, ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"R@K": percent of ranks <= K}`` for each ``K`` in ``ks``."""
    r = np.asarray(ranks)
    if r.size == 0:
        raise ValueError("no queries to compute a recall over")
    return {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in ks}


def t2i_recall(
    sim_t2i: np.ndarray, text_to_image: Sequence[int] | np.ndarray, ks: Iterable[int] = (1, 5, 10)
) -> dict[str, float]:
    """Text-to-image ``R@K`` in percent: the text's own image within the first ``K``."""
    return recall_from_ranks(t2i_ranks(sim_t2i, text_to_image), ks)


def i2t_recall(
    sim_i2t: np.ndarray,
    image_to_texts: Sequence[Sequence[int]] | np.ndarray,
    ks: Iterable[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image-to-text ``R@K`` in percent: any of the image's own captions within the first ``K``."""
    return recall_from_ranks(i2t_ranks(sim_i2t, image_to_texts), ks)


def mean_rank(ranks: np.ndarray) -> float:
    """Mean of the 1-based ranks."""
    return float(np.mean(np.asarray(ranks, dtype=np.float64)))


def median_rank(ranks: np.ndarray) -> float:
    """Median of the 1-based ranks (the mean of the two middle ones for an even count)."""
    return float(np.median(np.asarray(ranks, dtype=np.float64)))


def rsum(
    t2i: Mapping[str, float], i2t: Mapping[str, float], ks: Iterable[int] = (1, 5, 10)
) -> float:
    """rSum: the sum of ``R@K`` over both directions and ``ks`` (percent points)."""
    return float(sum(t2i[f"R@{k}"] + i2t[f"R@{k}"] for k in ks))


def ranks_from_results(
    ids: np.ndarray, gt: Sequence[int] | Sequence[Sequence[int]] | np.ndarray
) -> np.ndarray:
    """Ranks of the ground truth in index results ``ids[n, k]`` (sorted by ``(-score, id)``).

    ``gt[r]`` is one id or a collection of ids (the first one found counts). The rank is
    the 1-based position of the first ground-truth id in row ``r``; a ground truth not in
    the ``k`` results gets ``k + 1``, meaning "beyond ``k``" (so ``R@K`` for ``K <= k`` is
    exact, while mean and median of these ranks are lower bounds). ``-1`` ids are missing.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"ids must be 2-D [n, k], got shape {ids.shape}")
    n, k = ids.shape
    if len(gt) != n:
        raise ValueError(f"{len(gt)} ground truths for {n} result rows")
    if isinstance(gt, np.ndarray) and gt.ndim == 1 and gt.dtype.kind in "iu":
        hit = ids == gt[:, None]
    else:
        hit = np.zeros((n, k), dtype=bool)
        for r, g in enumerate(gt):
            hit[r] = np.isin(ids[r], np.asarray(g, dtype=np.int64).reshape(-1))
    hit &= ids >= 0
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, k + 1)
    return first.astype(np.int64)


def ann_recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    """ANN recall@k in percent: the share of the exact top-``k`` ids found in the approximate top-``k``.

    Per query ``|approx[:k] & exact[:k]| / |exact[:k]|`` (``-1`` ids ignored; queries whose
    exact list is empty are skipped), averaged over queries. Ids are compared, not scores:
    an approximate index returning another candidate with the same score as an exact one
    counts as a miss.
    """
    a = np.asarray(approx_ids, dtype=np.int64)[:, :k]
    e = np.asarray(exact_ids, dtype=np.int64)[:, :k]
    if a.shape[0] != e.shape[0]:
        raise ValueError(f"{a.shape[0]} approximate rows for {e.shape[0]} exact rows")
    per = []
    for ar, er in zip(a, e, strict=True):
        er = er[er >= 0]
        if len(er) == 0:
            continue
        per.append(len(np.intersect1d(ar[ar >= 0], er)) / len(er))
    if not per:
        raise ValueError("no query has exact results to compare with")
    return float(100.0 * np.mean(per))


def fine_grained_accuracy(
    positive: Sequence[float] | np.ndarray, negatives: Sequence[Sequence[float]] | np.ndarray
) -> float:
    """Share (percent) of items whose true caption scores strictly higher than every swapped one.

    ``positive[i]`` is the score of item ``i``'s true caption, ``negatives[i]`` the scores of
    its swapped captions. A tie with a negative counts as a failure; ``NaN`` scores count as
    ``-inf``. Items without negatives are skipped.
    """
    pos = np.asarray(positive, dtype=np.float64).reshape(-1)
    if len(negatives) != len(pos):
        raise ValueError(f"{len(negatives)} negative lists for {len(pos)} positives")
    wins = []
    for p, negs in zip(pos, negatives, strict=True):
        n = np.asarray(negs, dtype=np.float64).reshape(-1)
        if len(n) == 0:
            continue
        p = -np.inf if np.isnan(p) else p
        n = np.where(np.isnan(n), -np.inf, n)
        wins.append(bool(p > n.max()))
    if not wins:
        raise ValueError("no item has negatives; fine-grained accuracy is undefined")
    return float(100.0 * np.mean(wins))


# ----------------------------------------------------------------------------- ceiling
def ceiling_t2i(
    fits: np.ndarray, text_to_image: Sequence[int] | np.ndarray, ks: Iterable[int] = (1, 5, 10)
) -> dict[str, float]:
    """Expected text-to-image ``R@K`` (percent) of a perfect reader.

    ``fits[t, i]`` says whether caption ``t`` is a true description of image ``i``. A
    perfect reader ranks all ``m`` images that fit caption ``t`` first, tied in random
    order; the chance that the own image is within the first ``K`` is ``min(1, K / m)``.
    The own image is always counted as fitting.
    """
    f = np.asarray(fits, dtype=bool).copy()
    gt = np.asarray(text_to_image, dtype=np.int64).reshape(-1)
    f[np.arange(len(gt)), gt] = True
    m = f.sum(axis=1).astype(np.float64)
    return {f"R@{k}": float(100.0 * np.mean(np.minimum(1.0, k / m))) for k in ks}


def _p_none_in_first(f: int, g: int, k: int) -> float:
    """``C(f - g, k) / C(f, k)``: chance that none of ``g`` marked items of ``f`` lands in the first ``k``."""
    if k >= f:
        return 0.0 if g > 0 else 1.0
    if f - g < k:
        return 0.0
    p = 1.0
    for j in range(k):
        p *= (f - g - j) / (f - j)
    return p


def ceiling_i2t(
    fits: np.ndarray,
    image_to_texts: Sequence[Sequence[int]] | np.ndarray,
    ks: Iterable[int] = (1, 5, 10),
) -> dict[str, float]:
    """Expected image-to-text ``R@K`` (percent) of a perfect reader.

    ``fits[t, i]`` as in :func:`ceiling_t2i`. For image ``i`` with ``F`` fitting captions of
    which ``g`` are its own (own captions always count as fitting), a perfect reader ranks
    the ``F`` first in random order, so ``R@K = 1 - C(F - g, K) / C(F, K)``.
    ``image_to_texts`` as in :func:`i2t_ranks`.
    """
    f = np.asarray(fits, dtype=bool)
    n_texts, n_images = f.shape
    lists = _image_to_texts(image_to_texts, n_images, n_texts)
    out: dict[str, float] = {}
    ks = list(ks)
    per = np.zeros((len(ks), n_images))
    for i, own in enumerate(lists):
        own = np.unique(own)
        col = f[:, i].copy()
        col[own] = True
        big_f, g = int(col.sum()), len(own)
        for j, k in enumerate(ks):
            per[j, i] = 1.0 - _p_none_in_first(big_f, g, k)
    for j, k in enumerate(ks):
        out[f"R@{k}"] = float(100.0 * per[j].mean())
    return out
