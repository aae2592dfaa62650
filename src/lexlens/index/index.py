"""``lexlens.Index``: build, open, add to, remove from, inspect and search an on-disk index.

The format is described in :mod:`lexlens.index.store`; the query pipeline lives in
:mod:`lexlens.search`. An :class:`Index` object reads one immutable generation; ``add`` and
``remove`` write the next one and switch to it, and :meth:`Index.refresh` picks up a
generation published by another process. Searching from several threads at once is safe.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lexlens.errors import DataError, IndexMismatchError, NotFoundError, UsageError
from lexlens.index.base import IndexKind, KindContext, SearchParams, Vectors
from lexlens.index.ingest import (
    Checkpoints,
    EncodedBatch,
    ItemRecord,
    ReaderOptions,
    SourceItem,
    encode_items,
    file_sha256,
    file_stat,
    read_source,
    sparse_from_rows,
)
from lexlens.index.spec import (
    IndexSpec,
    create_kind,
    default_spec,
    load_kind,
    parse_spec,
    spec_needs,
)
from lexlens.index.store import (
    META,
    GenerationWriter,
    IndexDir,
    ItemRow,
    Manifest,
    MetaDB,
    now_iso,
    write_rows,
)
from lexlens.models.base import Encoder, SparseBatch

if TYPE_CHECKING:
    from lexlens.index.dups import DupGroup
    from lexlens.search import Query, SearchResults

__all__ = [
    "Index",
    "AddReport",
    "EncodeFn",
    "index_info",
    "model_fingerprint",
    "nothing_read_error",
]

#: a replacement for the local encoding loop: ``(todo, want_sparse) -> encoded batches``
EncodeFn = Callable[[Sequence[SourceItem], bool], Iterable[EncodedBatch]]

#: the text whose embedding fingerprints the model an index was built with
PROBE_TEXT = "a red circle above a blue square"
#: files recorded less than this long after their mtime are re-hashed by ``add``
RACY_SECONDS = 2.0
#: how many unreadable files an add report lists (``failed_paths``, ``failed_errors``)
MAX_FAILED_LISTED = 50
#: the ``failed_errors`` entry of a file that does not exist
MISSING_FILE = "no such file"


def _probe_image() -> Any:
    from PIL import Image

    yy, xx = np.mgrid[0:64, 0:64]
    pixels = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def _probe(enc: Encoder) -> np.ndarray:
    """The model's fingerprint: embeddings of a fixed text and a fixed image, concatenated."""
    return np.concatenate(
        [enc.encode_texts([PROBE_TEXT])[0], enc.encode_images([_probe_image()])[0]]
    )


def _lexical_probe(enc: Encoder) -> dict[str, list[list[float]]]:
    """The lexical fingerprint: the fixed text's and image's sparse vectors as
    ``[[word id, weight], ...]`` (a model whose lexicon heads were refitted keeps its dense
    embeddings, so :func:`_probe` alone would not notice)."""
    out = {}
    for what, encode in (
        ("text", lambda: enc.encode_texts_lexical([PROBE_TEXT])),
        ("image", lambda: enc.encode_images_lexical([_probe_image()])),
    ):
        try:
            ids, weights = encode().row(0)
        except NotImplementedError:  # a model with lexical output on one side only
            continue
        out[what] = [[int(i), round(float(w), 6)] for i, w in zip(ids, weights, strict=True)]
    return out


def model_fingerprint(enc: Encoder) -> str:
    """A short hash of the model's probe outputs (dense, and lexical when it has them): it
    changes when the weights do, under the same model name (e.g. for caches of vectors)."""
    import hashlib

    h = hashlib.sha1(np.round(_probe(enc), 5).astype(np.float32).tobytes())
    if enc.has_lexical:
        h.update(json.dumps(_lexical_probe(enc), sort_keys=True).encode())
    return h.hexdigest()[:12]


def _same_lexical(a: list[list[float]], b: list[list[float]]) -> bool:
    """Cosine of two ``[[id, weight], ...]`` vectors >= 0.99 (both empty: the same)."""
    da = {int(i): float(w) for i, w in a}
    db = {int(i): float(w) for i, w in b}
    dot = sum(w * db.get(i, 0.0) for i, w in da.items())
    na = float(np.sqrt(sum(w * w for w in da.values())))
    nb = float(np.sqrt(sum(w * w for w in db.values())))
    if na == 0.0 or nb == 0.0:
        return na == nb
    return dot / (na * nb) >= 0.99


@dataclass
class AddReport:
    """What an ``add`` (or ``build``) did."""

    added: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    relabelled: int = 0
    removed: int = 0
    reused: int = 0
    count: int = 0
    generation: int = 0
    failed_paths: list[str] = field(default_factory=list)
    #: why each of ``failed_paths`` could not be read (same order)
    failed_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def _fail(self, path: str, why: str) -> None:
        self.failed += 1
        if len(self.failed_paths) < MAX_FAILED_LISTED:
            self.failed_paths.append(path)
            self.failed_errors.append(why)


def nothing_read_error(source: Any, report: dict[str, Any], after: str) -> DataError | None:
    """The one-line error of an add or build where every item failed (none was added,
    updated or found unchanged), or ``None`` when something could be read. ``after`` ends
    the line (what became of the index)."""
    if not report.get("failed") or any(report.get(k) for k in ("added", "updated", "skipped")):
        return None
    paths, errors = report.get("failed_paths") or [""], report.get("failed_errors") or [""]
    first, why = paths[0], errors[0]
    if any("\\" in p for p in paths):
        hint = "the dataset's image paths hold backslashes (Windows paths?): write them with /"
    elif all(e == MISSING_FILE for e in errors):
        hint = "relative image paths start from the dataset's folder (--images DIR sets another)"
    else:
        hint = "are they image files? (`lexlens data info SOURCE` checks a dataset)"
    name = str(source) if isinstance(source, str | os.PathLike) else "the source"
    n = int(report["failed"])
    return DataError(
        f"none of the {n} image{'s' if n != 1 else ''} of {name} could be read "
        f"(first: {first}: {why}); {hint}; {after}"
    )


@dataclass
class _State:
    """One opened generation (never mutated; replaced as a whole)."""

    gen: Path
    manifest: Manifest
    spec: IndexSpec
    ids: np.ndarray
    dense: np.ndarray | None
    sparse: SparseBatch | None
    kind: IndexKind
    meta: MetaDB

    def slots(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in the arrays (``-1`` for unknown ids)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(ids.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1)


def _resolve_encoder(model: str | Encoder) -> Encoder:
    if isinstance(model, Encoder):
        return model
    from lexlens.models.registry import load_encoder

    return load_encoder(str(model))


def _model_name(model: str | Encoder) -> str:
    return model.name if isinstance(model, Encoder) else str(model).strip()


def _ctx(man: Manifest) -> KindContext:
    return KindContext(dim=man.dim, vocab_size=man.vocab_size)


def _load_state(store: IndexDir, check: bool = True, gen: Path | None = None) -> _State:
    gen = store.current() if gen is None else gen
    man = store.read_manifest(gen)
    if check:
        problems = store.verify(gen, full=False)
        if problems:
            raise DataError(
                f"{store.root} is damaged ({problems[0]}); see `lexlens index info {store.root} --verify`"
            )
    spec = parse_spec(man.spec)
    ids = np.load(gen / "ids.npy", mmap_mode="r")
    dense = np.load(gen / "dense.npy", mmap_mode="r") if man.has_dense else None
    sparse = None
    if man.has_sparse:
        vocab = (
            json.loads((gen / "vocab.json").read_text()) if (gen / "vocab.json").exists() else None
        )
        sparse = SparseBatch(
            np.load(gen / "sparse_indptr.npy", mmap_mode="r"),
            np.load(gen / "sparse_indices.npy", mmap_mode="r"),
            np.load(gen / "sparse_values.npy", mmap_mode="r"),
            man.vocab_size,
            vocab,
        )
    kind = load_kind(spec, gen / "kind", _ctx(man), mmap=True)
    return _State(gen, man, spec, np.asarray(ids), dense, sparse, kind, MetaDB(gen / META))


class Index:
    """An on-disk index of images (or captions) under one model; see the module docstring."""

    def __init__(self, path: Path, state: _State, encoder: Encoder | None = None) -> None:
        self.path = Path(path)
        self._store = IndexDir(self.path)
        self._state = state
        self._encoder = encoder
        #: the report of this object's latest ``add`` (or of the ``build`` that made it)
        self.last_report: dict[str, Any] = {}
        self._lock = threading.Lock()
        if encoder is not None:
            self._check_encoder(encoder)

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, model: str | Encoder | None = None) -> Index:
        """Open an index; ``model`` (a spec or an :class:`Encoder`) must be the one it was built with.

        Without ``model`` the index's own model is loaded when a query needs encoding.
        Raises :class:`IndexMismatchError` when ``model`` differs.
        """
        store = IndexDir(path)
        state = _load_state(store)
        encoder = None
        if model is not None:
            name = _model_name(model)
            if name != state.manifest.model:
                raise IndexMismatchError(
                    f"{path} was built with model {state.manifest.model!r}, not {name!r}; "
                    "open it with that model or rebuild the index"
                )
            encoder = model if isinstance(model, Encoder) else None
        return cls(Path(path), state, encoder)

    def refresh(self) -> bool:
        """Switch to the newest published generation; returns whether it changed."""
        gen = self._store.current()
        if gen == self._state.gen:
            return False
        self._state = _load_state(self._store)
        return True

    @property
    def encoder(self) -> Encoder:
        """The model (loaded on first use from the manifest's model spec)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = _resolve_encoder(self._state.manifest.model)
                self._check_encoder(self._encoder)
            return self._encoder

    def _check_encoder(self, enc: Encoder) -> None:
        man = self._state.manifest
        if enc.name != man.model:
            raise IndexMismatchError(
                f"{self.path} was built with model {man.model!r}, not {enc.name!r}"
            )
        if enc.dim != man.dim:
            raise IndexMismatchError(
                f"{self.path} holds {man.dim}-d vectors; model {enc.name} gives {enc.dim}-d"
            )
        if man.model_probe:
            probe = _probe(enc)
            stored = np.asarray(man.model_probe, np.float32)
            # each half is a unit vector: both must agree (cosine >= 0.99 each, so sum >= 1.98)
            if probe.shape != stored.shape or float(np.dot(probe, stored)) < 1.98:
                raise IndexMismatchError(
                    f"model {enc.name} no longer gives the embeddings {self.path} was built with "
                    "(retrained?); rebuild the index"
                )
        if man.lexical_probe:
            now = _lexical_probe(enc) if enc.has_lexical else {}
            if any(not _same_lexical(v, now.get(k, [])) for k, v in man.lexical_probe.items()):
                raise IndexMismatchError(
                    f"model {enc.name} no longer gives the lexical weights {self.path} was built "
                    "with (lexicon heads retrained?); rebuild the index"
                )

    # ----------------------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
        source: Any,
        model: str | Encoder,
        out: str | Path,
        spec: str | IndexSpec | None = None,
        items: str = "images",
        progress: bool = True,
        workers: int | None = None,
        batch_size: int = 256,
        encode_with: EncodeFn | None = None,
        backend: str | None = None,
        reader: ReaderOptions | None = None,
    ) -> Index:
        """Encode ``source`` with ``model`` into a new index at ``out``.

        ``spec`` defaults to :func:`lexlens.index.spec.default_spec` for the collection size.
        ``items="texts"`` indexes the captions (for image -> text search). An interrupted
        build resumes when run again with the same arguments (encoded batches are kept).
        ``encode_with(todo, want_sparse)`` replaces the local encoding (e.g. Ray); it returns
        :class:`~lexlens.index.ingest.EncodedBatch` objects in any order.
        ``backend="milvus://PATH_OR_URI"`` keeps the searchable structure in Milvus
        (:mod:`lexlens.scale.milvus`; the spec becomes ``milvus(SPEC)``). ``reader`` says how
        a dataset path is read (image / caption column, images folder).

        When no image of ``source`` can be read, raises :class:`DataError` (one line: how
        many, the first path and why) and leaves no index behind when this call created it.
        """
        out = Path(out)
        store = IndexDir(out)
        encoder = _resolve_encoder(model)
        todo = read_source(source, items, reader)
        if not todo and items == "texts":
            raise DataError(f"{source} has no captions; a caption index (--items texts) needs them")
        parsed = (
            parse_spec(spec)
            if spec is not None
            else default_spec(len(todo), encoder.has_lexical, encoder.dim)
        )
        needs_dense, needs_sparse = spec_needs(parsed)
        if needs_sparse and not encoder.has_lexical:
            raise UsageError(
                f"index {parsed} needs a lexical model; {encoder.name} has no lexical output"
            )
        vocab_size = len(encoder.vocab) if needs_sparse else 0
        if backend is not None:  # an external engine holds the structure (lexlens.scale)
            from lexlens.scale.milvus import wrap_spec

            parsed = wrap_spec(parsed)
        else:
            create_kind(parsed, KindContext(dim=encoder.dim, vocab_size=vocab_size))  # validate
        if store.exists():
            man = store.read_manifest()
            if (man.model, man.spec, man.items) != (encoder.name, str(parsed), items):
                raise UsageError(
                    f"{out} already holds an index ({man.model}, {man.spec}, {man.items}); "
                    "use `lexlens index add` or choose another --out"
                )
        elif out.exists() and any(
            p.name not in ("lock", "pending", "staging") for p in out.iterdir()
        ):
            raise UsageError(f"{out} exists and is not an index; choose an empty or new directory")
        else:
            before = set(out.iterdir()) if out.exists() else None
            cls._create_empty(store, encoder, parsed, items, needs_sparse, backend)
            index = cls(out, _load_state(store), encoder)
            # (an interrupted build keeps what it wrote: run again, it resumes)
            report = index._add_items(todo, progress, workers, batch_size, encode_with)
            err = nothing_read_error(source, report.to_dict(), "no index was written")
            if err is not None:
                _undo_create(out, before)
                raise err
            return index
        index = cls(out, _load_state(store), encoder)
        report = index._add_items(todo, progress, workers, batch_size, encode_with)
        err = nothing_read_error(source, report.to_dict(), f"{out} is unchanged")
        if err is not None:
            raise err
        return index

    @staticmethod
    def _create_empty(
        store: IndexDir,
        encoder: Encoder,
        spec: IndexSpec,
        items: str,
        sparse: bool,
        backend: str | None = None,
    ) -> None:
        from lexlens import __version__

        ctx = KindContext(dim=encoder.dim, vocab_size=len(encoder.vocab) if sparse else 0)
        now = now_iso()
        man = Manifest(
            model=encoder.name,
            spec=str(spec),
            items=items,
            dim=encoder.dim,
            vocab_size=ctx.vocab_size,
            has_dense=True,
            has_sparse=sparse,
            created=now,
            model_probe=[round(float(v), 6) for v in _probe(encoder)],
            lexical_probe=_lexical_probe(encoder) if sparse else {},
            lexlens_version=__version__,
        )
        with store.writer() as w:
            np.save(w.dir / "ids.npy", np.zeros(0, np.int64))
            np.save(w.dir / "dense.npy", np.zeros((0, encoder.dim), np.float32))
            if sparse:
                _save_sparse(
                    w.dir,
                    SparseBatch(
                        np.zeros(1, np.int64),
                        np.zeros(0, np.int32),
                        np.zeros(0, np.float32),
                        ctx.vocab_size,
                    ),
                )
                (w.dir / "vocab.json").write_text(json.dumps(list(encoder.vocab)))
            MetaDB(w.dir / META, writable=True).commit()
            (w.dir / "kind").mkdir()
            if backend is not None:
                from lexlens.scale.milvus import backend_kind

                backend_kind(backend, spec, ctx, store.root).save(w.dir / "kind")
            else:
                create_kind(spec, ctx).save(w.dir / "kind")
            w.publish(man)

    # ----------------------------------------------------------------------------- add
    def add(
        self,
        source: Any,
        progress: bool = True,
        workers: int | None = None,
        batch_size: int = 256,
        encode_with: EncodeFn | None = None,
        reader: ReaderOptions | None = None,
    ) -> dict[str, Any]:
        """Add what is new or changed in ``source``; returns the report as a dict.

        Keys: ``added`` (new items), ``updated`` (changed files, re-encoded under new ids),
        ``skipped`` (unchanged: same path and size+mtime, or same bytes), ``failed``
        (unreadable files, listed in ``failed_paths`` with the reasons in ``failed_errors``;
        :func:`nothing_read_error` tells an add where every file failed), ``relabelled`` (captions or user
        fields changed, no re-encoding), ``removed`` (captions of a caption index that the
        source no longer gives their image), ``reused`` (taken from an interrupted add's
        checkpoints), ``count`` and ``generation`` after the add.

        In a caption index the captions of every image ``source`` lists become exactly the
        ones it gives: unchanged captions are kept (not re-encoded), new ones added, the
        others removed. Images it does not list keep their captions, as an image index keeps
        the items a source does not list (``remove`` drops them).
        """
        todo = read_source(source, self._state.manifest.items, reader)
        return self._add_items(todo, progress, workers, batch_size, encode_with).to_dict()

    def _add_items(
        self,
        todo: Sequence[SourceItem],
        progress: bool,
        workers: int | None,
        batch_size: int,
        encode_with: EncodeFn | None = None,
    ) -> AddReport:
        enc = self.encoder
        with self._store.writer() as w:
            self.refresh()
            st = self._state
            man = st.manifest
            report = AddReport()
            plan = _classify(st, todo, report)
            ck = Checkpoints(self._store.pending, man.model)
            cached, _ = ck.load()
            fresh: list[SourceItem] = []
            batches: list[EncodedBatch] = []
            reused: list[tuple[ItemRecord, np.ndarray, Any]] = []
            for item, stat in plan.encode:
                hit = cached.get(Checkpoints.key(item, stat))
                if hit is not None:
                    rec, vec, srow = hit
                    rec.captions, rec.fields = item.captions, item.fields
                    reused.append((rec, vec, srow))
                else:
                    fresh.append(item)
            report.reused = len(reused)
            if encode_with is not None:
                encoded = encode_with(fresh, man.has_sparse) if fresh else []
            else:
                encoded = encode_items(
                    fresh, enc, man.items, man.has_sparse, batch_size, workers, progress
                )
            failures: dict[str, str] = {}
            for batch in encoded:
                ck.write(batch)
                batches.append(batch)
                for p, why in batch.failed:
                    failures.setdefault(p, why)
            failed_paths = set(failures)
            for p in sorted(failures):
                report._fail(p, failures[p])
            records, dense, sparse = _collect(reused, batches, man)
            encoded_paths = {r.path for r in records}
            # a changed file that could not be read keeps its old entry
            remove = [i for i, p in plan.replaced if p in encoded_paths or p not in failed_paths]
            remove += plan.stale
            report.removed = len(plan.stale)
            report.updated = sum(1 for _, p in plan.replaced if p in encoded_paths)
            report.added = len(records) - report.updated
            if records or remove or plan.stat_updates or plan.label_updates:
                _write_generation(w, st, np.asarray(remove, np.int64), records, dense, sparse, plan)
                self._state = _load_state(self._store)
            ck.clear()
        report.count = self._state.manifest.count
        report.generation = self._state.manifest.generation
        self.last_report = report.to_dict()
        return report

    # ----------------------------------------------------------------------------- remove
    def remove(
        self,
        paths_or_ids: Iterable[str | int | os.PathLike[str]] | None = None,
        missing: bool = False,
    ) -> int:
        """Remove items by id or path (all captions of a path in a caption index) and, with
        ``missing=True``, every item whose file no longer exists. Returns how many were removed."""
        with self._store.writer() as w:
            self.refresh()
            st = self._state
            ids: set[int] = set()
            paths: list[str] = []
            for x in paths_or_ids or []:
                if isinstance(x, int | np.integer) and not isinstance(x, bool):
                    ids.add(int(x))
                else:
                    paths.append(os.path.abspath(os.fspath(x)))
            for found in st.meta.ids_by_path(paths).values():
                ids.update(found)
            if missing:
                ids.update(
                    r.id for r in st.meta.all_rows() if r.path and not os.path.exists(r.path)
                )
            arr = np.fromiter(ids, np.int64, len(ids))
            known = np.unique(arr[st.slots(arr) >= 0])
            if len(known) == 0:
                return 0
            _write_generation(w, st, known, [], None, None, _Plan())
            self._state = _load_state(self._store)
            return len(known)

    # ----------------------------------------------------------------------------- inspect
    def info(self, verify: bool = False) -> dict[str, Any]:
        """Manifest facts, counts, sizes; ``verify=True`` re-hashes every file (an index too
        damaged to open is inspected with :func:`index_info`)."""
        st = self._state
        out = _info_dict(self.path, self._store, st.manifest, st.kind.memory_bytes())
        if verify:
            problems = self._store.verify(st.gen, full=True)
            out["verified"] = not problems
            out["problems"] = problems
        return out

    def __len__(self) -> int:
        return self._state.manifest.count

    @property
    def spec(self) -> IndexSpec:
        """The index's parsed spec."""
        return self._state.spec

    @property
    def items(self) -> str:
        """``"images"`` or ``"texts"``."""
        return self._state.manifest.items

    def rows(self, ids: Iterable[int]) -> dict[int, ItemRow]:
        """Metadata rows of the given ids."""
        return self._state.meta.rows(ids)

    def unknown_fields(self, where: str | None) -> list[str]:
        """The user fields a ``where`` filter names that no item has (such a condition matches
        nothing, except ``!=``); the item columns (``id``, ``path``, ...) always exist."""
        from lexlens.index.filters import COLUMNS, parse_where

        names = dict.fromkeys(c.field for c in parse_where(where) if c.field not in COLUMNS)
        return [f for f in names if not self._state.meta.has_field(f)]

    def shadowed_fields(self, where: str | None) -> list[str]:
        """The item columns (``id``, ``path``, ``text``, ``size``, ``mtime``) a ``where``
        filter names that some item also has as a user field of its own: the condition tests
        the column, never that field (a dataset's ``size`` or ``id`` key is kept with the item
        and shown, but ``--where`` cannot reach it)."""
        from lexlens.index.filters import COLUMNS, parse_where

        names = dict.fromkeys(c.field for c in parse_where(where) if c.field in COLUMNS)
        return [f for f in names if self._state.meta.has_field(f)]

    def ids_of(self, paths: Iterable[str | os.PathLike[str]]) -> dict[str, list[int]]:
        """``{absolute path: ids}`` of the given file paths that the index holds (a caption
        index has one id per caption of a path); paths it does not hold are left out."""
        return self._state.meta.ids_by_path(os.path.abspath(os.fspath(p)) for p in paths)

    def vectors(self, ids: Sequence[int]) -> Vectors:
        """The stored vectors of items (raises :class:`NotFoundError` for unknown ids)."""
        st = self._state
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        slots = st.slots(ids)
        if (slots < 0).any():
            raise NotFoundError(f"no item with id {int(ids[slots < 0][0])} in {self.path}")
        dense = np.asarray(st.dense[slots], np.float32) if st.dense is not None else None
        sparse = None
        if st.sparse is not None:
            sparse = sparse_from_rows((st.sparse.row(int(s)) for s in slots), st.sparse.vocab_size)
            sparse.vocab = st.sparse.vocab
        return Vectors(dense=dense, sparse=sparse)

    # ----------------------------------------------------------------------------- search
    def search(
        self,
        query: Query | Sequence[Query] | str,
        k: int = 10,
        params: SearchParams | None = None,
        min_score: float | None = None,
        where: str | None = None,
        explain: bool = False,
        query_mode: str = "encoder",
    ) -> SearchResults:
        """Top-``k`` items for one query or a list (see :mod:`lexlens.search`; ``query_mode``:
        how a lexical index encodes query texts, ``"encoder"`` or ``"inference-free"``)."""
        from lexlens.search import search_index

        return search_index(
            self,
            query,
            k=k,
            params=params,
            min_score=min_score,
            where=where,
            explain=explain,
            query_mode=query_mode,
        )

    def dups(self, threshold: float = 0.95, progress: bool = True) -> list[DupGroup]:
        """Exact (same pixels / same text) and near (cosine >= ``threshold``) duplicate groups."""
        from lexlens.index.dups import find_dups

        return find_dups(self, threshold, progress=progress)


def _info_dict(
    path: Path, store: IndexDir, man: Manifest, memory_bytes: int | None
) -> dict[str, Any]:
    """What ``index info`` shows of a generation, from its manifest (see :meth:`Index.info`)."""
    return {
        "path": str(path),
        "model": man.model,
        "spec": man.spec,
        "items": man.items,
        "dim": man.dim,
        "vocab_size": man.vocab_size,
        "count": man.count,
        "generation": man.generation,
        "created": man.created,
        "updated": man.updated,
        "format_version": man.format_version,
        "disk_bytes": sum(int(f["size"]) for f in man.files.values()),
        "memory_bytes": memory_bytes,
        "default_spec_for_size": str(default_spec(man.count, man.has_sparse, man.dim)),
        "pending_batches": len(list(store.pending.glob("batch-*.json")))
        if store.pending.exists()
        else 0,
    }


def index_info(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """:meth:`Index.info` of the index at ``path`` (what ``lexlens index info`` shows).

    With ``verify=True`` a damaged index, which :meth:`Index.open` refuses, is inspected too:
    the manifest is read without the open-time checks, every file it lists is re-hashed, and
    ``problems`` lists each one that is missing, unreadable, of the wrong size or of the
    wrong sha256 (``verified`` is true when there are none). ``memory_bytes`` is ``None``
    for a damaged index (its structure is not loaded).
    """
    if not verify:
        return Index.open(path).info()
    store = IndexDir(path)
    gen = store.current()
    problems = store.verify(gen, full=True)
    if problems:
        out = _info_dict(Path(path), store, store.read_manifest(gen), None)
    else:
        out = Index(Path(path), _load_state(store, check=False, gen=gen)).info()
    out["verified"] = not problems
    out["problems"] = problems
    return out


# ----------------------------------------------------------------------------- add planning
@dataclass
class _Plan:
    encode: list[tuple[SourceItem, tuple[int, float] | None]] = field(default_factory=list)
    replaced: list[tuple[int, str]] = field(default_factory=list)  # (old id, path) of changed files
    stat_updates: list[tuple[int, int, float]] = field(default_factory=list)
    label_updates: list[tuple[int, list[str], dict[str, Any]]] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)  # captions their image no longer has


def _classify(st: _State, todo: Sequence[SourceItem], report: AddReport) -> _Plan:
    """Split ``todo`` into unchanged / relabelled / changed / new, and find the captions
    that are stale in a caption index (see :meth:`Index.add`)."""
    plan = _Plan()
    if st.manifest.items == "texts":
        # the captions of each image in ``todo`` become exactly the ones it gives (captions
        # without an image are only ever added); other images' captions are left alone
        listed = {item.path for item in todo if item.path is not None}
        wanted = {item.key() for item in todo}
        known: dict[tuple[str | None, str | None], ItemRow] = {}
        for r in st.meta.all_rows():
            key = (r.path, r.text)
            if r.path in listed and (key not in wanted or key in known):
                plan.stale.append(r.id)  # dropped from its image (or a second copy of one)
            else:
                known.setdefault(key, r)
        for item in todo:
            row = known.get((item.path, item.text))
            if row is not None:
                _same_item(plan, row, item, report)
            else:
                plan.encode.append((item, None))
        return plan
    existing = st.meta.ids_by_path({s.path for s in todo if s.path})
    rows = st.meta.rows(i for ids in existing.values() for i in ids)
    by_path: dict[str, list[ItemRow]] = {}
    for r in rows.values():
        by_path.setdefault(r.path or "", []).append(r)
    for item in todo:
        stat = file_stat(str(item.path))
        old = by_path.get(str(item.path))
        if stat is None:
            report._fail(str(item.path), MISSING_FILE)
            continue
        if not old:
            plan.encode.append((item, stat))
            continue
        row = old[0]
        # (size, mtime) decide, unless the file was recorded within RACY_SECONDS of its
        # mtime: an edit in the same clock tick keeps the mtime, so then compare the bytes
        racy = row.indexed is None or row.mtime is None or row.indexed - row.mtime < RACY_SECONDS
        if (row.size, row.mtime) == stat and not racy:
            _same_item(plan, row, item, report)
        elif row.file_hash == file_sha256(str(item.path)):
            if (row.size, row.mtime) != stat:  # touched, same bytes: record the new stat
                plan.stat_updates.append((row.id, *stat))
            _same_item(plan, row, item, report)
        else:
            plan.encode.append((item, stat))
            plan.replaced.append((row.id, str(item.path)))
    return plan


def _same_item(plan: _Plan, row: ItemRow, item: SourceItem, report: AddReport) -> None:
    report.skipped += 1
    if (row.captions, row.fields) != (item.captions, item.fields) and (
        item.captions or item.fields
    ):
        plan.label_updates.append((row.id, item.captions, item.fields))
        report.relabelled += 1


def _collect(
    reused: list[tuple[ItemRecord, np.ndarray, Any]], batches: list[EncodedBatch], man: Manifest
) -> tuple[list[ItemRecord], np.ndarray, SparseBatch | None]:
    records = [r for r, _, _ in reused]
    dense_parts = [np.stack([v for _, v, _ in reused])] if reused else []
    sparse_rows: list[tuple[np.ndarray, np.ndarray]] = (
        [s for _, _, s in reused] if man.has_sparse else []
    )
    for b in batches:
        if not b.records:
            continue
        records += b.records
        dense_parts.append(np.asarray(b.dense, np.float32))
        if man.has_sparse:
            assert b.sparse is not None
            sparse_rows += [b.sparse.row(i) for i in range(len(b.records))]
    dense = np.concatenate(dense_parts) if dense_parts else np.zeros((0, man.dim), np.float32)
    sparse = sparse_from_rows(sparse_rows, man.vocab_size) if man.has_sparse else None
    return records, dense, sparse


def _undo_create(out: Path, before: set[Path] | None) -> None:
    """Remove what a build that created ``out`` wrote there (``before``: what ``out`` held
    before, ``None`` when it did not exist)."""
    import shutil

    if before is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    for p in out.iterdir() if out.exists() else []:
        if p not in before:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- writing
def _save_sparse(directory: Path, sp: SparseBatch) -> None:
    np.save(directory / "sparse_indptr.npy", np.asarray(sp.indptr, np.int64))
    np.save(directory / "sparse_indices.npy", np.asarray(sp.indices, np.int32))
    np.save(directory / "sparse_values.npy", np.asarray(sp.values, np.float32))


def _merge_sparse(old: SparseBatch, keep: np.ndarray, new: SparseBatch | None) -> SparseBatch:
    lengths = np.diff(np.asarray(old.indptr))
    nnz_keep = np.repeat(keep, lengths)
    parts_len = [lengths[keep]]
    idx = [np.asarray(old.indices)[nnz_keep]]
    val = [np.asarray(old.values)[nnz_keep]]
    if new is not None and len(new):
        parts_len.append(np.diff(new.indptr))
        idx.append(np.asarray(new.indices, np.int32))
        val.append(np.asarray(new.values, np.float32))
    all_len = np.concatenate(parts_len)
    indptr = np.concatenate([[0], np.cumsum(all_len)]).astype(np.int64)
    return SparseBatch(
        indptr,
        np.concatenate(idx).astype(np.int32),
        np.concatenate(val).astype(np.float32),
        old.vocab_size,
    )


def _write_generation(
    w: GenerationWriter,
    st: _State,
    remove: np.ndarray,
    records: list[ItemRecord],
    dense: np.ndarray | None,
    sparse: SparseBatch | None,
    plan: _Plan,
) -> None:
    """Write the next generation: old items minus ``remove`` plus ``records``; publish it."""
    man = st.manifest
    keep = ~np.isin(st.ids, remove)
    new_ids = np.arange(man.next_id, man.next_id + len(records), dtype=np.int64)
    write_rows(w.dir / "ids.npy", st.ids, keep, new_ids)
    if man.has_dense:
        write_rows(
            w.dir / "dense.npy",
            st.dense,
            keep,
            dense if dense is not None else np.zeros((0, man.dim), np.float32),
        )
    if man.has_sparse:
        assert st.sparse is not None
        _save_sparse(w.dir, _merge_sparse(st.sparse, keep, sparse))
        if (st.gen / "vocab.json").exists():
            os.link(st.gen / "vocab.json", w.dir / "vocab.json")
    st.meta.copy_to(w.dir / META)
    meta = MetaDB(w.dir / META, writable=True)
    meta.delete(int(i) for i in remove)
    meta.insert(
        ItemRow(
            int(i), r.path, r.text, r.size, r.mtime, r.file_hash, r.pixel_hash, r.captions, r.fields
        )
        for i, r in zip(new_ids, records, strict=True)
    )
    meta.update_stat(plan.stat_updates)
    meta.update_labels(plan.label_updates)
    meta.commit()
    kind = load_kind(st.spec, st.gen / "kind", _ctx(man), mmap=False)
    if len(remove):
        kind.remove(remove)
    if len(records):
        needs_dense, needs_sparse = spec_needs(st.spec)
        vecs = Vectors(
            dense=dense if needs_dense else None, sparse=sparse if needs_sparse else None
        )
        if getattr(kind, "accepts_where", False):  # keeps item records to filter itself (Milvus)
            kind.add(new_ids, vecs, records=records)
        else:
            kind.add(new_ids, vecs)
    relabelled = [i for i, *_ in plan.stat_updates] + [i for i, *_ in plan.label_updates]
    if relabelled and getattr(kind, "accepts_where", False):
        kind.update_records(list(MetaDB(w.dir / META).rows(relabelled).values()))
    (w.dir / "kind").mkdir()
    kind.save(w.dir / "kind")
    nxt = Manifest(**{**man.__dict__})
    nxt.count = int(keep.sum()) + len(records)
    nxt.next_id = man.next_id + len(records)
    nxt.generation = man.generation + 1
    w.publish(nxt)
