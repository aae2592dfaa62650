"""A Milvus backend for lexlens indexes: Milvus Lite (a local file) or a Milvus server/cluster.

Selected by ``--backend milvus://PATH_OR_URI``:

* ``milvus://./lexlens.db`` -- Milvus Lite, embedded in this process, data in a local file;
* ``milvus://http://host:19530`` -- a Milvus server or cluster (a token, when needed, is read
  from the ``LEXLENS_MILVUS_TOKEN`` environment variable and never written to disk).

Both go through the same client code (``pymilvus.MilvusClient(uri=...)``). One collection
holds an item per row:

=========  ========================  ==============================================
field      type                      content
=========  ========================  ==============================================
id         INT64, primary key        the lexlens item id
dense      FLOAT_VECTOR(dim), IP     the L2-normalised embedding (dense kinds)
sparse     SPARSE_FLOAT_VECTOR, IP   lexical weights over the vocabulary (sparse kinds)
path       VARCHAR                   the item's file path (filterable)
meta       JSON                      user metadata (filterable: ``meta["split"] == "a"``)
=========  ========================  ==============================================

The lexlens index spec picks the Milvus index type: ``flat`` -> ``FLAT`` (exact),
``hnswM`` -> ``HNSW`` (M, efConstruction; ``ef_search`` per query), ``ivfN,flat|sq8|pqM`` ->
``IVF_FLAT`` / ``IVF_SQ8`` / ``IVF_PQ`` (``nprobe`` per query), ``sparse`` ->
``SPARSE_INVERTED_INDEX`` (exact inner product). Milvus refuses empty sparse vectors, so an item
without lexical weights stores one weight on an out-of-vocabulary sentinel dimension that no
query ever has (it can never match, exactly like an empty row).

Search returns the lexlens result contract. Milvus orders equal scores in its own way and cuts
at ``limit``, so the adapter asks for more than ``k`` and, while the last hit still ties with
the ``k``-th best, asks again with a larger limit; then :func:`lexlens.results.sort_results`
orders by ``(-score, id)`` and pads with ``-1``. With the exact ``FLAT`` / sparse index the
results are those of the local backend on the same vectors.

pymilvus is imported inside functions only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lexlens.errors import IndexMismatchError, LexlensError, UsageError
from lexlens.index.base import IndexKind, KindContext, SearchParams, Vectors
from lexlens.models.base import SparseBatch
from lexlens.results import empty_results, sort_results

__all__ = [
    "MILVUS_SCHEME",
    "TOKEN_ENV",
    "MilvusTarget",
    "MilvusKind",
    "parse_backend",
    "is_milvus_backend",
    "where_to_filter",
    "collection_name_for",
]

MILVUS_SCHEME = "milvus://"
#: environment variable holding a Milvus server token (user:password or API key)
TOKEN_ENV = "LEXLENS_MILVUS_TOKEN"
POINTER_FILE = "milvus.json"
#: Milvus caps limit (top-k) and the number of queries per search call at 16384
_MAX_TOPK = 16_384
_QUERY_BATCH = 256
_WRITE_BATCH = 2_000
_PATH_MAX = 4_096
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ----------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class MilvusTarget:
    """Where the collection lives: a Milvus Lite file or a server URI."""

    uri: str

    @property
    def lite(self) -> bool:
        """True for an embedded Milvus Lite file (anything that is not a network URI)."""
        return not self.uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))

    def __str__(self) -> str:
        return MILVUS_SCHEME + self.uri


def is_milvus_backend(text: str | None) -> bool:
    """Whether a ``--backend`` value names the Milvus backend."""
    return bool(text) and (str(text) == "milvus" or str(text).startswith(MILVUS_SCHEME))


def parse_backend(text: str, default_lite: str | os.PathLike[str] | None = None) -> MilvusTarget:
    """``milvus://PATH_OR_URI`` -> :class:`MilvusTarget`.

    A Lite path is made absolute (the pointer stored with the index must not depend on the
    working directory). ``milvus`` or ``milvus://`` alone means Milvus Lite at ``default_lite``.
    """
    text = str(text).strip()
    if text == "milvus":
        rest = ""
    elif text.startswith(MILVUS_SCHEME):
        rest = text[len(MILVUS_SCHEME) :]
    else:
        raise UsageError(f"unknown backend {text!r}: expected milvus://PATH_OR_URI")
    if not rest:
        if default_lite is None:
            raise UsageError("milvus:// needs a Milvus Lite file path or a server URI")
        rest = os.fspath(default_lite)
    target = MilvusTarget(rest)
    if target.lite:
        p = Path(rest).expanduser()
        if p.suffix != ".db":
            raise UsageError(f"a Milvus Lite file name must end in .db, got {rest!r}")
        target = MilvusTarget(str(p.resolve()))
    return target


def collection_name_for(label: str) -> str:
    """A valid Milvus collection name derived from ``label`` (e.g. the index directory name)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(label)).strip("_") or "index"
    if not name[0].isalpha() and name[0] != "_":
        name = "_" + name
    return ("lexlens_" + name)[:255]


# ----------------------------------------------------------------------------- filters
def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float) and not isinstance(v, bool):
        if isinstance(v, float) and not np.isfinite(v):
            raise UsageError(f"filter values must be finite, got {v}")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a double-quoted string with escapes, which Milvus accepts
    raise UsageError(f"filter values must be strings, numbers or booleans, got {type(v).__name__}")


def where_to_filter(where: Mapping[str, Any] | None) -> str:
    """Translate lexlens ``where`` conditions into a Milvus filter expression.

    ``where`` maps a field to a value (equality) or to a list of values (any of them); the
    conditions are joined with ``and``. ``path`` is the item's path; every other key is a user
    metadata field (``meta["key"]``). ``{"split": "val", "colour": ["red", "blue"]}`` ->
    ``meta["split"] == "val" and (meta["colour"] == "red" or meta["colour"] == "blue")``.
    Membership is spelled as ``or`` because Milvus Lite accepts ``in`` on plain fields only.
    """
    if not where:
        return ""
    parts = []
    for key, value in where.items():
        if not _KEY_RE.fullmatch(str(key)):
            raise UsageError(f"bad filter field {key!r}: letters, digits and _ only")
        field = "path" if key == "path" else f'meta["{key}"]'
        if isinstance(value, list | tuple | set | frozenset):
            values = sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
            if not values:
                return "false"
            parts.append("(" + " or ".join(f"{field} == {_literal(v)}" for v in values) + ")")
        else:
            parts.append(f"{field} == {_literal(value)}")
    return " and ".join(parts)


# ----------------------------------------------------------------------------- index types
def _index_type(spec: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Milvus ``(index_type, build params, default search params)`` for a dense lexlens spec."""
    kind = getattr(spec, "kind", None) or "flat"
    num = getattr(spec, "number", None)
    opt = spec.option if spec is not None else (lambda key, default=None: default)
    if kind == "flat":
        return "FLAT", {}, {}
    if kind == "hnsw":
        m = int(num or 32)
        return "HNSW", {"M": m, "efConstruction": int(opt("efc", 200))}, {"ef": int(opt("ef", 64))}
    if kind == "ivf":
        nlist = int(num or 1024)
        enc = spec.encoding
        search = {"nprobe": int(opt("nprobe", 16))}
        if enc is None or enc.kind == "flat":
            return "IVF_FLAT", {"nlist": nlist}, search
        if enc.kind == "sq" and (enc.number in (None, 8)):
            return "IVF_SQ8", {"nlist": nlist}, search
        if enc.kind == "pq":
            params = {
                "nlist": nlist,
                "m": int(enc.number or 8),
                "nbits": int(enc.option("nbits", 8)),
            }
            return "IVF_PQ", params, search
    raise UsageError(
        f"index spec {spec} has no Milvus counterpart; use flat, hnswM, ivfN,flat|sq8|pqM or sparse"
    )


# ----------------------------------------------------------------------------- the kind
class MilvusKind(IndexKind):
    """An :class:`IndexKind` whose items live in one Milvus collection (see module docstring).

    Besides the kind interface, :meth:`add` takes optional ``paths`` and ``metadata`` (stored
    for filters) and :meth:`search` an optional ``where`` mapping (see :func:`where_to_filter`).
    """

    kind: ClassVar[str] = "milvus"

    def __init__(
        self,
        target: MilvusTarget,
        collection: str,
        ctx: KindContext,
        dense_spec: Any = None,
        sparse: bool = False,
        create: bool = True,
    ) -> None:
        if not _NAME_RE.fullmatch(collection):
            raise UsageError(f"bad Milvus collection name {collection!r}")
        if ctx.dim <= 0 and not sparse:
            raise UsageError("a Milvus index needs dense vectors (dim > 0) or sparse ones")
        self.target = target
        self.collection = collection
        self.ctx = ctx
        self.dense_spec = dense_spec if ctx.dim > 0 else None
        self.has_dense = ctx.dim > 0
        self.has_sparse = bool(sparse)
        self.needs_dense = self.has_dense  # type: ignore[misc]  # per instance here
        self.needs_sparse = self.has_sparse  # type: ignore[misc]
        if self.has_dense:
            self._index_type, self._build_params, self._search_defaults = _index_type(dense_spec)
        self._client = _connect(target)
        if self._client.has_collection(collection):
            self._check_existing()
        elif create:
            self._create()
        else:
            raise IndexMismatchError(f"Milvus collection {collection!r} does not exist at {target}")
        self._client.load_collection(collection)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        backend: str,
        collection: str,
        ctx: KindContext,
        spec: Any = None,
        sparse: bool | None = None,
        default_lite: str | os.PathLike[str] | None = None,
    ) -> MilvusKind:
        """A new (or reopened, when the schema matches) collection for ``backend``.

        ``spec`` is the lexlens dense index spec (``flat`` by default). ``sparse`` defaults to
        ``ctx.vocab_size > 0``.
        """
        target = parse_backend(backend, default_lite)
        want_sparse = ctx.vocab_size > 0 if sparse is None else sparse
        return cls(target, collection, ctx, spec, want_sparse, create=True)

    def _create(self) -> None:
        from pymilvus import DataType

        c = self._client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        index_params = c.prepare_index_params()
        if self.has_dense:
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=int(self.ctx.dim))
            index_params.add_index(
                field_name="dense",
                index_type=self._index_type,
                metric_type="IP",
                params=self._build_params,
            )
        if self.has_sparse:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            index_params.add_index(
                field_name="sparse",
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="IP",
                params={"drop_ratio_build": 0.0},
            )
        schema.add_field("path", DataType.VARCHAR, max_length=_PATH_MAX)
        schema.add_field("meta", DataType.JSON)
        c.create_collection(self.collection, schema=schema, index_params=index_params)

    def _check_existing(self) -> None:
        desc = self._client.describe_collection(self.collection)
        fields = {f["name"]: f for f in desc.get("fields", [])}
        if self.has_dense:
            got = int((fields.get("dense") or {}).get("params", {}).get("dim", -1))
            if got != self.ctx.dim:
                raise IndexMismatchError(
                    f"Milvus collection {self.collection!r} holds dense vectors of dimension {got}, "
                    f"not {self.ctx.dim}"
                )
        if self.has_sparse and "sparse" not in fields:
            raise IndexMismatchError(f"Milvus collection {self.collection!r} has no sparse field")

    # -- IndexKind -------------------------------------------------------------------
    def add(
        self,
        ids: np.ndarray,
        vectors: Vectors,
        paths: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Insert (or overwrite) items with optional paths and user metadata for filters."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(ids)
        if len(np.unique(ids)) != n:
            raise UsageError("ids must be unique")
        dense = None
        if self.has_dense:
            if vectors.dense is None:
                raise UsageError("this Milvus index needs dense vectors")
            dense = np.asarray(vectors.dense, dtype=np.float32)
            if dense.shape != (n, self.ctx.dim):
                raise UsageError(
                    f"expected {n} vectors of dimension {self.ctx.dim}, got shape {tuple(dense.shape)}"
                )
        sparse = vectors.sparse if self.has_sparse else None
        if self.has_sparse and (sparse is None or len(sparse) != n):
            raise UsageError(f"this Milvus index needs {n} sparse (lexical) vectors")
        for name, seq in (("paths", paths), ("metadata", metadata)):
            if seq is not None and len(seq) != n:
                raise UsageError(f"got {len(seq)} {name} for {n} ids")
        for a in range(0, n, _WRITE_BATCH):
            rows = [
                self._row(i, ids, dense, sparse, paths, metadata)
                for i in range(a, min(n, a + _WRITE_BATCH))
            ]
            self._call("upsert", self.collection, rows)

    def _row(
        self,
        i: int,
        ids: np.ndarray,
        dense: np.ndarray | None,
        sparse: SparseBatch | None,
        paths: Sequence[str] | None,
        metadata: Sequence[Mapping[str, Any] | None] | None,
    ) -> dict[str, Any]:
        path = "" if paths is None else str(paths[i])
        if len(path.encode()) > _PATH_MAX:
            raise UsageError(f"path longer than {_PATH_MAX} bytes: {path[:80]}...")
        row: dict[str, Any] = {
            "id": int(ids[i]),
            "path": path,
            "meta": dict(metadata[i] or {}) if metadata is not None else {},
        }
        if dense is not None:
            row["dense"] = dense[i].tolist()
        if sparse is not None:
            row["sparse"] = self._sparse_row(sparse, i)
        return row

    def _sparse_row(self, sparse: SparseBatch, i: int) -> dict[int, float]:
        idx, val = sparse.row(i)
        keep = val != 0
        row = {int(j): float(v) for j, v in zip(idx[keep], val[keep], strict=True)}
        # Milvus refuses empty sparse vectors: one weight on a dimension no query has
        return row or {self._sentinel: 1.0}

    @property
    def _sentinel(self) -> int:
        return max(int(self.ctx.vocab_size), 1)

    def remove(self, ids: np.ndarray) -> int:
        """Delete items by id (unknown ids are ignored); returns how many were removed."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        removed = 0
        for a in range(0, len(ids), _WRITE_BATCH):
            chunk = ids[a : a + _WRITE_BATCH].tolist()
            present = self._call(
                "query", self.collection, filter=f"id in {chunk}", output_fields=["id"]
            )
            if present:
                self._call("delete", self.collection, ids=[int(r["id"]) for r in present])
                removed += len(present)
        return removed

    def search(
        self,
        queries: Vectors,
        k: int,
        params: SearchParams | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query under the result contract; dense queries when given, else sparse."""
        n = len(queries)
        if k <= 0 or n == 0:
            return empty_results(n, max(k, 0))
        expr = where_to_filter(where)
        if queries.dense is not None and self.has_dense:
            q = np.asarray(queries.dense, dtype=np.float32)
            if q.ndim != 2 or q.shape[1] != self.ctx.dim:
                raise UsageError(
                    f"query vectors must be [n, {self.ctx.dim}], got shape {tuple(q.shape)}"
                )
            data: list[Any] = [row.tolist() for row in q]
            return self._search("dense", data, k, self._search_params(params), expr)
        if queries.sparse is not None and self.has_sparse:
            rows = [self._query_sparse_row(queries.sparse, i) for i in range(n)]
            live = [i for i, r in enumerate(rows) if r]
            out_s, out_i = empty_results(n, k)
            if live:  # a query without any weight matches nothing (Milvus refuses it anyway)
                s, i_ = self._search(
                    "sparse", [rows[i] for i in live], k, {"drop_ratio_search": 0.0}, expr
                )
                out_s[live], out_i[live] = s, i_
            return out_s, out_i
        need = "dense" if self.has_dense else "sparse (lexical)"
        raise UsageError(f"this Milvus index needs {need} query vectors")

    def _query_sparse_row(self, sparse: SparseBatch, i: int) -> dict[int, float]:
        idx, val = sparse.row(i)
        keep = (val != 0) & (idx != self._sentinel)
        return {int(j): float(v) for j, v in zip(idx[keep], val[keep], strict=True)}

    def _search_params(self, params: SearchParams | None) -> dict[str, Any]:
        out = dict(self._search_defaults)
        if params is not None:
            if params.ef_search is not None and "ef" in out:
                out["ef"] = int(params.ef_search)
            if params.nprobe is not None and "nprobe" in out:
                out["nprobe"] = int(params.nprobe)
        return out

    def _search(
        self, field: str, data: list[Any], k: int, params: dict[str, Any], expr: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search in query batches; widen the limit while ties at the ``k``-th place continue."""
        n = len(data)
        out_s, out_i = empty_results(n, k)
        for a in range(0, n, _QUERY_BATCH):
            todo = list(range(a, min(n, a + _QUERY_BATCH)))
            limit = min(_MAX_TOPK, k + max(8, k // 4))
            while todo:
                hits = self._call(
                    "search",
                    self.collection,
                    data=[data[i] for i in todo],
                    anns_field=field,
                    limit=limit,
                    filter=expr,
                    search_params={"metric_type": "IP", "params": params},
                    output_fields=[],
                )
                again = []
                for qi, row in zip(todo, hits, strict=True):
                    s = np.asarray([h["distance"] for h in row], dtype=np.float32)
                    ids = np.asarray([h["id"] for h in row], dtype=np.int64)
                    rs, ri = sort_results(s[None, :], ids[None, :], k)
                    out_s[qi], out_i[qi] = rs[0], ri[0]
                    full = len(row) >= limit and ri[0, -1] >= 0
                    if full and limit < _MAX_TOPK and float(s.min()) >= float(rs[0, -1]):
                        again.append(qi)  # the cut may fall inside a run of equal scores
                todo = again
                limit = min(_MAX_TOPK, limit * 2)
        return out_s, out_i

    # -- persistence -----------------------------------------------------------------
    def pointer(self) -> dict[str, Any]:
        """What :meth:`save` writes: where the collection is and how it was made."""
        return {
            "backend": str(self.target),
            "collection": self.collection,
            "dim": int(self.ctx.dim),
            "vocab_size": int(self.ctx.vocab_size),
            "sparse": self.has_sparse,
            "dense_spec": None if self.dense_spec is None else str(self.dense_spec),
            "index_type": getattr(self, "_index_type", None),
        }

    def save(self, directory: Path) -> list[str]:
        """Flush the collection and write the pointer file ``milvus.json`` into ``directory``."""
        self._call("flush", self.collection)
        Path(directory, POINTER_FILE).write_text(json.dumps(self.pointer(), indent=2))
        return [POINTER_FILE]

    @classmethod
    def load(cls, directory: Path, options: dict[str, Any], mmap: bool = True) -> MilvusKind:
        """Reconnect to the collection named by ``directory/milvus.json``."""
        f = Path(directory) / POINTER_FILE
        if not f.is_file():
            raise IndexMismatchError(
                f"{directory} has no {POINTER_FILE}: not a Milvus-backed index"
            )
        ptr = json.loads(f.read_text())
        ctx = options.get("context") or KindContext(dim=ptr["dim"], vocab_size=ptr["vocab_size"])
        if (ctx.dim, ctx.vocab_size) != (ptr["dim"], ptr["vocab_size"]):
            raise IndexMismatchError(
                f"Milvus pointer says dim={ptr['dim']}, vocab={ptr['vocab_size']}; the index says "
                f"dim={ctx.dim}, vocab={ctx.vocab_size}"
            )
        spec = None
        if ptr.get("dense_spec"):
            from lexlens.index.spec import parse_spec

            spec = parse_spec(ptr["dense_spec"])
        return cls(
            parse_backend(ptr["backend"]),
            ptr["collection"],
            ctx,
            spec,
            bool(ptr["sparse"]),
            create=False,
        )

    @property
    def ntotal(self) -> int:
        """Number of live items in the collection."""
        res = self._call("query", self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def memory_bytes(self) -> int:
        """Raw vector bytes held by Milvus (dense float32 rows; sparse not counted)."""
        return self.ntotal * 4 * int(self.ctx.dim)

    # -- extras ----------------------------------------------------------------------
    def get(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Stored rows (path, meta, vectors) of ``ids`` that exist, by id."""
        out: dict[int, dict[str, Any]] = {}
        for chunk in _chunks([int(i) for i in ids], _WRITE_BATCH):
            fields = (
                ["path", "meta"]
                + (["dense"] if self.has_dense else [])
                + (["sparse"] if self.has_sparse else [])
            )
            for r in self._call("get", self.collection, ids=chunk, output_fields=fields):
                out[int(r["id"])] = dict(r)
        return out

    def drop(self) -> None:
        """Delete the whole collection (irreversible)."""
        self._client.drop_collection(self.collection)

    def close(self) -> None:
        """Close the client connection (the collection stays)."""
        self._client.close()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from pymilvus.exceptions import MilvusException

        try:
            return getattr(self._client, method)(*args, **kwargs)
        except MilvusException as e:
            msg = str(getattr(e, "message", e)).splitlines()[0]
            raise LexlensError(
                f"Milvus {method} on {self.collection!r} at {self.target} failed: {msg}"
            ) from e


def _chunks(seq: list[int], size: int) -> Iterator[list[int]]:
    for a in range(0, len(seq), size):
        yield seq[a : a + size]


def _connect(target: MilvusTarget) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise LexlensError("the Milvus backend needs pymilvus: pip install 'lexlens[scale]'") from e
    try:
        if target.lite:
            Path(target.uri).parent.mkdir(parents=True, exist_ok=True)
            return MilvusClient(uri=target.uri)
        token = os.environ.get(TOKEN_ENV, "")
        return MilvusClient(uri=target.uri, token=token)
    except Exception as e:  # noqa: BLE001 - the client raises many kinds; one clear line here
        raise LexlensError(f"cannot open Milvus at {target}: {type(e).__name__}: {e}") from e
