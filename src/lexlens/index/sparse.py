"""The ``sparse`` index kind: an inverted index over non-negative lexical weights (LexLIP style).

Items and queries are sparse vectors over a word vocabulary (:class:`~lexlens.models.base.SparseBatch`);
the score of an item is the dot product ``sum_w q_w * d_w`` over the words they share.

Spec: ``sparse`` or ``sparse(budget=0.005,block=4,topk=64,q8)``:

* ``budget`` (default ``1.0`` = exact): the share of the query's postings that may be scored
  before the search stops (per call: ``SearchParams.sparse_budget``). Below 1 the search is
  approximate; it still stops earlier whenever no unvisited block can enter the top ``k``.
* ``block`` (default 8, 1 to 8): documents per block of the block-max index. Smaller blocks
  give tighter bounds (fewer documents scored) for a larger index and bound pass.
* ``topk``: keep only the ``topk`` heaviest words of each item when it is added.
* ``q8``: store weights on a uniform 8-bit grid (``0 .. max``); lossy for weights that are not
  already on such a grid. Without it weights are stored without loss (see below).

**Result rule.** Results follow :mod:`lexlens.results` (``(-score, id)`` order, ``-1`` / ``-inf``
padding). Items sharing no word with the query (score 0) are never returned: a row has fewer
than ``k`` hits when fewer items overlap the query. Queries must have non-negative weights.

**Scores.** ``float64`` sum over the shared words in ascending vocabulary order of
``float64(q_w) * float64(d_w)`` (exact products of ``float32`` numbers), rounded once to
``float32``. In exact mode results are exactly those of a brute force computing the same sums.

**Layout (block-max pruning, after Mallia et al., "Faster Learned Sparse Retrieval with
Block-Max Pruning", SIGIR 2024).** The index is a list of immutable *segments*. A segment
orders its documents so that documents with the same heaviest words are neighbours (sort by
the three heaviest words) and cuts them into blocks of ``block`` documents. Per word it
stores the weight codes of its postings in document order (one byte each) and where they
are, in one of two forms (a row when it takes at most :data:`ROW_RATIO` times the bytes of
the list):

* a *dense row* (the words found in most blocks): per block an 8-bit upper bound of the
  word's largest weight and a bit mask of the documents that have it; every 32nd block the
  index of its first posting;
* a *gap list* (all other words): the gaps between its documents as LEB128 varints (one
  byte below 128), and every 64th posting a checkpoint (the document before it, where its
  gap starts). Block bounds of a list word are not stored: the bound pass derives them from
  the codes it decodes anyway (codes are sorted like the weights they stand for).

External ids take as many little-endian bytes as the largest id needs (3 bytes below
16.7 million). Weights are codes into a sorted per-segment table of the distinct weights
(``uint8`` when there are at most 256 -- the case for 8-bit model output, which is therefore
stored without loss -- ``uint16`` up to 65,536, beyond that a 16-bit grid). There is no
other copy of the vectors: merges, ``--explain`` and reopening decode these arrays.

A query computes, for every block, an integer upper bound ``sum_w ceil(q_w / u) * bound_w``
(one vectorised pass per dense row; one decoding pass per list word, whose decoded documents
are kept for scoring), scores the blocks above a threshold estimated from a sample of the
bounds first, then every other block whose bound still reaches the ``k``-th score. Exact
search takes each of the two sets in block order (a list word's postings in a block are then
found by galloping forward in its decoded documents) and skips blocks whose bound has fallen
below the ``k``-th score; with a budget, blocks go best bound first until the budget is spent.

**Changes.** ``add`` builds a new segment from the batch; segments of similar size are merged
(so there are O(log n) of them). ``remove`` marks documents dead in a bitmap (dead documents are
skipped while scoring); a segment with more than a quarter dead is rebuilt. ``save`` writes
plain ``.npy`` arrays and ``sparse.json`` (with the layout version :data:`FORMAT`; an older
layout is refused with a request to rebuild); ``load`` memory-maps them (only the small
dead-bitmaps are read).
Searching is read-only and releases the GIL, so several threads can search at once; a large
batch of queries is itself split over the cores (:data:`ROWS_PER_THREAD` rows a thread at least).

**Explanations.** :func:`explain` lists the shared words of a query and an item with their
contributions ``q_w * d_w`` (largest first); ``SparseKind.explain`` does the same from the
index's own stored weights.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lexlens.errors import IndexMismatchError, UsageError
from lexlens.index.base import IndexKind, KindContext, SearchParams, Vectors, register_kind
from lexlens.index.spec import IndexSpec
from lexlens.models.base import SparseBatch
from lexlens.results import empty_results

__all__ = [
    "SparseKind",
    "Segment",
    "explain",
    "sparse_scores_reference",
    "clean_queries",
    "DEFAULT_BLOCK",
]

#: documents per block when the spec gives none
DEFAULT_BLOCK = 8
#: largest block (a block's documents of one word are a uint8 bit mask)
MAX_BLOCK = 8
#: a segment with more than this share of dead documents is rebuilt
REBUILD_DEAD_SHARE = 0.25
#: a new segment is merged into the previous one while it is at least this share of its size
MERGE_RATIO = 0.5
_OPTIONS = ("budget", "block", "topk", "q8")
_ARRAYS = (
    "ids",
    "terms",
    "tptr",
    "post_code",
    "codebook",
    "dense_of",
    "dub",
    "dmask",
    "dchk",
    "sptr",
    "gaps",
    "cptr",
    "cdoc",
    "cpos",
)
#: on-disk layout version (written to ``sparse.json``)
FORMAT = 2
#: a word gets a dense row when the row takes at most this many times the bytes of its gap
#: list: rows are bounded by one vectorised pass, lists by decoding every posting, so a
#: little size buys speed (1M synthetic:lexical items: ratio 1 -> 21.7x smaller than flat,
#: p50 2.9 ms; 2 -> 20.8x, 1.6 ms; 3 -> 19.4x, 1.4 ms)
ROW_RATIO = 2.0
#: a batch of queries is split over the cores when each thread gets at least this many
ROWS_PER_THREAD = 64
#: documents are ordered by their this many heaviest words (lexicographically), so that
#: documents with the same dominant words share blocks
SIGNATURE_WIDTH = 3


def _kernels() -> Any:
    from lexlens.index import sparse_kernels

    return sparse_kernels


# ----------------------------------------------------------------------------- input checks
def _check_batch(sp: SparseBatch, vocab_size: int, what: str) -> None:
    if vocab_size and sp.vocab_size != vocab_size and len(sp.indices):
        raise UsageError(
            f"{what} use a vocabulary of {sp.vocab_size} words; this index uses {vocab_size}"
        )
    values = np.asarray(sp.values)
    if len(values) and (not np.isfinite(values).all() or (values < 0).any()):
        raise UsageError(f"{what} must have finite, non-negative lexical weights")
    indices = np.asarray(sp.indices)
    if len(indices) and (indices.min() < 0 or indices.max() >= sp.vocab_size):
        raise UsageError(f"{what} have word ids outside the vocabulary of {sp.vocab_size}")


def _canonical_rows(
    sp: SparseBatch, topk: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR with words ascending per row, duplicates summed, zeros dropped, optional top-k."""
    indptr = np.asarray(sp.indptr, np.int64)
    n = len(indptr) - 1
    if topk is None and n == 1:  # a single query: usually canonical already
        idx = np.asarray(sp.indices, np.int64)[indptr[0] : indptr[1]]
        val = np.asarray(sp.values, np.float32)[indptr[0] : indptr[1]]
        if (val > 0).all() and (len(idx) < 2 or (idx[1:] > idx[:-1]).all()):
            return np.array([0, len(idx)], np.int64), idx, val
    lens = np.diff(indptr)
    rows = np.repeat(np.arange(n, dtype=np.int64), lens)
    idx = np.asarray(sp.indices, np.int64)[indptr[0] : indptr[-1]]
    val = np.asarray(sp.values, np.float32)[indptr[0] : indptr[-1]]
    order = np.lexsort((idx, rows))
    rows, idx, val = rows[order], idx[order], val[order]
    if len(rows):
        first = np.ones(len(rows), bool)
        first[1:] = (rows[1:] != rows[:-1]) | (idx[1:] != idx[:-1])
        if not first.all():
            grp = np.cumsum(first) - 1
            val = np.bincount(grp, weights=val.astype(np.float64)).astype(np.float32)
            rows, idx = rows[first], idx[first]
    keep = val > 0
    rows, idx, val = rows[keep], idx[keep], val[keep]
    if topk is not None and len(rows):
        # rank within row by (-weight, word id); keep the first topk
        o = np.lexsort((idx, -val, rows))
        start = np.searchsorted(rows[o], np.arange(n))
        rank = np.arange(len(o)) - np.repeat(start, np.bincount(rows[o], minlength=n))
        sel = np.sort(o[rank < topk])
        rows, idx, val = rows[sel], idx[sel], val[sel]
    counts = np.bincount(rows, minlength=n)
    out_ptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=out_ptr[1:])
    return out_ptr, idx, val


def clean_queries(sp: SparseBatch, vocab_size: int = 0) -> SparseBatch:
    """Queries in the form the search needs: words ascending, duplicates summed, zeros dropped.

    Raises :class:`UsageError` for negative or non-finite weights or a different vocabulary.
    """
    _check_batch(sp, vocab_size, "queries")
    ptr, idx, val = _canonical_rows(sp)
    return SparseBatch(ptr, idx.astype(np.int32), val, sp.vocab_size, sp.vocab)


def sparse_scores_reference(queries: SparseBatch, items: SparseBatch) -> np.ndarray:
    """Brute-force ``float32 [n_queries, n_items]`` scores computed exactly as the index does.

    For each query, the words are taken in ascending order and ``q_w * d_w`` accumulated in
    ``float64``; the result is rounded to ``float32``. Meant for tests and checks (the output
    is dense: ``n_queries * n_items`` numbers).
    """
    import scipy.sparse as sps

    q = clean_queries(queries)
    ip, ii, iv = _canonical_rows(items)
    n = len(ip) - 1
    cols = sps.csr_matrix(
        (iv.astype(np.float64), ii, ip), shape=(n, max(items.vocab_size, 1))
    ).tocsc()  # column w: the items having word w
    out = np.zeros((len(q), n), np.float32)
    for r in range(len(q)):
        acc = np.zeros(n, np.float64)
        for w, v in zip(*q.row(r), strict=True):
            lo, hi = cols.indptr[int(w)], cols.indptr[int(w) + 1]
            acc[cols.indices[lo:hi]] += np.float64(v) * cols.data[lo:hi]
        out[r] = acc.astype(np.float32)
    return out


# ----------------------------------------------------------------------------- segments
@dataclass
class Segment:
    """One immutable block-max inverted index over some documents (see module docstring).

    ``dead`` is a bitmap over internal positions (the only mutable part).
    """

    ids: np.ndarray  # uint8 [m, B] external id of each internal position, B little-endian bytes
    terms: np.ndarray  # int32 [T] vocabulary id of each local word (ascending)
    tptr: np.ndarray  # int64 [T+1] postings of each local word
    post_code: np.ndarray  # uint8/uint16 [nnz] weight codes, per word in document order
    codebook: np.ndarray  # float32 [C] ascending weights
    dense_of: np.ndarray  # int32 [T] row of a dense word in dub/dmask/dchk, -1 for list words
    dub: np.ndarray  # uint8 [D, blocks] 8-bit bound of the largest weight per block
    dmask: np.ndarray  # uint8 [D, blocks] which documents of the block have the word
    dchk: np.ndarray  # uint32 (int64) [D, blocks/32+1] first posting of every 32nd block
    sptr: np.ndarray  # int64 [T+1] bytes of each list word's gaps (none for dense words)
    gaps: np.ndarray  # uint8 [S] LEB128 document gaps (first: document + 1)
    cptr: np.ndarray  # int64 [T+1] checkpoints of each list word
    cdoc: np.ndarray  # uint32 (int64) [K] document before every 64th posting, plus 1
    cpos: np.ndarray  # uint32 (int64) [K] where that posting's gap starts in ``gaps``
    dead: np.ndarray  # uint8 [ceil(m/8)+1] bitmap
    block: int
    n_dead: int = 0
    _btab: np.ndarray | None = None  # code -> 8-bit bound (derived from the codebook)
    _kargs: tuple[Any, ...] | None = None  # kernel_args(), built once per dead bitmap

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def btab(self) -> np.ndarray:
        """8-bit upper bound of each weight code (``ceil(255 * w / max w)``)."""
        if self._btab is None:
            self._btab = _bound_table(np.asarray(self.codebook))
        return self._btab

    def external_ids(self) -> np.ndarray:
        """``int64`` external id of every internal position."""
        return _unpack_ids(np.asarray(self.ids))

    @property
    def live(self) -> int:
        return self.size - self.n_dead

    @property
    def n_blocks(self) -> int:
        return (self.size + self.block - 1) // self.block

    def kernel_args(self) -> tuple[Any, ...]:
        """The arrays :func:`~lexlens.index.sparse_kernels.search_segment` reads, in its order."""
        if self._kargs is None:
            self._kargs = self._kernel_args()
        return self._kargs

    def _kernel_args(self) -> tuple[Any, ...]:
        v = {a: _arr(getattr(self, a)) for a in _ARRAYS}
        return (
            v["terms"], v["tptr"], v["post_code"], v["codebook"], self.btab, v["dense_of"],
            v["dub"], v["dmask"], v["dchk"], v["sptr"], v["gaps"], v["cptr"], v["cdoc"],
            v["cpos"], v["ids"], self.dead, self.size, self.block,
        )  # fmt: skip

    def nbytes(self) -> int:
        return int(sum(np.asarray(getattr(self, a)).nbytes for a in _ARRAYS) + self.dead.nbytes)

    def dead_mask(self) -> np.ndarray:
        """Bool per internal position: dead or not."""
        return np.unpackbits(self.dead, bitorder="little")[: self.size].astype(bool)

    def mark_dead(self, positions: np.ndarray) -> int:
        """Mark internal positions dead; returns how many were newly marked."""
        mask = self.dead_mask()
        new = positions[~mask[positions]]
        if len(new) == 0:
            return 0
        mask[new] = True
        self.dead = np.packbits(np.concatenate([mask, [False]]), bitorder="little")
        self._kargs = None
        self.n_dead += len(new)
        return len(new)

    def to_rows(self, live_only: bool = True) -> tuple[np.ndarray, SparseBatch]:
        """The documents back as ``(ids, CSR rows)`` (weights decoded from the codes)."""
        k = _kernels()
        docs = k.decode_postings(
            _arr(self.tptr), _arr(self.dense_of), _arr(self.dmask), _arr(self.sptr),
            _arr(self.gaps), self.block,
        )  # fmt: skip
        term_of = np.repeat(np.arange(len(self.terms)), np.diff(np.asarray(self.tptr)))
        order = k.group_by_doc(docs, self.size)  # words stay ascending inside a document
        docs = docs[order]
        words = np.asarray(self.terms, np.int64)[term_of[order]]
        vals = np.asarray(self.codebook)[np.asarray(self.post_code)[order]]
        counts = np.bincount(docs, minlength=self.size)
        ids = self.external_ids()
        if live_only and self.n_dead:
            alive = ~self.dead_mask()
            keep = alive[docs]
            docs, words, vals = docs[keep], words[keep], vals[keep]
            counts = counts[alive]
            ids = ids[alive]
        ptr = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=ptr[1:])
        return ids, SparseBatch(ptr, words.astype(np.int32), vals.astype(np.float32), 0)


def _bound_table(book: np.ndarray) -> np.ndarray:
    """``uint8`` bound of each codebook weight: ``ceil(255 * w / max)`` (never below ``w``)."""
    vmax = float(book[-1]) if len(book) else 1.0
    return np.minimum(
        255, np.ceil(book.astype(np.float64) / max(vmax, 1e-30) * 255.0 * (1 + 1e-12))
    ).astype(np.uint8)


def _pack_ids(ids: np.ndarray) -> np.ndarray:
    """``int64`` ids -> ``uint8 [m, B]`` little-endian bytes, ``B`` as few as the largest
    non-negative id needs (8 when an id is negative)."""
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        return np.zeros((0, 1), np.uint8)
    nbytes = 8 if ids.min() < 0 else max(1, (int(ids.max()).bit_length() + 7) // 8)
    raw = ids.astype("<i8").view(np.uint8).reshape(len(ids), 8)
    return np.ascontiguousarray(raw[:, :nbytes])


def _unpack_ids(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_pack_ids`."""
    full = np.zeros((len(packed), 8), np.uint8)
    full[:, : packed.shape[1]] = packed
    return full.view("<i8").reshape(-1).astype(np.int64)


def _small(a: np.ndarray) -> np.ndarray:
    """``uint32`` when all values fit (offsets and documents), else unchanged."""
    if a.size == 0 or (a.min() >= 0 and a.max() < 2**32):
        return a.astype(np.uint32)
    return a


def _codes(values: np.ndarray, q8: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weights -> (codes, ascending codebook); see module docstring."""
    if len(values) == 0:
        return np.zeros(0, np.uint8), np.zeros(1, np.float32)
    if q8:
        top = float(values.max())
        scale = np.float32(top / 255.0)
        codes = np.rint(np.clip(values.astype(np.float64) / (top / 255.0), 0, 255)).astype(np.uint8)
        return codes, (np.arange(256, dtype=np.float32) * scale).astype(np.float32)
    book, codes = np.unique(values, return_inverse=True)
    if len(book) <= 256:
        return codes.astype(np.uint8), book.astype(np.float32)
    if len(book) <= 65536:
        return codes.astype(np.uint16), book.astype(np.float32)
    top = float(values.max())
    codes = np.rint(values.astype(np.float64) / top * 65535).astype(np.uint16)
    return codes, (np.arange(65536, dtype=np.float64) * (top / 65535)).astype(np.float32)


def build_segment(
    ids: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    block: int,
    q8: bool,
) -> Segment:
    """A segment over rows in canonical form (words ascending, weights > 0)."""
    k = _kernels()
    n = len(ids)
    indices = np.asarray(indices, np.int64)
    present = np.zeros(int(indices.max()) + 1 if len(indices) else 1, bool)
    present[indices] = True
    terms = np.flatnonzero(present)
    local = np.cumsum(present) - 1
    loc = local[indices]
    codes, book = _codes(np.asarray(values, np.float32), q8)
    if q8 and len(codes):  # weights that round to 0 drop out
        keep = codes > 0
        if not keep.all():
            rows = np.repeat(np.arange(n), np.diff(indptr))[keep]
            loc, codes = loc[keep], codes[keep]
            indptr = np.zeros(n + 1, np.int64)
            np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
            terms, loc2 = np.unique(terms[loc], return_inverse=True)
            loc = loc2
    loc = loc.astype(np.int64)
    # documents with the same heaviest words next to each other
    sig = k.row_signatures(indptr, loc, codes, SIGNATURE_WIDTH)
    perm = np.lexsort((np.arange(n), *sig.T[::-1])) if n else np.zeros(0, np.int64)
    lens = np.diff(indptr)[perm]
    new_ptr = np.zeros(n + 1, np.int64)
    np.cumsum(lens, out=new_ptr[1:])
    src = np.repeat(indptr[:-1][perm], lens) + (
        np.arange(int(new_ptr[-1])) - np.repeat(new_ptr[:-1], lens)
    )
    (tptr, post_code, dense_of, dub, dmask, dchk, sptr, gaps, cptr, cdoc, cpos) = (
        k.build_postings(
            new_ptr, loc[src], codes[src], len(terms), block, _bound_table(book),
            float(ROW_RATIO), np.zeros(1, codes.dtype),
        )
    )  # fmt: skip
    return Segment(
        ids=_pack_ids(np.asarray(ids, np.int64)[perm]),
        terms=terms.astype(np.int32),
        tptr=tptr,
        post_code=post_code,
        codebook=book,
        dense_of=dense_of,
        dub=dub,
        dmask=dmask,
        dchk=_small(dchk),
        sptr=sptr,
        gaps=gaps,
        cptr=cptr,
        cdoc=_small(cdoc),
        cpos=_small(cpos),
        dead=np.zeros(n // 8 + 1, np.uint8),
        block=block,
    )


def _merge_rows(parts: Sequence[tuple[np.ndarray, SparseBatch]]) -> tuple[np.ndarray, SparseBatch]:
    ids = np.concatenate([p[0] for p in parts])
    return ids, SparseBatch.concat([p[1] for p in parts])


# ----------------------------------------------------------------------------- the kind
def _float_option(spec: IndexSpec, key: str, default: float, lo: float, hi: float) -> float:
    v = spec.option(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo < float(v) <= hi:
        raise UsageError(f"option {key} of {spec.kind} must be a number in ({lo}, {hi}], got {v!r}")
    return float(v)


def _int_option(spec: IndexSpec, key: str, default: int | None, lo: int, hi: int) -> int | None:
    v = spec.option(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise UsageError(
            f"option {key} of {spec.kind} must be an integer in [{lo}, {hi}], got {v!r}"
        )
    return int(v)


@register_kind
class SparseKind(IndexKind):
    """Block-max inverted index over lexical weights; exact or budgeted (see module docstring)."""

    kind: ClassVar[str] = "sparse"
    needs_sparse: ClassVar[bool] = True

    def __init__(
        self,
        vocab_size: int = 0,
        block: int = DEFAULT_BLOCK,
        topk: int | None = None,
        q8: bool = False,
        budget: float = 1.0,
        segments: list[Segment] | None = None,
    ) -> None:
        if not 1 <= block <= MAX_BLOCK:
            raise UsageError(f"sparse block must be between 1 and {MAX_BLOCK}, got {block}")
        self.vocab_size = int(vocab_size)
        self.block = int(block)
        self.topk = topk
        self.q8 = bool(q8)
        self.budget = float(budget)
        self.segments: list[Segment] = list(segments or [])
        # per segment: its ids sorted and their internal positions (built on first use)
        self._where: list[tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def from_spec(cls, spec: IndexSpec, ctx: KindContext) -> SparseKind:
        if spec.number is not None or spec.children or spec.encoding:
            raise UsageError(f"sparse takes options only, e.g. sparse(budget=0.05): {spec}")
        bad = [k for k, _ in spec.options if k not in _OPTIONS]
        if bad:
            raise UsageError(
                f"unknown option {bad[0]!r} for sparse; allowed: {', '.join(_OPTIONS)}"
            )
        q8 = spec.option("q8", False)
        if q8 is not True and q8 is not False:
            raise UsageError(f"q8 is a flag (sparse(q8)), got q8={q8!r}")
        return cls(
            vocab_size=ctx.vocab_size,
            block=_int_option(spec, "block", DEFAULT_BLOCK, 1, MAX_BLOCK) or DEFAULT_BLOCK,
            topk=_int_option(spec, "topk", None, 1, 1 << 20),
            q8=bool(q8),
            budget=_float_option(spec, "budget", 1.0, 0.0, 1.0),
        )

    # -- changes ------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: Vectors) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if vectors.sparse is None:
            raise UsageError("the sparse index needs lexical (sparse) vectors")
        sp = vectors.sparse
        if len(sp) != len(ids):
            raise UsageError(f"got {len(ids)} ids for {len(sp)} sparse vectors")
        if len(ids) == 0:
            return
        _check_batch(sp, self.vocab_size, "items")
        if not self.vocab_size:
            self.vocab_size = int(sp.vocab_size)
        ptr, idx, val = _canonical_rows(sp, self.topk)
        self.segments.append(build_segment(ids, ptr, idx, val, self.block, self.q8))
        while len(self.segments) > 1 and (
            self.segments[-1].live >= MERGE_RATIO * self.segments[-2].live
        ):
            b = self.segments.pop()
            a = self.segments.pop()
            self.segments.append(self._rebuild([a, b]))
        self._where = None

    def _rebuild(self, segs: Sequence[Segment]) -> Segment:
        # decoded rows are canonical already (words ascending, weights > 0), and the weights
        # are the codes' values: re-coding them is lossless (q8 grids included)
        ids, rows = _merge_rows([s.to_rows() for s in segs])
        return build_segment(ids, rows.indptr, rows.indices, rows.values, self.block, False)

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(segment, internal position)`` of each id (``-1, -1`` when absent)."""
        if self._where is None:
            self._where = []
            for seg in self.segments:
                ext = seg.external_ids()
                order = np.argsort(ext, kind="stable")
                self._where.append((ext[order], order))
        ids = np.asarray(ids, np.int64).reshape(-1)
        seg_of = np.full(len(ids), -1, np.int64)
        pos_of = np.full(len(ids), -1, np.int64)
        for si, (sorted_ids, order) in enumerate(self._where):
            if len(sorted_ids) == 0:
                continue
            at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
            hit = (sorted_ids[at] == ids) & (seg_of < 0)
            seg_of[hit] = si
            pos_of[hit] = order[at[hit]]
        return seg_of, pos_of

    def remove(self, ids: np.ndarray) -> int:
        seg_of, pos_of = self._locate(np.unique(np.asarray(ids, dtype=np.int64)))
        removed = 0
        for si in np.unique(seg_of[seg_of >= 0]).tolist():
            removed += self.segments[si].mark_dead(pos_of[seg_of == si])
        if removed:
            segs = []
            for s in self.segments:
                if s.n_dead > REBUILD_DEAD_SHARE * s.size:
                    if s.live:
                        segs.append(self._rebuild([s]))
                else:
                    segs.append(s)
            self.segments = segs
            self._where = None
        return removed

    # -- search -------------------------------------------------------------------------
    def search(
        self, queries: Vectors, k: int, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if queries.sparse is None:
            raise UsageError("the sparse index needs lexical query vectors (a lexical model)")
        q = clean_queries(queries.sparse, self.vocab_size)
        n = len(q)
        if k <= 0:
            return empty_results(n, 0)
        budget = self.budget
        if params is not None and params.sparse_budget is not None:
            budget = float(params.sparse_budget)
            if not 0.0 < budget <= 1.0:
                raise UsageError(f"sparse_budget must be in (0, 1], got {budget}")
        s, i, _ = self._search(q, k, budget)
        return s, i

    def _search(
        self, q: SparseBatch, k: int, budget: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        kern = _kernels()
        n = len(q)
        hs = np.full((n, k), -np.inf, np.float32)
        hi = np.full((n, k), -1, np.int64)
        sizes = np.zeros(n, np.int64)
        stats = np.zeros((n, 3), np.int64)
        qp = np.asarray(q.indptr, np.int64)
        qi = np.asarray(q.indices, np.int64)
        qv = np.asarray(q.values, np.float32)
        # the largest segment first: its results raise the bar for the others
        segs = [s for s in sorted(self.segments, key=lambda x: -x.live) if s.live]

        def rows(a: int, b: int) -> None:
            """Queries ``a:b`` through every segment (the kernels release the GIL)."""
            ptr = qp[a : b + 1] - qp[a]
            terms, weights = qi[qp[a] : qp[b]], qv[qp[a] : qp[b]]
            for seg in segs:
                kern.search_segment(
                    ptr, terms, weights, *seg.kernel_args(), hs[a:b], hi[a:b], sizes[a:b], k,
                    budget, stats[a:b], *_scratch(seg.n_blocks),
                )  # fmt: skip

        threads = min(os.cpu_count() or 1, n // ROWS_PER_THREAD)
        if threads > 1:  # a large batch: its rows split over the cores
            from concurrent.futures import ThreadPoolExecutor

            cuts = np.linspace(0, n, threads + 1).astype(int)
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(rows, cuts[:-1], cuts[1:]))
        else:
            rows(0, n)
        out_s, out_i = empty_results(n, k)
        kern.heap_sorted(hs, hi, sizes, out_s, out_i)
        return out_s, out_i, stats

    def search_stats(
        self, queries: Vectors, k: int, params: SearchParams | None = None
    ) -> dict[str, float]:
        """Work done by a search: mean postings scored, blocks scored and postings in the
        query words' lists (for benchmarks and tuning ``budget``)."""
        q = clean_queries(queries.sparse, self.vocab_size) if queries.sparse is not None else None
        if q is None:
            raise UsageError("the sparse index needs lexical query vectors")
        budget = (
            self.budget if params is None or params.sparse_budget is None else params.sparse_budget
        )
        _, _, st = self._search(q, k, float(budget))
        mean = st.mean(axis=0) if len(st) else np.zeros(3)
        return {"postings_scored": float(mean[0]), "blocks_scored": float(mean[1]),
                "postings_total": float(mean[2])}  # fmt: skip

    # -- explanations -----------------------------------------------------------------------
    def explain(
        self, query: SparseBatch, ids: Sequence[int], vocab: Sequence[str] | None = None
    ) -> list[list[dict[str, Any]]]:
        """For each id, the words it shares with the (single-row) ``query`` and their
        contributions, from the weights stored in this index (largest contribution first)."""
        kern = _kernels()
        q = clean_queries(query, self.vocab_size)
        if len(q) != 1:
            raise UsageError("explain takes one query")
        words, qw = q.row(0)
        seg_of, pos_of = self._locate(np.asarray(ids, np.int64))
        out = []
        for si, pos in zip(seg_of.tolist(), pos_of.tolist(), strict=True):
            if si < 0:
                out.append([])
                continue
            s = self.segments[si]
            w = kern.lookup_weights(
                np.asarray(words, np.int64), _arr(s.terms), _arr(s.tptr), _arr(s.post_code),
                _arr(s.codebook), _arr(s.dense_of), _arr(s.dmask), _arr(s.dchk), _arr(s.sptr),
                _arr(s.gaps), _arr(s.cptr), _arr(s.cdoc), _arr(s.cpos), pos, s.block,
            )  # fmt: skip
            out.append(_contributions(words, qw, w, vocab or query.vocab))
        return out

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: Path) -> list[str]:
        directory = Path(directory)
        names = []
        for si, s in enumerate(self.segments):
            for a in (*_ARRAYS, "dead"):
                name = f"seg{si}_{a}.npy"
                np.save(directory / name, np.asarray(getattr(s, a)))
                names.append(name)
        meta = {
            "format": FORMAT,
            "vocab_size": self.vocab_size,
            "block": self.block,
            "topk": self.topk,
            "q8": self.q8,
            "budget": self.budget,
            "segments": [
                {"size": s.size, "n_dead": s.n_dead, "block": s.block} for s in self.segments
            ],
        }
        (directory / "sparse.json").write_text(json.dumps(meta))
        return [*names, "sparse.json"]

    @classmethod
    def load(cls, directory: Path, options: dict[str, Any], mmap: bool = True) -> SparseKind:
        directory = Path(directory)
        meta = json.loads((directory / "sparse.json").read_text())
        if meta.get("format", 1) != FORMAT:
            raise IndexMismatchError(
                f"{directory} holds a sparse index of layout {meta.get('format', 1)}; this "
                f"lexlens reads layout {FORMAT}: rebuild the index"
            )
        mode = "r" if mmap else None
        segs = []
        for si, sm in enumerate(meta["segments"]):
            arrs = {a: np.load(directory / f"seg{si}_{a}.npy", mmap_mode=mode) for a in _ARRAYS}
            dead = np.array(np.load(directory / f"seg{si}_dead.npy"))
            segs.append(
                Segment(**arrs, dead=dead, block=int(sm["block"]), n_dead=int(sm["n_dead"]))
            )
        spec = options.get("spec")
        ctx = options.get("context")
        self = cls(
            vocab_size=int(meta["vocab_size"]),
            block=int(meta["block"]),
            topk=meta["topk"],
            q8=bool(meta["q8"]),
            budget=float(meta["budget"]),
            segments=segs,
        )
        if isinstance(spec, IndexSpec) and spec.kind == cls.kind:
            # the spec in the manifest is authoritative for query-time defaults
            opened = cls.from_spec(spec, ctx if isinstance(ctx, KindContext) else KindContext())
            self.budget = opened.budget
        return self

    @property
    def ntotal(self) -> int:
        return int(sum(s.live for s in self.segments))

    def memory_bytes(self) -> int:
        return int(sum(s.nbytes() for s in self.segments))


_SCRATCH = threading.local()
#: first size of a thread's buffer of decoded list-word documents (it grows as needed)
_BUF0 = 1 << 16


def _scratch(n_blocks: int) -> tuple[np.ndarray, ...]:
    """This thread's scratch arrays for a search (grown on demand, never shared): block
    bounds, candidates, decoded documents of the query's list words and the size those need."""
    have = getattr(_SCRATCH, "arrays", None)
    if have is not None and len(have[2]) < have[3][0]:  # the last search needed more
        have = (have[0], have[1], np.empty(int(have[3][0] * 1.25), np.int32), have[3])
        _SCRATCH.arrays = have
    if have is None or len(have[0]) < n_blocks:
        size = max(n_blocks, 1024)
        buf = np.empty(_BUF0, np.int32) if have is None else have[2]
        need = np.zeros(1, np.int64) if have is None else have[3]
        have = (np.zeros(size, np.uint32), np.zeros(size, np.int64), buf, need)
        _SCRATCH.arrays = have
    return have


def _arr(a: np.ndarray) -> np.ndarray:
    """A plain ndarray view (memory maps included) for the compiled kernels."""
    return a.view(np.ndarray) if isinstance(a, np.memmap) else a


def _contributions(
    words: np.ndarray, qw: np.ndarray, dw: np.ndarray, vocab: Sequence[str] | None
) -> list[dict[str, Any]]:
    rows = []
    for w, a, b in zip(np.asarray(words).tolist(), np.asarray(qw), np.asarray(dw), strict=True):
        if b > 0 and a > 0:
            word = vocab[w] if vocab is not None and 0 <= w < len(vocab) else f"#{w}"
            rows.append(
                {
                    "word": str(word),
                    "id": int(w),
                    "query": float(a),
                    "item": float(b),
                    "contribution": float(np.float64(a) * np.float64(b)),
                }
            )
    rows.sort(key=lambda r: (-r["contribution"], r["id"]))
    return rows


def explain(
    query: SparseBatch, item: SparseBatch | None, vocab: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The words a one-row ``query`` and a one-row ``item`` share, with their contributions.

    Each entry: ``word`` (its string from ``vocab``, else ``#id``), ``id``, ``query`` and
    ``item`` weights and ``contribution = query * item``; sorted by contribution, largest
    first (ties by word id). Their sum is the item's score.
    """
    if item is None or len(item) == 0:
        return []
    q = clean_queries(query)
    it = clean_queries(item)
    qwords, qw = q.row(0)
    iwords, iw = it.row(0)
    common, qa, ib = np.intersect1d(qwords, iwords, assume_unique=True, return_indices=True)
    return _contributions(common, qw[qa], iw[ib], vocab or query.vocab or item.vocab)
