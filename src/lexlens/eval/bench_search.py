"""``lexlens bench search``: build time, size, latency, throughput and recall of index kinds.

For each collection size ``N`` and each index spec, one run builds an in-memory index over
``N`` gallery vectors and measures:

* ``build_s``: wall time of creating the structure and adding the ``N`` items (training included);
* ``disk_bytes``: the bytes its :meth:`~lexlens.index.base.IndexKind.save` writes;
* ``memory_bytes``: the kind's own account of its resident size (``memory_bytes()``) and
  ``rss_delta_bytes``: growth of the process's resident set during the build (noisy);
* ``p50_ms`` / ``p95_ms`` / ``p99_ms``: single-query latency, one query at a time;
* ``qps``: queries per second when all queries are searched in one batch;
* ``recall@10``: the share of the exact top 10 it returns (:mod:`lexlens.eval.exact`: flat
  brute force on the same dense vectors, the exact sparse dot product, or the composite with
  exact children).

Single-query latency is measured with one thread (faiss's OpenMP pool is set to 1 thread
while it is measured; the sparse kernels are single-threaded), so kinds are compared per
core; batched q/s uses the default thread count.

**Query-time sweeps** (``sweep``, CLI ``--sweep "ef=16,64,256;budget=0.002,0.01"``): each
kind is also searched with every listed value of the query-time parameters it takes, passed
per call in :class:`~lexlens.index.base.SearchParams` (the index is never changed): ``ef``
(HNSW efSearch) for specs with an ``hnsw`` part, ``nprobe`` for ``ivf``, ``budget`` (share
of postings scored) for ``sparse``, ``candidates`` for ``hybrid``. Every point records
latency and recall, giving a latency/recall curve per kind. :func:`compare_at_recall` then
states, per ``N`` and per point of each ``sparse`` kind, the latency of each ``hnsw`` kind at
the smallest efSearch whose recall is at least the sparse point's (or, when none reaches it,
at its best recall), next to the sparse latency.

**Gallery vectors.** The model encodes real scene images (``--data`` or freshly generated
scenes) up to ``--encode`` of them. Larger ``N`` are filled with synthetic vectors of the same
statistics, and the report says how many of each: a dense synthetic vector is a random encoded
vector plus isotropic Gaussian noise, renormalised (the noise scale is a fraction of the
typical distance between an encoded vector and its nearest encoded neighbour, so clusters stay
clusters); a sparse synthetic row takes the support and weights of a random encoded row, drops
each term with a small probability, multiplies each weight by log-normal noise and adds a few
terms drawn by document frequency. Dense and sparse parts of one synthetic item come from the
same encoded item. Queries are encoded captions.

``--model synthetic:lexical`` needs no model: items and queries come from
:func:`synthesize_lexical_gallery` (LexLIP-like sparse statistics with matching dense
vectors), e.g. to measure the ``sparse`` and ``hybrid(...)`` kinds against ``flat`` and
``hnsw32`` before a lexical model is trained. Each row also reports how many times faster
(p50) and smaller (bytes on disk) than ``flat`` at the same ``N`` it is.

**Bounded.** Before any work, the peak memory of every ``(N, kind)`` run is estimated and the
command fails with one line if one does not fit ``max_memory`` (default: 80% of the available
RAM). Nothing runs in the background; runs are sequential.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import UsageError
from lexlens.index.base import KindContext, SearchParams, Vectors
from lexlens.index.spec import IndexSpec, create_kind, parse_spec, spec_needs
from lexlens.models.base import SparseBatch, l2_normalize

__all__ = [
    "BenchSearchConfig",
    "Gallery",
    "split_kinds",
    "estimate_index_bytes",
    "estimate_run_bytes",
    "available_memory",
    "parse_bytes",
    "parse_sizes",
    "synthesize_dense",
    "synthesize_sparse",
    "synthesize_lexical_gallery",
    "SYNTHETIC_MODEL",
    "bench_search",
    "bench_kind",
    "SWEEP_PARAMS",
    "parse_sweep",
    "compare_at_recall",
    "markdown_table",
    "plot",
]


@dataclass
class BenchSearchConfig:
    """Arguments of ``lexlens bench search`` (see module docstring)."""

    model: str
    sizes: list[int] = field(default_factory=lambda: [1000, 10000, 100000])
    kinds: list[str] = field(default_factory=lambda: ["flat", "hnsw32"])
    queries: int = 200
    k: int = 10
    data: str | None = None
    encode: int = 20000
    out: str | None = None
    max_memory: int | None = None
    seed: int = 0
    batch_size: int = 64
    progress: bool = True
    #: query-time parameter -> values searched per kind (see module docstring)
    sweep: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Gallery:
    """Encoded items and queries (dense and, for lexical models, sparse) and how they were made."""

    dense: np.ndarray
    sparse: SparseBatch | None
    query_dense: np.ndarray
    query_sparse: SparseBatch | None
    source: str

    @property
    def dim(self) -> int:
        return int(self.dense.shape[1])

    def avg_nnz(self) -> float:
        """Mean number of non-zero weights per sparse item (0 without sparse vectors)."""
        if self.sparse is None or len(self.sparse) == 0:
            return 0.0
        return float(self.sparse.indptr[-1]) / len(self.sparse)


# ----------------------------------------------------------------------------- kind lists
def split_kinds(text: str) -> list[str]:
    """Split ``--kinds``: ``;`` separates specs; else commas at the top level, where a kind that
    needs an encoding (``ivf1024``) takes the next item as its encoding (``ivf1024,pq32``)."""
    from lexlens.index.spec import known_kinds

    parts = _split_top(text, ";") if ";" in _top_level(text) else _split_top(text, ",")
    kinds = known_kinds()
    out: list[str] = []
    i = 0
    while i < len(parts):
        item = parts[i].strip()
        head = item.split("(")[0].rstrip("0123456789").strip().lower()
        cls = kinds.get(head)
        if cls is not None and cls.encodings and "," not in item and i + 1 < len(parts):
            item = f"{item},{parts[i + 1].strip()}"
            i += 1
        if item:
            out.append(str(parse_spec(item)))
        i += 1
    if not out:
        raise UsageError("--kinds names no index kind")
    return out


def _top_level(text: str) -> str:
    depth, keep = 0, []
    for ch in text:
        depth += ch == "("
        if depth == 0:
            keep.append(ch)
        depth -= ch == ")"
    return "".join(keep)


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


# ----------------------------------------------------------------------------- sweeps
#: sweep name -> (SearchParams field, index kind it applies to, value type, default of the kind)
SWEEP_PARAMS: dict[str, tuple[str, str, type, float]] = {
    "ef": ("ef_search", "hnsw", int, 64),
    "nprobe": ("nprobe", "ivf", int, 16),
    "budget": ("sparse_budget", "sparse", float, 1.0),
    "candidates": ("candidates", "hybrid", int, 0),
}


def parse_sweep(text: str | None) -> dict[str, list[float]]:
    """``"ef=16,64,256;budget=0.002,0.01"`` -> ``{"ef": [16, 64, 256], "budget": [...]}``."""
    out: dict[str, list[float]] = {}
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        name, eq, values = part.partition("=")
        name = name.strip().lower()
        if not eq or name not in SWEEP_PARAMS:
            raise UsageError(
                f"bad --sweep item {part.strip()!r}; use NAME=V1,V2,... with NAME one of "
                f"{', '.join(SWEEP_PARAMS)}"
            )
        typ = SWEEP_PARAMS[name][2]
        vals: list[float] = []
        for v in values.split(","):
            try:
                x = typ(float(v)) if typ is int else float(v)
            except ValueError:
                raise UsageError(f"bad --sweep value {v.strip()!r} for {name}") from None
            if x <= 0 or (name == "budget" and x > 1):
                raise UsageError(f"--sweep {name} values must be in range, got {v.strip()!r}")
            vals.append(x)
        out[name] = sorted(set(vals))
    return out


def _spec_kinds(spec: IndexSpec) -> set[str]:
    kinds = {spec.kind}
    for c in spec.children:
        kinds |= _spec_kinds(c)
    if spec.encoding is not None:
        kinds |= _spec_kinds(spec.encoding)
    return kinds


def _default_value(spec: IndexSpec, name: str) -> float | None:
    """The value a kind uses for sweep parameter ``name`` when none is passed (if it is set
    by an option of the spec or a fixed default)."""
    field_name, kind, typ, default = SWEEP_PARAMS[name]
    option = {"ef": "ef", "nprobe": "nprobe", "budget": "budget", "candidates": "candidates"}
    if spec.kind == kind:
        v = spec.option(option[name], None)
        return typ(v) if v is not None else (default or None)
    return None


def sweep_points(spec: IndexSpec, sweep: dict[str, list[float]]) -> list[tuple[str, float]]:
    """The ``(parameter, value)`` pairs of ``sweep`` that apply to ``spec`` (not its default)."""
    kinds = _spec_kinds(spec)
    out = []
    for name, values in sweep.items():
        if SWEEP_PARAMS[name][1] not in kinds:
            continue
        default = _default_value(spec, name)
        out += [(name, v) for v in values if default is None or v != default]
    return out


def _params(name: str | None, value: float | None) -> SearchParams:
    if name is None:
        return SearchParams()
    return SearchParams(**{SWEEP_PARAMS[name][0]: value})


# ----------------------------------------------------------------------------- memory
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5g"``, ``"1000000"`` -> bytes (binary units)."""
    t = str(text).strip().lower().replace(" ", "")
    for suffix in ("ib", "b"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
            break
    unit = t[-1] if t and t[-1] in _UNITS else ""
    number = t[: len(t) - len(unit)]
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise UsageError(f"bad memory size {text!r}; use e.g. 8G or 512M") from None
    if value <= 0:
        raise UsageError(f"memory size must be positive, got {text!r}")
    return int(value)


def parse_sizes(text: str) -> list[int]:
    """``"1000,10k,1M"`` -> ``[1000, 10000, 1000000]``."""
    out = []
    for part in str(text).split(","):
        p = part.strip().lower().replace("_", "")
        if not p:
            continue
        mult = {"k": 1000, "m": 1_000_000}.get(p[-1], 1)
        try:
            n = int(float(p[:-1] if mult > 1 else p) * mult)
        except ValueError:
            raise UsageError(f"bad collection size {part!r} in --sizes") from None
        if n <= 0:
            raise UsageError(f"collection sizes must be positive, got {part!r}")
        out.append(n)
    if not out:
        raise UsageError("--sizes names no collection size")
    return out


def available_memory() -> int:
    """Available RAM in bytes (``MemAvailable``; falls back to total physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def estimate_index_bytes(spec: IndexSpec, n: int, dim: int, nnz: float) -> int:
    """Rough resident size of an index of ``spec`` over ``n`` items (for the up-front check).

    Known kinds by exact name; an unknown kind is assumed to hold two copies of the raw vectors.
    """
    raw_dense = dim * 4
    raw_sparse = nnz * 8
    if spec.children:
        return sum(estimate_index_bytes(c, n, dim, nnz) for c in spec.children) + 16 * n
    kind = spec.kind
    per: float
    if kind == "flat":
        per = raw_dense + 8
    elif kind == "hnsw":
        per = (raw_dense + 2 * (spec.number or 32) * 4) * 1.2 + 8
    elif kind in ("pq", "ivf", "sq"):
        enc = spec.encoding if kind == "ivf" else spec
        per = raw_dense + 8  # exact side buffer until trained; then codes (smaller)
        if enc is not None and enc.kind == "pq":
            per = (enc.number or max(1, dim // 4)) + 16
        elif enc is not None and enc.kind == "sq":
            per = dim * (enc.number or 8) / 8 + 16
        # the training sample and centroids
        return int(n * per + min(n, 65536) * raw_dense + (spec.number or 0) * raw_dense)
    elif kind == "sparse":
        per = 2 * raw_sparse + 16
    else:
        per = 2 * (raw_dense + raw_sparse) + 16
    return int(n * per)


def estimate_run_bytes(spec: IndexSpec, n: int, dim: int, nnz: float, n_queries: int) -> int:
    """Peak bytes of one run: the gallery, the index (with build slack), exact-search scratch."""
    dense, sparse = spec_needs(spec)
    gallery = n * dim * 4 + (n * nnz * 8 * 2 if sparse else 0)  # sparse: CSR + one transposed copy
    scratch = n_queries * min(n, 65536) * 4 * 3
    return int(gallery + 1.5 * estimate_index_bytes(spec, n, dim, nnz) + scratch + (64 << 20))


# ----------------------------------------------------------------------------- synthesis
def _nn_distance(x: np.ndarray, rng: np.random.Generator, sample: int = 512) -> float:
    """Median distance from a sample of rows to their nearest other row."""
    if len(x) < 2:
        return 0.1
    idx = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    best = np.full(len(idx), np.inf)
    for a in range(0, len(x), 8192):
        block = x[a : a + 8192]
        d2 = (x[idx] ** 2).sum(1)[:, None] + (block**2).sum(1)[None, :] - 2 * x[idx] @ block.T
        self_mask = np.arange(a, a + len(block))[None, :] == idx[:, None]
        d2[self_mask] = np.inf
        best = np.minimum(best, d2.min(axis=1))
    return float(np.sqrt(np.maximum(np.median(best), 0.0)))


def synthesize_dense(
    base: np.ndarray, n: int, rng: np.random.Generator, parents: np.ndarray, noise: float = 0.5
) -> tuple[np.ndarray, float]:
    """``n`` synthetic rows: ``normalise(base[parent] + sigma * N(0, I))`` (see module docstring).

    ``sigma = noise * (median nearest-neighbour distance) / sqrt(dim)``: a synthetic vector
    lands about ``noise`` times the typical neighbour distance away from its parent.
    Returns the rows and ``sigma``.
    """
    dim = base.shape[1]
    sigma = noise * _nn_distance(base, rng) / np.sqrt(dim)
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, 65536):
        p = parents[a : a + 65536]
        out[a : a + len(p)] = l2_normalize(
            base[p] + rng.standard_normal((len(p), dim)).astype(np.float32) * sigma
        )
    return out, float(sigma)


def synthesize_sparse(
    base: SparseBatch,
    n: int,
    rng: np.random.Generator,
    parents: np.ndarray,
    drop: float = 0.1,
    jitter: float = 0.1,
    extra: float = 1.0,
) -> SparseBatch:
    """``n`` synthetic sparse rows resampled from ``base`` rows ``parents`` (see module docstring).

    Each term of the parent is kept with probability ``1 - drop``, its weight multiplied by
    ``exp(N(0, jitter^2))``; a Poisson(``extra``) number of terms is added, drawn by document
    frequency, with weights drawn from all encoded weights.
    """
    lengths = np.diff(base.indptr)
    df = np.bincount(base.indices, minlength=base.vocab_size).astype(np.float64)
    df_p = df / df.sum() if df.sum() > 0 else np.full(base.vocab_size, 1.0 / base.vocab_size)
    all_w = base.values if len(base.values) else np.ones(1, np.float32)
    rows_idx: list[np.ndarray] = []
    rows_val: list[np.ndarray] = []
    indptr = np.zeros(n + 1, np.int64)
    for a in range(0, n, 65536):
        p = parents[a : a + 65536]
        m = len(p)
        starts = base.indptr[p]
        lens = lengths[p]
        # gather the parents' terms
        rep = np.repeat(np.arange(m), lens)
        pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        src = np.repeat(starts, lens) + pos
        idx = base.indices[src].astype(np.int64)
        val = base.values[src] * np.exp(rng.normal(0, jitter, len(src))).astype(np.float32)
        keep = rng.random(len(src)) >= drop
        rep, idx, val = rep[keep], idx[keep], val[keep]
        n_extra = rng.poisson(extra, m)
        e_rep = np.repeat(np.arange(m), n_extra)
        e_idx = rng.choice(base.vocab_size, size=len(e_rep), p=df_p)
        e_val = rng.choice(all_w, size=len(e_rep))
        rep = np.concatenate([rep, e_rep])
        idx = np.concatenate([idx, e_idx])
        val = np.concatenate([val, e_val]).astype(np.float32)
        # sort by (row, term) and merge duplicate terms (keep the larger weight)
        order = np.lexsort((-val, idx, rep))
        rep, idx, val = rep[order], idx[order], val[order]
        first = np.ones(len(rep), bool)
        first[1:] = (rep[1:] != rep[:-1]) | (idx[1:] != idx[:-1])
        rep, idx, val = rep[first], idx[first], val[first]
        counts = np.bincount(rep, minlength=m)
        indptr[a + 1 : a + m + 1] = indptr[a] + np.cumsum(counts)
        rows_idx.append(idx.astype(np.int32))
        rows_val.append(val)
    return SparseBatch(
        indptr=indptr,
        indices=np.concatenate(rows_idx) if rows_idx else np.zeros(0, np.int32),
        values=np.concatenate(rows_val) if rows_val else np.zeros(0, np.float32),
        vocab_size=base.vocab_size,
        vocab=base.vocab,
    )


def _take_sparse(batch: SparseBatch, rows: np.ndarray) -> SparseBatch:
    lengths = np.diff(batch.indptr)[rows]
    starts = batch.indptr[rows]
    pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    src = np.repeat(starts, lengths) + pos
    return SparseBatch(
        indptr=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        indices=batch.indices[src],
        values=batch.values[src],
        vocab_size=batch.vocab_size,
        vocab=batch.vocab,
    )


#: ``--model`` value that benchmarks on synthetic lexical vectors instead of a model's
SYNTHETIC_MODEL = "synthetic:lexical"


def synthesize_lexical_gallery(
    n_items: int,
    n_queries: int,
    dim: int = 256,
    seed: int = 0,
    vocab_size: int = 30522,
    n_active: int = 500,
    n_concepts: int = 2000,
    max_weight: float = 4.0,
) -> Gallery:
    """Dense + sparse items and caption-like queries with LexLIP-like statistics, no model.

    Over ``n_active`` word pieces (random ids of a ``vocab_size`` vocabulary) with Zipf-like
    popularity (``p_r ~ 1 / (r + 3)^1.05``), ``n_concepts`` "concepts" of 2-5 words each
    (popularity ``~ 1 / (c + 5)^0.9``). An item takes 3-6 concepts (word weights log-normal
    around 1.4, jittered per item) plus 6-15 background words (weights around 0.4), the larger
    weight wins on repeats, and weights are quantised to 8 bits over ``[0, max_weight]`` as
    the lexicon heads do: about 22 non-zeros per item, the most common word in ~88% of items.
    Its dense vector is ``normalise(sum_w weight_w * u_w + noise)`` with a random Gaussian
    direction ``u_w`` per word, so dense and sparse similarity agree. A query picks a random
    item and 4-10 of its words (heavier words more likely), sometimes one popular word more,
    with float weights; its dense vector is made the same way.
    """
    rng = np.random.default_rng(seed)
    active = np.sort(
        rng.choice(np.arange(min(1000, vocab_size // 2), vocab_size), n_active, replace=False)
    )
    pop = 1.0 / (np.arange(n_active) + 3.0) ** 1.05
    pop /= pop.sum()
    rank_to_slot = rng.permutation(n_active)
    c_len = rng.integers(2, 6, n_concepts)
    c_words = np.full((n_concepts, 5), -1, np.int64)
    for c in range(n_concepts):
        c_words[c, : c_len[c]] = rank_to_slot[rng.choice(n_active, c_len[c], replace=False, p=pop)]
    c_weight = rng.lognormal(0.3, 0.4, (n_concepts, 5))
    c_pop = 1.0 / (np.arange(n_concepts) + 5.0) ** 0.9
    c_pop /= c_pop.sum()
    u = (rng.standard_normal((n_active, dim)) / np.sqrt(dim)).astype(np.float32)
    rows, words, weights = [], [], []
    for a in range(0, n_items, 200_000):
        m = min(n_items, a + 200_000) - a
        n_c = rng.integers(3, 7, m)
        item = np.repeat(np.arange(a, a + m), n_c)
        conc = rng.choice(n_concepts, len(item), p=c_pop)
        w_c = c_words[conc]
        valid = w_c >= 0
        r1 = np.repeat(item, 5).reshape(-1, 5)[valid]
        t1 = w_c[valid]
        v1 = (c_weight[conc] * rng.lognormal(0, 0.3, (len(item), 5)))[valid]
        n_b = rng.integers(6, 16, m)
        r2 = np.repeat(np.arange(a, a + m), n_b)
        t2 = rank_to_slot[rng.choice(n_active, len(r2), p=pop)]
        v2 = rng.lognormal(-1.0, 0.6, len(r2))
        rows += [r1, r2]
        words += [t1, t2]
        weights += [v1, v2]
    r = np.concatenate(rows)
    t = np.concatenate(words)
    v = np.concatenate(weights)
    order = np.lexsort((-v, t, r))
    r, t, v = r[order], t[order], v[order]
    first = np.ones(len(r), bool)
    first[1:] = (r[1:] != r[:-1]) | (t[1:] != t[:-1])
    code = np.rint(np.clip(v[first] / max_weight, 0, 1) * 255)
    keep = code > 0
    r, t = r[first][keep], t[first][keep]
    val = (code[keep].astype(np.float32) * np.float32(max_weight / 255)).astype(np.float32)
    indptr = np.zeros(n_items + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=n_items), out=indptr[1:])
    items = SparseBatch(indptr, active[t].astype(np.int32), val, vocab_size)
    import scipy.sparse as sps

    x = sps.csr_matrix((val, t, indptr), shape=(n_items, n_active))
    dense = np.empty((n_items, dim), np.float32)
    for a in range(0, n_items, 65536):
        part = np.asarray(x[a : a + 65536] @ u, np.float32)
        dense[a : a + len(part)] = _noisy(part, rng)
    q_ptr, q_idx, q_val, q_dense = [0], [], [], np.empty((n_queries, dim), np.float32)
    for j, src in enumerate(rng.integers(0, n_items, n_queries)):
        lo, hi = indptr[src], indptr[src + 1]
        tw, vw = t[lo:hi], val[lo:hi].astype(np.float64)
        pick = rng.choice(
            len(tw), min(len(tw), int(rng.integers(4, 11))), replace=False, p=vw / vw.sum()
        )
        qw = list(tw[pick])
        if rng.random() < 0.5:
            qw.append(rank_to_slot[rng.choice(n_active, p=pop)])
        qw = np.unique(np.asarray(qw, np.int64))
        qv = rng.lognormal(0.2, 0.4, len(qw)).astype(np.float32)
        q_idx.append(active[qw].astype(np.int32))
        q_val.append(qv)
        q_ptr.append(q_ptr[-1] + len(qw))
        q_dense[j] = qv @ u[qw]
    queries = SparseBatch(
        np.asarray(q_ptr, np.int64), np.concatenate(q_idx), np.concatenate(q_val), vocab_size
    )
    return Gallery(
        dense,
        items,
        _noisy(q_dense, rng),
        queries,
        f"{n_items:,} synthetic items and {n_queries} queries ({SYNTHETIC_MODEL}: Zipf-like "
        f"word pieces over {n_active} active ids, concepts, 8-bit weights; dense vectors "
        f"from the same words, seed {seed})",
    )


def _noisy(x: np.ndarray, rng: np.random.Generator, share: float = 0.5) -> np.ndarray:
    """``normalise(x + noise)`` with noise ``share`` times the mean row norm."""
    scale = float(np.linalg.norm(x, axis=1).mean()) * share / np.sqrt(x.shape[1])
    return l2_normalize(x + rng.standard_normal(x.shape).astype(np.float32) * scale)


def gallery_of_size(
    g: Gallery, n: int, seed: int, need_sparse: bool
) -> tuple[Vectors, dict[str, Any]]:
    """The first ``n`` gallery items: encoded ones first, then synthetic ones (deterministic)."""
    n_enc = len(g.dense)
    take = min(n, n_enc)
    dense = g.dense[:take]
    sparse = _take_sparse(g.sparse, np.arange(take)) if (need_sparse and g.sparse) else None
    info: dict[str, Any] = {"encoded": take, "synthetic": max(0, n - n_enc)}
    if n > n_enc:
        rng = np.random.default_rng(seed)
        parents = rng.integers(0, n_enc, size=n - n_enc)
        syn, sigma = synthesize_dense(g.dense, n - n_enc, rng, parents)
        dense = np.concatenate([dense, syn])
        info["dense_noise_sigma"] = sigma
        if need_sparse and g.sparse is not None:
            syn_s = synthesize_sparse(g.sparse, n - n_enc, np.random.default_rng(seed + 1), parents)
            sparse = SparseBatch.concat([sparse, syn_s]) if sparse is not None else syn_s
    return Vectors(dense=dense, sparse=sparse), info


# ----------------------------------------------------------------------------- one run
def _rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_kind(
    spec: IndexSpec,
    items: Vectors,
    queries: Vectors,
    exact_ids: np.ndarray,
    ctx: KindContext,
    k: int = 10,
    workdir: Path | None = None,
    progress: bool = False,
    sweep: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Measure one index kind over ``items`` (see module docstring); ``exact_ids`` from exact
    search. ``sweep``: query-time parameter values measured as the row's ``curve``."""
    from lexlens.eval.metrics import ann_recall_at_k
    from lexlens.progress import progress_bar

    n = len(items)
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    kind = create_kind(spec, ctx)
    step = 65536
    with progress_bar(total=n, desc=f"build {spec}", unit="item", enabled=progress) as bar:
        for a in range(0, n, step):
            b = min(n, a + step)
            part = Vectors(
                dense=None if items.dense is None else items.dense[a:b],
                sparse=None
                if items.sparse is None
                else _take_sparse(items.sparse, np.arange(a, b)),
            )
            kind.add(np.arange(a, b, dtype=np.int64), part)
            bar.update(b - a)
    build_s = time.perf_counter() - t0
    rss_delta = max(0, _rss_bytes() - rss0)

    tmp = Path(tempfile.mkdtemp(prefix="lexlens-bench-", dir=workdir))
    try:
        kind.save(tmp)
        disk = _dir_bytes(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    nq = len(queries)

    def one(i: int) -> Vectors:
        return Vectors(
            dense=None if queries.dense is None else queries.dense[i : i + 1],
            sparse=None if queries.sparse is None else _take_sparse(queries.sparse, np.array([i])),
        )

    singles = [one(i) for i in range(nq)]
    point = _latency_recall(kind, singles, k, SearchParams(), exact_ids)
    t = time.perf_counter()
    _, ids = kind.search(queries, k, SearchParams())
    batch_s = time.perf_counter() - t
    curve = []
    for name, value in sweep_points(spec, sweep or {}):
        pt = _latency_recall(kind, singles, k, _params(name, value), exact_ids)
        curve.append({"param": name, "value": value, **pt})
    return {
        "kind": str(spec),
        "n": n,
        # False: fewer items than the kind trains on, so they sit in its exact side buffer
        "trained": bool(getattr(kind, "trained", True)),
        "build_s": build_s,
        "disk_bytes": int(disk),
        "memory_bytes": int(kind.memory_bytes()),
        "rss_delta_bytes": int(rss_delta),
        **{key: v for key, v in point.items() if key != f"recall@{k}"},
        "qps": float(nq / batch_s) if batch_s > 0 else float("inf"),
        f"recall@{k}": ann_recall_at_k(ids, exact_ids, k),
        "curve": curve,
    }


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """faiss's OpenMP pool at one thread inside the block (single-query latency per core)."""
    import sys

    faiss = sys.modules.get("faiss")
    if faiss is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _latency_recall(
    kind: Any, singles: list[Vectors], k: int, params: SearchParams, exact_ids: np.ndarray
) -> dict[str, float]:
    """Single-query latency percentiles (one thread, after a warm-up) and recall@k of one
    parameter setting."""
    from lexlens.eval.metrics import ann_recall_at_k

    nq = len(singles)
    lat = np.empty(nq)
    got = np.full((nq, k), -1, np.int64)
    with _one_thread():
        for q in singles[: min(5, nq)]:  # warm-up
            kind.search(q, k, params)
        for i, q in enumerate(singles):
            t = time.perf_counter()
            _, ids = kind.search(q, k, params)
            lat[i] = time.perf_counter() - t
            got[i, : ids.shape[1]] = ids[0]
    return {
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p95_ms": float(np.percentile(lat, 95) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "mean_ms": float(lat.mean() * 1e3),
        f"recall@{k}": ann_recall_at_k(got, exact_ids, k),
    }


# ----------------------------------------------------------------------------- the benchmark
def check_memory(
    specs: Sequence[IndexSpec],
    sizes: Sequence[int],
    dim: int,
    nnz: float,
    n_queries: int,
    limit: int,
) -> None:
    """Raise a one-line :class:`UsageError` naming the first ``(N, kind)`` whose estimate exceeds ``limit``."""
    for n in sizes:
        for spec in specs:
            need = estimate_run_bytes(spec, n, dim, nnz, n_queries)
            if need > limit:
                raise UsageError(
                    f"N={n:,} {spec}: needs about {need / 2**30:.1f} GiB, more than the "
                    f"{limit / 2**30:.1f} GiB allowed (--max-memory); use smaller --sizes"
                )


def bench_search(
    cfg: BenchSearchConfig,
    gallery: Gallery | None = None,
    encoder: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns ``{"rows": [...], "meta": {...}}`` and writes ``cfg.out`` files.

    ``gallery`` (already encoded vectors) skips encoding; else ``encoder`` (or ``cfg.model``)
    encodes ``cfg.data`` or generated scenes (:func:`encode_gallery`).
    """
    from lexlens.eval.exact import exact_search

    sizes = sorted({int(s) for s in cfg.sizes})
    if not sizes or sizes[0] <= 0:
        raise UsageError(f"--sizes must be positive integers, got {cfg.sizes}")
    if cfg.queries <= 0 or cfg.k <= 0:
        raise UsageError("--queries and k must be positive")
    specs = [parse_spec(s) for s in cfg.kinds]
    if not specs:
        raise UsageError("no index kinds to benchmark")
    any_sparse = any(spec_needs(s)[1] for s in specs)
    limit = int(cfg.max_memory) if cfg.max_memory else int(0.8 * available_memory())
    # a first check with a guessed sparse density, before anything is encoded
    check_memory(specs, sizes, 512 if gallery is None else gallery.dim, 64.0, cfg.queries, limit)
    if gallery is None and encoder is None and cfg.model == SYNTHETIC_MODEL:
        gallery = synthesize_lexical_gallery(max(sizes), cfg.queries, seed=cfg.seed)
    if gallery is None:
        if encoder is None:
            from lexlens.models.registry import load_encoder

            encoder = load_encoder(cfg.model, extra_known=(SYNTHETIC_MODEL,))
        if any_sparse and not encoder.has_lexical:
            raise UsageError(f"{encoder.name} has no lexical output; drop the sparse/hybrid kinds")
        gallery = encode_gallery(
            encoder,
            cfg.data,
            min(cfg.encode, max(sizes)),
            cfg.queries,
            any_sparse,
            cfg.seed,
            cfg.batch_size,
            cfg.progress,
            cache_dir=cfg.out,
        )
    if any_sparse and gallery.sparse is None:
        raise UsageError("the sparse/hybrid kinds need lexical vectors; the gallery has none")
    check_memory(specs, sizes, gallery.dim, gallery.avg_nnz(), cfg.queries, limit)

    queries = Vectors(
        dense=gallery.query_dense[: cfg.queries],
        sparse=None
        if gallery.query_sparse is None
        else _take_sparse(
            gallery.query_sparse, np.arange(min(cfg.queries, len(gallery.query_sparse)))
        ),
    )
    vocab = gallery.sparse.vocab_size if gallery.sparse is not None else 0
    ctx = KindContext(dim=gallery.dim, vocab_size=vocab)
    rows: list[dict[str, Any]] = []
    sizes_info: dict[str, Any] = {}
    workdir = Path(cfg.out) if cfg.out else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        items, info = gallery_of_size(gallery, n, cfg.seed + n, any_sparse)
        sizes_info[str(n)] = info
        exact_cache: dict[tuple[bool, bool, str], np.ndarray] = {}
        for spec in specs:
            dense, sparse = spec_needs(spec)
            key = (dense, sparse, str(spec) if (dense and sparse) else "")
            q = Vectors(
                dense=queries.dense if dense else None, sparse=queries.sparse if sparse else None
            )
            it = Vectors(
                dense=items.dense if dense else None, sparse=items.sparse if sparse else None
            )
            if key not in exact_cache:
                exact_cache[key] = exact_search(spec, it, q, cfg.k, ctx)[1]
            if log:
                log(f"N={n:,} {spec} ...")
            row = bench_kind(
                spec, it, q, exact_cache[key], ctx, cfg.k, workdir, cfg.progress, cfg.sweep
            )
            row["encoded"], row["synthetic"] = info["encoded"], info["synthetic"]
            rows.append(row)
            if log:
                log(_row_line(row, cfg.k))
    meta = {
        "model": cfg.model,
        "dim": gallery.dim,
        "vocab_size": vocab,
        "avg_nnz": gallery.avg_nnz(),
        "queries": len(queries),
        "k": cfg.k,
        "vectors": gallery.source,
        "sizes": sizes_info,
        "synthetic_method": (
            "dense: random encoded vector + isotropic Gaussian noise (sigma = 0.5 x median "
            "nearest-neighbour distance / sqrt(dim)), renormalised; sparse: a random encoded row "
            "with each term kept with p=0.9, weights x exp(N(0, 0.1^2)), plus Poisson(1) extra "
            "terms drawn by document frequency"
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "max_memory_bytes": limit,
        "sweep": cfg.sweep,
        "latency_threads": 1,
    }
    add_flat_ratios(rows)
    result = {"rows": rows, "meta": meta, "comparison": compare_at_recall(rows, cfg.k)}
    if cfg.out:
        write_outputs(result, Path(cfg.out))
    return result


def curve_points(row: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """A row's latency/recall points: its default setting, then its sweep ``curve``; each with
    ``param``, ``value`` (``None`` when the kind has no such default), ``p50_ms``, ``recall``."""
    spec = parse_spec(row["kind"])
    name = next((n for n, v in SWEEP_PARAMS.items() if v[1] == spec.kind), None)
    default = _default_value(spec, name) if name else None
    pts = [{"param": name, "value": default, "default": True, "p50_ms": row["p50_ms"],
            "recall": row[f"recall@{k}"]}]  # fmt: skip
    for c in row.get("curve", []):
        pts.append({"param": c["param"], "value": c["value"], "default": False,
                    "p50_ms": c["p50_ms"], "recall": c[f"recall@{k}"]})  # fmt: skip
    return pts


def compare_at_recall(rows: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """For each ``N`` and each point of each ``sparse`` kind: each ``hnsw`` kind's latency at
    the smallest efSearch whose recall@k is at least the sparse point's, or (``reached``
    False) at its best recall when no efSearch measured reaches it."""
    out = []
    for sp in rows:
        if parse_spec(sp["kind"]).kind != "sparse":
            continue
        for hn in rows:
            if hn["n"] != sp["n"] or parse_spec(hn["kind"]).kind != "hnsw":
                continue
            h_pts = sorted(
                (p for p in curve_points(hn, k) if p["param"] == "ef"), key=lambda p: p["value"]
            )
            for p in curve_points(sp, k):
                ok = [h for h in h_pts if h["recall"] >= p["recall"]]
                best = ok[0] if ok else max(h_pts, key=lambda h: (h["recall"], -h["value"]))
                out.append(
                    {
                        "n": sp["n"],
                        "sparse": sp["kind"],
                        "budget": p["value"],
                        "sparse_p50_ms": p["p50_ms"],
                        "sparse_recall": p["recall"],
                        "hnsw": hn["kind"],
                        "ef": best["value"],
                        "hnsw_p50_ms": best["p50_ms"],
                        "hnsw_recall": best["recall"],
                        "reached": bool(ok),
                        "sparse_faster": p["p50_ms"] < best["p50_ms"],
                    }
                )
    return out


def add_flat_ratios(rows: list[dict[str, Any]]) -> None:
    """Give each row ``faster_than_flat`` (flat's p50 / its p50) and ``smaller_than_flat``
    (flat's bytes on disk / its bytes) when a ``flat`` row of the same ``N`` exists."""
    flat = {r["n"]: r for r in rows if r["kind"] == "flat"}
    for r in rows:
        f = flat.get(r["n"])
        if f is not None:
            r["faster_than_flat"] = f["p50_ms"] / r["p50_ms"] if r["p50_ms"] > 0 else None
            r["smaller_than_flat"] = f["disk_bytes"] / r["disk_bytes"] if r["disk_bytes"] else None


def _ratio(v: float | None) -> str:
    return "" if v is None else f"{v:,.1f}x"


def _row_line(row: dict[str, Any], k: int) -> str:
    return (
        f"  build {row['build_s']:.2f}s  {row['memory_bytes'] / 2**20:.1f} MiB  "
        f"p50 {row['p50_ms']:.3f} ms  {row['qps']:.0f} q/s  recall@{k} {row[f'recall@{k}']:.1f}"
    )


# ----------------------------------------------------------------------------- gallery
def encode_gallery(
    encoder: Any,
    data: str | None,
    n_items: int,
    n_queries: int,
    lexical: bool,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    cache_dir: str | None = None,
) -> Gallery:
    """Encode up to ``n_items`` images of ``data`` (or of freshly generated scenes) and
    ``n_queries`` of their captions. With ``cache_dir`` the vectors are kept in
    ``cache_dir/vectors-*.npz`` and reused by later runs with the same arguments."""
    cache = None
    if cache_dir:
        import hashlib

        from lexlens.index.index import model_fingerprint

        # the fingerprint: a retrained model under the same name gets new vectors
        fp = model_fingerprint(encoder)
        tag = f"{encoder.name}|{fp}|{data}|{n_items}|{n_queries}|{lexical}|{seed}"

        cache = Path(cache_dir) / f"vectors-{hashlib.sha1(tag.encode()).hexdigest()[:12]}.npz"
        if cache.is_file():
            return _load_gallery(cache)
    tmp = None
    if data is None:
        from lexlens.data.scenes import generate_scenes

        tmp = Path(tempfile.mkdtemp(prefix="lexlens-bench-scenes-"))
        generate_scenes(tmp, n=n_items, seed=seed, split="test", progress=progress)
    try:
        images, captions = _read_gallery(str(tmp) if tmp else str(data), n_items)
        source = f"generated scenes (seed {seed})" if tmp else str(data)
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(captions), size=min(n_queries, len(captions)), replace=False)
        texts = [captions[i] for i in pick]
        dense = encoder.encode_images(images, batch_size=batch_size, progress=progress)
        qd = encoder.encode_texts(texts, progress=progress)
        sparse = qs = None
        if lexical:
            sparse = encoder.encode_images_lexical(images, batch_size=batch_size, progress=progress)
            qs = encoder.encode_texts_lexical(texts, progress=progress)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    g = Gallery(
        dense,
        sparse,
        qd,
        qs,
        f"{len(images)} images of {source} encoded by {encoder.name}; "
        f"queries: {len(texts)} of their captions",
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        _save_gallery(g, cache)
    return g


def _read_gallery(data: str, n_items: int) -> tuple[list[Any], list[str]]:
    """Up to ``n_items`` image paths of a dataset and all their captions."""
    from lexlens.eval.protocol import load_eval_set

    es = load_eval_set(data, limit=n_items)
    return list(es.images), es.texts


def _save_gallery(g: Gallery, path: Path) -> None:
    arrays: dict[str, Any] = {
        "dense": g.dense,
        "query_dense": g.query_dense,
        "source": np.array(g.source),
    }
    for name, b in (("sparse", g.sparse), ("query_sparse", g.query_sparse)):
        if b is not None:
            arrays[f"{name}_indptr"] = b.indptr
            arrays[f"{name}_indices"] = b.indices
            arrays[f"{name}_values"] = b.values
            arrays[f"{name}_vocab_size"] = np.array(b.vocab_size)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_gallery(path: Path) -> Gallery:
    z = np.load(path)

    def sb(name: str) -> SparseBatch | None:
        if f"{name}_indptr" not in z:
            return None
        return SparseBatch(
            z[f"{name}_indptr"],
            z[f"{name}_indices"],
            z[f"{name}_values"],
            int(z[f"{name}_vocab_size"]),
        )

    return Gallery(
        z["dense"],
        sb("sparse"),
        z["query_dense"],
        sb("query_sparse"),
        str(z["source"]) + " (cached)",
    )


# ----------------------------------------------------------------------------- outputs
_COLUMNS = [
    ("N", lambda r, k: f"{r['n']:,}"),
    ("kind", lambda r, k: f"`{r['kind']}`" + ("" if r.get("trained", True) else " *")),
    ("build s", lambda r, k: f"{r['build_s']:.2f}"),
    ("disk MiB", lambda r, k: f"{r['disk_bytes'] / 2**20:.2f}"),
    ("mem MiB", lambda r, k: f"{r['memory_bytes'] / 2**20:.2f}"),
    ("p50 ms", lambda r, k: f"{r['p50_ms']:.3f}"),
    ("p95 ms", lambda r, k: f"{r['p95_ms']:.3f}"),
    ("p99 ms", lambda r, k: f"{r['p99_ms']:.3f}"),
    ("batch q/s", lambda r, k: f"{r['qps']:,.0f}"),
    ("recall@k", lambda r, k: f"{r[f'recall@{k}']:.1f}"),
    ("p50 vs flat", lambda r, k: _ratio(r.get("faster_than_flat"))),
    ("disk vs flat", lambda r, k: _ratio(r.get("smaller_than_flat"))),
]


def markdown_table(result: dict[str, Any]) -> str:
    """The rows as a markdown table, with how the vectors were produced underneath."""
    k = result["meta"]["k"]
    head = [name.replace("@k", f"@{k}") for name, _ in _COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append("| " + " | ".join(f(r, k) for _, f in _COLUMNS) + " |")
    meta = result["meta"]
    lines.append("")
    lines.append(f"Vectors: {meta['vectors']}.")
    syn = {n: i for n, i in meta["sizes"].items() if i["synthetic"]}
    if syn:
        parts = ", ".join(
            f"N={int(n):,}: {i['encoded']:,} encoded + {i['synthetic']:,} synthetic"
            for n, i in syn.items()
        )
        lines.append(f"Synthetic vectors ({parts}): {meta['synthetic_method']}.")
    if any(not r.get("trained", True) for r in result["rows"]):
        lines.append(
            "\\* not trained: fewer items than the kind trains on, so they are searched exactly."
        )
    lines.append(
        f"{meta['queries']} queries; latency is one query at a time on one thread, q/s one batch "
        f"of all queries; recall@{k} against exact search; {meta['machine']['cpus']} CPUs."
    )
    curves = [r for r in result["rows"] if r.get("curve")]
    if curves:
        lines += ["", "Latency/recall curves (query-time parameters passed per call):", ""]
        lines += ["| N | kind | setting | p50 ms | p95 ms | mean ms | recall@k |".replace("@k", f"@{k}"),
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in curves:
            pts = [("default", r)] + [(f"{c['param']}={c['value']:g}", c) for c in r["curve"]]
            for label, c in pts:
                lines.append(
                    f"| {r['n']:,} | `{r['kind']}` | {label} | {c['p50_ms']:.3f} | "
                    f"{c['p95_ms']:.3f} | {c.get('mean_ms', float('nan')):.3f} | "
                    f"{c[f'recall@{k}']:.1f} |"
                )
    comp = result.get("comparison") or []
    if comp:
        lines += [
            "",
            "Sparse vs HNSW at equal or better recall (single-query p50, one thread):",
            "",
        ]
        lines += [
            "| N | sparse setting | sparse p50 ms | recall | HNSW | smallest ef reaching it | "
            "HNSW p50 ms | HNSW recall | sparse faster |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in comp:
            ef = f"{c['ef']:g}" if c["reached"] else f"none (best: ef={c['ef']:g})"
            lines.append(
                f"| {c['n']:,} | `{c['sparse']}` budget={c['budget']:g} | "
                f"{c['sparse_p50_ms']:.3f} | {c['sparse_recall']:.1f} | `{c['hnsw']}` | {ef} | "
                f"{c['hnsw_p50_ms']:.3f} | {c['hnsw_recall']:.1f} | "
                f"{'yes' if c['sparse_faster'] else 'no'} "
                f"({c['hnsw_p50_ms'] / max(c['sparse_p50_ms'], 1e-9):.2f}x) |"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """PNG: single-query p50 latency and index memory against ``N``, one line per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_curves = any(r.get("curve") for r in result["rows"])
    fig, axes = plt.subplots(1, 3 if has_curves else 2, figsize=(16 if has_curves else 11, 4))
    ax1, ax2 = axes[0], axes[1]
    kinds = list(dict.fromkeys(r["kind"] for r in result["rows"]))
    for kind in kinds:
        rows = sorted((r for r in result["rows"] if r["kind"] == kind), key=lambda r: r["n"])
        ns = [r["n"] for r in rows]
        ax1.plot(ns, [r["p50_ms"] for r in rows], marker="o", label=kind)
        ax2.plot(ns, [max(r["memory_bytes"], 1) / 2**20 for r in rows], marker="o", label=kind)
    for ax, title, unit in (
        (ax1, "single-query latency (p50)", "ms"),
        (ax2, "index memory", "MiB"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("collection size N")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    if has_curves:
        ax3 = axes[2]
        k = result["meta"]["k"]
        n_max = max(r["n"] for r in result["rows"])
        for r in result["rows"]:
            if r["n"] != n_max:
                continue
            pts = sorted(curve_points(r, k), key=lambda p: p["p50_ms"])
            ax3.plot([p["p50_ms"] for p in pts], [p["recall"] for p in pts], marker="o",
                     label=r["kind"])  # fmt: skip
        ax3.set_xscale("log")
        ax3.set_xlabel("p50 ms (one thread)")
        ax3.set_ylabel(f"recall@{k}")
        ax3.set_title(f"latency / recall at N={n_max:,}")
        ax3.grid(True, which="both", alpha=0.3)
        ax3.legend(fontsize=8)
    fig.suptitle(f"lexlens bench search: {result['meta']['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict[str, Any], out: Path) -> dict[str, str]:
    """Write ``bench_search.json``, ``bench_search.md`` and ``bench_search.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "bench_search.json",
        "markdown": out / "bench_search.md",
        "plot": out / "bench_search.png",
    }
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text(markdown_table(result) + "\n")
    plot(result, paths["plot"])
    return {k: str(v) for k, v in paths.items()}
