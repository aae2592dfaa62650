"""lexlens.Index: build, reopen, every query type, add/remove, filters, dups, mismatch, damage.

References are naive: the fake encoder applied to the files directly and a brute-force
sorted scan in Python.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEncoder, write_collection

from lexlens.errors import DataError, IndexMismatchError, NotFoundError, UsageError
from lexlens.index.base import SearchParams
from lexlens.index.index import Index, model_fingerprint
from lexlens.index.ingest import SourceItem
from lexlens.models.base import SparseBatch, l2_normalize
from lexlens.search import Query, fuse


def _items(folder: Path, records: list[dict]) -> list[SourceItem]:
    return [
        SourceItem(
            str(folder / r["image"]), None, r["captions"], {"color": r["color"], "n": r["n"]}
        )
        for r in records
    ]


def _brute(q: np.ndarray, ids: list[int], x: np.ndarray, k: int, keep=lambda i: True):
    """Reference top-k: every (score, id), Python-sorted by (-score, id)."""
    out = []
    for row in np.atleast_2d(q):
        scored = sorted(
            (-float(np.dot(row, x[j])), ids[j]) for j in range(len(ids)) if keep(ids[j])
        )
        out.append([(i, -s) for s, i in scored[:k]])
    return out


def _assert_same(res_ids, res_scores, expected, tol=1e-5):
    """Equal ids and scores; ids may differ only inside a group of (near-)tied scores."""
    for r, exp in enumerate(expected):
        got = [(int(i), float(s)) for i, s in zip(res_ids[r], res_scores[r], strict=True) if i >= 0]
        assert len(got) == len(exp)
        np.testing.assert_allclose([s for _, s in got], [s for _, s in exp], atol=tol)
        for (gi, gs), (ei, es) in zip(got, exp, strict=True):
            if gi != ei:  # only allowed when the scores tie within tolerance
                assert abs(gs - es) < tol


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("col")
    records = write_collection(root / "src", 60)
    enc = FakeEncoder()
    items = _items(root / "src", records)
    idx = Index.build(items, enc, root / "idx", spec="flat", progress=False, workers=0)
    vecs = enc.encode_images([s.path for s in items])
    return root, records, items, enc, idx, vecs


def test_build_reopen_and_text_image_item_embedding_queries(collection):
    root, records, items, enc, idx, vecs = collection
    ids = list(range(len(items)))  # ids are assigned in source order from 0
    again = Index.open(root / "idx", model=enc)
    assert len(again) == 60 and again.info()["spec"] == "flat"
    tq = enc.encode_texts(["a red thing", "blue"])
    res = again.search([Query(text="a red thing"), Query(text="blue")], k=7)
    _assert_same(res.ids, res.scores, _brute(tq, ids, vecs, 7))
    assert {h.fields["color"] for h in res.hits[0]} == {"red"}
    assert res.hits[1][0].path == items[res.ids[1][0]].path
    # image query (path and PIL image give the same answer)
    from PIL import Image

    img_path = items[7].path
    res = again.search(Query(image=img_path), k=5)
    _assert_same(res.ids, res.scores, _brute(enc.encode_images([img_path]), ids, vecs, 5))
    assert res.ids[0, 0] == 7
    with Image.open(img_path) as im:
        np.testing.assert_array_equal(again.search(Query(image=im.copy()), k=5).ids, res.ids)
    # item query = the stored vector of that item
    res = again.search(Query(item=11), k=4)
    _assert_same(res.ids, res.scores, _brute(vecs[11], ids, vecs, 4))
    # raw embedding (normalised on the way in)
    e = np.arange(8, dtype=np.float32) - 3
    res = again.search(Query(embedding=e * 5), k=6)
    _assert_same(res.ids, res.scores, _brute(l2_normalize(e[None]), ids, vecs, 6))


def test_image_plus_text_is_the_documented_fusion(collection):
    root, records, items, enc, idx, vecs = collection
    img = items[0].path  # a red picture
    for w in (0.0, 0.3, 1.0):
        q = fuse(enc.encode_images([img]), enc.encode_texts(["blue"]), w)
        expected = l2_normalize((1 - w) * enc.encode_images([img]) + w * enc.encode_texts(["blue"]))
        np.testing.assert_allclose(q, expected, atol=1e-6)
        res = idx.search(Query(image=img, text="blue", weight=w), k=5)
        _assert_same(res.ids, res.scores, _brute(expected, list(range(60)), vecs, 5))
    # the text steers: with most weight on "blue", blue pictures win
    res = idx.search(Query(image=img, text="blue", weight=0.9), k=3)
    assert {h.fields["color"] for h in res.hits[0]} == {"blue"}


@pytest.mark.parametrize(
    "where, keep",
    [
        ("color=red", lambda r: r["color"] == "red"),
        ("color!=red AND n>2", lambda r: r["color"] != "red" and r["n"] > 2),
        ("n<1", lambda r: r["n"] < 1),
        ("n>=3, color=blue", lambda r: r["n"] >= 3 and r["color"] == "blue"),
        ("color=nothing", lambda r: False),
        ("missing_field!=1", lambda r: True),
    ],
)
@pytest.mark.parametrize("min_score", [None, 0.9])
@pytest.mark.parametrize("route", ["candidates-first", "exact-prefilter", "over-fetch"])
def test_filters_and_min_score_match_naive_filtering(
    collection, where, keep, min_score, route, monkeypatch
):
    import lexlens.search

    if route == "candidates-first":  # never read the filter's whole id set before the end
        monkeypatch.setattr(lexlens.search, "CANDIDATES_FIRST_MAX", 10**9)
    else:  # read the id set at once
        monkeypatch.setattr(lexlens.search, "CANDIDATES_FIRST_MAX", 0)
    if route == "over-fetch":  # never take the exact path for selective filters
        monkeypatch.setattr(lexlens.search, "PREFILTER_MIN", 0)
        monkeypatch.setattr(lexlens.search, "PREFILTER_SHARE", 10**9)
    root, records, items, enc, idx, vecs = collection
    q = enc.encode_texts(["red"])
    allowed = {i for i, r in enumerate(records) if keep(r)}
    for k in (3, 12, 60):
        res = idx.search(Query(text="red"), k=k, where=where, min_score=min_score)
        exp = _brute(q, list(range(60)), vecs, k, keep=lambda i: i in allowed)
        if min_score is not None:
            exp = [[(i, s) for i, s in row if s >= min_score] for row in exp]
        _assert_same(res.ids, res.scores, exp)
        assert res.ids.shape == (1, k)  # padded with -1
        assert np.isneginf(res.scores[res.ids < 0]).all()


def test_bad_queries_are_usage_errors(collection):
    root, records, items, enc, idx, vecs = collection
    with pytest.raises(UsageError):
        Query()
    with pytest.raises(UsageError):
        Query(text="a", item=3)
    with pytest.raises(UsageError):
        Query(text="a", weight=1.5)
    with pytest.raises(NotFoundError):
        Query(image=root / "nope.png")
    with pytest.raises(NotFoundError):
        idx.search(Query(item=10_000))
    with pytest.raises(UsageError, match="8"):
        idx.search(Query(embedding=np.ones(5)))
    with pytest.raises(UsageError, match="filter"):
        idx.search("red", where="color")
    with pytest.raises(UsageError):
        idx.search("red", k=0)


def test_threads_search_like_one_thread(collection):
    root, records, items, enc, idx, vecs = collection
    queries = [Query(text=c) for c in ("red", "blue", "green", "yellow")] + [
        Query(item=i) for i in range(4)
    ]
    expected = [idx.search(q, k=10, where="n>1") for q in queries]
    errors: list[BaseException] = []

    def run(j: int) -> None:
        try:
            for rep in range(5):
                p = (j + rep) % len(queries)
                got = idx.search(queries[p], k=10, where="n>1")
                np.testing.assert_array_equal(got.ids, expected[p].ids)
                np.testing.assert_array_equal(got.scores, expected[p].scores)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=run, args=(j,)) for j in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]


# ----------------------------------------------------------------------------- add / remove
def test_add_encodes_only_new_and_changed(tmp_path):
    src = tmp_path / "src"
    records = write_collection(src, 10)
    enc = FakeEncoder()
    idx = Index.build(_items(src, records), enc, tmp_path / "idx", progress=False, workers=0)
    assert idx.last_report["added"] == 10
    # unchanged source: nothing happens, no new generation
    gen = idx.info()["generation"]
    rep = idx.add(_items(src, records), workers=0, progress=False)
    assert (rep["added"], rep["updated"], rep["skipped"], rep["generation"]) == (0, 0, 10, gen)
    # touched (same bytes, new mtime): unchanged; changed bytes: re-encoded; new + broken files
    os.utime(src / "img-0001.png", (1, 1))
    from PIL import Image

    Image.new("RGB", (6, 6), (20, 40, 230)).save(src / "img-0002.png")  # was green, now blue
    more = write_collection(src, 3, seed=5, start=10)
    (src / "broken.png").write_bytes(b"not a png")
    broken = {"image": "broken.png", "captions": [], "color": "none", "n": 0}
    rep = idx.add(_items(src, records + more + [broken]), workers=0, progress=False)
    assert (rep["added"], rep["updated"], rep["skipped"], rep["failed"]) == (3, 1, 9, 1)
    assert rep["failed_paths"] == [os.path.abspath(src / "broken.png")]
    assert len(idx) == 13
    # the changed file has a new id and its new vector; the old id is gone
    res = idx.search(Query(image=str(src / "img-0002.png")), k=1)
    assert res.ids[0, 0] not in range(10) and res.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert idx.rows([2]) == {}
    # relabel only: captions change, nothing re-encoded
    records[0]["captions"] = ["a new caption"]
    rep = idx.add(_items(src, records), workers=0, progress=False)
    assert (rep["added"], rep["relabelled"]) == (0, 1)
    assert idx.rows([0])[0].captions == ["a new caption"]


def test_remove_by_path_id_and_missing(tmp_path):
    src = tmp_path / "src"
    records = write_collection(src, 8)
    idx = Index.build(
        _items(src, records), FakeEncoder(), tmp_path / "idx", progress=False, workers=0
    )
    assert idx.remove([3, str(src / "img-0004.png"), 999]) == 2
    assert idx.remove([3]) == 0
    (src / "img-0006.png").unlink()
    assert idx.remove(missing=True) == 1
    assert len(idx) == 5
    left = set(idx.search(Query(text="red"), k=8).ids[0].tolist()) - {-1}
    assert left == {0, 1, 2, 5, 7}
    # reopened from disk: the same
    assert (
        set(Index.open(tmp_path / "idx").search(Query(item=0), k=8).ids[0].tolist()) - {-1} == left
    )


def test_caption_index_answers_image_queries(tmp_path):
    src = tmp_path / "src"
    records = write_collection(src, 12)
    enc = FakeEncoder()
    items = [
        SourceItem(str(src / r["image"]), None, r["captions"], {"color": r["color"]})
        for r in records
    ]
    texts = [SourceItem(it.path, c, [c], it.fields) for it in items for c in it.captions]
    idx = Index.build(texts, enc, tmp_path / "cap", items="texts", progress=False)
    assert idx.items == "texts" and len(idx) == 24
    res = idx.search(Query(image=items[0].path), k=4)  # a red picture
    tv = enc.encode_texts([t.text for t in texts])
    _assert_same(
        res.ids, res.scores, _brute(enc.encode_images([items[0].path]), list(range(24)), tv, 4)
    )
    assert all("red" in h.text for h in res.hits[0])
    # adding the same captions again changes nothing; a new caption is added
    rep = idx.add(
        texts + [SourceItem(items[0].path, "a red square", ["a red square"])], progress=False
    )
    assert (rep["added"], rep["skipped"]) == (1, 24)


def test_model_mismatch_is_a_clear_error(collection):
    root, *_ = collection
    with pytest.raises(IndexMismatchError, match="test:fake"):
        Index.open(root / "idx", model=FakeEncoder(name="test:other"))
    with pytest.raises(IndexMismatchError, match="test:fake"):
        Index.open(root / "idx", model="native:scenes-mini")
    # same name, different weights (a retrained model): caught by the probe embedding
    with pytest.raises(IndexMismatchError, match="retrained"):
        Index.open(root / "idx", model=FakeEncoder(seed=99))


class _RefittedLexicon(FakeEncoder):
    """The same dense embeddings; text lexical weights changed (heads refitted)."""

    def encode_texts_lexical(self, texts, batch_size: int = 256, progress: bool = False):
        sp = super().encode_texts_lexical(texts, batch_size, progress)
        values = np.asarray(sp.values, np.float32).copy()
        values[::2] *= 2.0
        return SparseBatch(sp.indptr, sp.indices, values, sp.vocab_size, sp.vocab)


def test_refitted_lexicon_is_caught_by_the_lexical_probe(tmp_path, collection):
    _, _, items, enc, _, _ = collection
    idx = Index.build(items[:10], enc, tmp_path / "sp", spec="sparse", progress=False, workers=0)
    probe = idx._state.manifest.lexical_probe
    assert probe["text"] and {"text", "image"} == set(probe)
    assert len(Index.open(tmp_path / "sp", model=FakeEncoder())) == 10  # same model: fine
    with pytest.raises(IndexMismatchError, match="lexical weights"):
        Index.open(tmp_path / "sp", model=_RefittedLexicon())
    # a dense index does not care about the lexicon
    assert len(Index.open(collection[0] / "idx", model=_RefittedLexicon())) == 60
    # the fingerprint (bench caches) sees the change too
    assert model_fingerprint(FakeEncoder()) == model_fingerprint(FakeEncoder())
    assert model_fingerprint(FakeEncoder()) != model_fingerprint(_RefittedLexicon())


def test_damage_is_detected(tmp_path, collection):
    root, *_ = collection
    copy = tmp_path / "idx"
    shutil.copytree(root / "idx", copy)
    cur = (copy / "CURRENT").read_text().strip()
    target = copy / "generations" / cur / "ids.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="ids.npy"):
        Index.open(copy)
    with pytest.raises(NotFoundError):
        Index.open(tmp_path / "nothing")


def test_build_refuses_to_overwrite(tmp_path, collection):
    root, records, items, enc, *_ = collection
    with pytest.raises(UsageError, match="already holds an index"):
        Index.build(items, enc, root / "idx", spec="hnsw16", progress=False)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an index"):
        Index.build(items, enc, tmp_path / "x", progress=False)
    with pytest.raises(UsageError, match="unknown index kind"):
        Index.build(items, enc, tmp_path / "y", spec="annoy", progress=False)
    assert not (tmp_path / "y" / "CURRENT").exists()


# ----------------------------------------------------------------------------- dups
def test_dups_separate_exact_from_near(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(base).save(src / "a.png")
    shutil.copy(src / "a.png", src / "a-copy.png")  # same bytes
    Image.fromarray(base).save(src / "a.bmp")  # same pixels, other bytes
    near = base.copy()
    near[0, 0] ^= 1  # one pixel differs by one level
    Image.fromarray(near).save(src / "a-near.png")
    other = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(other).save(src / "other.png")
    Image.fromarray(255 - other).save(src / "far.png")
    paths = [
        src / n for n in ("a.png", "a-copy.png", "a.bmp", "a-near.png", "other.png", "far.png")
    ]
    idx = Index.build(paths, FakeEncoder(), tmp_path / "idx", progress=False, workers=0)
    groups = idx.dups(0.999, progress=False)
    exact = [g for g in groups if g.kind == "exact"]
    near_g = [g for g in groups if g.kind == "near"]
    assert [g.ids for g in exact] == [[0, 1, 2]]
    assert [g.ids for g in near_g] == [
        [0, 3]
    ]  # the representative of the exact group + the near one
    # reference: cosine of the stored vectors
    v = idx.vectors([0, 3, 4, 5]).dense
    assert float(v[0] @ v[1]) >= 0.999 > float(v[2] @ v[3])
    assert near_g[0].min_similarity == pytest.approx(float(v[0] @ v[1]), abs=1e-5)
    # a lower threshold never splits groups, only joins
    loose = [g for g in idx.dups(-1.0, progress=False) if g.kind == "near"]
    assert loose[0].ids == [0, 3, 4, 5]


def test_workers_decode_in_processes_like_inline(tmp_path):
    src = tmp_path / "src"
    records = write_collection(src, 70)
    a = Index.build(_items(src, records), FakeEncoder(), tmp_path / "a", progress=False, workers=0)
    b = Index.build(_items(src, records), FakeEncoder(), tmp_path / "b", progress=False, workers=1)
    np.testing.assert_array_equal(a.vectors(range(70)).dense, b.vectors(range(70)).dense)
    assert [r.pixel_hash for r in a.rows(range(70)).values()] == [
        r.pixel_hash for r in b.rows(range(70)).values()
    ]


@pytest.mark.parametrize("spec", ["hnsw8", "ivf4(nprobe=4),flat", "sq16"])
def test_other_kinds_through_the_index(tmp_path, spec):
    src = tmp_path / "src"
    records = write_collection(src, 40)
    enc = FakeEncoder()
    idx = Index.build(
        _items(src, records), enc, tmp_path / "idx", spec=spec, progress=False, workers=0
    )
    idx.remove([5, 6])
    idx.add(_items(src, write_collection(src, 4, seed=3, start=40)), workers=0, progress=False)
    again = Index.open(tmp_path / "idx")
    assert len(again) == 42 and again.info()["spec"] == spec
    ids = [i for i in range(44) if i not in (5, 6)]
    x = again.vectors(ids).dense
    res = again.search(Query(embedding=x[0]), k=10, params=SearchParams(ef_search=64, nprobe=4))
    truth = _brute(x[0], ids, x, 10)
    assert len(set(res.ids[0].tolist()) & {i for i, _ in truth[0]}) >= 9


@pytest.mark.parametrize("route", ["exact-prefilter", "over-fetch"])
def test_filters_on_an_approximate_kind_still_fill_k(tmp_path, route, monkeypatch):
    import lexlens.search

    if route == "over-fetch":
        monkeypatch.setattr(lexlens.search, "PREFILTER_MIN", 0)
        monkeypatch.setattr(lexlens.search, "PREFILTER_SHARE", 10**9)
    src = tmp_path / "src"
    records = write_collection(src, 90)
    idx = Index.build(
        _items(src, records),
        FakeEncoder(),
        tmp_path / "idx",
        spec="hnsw8",
        progress=False,
        workers=0,
    )
    reds = {i for i, r in enumerate(records) if r["color"] == "red" and r["n"] == 0}
    res = idx.search(Query(text="blue"), k=10, where="color=red AND n=0")
    got = [int(i) for i in res.ids[0] if i >= 0]
    assert len(got) == min(10, len(reds)) and set(got) <= reds


@pytest.mark.parametrize("spec", ["hybrid(sparse,flat;candidates=4)", "hnsw8", "flat"])
def test_a_filtered_batch_answers_each_query_as_alone(tmp_path, spec, monkeypatch):
    """How many candidates a filter needs differs by query; a query's answer must not depend
    on the others in its batch (a hybrid or HNSW asked for more candidates answers differently)."""
    import lexlens.search

    monkeypatch.setattr(lexlens.search, "PREFILTER_MIN", 0)  # exercise the over-fetch loop
    monkeypatch.setattr(lexlens.search, "PREFILTER_SHARE", 10**9)
    src = tmp_path / "src"
    records = write_collection(src, 90)
    idx = Index.build(
        _items(src, records), FakeEncoder(), tmp_path / "idx", spec=spec, progress=False, workers=0
    )
    queries = [Query(text=t) for t in ("red", "blue", "green circle", "a", "yellow red")]
    for where in ("color=red", "color=red AND n=0", "n>=1", "color!=blue"):
        batch = idx.search(queries, k=3, where=where)
        for r, q in enumerate(queries):
            alone = idx.search(q, k=3, where=where)
            assert batch.ids[r].tolist() == alone.ids[0].tolist(), (where, r)
            np.testing.assert_array_equal(batch.scores[r], alone.scores[0])
