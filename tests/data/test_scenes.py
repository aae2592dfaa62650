"""The scenes generator: determinism, vocabulary coverage, captions true, negatives false."""

import json
import random
import re

import pytest

from lexlens.data import scenes as S
from lexlens.data.scenes import caption_fits, generate_scenes, make_item


@pytest.fixture(scope="module")
def items():
    return [make_item(11, i) for i in range(600)]


def test_same_seed_same_bytes_regardless_of_workers(tmp_path):
    a = generate_scenes(tmp_path / "a", 60, seed=5, workers=1, progress=False)
    b = generate_scenes(tmp_path / "b", 60, seed=5, workers=2, progress=False)
    assert a["n"] == b["n"] == 60
    for name in ("captions.jsonl", "fg.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for i in (0, 17, 59):
        f = f"images/{i:06d}.png"
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    c = generate_scenes(tmp_path / "c", 60, seed=6, workers=1, progress=False)
    assert c["n"] == 60
    assert (tmp_path / "a" / "captions.jsonl").read_bytes() != (tmp_path / "c" / "captions.jsonl").read_bytes()


def test_folder_format(tmp_path):
    generate_scenes(tmp_path, 12, seed=1, workers=1, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    for rec in lines:
        assert (tmp_path / rec["image"]).is_file()
        assert len(rec["captions"]) == 5 and all(isinstance(c, str) and c for c in rec["captions"])
    fg = [json.loads(x) for x in (tmp_path / "fg.jsonl").read_text().splitlines()]
    assert [f["image"] for f in fg] == [r["image"] for r in lines]
    assert all(f["positive"] == r["captions"][0] for f, r in zip(fg, lines, strict=True))


def test_vocabulary_covered_in_records_and_captions(items):
    text = " ".join(c.lower() for it in items for c in it.captions)
    objs = [o for it in items for o in it.scene["objects"]]
    assert {o["colour"] for o in objs} == set(S.COLOURS)
    assert {o["shape"] for o in objs} == set(S.SHAPES)
    assert {o["size"] for o in objs} == set(S.SIZES)
    assert {it.scene["place"] for it in items if it.scene["kind"] == "single"} == set(S.PLACES)
    assert {it.scene["relation"] for it in items if it.scene["kind"] == "pair"} == set(S.RELATIONS)
    assert {len(it.scene["objects"]) for it in items if it.scene["kind"] == "multi"} == {2, 3}
    kinds = [it.scene["kind"] for it in items]
    for k in ("single", "pair", "multi"):
        assert 0.25 < kinds.count(k) / len(kinds) < 0.42
    for word in [*S.COLOURS, *S.SHAPES, "small", "large", "left", "right", "top", "bottom", "middle",
                 "left of", "right of", "above", "below", "two", "three"]:
        assert re.search(rf"\b{word}", text), word


def test_every_caption_fits_its_own_scene(items):
    for it in items:
        for meta in it.caption_meta:
            assert caption_fits(meta, it.scene), (meta, it.scene)


def test_negatives_are_false_and_differ_by_one_attribute(items):
    rng = random.Random(0)
    n_neg = 0
    for it in items:
        negs = S.swap_negatives(it.caption_meta[0], it.scene, rng)
        for m in negs:
            assert not caption_fits(m, it.scene)
            assert _n_differences(m, it.caption_meta[0]) == 1
        n_neg += len(negs)
        assert it.captions[0] not in it.negatives
    assert n_neg > 2 * len(items)


def _n_differences(a, b):
    d = sum(a.get(k) != b.get(k) for k in ("relation", "count", "place"))
    for x, y in zip(a["objects"], b["objects"], strict=True):
        d += sum(x.get(k) != y.get(k) for k in ("colour", "shape", "size"))
    return d


def test_background_never_has_an_object_colour(items):
    for it in items:
        assert all(o["colour"] != it.scene["background"] for o in it.scene["objects"])


def test_caption_fits_rules():
    scene = {"kind": "pair", "relation": "left of", "place": None, "objects": [
        {"colour": "red", "shape": "circle", "size": "large"},
        {"colour": "blue", "shape": "square", "size": "small"}]}
    red, blue = {"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}
    assert caption_fits({"objects": [red, blue], "relation": "left of"}, scene)
    assert caption_fits({"objects": [blue, red], "relation": "right of"}, scene)
    assert not caption_fits({"objects": [red, blue], "relation": "right of"}, scene)
    assert caption_fits({"objects": [{"shape": "square"}]}, scene)
    assert not caption_fits({"objects": [{"shape": "square"}], "count": 2}, scene)
    assert not caption_fits({"objects": [red], "place": "left"}, scene)
