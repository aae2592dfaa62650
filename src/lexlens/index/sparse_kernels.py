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
    "decode_postings",
    "group_by_doc",
    "row_signatures",
    "search_segment",
    "heap_sorted",
    "lookup_weights",
    "CHECK",
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


# ----------------------------------------------------------------------------- layout
#: blocks between two stored absolute posting offsets of a dense row
CHECK = 32
#: postings between two checkpoints of a gap list
LIST_CHECK = 64
#: number of set bits of every byte
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


@nb.njit(inline="always", **_JIT)
def _dense_start(d, b, dmask, dchk):  # pragma: no cover
    """First posting of dense row ``d`` in block ``b``."""
    start = np.int64(dchk[d, b // CHECK])
    for x in range(b - b % CHECK, b):
        start += _POPCOUNT[dmask[d, x]]
    return start


@nb.njit(inline="always", **_JIT)
def _varint(gaps, pos):  # pragma: no cover
    """Decode one LEB128 number at ``gaps[pos]``; returns (value, next position)."""
    v = np.int64(0)
    shift = 0
    while True:
        byte = np.int64(gaps[pos])
        pos += 1
        v |= (byte & 127) << shift
        if byte < 128:
            return v, pos
        shift += 7


@nb.njit(**_JIT)
def _list_find(t, b, block, tptr, sptr, gaps, cptr, cdoc, cpos):  # pragma: no cover
    """(first posting, document mask) of list word ``t`` in block ``b``; mask 0 if absent.

    Binary search for the last checkpoint at or before the block, then decodes at most
    ``LIST_CHECK`` gaps.
    """
    lo = cptr[t]
    hi = cptr[t + 1]
    first_doc = np.int64(b) * block
    if lo == hi:
        return np.int64(0), 0
    # largest checkpoint c with (previous document + 1) <= first_doc
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if np.int64(cdoc[mid]) <= first_doc:
            lo = mid
        else:
            hi = mid
    x = tptr[t] + (lo - cptr[t]) * LIST_CHECK
    doc = np.int64(cdoc[lo]) - 1
    pos = np.int64(cpos[lo])
    end = tptr[t + 1]
    mask = 0
    start = np.int64(0)
    while x < end:
        g, pos = _varint(gaps, pos)
        doc += g
        if doc >= first_doc + block:
            break
        if doc >= first_doc:
            if mask == 0:
                start = x
            mask |= 1 << (doc - first_doc)
        x += 1
    return start, mask


@nb.njit(inline="always", **_JIT)
def _ext_id(ids, dd):  # pragma: no cover
    """External id of internal document ``dd`` (little-endian bytes, ``ids[dd, :]``)."""
    v = np.uint64(0)
    for j in range(ids.shape[1]):
        v |= np.uint64(ids[dd, j]) << np.uint64(8 * j)
    return np.int64(v)


# ----------------------------------------------------------------------------- build
@nb.njit(**_JIT)
def build_postings(
    indptr, terms, codes, n_terms, block, bound, row_ratio, code_dtype_probe
):  # pragma: no cover
    """Invert a CSR segment (rows in internal order, ``terms`` local ids, ``codes`` weights).

    Returns ``tptr, post_code, dense_of, dub, dmask, dchk, sptr, gaps, cptr, cdoc, cpos``
    (see :mod:`lexlens.index.sparse`): the weight codes of every word's postings in document
    order; for each word either a dense row (per-block bound and document mask) or a list of
    LEB128 document gaps with checkpoints, whichever is smaller (a row when its bytes are at
    most ``row_ratio`` times the list's).
    """
    n_docs = indptr.shape[0] - 1
    nnz = terms.shape[0]
    n_blocks = (n_docs + block - 1) // block
    tptr = np.zeros(n_terms + 1, np.int64)
    for j in range(nnz):
        tptr[terms[j] + 1] += 1
    for t in range(n_terms):
        tptr[t + 1] += tptr[t]
    fill = tptr[:-1].copy()
    post_doc = np.empty(nnz, np.int64)
    post_code = np.empty(nnz, code_dtype_probe.dtype)
    for d in range(n_docs):
        for j in range(indptr[d], indptr[d + 1]):
            t = terms[j]
            x = fill[t]
            fill[t] += 1
            post_doc[x] = d
            post_code[x] = codes[j]
    # bytes of each word as a gap list and as a dense row
    list_bytes = np.zeros(n_terms, np.int64)
    for t in range(n_terms):
        prev = np.int64(-1)
        for x in range(tptr[t], tptr[t + 1]):
            g = post_doc[x] - prev
            prev = post_doc[x]
            while g >= 128:
                list_bytes[t] += 1
                g >>= 7
            list_bytes[t] += 1
    row_bytes = 2 * n_blocks + 4 * (n_blocks // CHECK + 1)
    dense_of = np.full(n_terms, -1, np.int32)
    sptr = np.zeros(n_terms + 1, np.int64)
    cptr = np.zeros(n_terms + 1, np.int64)
    nd = 0
    for t in range(n_terms):
        n_chk = (tptr[t + 1] - tptr[t] + LIST_CHECK - 1) // LIST_CHECK
        if row_bytes <= row_ratio * (list_bytes[t] + 8 * n_chk):
            dense_of[t] = nd
            nd += 1
            sptr[t + 1] = sptr[t]
            cptr[t + 1] = cptr[t]
        else:
            sptr[t + 1] = sptr[t] + list_bytes[t]
            cptr[t + 1] = cptr[t] + n_chk
    n_chk_rows = n_blocks // CHECK + 1
    dub = np.zeros((nd, n_blocks), np.uint8)
    dmask = np.zeros((nd, n_blocks), np.uint8)
    dchk = np.zeros((nd, n_chk_rows), np.int64)
    gaps = np.empty(sptr[n_terms], np.uint8)
    cdoc = np.empty(cptr[n_terms], np.int64)
    cpos = np.empty(cptr[n_terms], np.int64)
    for t in range(n_terms):
        d = dense_of[t]
        if d >= 0:
            for x in range(tptr[t], tptr[t + 1]):
                doc = post_doc[x]
                b = doc // block
                dmask[d, b] |= np.uint8(1 << (doc % block))
                bc = bound[post_code[x]]
                if bc > dub[d, b]:
                    dub[d, b] = bc
            run = tptr[t]
            for b in range(n_blocks):
                if b % CHECK == 0:
                    dchk[d, b // CHECK] = run
                run += _POPCOUNT[dmask[d, b]]
        else:
            pos = sptr[t]
            c = cptr[t]
            prev = np.int64(-1)
            for x in range(tptr[t], tptr[t + 1]):
                if (x - tptr[t]) % LIST_CHECK == 0:
                    cdoc[c] = prev + 1
                    cpos[c] = pos
                    c += 1
                g = post_doc[x] - prev
                prev = post_doc[x]
                while g >= 128:
                    gaps[pos] = np.uint8((g & 127) | 128)
                    pos += 1
                    g >>= 7
                gaps[pos] = np.uint8(g)
                pos += 1
    return tptr, post_code, dense_of, dub, dmask, dchk, sptr, gaps, cptr, cdoc, cpos


@nb.njit(**_JIT)
def decode_postings(tptr, dense_of, dmask, sptr, gaps, block):  # pragma: no cover
    """Internal document of every posting (inverse of :func:`build_postings`'s layout)."""
    docs = np.empty(tptr[tptr.shape[0] - 1], np.int64)
    for t in range(tptr.shape[0] - 1):
        x = tptr[t]
        d = dense_of[t]
        if d >= 0:
            for b in range(dmask.shape[1]):
                m = dmask[d, b]
                for off in range(block):
                    if (m >> off) & 1:
                        docs[x] = b * block + off
                        x += 1
        else:
            pos = sptr[t]
            doc = np.int64(-1)
            for x in range(tptr[t], tptr[t + 1]):
                g, pos = _varint(gaps, pos)
                doc += g
                docs[x] = doc
    return docs


@nb.njit(**_JIT)
def group_by_doc(docs, n_docs):  # pragma: no cover
    """Stable counting sort: the order that groups postings by document (a CSR transpose)."""
    ptr = np.zeros(n_docs + 1, np.int64)
    for x in range(docs.shape[0]):
        ptr[docs[x] + 1] += 1
    for d in range(n_docs):
        ptr[d + 1] += ptr[d]
    order = np.empty(docs.shape[0], np.int64)
    for x in range(docs.shape[0]):
        d = docs[x]
        order[ptr[d]] = x
        ptr[d] += 1
    return order


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


# ----------------------------------------------------------------------------- search
@nb.njit(inline="always", **_JIT)
def _log2(block):  # pragma: no cover
    """``log2(block)`` for a power of two, else -1."""
    for s in range(4):
        if block == 1 << s:
            return s
    return -1


@nb.njit(**_JIT)
def _list_bounds(t, qq, tptr, sptr, gaps, post_code, btab, block, ub, buf, at):  # pragma: no cover
    """Add list word ``t``'s per-block bounds (``qq`` x the bound of its largest code in the
    block) to ``ub`` and write its documents, decoded, to ``buf[at:]``.

    The largest bound of the current block is kept in a register and only its increase is
    added, so no posting branches on the data (but for the rare multi-byte gap).
    """
    doc = np.int64(-1)
    prev = np.int64(-1)
    mx = np.int64(0)
    pos = sptr[t]
    shift = _log2(block)
    i = at
    for x in range(tptr[t], tptr[t + 1]):
        byte = np.int64(gaps[pos])
        pos += 1
        if byte < 128:
            doc += byte
        else:
            g, pos = _varint(gaps, pos - 1)
            doc += g
        buf[i] = np.int32(doc)
        i += 1
        b = doc >> shift if shift >= 0 else doc // block
        old = mx if b == prev else np.int64(0)
        mx = max(old, np.int64(btab[post_code[x]]))
        ub[b] += qq * np.uint32(mx - old)
        prev = b


@nb.njit(inline="always", **_JIT)
def _lower_bound(buf, lo, hi, v):  # pragma: no cover
    """First ``i`` in ``[lo, hi)`` with ``buf[i] >= v`` (``hi`` if none); ``buf`` ascending."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if buf[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(inline="always", **_JIT)
def _gallop(buf, lo, hi, v):  # pragma: no cover
    """:func:`_lower_bound` for a ``v`` expected close after ``lo`` (doubling steps first)."""
    step = 1
    while lo + step < hi and buf[lo + step] < v:
        lo += step
        step <<= 1
    return _lower_bound(buf, lo, min(hi, lo + step + 1), v)


@nb.njit(**_JIT)
def _score_block(
    b, loc, dloc, qw, m, lbeg, lend, lcur, seq, buf, tptr, dmask, dchk, post_code, codebook,
    acc, block, dead, ids, hs_r, hi_r, size, k,
):  # pragma: no cover  # fmt: skip
    """Score the documents of block ``b`` and offer them to the heap; returns
    (postings scored, heap size).

    A list word's postings in the block are found in its decoded documents
    ``buf[lbeg[j]:lend[j]]``: by galloping on from the cursor ``lcur[j]`` when blocks come in
    ascending order (``seq``), else by binary search.
    """
    scored = 0
    first_doc = np.int64(b) * block
    for j in range(m):
        d = dloc[j]
        if d >= 0:
            mask = np.int64(dmask[d, b])
            if mask == 0:
                continue
            start = _dense_start(d, b, dmask, dchk)
        else:
            lo = lbeg[j]
            hi = lend[j]
            if seq:
                i = _gallop(buf, lcur[j], hi, first_doc)
                lcur[j] = i
            else:
                i = _lower_bound(buf, lo, hi, first_doc)
            mask = np.int64(0)
            e = i
            while e < hi and buf[e] < first_doc + block:
                mask |= np.int64(1) << (buf[e] - first_doc)
                e += 1
            if mask == 0:
                continue
            start = tptr[loc[j]] + (i - lo)
        w = qw[j]
        x = start
        for off in range(block):
            if (mask >> off) & 1:
                acc[off] += w * np.float64(codebook[post_code[x]])
                x += 1
        scored += x - start
    for off in range(block):
        v = acc[off]
        if v > 0.0:
            acc[off] = 0.0
            dd = first_doc + off
            if (dead[dd >> 3] >> (dd & 7)) & 1:
                continue
            size = _heap_push(hs_r, hi_r, size, k, np.float32(v), _ext_id(ids, dd))
    return scored, size


@nb.njit(**_JIT)
def _gather(ub, n_blocks, lo, hi, exact, cand):  # pragma: no cover
    """Blocks with ``lo <= bound < hi`` into ``cand`` (returns how many): block numbers in
    block order (``exact``), else ``-bound * n_blocks + block`` (sorting gives best first)."""
    g = 0
    for b in range(n_blocks):
        v = np.int64(ub[b])
        if v >= lo and v < hi:
            cand[g] = b if exact else -v * n_blocks + b
            g += 1
    return g


@nb.njit(**_JIT)
def _score_blocks(
    cand, n_blocks, exact, ub, unit, limit, scored, loc, dloc, qw, m, lbeg, lend, lcur, buf,
    tptr, dmask, dchk, post_code, codebook, acc, block, dead, ids, hs_r, hi_r, size, k,
):  # pragma: no cover  # fmt: skip
    """Score the gathered blocks: exact, in block order, skipping those whose bound is below
    the ``k``-th score; with a budget, best bound first, stopping at the first such block or
    once ``limit`` postings are scored. Returns (postings scored, blocks scored, heap size)."""
    done = 0
    order = cand if exact else np.sort(cand)
    for c in order:
        b = c - (c // n_blocks) * n_blocks
        if size == k and np.float64(ub[b]) * unit < hs_r[0]:
            if exact:
                continue  # block order: a later block may still qualify
            break
        sc, size = _score_block(
            b, loc, dloc, qw, m, lbeg, lend, lcur, exact, buf, tptr, dmask, dchk, post_code,
            codebook, acc, block, dead, ids, hs_r, hi_r, size, k,
        )  # fmt: skip
        scored += sc
        done += 1
        if scored >= limit:
            break
    return scored, done, size


@nb.njit(**_JIT)
def search_segment(
    q_indptr,
    q_terms,
    q_weights,
    seg_terms,
    tptr,
    post_code,
    codebook,
    btab,
    dense_of,
    dub,
    dmask,
    dchk,
    sptr,
    gaps,
    cptr,
    cdoc,
    cpos,
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
    cand,
    buf,
    need,
):  # pragma: no cover
    """Block-max search of one segment for every query row, updating the per-query heaps.

    ``q_terms`` (vocabulary ids, ascending per row) / ``q_weights`` (``float32``) is the query
    batch in CSR form; ``hs``/``hi``/``sizes`` are the heaps (``[n_q, k]`` scores and ids, and
    how full each is) carried over from earlier segments. ``btab`` maps a weight code to its
    8-bit bound.

    1. Upper bounds of all blocks in integers: ``sum_w ceil(q_w / u_q) * bound_w(block)``
       (a dense row as one vectorised pass; a list word by decoding its gaps, the bound of a
       block being that of its largest code there; the decoded documents are kept).
    2. A threshold estimated from a sample of the bounds picks the few most promising
       blocks; they are scored first.
    3. Then every other block whose bound reaches the ``k``-th score.

    Exact search (``budget >= 1``) scores the blocks of each step in block order (list
    words' postings are then found by galloping forward), skipping those whose bound has
    fallen below the ``k``-th score. With a budget (a share of the query's postings in this
    segment) blocks go best bound first and the search stops once the budget is scored.

    ``stats[r]`` receives (postings scored, blocks scored, postings in the query's lists).
    ``ub`` (``uint32``) and ``cand`` (``int64``) are scratch arrays of at least one entry per
    block, ``buf`` (``int32``) one for the decoded documents of the query's list words (a
    larger one is allocated for the call when it is too small; ``need[0]`` receives the size
    it needed); they are reused between calls and need no clearing.
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
        listed = 0
        qmax = 0.0
        for j in range(a, z):
            t = np.searchsorted(seg_terms, q_terms[j])
            if t < n_seg_terms and seg_terms[t] == q_terms[j] and q_weights[j] > 0:
                loc[m] = t
                dloc[m] = dense_of[t]
                qw[m] = np.float64(q_weights[j])
                qmax = max(qmax, qw[m])
                n_post = tptr[t + 1] - tptr[t]
                total += n_post
                if dloc[m] < 0:
                    listed += n_post
                m += 1
        if m == 0:
            continue
        need[0] = max(need[0], listed)
        if listed > buf.shape[0]:
            buf = np.empty(listed, np.int32)
        # 1. integer upper bounds
        qunit = qmax / 255.0
        ub[:n_blocks] = 0
        lbeg = np.zeros(m, np.int64)
        lend = np.zeros(m, np.int64)
        at = 0
        for j in range(m):
            qq = np.uint32(min(255.0, np.ceil(qw[j] / qunit)))
            d = dloc[j]
            if d >= 0:
                row = dub[d]
                for b in range(n_blocks):
                    ub[b] += qq * np.uint32(row[b])
            else:
                t = loc[j]
                _list_bounds(t, qq, tptr, sptr, gaps, post_code, btab, block, ub, buf, at)
                lbeg[j] = at
                at += tptr[t + 1] - tptr[t]
                lend[j] = at
        lcur = lbeg.copy()
        # a bound in score units, with a margin for the rounding of the float sums
        unit = qunit * vmax / 255.0 * (1.0 + 1e-6)
        # no limit in exact mode (total + 1 is never reached)
        exact = budget >= 1.0
        limit = total + 1 if exact else max(np.int64(budget * total), 1)
        size = sizes[r]
        hs_r = hs[r]
        hi_r = hi[r]
        # 2. a threshold ``cut`` with at least ``want`` blocks at or above it, estimated from
        # a strided sample; those blocks are gathered (and counted) in one pass
        want = max(2 * k, 16)
        stride = max(1, n_blocks // 1024)
        sample = np.sort(ub[:n_blocks:stride])[::-1]
        rank = want // stride + 1
        while True:
            cut = np.uint32(1)
            if rank < sample.shape[0]:
                cut = max(np.uint32(1), sample[rank])
            g = _gather(ub, n_blocks, np.int64(cut), np.int64(1) << 40, exact, cand)
            if g >= want or cut == 1:
                break
            rank *= 4
        scored, blocks_done, size = _score_blocks(
            cand[:g], n_blocks, exact, ub, unit, limit, 0, loc, dloc, qw, m, lbeg, lend, lcur,
            buf, tptr, dmask, dchk, post_code, codebook, acc, block, dead, ids, hs_r, hi_r,
            size, k,
        )  # fmt: skip
        # 3. the blocks below the cut that can still hold a top-k document
        if cut > 1 and scored < limit:
            lo = np.uint32(1)
            if size == k:
                lo = np.uint32(min(np.float64(cut - 1), max(1.0, np.floor(hs_r[0] / unit))))
            g = _gather(ub, n_blocks, np.int64(lo), np.int64(cut), exact, cand)
            lcur[:] = lbeg
            scored, more, size = _score_blocks(
                cand[:g], n_blocks, exact, ub, unit, limit, scored, loc, dloc, qw, m, lbeg,
                lend, lcur, buf, tptr, dmask, dchk, post_code, codebook, acc, block, dead, ids,
                hs_r, hi_r, size, k,
            )  # fmt: skip
            blocks_done += more
        sizes[r] = size
        stats[r, 0] += scored
        stats[r, 1] += blocks_done
        stats[r, 2] += total


@nb.njit(**_JIT)
def lookup_weights(
    q_vocab,
    seg_terms,
    tptr,
    post_code,
    codebook,
    dense_of,
    dmask,
    dchk,
    sptr,
    gaps,
    cptr,
    cdoc,
    cpos,
    doc,
    block,
):  # pragma: no cover
    """The stored weight of each query word ``q_vocab`` in internal document ``doc`` (0 if absent)."""
    out = np.zeros(q_vocab.shape[0], np.float32)
    b = doc // block
    off = doc % block
    for j in range(q_vocab.shape[0]):
        t = np.searchsorted(seg_terms, q_vocab[j])
        if t >= seg_terms.shape[0] or seg_terms[t] != q_vocab[j]:
            continue
        d = dense_of[t]
        if d >= 0:
            mask = np.int64(dmask[d, b])
            start = _dense_start(d, b, dmask, dchk)
        else:
            start, mask = _list_find(t, b, block, tptr, sptr, gaps, cptr, cdoc, cpos)
        if not (mask >> off) & 1:
            continue
        below = mask & ((1 << off) - 1)
        out[j] = codebook[post_code[start + _POPCOUNT[below]]]
    return out
