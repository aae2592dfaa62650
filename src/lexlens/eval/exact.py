"""In-memory index kinds for evaluation, and the exact search every approximate kind is judged by.

* :func:`build_kind` makes an empty kind from a spec and fills it with vectors (ids ``0..n-1``).
* :func:`exact_search` is exact top-``k`` over the same vectors, under the result contract
  of :mod:`lexlens.results` (``(-score, id)`` order):

  - a spec that needs only dense vectors: brute-force inner product (the ``flat`` kind's
    algorithm);
  - a spec that needs only sparse vectors: the sparse dot product computed with
    ``scipy.sparse``; items sharing no word with the query (score 0) are not returned, as
    an inverted index cannot reach them;
  - a spec that needs both (a composite such as ``hybrid(sparse,hnsw32)``): the same
    composite with every child replaced by its exact counterpart (dense -> ``flat``,
    sparse -> plain ``sparse``), searched as an index.
"""

from __future__ import annotations

import numpy as np

from lexlens.errors import UsageError
from lexlens.index.base import IndexKind, KindContext, SearchParams, Vectors
from lexlens.index.spec import IndexSpec, create_kind, parse_spec, spec_needs
from lexlens.models.base import SparseBatch
from lexlens.results import topk

__all__ = [
    "to_csr",
    "sparse_scores",
    "build_kind",
    "exact_counterpart",
    "exact_search",
    "is_exact",
]

#: query rows scored per block in the exact sparse search
_SPARSE_BLOCK = 2048


def to_csr(batch: SparseBatch) -> object:
    """A :class:`SparseBatch` as a ``scipy.sparse.csr_matrix`` ``[n, vocab_size]`` (float32)."""
    import scipy.sparse as sp

    return sp.csr_matrix(
        (
            np.asarray(batch.values, dtype=np.float32),
            np.asarray(batch.indices, dtype=np.int64),
            np.asarray(batch.indptr, dtype=np.int64),
        ),
        shape=(len(batch), int(batch.vocab_size)),
    )


def sparse_scores(queries: SparseBatch, items: SparseBatch) -> np.ndarray:
    """Dense ``float32 [n_queries, n_items]`` matrix of sparse dot products (summed in
    ``float64``, rounded once)."""
    if queries.vocab_size != items.vocab_size:
        raise UsageError(
            f"sparse vocabularies differ: {queries.vocab_size} vs {items.vocab_size} words"
        )
    # accumulated in float64 and rounded once, as the sparse index's kernels do, so equal sums
    # are equal float32 scores whatever the order of the words (ties then go by id)
    q = to_csr(queries).astype(np.float64)  # type: ignore[attr-defined]
    x = to_csr(items).T.tocsc().astype(np.float64)  # type: ignore[attr-defined]
    return np.asarray((q @ x).toarray(), dtype=np.float32)  # type: ignore[operator]


def build_kind(
    spec: str | IndexSpec, items: Vectors, ctx: KindContext, ids: np.ndarray | None = None
) -> IndexKind:
    """An in-memory index of kind ``spec`` holding ``items`` under ``ids`` (default ``0..n-1``)."""
    spec = parse_spec(spec)
    kind = create_kind(spec, ctx)
    n = len(items)
    kind.add(np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64), items)
    return kind


def _exact_child(spec: IndexSpec) -> IndexSpec:
    dense, sparse = spec_needs(spec)
    if spec.children:
        children = tuple(_exact_child(c) for c in spec.children)
        return IndexSpec(spec.kind, spec.number, spec.options, children)
    if dense and not sparse:
        return IndexSpec("flat")
    if sparse and not dense:
        return IndexSpec("sparse")
    raise UsageError(f"index kind {spec.kind!r} has no exact counterpart to compare with")


def exact_counterpart(spec: str | IndexSpec) -> IndexSpec:
    """The exact spec ``spec`` is compared with (dense -> ``flat``, sparse -> ``sparse``, composites by child)."""
    return _exact_child(parse_spec(spec))


def is_exact(spec: str | IndexSpec) -> bool:
    """True for ``flat`` (the only spec whose search this module's exact search reproduces by definition)."""
    return parse_spec(spec) == IndexSpec("flat")


def exact_search(
    spec: str | IndexSpec, items: Vectors, queries: Vectors, k: int, ctx: KindContext
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` for the scoring ``spec`` uses (see module docstring); ids ``0..n-1``."""
    spec = parse_spec(spec)
    dense, sparse = spec_needs(spec)
    if dense and not sparse:
        from lexlens.index.dense import exact_search as dense_exact

        if items.dense is None or queries.dense is None:
            raise UsageError(f"{spec} needs dense item and query vectors")
        x = np.asarray(items.dense, dtype=np.float32)
        q = np.ascontiguousarray(np.asarray(queries.dense, dtype=np.float32))
        return dense_exact(q, x, np.arange(len(x), dtype=np.int64), k)
    if sparse and not dense:
        if items.sparse is None or queries.sparse is None:
            raise UsageError(f"{spec} needs sparse (lexical) item and query vectors")
        return _sparse_exact(queries.sparse, items.sparse, k)
    kind = build_kind(exact_counterpart(spec), items, ctx)
    return kind.search(queries, k, SearchParams())


def _sparse_exact(
    queries: SparseBatch, items: SparseBatch, k: int
) -> tuple[np.ndarray, np.ndarray]:
    import scipy.sparse as sp

    x = to_csr(items).T.tocsc()
    q_all = to_csr(queries)
    out_s = []
    out_i = []
    for a in range(0, len(queries), _SPARSE_BLOCK):
        q = q_all[a : a + _SPARSE_BLOCK]  # type: ignore[index]
        sim = np.asarray(sp.csr_matrix(q @ x).toarray(), dtype=np.float32)
        s, i = topk(sim, k)
        i = np.where(s > 0, i, -1)
        s = np.where(s > 0, s, -np.inf).astype(np.float32)
        out_s.append(s)
        out_i.append(i)
    if not out_s:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(out_s), np.concatenate(out_i)
