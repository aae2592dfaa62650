"""The one search-result contract used everywhere in lexlens.

Every search returns ``(scores, ids)``: two arrays of shape ``[n_queries, k]``
(``float32`` and ``int64``). Rows are sorted by descending score; ties are broken
by ascending id, i.e. by the key ``(-score, id)``. Where fewer than ``k`` results
exist, the row is padded with ``id = -1`` and ``score = -inf``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["topk", "sort_results", "empty_results", "merge_results", "MISSING"]

MISSING = -1


def empty_results(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Results of ``n`` queries with no hits: scores ``-inf``, ids ``-1``."""
    return (
        np.full((n, k), -np.inf, dtype=np.float32),
        np.full((n, k), MISSING, dtype=np.int64),
    )


def sort_results(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort candidate lists by ``(-score, id)``, keep the best ``k``, pad with -1.

    ``scores`` and ``ids`` are ``[n, m]``; entries with ``id < 0`` or a NaN score are treated
    as missing.
    """
    scores = np.asarray(scores, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if scores.ndim != 2 or scores.shape != ids.shape:
        raise ValueError(
            f"scores and ids must be matching 2-D arrays, got {scores.shape} and {ids.shape}"
        )
    n, m = scores.shape
    out_s, out_i = empty_results(n, k)
    if m == 0 or k == 0:
        return out_s, out_i
    ids = np.where(np.isnan(scores), MISSING, ids)  # a NaN score is no hit
    s = np.where(ids < 0, -np.inf, scores)
    big = np.iinfo(np.int64).max
    i_key = np.where(ids < 0, big, ids)
    # lexsort: last key is primary -> primary -score, secondary id
    order = np.lexsort((i_key, -s.astype(np.float64)), axis=1)
    kk = min(k, m)
    order = order[:, :kk]
    out_s[:, :kk] = np.take_along_axis(s, order, axis=1)
    out_i[:, :kk] = np.take_along_axis(np.where(ids < 0, MISSING, ids), order, axis=1)
    missing = out_i == MISSING
    out_s[missing] = -np.inf
    return out_s, out_i


def topk(sim: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of a dense score matrix ``sim[n, m]`` under the ``(-score, id)`` order.

    ``ids`` optionally maps column positions to external ids (default: ``0..m-1``).
    Exact with ties: an id never loses to a larger id with the same score.
    """
    sim = np.asarray(sim, dtype=np.float32)
    if sim.ndim != 2:
        raise ValueError(f"sim must be 2-D, got shape {sim.shape}")
    n, m = sim.shape
    col_ids = np.arange(m, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if col_ids.shape != (m,):
        raise ValueError("ids must have one entry per column of sim")
    if k <= 0 or m == 0:
        return empty_results(n, max(k, 0))
    kk = min(k, m)
    if kk < m:
        # Candidates: everything scoring >= the kk-th best score (keeps all ties at the cut).
        clean = np.where(np.isnan(sim), -np.inf, sim)  # NaN would sort as the largest
        part = np.partition(clean, m - kk, axis=1)[:, m - kk]
        out_s, out_i = empty_results(n, k)
        for r in range(n):
            cand = np.flatnonzero(clean[r] >= part[r])
            cs, ci = sort_results(sim[r, cand][None, :], col_ids[cand][None, :], k)
            out_s[r], out_i[r] = cs[0], ci[0]
        return out_s, out_i
    return sort_results(sim, np.broadcast_to(col_ids, (n, m)), k)


def merge_results(
    parts: list[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge several ``(scores, ids)`` result sets of the same queries into one top-``k``."""
    if not parts:
        raise ValueError("nothing to merge")
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    return sort_results(scores, ids, k)
