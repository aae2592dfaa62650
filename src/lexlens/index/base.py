"""The contract between the index engine and its kinds (dense faiss, sparse, hybrid, ...).

An *index kind* stores vectors under external ``int64`` ids and answers top-k queries
under the one result contract of :mod:`lexlens.results`: ``(scores[n, k], ids[n, k])``,
``-1`` for missing, ties broken by ``(-score, id)``. Query-time parameters arrive per call
in :class:`SearchParams`; a kind never changes shared state to honour them, so searching
from several threads at once is safe.

Kinds are registered by exact name in :data:`KINDS` (never chosen by a substring).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lexlens.models.base import SparseBatch

__all__ = ["Vectors", "SearchParams", "IndexKind", "KINDS", "register_kind"]


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


class IndexKind(abc.ABC):
    """One searchable structure over ``id -> vectors``; see module docstring."""

    #: the exact kind name this class is registered under, e.g. "flat", "hnsw", "sparse"
    kind: ClassVar[str] = ""
    #: whether the kind needs dense / sparse vectors to be given on add
    needs_dense: ClassVar[bool] = False
    needs_sparse: ClassVar[bool] = False

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
