"""Compiled kernels (numba) of the ``sparse`` index kind: segment building and block-max search.

Imported only when a sparse index is built or searched (compiling the kernels costs a few
seconds the first time; numba caches them on disk afterwards). The data layout they work
on is described in :mod:`lexlens.index.sparse`.

Scores are accumulated in ``float64`` over the query words in ascending vocabulary order
and rounded to ``float32`` once; the product of two ``float32`` numbers is exact in
``float64``. Any other code that accumulates the same way (the tests' brute force) gets
bit-identical scores, and a block's upper bound (the same sum over per-block maxima) is
never below the score of a document in it, because rounding is monotonic.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = [
    "build_postings",
    "build_bounds",
    "decode_postings",
    "row_signatures",
    "search_segment",
    "heap_sorted",
    "lookup_weights",
]

_JIT = {"cache": True, "nogil": True, "boundscheck": False}


# ----------------------------------------------------------------------------- heap
@nb.njit(inline="always", **_JIT)
def _better(s1: float, i1: int, s2: float, i2: int) -> bool:
    """Result order: higher score first, then lower id."""
    return s1 > s2 or (s1 == s2 and i1 < i2)


@nb.njit(**_JIT)
def _heap_push(hs, hi, size: int, k: int, s: np.float32, i: int) -> int:  # pragma: no cover
    """Keep the best ``k`` of ``(score, id)`` in a heap whose root is the worst kept entry."""
    if size < k:
        pos = size
        size += 1
        while pos > 0:
            parent = (pos - 1) >> 1
            if _better(hs[parent], hi[parent], s, i):  # parent better -> move it down
                hs[pos] = hs[parent]
                hi[pos] = hi[parent]
                pos = parent
            else:
                break
        hs[pos] = s
        hi[pos] = i
        return size
    if not _better(s, i, hs[0], hi[0]):
        return size
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and _better(hs[c], hi[c], hs[c + 1], hi[c + 1]):
            c += 1  # the worse child
        if _better(s, i, hs[c], hi[c]):  # child worse than the new entry -> move it up
            hs[pos] = hs[c]
            hi[pos] = hi[c]
            pos = c
        else:
            break
    hs[pos] = s
    hi[pos] = i
    return size


@nb.njit(**_JIT)
def heap_sorted(hs, hi, sizes, out_s, out_i):  # pragma: no cover
    """Per query row: the heap's entries in result order into ``out_s``/``out_i`` (rest untouched)."""
    for r in range(hs.shape[0]):
        n = sizes[r]
        s = hs[r, :n].copy()
        i = hi[r, :n].copy()
        # insertion sort is fine for the small k a heap holds; larger k use argsort
        if n <= 64:
            for a in range(1, n):
                vs = s[a]
                vi = i[a]
                b = a - 1
                while b >= 0 and _better(vs, vi, s[b], i[b]):
                    s[b + 1] = s[b]
                    i[b + 1] = i[b]
                    b -= 1
                s[b + 1] = vs
                i[b + 1] = vi
            out_s[r, :n] = s
            out_i[r, :n] = i
        else:
            order = np.argsort(i, kind="mergesort")
            s2 = s[order]
            i2 = i[order]
            order2 = np.argsort(-s2.astype(np.float64), kind="mergesort")
            out_s[r, :n] = s2[order2]
            out_i[r, :n] = i2[order2]


# ----------------------------------------------------------------------------- build
@nb.njit(**_JIT)
def build_postings(
    indptr, terms, codes, n_terms: int, block: int, code_dtype_probe
):  # pragma: no cover
    """Invert a CSR segment (rows in internal order, ``terms`` local ids, ``codes`` weights).

    Returns ``tptr, post_off, post_code, pptr, pair_block, pair_max, pair_cnt``: per local
    term its postings sorted by document (in-block offset + weight code) and its blocks
    (block id, largest code in the block, number of postings in the block).
    """
    n_docs = indptr.shape[0] - 1
    nnz = terms.shape[0]
    tptr = np.zeros(n_terms + 1, np.int64)
    for j in range(nnz):
        tptr[terms[j] + 1] += 1
    for t in range(n_terms):
        tptr[t + 1] += tptr[t]
    fill = tptr[:-1].copy()
    post_doc = np.empty(nnz, np.int64)
    post_off = np.empty(nnz, np.uint8)
    post_code = np.empty(nnz, code_dtype_probe.dtype)
    for d in range(n_docs):
        for j in range(indptr[d], indptr[d + 1]):
            t = terms[j]
            p = fill[t]
            fill[t] += 1
            post_doc[p] = d
            post_off[p] = d % block
            post_code[p] = codes[j]
    # blocks per term
    pptr = np.zeros(n_terms + 1, np.int64)
    for t in range(n_terms):
        cnt = 0
        last = -1
        for p in range(tptr[t], tptr[t + 1]):
            b = post_doc[p] // block
            if b != last:
                cnt += 1
                last = b
        pptr[t + 1] = pptr[t] + cnt
    n_pairs = pptr[n_terms]
    pair_block = np.empty(n_pairs, np.int64)
    pair_max = np.zeros(n_pairs, code_dtype_probe.dtype)
    pair_cnt = np.zeros(n_pairs, np.int64)
    for t in range(n_terms):
        q = pptr[t] - 1
        last = -1
        for p in range(tptr[t], tptr[t + 1]):
            b = post_doc[p] // block
            if b != last:
                q += 1
                pair_block[q] = b
                last = b
            pair_cnt[q] += 1
            if post_code[p] > pair_max[q]:
                pair_max[q] = post_code[p]
    return tptr, post_off, post_code, pptr, pair_block, pair_max, pair_cnt


# ----------------------------------------------------------------------------- search
#: blocks between two stored posting offsets (dense words) / pairs between two (other words)
CHECK = 32


@nb.njit(**_JIT)
def build_bounds(
    tptr, pptr, pair_block, pair_max, pair_cnt, bound, n_blocks, dense_min
):  # pragma: no cover
    """Upper-bound arrays of a segment.

    A word with at least ``dense_min`` blocks is *dense*: it gets one row of ``dub`` (bound code
    of its largest weight per block, 0 where absent), ``dcnt`` (postings per block) and
    ``dchk`` (absolute index of its first posting in every ``CHECK``-th block). Other words
    keep their pair lists; ``pchk`` holds the absolute posting index of every ``CHECK``-th pair.
    ``bound[code]`` is the uniform 8-bit upper bound of a weight code.
    """
    n_terms = tptr.shape[0] - 1
    dense_of = np.full(n_terms, -1, np.int32)
    nd = 0
    for t in range(n_terms):
        if pptr[t + 1] - pptr[t] >= dense_min:
            dense_of[t] = nd
            nd += 1
    n_chk = n_blocks // CHECK + 1
    dub = np.zeros((nd, n_blocks), np.uint8)
    dcnt = np.zeros((nd, n_blocks), np.uint8)
    dchk = np.zeros((nd, n_chk), np.int64)
    for t in range(n_terms):
        d = dense_of[t]
        if d < 0:
            continue
        for p in range(pptr[t], pptr[t + 1]):
            b = pair_block[p]
            dub[d, b] = bound[pair_max[p]]
            dcnt[d, b] = pair_cnt[p]
        run = tptr[t]
        for b in range(n_blocks):
            if b % CHECK == 0:
                dchk[d, b // CHECK] = run
            run += dcnt[d, b]
    n_pairs = pair_block.shape[0]
    pchk = np.zeros(n_pairs // CHECK + 1, np.int64)
    run = 0
    for p in range(n_pairs):
        if p % CHECK == 0:
            pchk[p // CHECK] = run
        run += pair_cnt[p]
    return dense_of, dub, dcnt, dchk, pchk


@nb.njit(inline="always", **_JIT)
def _block_postings(
    t, d, js, b, pidx, tptr, pptr, pair_block, pair_cnt, dcnt, dchk, pchk
):  # pragma: no cover
    """(first posting, count) of word ``t`` (dense row ``d`` or -1) in block ``b``.

    Other words: ``pidx[js, b]`` holds the word's pair for ``b`` when it has one (written by
    this query's bound pass; a stale entry never passes the check below, or names the same
    pair); ``js < 0`` falls back to a binary search.
    """
    if d >= 0:
        c = dcnt[d, b]
        if c == 0:
            return np.int64(0), np.int64(0)
        start = dchk[d, b // CHECK]
        for x in range(b - b % CHECK, b):
            start += dcnt[d, x]
        return np.int64(start), np.int64(c)
    if js >= 0:
        lo = np.int64(pidx[js, b])
        if lo < pptr[t] or lo >= pptr[t + 1] or pair_block[lo] != b:
            return np.int64(0), np.int64(0)
    else:
        lo = pptr[t]
        hi = pptr[t + 1]
        while lo < hi:
            mid = (lo + hi) >> 1
            if pair_block[mid] < b:
                lo = mid + 1
            else:
                hi = mid
        if lo >= pptr[t + 1] or pair_block[lo] != b:
            return np.int64(0), np.int64(0)
    start = pchk[lo // CHECK]
    for x in range(lo - lo % CHECK, lo):
        start += pair_cnt[x]
    return np.int64(start), np.int64(pair_cnt[lo])


@nb.njit(**_JIT)
def _score_block(
    b,
    loc,
    dloc,
    jsl,
    pidx,
    qw,
    m,
    tptr,
    pptr,
    pair_block,
    pair_cnt,
    dcnt,
    dchk,
    pchk,
    post_off,
    post_code,
    codebook,
    acc,
    block,
    n_docs,
    dead,
    ids,
    hs_r,
    hi_r,
    size,
    k,
):  # pragma: no cover
    scored = 0
    for j in range(m):
        start, c = _block_postings(
            loc[j], dloc[j], jsl[j], b, pidx, tptr, pptr, pair_block, pair_cnt, dcnt, dchk, pchk
        )
        if c == 0:
            continue
        w = qw[j]
        for p in range(start, start + c):
            acc[post_off[p]] += w * np.float64(codebook[post_code[p]])
        scored += c
    base = b * block
    for off in range(block):
        v = acc[off]
        if v > 0.0:
            acc[off] = 0.0
            dd = base + off
            if (dead[dd >> 3] >> (dd & 7)) & 1:
                continue
            size = _heap_push(hs_r, hi_r, size, k, np.float32(v), np.int64(ids[dd]))
    return scored, size


@nb.njit(**_JIT)
def search_segment(  # pragma: no cover
    q_indptr,
    q_terms,
    q_weights,
    seg_terms,
    tptr,
    post_off,
    post_code,
    pptr,
    pair_block,
    pair_max,
    pair_cnt,
    codebook,
    bound,
    dense_of,
    dub,
    dcnt,
    dchk,
    pchk,
    ids,
    dead,
    n_docs,
    block,
    hs,
    hi,
    sizes,
    k,
    budget,
    stats,
    ub,
    cand_b,
    cand_v,
    pidx,
):
    """Block-max search of one segment for every query row, updating the per-query heaps.

    ``q_terms`` (vocabulary ids, ascending per row) / ``q_weights`` (``float32``) is the query
    batch in CSR form; ``hs``/``hi``/``sizes`` are the heaps (``[n_q, k]`` scores and ids, and
    how full each is) carried over from earlier segments.

    1. Upper bounds of all blocks in integers: ``sum_w ceil(q_w / u_q) * bound(max_w(block))``
       (dense words as one vectorised pass each, other words through their pair lists).
    2. A threshold estimated from a sample of the bounds picks the few most promising
       blocks; they are scored first.
    3. Every other block whose bound reaches the ``k``-th score is scored, best bound first;
       the search stops at the first block below it (exact), or once ``budget`` (a share of
       the query's postings in this segment; ``>= 1``: no limit) has been scored.

    ``stats[r]`` receives (postings scored, blocks scored, postings in the query's lists).
    ``ub`` (``uint32``), ``cand_b`` and ``cand_v`` (``int64``) are scratch arrays of at least
    one entry per block, ``pidx`` (``int32 [w, blocks]``) one row per word without dense
    bounds (up to ``w`` of them); they are reused between calls (allocating them costs more
    than the search) and need no clearing.
    """
    n_blocks = (n_docs + block - 1) // block
    n_seg_terms = seg_terms.shape[0]
    vmax = np.float64(codebook[codebook.shape[0] - 1])
    acc = np.zeros(block, np.float64)
    for r in range(q_indptr.shape[0] - 1):
        a, z = q_indptr[r], q_indptr[r + 1]
        nq = z - a
        loc = np.empty(nq, np.int64)
        dloc = np.empty(nq, np.int64)
        qw = np.empty(nq, np.float64)
        m = 0
        total = 0
        qmax = 0.0
        for j in range(a, z):
            t = np.searchsorted(seg_terms, q_terms[j])
            if t < n_seg_terms and seg_terms[t] == q_terms[j] and q_weights[j] > 0:
                loc[m] = t
                dloc[m] = dense_of[t]
                qw[m] = np.float64(q_weights[j])
                qmax = max(qmax, qw[m])
                total += tptr[t + 1] - tptr[t]
                m += 1
        if m == 0:
            continue
        # 1. integer upper bounds
        qunit = qmax / 255.0
        ub[:n_blocks] = 0
        jsl = np.full(m, -1, np.int64)
        n_sparse = 0
        for j in range(m):
            qq = np.uint32(min(255.0, np.ceil(qw[j] / qunit)))
            d = dloc[j]
            if d >= 0:
                row = dub[d]
                for b in range(n_blocks):
                    ub[b] += qq * np.uint32(row[b])
            else:
                t = loc[j]
                if n_sparse < pidx.shape[0]:
                    jsl[j] = n_sparse
                    prow = pidx[n_sparse]
                    for p in range(pptr[t], pptr[t + 1]):
                        b = pair_block[p]
                        ub[b] += qq * np.uint32(bound[pair_max[p]])
                        prow[b] = p
                    n_sparse += 1
                else:
                    for p in range(pptr[t], pptr[t + 1]):
                        ub[pair_block[p]] += qq * np.uint32(bound[pair_max[p]])
        # a bound in score units, with a margin for the rounding of the float sums
        unit = qunit * vmax / 255.0 * (1.0 + 1e-6)
        top = np.uint32(0)
        for b in range(n_blocks):
            top = max(top, ub[b])
        if top == 0:
            continue
        # no limit in exact mode (total + 1 is never reached)
        limit = total + 1 if budget >= 1.0 else max(np.int64(budget * total), 1)
        size = sizes[r]
        hs_r = hs[r]
        hi_r = hi[r]
        scored = 0
        blocks_done = 0
        # 2. the most promising blocks first: a threshold ``cut`` with at least ``want``
        # blocks above it, estimated from a strided sample and checked by counting;
        # 3. then the others whose bound reaches the k-th score; each phase best bound first
        want = max(2 * k, 16)
        stride = max(1, n_blocks // 1024)
        sample = np.sort(ub[:n_blocks:stride])[::-1]
        rank = want // stride + 1
        cut = np.uint32(1)
        while rank < sample.shape[0]:
            cut = max(np.uint32(1), sample[rank])
            got = 0
            for b in range(n_blocks):
                if ub[b] >= cut:
                    got += 1
            if got >= want:
                break
            cut = np.uint32(1)
            rank *= 4
        for phase in range(2):
            lo = cut
            hi_v = np.uint32(top)
            if phase == 1:
                if cut <= 1:
                    break
                hi_v = cut - 1
                lo = np.uint32(1)
                if size == k:
                    lo = np.uint32(min(np.float64(hi_v), max(1.0, np.floor(hs_r[0] / unit))))
            g = 0
            for b in range(n_blocks):
                v = ub[b]
                if v >= lo and v <= hi_v:
                    cand_b[g] = b
                    cand_v[g] = -np.int64(v)
                    g += 1
            order = np.argsort(cand_v[:g], kind="mergesort")
            for o in order:
                b = cand_b[o]
                if size == k and np.float64(ub[b]) * unit < hs_r[0]:
                    break
                sc, size = _score_block(
                    b, loc, dloc, jsl, pidx, qw, m, tptr, pptr, pair_block, pair_cnt, dcnt, dchk, pchk,
                    post_off, post_code, codebook, acc, block, n_docs, dead, ids, hs_r, hi_r,
                    size, k,
                )  # fmt: skip
                scored += sc
                blocks_done += 1
                if scored >= limit:
                    break
            if scored >= limit:
                break
        sizes[r] = size
        stats[r, 0] += scored
        stats[r, 1] += blocks_done
        stats[r, 2] += total


@nb.njit(**_JIT)
def decode_postings(tptr, pptr, pair_block, pair_cnt, post_off, block):  # pragma: no cover
    """Internal document of every posting (inverse of :func:`build_postings`'s layout)."""
    docs = np.empty(post_off.shape[0], np.int64)
    for t in range(tptr.shape[0] - 1):
        x = tptr[t]
        for p in range(pptr[t], pptr[t + 1]):
            base = np.int64(pair_block[p]) * block
            for _ in range(pair_cnt[p]):
                docs[x] = base + post_off[x]
                x += 1
    return docs


@nb.njit(**_JIT)
def row_signatures(indptr, terms, codes, width):  # pragma: no cover
    """Per row, its ``width`` heaviest terms (ties by lower term; ``-1`` pads): the sort key
    that places documents with the same dominant words in the same blocks."""
    n = indptr.shape[0] - 1
    out = np.full((n, width), -1, np.int64)
    best_c = np.empty(width, np.int64)
    for r in range(n):
        for x in range(width):
            best_c[x] = -1
        for j in range(indptr[r], indptr[r + 1]):
            c = np.int64(codes[j])
            t = np.int64(terms[j])
            # insert (c desc, t asc) into the small sorted list
            pos = width
            while pos > 0 and (
                c > best_c[pos - 1] or (c == best_c[pos - 1] and t < out[r, pos - 1])
            ):
                pos -= 1
            if pos < width:
                for y in range(width - 1, pos, -1):
                    best_c[y] = best_c[y - 1]
                    out[r, y] = out[r, y - 1]
                best_c[pos] = c
                out[r, pos] = t
    return out


@nb.njit(**_JIT)
def lookup_weights(  # pragma: no cover
    q_vocab, seg_terms, tptr, post_off, post_code, pptr, pair_block, pair_cnt, codebook, doc, block
):
    """The stored weight of each query word ``q_vocab`` in internal document ``doc`` (0 if absent)."""
    out = np.zeros(q_vocab.shape[0], np.float32)
    b = doc // block
    off = doc % block
    for j in range(q_vocab.shape[0]):
        t = np.searchsorted(seg_terms, q_vocab[j])
        if t >= seg_terms.shape[0] or seg_terms[t] != q_vocab[j]:
            continue
        lo = pptr[t]
        hi_ = pptr[t + 1]
        run = tptr[t]
        # linear over the term's blocks is fine for explanations (a handful of results)
        for p in range(lo, hi_):
            if pair_block[p] == b:
                for x in range(run, run + pair_cnt[p]):
                    if post_off[x] == off:
                        out[j] = codebook[post_code[x]]
                break
            if pair_block[p] > b:
                break
            run += pair_cnt[p]
    return out
