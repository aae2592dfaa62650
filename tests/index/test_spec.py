"""Spec strings: one parser, canonical formatting, round trip, clear errors."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lexlens.errors import UsageError
from lexlens.index.base import IndexKind
from lexlens.index.spec import IndexSpec, default_spec, known_kinds, parse_spec


class _Composite(IndexKind):
    """A kind that takes children (only its grammar flags matter to the parser)."""

    kind: ClassVar[str] = "combo"
    takes_children: ClassVar[bool] = True

    add = remove = search = save = ntotal = None  # type: ignore[assignment]

    @classmethod
    def load(cls, directory: Any, options: Any, mmap: bool = True) -> Any:  # pragma: no cover
        raise AssertionError


def _kinds() -> dict[str, type[IndexKind]]:
    kinds = known_kinds()
    kinds.setdefault("combo", _Composite)
    return kinds


EXAMPLES = [
    "flat",
    "hnsw32",
    "hnsw32(ef=64)",
    "ivf4096,flat",
    "ivf4096,pq32",
    "ivf1024,sq8",
    "sq8",
    "pq32",
    "pq16(nbits=4)",
    "combo(flat,hnsw32;fusion=rrf)",
    "combo(ivf64,pq8,flat)",
]


@pytest.mark.parametrize("text", EXAMPLES)
def test_examples_are_canonical(text):
    spec = parse_spec(text, kinds=_kinds())
    assert str(spec) == text
    assert parse_spec(str(spec), kinds=_kinds()) == spec


def test_structure_of_parsed_specs():
    s = parse_spec("hnsw32(ef=64)")
    assert (s.kind, s.number, s.opts()) == ("hnsw", 32, {"ef": 64})
    s = parse_spec("ivf4096,pq32(nbits=4)")
    assert (s.kind, s.number) == ("ivf", 4096)
    assert s.encoding == IndexSpec("pq", 32, (("nbits", 4),))
    s = parse_spec("combo(ivf64,pq8,flat;alpha=0.25,rerank)", kinds=_kinds())
    assert [c.kind for c in s.children] == ["ivf", "flat"]
    assert s.children[0].encoding == IndexSpec("pq", 8)
    assert s.opts() == {"alpha": 0.25, "rerank": True}


def test_whitespace_and_case_normalise():
    assert str(parse_spec("  HNSW 32 ( EF = 64 ) ")) == "hnsw32(ef=64)"
    assert str(parse_spec("IVF1024 , SQ8")) == "ivf1024,sq8"


@pytest.mark.parametrize(
    "text, words",
    [
        ("foo32", ["unknown index kind 'foo'", "flat", "hnsw"]),
        ("flat,pq32", ["hybrid"]),
        ("ivf64", ["needs an encoding"]),
        ("ivf64,hnsw32", ["flat, pq, sq"]),
        ("hnsw32(ef=1,ef=2)", ["twice"]),
        ("hnsw32(", ["unexpected end"]),
        ("", ["empty"]),
        ("flat)", ["unexpected"]),
        ("flat$", ["unexpected character"]),
        ("combo()", ["expected an index kind"]),
        ("combo", ["at least one"]),
    ],
)
def test_bad_specs_say_why(text, words):
    with pytest.raises(UsageError) as e:
        parse_spec(text, kinds=_kinds())
    for w in words:
        assert w in str(e.value)


# ----------------------------------------------------------------------------- round trip
_keys = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
_values = st.one_of(
    st.just(True),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True),
)
_options = st.dictionaries(_keys, _values, max_size=3).map(lambda d: tuple(d.items()))
_numbers = st.one_of(st.none(), st.integers(0, 10**6))


def _plain(kind: str) -> st.SearchStrategy[IndexSpec]:
    return st.builds(IndexSpec, st.just(kind), _numbers, _options)


_leaf = st.one_of(
    *[_plain(k) for k in ("flat", "hnsw", "sq", "pq")],
    st.builds(
        IndexSpec,
        st.just("ivf"),
        _numbers,
        _options,
        st.just(()),
        st.one_of(_plain("flat"), _plain("pq"), _plain("sq")),
    ),
)
_specs = st.recursive(
    _leaf,
    lambda inner: st.builds(
        IndexSpec,
        st.just("combo"),
        _numbers,
        _options,
        st.lists(inner, min_size=1, max_size=3).map(tuple),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(_specs)
def test_round_trip(spec):
    text = str(spec)
    back = parse_spec(text, kinds=_kinds())
    assert back == spec
    assert str(back) == text


# ----------------------------------------------------------------------------- default
def test_default_spec_by_size():
    assert str(default_spec(0)) == "flat"
    assert str(default_spec(49_999)) == "flat"
    assert str(default_spec(50_000)) == "hnsw32"
    assert str(default_spec(4_999_999)) == "hnsw32"
    big = default_spec(20_000_000, dim=256)
    assert big.kind == "ivf" and big.encoding == IndexSpec("pq", 64)
    assert big.number == 2 ** round(__import__("math").log2(4 * 20_000_000**0.5))
    # every default parses back to itself
    for n in (10, 60_000, 10**7):
        assert parse_spec(str(default_spec(n, dim=128))) == default_spec(n, dim=128)
