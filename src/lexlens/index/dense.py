"""Dense index kinds: exact ``flat`` and the faiss kinds ``hnsw``, ``ivf``, ``sq``, ``pq``.

All kinds score by inner product (the vectors are L2-normalised, so this is cosine
similarity) under external ``int64`` ids, and return results through
:func:`lexlens.results.sort_results`, so ties come back by ``(-score, id)`` and missing
entries as ``-1``.

* ``flat``: exact brute force over a (memory-mapped) ``float32`` array: faiss's scan (what
  ``IndexFlatIP`` does), or BLAS matrix products block by block without faiss. Exact with
  ties: an id never loses to a larger id with the same score.
* ``hnswM`` (``M`` links per node, default 32; options ``ef`` = default efSearch, ``efc`` =
  efConstruction): faiss ``IndexHNSWFlat``. HNSW cannot delete, so removed ids go into a
  tombstone set filtered inside the search (a faiss ``IDSelector`` in the per-call
  ``SearchParameters``); the graph is rebuilt from the live vectors once a quarter is dead.
* ``ivfN,ENC`` (``N`` lists; ``ENC`` = ``flat`` | ``pqM`` | ``sqB``; option ``nprobe``):
  faiss ``IndexIVF*``; removal is native.
* ``sqB`` (B = 4, 6, 8 bits per dimension or 16 for float16) and ``pqM`` (M sub-quantisers,
  option ``nbits``, default 8): faiss flat-code indexes under an ``IndexIDMap2``.

Kinds that need training (ivf, sq, pq) keep the vectors they get before they have enough
to train on in an exact side buffer (searched by brute force and merged); the first add
that brings the buffer to the training size trains on all of it. Query-time parameters
(``nprobe``, ``ef_search``) arrive per call as faiss ``SearchParameters`` objects, never by
changing the shared index, so concurrent searches from several threads are safe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lexlens.errors import UsageError
from lexlens.index.base import IndexKind, KindContext, SearchParams, Vectors, register_kind
from lexlens.index.spec import IndexSpec
from lexlens.results import empty_results, merge_results, sort_results, topk

__all__ = ["FlatKind", "FaissKind", "HNSWKind", "IVFKind", "SQKind", "PQKind", "exact_search"]

#: rows of the item matrix scored per block in brute-force search
_BLOCK = 65_536


def _as_queries(queries: Vectors, dim: int) -> np.ndarray:
    if queries.dense is None:
        raise UsageError("this index needs dense query vectors (the model's embedding)")
    q = np.ascontiguousarray(np.asarray(queries.dense, dtype=np.float32))
    if q.ndim != 2 or q.shape[1] != dim:
        raise UsageError(f"query vectors must be [n, {dim}], got shape {tuple(q.shape)}")
    return q


def _as_items(ids: np.ndarray, vectors: Vectors, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if vectors.dense is None:
        raise UsageError("this index kind needs dense vectors")
    x = np.ascontiguousarray(np.asarray(vectors.dense, dtype=np.float32))
    if x.ndim != 2 or x.shape != (len(ids), dim):
        raise UsageError(
            f"expected {len(ids)} vectors of dimension {dim}, got shape {tuple(x.shape)}"
        )
    return ids, x


def exact_search(
    q: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product search of ``q[n, d]`` over ``x[m, d]`` (ids ``ids[m]``).

    Block-wise so that a memory-mapped ``x`` is streamed, never copied whole.
    """
    n = q.shape[0]
    if len(ids) == 0 or k <= 0:
        return empty_results(n, max(k, 0))
    fast = _faiss_exact(q, x, ids, k)
    if fast is not None:
        return fast
    return _blas_exact(q, x, ids, k)


#: extra candidates the faiss scan returns, to see whether a tie crosses the k-th place
_TIE_MARGIN = 8


def _faiss_exact(
    q: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact search with faiss's brute-force scan (``faiss.knn``, what ``IndexFlatIP`` runs;
    about twice as fast as BLAS plus a top-k per block for single queries), or ``None`` when
    faiss is missing or ``x`` is not a contiguous ``float32`` array.

    faiss breaks ties in its own way, so it returns ``k + 8`` candidates; a query whose
    ``k``-th score ties with the last candidate is redone by :func:`_blas_exact`.
    """
    try:
        faiss = _faiss()
    except ImportError:
        return None
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous):
        return None
    m = len(ids)
    want = min(m, k + _TIE_MARGIN)
    scores, pos = faiss.knn(
        np.ascontiguousarray(q, np.float32), x.view(np.ndarray), want, faiss.METRIC_INNER_PRODUCT
    )
    cand = np.where(pos >= 0, np.asarray(ids, np.int64)[np.maximum(pos, 0)], -1)
    s, i = sort_results(scores, cand, k)
    if want < m and k <= want:
        redo = np.flatnonzero((s[:, min(k, want) - 1] <= scores[:, want - 1]) & (i[:, -1] >= 0))
        if len(redo):
            rs, ri = _blas_exact(q[redo], x, ids, k)
            s[redo], i[redo] = rs, ri
    return s, i


def _blas_exact(
    q: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Block-wise BLAS products and a top-``k`` per block, merged."""
    parts = []
    for a in range(0, len(ids), _BLOCK):
        sim = q @ np.asarray(x[a : a + _BLOCK], dtype=np.float32).T
        parts.append(topk(sim, k, ids[a : a + _BLOCK]))
    return parts[0] if len(parts) == 1 else merge_results(parts, k)


# ----------------------------------------------------------------------------- flat
@register_kind
class FlatKind(IndexKind):
    """Exact inner-product search by brute force (see module docstring)."""

    kind: ClassVar[str] = "flat"
    needs_dense: ClassVar[bool] = True

    def __init__(self, dim: int, ids: np.ndarray | None = None, vectors: np.ndarray | None = None):
        if dim <= 0:
            raise UsageError("a flat index needs a positive dense dimension")
        self.dim = int(dim)
        self._ids = np.zeros(0, np.int64) if ids is None else ids
        self._x = np.zeros((0, self.dim), np.float32) if vectors is None else vectors

    @classmethod
    def from_spec(cls, spec: IndexSpec, ctx: KindContext) -> FlatKind:
        if spec.number is not None or spec.options:
            raise UsageError(f"flat takes no number or options: {spec}")
        return cls(ctx.dim)

    def add(self, ids: np.ndarray, vectors: Vectors) -> None:
        ids, x = _as_items(ids, vectors, self.dim)
        self._ids = np.concatenate([self._ids, ids])
        self._x = np.concatenate([np.asarray(self._x), x])

    def remove(self, ids: np.ndarray) -> int:
        keep = ~np.isin(self._ids, np.asarray(ids, dtype=np.int64))
        removed = int(len(keep) - keep.sum())
        if removed:
            self._ids = self._ids[keep]
            self._x = np.asarray(self._x)[keep]
        return removed

    def search(
        self, queries: Vectors, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(_as_queries(queries, self.dim), self._x, self._ids, k)

    def save(self, directory: Path) -> list[str]:
        directory = Path(directory)
        np.save(directory / "flat_ids.npy", self._ids)
        np.save(directory / "flat_vectors.npy", np.asarray(self._x, dtype=np.float32))
        return ["flat_ids.npy", "flat_vectors.npy"]

    @classmethod
    def load(cls, directory: Path, options: dict[str, Any], mmap: bool = True) -> FlatKind:
        directory = Path(directory)
        mode = "r" if mmap else None
        ids = np.load(directory / "flat_ids.npy", mmap_mode=mode)
        x = np.load(directory / "flat_vectors.npy", mmap_mode=mode)
        return cls(int(x.shape[1]), np.asarray(ids, dtype=np.int64), x)

    @property
    def ntotal(self) -> int:
        return len(self._ids)

    def memory_bytes(self) -> int:
        if isinstance(self._x, np.memmap):
            return int(self._ids.nbytes)
        return int(self._ids.nbytes + np.asarray(self._x).nbytes)


# ----------------------------------------------------------------------------- faiss kinds
def _faiss() -> Any:
    import faiss

    return faiss


class FaissKind(IndexKind):
    """Shared machinery of the faiss kinds: ids, training buffer, save/load, search params."""

    needs_dense: ClassVar[bool] = True
    #: whether faiss can remove ids from this structure (else tombstones)
    native_remove: ClassVar[bool] = True

    def __init__(self, spec: IndexSpec, dim: int) -> None:
        if dim <= 0:
            raise UsageError(f"index {spec} needs a positive dense dimension")
        self.spec = spec
        self.dim = int(dim)
        self.index: Any = self._make_index()
        self._pending_ids = np.zeros(0, np.int64)
        self._pending_x = np.zeros((0, self.dim), np.float32)
        self._dead = np.zeros(0, np.int64)  # tombstones (kinds without native remove)

    # -- per kind ---------------------------------------------------------------------
    def _factory(self) -> str:
        raise NotImplementedError

    def _configure(self, index: Any) -> None:
        """Tune a freshly made index (clustering minima, construction parameters)."""

    def _train_size(self) -> int:
        """How many vectors to collect before training (0: no training needed)."""
        return 0

    def _search_params(self, params: SearchParams, k: int) -> Any:
        return None

    # -- shared -------------------------------------------------------------------------
    def _make_index(self) -> Any:
        faiss = _faiss()
        inner = faiss.index_factory(self.dim, self._factory(), faiss.METRIC_INNER_PRODUCT)
        self._configure(inner)
        return inner if self._has_own_ids() else faiss.IndexIDMap2(inner)

    def _has_own_ids(self) -> bool:
        return False

    @property
    def trained(self) -> bool:
        """Whether the faiss structure is trained (until then items sit in the exact buffer)."""
        return bool(self.index.is_trained)

    def add(self, ids: np.ndarray, vectors: Vectors) -> None:
        ids, x = _as_items(ids, vectors, self.dim)
        if len(ids) == 0:
            return
        if not self.index.is_trained:
            self._pending_ids = np.concatenate([self._pending_ids, ids])
            self._pending_x = np.concatenate([np.asarray(self._pending_x), x])
            if len(self._pending_ids) < max(1, self._train_size()):
                return
            self.index.train(self._pending_x)
            ids, x = self._pending_ids, self._pending_x
            self._pending_ids = np.zeros(0, np.int64)
            self._pending_x = np.zeros((0, self.dim), np.float32)
        self.index.add_with_ids(np.ascontiguousarray(x), np.ascontiguousarray(ids))

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        removed = 0
        if len(self._pending_ids):
            keep = ~np.isin(self._pending_ids, ids)
            removed += int(len(keep) - keep.sum())
            self._pending_ids, self._pending_x = self._pending_ids[keep], self._pending_x[keep]
        if self.index.ntotal == 0 or len(ids) == 0:
            return removed
        if self.native_remove:
            return removed + int(self.index.remove_ids(ids))
        stored = self._stored_ids()
        new_dead = np.setdiff1d(np.intersect1d(ids, stored), self._dead)
        self._dead = np.union1d(self._dead, new_dead)
        if len(self._dead) * 4 > self.index.ntotal:
            self._compact()
        return removed + len(new_dead)

    def _stored_ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    def _compact(self) -> None:
        """Rebuild the structure from its live vectors (drops the tombstones)."""
        stored = self._stored_ids()
        x = self.index.index.reconstruct_n(0, self.index.ntotal)
        live = ~np.isin(stored, self._dead)
        self.index = self._make_index()
        self._dead = np.zeros(0, np.int64)
        if live.any():
            self.index.add_with_ids(np.ascontiguousarray(x[live]), stored[live])

    def search(
        self, queries: Vectors, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = _as_queries(queries, self.dim)
        n = q.shape[0]
        if k <= 0:
            return empty_results(n, 0)
        parts = []
        if self.index.ntotal:
            faiss = _faiss()
            fp = self._search_params(params or SearchParams(), k)
            keep_alive = None
            if len(self._dead):
                keep_alive = faiss.IDSelectorBatch(self._dead)
                not_dead = faiss.IDSelectorNot(keep_alive)
                if fp is None:
                    fp = faiss.SearchParameters()
                fp.sel = not_dead
            kk = min(k, self.index.ntotal)
            d, i = self.index.search(q, kk, params=fp)
            del keep_alive
            parts.append(sort_results(d, i, k))
        if len(self._pending_ids):
            parts.append(exact_search(q, self._pending_x, self._pending_ids, k))
        if not parts:
            return empty_results(n, k)
        return parts[0] if len(parts) == 1 else merge_results(parts, k)

    def save(self, directory: Path) -> list[str]:
        faiss = _faiss()
        directory = Path(directory)
        faiss.write_index(self.index, str(directory / "faiss.index"))
        np.save(directory / "pending_ids.npy", self._pending_ids)
        np.save(directory / "pending_vectors.npy", np.asarray(self._pending_x, dtype=np.float32))
        np.save(directory / "tombstones.npy", self._dead)
        (directory / "faiss_kind.json").write_text(
            json.dumps({"spec": str(self.spec), "dim": self.dim})
        )
        return [
            "faiss.index",
            "pending_ids.npy",
            "pending_vectors.npy",
            "tombstones.npy",
            "faiss_kind.json",
        ]

    @classmethod
    def load(cls, directory: Path, options: dict[str, Any], mmap: bool = True) -> FaissKind:
        faiss = _faiss()
        directory = Path(directory)
        meta = json.loads((directory / "faiss_kind.json").read_text())
        spec = options.get("spec")
        if spec is None:
            from lexlens.index.spec import parse_spec

            spec = parse_spec(meta["spec"])
        self = cls.from_spec(spec, KindContext(dim=int(meta["dim"])))
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
        self.index = faiss.read_index(str(directory / "faiss.index"), flags)
        self._pending_ids = np.load(directory / "pending_ids.npy")
        self._pending_x = np.load(directory / "pending_vectors.npy")
        self._dead = np.load(directory / "tombstones.npy")
        return self

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self._dead) + len(self._pending_ids)

    def memory_bytes(self) -> int:
        per = {"hnsw": self.dim * 4 + 2 * self._m() * 4 * 1.1}.get(
            self.spec.kind, self._code_bytes()
        )
        return int(self.index.ntotal * (per + 8) + self._pending_x.nbytes)

    def _m(self) -> int:
        return 0

    def _code_bytes(self) -> float:
        return float(self.dim * 4)


def _positive(spec: IndexSpec, default: int, what: str) -> int:
    n = spec.number if spec.number is not None else default
    if n <= 0:
        raise UsageError(f"{spec.kind} needs a positive {what}, got {n}")
    return n


def _check_options(spec: IndexSpec, allowed: tuple[str, ...]) -> None:
    bad = [k for k, _ in spec.options if k not in allowed]
    if bad:
        raise UsageError(
            f"unknown option {bad[0]!r} for {spec.kind}; allowed: {', '.join(allowed) or 'none'}"
        )


def _int_option(spec: IndexSpec, key: str, default: int) -> int:
    v = spec.option(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise UsageError(f"option {key} of {spec.kind} must be a positive integer, got {v!r}")
    return v


_SQ_TYPES = {4: "SQ4", 6: "SQ6", 8: "SQ8", 16: "SQfp16"}


def _sq_factory(spec: IndexSpec) -> str:
    bits = spec.number if spec.number is not None else 8
    if bits not in _SQ_TYPES:
        raise UsageError(f"sq takes 4, 6, 8 or 16 bits per dimension, got {bits}")
    return _SQ_TYPES[bits]


def _pq_shape(spec: IndexSpec, dim: int) -> tuple[int, int]:
    from lexlens.index.spec import _pq_subquantizers

    m = spec.number if spec.number is not None else _pq_subquantizers(dim)
    nbits = _int_option(spec, "nbits", 8)
    if m <= 0 or dim % m:
        raise UsageError(f"pq{m}: the number of sub-quantisers must divide the dimension {dim}")
    if nbits > 16:
        raise UsageError(f"pq nbits must be at most 16, got {nbits}")
    return m, nbits


def _limit_clustering(cp: Any) -> None:
    # train with as few as 8 points per centroid without faiss printing warnings
    cp.min_points_per_centroid = 4


@register_kind
class HNSWKind(FaissKind):
    """faiss HNSW graph over full vectors; tombstone deletes (see module docstring)."""

    kind: ClassVar[str] = "hnsw"
    native_remove: ClassVar[bool] = False

    @classmethod
    def from_spec(cls, spec: IndexSpec, ctx: KindContext) -> HNSWKind:
        _check_options(spec, ("ef", "efc"))
        _positive(spec, 32, "number of links (M)")
        _int_option(spec, "ef", 64)
        _int_option(spec, "efc", 80)
        return cls(spec, ctx.dim)

    def _m(self) -> int:
        return self.spec.number or 32

    def _factory(self) -> str:
        return f"HNSW{self._m()}"

    def _configure(self, index: Any) -> None:
        index.hnsw.efConstruction = int(self.spec.option("efc", 80))
        index.hnsw.efSearch = int(self.spec.option("ef", 64))

    def _search_params(self, params: SearchParams, k: int) -> Any:
        ef = params.ef_search if params.ef_search is not None else int(self.spec.option("ef", 64))
        if ef <= 0:
            raise UsageError(f"ef_search must be positive, got {ef}")
        return _faiss().SearchParametersHNSW(efSearch=max(int(ef), k))


@register_kind
class IVFKind(FaissKind):
    """faiss inverted lists with a flat, PQ or SQ encoding: ``ivfN,ENC``."""

    kind: ClassVar[str] = "ivf"
    encodings: ClassVar[tuple[str, ...]] = ("flat", "pq", "sq")

    @classmethod
    def from_spec(cls, spec: IndexSpec, ctx: KindContext) -> IVFKind:
        _check_options(spec, ("nprobe",))
        _positive(spec, 1024, "number of lists")
        _int_option(spec, "nprobe", 16)
        if spec.encoding is None:
            raise UsageError("ivf needs an encoding, e.g. ivf1024,flat or ivf1024,pq32")
        enc = spec.encoding
        _check_options(enc, ("nbits",) if enc.kind == "pq" else ())
        if enc.kind == "flat" and enc.number is not None:
            raise UsageError("the flat encoding takes no number")
        return cls(spec, ctx.dim)

    def _has_own_ids(self) -> bool:
        return True

    def _nlist(self) -> int:
        return self.spec.number or 1024

    def _factory(self) -> str:
        enc = self.spec.encoding
        assert enc is not None
        if enc.kind == "flat":
            code = "Flat"
        elif enc.kind == "sq":
            code = _sq_factory(enc)
        else:
            m, nbits = _pq_shape(enc, self.dim)
            code = f"PQ{m}x{nbits}"
        return f"IVF{self._nlist()},{code}"

    def _configure(self, index: Any) -> None:
        _limit_clustering(index.cp)
        if hasattr(index, "pq"):
            _limit_clustering(index.pq.cp)

    def _train_size(self) -> int:
        clusters = self._nlist()
        enc = self.spec.encoding
        if enc is not None and enc.kind == "pq":
            clusters = max(clusters, 2 ** _pq_shape(enc, self.dim)[1])
        return 8 * clusters

    def _code_bytes(self) -> float:
        enc = self.spec.encoding
        if enc is not None and enc.kind == "pq":
            m, nbits = _pq_shape(enc, self.dim)
            return m * nbits / 8
        if enc is not None and enc.kind == "sq":
            return self.dim * (enc.number or 8) / 8
        return float(self.dim * 4)

    def _search_params(self, params: SearchParams, k: int) -> Any:
        nprobe = params.nprobe if params.nprobe is not None else int(self.spec.option("nprobe", 16))
        if nprobe <= 0:
            raise UsageError(f"nprobe must be positive, got {nprobe}")
        return _faiss().SearchParametersIVF(nprobe=min(int(nprobe), self._nlist()))


@register_kind
class SQKind(FaissKind):
    """Scalar quantisation (4/6/8 bits or float16 per dimension), exhaustive scan."""

    kind: ClassVar[str] = "sq"

    @classmethod
    def from_spec(cls, spec: IndexSpec, ctx: KindContext) -> SQKind:
        _check_options(spec, ())
        _sq_factory(spec)
        return cls(spec, ctx.dim)

    def _factory(self) -> str:
        return _sq_factory(self.spec)

    def _train_size(self) -> int:
        return 1

    def _code_bytes(self) -> float:
        return self.dim * (self.spec.number or 8) / 8


@register_kind
class PQKind(FaissKind):
    """Product quantisation (M sub-quantisers of ``nbits``), exhaustive scan."""

    kind: ClassVar[str] = "pq"

    @classmethod
    def from_spec(cls, spec: IndexSpec, ctx: KindContext) -> PQKind:
        _check_options(spec, ("nbits",))
        _pq_shape(spec, ctx.dim)
        return cls(spec, ctx.dim)

    def _factory(self) -> str:
        m, nbits = _pq_shape(self.spec, self.dim)
        return f"PQ{m}x{nbits}"

    def _configure(self, index: Any) -> None:
        _limit_clustering(index.pq.cp)

    def _train_size(self) -> int:
        return 8 * 2 ** _pq_shape(self.spec, self.dim)[1]

    def _code_bytes(self) -> float:
        m, nbits = _pq_shape(self.spec, self.dim)
        return m * nbits / 8
