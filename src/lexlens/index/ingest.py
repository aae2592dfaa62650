"""Getting items into an index: read a source, decode and hash images, encode, checkpoint.

* :func:`read_source` turns a dataset path, a dataset object or a list of files into
  :class:`SourceItem` records (one per image, or one per caption for a caption index).
* :func:`encode_items` decodes images in worker processes (sha256 of the file bytes, a hash
  of the decoded RGB pixels, the model's preprocessing), encodes them in batches and yields
  :class:`EncodedBatch` objects; unreadable files are reported, not fatal.
* :class:`Checkpoints` keeps encoded batches of an ``add`` in ``IDX/pending/`` until the
  new generation is published, so a restarted ``add`` does not encode them again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import DataError, UsageError
from lexlens.models.base import Encoder, SparseBatch, uses_default_preprocess
from lexlens.progress import progress_bar

__all__ = [
    "SourceItem",
    "ReaderOptions",
    "ItemRecord",
    "EncodedBatch",
    "read_source",
    "file_stat",
    "file_sha256",
    "pixel_hash",
    "encode_items",
    "Checkpoints",
    "default_workers",
]


@dataclass
class SourceItem:
    """One item to index: an image file, or a caption (``text``) of an image (``path``)."""

    path: str | None
    text: str | None = None
    captions: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple[str | None, str | None]:
        return (self.path, self.text)


@dataclass
class ItemRecord:
    """An item with what was measured while encoding it (everything the metadata row holds)."""

    path: str | None
    text: str | None
    captions: list[str]
    fields: dict[str, Any]
    size: int | None = None
    mtime: float | None = None
    file_hash: str | None = None
    pixel_hash: str | None = None


@dataclass
class EncodedBatch:
    """Encoded items: records with their dense rows and optional sparse rows (same order)."""

    records: list[ItemRecord]
    dense: np.ndarray
    sparse: SparseBatch | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- sources
def _abs(p: str | os.PathLike[str]) -> str:
    """An absolute, normalised path (symlinks kept: the path is the item's identity)."""
    return os.path.abspath(os.fspath(p))


def _from_dataset(ds: Any, items: str) -> list[SourceItem]:
    """Items of a dataset object from :func:`lexlens.data.readers.load_dataset` (duck-typed)."""
    paths = list(ds.image_paths)
    captions = list(getattr(ds, "captions", None) or [[] for _ in paths])
    records = list(getattr(ds, "records", None) or [{} for _ in paths])
    out = []
    for path, caps, rec in zip(paths, captions, records, strict=True):
        fields = {k: v for k, v in dict(rec or {}).items() if k not in ("image", "captions")}
        caps = [str(c) for c in caps or []]
        if items == "texts":
            out.extend(SourceItem(_abs(path), c, [c], fields) for c in caps)
        else:
            out.append(SourceItem(_abs(path), None, caps, fields))
    return out


@dataclass(frozen=True)
class ReaderOptions:
    """How a dataset path is read: the options of :func:`lexlens.data.readers.load_dataset`
    (``--image-column``, ``--caption-column`` and ``--images`` of the CLI)."""

    #: the CSV/Parquet column holding image paths (default: found by name)
    image_column: str | None = None
    #: the CSV/Parquet column holding captions (default: found by name)
    caption_column: str | None = None
    #: the folder relative image paths start from (default: the dataset file's folder)
    images_root: str | None = None

    def given(self) -> bool:
        """Whether any option differs from the default."""
        return any(
            v is not None for v in (self.image_column, self.caption_column, self.images_root)
        )


def read_source(
    source: Any, items: str = "images", reader: ReaderOptions | None = None
) -> list[SourceItem]:
    """Items to index from ``source``.

    ``source`` is a dataset directory or file (read with
    :func:`lexlens.data.readers.load_dataset`, with the ``reader`` options), a dataset
    object, or a list of image paths or :class:`SourceItem`. For ``items="texts"`` every
    caption becomes one item. Duplicate items (same path, or same path and caption) are kept
    once. ``reader`` options with a source that is not a path are a :class:`UsageError`.
    """
    if items not in ("images", "texts"):
        raise UsageError(f"items must be 'images' or 'texts', got {items!r}")
    reader = reader or ReaderOptions()
    if reader.given() and not isinstance(source, str | os.PathLike):
        raise UsageError(
            "image column, caption column and images folder apply to a dataset path only"
        )
    if isinstance(source, str | os.PathLike):
        p = Path(source)
        if not p.exists():
            raise DataError(f"{p}: no such file or directory")
        from lexlens.data.readers import load_dataset

        found = _from_dataset(
            load_dataset(
                p,
                image_column=reader.image_column,
                caption_column=reader.caption_column,
                images_root=reader.images_root,
            ),
            items,
        )
    elif hasattr(source, "image_paths"):
        found = _from_dataset(source, items)
    else:
        found = []
        for s in source:
            if isinstance(s, SourceItem):
                found.append(
                    SourceItem(
                        _abs(s.path) if s.path else None, s.text, list(s.captions), dict(s.fields)
                    )
                )
            elif items == "images":
                found.append(SourceItem(_abs(s)))
            else:
                found.append(SourceItem(None, str(s), [str(s)]))
    if items == "texts" and any(s.text is None for s in found):
        raise UsageError("a caption index needs captions: give a dataset with captions")
    if items == "images" and any(s.path is None for s in found):
        raise UsageError("an image index needs image paths")
    seen: set[tuple[str | None, str | None]] = set()
    unique = []
    for s in found:
        if s.key() not in seen:
            seen.add(s.key())
            unique.append(s)
    return unique


# ----------------------------------------------------------------------------- hashing
def file_stat(path: str) -> tuple[int, float] | None:
    """``(size, mtime)`` of a file, or ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), float(st.st_mtime)


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    from lexlens.index.store import sha256_file

    return sha256_file(Path(path))


def pixel_hash(image: Any) -> str:
    """A hash of the decoded RGB pixels (same picture saved twice -> same hash)."""
    rgb = image.convert("RGB")
    h = hashlib.sha256()
    h.update(f"{rgb.width}x{rgb.height};".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()[:32]


def _default_prep(image: Any, cfg: Any) -> np.ndarray:
    from lexlens.data.images import preprocess_image

    return preprocess_image(image, cfg)


def _decode_one(path: str, prep: Callable[[Any], np.ndarray]) -> tuple[str, Any]:
    """Worker: read, hash, decode, preprocess one image. Returns ("ok", data) or ("error", why)."""
    try:
        from PIL import Image

        with open(path, "rb") as f:
            data = f.read()
        st = os.stat(path)
        import io

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
        return "ok", (
            int(st.st_size),
            float(st.st_mtime),
            hashlib.sha256(data).hexdigest(),
            pixel_hash(rgb),
            np.asarray(prep(rgb), dtype=np.float32),
        )
    except Exception as e:  # noqa: BLE001 - any decode failure means "unreadable", reported
        return "error", f"{type(e).__name__}: {e}".splitlines()[0][:200]


def default_workers() -> int:
    """Decoding processes used when not told: one less than the CPUs, at most 4, 0 on 1 CPU."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _preprocessor(encoder: Encoder) -> Callable[[Any], np.ndarray]:
    if uses_default_preprocess(encoder):
        return functools.partial(_default_prep, cfg=encoder.preprocess_config)
    return encoder.preprocess


def _decoded(
    paths: Sequence[str], prep: Callable[[Any], np.ndarray], workers: int
) -> Iterator[tuple[str, Any]]:
    fn = functools.partial(_decode_one, prep=prep)
    if workers <= 0 or len(paths) < 64:
        yield from map(fn, paths)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork (like torch's DataLoader): the workers only decode with PIL and numpy, and unlike
    # spawn/forkserver it does not re-run the caller's script (no __main__ guard needed)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(fn, paths, chunksize=16)


def encode_items(
    todo: Sequence[SourceItem],
    encoder: Encoder,
    items: str,
    want_sparse: bool,
    batch_size: int = 256,
    workers: int | None = None,
    progress: bool = True,
) -> Iterator[EncodedBatch]:
    """Encode ``todo`` in batches of ``batch_size`` (see module docstring)."""
    workers = default_workers() if workers is None else workers
    desc = "encode images" if items == "images" else "encode captions"
    with progress_bar(total=len(todo), desc=desc, unit="item", enabled=progress) as bar:
        if items == "texts":
            for a in range(0, len(todo), batch_size):
                chunk = todo[a : a + batch_size]
                texts = [str(s.text) for s in chunk]
                recs = [ItemRecord(s.path, s.text, s.captions, s.fields) for s in chunk]
                dense = encoder.encode_texts(texts, batch_size=batch_size)
                sparse = (
                    encoder.encode_texts_lexical(texts, batch_size=batch_size)
                    if want_sparse
                    else None
                )
                bar.update(len(chunk))
                yield EncodedBatch(recs, dense, sparse)
            return
        prep = _preprocessor(encoder)
        recs: list[ItemRecord] = []
        pixels: list[np.ndarray] = []
        failed: list[tuple[str, str]] = []

        def flush() -> EncodedBatch:
            arr = np.stack(pixels) if pixels else np.zeros((0, 3, 1, 1), np.float32)
            dense = (
                encoder.encode_images(arr, batch_size=batch_size)
                if pixels
                else np.zeros((0, encoder.dim), np.float32)
            )
            sparse = None
            if want_sparse:
                sparse = (
                    encoder.encode_images_lexical(arr, batch_size=batch_size) if pixels else None
                )
            return EncodedBatch(list(recs), dense, sparse, list(failed))

        for item, (status, data) in zip(
            todo, _decoded([str(s.path) for s in todo], prep, workers), strict=True
        ):
            bar.update(1)
            if status == "error":
                failed.append((str(item.path), data))
            else:
                size, mtime, fh, ph, arr = data
                recs.append(
                    ItemRecord(item.path, None, item.captions, item.fields, size, mtime, fh, ph)
                )
                pixels.append(arr)
            if len(recs) >= batch_size:
                yield flush()
                recs, pixels, failed = [], [], []
        if recs or failed:
            yield flush()


# ----------------------------------------------------------------------------- checkpoints
class Checkpoints:
    """Encoded batches of an unfinished ``add``, in ``IDX/pending/`` (see module docstring).

    A batch is ``batch-N.npz`` (vectors) committed by ``batch-N.json`` (its records, the
    model name), each written to a temporary name and renamed. Only batches whose JSON
    exists count; they are reused when the same file (path, size, mtime) or caption is
    added again with the same model.
    """

    def __init__(self, directory: Path, model: str) -> None:
        self.dir = Path(directory)
        self.model = model

    def _batches(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("batch-*.json"))

    def load(
        self,
    ) -> tuple[dict[tuple[Any, ...], tuple[ItemRecord, np.ndarray, tuple | None]], int]:
        """Reusable encoded items by key, and how many batch files were read."""
        found: dict[tuple[Any, ...], tuple[ItemRecord, np.ndarray, tuple | None]] = {}
        batches = self._batches()
        for meta_path in batches:
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("model") != self.model:
                    continue
                arrs = np.load(meta_path.with_suffix(".npz"))
                dense = arrs["dense"]
                sparse = None
                if "sp_indptr" in arrs:
                    sparse = SparseBatch(
                        arrs["sp_indptr"],
                        arrs["sp_indices"],
                        arrs["sp_values"],
                        int(meta["vocab_size"]),
                    )
            except (OSError, ValueError, KeyError):
                continue  # a damaged checkpoint is only lost work: encode those items again
            for j, r in enumerate(meta["records"]):
                rec = ItemRecord(**r)
                row = None
                if sparse is not None:
                    idx, val = sparse.row(j)
                    row = (idx.copy(), val.copy())
                found[self.key(rec)] = (rec, dense[j], row)
        return found, len(batches)

    @staticmethod
    def key(rec: ItemRecord | SourceItem, stat: tuple[int, float] | None = None) -> tuple[Any, ...]:
        if rec.text is not None:
            return ("text", rec.path, rec.text)
        if isinstance(rec, ItemRecord):
            return ("image", rec.path, rec.size, rec.mtime)
        return ("image", rec.path, *(stat or (None, None)))

    def write(self, batch: EncodedBatch) -> None:
        """Commit one batch (atomic: an interrupted write leaves no visible batch)."""
        if not batch.records:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        n = len(self._batches())
        while (self.dir / f"batch-{n:06d}.json").exists():
            n += 1
        base = self.dir / f"batch-{n:06d}"
        arrays: dict[str, np.ndarray] = {"dense": np.asarray(batch.dense, np.float32)}
        meta: dict[str, Any] = {
            "model": self.model,
            "records": [dict(r.__dict__) for r in batch.records],
        }
        if batch.sparse is not None:
            arrays.update(
                sp_indptr=batch.sparse.indptr,
                sp_indices=batch.sparse.indices,
                sp_values=batch.sparse.values,
            )
            meta["vocab_size"] = batch.sparse.vocab_size
        tmp = base.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, base.with_suffix(".npz"))
        tmpj = base.with_suffix(".tmp.json")
        tmpj.write_text(json.dumps(meta))
        os.replace(tmpj, base.with_suffix(".json"))

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def sparse_from_rows(rows: Iterable[tuple[np.ndarray, np.ndarray]], vocab_size: int) -> SparseBatch:
    """A :class:`SparseBatch` from per-row ``(indices, values)`` pairs."""
    rows = list(rows)
    indptr = np.zeros(len(rows) + 1, np.int64)
    for i, (idx, _) in enumerate(rows):
        indptr[i + 1] = indptr[i] + len(idx)
    indices = (
        np.concatenate([r[0] for r in rows]).astype(np.int32) if rows else np.zeros(0, np.int32)
    )
    values = (
        np.concatenate([r[1] for r in rows]).astype(np.float32) if rows else np.zeros(0, np.float32)
    )
    return SparseBatch(indptr, indices, values, vocab_size)
