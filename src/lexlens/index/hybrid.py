"""The ``hybrid`` index kind: a sparse (lexical) index and a dense index over the same items.

Spec: ``hybrid(SPARSE,DENSE[;fusion=rerank|rrf|minmax,candidates=C,alpha=A,rrf_k=K])`` with one
child that needs lexical vectors (``sparse``, ``sparse(budget=0.05)``, ...) and one that needs
dense vectors (``flat``, ``hnsw32``, ``ivf1024,pq32``, ``sq8``, ...), in either order.

* ``fusion=rerank`` (default): the sparse child returns ``C`` candidates (default 50, at
  least ``k``), which are re-scored by the exact inner product of the query's and the items'
  dense embeddings (the vectors the dense child stores; decoded codes for ``pq``/``sq``). Only
  candidates are returned, so every hit shares a word with the query -- except when the
  sparse child finds fewer than ``k`` items: then the dense child's top ``k`` join the
  candidates (a query of words the lexicon does not know still gets results). Scores are the
  dense similarities.
* ``fusion=rrf``: both children return ``C`` results; reciprocal rank fusion with
  ``rrf_k`` (default 60) -- :func:`lexlens.index.fusion.rrf`. Scores are the fused RRF values.
* ``fusion=minmax``: both children return ``C`` results; min-max normalised scores combined
  as ``alpha * dense + (1 - alpha) * sparse`` (``alpha`` default 0.5) --
  :func:`lexlens.index.fusion.minmax`.

``SearchParams.fusion``, ``candidates`` and ``alpha`` override the spec per call; the other
parameters (``sparse_budget``, ``ef_search``, ``nprobe``) pass through to the children.
Results follow :mod:`lexlens.results`. Both children are saved in sub-folders ``sparse/`` and
``dense/`` and opened memory-mapped like stand-alone indexes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lexlens.errors import UsageError
from lexlens.index import fusion as fu
from lexlens.index.base import IndexKind, KindContext, SearchParams, Vectors, register_kind
from lexlens.index.spec import IndexSpec, create_kind, load_kind, parse_spec, spec_needs
from lexlens.models.base import SparseBatch
from lexlens.results import empty_results, sort_results

__all__ = ["HybridKind", "DenseLookup", "FUSIONS", "DEFAULT_CANDIDATES", "dense_vectors_of"]

FUSIONS = ("rerank", "rrf", "minmax")
DEFAULT_CANDIDATES = 50
_OPTIONS = ("fusion", "candidates", "alpha", "rrf_k")


def _split_children(spec: IndexSpec) -> tuple[IndexSpec, IndexSpec]:
    if len(spec.children) != 2:
        raise UsageError(f"hybrid takes two indexes, a sparse and a dense one: {spec}")
    sparse = [c for c in spec.children if spec_needs(c) == (False, True)]
    dense = [c for c in spec.children if spec_needs(c) == (True, False)]
    if len(sparse) != 1 or len(dense) != 1:
        raise UsageError(
            f"hybrid needs one sparse and one dense index, e.g. hybrid(sparse,flat): {spec}"
        )
    return sparse[0], dense[0]


def _options(spec: IndexSpec) -> dict[str, Any]:
    bad = [k for k, _ in spec.options if k not in _OPTIONS]
    if bad:
        raise UsageError(f"unknown option {bad[0]!r} for hybrid; allowed: {', '.join(_OPTIONS)}")
    fusion = str(spec.option("fusion", "rerank")).lower()
    if fusion not in FUSIONS:
        raise UsageError(f"hybrid fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    cand = spec.option("candidates", DEFAULT_CANDIDATES)
    if isinstance(cand, bool) or not isinstance(cand, int) or cand <= 0:
        raise UsageError(f"hybrid candidates must be a positive integer, got {cand!r}")
    alpha = _alpha(spec.option("alpha", 0.5))
    rrf_k = spec.option("rrf_k", 60)
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int | float) or rrf_k < 0:
        raise UsageError(f"hybrid rrf_k must be a non-negative number, got {rrf_k!r}")
    return {"fusion": fusion, "candidates": int(cand), "alpha": alpha, "rrf_k": float(rrf_k)}


def _alpha(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
        raise UsageError(f"hybrid alpha must be between 0 and 1, got {v!r}")
    return float(v)


class DenseLookup:
    """Stored dense vectors of a dense kind by id (its id tables sorted once, at creation).

    Exact vectors for ``flat`` and ``hnsw``; decoded codes for ``pq``/``sq``/``ivf`` encodings.
    Make a new one after the child changes. Raises :class:`UsageError` for a kind that keeps
    no vectors.
    """

    def __init__(self, child: IndexKind) -> None:
        from lexlens.index.dense import FaissKind, FlatKind

        if not isinstance(child, FlatKind | FaissKind):
            raise UsageError(
                f"hybrid rerank needs a dense index that keeps vectors, not {child.kind!r}"
            )
        self.child = child
        self.dim = child.dim
        if isinstance(child, FlatKind):
            self._table = _sorted_ids(np.asarray(child._ids))
            self._x = child._x
            self._stored: np.ndarray | None = None
        else:
            self._table = _sorted_ids(np.asarray(child._pending_ids))
            self._x = child._pending_x
            self._stored = np.sort(_stored_ids(child)) if child.index.ntotal else None

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors[n, d], found[n])`` of ``ids``."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        out = np.zeros((len(ids), self.dim), np.float32)
        srt, order = self._table
        found = np.zeros(len(ids), bool)
        if len(srt):
            at = np.minimum(np.searchsorted(srt, ids), len(srt) - 1)
            found = srt[at] == ids
            if found.any():
                rows = order[at[found]]
                # read the rows in storage order (memory-mapped arrays), then put them back
                back = np.argsort(np.argsort(rows))
                out[found] = np.asarray(self._x[np.sort(rows)], np.float32)[back]
        if self._stored is not None and len(self._stored):
            at = np.minimum(np.searchsorted(self._stored, ids), len(self._stored) - 1)
            want = ~found & (self._stored[at] == ids)
            if want.any():
                index = self.child.index  # type: ignore[attr-defined]
                out[want] = index.reconstruct_batch(np.ascontiguousarray(ids[want]))
                found |= want
        return out, found


def dense_vectors_of(child: IndexKind, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored dense vectors of ``ids`` in a dense kind: ``(vectors[n, d], found[n])``."""
    return DenseLookup(child).vectors(ids)


def _sorted_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(ids, kind="stable")
    return ids[order], order


def _stored_ids(child: Any) -> np.ndarray:
    import faiss

    index = child.index
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    ids = []
    for lst in range(ivf.nlist):
        n = ivf.invlists.list_size(lst)
        if n:
            ids.append(faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n).copy())
    return np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)


def _prepare_reconstruct(child: IndexKind) -> None:
    """IVF kinds number items by their own ids: give them a direct map (id -> code) once."""
    from lexlens.index.dense import FaissKind

    if isinstance(child, FaissKind) and not hasattr(child.index, "id_map") and child.trained:
        import faiss

        ivf = faiss.extract_index_ivf(child.index)
        if ivf.direct_map.type != faiss.DirectMap.Hashtable:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)


@register_kind
class HybridKind(IndexKind):
    """A sparse and a dense child searched together (see module docstring)."""

    kind: ClassVar[str] = "hybrid"
    takes_children: ClassVar[bool] = True

    def __init__(self, spec: IndexSpec, sparse: IndexKind, dense: IndexKind) -> None:
        self.spec = spec
        self.sparse = sparse
        self.dense = dense
        self.options = _options(spec)
        self._lookup: DenseLookup | None = None  # made after every change (never during search)

    @classmethod
    def from_spec(cls, spec: IndexSpec, ctx: KindContext) -> HybridKind:
        if spec.number is not None or spec.encoding is not None:
            raise UsageError(f"hybrid takes no number: {spec}")
        _options(spec)
        s, d = _split_children(spec)
        return cls(spec, create_kind(s, ctx), create_kind(d, ctx))

    # -- changes --------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: Vectors) -> None:
        if vectors.sparse is None or vectors.dense is None:
            raise UsageError("a hybrid index needs both dense and lexical (sparse) vectors")
        self.sparse.add(ids, Vectors(sparse=vectors.sparse))
        self.dense.add(ids, Vectors(dense=vectors.dense))
        self._changed()

    def remove(self, ids: np.ndarray) -> int:
        removed = self.sparse.remove(ids)
        self.dense.remove(ids)
        self._changed()
        return removed

    def _changed(self) -> None:
        _prepare_reconstruct(self.dense)
        self._lookup = DenseLookup(self.dense) if self.options["fusion"] == "rerank" else None

    def _vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lookup = self._lookup
        if lookup is None:  # a fusion other than the spec's rerank, asked for per call
            lookup = DenseLookup(self.dense)
        return lookup.vectors(ids)

    # -- search ----------------------------------------------------------------------------
    def search(
        self, queries: Vectors, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if queries.dense is None:
            raise UsageError("a hybrid index needs dense query vectors (and lexical ones)")
        n = len(queries)
        if queries.sparse is None:  # dense-only queries (raw embeddings): no words to match
            queries = Vectors(dense=queries.dense, sparse=_no_words(n))
        if k <= 0:
            return empty_results(n, 0)
        p = params or SearchParams()
        fusion = (p.fusion or self.options["fusion"]).lower()
        if fusion not in FUSIONS:
            raise UsageError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        cand = p.candidates if p.candidates is not None else self.options["candidates"]
        if cand <= 0:
            raise UsageError(f"candidates must be positive, got {cand}")
        cand = max(int(cand), k)
        child = replace(p, fusion=None, candidates=None, alpha=None)
        sq, dq = Vectors(sparse=queries.sparse), Vectors(dense=queries.dense)
        s_sp, i_sp = self.sparse.search(sq, cand, child)
        if fusion == "rerank":
            return self._rerank(queries, i_sp, k, child)
        s_de, i_de = self.dense.search(dq, cand, child)
        if fusion == "rrf":
            return fu.rrf([(s_sp, i_sp), (s_de, i_de)], k, self.options["rrf_k"])
        alpha = self.options["alpha"] if p.alpha is None else _alpha(p.alpha)
        return fu.minmax([(s_sp, i_sp), (s_de, i_de)], k, [1.0 - alpha, alpha])

    def _rerank(
        self, queries: Vectors, cand: np.ndarray, k: int, params: SearchParams
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries.dense, np.float32)
        short = (cand >= 0).sum(axis=1) < k
        if short.any():  # too few lexical matches: the dense child's best join the candidates
            _, extra = self.dense.search(Vectors(dense=q[short]), k, params)
            fill = np.full((len(cand), k), -1, np.int64)
            fill[short] = extra
            cand = np.concatenate([cand, fill], axis=1)
        flat = cand.reshape(-1)
        valid = flat >= 0
        uniq = np.unique(flat[valid])
        vecs, found = self._vectors(uniq)
        pos = np.searchsorted(uniq, np.where(valid, flat, uniq[0] if len(uniq) else 0))
        rows = np.repeat(np.arange(len(cand)), cand.shape[1])
        scores = np.full(len(flat), -np.inf, np.float32)
        ok = valid & (found[pos] if len(uniq) else False)
        scores[ok] = np.einsum("ij,ij->i", vecs[pos[ok]], q[rows[ok]]).astype(np.float32)
        ids = np.where(ok, flat, -1).reshape(cand.shape)
        # an id offered twice (lexical and dense fill) keeps one entry
        ids = _dedupe_rows(ids)
        return sort_results(np.where(ids >= 0, scores.reshape(cand.shape), -np.inf), ids, k)

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> list[str]:
        directory = Path(directory)
        names = ["hybrid.json"]
        for name, child in (("sparse", self.sparse), ("dense", self.dense)):
            (directory / name).mkdir(exist_ok=True)
            names += [f"{name}/{f}" for f in child.save(directory / name)]
        (directory / "hybrid.json").write_text(json.dumps({"spec": str(self.spec)}))
        return names

    @classmethod
    def load(cls, directory: Path, options: dict[str, Any], mmap: bool = True) -> HybridKind:
        directory = Path(directory)
        spec = options.get("spec")
        if not isinstance(spec, IndexSpec):
            spec = parse_spec(json.loads((directory / "hybrid.json").read_text())["spec"])
        ctx = options.get("context")
        ctx = ctx if isinstance(ctx, KindContext) else KindContext()
        s, d = _split_children(spec)
        self = cls(
            spec,
            load_kind(s, directory / "sparse", ctx, mmap),
            load_kind(d, directory / "dense", ctx, mmap),
        )
        self._changed()
        return self

    @property
    def ntotal(self) -> int:
        return self.sparse.ntotal

    def memory_bytes(self) -> int:
        return int(self.sparse.memory_bytes() + self.dense.memory_bytes())

    def explain(self, query: Any, ids: Any, vocab: Any = None) -> Any:
        """The lexical explanation of hits (delegated to the sparse child)."""
        return self.sparse.explain(query, ids, vocab)  # type: ignore[attr-defined]


def _no_words(n: int) -> SparseBatch:
    """``n`` queries without words."""
    return SparseBatch(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 0)


def _dedupe_rows(ids: np.ndarray) -> np.ndarray:
    """Replace repeated ids within a row by -1 (first occurrence kept)."""
    out = ids.copy()
    for r in range(len(out)):
        row = out[r]
        valid = np.flatnonzero(row >= 0)
        _, first = np.unique(row[valid], return_index=True)
        dup = np.ones(len(valid), bool)
        dup[first] = False
        row[valid[dup]] = -1
    return out
