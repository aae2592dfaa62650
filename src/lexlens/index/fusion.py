"""Rank fusion of several result lists: pure functions over ``(scores[n, m], ids[n, m])``.

Every input list follows the result contract of :mod:`lexlens.results` (rows in
``(-score, id)`` order, ``id = -1`` for missing entries, which are ignored). Every output is
``(scores[n, k] float32, ids[n, k] int64)`` under the same contract: fused scores descending,
ties by ascending id, ``-1`` / ``-inf`` padding.

* :func:`rrf` -- reciprocal rank fusion (Cormack et al., SIGIR 2009): an id's fused score is
  ``sum over lists of 1 / (k0 + rank)`` with ``rank`` its 1-based position in that list
  (lists where it is missing add nothing).
* :func:`minmax` -- each list's valid scores of one row are min-max normalised to ``[0, 1]``
  (all equal -> 1), then combined as a weighted sum ``sum_l w_l * norm_l`` (missing -> 0).

Fused sums are computed in ``float64`` and rounded to ``float32`` once, then ordered.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lexlens.results import empty_results, sort_results

__all__ = ["rrf", "minmax", "minmax_normalize", "combine"]


def _check(lists: Sequence[tuple[np.ndarray, np.ndarray]]) -> int:
    if not lists:
        raise ValueError("nothing to fuse")
    n = None
    for s, i in lists:
        s, i = np.asarray(s), np.asarray(i)
        if s.ndim != 2 or s.shape != i.shape:
            raise ValueError(
                f"scores and ids must be matching 2-D arrays, got {s.shape}, {i.shape}"
            )
        if n is None:
            n = s.shape[0]
        elif s.shape[0] != n:
            raise ValueError("all lists must have the same number of query rows")
    return int(n or 0)


def combine(
    contributions: Sequence[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum per-row contributions ``(values[n, m], ids[n, m])`` by id and keep the top ``k``.

    Entries with ``id < 0`` are ignored. The building block of :func:`rrf` and :func:`minmax`.
    """
    n = _check(contributions)
    if k <= 0:
        return empty_results(n, max(k, 0))
    rows = np.concatenate(
        [np.repeat(np.arange(n), np.asarray(i).shape[1]) for _, i in contributions]
    )
    ids = np.concatenate([np.asarray(i, np.int64).reshape(-1) for _, i in contributions])
    vals = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v, _ in contributions])
    ok = ids >= 0
    rows, ids, vals = rows[ok], ids[ok], vals[ok]
    if len(ids) == 0:
        return empty_results(n, k)
    order = np.lexsort((ids, rows))
    rows, ids, vals = rows[order], ids[order], vals[order]
    first = np.ones(len(ids), bool)
    first[1:] = (rows[1:] != rows[:-1]) | (ids[1:] != ids[:-1])
    group = np.cumsum(first) - 1
    sums = np.bincount(group, weights=vals)
    g_rows, g_ids = rows[first], ids[first]
    counts = np.bincount(g_rows, minlength=n)
    width = int(counts.max())
    out_s = np.full((n, width), -np.inf, np.float32)
    out_i = np.full((n, width), -1, np.int64)
    pos = np.arange(len(g_ids)) - np.repeat(np.cumsum(counts) - counts, counts)
    out_s[g_rows, pos] = sums.astype(np.float32)
    out_i[g_rows, pos] = g_ids
    return sort_results(out_s, out_i, k)


def rrf(
    lists: Sequence[tuple[np.ndarray, np.ndarray]], k: int, k0: float = 60.0
) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion of result lists (see module docstring); ``k0`` damps top ranks."""
    _check(lists)
    if k0 < 0:
        raise ValueError(f"k0 must be non-negative, got {k0}")
    parts = []
    for _, ids in lists:
        ids = np.asarray(ids, np.int64)
        # rank among the valid entries of the row (lists are in result order)
        rank = np.cumsum(ids >= 0, axis=1)
        parts.append((np.where(ids >= 0, 1.0 / (k0 + rank), 0.0), ids))
    return combine(parts, k)


def minmax_normalize(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per row, valid scores mapped to ``[0, 1]`` by ``(s - min) / (max - min)`` (``float64``).

    A row whose valid scores are all equal maps them to 1; invalid entries become 0.
    """
    s = np.asarray(scores, np.float64)
    valid = (np.asarray(ids) >= 0) & np.isfinite(s)
    lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(valid, norm, 0.0)


def minmax(
    lists: Sequence[tuple[np.ndarray, np.ndarray]], k: int, weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of min-max normalised scores (see module docstring); equal weights by default."""
    _check(lists)
    w = [1.0 / len(lists)] * len(lists) if weights is None else [float(x) for x in weights]
    if len(w) != len(lists):
        raise ValueError(f"{len(lists)} lists but {len(w)} weights")
    parts = [
        (wt * minmax_normalize(s, i), np.asarray(i, np.int64))
        for wt, (s, i) in zip(w, lists, strict=True)
    ]
    return combine(parts, k)
