"""Dense kinds against brute-force kNN on synthetic vectors with exact ground truth."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lexlens.errors import UsageError
from lexlens.index.base import KindContext, SearchParams, Vectors
from lexlens.index.spec import create_kind, load_kind, parse_spec

DIM = 16


def _brute(q: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int):
    """Naive reference: score everything, sort by (-score, id) with Python's sort."""
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_i = np.full((len(q), k), -1, np.int64)
    for r in range(len(q)):
        scored = sorted((-float(np.dot(q[r], x[j])), int(ids[j])) for j in range(len(ids)))
        for c, (s, i) in enumerate(scored[:k]):
            out_s[r, c], out_i[r, c] = -s, i
    return out_s, out_i


def _unit(rng, n, d=DIM):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _make(spec: str, ids, x):
    kind = create_kind(parse_spec(spec), KindContext(dim=x.shape[1]))
    kind.add(ids, Vectors(dense=x))
    return kind


def test_flat_is_exact_with_ties():
    # small integer vectors: every inner product is exact in float32, and many tie
    rng = np.random.default_rng(1)
    x = rng.integers(-1, 2, size=(400, 6)).astype(np.float32)
    ids = rng.permutation(10_000)[:400].astype(np.int64)
    q = rng.integers(-1, 2, size=(25, 6)).astype(np.float32)
    kind = _make("flat", ids, x)
    for k in (1, 7, 50, 400, 450):
        s, i = kind.search(Vectors(dense=q), k)
        rs, ri = _brute(q, x, ids, k)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_array_equal(s, rs)


def test_flat_blocks_merge_exactly(monkeypatch):
    import lexlens.index.dense as dense

    monkeypatch.setattr(dense, "_BLOCK", 37)
    rng = np.random.default_rng(2)
    x = rng.integers(-2, 3, size=(300, 5)).astype(np.float32)
    ids = np.arange(300, dtype=np.int64)[::-1].copy()
    q = rng.integers(-2, 3, size=(10, 5)).astype(np.float32)
    s, i = _make("flat", ids, x).search(Vectors(dense=q), 20)
    np.testing.assert_array_equal(i, _brute(q, x, ids, 20)[1])


APPROX = {
    "hnsw16": 0.95,
    "hnsw16(ef=8)": 0.6,
    "ivf8(nprobe=8),flat": 0.999,
    "ivf8,flat": 0.999,
    "ivf8,sq8": 0.9,
    "sq8": 0.9,
    "sq16": 0.99,
    "pq4(nbits=6)": 0.35,
    "ivf8,pq8(nbits=6)": 0.45,
}


def _recall(found, truth):
    return np.mean(
        [
            len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum())
            for a, b in zip(found, truth, strict=True)
        ]
    )


@pytest.mark.parametrize("spec", sorted(APPROX))
def test_approximate_kinds_recall(spec):
    rng = np.random.default_rng(3)
    x = _unit(rng, 3000)
    ids = (np.arange(3000) * 3 + 7).astype(np.int64)
    q = _unit(rng, 50)
    kind = _make(spec, ids, x)
    assert kind.ntotal == 3000
    s, i = kind.search(Vectors(dense=q), 10, SearchParams(nprobe=8) if "nprobe" in spec else None)
    truth = _brute(q, x, ids, 10)[1]
    assert _recall(i, truth) >= APPROX[spec]
    # the contract: sorted by (-score, id), ids exist, -1 only as padding
    assert set(i.ravel()) <= set(ids)
    assert np.all(np.diff(s, axis=1) <= 0)


def test_ivf_nprobe_all_lists_is_exact_and_per_call():
    rng = np.random.default_rng(4)
    x, q = _unit(rng, 2000), _unit(rng, 30)
    ids = np.arange(2000, dtype=np.int64)
    kind = _make("ivf16(nprobe=1),flat", ids, x)
    truth = _brute(q, x, ids, 10)[1]
    low = _recall(kind.search(Vectors(dense=q), 10)[1], truth)
    full = kind.search(Vectors(dense=q), 10, SearchParams(nprobe=16))[1]
    np.testing.assert_array_equal(full, truth)
    # the per-call parameter did not change the shared default
    assert _recall(kind.search(Vectors(dense=q), 10)[1], truth) == low < 1.0


@pytest.mark.parametrize("spec", ["flat", "hnsw16", "ivf8,flat", "sq16", "pq4(nbits=4)"])
def test_remove_then_search_never_returns_removed(spec, tmp_path):
    rng = np.random.default_rng(5)
    x, q = _unit(rng, 1500), _unit(rng, 20)
    ids = np.arange(1500, dtype=np.int64) * 2
    kind = _make(spec, ids, x)
    gone = ids[rng.permutation(1500)[:600]]
    assert kind.remove(np.concatenate([gone, [10**9]])) == 600
    assert kind.remove(gone[:10]) == 0
    assert kind.ntotal == 900
    live = ~np.isin(ids, gone)
    s, i = kind.search(Vectors(dense=q), 900)
    assert not np.isin(i, gone).any()
    if spec in ("flat", "ivf8,flat", "sq16"):  # exhaustive kinds return every live item
        assert (i >= 0).sum(axis=1).min() == 900
    # k larger than what is left: padded with -1 / -inf
    s, i = kind.search(Vectors(dense=q), 1000)
    assert (i[:, 900:] == -1).all() and np.isneginf(s[:, 900:]).all()
    # save / load keeps everything, including tombstones
    kind.save(tmp_path)
    back = load_kind(parse_spec(spec), tmp_path, KindContext(dim=DIM))
    assert back.ntotal == 900
    np.testing.assert_array_equal(
        back.search(Vectors(dense=q), 10)[1], kind.search(Vectors(dense=q), 10)[1]
    )
    truth = _brute(q, x[live], ids[live], 10)[1]
    if spec in ("flat", "ivf8,flat", "sq16"):
        assert _recall(back.search(Vectors(dense=q), 10, SearchParams(nprobe=8))[1], truth) >= 0.99


def test_untrained_kinds_search_their_buffer_exactly():
    rng = np.random.default_rng(6)
    x, q = _unit(rng, 100), _unit(rng, 5)
    ids = np.arange(100, dtype=np.int64)
    kind = _make("ivf64,pq4", ids, x)  # needs 8 * 256 vectors before training
    assert not kind.trained
    np.testing.assert_array_equal(kind.search(Vectors(dense=q), 10)[1], _brute(q, x, ids, 10)[1])
    more = _unit(rng, 2100)
    kind.add(np.arange(100, 2200, dtype=np.int64), Vectors(dense=more))
    assert kind.trained and kind.ntotal == 2200


def test_hnsw_compacts_after_many_deletes():
    rng = np.random.default_rng(7)
    x, q = _unit(rng, 800), _unit(rng, 10)
    ids = np.arange(800, dtype=np.int64)
    kind = _make("hnsw8", ids, x)
    kind.remove(ids[:100])
    assert len(kind._dead) == 100
    kind.remove(ids[100:300])  # more than a quarter dead -> rebuilt without them
    assert len(kind._dead) == 0 and kind.index.ntotal == 500 and kind.ntotal == 500
    truth = _brute(q, x[300:], ids[300:], 10)[1]
    assert _recall(kind.search(Vectors(dense=q), 10, SearchParams(ef_search=200))[1], truth) >= 0.95


@pytest.mark.parametrize("spec", ["flat", "hnsw16", "ivf8,flat"])
def test_threads_give_the_same_results(spec):
    rng = np.random.default_rng(8)
    x, q = _unit(rng, 2000), _unit(rng, 64)
    kind = _make(spec, np.arange(2000, dtype=np.int64), x)
    kind.remove(np.arange(0, 2000, 7))
    settings = [
        SearchParams(nprobe=p, ef_search=e) for p, e in ((1, 16), (8, 128), (2, 32), (4, 64))
    ]
    expected = [kind.search(Vectors(dense=q), 10, p) for p in settings]
    errors: list[BaseException] = []

    def worker(j: int) -> None:
        try:
            for rep in range(6):
                p = (j + rep) % len(settings)
                s, i = kind.search(Vectors(dense=q), 10, settings[p])
                np.testing.assert_array_equal(i, expected[p][1])
                np.testing.assert_array_equal(s, expected[p][0])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize(
    "spec, words",
    [
        ("pq5", "divide"),
        ("sq7", "4, 6, 8 or 16"),
        ("hnsw32(m=3)", "unknown option 'm'"),
        ("ivf8(nprobe=0),flat", "positive"),
        ("flat(x=1)", "flat takes no"),
    ],
)
def test_bad_kind_parameters(spec, words):
    with pytest.raises(UsageError, match=words):
        create_kind(parse_spec(spec), KindContext(dim=DIM))


def test_wrong_query_dimension_is_a_usage_error():
    kind = _make("flat", np.arange(3, dtype=np.int64), np.eye(3, DIM, dtype=np.float32))
    with pytest.raises(UsageError, match=r"\[n, 16\]"):
        kind.search(Vectors(dense=np.zeros((1, 8), np.float32)), 3)
