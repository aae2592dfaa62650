"""The standard image-text retrieval protocol (what ``lexlens eval`` runs).

Every image has several captions. Text-to-image ``R@K``: the caption's own image is within
the first ``K`` images; image-to-text ``R@K``: any of the image's own captions is within the
first ``K`` captions; ``K`` = 1, 5, 10; rSum = the sum of the six. Ties follow the
``(-score, id)`` rule of :mod:`lexlens.eval.metrics`. All values are percentages.

Two ways to score:

* **full matrix** (``index_spec=None``): every caption against every image with the dense
  embeddings (exact ranks, so mean and median rank are exact); when the encoder has a
  lexical output the same metrics are also reported for the sparse dot product
  (``"lexical"``, computed with ``scipy.sparse``);
* **through an index** (``index_spec="hnsw32"``, ``"sparse"``, ``"hybrid(sparse,flat)"``,
  ...): an in-memory index of that kind is built over the image vectors (for text-to-image)
  and over the caption vectors (for image-to-text) and searched with ``k = max(K)``; recalls
  come from the returned ids (a ground truth beyond ``k`` is a miss), so mean and median rank
  are only lower bounds (``mean_rank_lower_bound``, ``median_rank_lower_bound``). With an exact
  index (``flat``) the recalls equal the full-matrix ones. Approximate kinds also report
  ``ann_recall@10``: the share of the exact top 10 (see :mod:`lexlens.eval.exact`) they return.

Also, when the data has them: the fine-grained accuracy (``fg.jsonl``: the share of images
whose true caption scores strictly above every caption with one attribute swapped; a tie is
a failure), and the **ceiling** (scene records): the expected recall of a perfect reader that
ranks every image a caption truly describes (``caption_fits``) first, tied in random order.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lexlens.errors import DataError, UsageError
from lexlens.eval import metrics as M
from lexlens.index.base import KindContext, SearchParams, Vectors
from lexlens.models.base import (
    Encoder,
    ImageInput,
    SparseBatch,
    check_batch_size,
    encode_query_lexical,
)

__all__ = [
    "EvalSet",
    "FGItem",
    "evaluate",
    "retrieval_block",
    "ceiling_block",
    "fits_matrix",
    "format_report",
    "as_eval_set",
    "load_eval_set",
]


@dataclass
class FGItem:
    """One fine-grained check: image ``image`` (position in the eval set), its true caption and swaps."""

    image: int
    positive: str
    negatives: list[str]


@dataclass
class EvalSet:
    """What the protocol needs: images, their captions, and optionally scene records and fg checks.

    ``captions[i]`` are image ``i``'s captions; ``caption_meta[i][j]`` is the meaning record of
    caption ``j`` of image ``i`` (for the ceiling), ``records[i]`` the scene record of image ``i``.
    """

    images: list[ImageInput]
    captions: list[list[str]]
    records: list[Any] | None = None
    caption_meta: list[list[Any]] | None = None
    fg: list[FGItem] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.captions):
            raise DataError(f"{len(self.images)} images but {len(self.captions)} caption lists")
        if not self.images:
            raise DataError("the evaluation set has no images")
        empty = [i for i, c in enumerate(self.captions) if not c]
        if empty:
            raise DataError(f"image {self.images[empty[0]]} has no caption")

    @property
    def texts(self) -> list[str]:
        """All captions, image by image."""
        return [c for caps in self.captions for c in caps]

    @property
    def text_to_image(self) -> np.ndarray:
        """The image of each caption in :attr:`texts`."""
        return np.repeat(np.arange(len(self.captions)), [len(c) for c in self.captions])

    def limit(self, n: int | None) -> EvalSet:
        """The first ``n`` images (with their captions, records and fg checks)."""
        if n is None or n >= len(self.images):
            return self
        if n <= 0:
            raise UsageError(f"--limit must be positive, got {n}")
        return EvalSet(
            images=self.images[:n],
            captions=self.captions[:n],
            records=None if self.records is None else self.records[:n],
            caption_meta=None if self.caption_meta is None else self.caption_meta[:n],
            fg=[f for f in self.fg if f.image < n],
        )


# ----------------------------------------------------------------------------- blocks
def _recall_block(ranks: np.ndarray, ks: Sequence[int], exact: bool) -> dict[str, float]:
    out = M.recall_from_ranks(ranks, ks)
    suffix = "" if exact else "_lower_bound"
    out["mean_rank" + suffix] = M.mean_rank(ranks)
    out["median_rank" + suffix] = M.median_rank(ranks)
    return out


def retrieval_block(sim_t2i: np.ndarray, text_to_image: np.ndarray, ks: Sequence[int]) -> dict:
    """``{"t2i": {...}, "i2t": {...}, "rsum": ..}`` from a full text x image score matrix."""
    t2i = _recall_block(M.t2i_ranks(sim_t2i, text_to_image), ks, exact=True)
    i2t = _recall_block(M.i2t_ranks(np.asarray(sim_t2i).T, text_to_image), ks, exact=True)
    return {"t2i": t2i, "i2t": i2t, "rsum": M.rsum(t2i, i2t, ks)}


def _results_block(
    ids_t2i: np.ndarray,
    ids_i2t: np.ndarray,
    text_to_image: np.ndarray,
    n_images: int,
    ks: Sequence[int],
) -> dict:
    t2i = _recall_block(M.ranks_from_results(ids_t2i, text_to_image), ks, exact=False)
    own = M.invert_mapping(text_to_image, n_images)
    i2t = _recall_block(M.ranks_from_results(ids_i2t, own), ks, exact=False)
    return {"t2i": t2i, "i2t": i2t, "rsum": M.rsum(t2i, i2t, ks)}


def fits_matrix(
    meta: Sequence[Any],
    records: Sequence[Any],
    fits: Callable[[Any, Any], bool],
    progress: bool = False,
) -> np.ndarray:
    """``bool [n_captions, n_images]``: ``fits(meta[t], records[i])``, each distinct pair judged once."""
    from lexlens.progress import progress_bar

    def key(x: Any) -> str:
        return json.dumps(x, sort_keys=True, default=str)

    m_keys = [key(m) for m in meta]
    r_keys = [key(r) for r in records]
    m_first: dict[str, Any] = {}
    for k, m in zip(m_keys, meta, strict=True):
        m_first.setdefault(k, m)
    r_first: dict[str, Any] = {}
    for k, r in zip(r_keys, records, strict=True):
        r_first.setdefault(k, r)
    m_uniq = {k: i for i, k in enumerate(m_first)}
    r_uniq = {k: i for i, k in enumerate(r_first)}
    small = np.zeros((len(m_uniq), len(r_uniq)), dtype=bool)
    scenes = list(r_first.values())
    with progress_bar(total=len(m_uniq), desc="ceiling", unit="caption", enabled=progress) as bar:
        for a, m in enumerate(m_first.values()):
            small[a] = [bool(fits(m, s)) for s in scenes]
            bar.update(1)
    rows = np.array([m_uniq[k] for k in m_keys], dtype=np.int64)
    cols = np.array([r_uniq[k] for k in r_keys], dtype=np.int64)
    return small[np.ix_(rows, cols)]


def ceiling_block(fits: np.ndarray, text_to_image: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    """The perfect reader's expected recalls both ways and rSum (see :func:`lexlens.eval.metrics.ceiling_t2i`)."""
    t2i = M.ceiling_t2i(fits, text_to_image, ks)
    i2t = M.ceiling_i2t(fits, text_to_image, ks)
    return {"t2i": t2i, "i2t": i2t, "rsum": M.rsum(t2i, i2t, ks)}


def _caption_fits() -> Callable[[Any, Any], bool] | None:
    try:
        from lexlens.data.scenes import caption_fits
    except ImportError:
        return None
    return caption_fits


def _sparse_rows_dot(a: SparseBatch, ia: np.ndarray, b: SparseBatch, ib: np.ndarray) -> np.ndarray:
    """Dot products of rows ``a[ia[j]]`` and ``b[ib[j]]``."""
    from lexlens.eval.exact import to_csr

    A = to_csr(a)[ia]  # type: ignore[index]
    B = to_csr(b)[ib]  # type: ignore[index]
    return np.asarray(A.multiply(B).sum(axis=1), dtype=np.float64).reshape(-1)


def _fg_block(
    encoder: Encoder,
    es: EvalSet,
    img_dense: np.ndarray,
    img_sparse: SparseBatch | None,
    batch_size: int,
    progress: bool,
    query_mode: str = "encoder",
) -> dict[str, Any]:
    items = [f for f in es.fg if f.negatives]
    if not items:
        return {}
    texts = [t for f in items for t in [f.positive, *f.negatives]]
    owner = np.repeat([f.image for f in items], [1 + len(f.negatives) for f in items])
    starts = np.cumsum([0] + [1 + len(f.negatives) for f in items])
    out: dict[str, Any] = {"fg_n": len(items)}

    def acc(scores: np.ndarray) -> float:
        pos = [scores[s] for s in starts[:-1]]
        negs = [scores[s + 1 : e] for s, e in zip(starts[:-1], starts[1:], strict=True)]
        return M.fine_grained_accuracy(pos, negs)

    t_dense = encoder.encode_texts(texts, batch_size=batch_size, progress=progress)
    out["fg_acc"] = acc(np.einsum("nd,nd->n", t_dense, img_dense[owner]))
    if img_sparse is not None:
        t_sparse = encode_query_lexical(encoder, texts, query_mode, batch_size, progress)
        out["fg_acc_lexical"] = acc(
            _sparse_rows_dot(t_sparse, np.arange(len(texts)), img_sparse, owner)
        )
    return out


# ----------------------------------------------------------------------------- evaluate
def _check_images_exist(images: Sequence[Any]) -> None:
    """One line before any encoding when image files are missing (a wrong images root)."""
    paths = [p for p in images if isinstance(p, str | os.PathLike)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(images)} images are missing, e.g. {os.fspath(missing[0])}; "
            "if they are in another folder, give it as the images root (--images)"
        )


def evaluate(
    encoder: Encoder,
    dataset: Any,
    index_spec: str | None = None,
    k_values: Sequence[int] = (1, 5, 10),
    batch_size: int = 64,
    progress: bool = True,
    limit: int | None = None,
    query_mode: str = "encoder",
) -> dict[str, Any]:
    """Run the protocol (module docstring) and return the JSON-able result.

    ``dataset`` is an :class:`EvalSet` or anything :func:`lexlens.eval.protocol.as_eval_set`
    understands (a dataset from :func:`lexlens.data.readers.load_dataset`). Keys:
    ``t2i``/``i2t`` (``R@K``, mean/median rank), ``rsum``, ``n_images``, ``n_texts``, ``model``,
    ``index``; when available ``lexical``, ``fg_acc``, ``fg_acc_lexical``, ``fg_n``,
    ``ceiling``, ``exact`` and ``ann_recall@10`` (through an approximate index), ``seconds``.
    ``query_mode`` (``"encoder"`` or ``"inference-free"``) is how the captions' lexical
    weights are computed (both directions; see :data:`lexlens.models.base.QUERY_MODES`); it
    is reported as ``query_mode`` when the encoder has a lexical output.
    """
    ks = sorted({int(k) for k in k_values})
    if not ks or ks[0] <= 0:
        raise UsageError(f"k values must be positive, got {list(k_values)}")
    check_batch_size(batch_size)
    es = as_eval_set(dataset).limit(limit)
    spec = None
    need_dense, need_sparse = True, bool(encoder.has_lexical)
    if index_spec is not None:
        from lexlens.index.spec import parse_spec, spec_needs

        spec = parse_spec(index_spec)
        _, spec_sparse = spec_needs(spec)
        if spec_sparse and not encoder.has_lexical:
            raise UsageError(
                f"index {spec} needs lexical weights; {encoder.name} has no lexical output"
            )
        if not spec_sparse and query_mode != "encoder":
            raise UsageError(
                f"query mode {query_mode} is for lexical indexes (sparse, hybrid); "
                f"index {spec} is dense"
            )

    if need_sparse or query_mode != "encoder":
        encoder.check_query_mode(query_mode)  # before any encoding
    _check_images_exist(es.images)
    texts, t2i_map = es.texts, es.text_to_image
    n_images, n_texts = len(es.images), len(texts)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    img_d = (
        encoder.encode_images(es.images, batch_size=batch_size, progress=progress)
        if need_dense
        else None
    )
    txt_d = (
        encoder.encode_texts(texts, batch_size=max(batch_size, 256), progress=progress)
        if need_dense
        else None
    )
    img_s = txt_s = None
    if need_sparse:
        img_s = encoder.encode_images_lexical(es.images, batch_size=batch_size, progress=progress)
        txt_s = encode_query_lexical(encoder, texts, query_mode, max(batch_size, 256), progress)
    seconds["encode"] = time.perf_counter() - t0

    out: dict[str, Any] = {
        "model": encoder.name,
        "index": None if spec is None else str(spec),
        "n_images": n_images,
        "n_texts": n_texts,
        "k_values": ks,
    }
    if need_sparse:
        out["query_mode"] = query_mode
    t0 = time.perf_counter()
    if spec is None:
        assert img_d is not None and txt_d is not None
        out.update(retrieval_block(txt_d @ img_d.T, t2i_map, ks))
        if img_s is not None and txt_s is not None:
            from lexlens.eval.exact import sparse_scores

            out["lexical"] = retrieval_block(sparse_scores(txt_s, img_s), t2i_map, ks)
    else:
        out.update(_through_index(spec, encoder, img_d, txt_d, img_s, txt_s, t2i_map, n_images, ks))
    seconds["score"] = time.perf_counter() - t0

    if es.fg and img_d is not None:
        t0 = time.perf_counter()
        out.update(_fg_block(encoder, es, img_d, img_s, batch_size, progress, query_mode))
        seconds["fine_grained"] = time.perf_counter() - t0

    fits_fn = _caption_fits()
    if es.records is not None and es.caption_meta is not None and fits_fn is not None:
        t0 = time.perf_counter()
        meta = [m for ms in es.caption_meta for m in ms]
        if len(meta) != n_texts:
            raise DataError(f"{len(meta)} caption meanings for {n_texts} captions")
        fits = fits_matrix(meta, es.records, fits_fn, progress=progress)
        out["ceiling"] = ceiling_block(fits, t2i_map, ks)
        seconds["ceiling"] = time.perf_counter() - t0
    out["seconds"] = seconds
    return out


def _through_index(
    spec: Any,
    encoder: Encoder,
    img_d: np.ndarray | None,
    txt_d: np.ndarray | None,
    img_s: SparseBatch | None,
    txt_s: SparseBatch | None,
    t2i_map: np.ndarray,
    n_images: int,
    ks: Sequence[int],
) -> dict[str, Any]:
    from lexlens.eval.exact import build_kind, exact_search, is_exact
    from lexlens.index.spec import spec_needs

    dense, sparse = spec_needs(spec)
    images = Vectors(dense=img_d if dense else None, sparse=img_s if sparse else None)
    texts = Vectors(dense=txt_d if dense else None, sparse=txt_s if sparse else None)
    vocab = img_s.vocab_size if img_s is not None else len(encoder.vocab)
    ctx = KindContext(dim=encoder.dim if dense else 0, vocab_size=vocab if sparse else 0)
    k = max(max(ks), 10)
    res = {}
    for direction, items, queries in (("t2i", images, texts), ("i2t", texts, images)):
        kind = build_kind(spec, items, ctx)
        res[direction] = kind.search(queries, k, SearchParams())[1]
    out = _results_block(res["t2i"], res["i2t"], t2i_map, n_images, ks)
    if not is_exact(spec):
        exact = {
            "t2i": exact_search(spec, images, texts, k, ctx)[1],
            "i2t": exact_search(spec, texts, images, k, ctx)[1],
        }
        out["exact"] = _results_block(exact["t2i"], exact["i2t"], t2i_map, n_images, ks)
        out["ann_recall@10"] = {d: M.ann_recall_at_k(res[d], exact[d], 10) for d in ("t2i", "i2t")}
    return out


# ----------------------------------------------------------------------------- datasets
def as_eval_set(dataset: Any) -> EvalSet:
    """An :class:`EvalSet` from a dataset returned by :func:`lexlens.data.readers.load_dataset`."""
    if isinstance(dataset, EvalSet):
        return dataset
    images = getattr(dataset, "images", None)
    captions = getattr(dataset, "captions", None)
    if images is None or captions is None:
        raise UsageError(f"cannot evaluate on a {type(dataset).__name__}")
    records = getattr(dataset, "records", None)
    meta = getattr(dataset, "caption_meta", None)
    fg_raw = getattr(dataset, "fg", None) or []
    position = {str(p): i for i, p in enumerate(images)}
    fg = []
    for item in fg_raw:
        get = item.get if isinstance(item, dict) else lambda k, _i=item: getattr(_i, k)
        i = position.get(str(get("image")))
        if i is not None:
            fg.append(FGItem(i, str(get("positive")), [str(n) for n in get("negatives")]))
    return EvalSet(
        images=list(images),
        captions=[list(c) for c in captions],
        records=None if not records or any(r is None for r in records) else list(records),
        caption_meta=None if not meta or any(m is None for m in meta) else [list(m) for m in meta],
        fg=fg,
    )


def load_eval_set(
    path: str,
    split: str | None = None,
    images_root: str | None = None,
    limit: int | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
) -> EvalSet:
    """Read any supported dataset (scenes folder, Karpathy JSON, CSV/Parquet) for evaluation;
    ``image_column`` / ``caption_column`` name a table's columns when not found by name."""
    try:
        from lexlens.data.readers import load_dataset
    except ImportError as e:  # the readers module is part of the data issue
        raise UsageError("dataset readers are not available in this build") from e
    ds = load_dataset(
        path,
        split=split,
        image_column=image_column,
        caption_column=caption_column,
        images_root=images_root,
    )
    return as_eval_set(ds).limit(limit)


# ----------------------------------------------------------------------------- report
def _row(label: str, block: dict[str, Any], ks: Sequence[int]) -> str:
    cells = [f"{block[f'R@{k}']:6.1f}" for k in ks]
    mean = block.get("mean_rank", block.get("mean_rank_lower_bound"))
    med = block.get("median_rank", block.get("median_rank_lower_bound"))
    bound = "" if "mean_rank" in block else ">="
    cells.append(f"{bound}{mean:.1f}".rjust(8))
    cells.append(f"{bound}{med:.1f}".rjust(8))
    return f"{label:<14}" + " ".join(cells)


def format_report(result: dict[str, Any]) -> str:
    """A small human-readable table of an :func:`evaluate` result."""
    ks = result.get("k_values", [1, 5, 10])
    head = f"{'':<14}" + " ".join(f"{'R@' + str(k):>6}" for k in ks) + f"{'mean':>9}{'median':>9}"
    scoring = "full matrix" if result.get("index") is None else f"index {result['index']}"
    lines = [
        f"{result['model']}: {result['n_images']} images, {result['n_texts']} captions, {scoring}",
        head,
        _row("text->image", result["t2i"], ks),
        _row("image->text", result["i2t"], ks),
        f"{'rSum':<14}{result['rsum']:.1f}",
    ]
    if "lexical" in result:
        lex = result["lexical"]
        lines += [
            _row("lexical t->i", lex["t2i"], ks),
            _row("lexical i->t", lex["i2t"], ks),
            f"{'lexical rSum':<14}{lex['rsum']:.1f}",
        ]
    if "ann_recall@10" in result:
        a = result["ann_recall@10"]
        lines.append(
            f"ANN recall@10 vs exact: text->image {a['t2i']:.1f}, image->text {a['i2t']:.1f}"
            f" (exact rSum {result['exact']['rsum']:.1f})"
        )
    if "fg_acc" in result:
        fg = f"fine-grained accuracy: {result['fg_acc']:.1f} (n={result['fg_n']})"
        if "fg_acc_lexical" in result:
            fg += f", lexical {result['fg_acc_lexical']:.1f}"
        lines.append(fg)
    if "ceiling" in result:
        c = result["ceiling"]
        lines += [
            _ceiling_row("ceiling t->i", c["t2i"], ks),
            _ceiling_row("ceiling i->t", c["i2t"], ks),
            f"{'ceiling rSum':<14}{c['rsum']:.1f}",
        ]
    return "\n".join(lines)


def _ceiling_row(label: str, block: dict[str, float], ks: Sequence[int]) -> str:
    return f"{label:<14}" + " ".join(f"{block[f'R@{k}']:6.1f}" for k in ks)
