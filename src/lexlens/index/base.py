"""The contract between the index engine and its kinds (dense faiss, sparse, hybrid, ...).

An *index kind* stores vectors under external ``int64`` ids and answers top-k queries
under the one result contract of :mod:`lexlens.results`: ``(scores[n, k], ids[n, k])``,
``-1`` for missing, ties broken by ``(-score, id)``. Query-time parameters arrive per call
in :class:`SearchParams`; a kind never changes shared state to honour them, so searching
from several threads at once is safe.

Kinds are registered by exact name in :data:`KINDS` (never chosen by a substring).

How the engine creates and opens a kind (see :mod:`lexlens.index.spec`):

* a spec string such as ``hnsw32(ef=64)`` parses into an :class:`~lexlens.index.spec.IndexSpec`
  whose ``kind`` is a key of :data:`KINDS`;
* an empty structure is made by ``KINDS[spec.kind].from_spec(spec, ctx)`` where ``ctx`` is a
  :class:`KindContext` (dense dimension, lexical vocabulary size);
* a saved one is opened by ``KINDS[spec.kind].load(directory, {"spec": spec, "context": ctx})``;
* composite kinds (``takes_children = True``, e.g. ``hybrid(sparse,flat;fusion=rrf)``) get their
  children as ``spec.children`` and create / open them with
  :func:`lexlens.index.spec.create_kind` / :func:`lexlens.index.spec.load_kind`;
* a kind listing ``encodings`` (e.g. ``ivf`` with ``("flat", "pq", "sq")``) is followed in the
  spec by one encoding component: ``ivf4096,pq32`` -> ``spec.encoding``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lexlens.models.base import SparseBatch

if TYPE_CHECKING:
    from lexlens.index.spec import IndexSpec

__all__ = ["Vectors", "SearchParams", "KindContext", "IndexKind", "KINDS", "register_kind"]


@dataclass
class Vectors:
    """A batch of items or queries: dense ``float32 [n, d]`` and/or sparse lexical weights."""

    dense: np.ndarray | None = None
    sparse: SparseBatch | None = None

    def __len__(self) -> int:
        if self.dense is not None:
            return int(self.dense.shape[0])
        if self.sparse is not None:
            return len(self.sparse)
        return 0

    def rows(self, start: int, stop: int) -> Vectors:
        """Queries ``start:stop`` as a batch of their own."""
        return Vectors(
            dense=None if self.dense is None else self.dense[start:stop],
            sparse=None if self.sparse is None else self.sparse.rows(start, stop),
        )


@dataclass(frozen=True)
class SearchParams:
    """Per-call query parameters (defaults come from the kind when ``None``)."""

    nprobe: int | None = None  # IVF lists probed
    ef_search: int | None = None  # HNSW beam width
    candidates: int | None = None  # hybrid: candidates taken from the first stage
    fusion: str | None = None  # hybrid: "rerank" | "rrf" | "minmax"
    alpha: float | None = None  # hybrid: weight of the dense score in "minmax" fusion
    sparse_budget: float | None = None  # sparse engines: share of postings visited (1.0 = exact)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KindContext:
    """What a kind needs to know to create or open itself.

    ``dim``: dense embedding dimension (0 when the index stores no dense vectors);
    ``vocab_size``: size of the lexical vocabulary (0 when there are no sparse vectors).
    """

    dim: int = 0
    vocab_size: int = 0


class IndexKind(abc.ABC):
    """One searchable structure over ``id -> vectors``; see module docstring."""

    #: the exact kind name this class is registered under, e.g. "flat", "hnsw", "sparse"
    kind: ClassVar[str] = ""
    #: whether the kind needs dense / sparse vectors to be given on add
    needs_dense: ClassVar[bool] = False
    needs_sparse: ClassVar[bool] = False
    #: spec grammar: the parentheses hold child specs, then ``;`` and options (e.g. hybrid)
    takes_children: ClassVar[bool] = False
    #: spec grammar: names of the encoding component that must follow (e.g. ivf -> flat/pq/sq)
    encodings: ClassVar[tuple[str, ...]] = ()
    #: the kind filters by metadata itself: ``search(..., where=[Condition, ...])`` is called
    #: with the parsed ``--where`` conditions (lexlens.index.filters) instead of the engine
    #: filtering candidates by id
    accepts_where: ClassVar[bool] = False

    @classmethod
    def from_spec(cls, spec: IndexSpec, ctx: KindContext) -> IndexKind:
        """An empty structure for a parsed spec (kinds with a number or options override this)."""
        if spec.number is not None or spec.options or spec.children or spec.encoding:
            from lexlens.errors import UsageError

            raise UsageError(
                f"index kind {cls.kind!r} takes no number, options or children: {spec}"
            )
        return cls()

    @abc.abstractmethod
    def add(self, ids: np.ndarray, vectors: Vectors) -> None:
        """Insert items; ``ids`` are unique ``int64`` not already present."""

    @abc.abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Delete items by id (unknown ids are ignored); returns how many were removed."""

    @abc.abstractmethod
    def search(
        self, queries: Vectors, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query as ``(scores[n, k] float32, ids[n, k] int64)``."""

    @abc.abstractmethod
    def save(self, directory: Path) -> list[str]:
        """Write the kind's files into ``directory`` (a fresh staging dir); return their names."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path, options: dict[str, Any], mmap: bool = True) -> IndexKind:
        """Open what :meth:`save` wrote (memory-mapped where the layout allows)."""

    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Number of live items."""

    def memory_bytes(self) -> int:
        """Approximate resident size of the structure in bytes."""
        return 0


KINDS: dict[str, type[IndexKind]] = {}


def register_kind(cls: type[IndexKind]) -> type[IndexKind]:
    """Class decorator: register an index kind under its exact ``kind`` name."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind name")
    KINDS[cls.kind] = cls
    return cls
