"""``lexlens.Index`` with Ray encoding (``--ray``) and the Milvus backend (``--backend``)
gives the local index's ids, vectors and search results: plain, filtered, after add,
relabel and remove, and after reopening."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("pymilvus")

from scale_fakes import FakeEncoder, make_fake_encoder, write_images  # noqa: E402

from lexlens.index.index import Index  # noqa: E402
from lexlens.index.ingest import SourceItem  # noqa: E402
from lexlens.scale.ray_encode import RayEncodeHook, RayOptions  # noqa: E402
from lexlens.search import Query  # noqa: E402

FILTERS = [None, "split=a", "n>=2 AND split!=b", "flag=true", "nothing!=1"]


def _items(paths, offset=0):
    return [
        SourceItem(
            str(p),
            fields={"split": "ab"[(i + offset) % 2], "n": (i + offset) % 4, "flag": i % 3 == 0},
        )
        for i, p in enumerate(paths)
    ]


@pytest.fixture(scope="module")
def indexes(local_ray, tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    items = _items(write_images(d / "imgs", 30))

    def hook(out):
        return RayEncodeHook(
            # a model spec string: each Ray worker loads it through the registry
            "fake:tiny",
            "images",
            out / "pending" / "ray",
            RayOptions(shard_size=7),
            False,
        )

    common = dict(spec="flat", progress=False, workers=0)
    built = {
        "local": Index.build(items, FakeEncoder(), d / "local", **common),
        "ray": Index.build(items, FakeEncoder(), d / "ray", encode_with=hook(d / "ray"), **common),
        "milvus": Index.build(items, FakeEncoder(), d / "mv", backend="milvus", **common),
        "ray+milvus": Index.build(
            items,
            FakeEncoder(),
            d / "both",
            encode_with=hook(d / "both"),
            backend=f"milvus://{d}/shared.db",
            **common,
        ),
    }
    return d, built


def _queries(n=6, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, FakeEncoder.dim)).astype(np.float32)
    return [Query(embedding=x / np.linalg.norm(x)) for x in v] + [Query(text="a red circle")]


def _assert_all_equal(built, k=8):
    ref = built["local"]
    n = len(ref)
    for name, idx in built.items():
        assert len(idx) == n, name
        ids = np.arange(n + 40)
        live = np.array([i for i in ids if i in ref.rows(ids)])
        np.testing.assert_allclose(idx.vectors(live).dense, ref.vectors(live).dense, atol=1e-6)
        for where in FILTERS:
            want = ref.search(_queries(), k=k, where=where)
            got = idx.search(_queries(), k=k, where=where)
            np.testing.assert_array_equal(got.ids, want.ids, err_msg=f"{name} {where}")
            np.testing.assert_allclose(
                got.scores, want.scores, atol=1e-5, err_msg=f"{name} {where}"
            )


def test_ray_and_milvus_builds_equal_the_local_build(indexes):
    d, built = indexes
    _assert_all_equal(built)
    assert built["milvus"].info()["spec"] == "milvus(flat)"
    assert (d / "mv" / "milvus.db").exists()  # plain `milvus`: Milvus Lite inside the index


def test_add_relabel_remove_and_reopen_stay_equal(indexes):
    d, built = indexes
    more = _items(write_images(d / "more", 8, seed=5), offset=1)
    for name, idx in built.items():
        hook = None
        if name.startswith("ray"):
            hook = RayEncodeHook(
                make_fake_encoder, "images", d / name / "pending", RayOptions(shard_size=3), False
            )
        rep = idx.add(more, progress=False, workers=0, encode_with=hook)
        assert rep["added"] == 8, name
        if hook is not None:
            assert hook.stats.shards_run == 3
    _assert_all_equal(built)

    # new user fields for known files: no re-encoding, the filters follow (Milvus rows updated)
    relabel = _items([it.path for it in more], offset=2)
    for idx in built.values():
        assert idx.add(relabel, progress=False, workers=0)["relabelled"] == 8
    _assert_all_equal(built)

    gone = [more[0].path, more[3].path]
    for idx in built.values():
        assert idx.remove(gone) == 2
    _assert_all_equal(built)

    reopened = {name: Index.open(idx.path, FakeEncoder()) for name, idx in built.items()}
    _assert_all_equal(reopened)


def test_cli_build_with_ray_and_milvus_equals_local(local_ray, tmp_path, capsys):
    import json

    from lexlens.cli import main

    pytest.importorskip("lexlens.data.readers")
    imgs = write_images(tmp_path / "imgs", 12, seed=9)
    lines = [
        json.dumps({"image": p.name, "captions": [f"picture {i}"]}) for i, p in enumerate(imgs)
    ]
    (tmp_path / "imgs" / "captions.jsonl").write_text("\n".join(lines) + "\n")
    src = str(tmp_path / "imgs")
    base = ["index", "build", src, "--model", "fake:tiny", "--spec", "flat", "--json"]
    assert main([*base, "--out", str(tmp_path / "local"), "--workers", "0"]) == 0
    capsys.readouterr()
    scaled = [*base, "--out", str(tmp_path / "scaled"), "--ray", "--shard-size", "5"]
    assert main([*scaled, "--backend", f"milvus://{tmp_path}/m.db"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["spec"] == "milvus(flat)" and report["added"] == 12
    ray_stats = report["ray"]
    assert ray_stats["n_shards"] == 3 and ray_stats["n_encoded"] == 12
    assert min(ray_stats[s] for s in ("decode_s", "encode_s", "write_s", "merge_s")) > 0
    assert not (tmp_path / "scaled" / "pending").exists()  # shards cleared once published

    q = ["search", "--k", "5", "--json"]
    outs = []
    for name in ("local", "scaled"):
        assert main([*q, str(tmp_path / name), "a red circle"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    hits = [[(h["id"], round(h["score"], 5)) for h in o["results"][0]["hits"]] for o in outs]
    assert hits[0] == hits[1] and len(hits[0]) == 5


def test_a_copied_or_moved_milvus_lite_index_uses_its_own_file(tmp_path):
    import shutil

    from lexlens.errors import IndexMismatchError, UsageError

    items = _items(write_images(tmp_path / "imgs", 12))
    Index.build(items, FakeEncoder(), tmp_path / "a", spec="flat", progress=False, workers=0,
                backend="milvus")  # fmt: skip
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = Index.open(tmp_path / "b", model=FakeEncoder())
    assert copy.remove([2, 6]) == 2
    q = _queries(n=1)
    got = {n: Index.open(tmp_path / n, model=FakeEncoder()).search(q, k=20) for n in "ab"}
    assert sorted(int(i) for i in got["a"].ids[0] if i >= 0) == list(range(12))  # untouched
    assert sorted(int(i) for i in got["b"].ids[0] if i >= 0) == [
        i for i in range(12) if i not in (2, 6)
    ]
    # an index whose Lite file is gone is one clear error, and creates nothing (a fresh copy:
    # this process's Milvus Lite keeps the files it opened)
    shutil.copytree(tmp_path / "a", tmp_path / "d", ignore=shutil.ignore_patterns("milvus.db"))
    with pytest.raises(IndexMismatchError, match="is gone"):
        Index.open(tmp_path / "d", model=FakeEncoder())
    assert not (tmp_path / "d" / "milvus.db").exists()
    with pytest.raises(UsageError, match="no IVF_PQ"):
        Index.build(items, FakeEncoder(), tmp_path / "pq", spec="ivf4,pq4", progress=False,
                    workers=0, backend="milvus")  # fmt: skip


def test_rows_of_an_unfinished_add_are_never_answered(tmp_path):
    """An add interrupted after writing rows to Milvus but before its generation was committed
    leaves rows past the generation's ids: search, counts and filters ignore them."""
    from lexlens.index.base import Vectors
    from lexlens.scale.milvus import MilvusKind

    items = _items(write_images(tmp_path / "imgs", 10))
    common = dict(spec="flat", progress=False, workers=0)
    local = Index.build(items, FakeEncoder(), tmp_path / "local", **common)
    idx = Index.build(items, FakeEncoder(), tmp_path / "mv", backend="milvus", **common)
    kind = idx._state.kind
    writer = MilvusKind(kind.target, kind.collection, kind.spec, kind.ctx, create=False)
    stray = np.arange(100, 105)
    v = np.tile(local.vectors([0]).dense, (5, 1))  # copies of item 0: they would rank first
    writer.add(stray, Vectors(dense=v))
    again = Index.open(tmp_path / "mv", model=FakeEncoder())
    q = _queries()
    for where in FILTERS:
        want = local.search(q, k=12, where=where)
        got = again.search(q, k=12, where=where)
        np.testing.assert_array_equal(got.ids, want.ids, err_msg=str(where))
    assert again._state.kind.ntotal == len(local) == 10
