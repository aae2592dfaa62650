"""clip-retrieval's back-end protocol (``POST /knn-service``, ``GET /indices-list``) over lexlens.

What each request field does here (clip-retrieval 2.45 ``clip_back.KnnService``):

* ``text`` / ``image`` (base64) / ``embedding_input``: the query, in that order of
  precedence (as clip-retrieval). ``image_url`` is refused with a 400: lexlens fetches
  nothing from the network; send the image bytes as base64 in ``image`` instead.
* ``indice_name``: the served index name (``/indices-list``); missing: the first index.
* ``modality``: ``"image"`` searches an image index, ``"text"`` an index of captions
  (built with ``--items texts``); the other combination is a 400.
* ``num_result_ids`` candidates are fetched (default ``num_images``), ``deduplicate``
  drops near duplicates among them (clip-retrieval's rule: the candidates' stored vectors
  form a graph with an edge where cosine >= 0.94; each connected component keeps its best
  ranked member), and the first ``num_images`` results carry metadata (``url``: the
  thumbnail URL, ``caption``, ``image_path`` and the item's own fields); later ones carry
  ``id`` and ``similarity`` only, as in clip-retrieval.
* ``use_safety_model``, ``use_violence_detector``, ``aesthetic_score`` and
  ``aesthetic_weight`` are accepted and ignored: lexlens has no safety, violence or
  aesthetic model (clip-retrieval ignores them too when it has none loaded).
  ``use_mclip=true`` is a 400 (no multilingual text model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from lexlens.errors import UsageError

if TYPE_CHECKING:
    from lexlens.server.backend import Backend, SearchOutcome
    from lexlens.server.schemas import KnnRequest

__all__ = ["DEDUP_THRESHOLD", "dedup_keep", "knn_query"]

#: cosine at or above which two results are duplicates (clip-retrieval's value)
DEDUP_THRESHOLD = 0.94


def dedup_keep(vectors: np.ndarray, threshold: float = DEDUP_THRESHOLD) -> list[int]:
    """Rows to keep: the first (best ranked) row of each connected component of the graph
    with an edge between rows whose cosine is >= ``threshold``; in rank order."""
    x = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms == 0, 1.0, norms)
    n = len(x)
    seen = np.zeros(n, bool)
    keep = []
    for start in range(n):
        if seen[start]:
            continue
        keep.append(start)
        seen[start] = True
        frontier = [start]
        while frontier:
            rest = np.flatnonzero(~seen)
            if len(rest) == 0:
                break
            sims = x[rest] @ x[frontier].T
            reached = rest[(sims >= threshold).any(axis=1)]
            seen[reached] = True
            frontier = reached.tolist()
    return keep


def knn_query(
    backend: Backend,
    req: KnnRequest,
    decode_image: Callable[[str], Any],
    thumb_url: Callable[[str, int], str],
    observe: Callable[[SearchOutcome], None] | None = None,
) -> list[dict[str, Any]]:
    """Answer one ``/knn-service`` request (blocking; see the module docstring)."""
    if req.image_url:
        raise UsageError(
            "image_url is not supported: lexlens does not fetch from the network; "
            "send the image itself, base64-encoded, in the 'image' field"
        )
    if req.use_mclip:
        raise UsageError("use_mclip is not supported: lexlens has no multilingual text model")
    name = backend.resolve(req.indice_name)
    items = backend.get(name).items
    wanted = "images" if req.modality == "image" else "texts"
    if items != wanted:
        raise UsageError(
            f"index {name!r} holds {items}; modality={req.modality!r} needs an index of {wanted}"
        )
    fetch = req.num_result_ids or req.num_images
    opts: dict[str, Any] = {"k": fetch, "explain": False}
    if req.text:
        out = backend.search_text(name, req.text, **opts)
    elif req.image:
        out = backend.search_image(name, decode_image(req.image), **opts)
    elif req.embedding_input is not None:
        out = backend.search_embedding(name, req.embedding_input, **opts)
    else:
        raise UsageError("empty query: give one of text, image or embedding_input")
    if observe is not None:
        observe(out)
    hits = out.hits
    if req.deduplicate and len(hits) > 1:
        vecs = backend.vectors(name, [h.id for h in hits])
        hits = [hits[i] for i in dedup_keep(vecs)]
    results = []
    for rank, h in enumerate(hits):
        row: dict[str, Any] = {}
        if rank < req.num_images:
            row.update({k: v for k, v in h.fields.items() if isinstance(k, str)})
            caption = h.text if h.text is not None else (h.captions[0] if h.captions else None)
            row.update(
                url=thumb_url(name, h.id) if h.path else None,
                caption=caption,
                image_path=h.path,
            )
        row.update(id=int(h.id), similarity=float(h.score))
        results.append(row)
    return results
