"""The object the HTTP routes talk to: named indexes and typed search / write methods.

:class:`Backend` holds one or more :class:`lexlens.Index` objects under names and exposes
one method per query type (``search_text``, ``search_image``, ``search_image_text``,
``search_item``, ``search_embedding``) plus ``add``, ``remove``, ``info`` and
``thumbnail_path``. Every search returns a :class:`SearchOutcome`: the hits with their
metadata and the time spent per stage:

* ``encode``: inside the model (text / image / lexical encoding), measured by wrapping
  the index's encoder in a :class:`TimedEncoder`;
* ``search``: the rest of :meth:`lexlens.Index.search` (the index structure, filters,
  the cut-off and the index's own metadata lookup);
* ``metadata``: turning the hits into response rows (captions, fields, explanations).

All methods are blocking and thread-safe; the app calls them from a worker thread.
:meth:`Backend.warm_up` runs one small search per index before serving, so that the first
request does not pay for first-call costs (a sparse index's compiled kernels, ~0.7 s).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lexlens.errors import NotFoundError, UsageError
from lexlens.models.base import Encoder, SparseBatch, WrappedEncoder, uses_default_preprocess

if TYPE_CHECKING:
    from collections.abc import Iterator

    from PIL import Image

    from lexlens.index.index import Index
    from lexlens.search import Hit, Query

__all__ = [
    "Backend",
    "SearchOutcome",
    "TimedEncoder",
    "STAGES",
    "REFRESH_SECONDS",
    "WARM_UP_TEXT",
    "jsonable",
]

#: the stages timed for each search, in pipeline order
STAGES = ("encode", "search", "metadata")
#: how often (seconds) an index checks for a generation published by another process
REFRESH_SECONDS = 1.0
#: the query of :meth:`Backend.warm_up`
WARM_UP_TEXT = "a red circle"

log = logging.getLogger("lexlens.server")

_clock = threading.local()


@contextmanager
def _encode_clock() -> Iterator[list[float]]:
    """Collect the seconds spent in :class:`TimedEncoder` calls on this thread."""
    acc = [0.0]
    prev = getattr(_clock, "acc", None)
    _clock.acc = acc
    try:
        yield acc
    finally:
        _clock.acc = prev


@contextmanager
def _timed() -> Iterator[None]:
    acc = getattr(_clock, "acc", None)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if acc is not None:
            acc[0] += time.perf_counter() - t0


class TimedEncoder(WrappedEncoder):
    """An :class:`Encoder` that forwards to ``inner`` and records the time spent encoding.

    The same vectors as ``inner`` (it is the same model); only the clock differs. Its
    ``preprocess`` is the inner model's: the default one (the inner model's settings, which
    :mod:`lexlens.index.ingest` sends to its decoding processes without the model, as for
    ``lexlens index add``), or, when the inner model has its own, that one. So adding a
    dataset through the server never has to pickle this wrapper's model.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> TimedEncoder:
        inner = args[0] if args else kwargs.get("inner")  # none when unpickled
        if cls is TimedEncoder and inner is not None and not uses_default_preprocess(inner):
            cls = _OwnPreprocessTimedEncoder
        return super().__new__(cls)

    @property
    def has_lexical(self) -> bool:
        return self.inner.has_lexical

    @property
    def vocab(self) -> Sequence[str]:
        return self.inner.vocab

    @property
    def lexical_query_modes(self) -> tuple[str, ...]:
        return self.inner.lexical_query_modes

    def encode_images(self, images: Sequence[Any], batch_size: int = 64, progress: bool = False):
        with _timed():
            return self.inner.encode_images(images, batch_size=batch_size, progress=progress)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False):
        with _timed():
            return self.inner.encode_texts(texts, batch_size=batch_size, progress=progress)

    def encode_text_queries(
        self, texts: Sequence[str], mode: str = "encoder", batch_size: int = 256
    ) -> tuple[np.ndarray, SparseBatch]:
        with _timed():
            return self.inner.encode_text_queries(texts, mode, batch_size=batch_size)

    def encode_images_lexical(
        self, images: Sequence[Any], batch_size: int = 64, progress: bool = False
    ) -> SparseBatch:
        with _timed():
            return self.inner.encode_images_lexical(
                images, batch_size=batch_size, progress=progress
            )

    def encode_texts_lexical(
        self,
        texts: Sequence[str],
        batch_size: int = 256,
        progress: bool = False,
        mode: str = "encoder",
    ) -> SparseBatch:
        from lexlens.models.base import encode_query_lexical

        with _timed():
            return encode_query_lexical(self.inner, texts, mode, batch_size, progress)

    @property
    def explained_text_queries(
        self,
    ) -> Callable[..., tuple[np.ndarray, SparseBatch, list[dict[int, str]]]] | None:
        """The inner encoder's query vectors with their query-word attribution, from one pass
        (timed), or ``None`` when it has none (:mod:`lexlens.models.attribution`)."""
        explained = getattr(self.inner, "explained_text_queries", None)
        if explained is None:
            return None

        def timed(
            texts: Sequence[str], query_mode: str = "encoder"
        ) -> tuple[np.ndarray, SparseBatch, list[dict[int, str]]]:
            with _timed():
                return explained(texts, query_mode)

        return timed

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class _OwnPreprocessTimedEncoder(TimedEncoder):
    """A :class:`TimedEncoder` over a model with its own ``preprocess``."""

    def preprocess(self, image: Any) -> np.ndarray:
        return self.inner.preprocess(image)


def jsonable(x: Any) -> Any:
    """``x`` with numpy scalars / arrays, tuples and paths turned into JSON types."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if x is None or isinstance(x, str | int | float | bool):
        return x
    return str(x)


@dataclass
class SearchOutcome:
    """The hits of one query (JSON-ready :class:`lexlens.search.Hit`), what the query was,
    and the seconds spent per stage."""

    index: str
    query: str
    hits: list[Hit]
    timings: dict[str, float]


def _check_text(text: str) -> str:
    """``text`` if it can be encoded; an empty one is refused by :class:`Query` itself."""
    if not isinstance(text, str):
        raise UsageError("empty query text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("query text is not valid UTF-8 (lone surrogate characters)") from None
    return text


class Backend:
    """Named indexes and typed, thread-safe operations on them (see the module docstring)."""

    def __init__(self, indexes: Mapping[str, Index]) -> None:
        if not indexes:
            raise UsageError("serve at least one index")
        self._indexes: dict[str, Index] = dict(indexes)
        self._write_lock = threading.Lock()
        self._checked: dict[str, float] = {}

    # ------------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        names: Sequence[str] | None = None,
        encoder: Encoder | None = None,
    ) -> Backend:
        """Open the indexes at ``paths`` under ``names`` (default: each folder's name).

        Each model is loaded once (``encoder`` replaces the loading, for tests) and wrapped in
        a :class:`TimedEncoder`.
        """
        from lexlens.index.index import Index

        paths = [Path(p) for p in paths]
        if names and len(names) != len(paths):
            raise UsageError(
                f"{len(names)} names for {len(paths)} indexes; give one --name per index"
            )
        chosen = list(names) if names else [p.resolve().name or "index" for p in paths]
        if len(set(chosen)) != len(chosen):
            raise UsageError(f"index names must differ, got {chosen}; use --name")
        for n in chosen:
            _check_name(n)
        encoders: dict[str, Encoder] = {}
        out: dict[str, Index] = {}
        for name, p in zip(chosen, paths, strict=True):
            model = Index.open(p).info()["model"]
            if model not in encoders:
                if encoder is not None and encoder.name == model:
                    inner = encoder
                else:
                    from lexlens.models.registry import load_encoder

                    inner = load_encoder(model)
                encoders[model] = TimedEncoder(inner)
            out[name] = Index.open(p, model=encoders[model])
        return cls(out)

    # ------------------------------------------------------------------------ inspecting
    @property
    def names(self) -> list[str]:
        """Served index names, in the order given."""
        return list(self._indexes)

    def get(self, name: str | None) -> Index:
        """The index called ``name`` (``None``: the first one); :class:`NotFoundError` if unknown.

        At most once a second per index, a generation published meanwhile by another process
        (``lexlens index add`` while serving) is picked up.
        """
        key = self.names[0] if name is None else name
        idx = self._indexes.get(key)
        if idx is None:
            raise NotFoundError(f"no index named {name!r}; served: {', '.join(self._indexes)}")
        now = time.monotonic()
        if now - self._checked.get(key, 0.0) >= REFRESH_SECONDS:
            self._checked[key] = now
            idx.refresh()
        return idx

    def resolve(self, name: str | None) -> str:
        """The served name for ``name`` (``None`` -> the first index)."""
        self.get(name)
        return name if name is not None else self.names[0]

    def info(self, name: str | None = None) -> dict[str, Any]:
        """Facts about one index (``lexlens index info``) plus its served name."""
        idx = self.get(name)
        return {"name": self.resolve(name), **jsonable(idx.info())}

    def summaries(self) -> list[dict[str, Any]]:
        """Short facts about every served index."""
        keys = ("name", "path", "model", "spec", "items", "count", "dim", "generation")
        return [{k: self.info(n)[k] for k in keys} for n in self.names]

    def thumbnail_path(self, name: str, item_id: int) -> Path:
        """The image file of item ``item_id`` as the index recorded it (never a path from outside)."""
        idx = self.get(name)
        row = idx.rows([int(item_id)]).get(int(item_id))
        if row is None or not row.path:
            raise NotFoundError(f"no item {item_id} with an image in index {name!r}")
        p = Path(row.path)
        if not p.is_file():
            raise NotFoundError(f"the image of item {item_id} is no longer on disk")
        return p

    def vectors(self, name: str | None, ids: Sequence[int]) -> np.ndarray:
        """Stored dense vectors of items, ``float32 [len(ids), d]``."""
        vecs = self.get(name).vectors(list(ids))
        if vecs.dense is None:
            raise UsageError("this index keeps no dense vectors")
        return np.asarray(vecs.dense, np.float32)

    # ------------------------------------------------------------------------ searching
    def search_text(self, name: str | None, text: str, **opts: Any) -> SearchOutcome:
        """Text -> items. ``opts``: ``k``, ``min_score``, ``where``, ``explain``,
        ``query_mode`` (lexical indexes: ``"encoder"`` or ``"inference-free"``)."""
        from lexlens.search import Query

        return self._search(name, Query(text=_check_text(text)), **opts)

    def search_image(self, name: str | None, image: Image.Image, **opts: Any) -> SearchOutcome:
        """Image (a decoded PIL image) -> items."""
        from lexlens.search import Query

        return self._search(name, Query(image=image), **opts)

    def search_image_text(
        self, name: str | None, image: Image.Image, text: str, weight: float = 0.5, **opts: Any
    ) -> SearchOutcome:
        """Image + text, ``weight`` = the share of the text (0..1)."""
        from lexlens.search import Query

        return self._search(name, Query(image=image, text=_check_text(text), weight=weight), **opts)

    def search_item(self, name: str | None, item_id: int, **opts: Any) -> SearchOutcome:
        """More like a stored item (its own vectors)."""
        from lexlens.search import Query

        idx = self.get(name)
        if not idx.rows([int(item_id)]):
            raise NotFoundError(f"no item {item_id} in index {self.resolve(name)!r}")
        return self._search(name, Query(item=int(item_id)), **opts)

    def search_embedding(
        self, name: str | None, embedding: Sequence[float] | np.ndarray, **opts: Any
    ) -> SearchOutcome:
        """A raw embedding ``[d]`` (dense indexes only)."""
        from lexlens.search import Query, check_embeddings

        vec = np.asarray(embedding)
        if vec.ndim != 1:
            raise UsageError(f"the embedding must be a flat list of numbers, got shape {vec.shape}")
        return self._search(name, Query(embedding=check_embeddings(vec)[0]), **opts)

    def _search(
        self,
        name: str | None,
        query: Query,
        k: int = 10,
        min_score: float | None = None,
        where: str | None = None,
        explain: bool = True,
        query_mode: str = "encoder",
    ) -> SearchOutcome:
        idx = self.get(name)
        t0 = time.perf_counter()
        with _encode_clock() as enc:
            res = idx.search(
                query,
                k=k,
                min_score=min_score,
                where=where,
                explain=explain,
                query_mode=query_mode,
            )
        t1 = time.perf_counter()
        from lexlens.search import Hit

        hits = [
            Hit(
                h.rank,
                h.id,
                float(h.score),
                h.path,
                h.text,
                list(h.captions or []),
                jsonable(h.fields or {}),
                jsonable(h.explain),
                jsonable(h.explain_words),
            )
            for h in res.hits[0]
        ]
        t2 = time.perf_counter()
        timings = {"encode": enc[0], "search": max(0.0, t1 - t0 - enc[0]), "metadata": t2 - t1}
        return SearchOutcome(self.resolve(name), res.queries[0], hits, timings)

    def warm_up(self) -> dict[str, float | str]:
        """One small search per index, as a request would run it (a text query, k=1,
        explained), before serving: the first real request would otherwise pay for loading
        compiled kernels and files and for the model's first calls (~0.7 s on a ``sparse``
        index, against milliseconds later). Nothing is stored and no metric is recorded, so
        no later result changes.

        Returns the seconds each index took, or the error's text when its search failed: a
        warm-up failure is logged, never fatal (the same request would report it).
        """
        from lexlens.search import Query

        took: dict[str, float | str] = {}
        for name in self.names:
            t0 = time.perf_counter()
            try:
                self._search(name, Query(text=WARM_UP_TEXT), k=1, explain=True)
            except Exception as e:
                took[name] = f"{type(e).__name__}: {e}"
                log.warning("warm-up search on index %r failed: %s", name, took[name])
            else:
                took[name] = time.perf_counter() - t0
                log.debug("index %r warmed up in %.0f ms", name, 1000 * took[name])
        return took

    # ------------------------------------------------------------------------ writing
    def add(self, name: str | None, source: Any) -> dict[str, Any]:
        """Add what is new or changed in ``source`` (a path on the server, or
        :class:`~lexlens.index.ingest.SourceItem` objects); the add report."""
        idx = self.get(name)
        with self._write_lock:
            return jsonable(idx.add(source, progress=False))

    def remove(
        self,
        name: str | None,
        ids: Iterable[int] = (),
        paths: Iterable[str] = (),
        missing: bool = False,
    ) -> int:
        """Remove items by id or path (and, with ``missing``, those whose file is gone)."""
        idx = self.get(name)
        targets: list[int | str] = [int(i) for i in ids] + [str(p) for p in paths]
        with self._write_lock:
            return idx.remove(targets, missing=missing)


def _check_name(name: str) -> None:
    if not name or "/" in name or name != name.strip() or len(name) > 100:
        raise UsageError(f"bad index name {name!r}: 1-100 characters, no '/' or edge spaces")
