"""The on-disk format of an index: immutable generations published by an atomic rename.

An index is a directory::

    IDX/
      CURRENT                 name of the live generation, e.g. "gen-000003" (os.replace'd)
      generations/gen-000003/
        manifest.json         format version, model, dims, spec, counts, per-file sha256
        meta.sqlite           one row per item: id, path, text, size, mtime, hashes,
                              captions JSON, user fields JSON
        ids.npy               int64 [n] item ids, ascending (row i of every array is ids[i])
        dense.npy             float32 [n, d] L2-normalised embeddings (memory-mapped)
        sparse_indptr.npy     CSR lexical weights (when the spec needs them)
        sparse_indices.npy
        sparse_values.npy
        vocab.json            the lexical vocabulary (when sparse)
        kind/                 the index structure's own files (IndexKind.save)
      staging/                generations being written (garbage after a crash)
      pending/                encoded-but-unpublished batches of an interrupted ``add``
      lock                    advisory lock held by the one writer

Every change (build, add, remove) writes a complete new generation into ``staging/``,
fsyncs it, renames it into ``generations/`` and only then swaps ``CURRENT`` with
``os.replace``: a crash or Ctrl-C at any point leaves the previous generation readable
and complete. The generation before the live one is kept (readers that opened it keep
working); older ones are deleted.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import DataError, IndexMismatchError, NotFoundError

__all__ = [
    "FORMAT_VERSION",
    "Manifest",
    "IndexDir",
    "GenerationWriter",
    "MetaDB",
    "ItemRow",
    "sha256_file",
    "write_rows",
    "now_iso",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
META = "meta.sqlite"
#: files up to this size are hashed on every open; bigger ones only by ``verify(full=True)``
SMALL_FILE = 1 << 20


def now_iso() -> str:
    """The current UTC time as ISO 8601 (seconds)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (not JSON; SQLite's JSON functions reject them) as
    ``None``, at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _fields_json(fields: dict[str, Any]) -> str:
    """An item's user fields as strict JSON (what ``--where`` queries with SQLite)."""
    return json.dumps(_finite(fields), sort_keys=True, allow_nan=False)


@dataclass
class Manifest:
    """What ``manifest.json`` holds (see module docstring)."""

    model: str
    spec: str
    items: str  # "images" | "texts"
    dim: int
    vocab_size: int = 0
    has_dense: bool = True
    has_sparse: bool = False
    count: int = 0
    next_id: int = 0
    generation: int = 0
    created: str = ""
    updated: str = ""
    model_probe: list[float] = field(default_factory=list)
    # lexical indexes: the probe's sparse vectors, {"text"|"image": [[word id, weight], ...]}
    lexical_probe: dict[str, list[list[float]]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    lexlens_version: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: manifest.json is not valid JSON ({e})") from None
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{where} has index format version {version}; this lexlens reads version {FORMAT_VERSION}"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IndexDir:
    """Paths and generation bookkeeping of one index directory (no state beyond the path)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def generations(self) -> Path:
        return self.root / "generations"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def pending(self) -> Path:
        return self.root / "pending"

    def exists(self) -> bool:
        """Whether the directory holds a published index."""
        return (self.root / "CURRENT").is_file()

    def current(self) -> Path:
        """The live generation's directory; raises :class:`NotFoundError` when there is none."""
        cur = self.root / "CURRENT"
        try:
            name = cur.read_text().strip()
        except FileNotFoundError:
            raise NotFoundError(f"{self.root} is not a lexlens index (no CURRENT file)") from None
        path = self.generations / name
        if not (path / MANIFEST).is_file():
            raise DataError(f"{self.root}: CURRENT names {name!r}, which has no manifest")
        return path

    def read_manifest(self, gen: Path | None = None) -> Manifest:
        gen = self.current() if gen is None else gen
        return Manifest.from_json((gen / MANIFEST).read_text(), self.root)

    def verify(self, gen: Path | None = None, full: bool = False) -> list[str]:
        """Check the files a manifest lists: sizes always, sha256 of small ones (all if ``full``).

        Returns every problem found, one line per file (empty when the generation is intact).
        """
        gen = self.current() if gen is None else gen
        man = self.read_manifest(gen)
        problems = []
        for name, info in sorted(man.files.items()):
            p = gen / name
            if not p.is_file():
                problems.append(f"{name}: missing")
                continue
            try:
                size = p.stat().st_size
                if size != info["size"]:
                    problems.append(f"{name}: size {size}, manifest says {info['size']}")
                    continue
                if (full or size <= SMALL_FILE) and sha256_file(p) != info["sha256"]:
                    problems.append(f"{name}: sha256 differs from the manifest")
            except OSError as e:
                problems.append(f"{name}: unreadable ({e.strerror or e})")
        return problems

    @contextlib.contextmanager
    def writer(self) -> Iterator[GenerationWriter]:
        """The single writer: holds ``lock``, yields a writer with a fresh staging directory."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a+") as lockf:
            try:
                fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                from lexlens.errors import UsageError

                raise UsageError(
                    f"{self.root} is being changed by another process; try again"
                ) from None
            try:
                # anything left in staging is from a writer that died: never published
                if self.staging.exists():
                    shutil.rmtree(self.staging, ignore_errors=True)
                self.staging.mkdir(parents=True)
                w = GenerationWriter(self)
                try:
                    yield w
                finally:
                    shutil.rmtree(self.staging, ignore_errors=True)
            finally:
                fcntl.flock(lockf, fcntl.LOCK_UN)


class GenerationWriter:
    """Writes one new generation into staging and publishes it atomically."""

    def __init__(self, store: IndexDir) -> None:
        self.store = store
        self.dir = store.staging / "next"
        self.dir.mkdir()

    def publish(self, manifest: Manifest) -> Path:
        """Checksum every file, write the manifest, rename into place, swap ``CURRENT``."""
        files: dict[str, dict[str, Any]] = {}
        first: dict[tuple[int, str], Path] = {}
        for p in sorted(self.dir.rglob("*")):
            if p.is_file():
                info = {"size": p.stat().st_size, "sha256": sha256_file(p)}
                files[p.relative_to(self.dir).as_posix()] = info
                same = first.setdefault((info["size"], info["sha256"]), p)
                if same != p and info["size"] > SMALL_FILE:
                    # identical big files (e.g. the flat kind's copy of dense.npy) share one inode
                    tmp = p.with_name(p.name + ".link")
                    os.link(same, tmp)
                    os.replace(tmp, p)
                _fsync_file(p)
        manifest.files = files
        manifest.updated = now_iso()
        (self.dir / MANIFEST).write_text(manifest.to_json())
        _fsync_file(self.dir / MANIFEST)
        for sub in sorted({p.parent for p in self.dir.rglob("*")}, reverse=True):
            _fsync_dir(sub)
        self.store.generations.mkdir(exist_ok=True)
        name = f"gen-{manifest.generation:06d}"
        final = self.store.generations / name
        if final.exists():  # a generation written but never made current (crash before swap)
            shutil.rmtree(final)
        os.rename(self.dir, final)
        _fsync_dir(self.store.generations)
        tmp = self.store.root / "CURRENT.tmp"
        tmp.write_text(name + "\n")
        _fsync_file(tmp)
        os.replace(tmp, self.store.root / "CURRENT")
        _fsync_dir(self.store.root)
        self._drop_old(keep={name, f"gen-{manifest.generation - 1:06d}"})
        return final

    def _drop_old(self, keep: set[str]) -> None:
        for old in self.store.generations.iterdir():
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


def write_rows(
    path: Path,
    old: np.ndarray | None,
    keep: np.ndarray | None,
    new: np.ndarray | None,
    block: int = 65_536,
) -> None:
    """Write ``old[keep]`` followed by ``new`` to ``path`` as ``.npy``, streaming in blocks."""
    parts = []
    n_old = 0
    if old is not None and len(old):
        n_old = int(keep.sum()) if keep is not None else len(old)
        parts.append(old)
    if new is not None:
        new = np.asarray(new)
    template = new if new is not None else old
    assert template is not None
    shape = (n_old + (0 if new is None else len(new)), *template.shape[1:])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=template.dtype, shape=shape)
    at = 0
    if parts:
        for a in range(0, len(old), block):  # type: ignore[arg-type]
            chunk = np.asarray(old[a : a + block])  # type: ignore[index]
            if keep is not None:
                chunk = chunk[keep[a : a + block]]
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
    if new is not None and len(new):
        out[at : at + len(new)] = new
    out.flush()
    del out


# ----------------------------------------------------------------------------- metadata
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    path TEXT,
    text TEXT,
    size INTEGER,
    mtime REAL,
    file_hash TEXT,
    pixel_hash TEXT,
    captions TEXT NOT NULL DEFAULT '[]',
    fields TEXT NOT NULL DEFAULT '{}',
    indexed REAL
);
CREATE INDEX IF NOT EXISTS items_path ON items(path);
CREATE INDEX IF NOT EXISTS items_pixel_hash ON items(pixel_hash);
"""


@dataclass
class ItemRow:
    """One item's metadata row."""

    id: int
    path: str | None = None
    text: str | None = None
    size: int | None = None
    mtime: float | None = None
    file_hash: str | None = None
    pixel_hash: str | None = None
    captions: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    #: when the file's (size, mtime) were recorded (to catch edits within the mtime resolution)
    indexed: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLS = "id, path, text, size, mtime, file_hash, pixel_hash, captions, fields, indexed"


def _row(r: Sequence[Any]) -> ItemRow:
    return ItemRow(
        id=int(r[0]),
        path=r[1],
        text=r[2],
        size=r[3],
        mtime=r[4],
        file_hash=r[5],
        pixel_hash=r[6],
        captions=json.loads(r[7]),
        fields=json.loads(r[8]),
        indexed=r[9],
    )


class MetaDB:
    """The ``meta.sqlite`` of a generation: read-only and thread-safe, or writable in staging."""

    def __init__(self, path: Path, writable: bool = False) -> None:
        self.path = Path(path)
        self.writable = writable
        self._local = threading.local()
        if writable:
            con = self._con()
            con.executescript(_SCHEMA)
            con.commit()

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            if self.writable:
                con = sqlite3.connect(self.path)
            else:  # generations never change: immutable lets sqlite skip all locking
                con = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True)
            self._local.con = con
        return con

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- writes (staging only) --------------------------------------------------------
    def insert(self, rows: Iterable[ItemRow]) -> None:
        con = self._con()
        con.executemany(
            f"INSERT INTO items ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.id,
                    r.path,
                    r.text,
                    r.size,
                    r.mtime,
                    r.file_hash,
                    r.pixel_hash,
                    json.dumps(r.captions),
                    _fields_json(r.fields),
                    time.time() if r.indexed is None else r.indexed,
                )
                for r in rows
            ],
        )

    def delete(self, ids: Iterable[int]) -> None:
        self._con().executemany("DELETE FROM items WHERE id = ?", [(int(i),) for i in ids])

    def update_stat(self, rows: Iterable[tuple[int, int, float]]) -> None:
        """Record a new (size, mtime) for items whose bytes did not change."""
        self._con().executemany(
            "UPDATE items SET size = ?, mtime = ?, indexed = ? WHERE id = ?",
            [(s, m, time.time(), i) for i, s, m in rows],
        )

    def update_labels(self, rows: Iterable[tuple[int, list[str], dict[str, Any]]]) -> None:
        """New captions / user fields for items whose content did not change."""
        self._con().executemany(
            "UPDATE items SET captions = ?, fields = ? WHERE id = ?",
            [(json.dumps(c), _fields_json(f), i) for i, c, f in rows],
        )

    def commit(self) -> None:
        con = self._con()
        con.commit()
        con.execute("VACUUM")
        self.close()

    # -- reads ----------------------------------------------------------------------------
    def count(self) -> int:
        return int(self._con().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def rows(self, ids: Iterable[int]) -> dict[int, ItemRow]:
        """Rows of the given ids (unknown ids are absent from the result)."""
        ids = [int(i) for i in ids if int(i) >= 0]
        out: dict[int, ItemRow] = {}
        con = self._con()
        for a in range(0, len(ids), 500):
            chunk = ids[a : a + 500]
            q = f"SELECT {_COLS} FROM items WHERE id IN ({','.join('?' * len(chunk))})"
            for r in con.execute(q, chunk):
                out[int(r[0])] = _row(r)
        return out

    def all_rows(self) -> Iterator[ItemRow]:
        for r in self._con().execute(f"SELECT {_COLS} FROM items ORDER BY id"):
            yield _row(r)

    def ids_by_path(self, paths: Iterable[str]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        con = self._con()
        paths = list(paths)
        for a in range(0, len(paths), 500):
            chunk = paths[a : a + 500]
            q = f"SELECT path, id FROM items WHERE path IN ({','.join('?' * len(chunk))})"
            for p, i in con.execute(q, chunk):
                out.setdefault(p, []).append(int(i))
        return out

    def has_field(self, dotted: str) -> bool:
        """Whether any item has the user field ``dotted`` (a path into nested objects)."""
        q = "SELECT 1 FROM items WHERE json_type(fields, ?) IS NOT NULL LIMIT 1"
        return self._con().execute(q, ["$." + dotted]).fetchone() is not None

    def select_ids(self, where_sql: str, params: Sequence[Any]) -> np.ndarray:
        """Ids of the rows matching a SQL condition (built by :mod:`lexlens.index.filters`)."""
        cur = self._con().execute(
            f"SELECT id FROM items WHERE {where_sql} ORDER BY id", list(params)
        )
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def passing_ids(self, ids: np.ndarray, where_sql: str, params: Sequence[Any]) -> np.ndarray:
        """Those of ``ids`` whose rows match the SQL condition (sorted): a filter checked on a
        few candidates without scanning the table."""
        ids = np.unique(np.asarray(ids, np.int64))
        if len(ids) == 0:
            return ids
        cur = self._con().execute(
            f"SELECT id FROM items WHERE id IN (SELECT value FROM json_each(?)) AND ({where_sql})"
            " ORDER BY id",
            [json.dumps(ids.tolist()), *params],
        )
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def copy_to(self, dest: Path) -> None:
        """A consistent copy of this database at ``dest`` (sqlite backup API)."""
        src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
