"""Index spec strings: the one parser and formatter (like FAISS's ``index_factory``).

Grammar (whitespace ignored, names and option keys case-insensitive)::

    spec       := unit                          exactly one index
    unit       := component ["," component]     the second component only when the first
                                                kind lists ``encodings`` (ivf4096,pq32)
    component  := NAME [NUMBER] ["(" inner ")"]
    inner      := options                       for ordinary kinds: hnsw32(ef=64)
                | unit {"," unit} [";" options] for kinds with ``takes_children``:
                                                hybrid(sparse,hnsw32;fusion=rrf)
    options    := option {"," option}
    option     := KEY ["=" VALUE]               a bare KEY is a flag (True): sparse(topk=64,q8)

Examples: ``flat``, ``hnsw32``, ``hnsw32(ef=64)``, ``ivf4096,flat``, ``ivf4096,pq32``,
``ivf1024,sq8``, ``sq8``, ``pq32``, ``sparse``, ``sparse(topk=64,q8)``,
``hybrid(sparse,flat)``, ``hybrid(sparse,hnsw32;fusion=rrf)``.

``str(spec)`` is the canonical form (lower case, no spaces, options in the order given) and
``parse_spec(str(spec)) == spec`` always holds. Kind names are checked against the registry
:data:`lexlens.index.base.KINDS`; the meaning of the number and of the options belongs to
each kind (``KINDS[name].from_spec``).
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lexlens.errors import UsageError
from lexlens.index.base import KINDS, IndexKind, KindContext

__all__ = [
    "IndexSpec",
    "OptionValue",
    "parse_spec",
    "default_spec",
    "create_kind",
    "load_kind",
    "spec_needs",
    "known_kinds",
    "ensure_builtin_kinds",
]

OptionValue = bool | int | float | str

#: modules that register the built-in kinds when imported (optional ones may be absent)
_BUILTIN_KIND_MODULES = (
    "lexlens.index.dense",
    "lexlens.index.sparse",
    "lexlens.index.hybrid",
    "lexlens.scale.milvus",
)


def ensure_builtin_kinds() -> None:
    """Import the modules that register the built-in kinds (idempotent, cheap after the first)."""
    for mod in _BUILTIN_KIND_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # an optional kind module not written / installed
            if e.name != mod:
                raise


def known_kinds() -> dict[str, type[IndexKind]]:
    """The registered kinds (built-ins loaded first), by exact name."""
    ensure_builtin_kinds()
    return dict(KINDS)


@dataclass(frozen=True)
class IndexSpec:
    """A parsed spec: one kind with its number, options, children and encoding.

    ``options`` keeps the order given (a tuple of ``(key, value)`` pairs); use :meth:`opts`
    for a dict. ``children`` is non-empty only for kinds that take children (hybrid);
    ``encoding`` is the component following a coarse kind (``ivf4096,pq32`` -> ``pq32``).
    """

    kind: str
    number: int | None = None
    options: tuple[tuple[str, OptionValue], ...] = ()
    children: tuple[IndexSpec, ...] = ()
    encoding: IndexSpec | None = None

    def opts(self) -> dict[str, OptionValue]:
        """The options as a dict."""
        return dict(self.options)

    def option(self, key: str, default: Any = None) -> Any:
        """One option's value, or ``default`` when absent."""
        for k, v in self.options:
            if k == key:
                return v
        return default

    def with_options(self, **updates: OptionValue) -> IndexSpec:
        """A copy with options added or replaced (order kept; new keys appended)."""
        opts = dict(self.options)
        opts.update(updates)
        return IndexSpec(self.kind, self.number, tuple(opts.items()), self.children, self.encoding)

    def __str__(self) -> str:
        head = self.kind + ("" if self.number is None else str(self.number))
        inner = ",".join(str(c) for c in self.children)
        if self.options:
            opts = ",".join(_format_option(k, v) for k, v in self.options)
            inner = f"{inner};{opts}" if self.children else opts
        text = f"{head}({inner})" if inner else head
        if self.encoding is not None:
            text += "," + str(self.encoding)
        return text


def _format_option(key: str, value: OptionValue) -> str:
    if value is True:
        return key
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"option {key} must be finite, got {value}")
        return f"{key}={value!r}"
    return f"{key}={value}"


# ----------------------------------------------------------------------------- parser
_TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z0-9_.+\-]+)|(?P<punct>[(),;=]))")
_NAME_NUM = re.compile(r"(?P<name>[a-z_]+)(?P<num>\d+)?")
_KEY = re.compile(r"[a-z_][a-z0-9_]*")
_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:e[-+]?\d+)?", re.IGNORECASE)


class _Parser:
    def __init__(self, text: str, kinds: Mapping[str, type[IndexKind]]) -> None:
        self.text = text
        self.kinds = kinds
        self.tokens: list[str] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if not m:
                self.fail(f"unexpected character {stripped[pos:].lstrip()[:1]!r}")
            self.tokens.append(m.group("word") or m.group("punct"))
            pos = m.end()
        self.i = 0

    def fail(self, why: str) -> None:
        raise UsageError(f"bad index spec {self.text!r}: {why}")

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            self.fail("unexpected end" + (f", expected {expected!r}" if expected else ""))
        if expected is not None and tok != expected:
            self.fail(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok  # type: ignore[return-value]

    def parse(self) -> IndexSpec:
        if not self.tokens:
            self.fail("empty spec")
        spec = self.unit()
        if self.peek() == ",":
            self.fail(
                f"{str(spec)!r} takes no second component; combine indexes with "
                "hybrid(...), e.g. hybrid(sparse,flat)"
            )
        if self.peek() is not None:
            self.fail(f"unexpected {self.peek()!r}")
        return spec

    def unit(self) -> IndexSpec:
        first = self.component()
        cls = self.kinds[first.kind]
        if cls.encodings:
            if self.peek() != ",":
                self.fail(
                    f"{first.kind} needs an encoding after a comma: one of {', '.join(cls.encodings)}"
                )
            self.take(",")
            enc = self.component(encoding_of=first.kind, allowed=cls.encodings)
            return IndexSpec(first.kind, first.number, first.options, first.children, enc)
        return first

    def component(self, encoding_of: str | None = None, allowed: tuple[str, ...] = ()) -> IndexSpec:
        word = self.take()
        m = _NAME_NUM.fullmatch(word.lower())
        if not m:
            self.fail(f"expected an index kind like 'flat' or 'hnsw32', got {word!r}")
        name, num = m.group("name"), m.group("num")
        nxt = self.peek()
        if num is None and nxt is not None and nxt.isdigit():  # "hnsw 32"
            num = self.take()
        if encoding_of is not None:
            if name not in allowed:
                self.fail(
                    f"{encoding_of} takes an encoding from {', '.join(allowed)}, not {name!r}"
                )
            cls = None
        else:
            cls = self.kinds.get(name)
            if cls is None:
                raise UsageError(
                    f"unknown index kind {name!r} in {self.text!r}; known kinds: "
                    + ", ".join(sorted(self.kinds))
                )
        children: tuple[IndexSpec, ...] = ()
        options: tuple[tuple[str, OptionValue], ...] = ()
        if self.peek() == "(":
            self.take("(")
            if cls is not None and cls.takes_children:
                children, options = self.children_and_options()
            elif self.peek() != ")":
                options = self.options()
            self.take(")")
        if cls is not None and cls.takes_children and not children:
            self.fail(f"{name} needs at least one index inside its parentheses")
        return IndexSpec(name, None if num is None else int(num), options, children)

    def children_and_options(
        self,
    ) -> tuple[tuple[IndexSpec, ...], tuple[tuple[str, OptionValue], ...]]:
        children = [self.unit()]
        while self.peek() == ",":
            self.take(",")
            children.append(self.unit())
        options: tuple[tuple[str, OptionValue], ...] = ()
        if self.peek() == ";":
            self.take(";")
            options = self.options()
        return tuple(children), options

    def options(self) -> tuple[tuple[str, OptionValue], ...]:
        out: dict[str, OptionValue] = {}
        while True:
            key = self.take().lower()
            if not _KEY.fullmatch(key):
                self.fail(f"bad option name {key!r}")
            if key in out:
                self.fail(f"option {key!r} given twice")
            value: OptionValue = True
            if self.peek() == "=":
                self.take("=")
                value = _parse_value(self.take())
            out[key] = value
            if self.peek() != ",":
                return tuple(out.items())
            self.take(",")


def _parse_value(tok: str) -> OptionValue:
    if _INT.fullmatch(tok):
        return int(tok)
    if _FLOAT.fullmatch(tok):
        return float(tok)
    return tok


def parse_spec(
    text: str | IndexSpec, kinds: Mapping[str, type[IndexKind]] | None = None
) -> IndexSpec:
    """Parse a spec string (an :class:`IndexSpec` passes through); raises :class:`UsageError`.

    ``kinds`` overrides the registry of known kinds (default: all registered kinds).
    """
    if isinstance(text, IndexSpec):
        return text
    return _Parser(str(text), known_kinds() if kinds is None else kinds).parse()


# ----------------------------------------------------------------------------- kinds from specs
def create_kind(spec: IndexSpec, ctx: KindContext) -> IndexKind:
    """An empty index structure for ``spec``."""
    cls = known_kinds().get(spec.kind)
    if cls is None:
        raise UsageError(
            f"unknown index kind {spec.kind!r}; known kinds: {', '.join(sorted(KINDS))}"
        )
    return cls.from_spec(spec, ctx)


def load_kind(spec: IndexSpec, directory: Path, ctx: KindContext, mmap: bool = True) -> IndexKind:
    """Open a structure that ``create_kind(spec, ctx).save(directory)`` wrote."""
    cls = known_kinds().get(spec.kind)
    if cls is None:
        raise UsageError(
            f"unknown index kind {spec.kind!r}; known kinds: {', '.join(sorted(KINDS))}"
        )
    return cls.load(Path(directory), {"spec": spec, "context": ctx}, mmap=mmap)


def spec_needs(spec: IndexSpec) -> tuple[bool, bool]:
    """Whether an index of ``spec`` needs (dense, sparse) vectors, over the whole spec tree."""
    cls = known_kinds()[spec.kind]
    dense, sparse = cls.needs_dense, cls.needs_sparse
    for child in spec.children:
        d, s = spec_needs(child)
        dense, sparse = dense or d, sparse or s
    return dense, sparse


# ----------------------------------------------------------------------------- default
#: below this many items the default dense index is exact (flat)
FLAT_LIMIT = 50_000
#: from this many items the default is compressed (IVF + product quantisation)
IVF_PQ_LIMIT = 5_000_000


def default_spec(n_items: int, has_lexical: bool = False, dim: int | None = None) -> IndexSpec:
    """The default index for a collection of ``n_items`` (documented in README).

    * fewer than 50,000 items: ``flat`` (exact; brute force is fast at this size);
    * 50,000 to 5 million: ``hnsw32`` (graph, sub-millisecond queries, vectors kept exactly);
    * 5 million and more: ``ivfN,pqM`` with ``N`` = the power of two nearest ``4 * sqrt(n)``
      and ``M`` = ``dim / 4`` sub-quantisers (a quarter byte per dimension) -- RAM matters
      more than the last point of recall at that size;
    * with a lexical model (``has_lexical``) the dense part is wrapped as
      ``hybrid(sparse,DENSE)`` at every size (``hybrid(sparse,flat)`` below 50,000 items,
      ``hybrid(sparse,hnsw32)`` up to 5 million, ``hybrid(sparse,ivfN,pqM)`` beyond): the exact
      inverted index (:mod:`lexlens.index.sparse`) finds the candidates sharing words with
      the query, 50 of them are re-scored by their dense embeddings (``fusion=rerank``), every
      hit can list its shared words, and queries without words (raw embeddings, or words the
      lexicon does not know) are answered by the dense part, which keeps its usual speed.
      The inverted index is exact at every size: at 1 million items its single-query
      latency is already a small fraction of exact dense search (README, ``lexlens bench
      search``); pass ``sparse(budget=...)`` in a spec to trade recall for speed.
    """
    n = max(0, int(n_items))
    if n < FLAT_LIMIT:
        dense = IndexSpec("flat")
    elif n < IVF_PQ_LIMIT:
        dense = IndexSpec("hnsw", 32)
    else:
        nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
        m = _pq_subquantizers(dim) if dim else None
        dense = IndexSpec("ivf", nlist, encoding=IndexSpec("pq", m))
    kinds = known_kinds()
    if has_lexical and "hybrid" in kinds and "sparse" in kinds:
        return IndexSpec("hybrid", children=(IndexSpec("sparse"), dense))
    return dense


def _pq_subquantizers(dim: int) -> int:
    """The largest divisor of ``dim`` that is at most ``dim / 4`` (at least 1)."""
    target = max(1, dim // 4)
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1
