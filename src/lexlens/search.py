"""The query pipeline: encode the query -> search the index kind -> filters / cut-off -> metadata.

Query types (:class:`Query`):

* ``Query(text="a red circle")``: text -> images (or text -> captions in a caption index);
* ``Query(image="photo.png")`` (a path or a ``PIL.Image``): image -> images, or
  image -> text over an index of captions (``items="texts"``);
* ``Query(image=..., text="but red", weight=0.5)``: image + text, fused without training:
  ``normalize((1 - weight) * normalize(image_emb) + weight * normalize(text_emb))``;
  ``weight`` is the share of the text (0 = the image alone, 1 = the text alone). Lexical
  weights are mixed the same way (without the normalisation);
* ``Query(item=123)``: an item's own stored vectors ("more like this"; the item itself
  comes first);
* ``Query(embedding=vec)``: a raw ``float32 [d]`` embedding (dense indexes; a hybrid index
  answers it from its dense part).

Lexical indexes (``sparse``, ``hybrid(...)``) encode query texts in a ``query_mode`` (see
:data:`lexlens.models.base.QUERY_MODES`): ``"encoder"`` (the full text encoder, the
default) or ``"inference-free"`` (tokenise + learned per-token weights, no network), when
the model supports it (:attr:`~lexlens.models.base.Encoder.lexical_query_modes`).

Results follow the one contract (:mod:`lexlens.results`): ``scores[n, k]``, ``ids[n, k]``,
``-1`` for missing, ties by ``(-score, id)``. ``where`` filters and ``min_score`` apply
before the cut to ``k``: the kind is asked for more candidates (4x, 16x, ...) until ``k``
results pass or the index is exhausted, so ``k`` results come back whenever they exist.

``explain=True`` gives each hit of a lexical index the word pieces it shares with the query and
their contributions (``Hit.explain``); for a text query whose encoder can attribute its pieces
to query words (:mod:`lexlens.models.attribution`), each piece also names its ``query_word`` and
``Hit.explain_words`` sums the contributions per query word.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lexlens.errors import NotFoundError, UsageError
from lexlens.index.base import SearchParams, Vectors
from lexlens.models.base import QUERY_MODES, SparseBatch, l2_normalize
from lexlens.results import sort_results

if TYPE_CHECKING:
    from lexlens.index.index import Index

__all__ = [
    "Query",
    "Hit",
    "SearchResults",
    "search_index",
    "encode_queries",
    "fuse",
    "queries_from_cli",
    "query_image_path",
    "check_embeddings",
    "format_results",
    "explain_by_word",
    "UNATTRIBUTED",
]

#: file name endings treated as images when a query string names an existing file
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")

#: the query word of a piece the encoder gave no source for
UNATTRIBUTED = "(unattributed)"


@dataclass
class Query:
    """One query; see the module docstring for the combinations allowed."""

    text: str | None = None
    image: Any = None  # path or PIL.Image
    weight: float = 0.5
    item: int | None = None
    embedding: np.ndarray | None = None

    def __post_init__(self) -> None:
        given = [
            self.text is not None or self.image is not None,
            self.item is not None,
            self.embedding is not None,
        ]
        if sum(given) != 1:
            raise UsageError(
                "a query is text and/or image, or an item id, or an embedding (exactly one of these)"
            )
        if self.text is not None and not str(self.text).strip():
            raise UsageError("the query text is empty")
        if not 0.0 <= float(self.weight) <= 1.0:
            raise UsageError(f"weight must be between 0 and 1, got {self.weight}")
        if isinstance(self.image, str | Path) and not Path(self.image).is_file():
            raise NotFoundError(f"query image {self.image} does not exist")

    def describe(self) -> str:
        """A short human description of the query."""
        if self.item is not None:
            return f"item {self.item}"
        if self.embedding is not None:
            return f"embedding[{np.asarray(self.embedding).shape[-1]}]"
        img = (
            None
            if self.image is None
            else (str(self.image) if isinstance(self.image, str | Path) else "<image>")
        )
        if img and self.text is not None:
            return f"image {img} + text {self.text!r} (weight {self.weight})"
        return f"image {img}" if img else f"text {self.text!r}"


@dataclass
class Hit:
    """One result with its metadata row.

    ``explain``: the word pieces a lexical match shares with the query (``word``, ``id``,
    ``query`` and ``item`` weights, ``contribution``, and ``query_word`` when the encoder can
    tell which query word produced the piece); ``explain_words``: then the same grouped by
    query word (:func:`explain_by_word`), else ``None``.
    """

    rank: int
    id: int
    score: float
    path: str | None = None
    text: str | None = None
    captions: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    explain: Any = None
    explain_words: list[dict[str, Any]] | None = None


@dataclass
class SearchResults:
    """``scores[n, k]`` / ``ids[n, k]`` under the result contract, plus hits with metadata."""

    scores: np.ndarray
    ids: np.ndarray
    hits: list[list[Hit]]
    queries: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: one entry per query with its hits."""
        return {
            "results": [
                {"query": q, "hits": [asdict(h) for h in hs]}
                for q, hs in zip(self.queries, self.hits, strict=True)
            ]
        }


def fuse(image: np.ndarray, text: np.ndarray, weight: float) -> np.ndarray:
    """Training-free image+text fusion: normalised weighted sum of normalised embeddings."""
    return l2_normalize((1.0 - weight) * l2_normalize(image) + weight * l2_normalize(text))


def _sparse_mix(a: SparseBatch, b: SparseBatch, wa: float, wb: float) -> SparseBatch:
    return SparseBatch.from_dense(wa * a.to_dense() + wb * b.to_dense(), vocab=a.vocab)


def encode_queries(index: Index, queries: Sequence[Query], query_mode: str = "encoder") -> Vectors:
    """Dense (and, when the index uses them, lexical) vectors of the queries; query texts'
    lexical weights in ``query_mode`` (module docstring)."""
    return _encode_queries(index, queries, query_mode, attribute=False)[0]


def _encode_queries(
    index: Index, queries: Sequence[Query], query_mode: str, attribute: bool
) -> tuple[Vectors, list[dict[int, str] | None]]:
    """:func:`encode_queries`, and per query ``{piece id: query word}`` when ``attribute`` and
    it is a text alone whose encoder can tell (``explained_text_queries``,
    :mod:`lexlens.models.attribution`: the same pass that gives its vectors), else ``None``."""
    from lexlens.index.spec import spec_needs

    _, want_sparse = spec_needs(index.spec)
    if query_mode not in QUERY_MODES:
        raise UsageError(
            f"unknown query mode {query_mode!r}: expected one of {', '.join(QUERY_MODES)}"
        )
    if query_mode != "encoder" and not want_sparse:
        raise UsageError(
            f"query mode {query_mode} applies to lexical indexes (sparse, hybrid); "
            f"this one is {index.spec}"
        )
    n = len(queries)
    dim = index._state.manifest.dim
    dense = np.zeros((n, dim), np.float32)
    sparse_rows: list[SparseBatch | None] = [None] * n
    sources: list[dict[int, str] | None] = [None] * n
    texts = [i for i, q in enumerate(queries) if q.text is not None and q.image is None]
    images = [i for i, q in enumerate(queries) if q.image is not None]
    enc = index.encoder if texts or images else None
    if texts:
        t = [str(queries[i].text) for i in texts]
        explained = getattr(enc, "explained_text_queries", None) if attribute else None
        if want_sparse and explained is not None:
            dense[texts], sp, found = explained(t, query_mode)
            for j, i in enumerate(texts):
                sparse_rows[i], sources[i] = _row_batch(sp, j), found[j]
        elif want_sparse:
            dense[texts], sp = enc.encode_text_queries(t, query_mode)
            for j, i in enumerate(texts):
                sparse_rows[i] = _row_batch(sp, j)
        else:
            dense[texts] = enc.encode_texts(t)
    if images:
        imgs = [queries[i].image for i in images]
        img_dense = enc.encode_images(imgs)
        img_sparse = enc.encode_images_lexical(imgs) if want_sparse else None
        for j, i in enumerate(images):
            q = queries[i]
            dense[i] = img_dense[j]
            if img_sparse is not None:
                sparse_rows[i] = _row_batch(img_sparse, j)
            if q.text is not None:
                if img_sparse is not None:
                    tv, ts = enc.encode_text_queries([q.text], query_mode)
                    sparse_rows[i] = _sparse_mix(
                        _row_batch(img_sparse, j), ts, 1.0 - q.weight, q.weight
                    )
                else:
                    tv = enc.encode_texts([q.text])
                dense[i] = fuse(img_dense[j : j + 1], tv, q.weight)[0]
    items = [i for i, q in enumerate(queries) if q.item is not None]
    if items:
        stored = index.vectors([int(queries[i].item) for i in items])  # type: ignore[arg-type]
        if stored.dense is not None:
            dense[items] = stored.dense
        if stored.sparse is not None and want_sparse:
            for j, i in enumerate(items):
                sparse_rows[i] = _row_batch(stored.sparse, j)
    for i, q in enumerate(queries):
        if q.embedding is not None:
            e = np.asarray(q.embedding, np.float32).reshape(-1)
            if e.shape[0] != dim:
                raise UsageError(
                    f"the embedding has {e.shape[0]} dimensions; this index uses {dim}"
                )
            dense[i] = l2_normalize(e[None, :])[0]
            if want_sparse:
                if not spec_needs(index.spec)[0]:
                    raise UsageError(
                        f"raw-embedding queries need a dense index; this one is {index.spec}"
                    )
                # a hybrid index answers it from its dense part: no words to match
                sparse_rows[i] = SparseBatch(
                    np.zeros(2, np.int64),
                    np.zeros(0, np.int32),
                    np.zeros(0, np.float32),
                    index._state.manifest.vocab_size,
                )
    sparse = None
    if want_sparse:
        from lexlens.index.ingest import sparse_from_rows

        parts = [r for r in sparse_rows if r is not None]
        sparse = sparse_from_rows([r.row(0) for r in parts], parts[0].vocab_size) if parts else None
        if sparse is not None:
            sparse.vocab = parts[0].vocab
    return Vectors(dense=dense, sparse=sparse), sources


def _row_batch(sp: SparseBatch, j: int) -> SparseBatch:
    idx, val = sp.row(j)
    return SparseBatch(
        np.asarray([0, len(idx)], np.int64), idx.copy(), val.copy(), sp.vocab_size, sp.vocab
    )


def _keep(
    ids: np.ndarray, scores: np.ndarray, allowed: np.ndarray | None, min_score: float | None
) -> np.ndarray:
    ok = ids >= 0
    if allowed is not None:
        pos = np.minimum(np.searchsorted(allowed, ids), max(len(allowed) - 1, 0))
        ok &= (allowed[pos] == ids) if len(allowed) else False
    if min_score is not None:  # compared in float64: a huge bound must not overflow float32
        ok &= scores.astype(np.float64) >= np.float64(min_score)
    return ok


def search_index(
    index: Index,
    query: Query | Sequence[Query] | str,
    k: int = 10,
    params: SearchParams | None = None,
    min_score: float | None = None,
    where: str | None = None,
    explain: bool = False,
    query_mode: str = "encoder",
) -> SearchResults:
    """Run queries against an index (see module docstring)."""
    from lexlens.index.filters import parse_where, where_sql

    if k <= 0:
        raise UsageError(f"k must be positive, got {k}")
    if min_score is not None and np.isnan(min_score):
        raise UsageError("min_score must be a number, got NaN")
    queries = (
        [Query(text=query)]
        if isinstance(query, str)
        else [query]
        if isinstance(query, Query)
        else list(query)
    )
    if not queries:
        raise UsageError("no query given")
    state = index._state  # one generation for the whole call, even if an add publishes meanwhile
    explainer = _explainer() if explain and state.sparse is not None else None
    vecs, sources = _encode_queries(index, queries, query_mode, attribute=explainer is not None)
    conds = parse_where(where)
    # a kind that filters itself (the Milvus backend) gets the conditions instead of an id set
    pushdown = {"where": conds} if conds and getattr(state.kind, "accepts_where", False) else {}
    sql_where = where_sql(conds) if conds and not pushdown else None
    s, i = _top(state, vecs, k, params, sql_where, min_score, pushdown)
    rows = state.meta.rows(np.unique(i[i >= 0]))
    hits: list[list[Hit]] = []
    for r in range(len(queries)):
        row_hits = []
        for c in range(k):
            iid = int(i[r, c])
            if iid < 0:
                break
            meta = rows.get(iid)
            h = Hit(c + 1, iid, float(s[r, c]))
            if meta is not None:
                h.path, h.text, h.captions, h.fields = (
                    meta.path,
                    meta.text,
                    meta.captions,
                    meta.fields,
                )
            if explainer is not None and vecs.sparse is not None:
                item = index.vectors([iid]).sparse
                h.explain = explainer(
                    _row_batch(vecs.sparse, r), item, vecs.sparse.vocab or state.sparse.vocab
                )
                if sources[r] is not None:
                    h.explain, h.explain_words = _attribute(h.explain, sources[r])
            row_hits.append(h)
        hits.append(row_hits)
    return SearchResults(s, i, hits, [q.describe() for q in queries])


#: a filter is first checked on up to this many of the kind's best candidates (0: never)
CANDIDATES_FIRST_MAX = 2048
#: a filter passing at most max(PREFILTER_MIN, n / PREFILTER_SHARE) items is answered exactly
PREFILTER_MIN = 2048
PREFILTER_SHARE = 16


def _top(
    state: Any,
    vecs: Vectors,
    k: int,
    params: SearchParams | None,
    where: tuple[str, list[Any]] | None,
    min_score: float | None,
    pushdown: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` that pass the filter (``where``: SQL condition and parameters) and the cut-off.

    A filter is first checked on the kind's best ``4k``, then more (4x a round, or what the
    pass rate so far says ``k`` needs), candidates only: a few rows looked up by id. When that
    would take more than :data:`CANDIDATES_FIRST_MAX` candidates, the filter's whole id set
    is read: a selective filter (at most ``max(PREFILTER_MIN, n / PREFILTER_SHARE)`` items)
    on a dense index is then answered by an exact scan of the allowed items' stored vectors,
    otherwise the kind is asked for 4x, 16x, ... ``k`` candidates until ``k`` pass or the index
    is exhausted.
    """
    from lexlens.index.dense import exact_search
    from lexlens.index.spec import spec_needs

    if where is not None and len(vecs) > 1:
        # one query at a time: how many candidates a filter needs differs by query, and a kind
        # asked for more (hybrid candidates, HNSW's ef) may answer differently
        rows = [
            _top(state, vecs.rows(r, r + 1), k, params, where, min_score, pushdown)
            for r in range(len(vecs))
        ]
        return np.concatenate([s for s, _ in rows]), np.concatenate([i for _, i in rows])
    total = state.kind.ntotal
    allowed = None
    if where is not None:
        fetch = min(total, 4 * k)
        while fetch <= CANDIDATES_FIRST_MAX:
            s, i = state.kind.search(vecs, max(fetch, 1), params, **pushdown)
            seen = np.unique(i[i >= 0])
            passing = state.meta.passing_ids(seen, *where)
            ok = _keep(i, s, passing, min_score)
            s, i = sort_results(np.where(ok, s, -np.inf), np.where(ok, i, -1), k)
            if fetch >= total or ((i >= 0).sum(axis=1) >= min(k, total)).all():
                return s, i
            # at this pass rate, how many candidates would give k? (beyond the cap: read the set)
            rate = len(passing) / max(len(seen), 1)
            fetch = min(total, max(4 * fetch, int(1.5 * k / max(rate, 1e-9))))
        allowed = state.meta.select_ids(*where)
    small = allowed is not None and len(allowed) <= max(PREFILTER_MIN, total // PREFILTER_SHARE)
    if small and state.dense is not None and spec_needs(state.spec) == (True, False):
        x = np.asarray(state.dense[state.slots(allowed)], np.float32)
        s, i = exact_search(np.asarray(vecs.dense, np.float32), x, allowed, k)
        ok = _keep(i, s, None, min_score)
        return sort_results(np.where(ok, s, -np.inf), np.where(ok, i, -1), k)
    fetch = min(k, total) if allowed is None else min(total, 4 * k)
    while True:
        s, i = state.kind.search(vecs, max(fetch, 1), params, **pushdown)
        ok = _keep(i, s, allowed, min_score)
        s, i = sort_results(np.where(ok, s, -np.inf), np.where(ok, i, -1), k)
        enough = (i >= 0).sum(axis=1) >= min(k, total if allowed is None else len(allowed))
        if fetch >= total or enough.all() or allowed is None:
            return s, i
        fetch = min(total, fetch * 4)


def _attribute(explain: Any, sources: dict[int, str]) -> tuple[Any, list[dict[str, Any]] | None]:
    """``explain`` entries with their ``query_word``, and their grouping by query word."""
    if not isinstance(explain, list):
        return explain, None
    entries = [{**e, "query_word": sources.get(int(e["id"]), UNATTRIBUTED)} for e in explain]
    return entries, explain_by_word(entries)


def explain_by_word(explain: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Piece explanations (with ``query_word``) grouped by query word.

    Each group: ``query_word``, ``contribution`` (the sum of its pieces' contributions, so the
    groups add up to the score like the pieces do) and ``pieces`` (their words, in the order
    given); sorted by ``(-contribution, query_word)``.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in explain:
        groups.setdefault(str(e.get("query_word") or UNATTRIBUTED), []).append(e)
    rows = [
        {
            "query_word": w,
            "contribution": float(sum(np.float64(e["contribution"]) for e in es)),
            "pieces": [str(e["word"]) for e in es],
        }
        for w, es in groups.items()
    ]
    rows.sort(key=lambda r: (-r["contribution"], r["query_word"]))
    return rows


def _explainer() -> Any:
    try:
        from lexlens.index import sparse
    except ImportError:  # the sparse module is not there (``from pkg import x`` -> ImportError)
        return None
    return getattr(sparse, "explain", None)


def queries_from_cli(
    query: str | None,
    image: str | None,
    text: str | None,
    weight: float,
    item: int | None,
    embedding: str | None,
) -> list[Query]:
    """Queries from the ``lexlens search`` arguments (a QUERY naming an image file is an image,
    see :func:`query_image_path`)."""
    if query is not None:
        query_image = query_image_path(query)
        if query_image is not None:
            if image is not None:
                raise UsageError("two query images given (QUERY and --image)")
            image = query_image
        elif text is not None:
            raise UsageError("two query texts given (QUERY and --text)")
        else:
            text = query
    if embedding is not None:
        try:
            arr = np.load(embedding, allow_pickle=False)
        except (OSError, ValueError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "pickle" in why:
                why = "not a numeric .npy array"
            raise UsageError(f"cannot read embedding file {embedding}: {why}") from None
        arr = check_embeddings(arr, embedding)
        if text is not None or image is not None or item is not None:
            raise UsageError("--embedding cannot be combined with other query inputs")
        return [Query(embedding=row) for row in arr]
    if item is not None:
        if text is not None or image is not None:
            raise UsageError("--item cannot be combined with text or image")
        return [Query(item=item)]
    if text is None and image is None:
        raise UsageError("no query: give QUERY text, --image, --item or --embedding")
    return [Query(text=text, image=image, weight=weight)]


#: a path separator, then (in the same run of non-blanks) a name with an image file ending
_PATH_WITH_IMAGE = re.compile(
    r"[/\\]\S*(?:" + "|".join(re.escape(x) for x in IMAGE_SUFFIXES) + r")(?![\w-])",
    re.IGNORECASE,
)


def query_image_path(query: str) -> str | None:
    """The image file a ``lexlens search`` QUERY names, or ``None`` when it is a text.

    A QUERY is an image when it names an existing file that has an image file ending or a
    path separator (spaces allowed: ``"sub dir/img 01.webp"``); a bare word that happens to
    be a file without an image ending (``red``) stays a text. A QUERY that looks like the path
    of an image (it ends in an image file ending, or holds a path separator followed by a
    name with one: ``shots/cat.jpg``) but names no file is a :class:`UsageError`, not a text
    search. Anything else (``"a photo of a.png-like thing"``) is a text.
    """
    path = Path(os.path.expanduser(query))
    has_separator = "/" in query or "\\" in query or os.sep in query
    image_ending = path.suffix.lower() in IMAGE_SUFFIXES
    if path.is_file() and (image_ending or has_separator):
        return str(path)
    if image_ending or _PATH_WITH_IMAGE.search(query):
        raise UsageError(f"no image file {query} (to search for these words as text, use --text)")
    return None


def check_embeddings(values: Any, source: str = "the embedding") -> np.ndarray:
    """Raw query embeddings ``[d]`` or ``[n, d]`` as ``float32 [n, d]``, each row scaled to a
    largest magnitude of 1 (cosine ignores scale; huge values stay finite in float32).

    One-line :class:`UsageError` for non-numbers, a wrong shape, an empty array, non-finite
    values or an all-zero row."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise UsageError(f"{source} must hold numbers, got {arr.dtype.name} values")
    arr = np.atleast_2d(arr.astype(np.float64))
    if arr.ndim != 2 or arr.size == 0:
        raise UsageError(f"{source} must hold [d] or [n, d] numbers, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UsageError(f"{source} holds NaN or infinite values")
    peak = np.abs(arr).max(axis=1, keepdims=True)
    if not peak.all():
        if len(arr) == 1:
            raise UsageError(f"{source} is all zeros")
        raise UsageError(f"{source} has an all-zero row (row {int(np.argmin(peak[:, 0]))})")
    return (arr / peak).astype(np.float32)


def format_results(res: SearchResults) -> str:
    """Human-readable results: per query, rank, score, id and path or caption."""
    lines: list[str] = []
    for q, hits in zip(res.queries, res.hits, strict=True):
        lines.append(f"query: {q}")
        if not hits:
            lines.append("  (no results)")
        for h in hits:
            what = h.text if h.text is not None else (h.path or "")
            if h.text is None and h.captions:
                what += f'  "{h.captions[0]}"'
            lines.append(f"  {h.rank:>3}  {h.score:7.4f}  #{h.id:<7} {what}")
            note = _lexical_score_note(h)
            if h.explain_words:
                lines.append(f"       matched{note}: {_format_words(h.explain_words)}")
            elif h.explain:
                lines.append(f"       shared words{note}: {_format_explain(h.explain)}")
    return "\n".join(lines)


def _lexical_score_note(h: Hit) -> str:
    """`` (lexical score S)`` for an explanation line when its contributions add up to a
    score other than the hit's (a hybrid index ranks by the fused or dense score), else ``""``."""
    if not (isinstance(h.explain, list) and all(isinstance(e, dict) for e in h.explain)):
        return ""
    total = float(sum(e["contribution"] for e in h.explain))
    if abs(total - h.score) <= 1e-4 * max(1.0, abs(h.score)):
        return ""
    return f" (lexical score {total:.4f})"


def _format_explain(explain: Any) -> str:
    """``word contribution, ...`` for the sparse kind's explanations; anything else as text."""
    if isinstance(explain, list) and all(isinstance(e, dict) and "word" in e for e in explain):
        return ", ".join(f"{e['word']} {e['contribution']:.3f}" for e in explain)
    return str(explain)


def _format_words(groups: list[dict[str, Any]]) -> str:
    """``query_word contribution (pieces), ...`` from :func:`explain_by_word`; the pieces are
    left out when they are just the word itself."""

    def one(g: dict[str, Any]) -> str:
        head = f"{g['query_word']} {g['contribution']:.2f}"
        return (
            head if list(g["pieces"]) == [g["query_word"]] else f"{head} ({', '.join(g['pieces'])})"
        )

    return ", ".join(one(g) for g in groups)
