"""Index inputs a user's files can hold: non-finite numbers in fields, no captions at all.

The fake encoder; the reference for ``--where`` is a filter written out over the fields."""

from __future__ import annotations

import json
import math

import pytest
from fakes import FakeEncoder
from PIL import Image

from lexlens.errors import DataError
from lexlens.index.index import Index
from lexlens.index.ingest import SourceItem
from lexlens.search import Query


def _folder(tmp_path, fields):
    (tmp_path / "images").mkdir(parents=True)
    lines = []
    for i, f in enumerate(fields):
        Image.new("RGB", (8, 8), (40 * i, 90, 200 - 30 * i)).save(tmp_path / f"images/{i}.png")
        lines.append({"image": f"images/{i}.png", "captions": [f"shape {i}"], **f})
    # json.dumps writes NaN / Infinity as Python does; readers see them in real exports
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tmp_path


@pytest.mark.parametrize("given", ["captions.jsonl", "items"])
def test_non_finite_fields_become_null_and_filters_work(tmp_path, given) -> None:
    fields = [{"score": 2.0}, {"score": math.nan}, {"score": math.inf, "deep": [-math.inf]}]
    src = _folder(tmp_path / "d", fields)
    if given == "items":  # straight to the store, past the readers
        src = [
            SourceItem(str(src / f"images/{i}.png"), None, [f"shape {i}"], f)
            for i, f in enumerate(fields)
        ]
    idx = Index.build(src, FakeEncoder(), tmp_path / "idx", spec="flat", progress=False)
    res = idx.search(Query(text="shape"), k=3, where="score>1")
    want = {i for i, f in enumerate(fields) if math.isfinite(f["score"]) and f["score"] > 1}
    assert {int(i) for i in res.ids[0] if i >= 0} == want
    stored = {r.id: r.fields for r in idx._state.meta.all_rows()}
    assert stored[1]["score"] is None and stored[2] == {"score": None, "deep": [None]}
    json.dumps(res.to_dict(), allow_nan=False)  # the --json output is strict JSON


def test_caption_index_of_a_folder_without_captions_is_refused(tmp_path) -> None:
    (tmp_path / "p").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "p" / "a.png")
    with pytest.raises(DataError, match="has no captions"):
        Index.build(tmp_path / "p", FakeEncoder(), tmp_path / "idx", items="texts", progress=False)


def test_unknown_fields_of_a_filter_are_named(tmp_path) -> None:
    src = _folder(tmp_path / "d", [{"scene": {"count": 2}}, {"scene": {"count": 1}}, {}])
    out = tmp_path / "idx"
    idx = Index.build(src, FakeEncoder(), out, spec="flat", progress=False)
    assert idx.unknown_fields("n>2 AND scene.count>1 AND id>0 AND scene.nope=x AND n<9") == [
        "n",
        "scene.nope",
    ]
    assert idx.unknown_fields(None) == [] and idx.unknown_fields("scene.count=1") == []


def test_dups_of_a_caption_index_name_the_captions(tmp_path) -> None:
    from lexlens.index.ingest import SourceItem

    img = _folder(tmp_path / "d", [{}, {}])
    captions = [(0, "a red circle"), (0, "a red circle!"), (0, "two stars"), (1, "a red circle")]
    items = [SourceItem(str(img / f"images/{i}.png"), text) for i, text in captions]
    idx = Index.build(items, FakeEncoder(), tmp_path / "caps", items="texts", progress=False)
    exact = [g for g in idx.dups(0.999, progress=False) if g.kind == "exact"]
    assert [g.texts for g in exact] == [["a red circle", "a red circle"]]
    assert sorted(map(str, exact[0].paths)) == sorted(
        [str(img / "images/0.png"), str(img / "images/1.png")]
    )
