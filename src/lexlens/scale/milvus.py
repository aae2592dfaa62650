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
dense      FLOAT_VECTOR(dim), IP     the L2-normalised embedding (dense structures)
sparse     SPARSE_FLOAT_VECTOR, IP   lexical weights over the vocabulary (``sparse``; both
                                     fields in one row for ``milvus(sparse,DENSE)``)
path       VARCHAR                   the item's file path
meta       JSON                      ``{"f": user fields, "bools": [boolean field paths],
                                     "text", "size", "mtime"}`` for filters
=========  ========================  ==============================================

The index records the spec ``milvus(INNER)``; ``INNER`` picks the Milvus index type:
``flat`` -> ``FLAT`` (exact), ``hnswM`` -> ``HNSW`` (M, efConstruction; ``ef_search`` per
query), ``ivfN,flat|sq8|pqM`` -> ``IVF_FLAT`` / ``IVF_SQ8`` / ``IVF_PQ`` (``nprobe`` per
query), ``sparse`` -> ``SPARSE_INVERTED_INDEX`` (exact inner product). Milvus refuses empty
sparse vectors, so an item without lexical weights stores one weight on an out-of-vocabulary
sentinel dimension that no query ever has (it can never match, exactly like an empty row).

**Dense and sparse in one collection**: ``milvus(sparse,DENSE[;OPTIONS])`` -- what
``--spec hybrid(sparse,DENSE;OPTIONS) --backend milvus://...`` records -- keeps both vector
fields in every row and answers like the local ``hybrid`` kind (:mod:`lexlens.index.hybrid`),
with the same options (``fusion=rerank|rrf|minmax``, ``candidates``, ``alpha``, ``rrf_k``) and
the same fusion functions (:mod:`lexlens.index.fusion`) applied to Milvus's exact per-field
result lists:

* ``fusion=rerank`` (default): the ``candidates`` best lexical matches (at least ``k``),
  joined by the dense top ``k`` when fewer than ``k`` items share a word with the query, are
  re-scored by the dense inner product (their dense vectors read back from Milvus);
* ``fusion=rrf`` / ``minmax``: both fields are searched for ``candidates`` hits under the same
  filter and fused by reciprocal ranks (``rrf_k``) or min-max normalised scores (``alpha``).

With the option ``native`` (``milvus(sparse,flat;fusion=rrf,native)``), RRF runs inside Milvus
instead: one ``hybrid_search`` call with its ``RRFRanker`` (the same formula; which of several
items with *equal* scores at a field's ``candidates`` cut enter the fusion, and their order,
is then Milvus's choice). Dense-only queries (raw embeddings) are queries without words, as in
the local kind; queries carrying only lexical vectors search the lexical field alone.
``SearchParams.fusion`` / ``candidates`` / ``alpha`` override the options per call. A ``where``
filter runs inside each field's search (the fused lists hold admitted items only), where the
local engine filters the fused list of an unfiltered search: the same answers for one-field
indexes, possibly different ones for fused lists.

``where`` filters (the grammar of :mod:`lexlens.index.filters`) are translated into Milvus
filter expressions with the local semantics (:func:`where_to_filter`), so filtering runs
inside Milvus next to the vectors.

Search returns the lexlens result contract. Milvus orders equal scores in its own way and cuts
at ``limit``, so the adapter asks for more than ``k`` and, while the last hit still ties with
the ``k``-th best, asks again with a larger limit; then :func:`lexlens.results.sort_results`
orders by ``(-score, id)`` and pads with ``-1``. With the exact ``FLAT`` / sparse index the
results are those of the local backend on the same vectors.

pymilvus is imported inside functions only.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lexlens.errors import IndexMismatchError, LexlensError, UsageError
from lexlens.index import fusion as fu
from lexlens.index.base import IndexKind, KindContext, SearchParams, Vectors, register_kind
from lexlens.index.hybrid import DEFAULT_CANDIDATES
from lexlens.models.base import SparseBatch
from lexlens.results import empty_results, sort_results

__all__ = [
    "MILVUS_SCHEME",
    "TOKEN_ENV",
    "MilvusTarget",
    "MilvusKind",
    "parse_backend",
    "is_milvus_backend",
    "wrap_spec",
    "backend_kind",
    "where_to_filter",
    "collection_name_for",
    "FUSIONS",
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
#: fusions of dense + sparse queries (those of lexlens.index.hybrid), and the options
#: ``milvus(sparse,DENSE;...)`` takes with their defaults
FUSIONS = ("rerank", "rrf", "minmax")
_FUSION_OPTIONS: dict[str, Any] = {
    "fusion": "rerank",
    "candidates": DEFAULT_CANDIDATES,  # the local hybrid kind's, so both answer alike
    "alpha": 0.5,
    "rrf_k": 60,
    "native": False,
}


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
    if isinstance(v, float):
        if not np.isfinite(v):
            raise UsageError(f"filter values must be finite, got {v}")
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))  # a double-quoted string with escapes, which Milvus accepts


def _positive(field: str, op: str, value: Any) -> tuple[str, str | None]:
    """Milvus expression true exactly where lexlens's ``field op value`` is true.

    Returns ``(expr, key)``: ``key`` is the JSON key read when it may be missing (Milvus then
    yields null, which ``not`` does not turn into true), else ``None``.
    """
    mop = "==" if op == "=" else op
    if field == "id":  # INTEGER column: booleans compare as 0/1, strings never match
        if isinstance(value, str):
            return "false", None
        return f"id {mop} {int(value) if isinstance(value, bool) else _literal(value)}", None
    if field == "path":  # TEXT column, never empty for an item with a file
        ok = isinstance(value, str) and not isinstance(value, bool) and value != ""
        return (f"path {mop} {_literal(value)}" if ok else "false"), None
    if field in ("text", "size", "mtime"):  # TEXT / INTEGER / REAL columns kept in meta
        key = f'meta["{field}"]'
        if isinstance(value, bool):
            if field != "size":
                return "false", None
            value = int(value)
        if isinstance(value, str) != (field == "text"):
            return "false", None
        return f"{key} {mop} {_literal(value)}", key
    key = "meta" + "".join(f'["{part}"]' for part in ("f", *field.split(".")))
    is_bool = f'array_contains(meta["bools"], {_literal(field)})'
    if isinstance(value, bool):  # JSON true/false only, never the numbers 1/0
        return f"({key} == {_literal(value)} and {is_bool})", key
    if isinstance(value, str):
        return f"{key} {mop} {_literal(value)}", key
    return f"({key} {mop} {_literal(value)} and not {is_bool})", key


def where_to_filter(where: str | Sequence[Any] | None) -> str:
    """Translate a lexlens ``--where`` filter into a Milvus filter expression.

    ``where`` is the filter string of :mod:`lexlens.index.filters` (``split=val AND n>3``) or
    its parsed conditions. The semantics are those of the local (SQLite) filter: numbers match
    numbers, strings strings, ``true``/``false`` only booleans, and an item without the field
    matches only ``!=``. User fields live in ``meta["f"]``; the item columns ``text``, ``size``
    and ``mtime`` in ``meta``; ``id`` and ``path`` are collection fields.
    """
    from lexlens.index.filters import parse_where

    conds = parse_where(where) if isinstance(where, str) or where is None else list(where)
    parts = []
    for c in conds:
        if c.op == "!=":
            expr, key = _positive(c.field, "=", c.value)
            if expr == "false":
                continue  # always true
            parts.append(f"(not exists {key} or not ({expr}))" if key else f"not ({expr})")
        else:
            expr, _ = _positive(c.field, c.op, c.value)
            if expr == "false":
                return "false"
            parts.append(expr)
    return " and ".join(parts)


def _bool_paths(fields: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the boolean leaves of a user-field object."""
    out = []
    for k, v in fields.items():
        if isinstance(v, bool):
            out.append(prefix + str(k))
        elif isinstance(v, Mapping):
            out += _bool_paths(v, f"{prefix}{k}.")
    return out


def _meta(record: Any) -> dict[str, Any]:
    """The ``meta`` JSON of an item: user fields, boolean paths, and the text/size/mtime columns."""
    fields = dict(getattr(record, "fields", None) or {})
    meta: dict[str, Any] = {"f": fields, "bools": _bool_paths(fields)}
    for col in ("text", "size", "mtime"):
        v = getattr(record, col, None)
        if v is not None:
            meta[col] = v
    return meta


# ----------------------------------------------------------------------------- index types
def _index_type(spec: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Milvus ``(index_type, build params, default search params)`` for a dense lexlens spec
    (the same defaults as the local kinds: hnsw M=32, efc=80, ef=64; ivf nlist=1024, nprobe=16)."""
    kind, num, opt = spec.kind, spec.number, spec.option
    if kind == "flat":
        return "FLAT", {}, {}
    if kind == "hnsw":
        m = int(num or 32)
        return "HNSW", {"M": m, "efConstruction": int(opt("efc", 80))}, {"ef": int(opt("ef", 64))}
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
def wrap_spec(inner: Any) -> Any:
    """``flat`` -> ``milvus(flat)``, ``hybrid(sparse,flat;fusion=rrf)`` ->
    ``milvus(sparse,flat;fusion=rrf)``: the spec an index on the Milvus backend records."""
    from lexlens.index.spec import IndexSpec, parse_spec

    inner = parse_spec(inner)
    if inner.kind == MilvusKind.kind:
        return inner
    if inner.kind == "hybrid":  # dense + sparse fields in one collection, fused by Milvus
        return IndexSpec(MilvusKind.kind, options=inner.options, children=inner.children)
    return IndexSpec(MilvusKind.kind, children=(inner,))


def backend_kind(
    backend: str, spec: Any, ctx: KindContext, index_dir: str | os.PathLike[str]
) -> MilvusKind:
    """The structure of a new index built with ``backend="milvus://..."`` at ``index_dir``.

    ``milvus`` / ``milvus://`` alone means Milvus Lite in ``INDEX/milvus.db``; the collection is
    named after the index directory plus a random suffix (two indexes never share one).
    """
    import uuid

    root = Path(index_dir).resolve()
    name = f"{collection_name_for(root.name)[:240]}_{uuid.uuid4().hex[:8]}"
    return MilvusKind.create(backend, spec, ctx, name, default_lite=root / "milvus.db")


@register_kind
class MilvusKind(IndexKind):
    """An :class:`IndexKind` whose items live in one Milvus collection (see module docstring).

    Its spec wraps the structure Milvus builds: ``milvus(flat)``, ``milvus(hnsw32)``,
    ``milvus(ivf1024,pq32)``, ``milvus(sparse)``, ``milvus(sparse,hnsw32;fusion=rrf)`` (both
    fields in one collection). It is made by :meth:`create` (the backend URI
    is not part of a spec) and reopened from the pointer file by :meth:`load`. Beyond the kind
    interface, :meth:`add` stores item records (path, user fields, text, size, mtime) and
    :meth:`search` evaluates ``where`` filters inside Milvus (``accepts_where``).
    """

    kind: ClassVar[str] = "milvus"
    takes_children: ClassVar[bool] = True
    #: search() takes ``where`` and filters inside the engine
    accepts_where: ClassVar[bool] = True

    def __init__(
        self,
        target: MilvusTarget,
        collection: str,
        spec: Any,
        ctx: KindContext,
        create: bool = True,
    ) -> None:
        if not _NAME_RE.fullmatch(collection):
            raise UsageError(f"bad Milvus collection name {collection!r}")
        if spec.kind != self.kind or not 1 <= len(spec.children) <= 2:
            raise UsageError(
                f"a Milvus index spec is milvus(INDEX) or milvus(sparse,DENSE), not {spec}"
            )
        sparse_children = [c for c in spec.children if c.kind == "sparse"]
        dense_children = [c for c in spec.children if c.kind != "sparse"]
        if len(sparse_children) > 1 or len(dense_children) > 1:
            raise UsageError(f"milvus(...) holds at most one dense and one sparse index: {spec}")
        self.spec = spec
        self.target = target
        self.collection = collection
        self.ctx = ctx
        self.has_sparse = bool(sparse_children)
        self.has_dense = bool(dense_children)
        self._fusion = self._fusion_options(spec)
        if self.has_sparse:
            child = sparse_children[0]
            if child.options or child.number is not None:
                raise UsageError(
                    f"Milvus keeps every lexical weight exactly; use plain sparse, not {child}"
                )
            if ctx.vocab_size <= 0:
                raise UsageError(f"{spec} needs a model with a lexical vocabulary")
        if self.has_dense:
            child = dense_children[0]
            if ctx.dim <= 0:
                raise UsageError(f"milvus({child}) needs dense vectors")
            self._index_type, self._build_params, self._search_defaults = _index_type(child)
            if target.lite and self._index_type == "IVF_PQ":
                raise UsageError(
                    f"Milvus Lite has no IVF_PQ index ({child}); use flat, hnswM, ivfN,flat or "
                    "ivfN,sq8 with Milvus Lite, or a Milvus server"
                )
        if target.lite and not create and not Path(target.uri).exists():
            raise IndexMismatchError(
                f"the Milvus Lite file {target.uri} of this index is gone (an index with its "
                "Milvus Lite file elsewhere cannot be moved or copied without it)"
            )
        # the largest id this generation holds: rows past it (an add interrupted before its
        # generation was committed) are never answered; None: unknown (an older pointer file)
        self._max_id: int | None = -1 if create else None
        self._client = _connect(target)
        if self._client.has_collection(collection):
            self._check_existing()
        elif create:
            self._create()
        else:
            raise IndexMismatchError(f"Milvus collection {collection!r} does not exist at {target}")
        self._call("load_collection", collection)

    @staticmethod
    def _fusion_options(spec: Any) -> dict[str, Any]:
        """The hybrid options of a two-field spec, defaults filled in (checked like
        :mod:`lexlens.index.hybrid`'s, plus the ``native`` flag)."""
        opts = spec.opts()
        if opts and len(spec.children) != 2:
            raise UsageError(f"options belong to milvus(sparse,DENSE;...) only, not {spec}")
        unknown = sorted(set(opts) - set(_FUSION_OPTIONS))
        if unknown:
            raise UsageError(
                f"{spec}: option {unknown[0]!r} has no Milvus counterpart; "
                f"options: {', '.join(_FUSION_OPTIONS)}"
            )
        out = {**_FUSION_OPTIONS, **opts}
        out["fusion"] = str(out["fusion"]).lower()
        if out["fusion"] not in FUSIONS:
            raise UsageError(f"{spec}: fusion must be one of {', '.join(FUSIONS)}")
        cand, rrf_k, alpha = out["candidates"], out["rrf_k"], out["alpha"]
        if isinstance(cand, bool) or not isinstance(cand, int) or cand < 1:
            raise UsageError(f"{spec}: candidates must be a positive integer")
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, int | float) or rrf_k < 0:
            raise UsageError(f"{spec}: rrf_k must be a non-negative number")
        _check_alpha(alpha)
        if out["native"] is not True and out["native"] is not False:
            raise UsageError(f"{spec}: native is a flag (no value)")
        if out["native"] and out["fusion"] != "rrf":
            raise UsageError(f"{spec}: native fusion exists for rrf only")
        return out

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Any, ctx: KindContext) -> MilvusKind:
        """Refused: a Milvus index needs a backend URI, which a spec does not carry."""
        raise UsageError(
            f"{spec} is made with --backend milvus://PATH_OR_URI (lexlens.Index.build(..., backend=...))"
        )

    @classmethod
    def create(
        cls,
        backend: str,
        spec: Any,
        ctx: KindContext,
        collection: str,
        default_lite: str | os.PathLike[str] | None = None,
    ) -> MilvusKind:
        """A new collection (or the existing one when its schema matches) at ``backend``.

        ``spec`` is the structure (``flat``, ``hnsw32``, ``sparse``, ``hybrid(sparse,flat)``;
        wrapped as ``milvus(...)`` when it is not already).
        """
        return cls(
            parse_backend(backend, default_lite), collection, wrap_spec(spec), ctx, create=True
        )

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
        self._call("create_collection", self.collection, schema=schema, index_params=index_params)

    def _check_existing(self) -> None:
        desc = self._call("describe_collection", self.collection)
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
    def add(self, ids: np.ndarray, vectors: Vectors, records: Sequence[Any] | None = None) -> None:
        """Insert (or overwrite) items; ``records`` (duck-typed: ``path``, ``fields``, ``text``,
        ``size``, ``mtime``, e.g. :class:`lexlens.index.ingest.ItemRecord`) feed the filters."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(ids)
        if len(np.unique(ids)) != n:
            raise UsageError("ids must be unique")
        if records is not None and len(records) != n:
            raise UsageError(f"got {len(records)} records for {n} ids")
        if self._max_id is not None and n:
            self._max_id = max(self._max_id, int(ids.max()))
        dense = sparse = None
        if self.has_dense:
            if vectors.dense is None:
                raise UsageError("this Milvus index needs dense vectors")
            dense = np.asarray(vectors.dense, dtype=np.float32)
            if dense.shape != (n, self.ctx.dim):
                raise UsageError(
                    f"expected {n} vectors of dimension {self.ctx.dim}, got shape {tuple(dense.shape)}"
                )
        if self.has_sparse:
            sparse = vectors.sparse
            if sparse is None or len(sparse) != n:
                raise UsageError(f"this Milvus index needs {n} sparse (lexical) vectors")
        for a in range(0, n, _WRITE_BATCH):
            rows = []
            for i in range(a, min(n, a + _WRITE_BATCH)):
                rec = records[i] if records is not None else None
                path = str(getattr(rec, "path", None) or "")
                if len(path.encode()) > _PATH_MAX:
                    raise UsageError(f"path longer than {_PATH_MAX} bytes: {path[:80]}...")
                row: dict[str, Any] = {"id": int(ids[i]), "path": path, "meta": _meta(rec)}
                if dense is not None:
                    row["dense"] = dense[i].tolist()
                if sparse is not None:
                    row["sparse"] = self._sparse_row(sparse, i)
                rows.append(row)
            self._call("upsert", self.collection, rows)

    def update_records(self, records: Sequence[Any]) -> int:
        """New metadata (``path``, ``fields``, ``text``, ``size``, ``mtime``) for stored items
        whose vectors did not change; each record carries its ``id``. Returns rows updated."""
        by_id = {int(r.id): r for r in records}
        done = 0
        for chunk in _chunks(sorted(by_id), _WRITE_BATCH):
            rows = self._call("get", self.collection, ids=chunk, output_fields=self._vector_fields)
            for r in rows:
                rec = by_id[int(r["id"])]
                r["path"] = str(getattr(rec, "path", None) or "")
                r["meta"] = _meta(rec)
            if rows:
                self._call("upsert", self.collection, [dict(r) for r in rows])
                done += len(rows)
        return done

    def _sparse_row(self, sparse: SparseBatch, i: int) -> dict[int, float]:
        idx, val = sparse.row(i)
        keep = val != 0
        row = {int(j): float(v) for j, v in zip(idx[keep], val[keep], strict=True)}
        # Milvus refuses empty sparse vectors: one weight on a dimension no query has
        return row or {self._sentinel: 1.0}

    @property
    def _vector_fields(self) -> list[str]:
        return [f for f, on in (("dense", self.has_dense), ("sparse", self.has_sparse)) if on]

    @property
    def _sentinel(self) -> int:
        return max(int(self.ctx.vocab_size), 1)

    def remove(self, ids: np.ndarray) -> int:
        """Delete items by id (unknown ids are ignored); returns how many were removed."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        removed = 0
        for chunk in _chunks(ids.tolist(), _WRITE_BATCH):
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
        where: str | Sequence[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query under the result contract, among the items ``where`` admits."""
        n = len(queries)
        if k <= 0 or n == 0:
            return empty_results(n, max(k, 0))
        expr = self._bounded(where_to_filter(where))
        use_dense = self.has_dense and (queries.dense is not None or not self.has_sparse)
        use_sparse = self.has_sparse and (queries.sparse is not None or not self.has_dense)
        if use_dense and self.has_sparse and queries.sparse is None:  # raw embeddings
            use_sparse, queries = True, Vectors(dense=queries.dense, sparse=_no_words(n))
        if not (use_dense or use_sparse):
            raise UsageError("the queries carry neither dense nor sparse vectors")
        if use_dense:
            q = self._dense_rows(queries)
        if use_sparse:
            rows = self._sparse_rows(queries)
        if use_dense and use_sparse:
            return self._fused(q, rows, k, params, expr)
        if use_dense:
            return self._search("dense", q, k, self._search_params(params), expr)
        return self._sparse_search(rows, k, expr)

    def _dense_rows(self, queries: Vectors) -> list[Any]:
        if queries.dense is None:
            raise UsageError("this Milvus index needs dense query vectors")
        q = np.asarray(queries.dense, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.ctx.dim:
            raise UsageError(
                f"query vectors must be [n, {self.ctx.dim}], got shape {tuple(q.shape)}"
            )
        return [row.tolist() for row in q]

    def _sparse_rows(self, queries: Vectors) -> list[dict[int, float]]:
        if queries.sparse is None:
            raise UsageError("this Milvus index needs sparse (lexical) query vectors")
        return [self._query_sparse_row(queries.sparse, i) for i in range(len(queries.sparse))]

    def _sparse_search(
        self, rows: list[dict[int, float]], k: int, expr: str, candidates: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact lexical top-``k`` (``candidates`` wide when given); empty queries match nothing."""
        width = k if candidates is None else candidates
        live = [i for i, r in enumerate(rows) if r]
        out_s, out_i = empty_results(len(rows), width)
        if live:  # a query without any weight matches nothing (Milvus refuses it anyway)
            s, i_ = self._search(
                "sparse", [rows[i] for i in live], width, {"drop_ratio_search": 0.0}, expr
            )
            out_s[live], out_i[live] = s, i_
        return out_s, out_i

    def _fused(
        self,
        dense: list[Any],
        sparse: list[dict[int, float]],
        k: int,
        params: SearchParams | None,
        expr: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dense + sparse queries fused like the local hybrid kind (module docstring)."""
        p = params or SearchParams()
        fusion = (p.fusion or self._fusion["fusion"]).lower()
        if fusion not in FUSIONS:
            raise UsageError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        cand = p.candidates if p.candidates is not None else self._fusion["candidates"]
        if cand <= 0:
            raise UsageError(f"candidates must be positive, got {cand}")
        cand = min(_MAX_TOPK // 2, max(int(cand), k))
        dense_params = self._search_params(params)
        if fusion == "rrf" and self._fusion["native"]:
            return self._native_rrf(dense, sparse, k, cand, dense_params, expr)
        s_sp, i_sp = self._sparse_search(sparse, k, expr, candidates=cand)
        if fusion == "rerank":
            return self._rerank(dense, i_sp, k, dense_params, expr)
        s_de, i_de = self._search("dense", dense, cand, dense_params, expr)
        if fusion == "rrf":
            return fu.rrf([(s_sp, i_sp), (s_de, i_de)], k, float(self._fusion["rrf_k"]))
        alpha = _check_alpha(self._fusion["alpha"] if p.alpha is None else p.alpha)
        return fu.minmax([(s_sp, i_sp), (s_de, i_de)], k, [1.0 - alpha, alpha])

    def _native_rrf(
        self,
        dense: list[Any],
        sparse: list[dict[int, float]],
        k: int,
        cands: int,
        dense_params: dict[str, Any],
        expr: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """RRF by Milvus's ``hybrid_search`` (``RRFRanker``), one call per query batch."""
        n = len(dense)
        out_s, out_i = empty_results(n, k)
        if expr == "false":
            return out_s, out_i
        rrf_k = self._fusion["rrf_k"]
        lone = [i for i in range(n) if not sparse[i]]
        if lone:  # no words: Milvus refuses empty sparse vectors; the dense list alone
            s, ids = self._search("dense", [dense[i] for i in lone], cands, dense_params, expr)
            out_s[lone], out_i[lone] = fu.rrf([(s, ids)], k, float(rrf_k))
        both = [i for i in range(n) if sparse[i]]
        from pymilvus import RRFRanker

        for a in range(0, len(both), _QUERY_BATCH):
            part = both[a : a + _QUERY_BATCH]
            reqs = self._hybrid_requests(
                [dense[i] for i in part],
                [sparse[i] for i in part],
                cands,
                {"metric_type": "IP", "params": dense_params},
                expr,
            )
            hits = self._call(
                "hybrid_search",
                self.collection,
                reqs,
                RRFRanker(rrf_k),
                limit=2 * cands,  # every fused candidate: the cut at k is ours, by (-score, id)
                output_fields=[],
            )
            for qi, row in zip(part, hits, strict=True):
                out_s[qi], out_i[qi] = _ordered(row, k)[1:]
        return out_s, out_i

    def _hybrid_requests(
        self,
        dense: list[Any],
        sparse: list[dict[int, float]],
        limit: int,
        dense_params: dict[str, Any],
        expr: str,
    ) -> list[Any]:
        from pymilvus import AnnSearchRequest

        sparse_params = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}
        extra = {"filter": expr} if expr else {}
        return [
            AnnSearchRequest(dense, "dense", dense_params, limit, **extra),
            AnnSearchRequest(sparse, "sparse", sparse_params, limit, **extra),
        ]

    def _rerank(
        self,
        dense: list[Any],
        cand: np.ndarray,
        k: int,
        dense_params: dict[str, Any],
        expr: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lexical candidates (joined by the dense top ``k`` where fewer than ``k``) re-scored
        by the dense inner product, like the local hybrid kind's ``rerank``."""
        short = np.flatnonzero((cand >= 0).sum(axis=1) < k)
        if len(short):  # too few lexical matches: the dense field's best join the candidates
            _, extra = self._search("dense", [dense[i] for i in short], k, dense_params, expr)
            fill = np.full((len(cand), k), -1, np.int64)
            for j, r in enumerate(short):
                fill[r] = np.where(np.isin(extra[j], cand[r]), -1, extra[j])  # no repeats
            cand = np.concatenate([cand, fill], axis=1)
        wanted = np.unique(cand[cand >= 0])
        stored = self.get(wanted.tolist()) if len(wanted) else {}
        vecs = {i: np.asarray(r["dense"], np.float32) for i, r in stored.items()}
        q = np.asarray(dense, np.float32)
        scores = np.full(cand.shape, -np.inf, np.float32)
        for r, c in zip(*np.nonzero(cand >= 0), strict=True):
            v = vecs.get(int(cand[r, c]))
            if v is not None:  # removed meanwhile: dropped
                scores[r, c] = float(q[r] @ v)
        return sort_results(scores, np.where(np.isfinite(scores), cand, -1), k)

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
        if expr == "false":
            return out_s, out_i
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
                    s, out_s[qi], out_i[qi] = _ordered(row, k)
                    full = len(row) >= limit and out_i[qi, -1] >= 0
                    if full and limit < _MAX_TOPK and float(s.min()) >= float(out_s[qi, -1]):
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
            "spec": str(self.spec),
            "dim": int(self.ctx.dim),
            "vocab_size": int(self.ctx.vocab_size),
            "index_type": getattr(self, "_index_type", None) or "SPARSE_INVERTED_INDEX",
            "fields": self._vector_fields,
            "max_id": self._max_id,
        }

    def save(self, directory: Path) -> list[str]:
        """Flush the collection and write the pointer file ``milvus.json`` into ``directory``.

        A Milvus Lite file inside the index (``INDEX/milvus.db``, next to ``generations/``) is
        recorded relative to ``directory``, so a moved or copied index uses its own file."""
        self._call("flush", self.collection)
        ptr = self.pointer()
        here = Path(directory).resolve()
        db = Path(self.target.uri)
        inside = any(
            (a / "generations").is_dir() and db.is_relative_to(a) for a in here.parents
        )  # under the index root (the folder holding generations/)
        if self.target.lite and inside:
            ptr["backend"] = MILVUS_SCHEME + os.path.relpath(self.target.uri, here)
            ptr["relative"] = True
        Path(directory, POINTER_FILE).write_text(json.dumps(ptr, indent=2))
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
        # the caller's parsed spec when given (compared as canonical text), else the pointer's
        spec = wrap_spec(options["spec"] if "spec" in options else ptr["spec"])
        if str(spec) != str(ptr["spec"]):
            raise IndexMismatchError(f"{f} describes {ptr['spec']}, the index says {spec}")
        if (ctx.dim, ctx.vocab_size) != (ptr["dim"], ptr["vocab_size"]):
            raise IndexMismatchError(
                f"{f} says dim={ptr['dim']}, vocab={ptr['vocab_size']}; the index says "
                f"dim={ctx.dim}, vocab={ctx.vocab_size}"
            )
        backend = ptr["backend"]
        if ptr.get("relative"):  # a Lite file inside the index: where this copy of it is
            rel = backend[len(MILVUS_SCHEME) :]
            backend = MILVUS_SCHEME + str((Path(directory).resolve() / rel).resolve())
        kind = cls(parse_backend(backend), ptr["collection"], spec, ctx, create=False)
        kind._max_id = None if ptr.get("max_id") is None else int(ptr["max_id"])
        return kind

    @property
    def ntotal(self) -> int:
        """Number of live items in the collection."""
        res = self._call(
            "query", self.collection, filter=self._bounded(""), output_fields=["count(*)"]
        )
        return int(res[0]["count(*)"]) if res else 0

    def _bounded(self, expr: str) -> str:
        """``expr`` limited to the ids this generation holds (see ``_max_id``)."""
        if self._max_id is None or expr == "false":
            return expr
        bound = f"id <= {self._max_id}"
        return f"{bound} and ({expr})" if expr else bound

    def memory_bytes(self) -> int:
        """Raw dense vector bytes held by Milvus (the server's RAM, not this process's)."""
        return self.ntotal * 4 * int(self.ctx.dim) if self.has_dense else 0

    # -- extras ----------------------------------------------------------------------
    def select_ids(self, where: str | Sequence[Any] | None) -> np.ndarray:
        """Ascending ids of the items a ``where`` filter admits (evaluated by Milvus).

        Up to 16,384 ids (Milvus's cap for one query); more raise :class:`UsageError`.
        """
        expr = self._bounded(where_to_filter(where))
        if expr == "false":
            return np.zeros(0, np.int64)
        res = self._call(
            "query", self.collection, filter=expr, output_fields=["id"], limit=_MAX_TOPK
        )
        if len(res) >= _MAX_TOPK:
            raise UsageError(f"the filter admits {_MAX_TOPK} or more items; narrow it")
        return np.sort(np.fromiter((int(r["id"]) for r in res), np.int64, len(res)))

    def get(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Stored rows (path, meta, vectors) of the ``ids`` that exist, by id."""
        fields = ["path", "meta", *self._vector_fields]
        out: dict[int, dict[str, Any]] = {}
        for chunk in _chunks([int(i) for i in ids], _WRITE_BATCH):
            for r in self._call("get", self.collection, ids=chunk, output_fields=fields):
                out[int(r["id"])] = dict(r)
        return out

    def drop(self) -> None:
        """Delete the whole collection (irreversible)."""
        self._call("drop_collection", self.collection)

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


def _check_alpha(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
        raise UsageError(f"alpha must be between 0 and 1, got {v!r}")
    return float(v)


def _no_words(n: int) -> SparseBatch:
    """``n`` queries without lexical weights."""
    return SparseBatch(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 0)


def _ordered(row: Sequence[Any], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One query's Milvus hits -> (raw scores, top-``k`` scores, ids) by ``(-score, id)``."""
    s = np.asarray([h["distance"] for h in row], dtype=np.float32)
    ids = np.asarray([h["id"] for h in row], dtype=np.int64)
    rs, ri = sort_results(s[None, :], ids[None, :], k)
    return s, rs[0], ri[0]


def _chunks(seq: list[int], size: int) -> Iterator[list[int]]:
    for a in range(0, len(seq), size):
        yield seq[a : a + size]


class _DropUnimplementedProbe(logging.Filter):
    """Milvus Lite does not implement the timestamp probe pymilvus sends on connect; the
    in-process gRPC server logs that as an error with a traceback. Drop exactly that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, NotImplementedError) and "Method not implemented" in str(exc))


def _quiet_lite_probe() -> None:
    log = logging.getLogger("grpc._server")
    if not any(isinstance(f, _DropUnimplementedProbe) for f in log.filters):
        log.addFilter(_DropUnimplementedProbe())


def _connect(target: MilvusTarget) -> Any:
    # lexlens forks only image decoders, which never call gRPC: without this, gRPC prints a
    # "skipping fork() handlers" line at every build (read once, when gRPC is first imported)
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    try:
        from pymilvus import MilvusClient
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise LexlensError("the Milvus backend needs pymilvus: pip install 'lexlens[scale]'") from e
    try:
        if target.lite:
            _quiet_lite_probe()
            Path(target.uri).parent.mkdir(parents=True, exist_ok=True)
            return MilvusClient(uri=target.uri)
        token = os.environ.get(TOKEN_ENV, "")
        return MilvusClient(uri=target.uri, token=token)
    except Exception as e:  # noqa: BLE001 - the client raises many kinds; one clear line here
        if type(e).__name__ == "DataDirLockedError" or "locked" in str(e).lower():
            raise LexlensError(
                f"cannot open Milvus Lite at {target}: another process has it open (Milvus Lite "
                "serves one process at a time; use a Milvus server for several)"
            ) from None
        first = (str(e).strip().splitlines() or [""])[0]
        raise LexlensError(f"cannot open Milvus at {target}: {type(e).__name__}: {first}") from None
