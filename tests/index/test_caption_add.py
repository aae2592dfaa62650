"""``add`` to a caption index: each listed image's captions become exactly the dataset's.

A tiny generated scenes dataset (``generate_scenes``) and the fake encoder; the dataset's
``captions.jsonl`` is edited between ``build`` and ``add`` as a user would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fakes import FakeEncoder

from lexlens.cli import main
from lexlens.index.index import Index
from lexlens.search import Query

pytest.importorskip("lexlens.data.readers")


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]


def _write_lines(folder: Path, records: list[dict]) -> None:
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _captions(idx: Index) -> dict[str, dict[str, int]]:
    """``{image path: {caption: id}}`` of every caption row in the index."""
    out: dict[str, dict[str, int]] = {}
    for r in idx._state.meta.all_rows():
        out.setdefault(str(r.path), {})[str(r.text)] = r.id
    return out


def _searchable_ids(idx: Index) -> set[int]:
    """The ids the index structure returns when asked for everything."""
    res = idx.search(Query(text="a shape"), k=len(idx) + 10)
    return {int(i) for i in res.ids[0] if i >= 0}


@pytest.fixture
def scenes(tmp_path):
    from lexlens.data.scenes import generate_scenes

    folder = tmp_path / "scenes"
    generate_scenes(folder, n=6, seed=3, size=32, workers=1, progress=False)
    return folder


def test_add_makes_an_images_captions_the_datasets(tmp_path, scenes):
    enc = FakeEncoder()
    idx = Index.build(scenes, enc, tmp_path / "caps", items="texts", progress=False)
    records = _lines(scenes)
    total = sum(len(set(r["captions"])) for r in records)
    assert len(idx) == total and all(len(r["captions"]) > 2 for r in records)
    before = _captions(idx)
    changed = os.path.abspath(scenes / records[2]["image"])
    old = records[2]["captions"]
    # image 2: its first caption kept, the others replaced by one new caption
    records[2]["captions"] = [old[0], "a brand new caption"]
    records[2].pop("caption_meta", None)
    _write_lines(scenes, records)

    rep = idx.add(scenes, progress=False)
    assert (rep["added"], rep["removed"], rep["updated"], rep["relabelled"]) == (
        1,
        len(set(old)) - 1,
        0,
        0,
    )
    assert rep["skipped"] == total - len(set(old)) + 1
    assert len(idx) == rep["count"] == total - len(set(old)) + 2
    after = _captions(idx)
    assert set(after[changed]) == {old[0], "a brand new caption"}
    # the kept caption was not re-encoded: same id; other images are untouched
    assert after[changed][old[0]] == before[changed][old[0]]
    assert {p: c for p, c in after.items() if p != changed} == {
        p: c for p, c in before.items() if p != changed
    }
    # the index structure agrees with the metadata (the stale captions are not searchable)
    assert _searchable_ids(idx) == {i for caps in after.values() for i in caps.values()}
    res = idx.search(Query(text="a brand new caption"), k=10, where=f"path={changed}")
    assert sorted(h.text for h in res.hits[0]) == sorted([old[0], "a brand new caption"])
    # reopened from disk: the same; a second add changes nothing
    again = Index.open(tmp_path / "caps", model=enc)
    assert _captions(again) == after
    gen = again.info()["generation"]
    rep = again.add(scenes, progress=False)
    assert (rep["added"], rep["removed"], rep["generation"]) == (0, 0, gen)


def test_an_image_left_out_keeps_its_captions_like_an_image_index_keeps_it(tmp_path, scenes):
    enc = FakeEncoder()
    caps = Index.build(scenes, enc, tmp_path / "caps", items="texts", progress=False)
    images = Index.build(scenes, enc, tmp_path / "imgs", items="images", progress=False, workers=0)
    records = _lines(scenes)
    gone = os.path.abspath(scenes / records[4]["image"])
    n_caps, n_images = len(caps), len(images)
    _write_lines(scenes, records[:4] + records[5:])  # image 4's line deleted

    for idx, n in ((caps, n_caps), (images, n_images)):
        rep = idx.add(scenes, progress=False, workers=0)
        assert (rep["added"], rep["removed"], rep["updated"], rep["count"]) == (0, 0, 0, n)
    assert set(_captions(caps)[gone]) == set(records[4]["captions"])
    # `remove` drops an image's captions, as it drops the image from an image index
    assert caps.remove([gone]) == len(set(records[4]["captions"]))
    assert images.remove([gone]) == 1
    assert gone not in _captions(caps)


def test_cli_add_reports_removed_captions(tmp_path, scenes, capsys):
    from lexlens.models import registry

    registry._ensure_builtin_backends()
    registry.register_backend("test", lambda target: FakeEncoder("test:" + target))
    try:
        out = str(tmp_path / "caps")
        argv = ["index", "build", str(scenes), "--model", "test:fake", "--out", out]
        assert main([*argv, "--items", "texts", "--json"]) == 0
        count = json.loads(capsys.readouterr().out)["count"]
        records = _lines(scenes)
        n_old = len(set(records[0]["captions"]))
        records[0]["captions"] = ["one new caption", "another new caption"]
        records[0].pop("caption_meta", None)
        _write_lines(scenes, records)
        assert main(["index", "add", out, str(scenes)]) == 0
        text = capsys.readouterr().out
        assert f"added 2, updated 0, unchanged {count - n_old}, failed 0, removed {n_old}" in text
        assert f"{count - n_old + 2} items" in text
    finally:
        registry.BACKENDS.pop("test", None)
