"""The scenes generator: determinism, vocabulary coverage, captions true, negatives false,
pictures that show what the records say."""

import io
import json
import math
import random
import re

import numpy as np
import pytest
from PIL import Image

from lexlens.data import scenes as S
from lexlens.data.scenes import caption_fits, generate_scenes, make_item
from lexlens.errors import UsageError


@pytest.fixture(scope="module")
def items():
    return [make_item(11, i) for i in range(600)]


def test_same_seed_same_bytes_regardless_of_workers(tmp_path):
    a = generate_scenes(tmp_path / "a", 70, seed=5, workers=1, progress=False)
    b = generate_scenes(tmp_path / "b", 70, seed=5, workers=2, progress=False)
    assert a["n"] == b["n"] == 70 and a["kinds"] == b["kinds"]
    for name in ("captions.jsonl", "fg.jsonl", "dataset.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for i in range(70):
        f = f"images/{i:06d}.png"
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    c = generate_scenes(tmp_path / "c", 70, seed=6, workers=1, progress=False)
    d = generate_scenes(tmp_path / "d", 70, seed=5, split="val", workers=1, progress=False)
    base = (tmp_path / "a" / "captions.jsonl").read_bytes()
    assert c["n"] == d["n"] == 70
    assert (tmp_path / "c" / "captions.jsonl").read_bytes() != base
    assert (tmp_path / "d" / "captions.jsonl").read_bytes() != base


def test_folder_format(tmp_path):
    stats = generate_scenes(tmp_path, 12, seed=1, size=48, workers=1, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert [r["image"] for r in lines] == [f"images/{i:06d}.png" for i in range(12)]
    for rec in lines:
        with Image.open(tmp_path / rec["image"]) as im:
            assert im.size == (48, 48) and im.mode == "RGB"
        assert len(rec["captions"]) == 5 and all(isinstance(c, str) and c for c in rec["captions"])
        assert len(rec["caption_meta"]) == 5 and rec["scene"]["kind"] in S.KINDS
    fg = [json.loads(x) for x in (tmp_path / "fg.jsonl").read_text().splitlines()]
    assert [f["image"] for f in fg] == [r["image"] for r in lines]
    assert all(f["positive"] == r["captions"][0] for f, r in zip(fg, lines, strict=True))
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta == {
        "name": "scenes",
        "n": 12,
        "seed": 1,
        "size": 48,
        "split": "train",
        "generator_version": S.GENERATOR_VERSION,
    }
    assert sum(stats["kinds"].values()) == 12
    assert stats["fg_negatives"] == sum(len(f["negatives"]) for f in fg)


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        generate_scenes(tmp_path, 0, seed=1, progress=False)
    with pytest.raises(UsageError):
        generate_scenes(tmp_path, 3, seed=1, size=8, progress=False)
    with pytest.raises(UsageError):
        generate_scenes(tmp_path, 3, seed=1, split="dev", progress=False)


def test_existing_folder_is_never_overwritten_unasked(tmp_path):
    out = tmp_path / "s"
    generate_scenes(out, 20, seed=1, size=24, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    lines = (out / "captions.jsonl").read_text()
    with pytest.raises(UsageError, match="--force"):
        generate_scenes(out, 5, seed=2, size=24, workers=1, progress=False)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == before
    assert (out / "captions.jsonl").read_text() == lines

    # replacing it with fewer scenes leaves exactly the new dataset, nothing stale
    generate_scenes(out, 5, seed=2, size=24, workers=1, progress=False, overwrite=True)
    fresh = tmp_path / "fresh"
    generate_scenes(fresh, 5, seed=2, size=24, workers=1, progress=False)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        p.name for p in (fresh / "images").iterdir()
    )
    assert (out / "captions.jsonl").read_bytes() == (fresh / "captions.jsonl").read_bytes()
    assert json.loads((out / "dataset.json").read_text())["n"] == 5


def test_folder_of_other_files_is_refused_even_with_force(tmp_path):
    (tmp_path / "images").mkdir()
    photo = tmp_path / "images" / "000000.png"
    photo.write_bytes(b"my photo")
    (tmp_path / "captions.jsonl").write_text('{"image": "images/000000.png", "captions": []}\n')
    for overwrite in (False, True):
        with pytest.raises(UsageError, match="holds no scenes dataset"):
            generate_scenes(tmp_path, 3, seed=1, workers=1, progress=False, overwrite=overwrite)
    assert photo.read_bytes() == b"my photo"


def test_cli_force_replaces_a_scenes_dataset(tmp_path, capsys):
    from lexlens.cli import main

    out = str(tmp_path / "s")
    assert main(["data", "scenes", out, "--n", "4", "--size", "24", "--workers", "1"]) == 0
    assert main(["data", "scenes", out, "--n", "3", "--size", "24", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a scenes dataset" in err[0]
    args = ["data", "scenes", out, "--n", "3", "--size", "24", "--workers", "1", "--force"]
    assert main(args) == 0
    assert len((tmp_path / "s" / "captions.jsonl").read_text().splitlines()) == 3
    assert len(list((tmp_path / "s" / "images").iterdir())) == 3


def test_vocabulary_covered_in_records_and_captions(items):
    text = " ".join(c.lower() for it in items for c in it.captions)
    objs = [o for it in items for o in it.scene["objects"]]
    assert {o["colour"] for o in objs} == set(S.COLOURS)
    assert {o["shape"] for o in objs} == set(S.SHAPES)
    assert {o["size"] for o in objs} == set(S.SIZES)
    assert {it.scene["place"] for it in items if it.scene["kind"] == "single"} == set(S.PLACES)
    assert {it.scene["relation"] for it in items if it.scene["kind"] == "pair"} == set(S.RELATIONS)
    assert {it.scene["count"] for it in items} == {1, 2, 3}
    assert {it.scene["count"] for it in items if it.scene["kind"] == "multi"} == {2, 3}
    kinds = [it.scene["kind"] for it in items]
    for k in S.KINDS:
        assert 0.25 < kinds.count(k) / len(kinds) < 0.42
    metas = [m for it in items for m in it.caption_meta]
    assert {m["count"] for m in metas if "count" in m} == {1, 2, 3}
    assert {m["place"] for m in metas if "place" in m} == set(S.PLACES)
    assert {m["relation"] for m in metas if "relation" in m} == set(S.RELATIONS)
    words = [
        *S.COLOURS,
        "grey",
        *S.SHAPES,
        "small",
        "large",
        "big",
        "little",
        "tiny",
        "left",
        "right",
        "top",
        "bottom",
        "middle",
        "center",
        "centre",
        "left of",
        "right of",
        "above",
        "below",
        "over",
        "under",
        "beneath",
        "one",
        "two",
        "three",
        "a pair of",
        "2",
        "3",
        "crosses",
        "stars",
    ]
    for word in words:
        assert re.search(rf"\b{word}\b", text), word


def test_captions_vary(items):
    caps = [c for it in items for c in it.captions]
    assert len(set(caps)) > 0.9 * len(caps)
    starts = {" ".join(c.lower().split()[:2]) for c in caps}
    assert len(starts) > 60  # many word orders and fillers
    assert any(c[0].isupper() for c in caps) and any(c[0].islower() for c in caps)
    assert any(c.endswith(".") for c in caps) and any(not c.endswith(".") for c in caps)

    def n_details(m):
        return sum(len(o) for o in m["objects"]) + sum(
            k in m for k in ("place", "relation", "count")
        )

    full = {id(it): n_details(S._full_meaning(it.scene)) for it in items}
    partial = sum(n_details(m) < full[id(it)] for it in items for m in it.caption_meta[1:])
    share = partial / (4 * len(items))
    assert abs(share - S.PARTIAL_SHARE) < 0.08, share


def test_every_caption_fits_its_own_scene_and_the_first_is_full(items):
    for it in items:
        for meta in it.caption_meta:
            assert caption_fits(meta, it.scene), (meta, it.scene)
            assert caption_fits(meta, {"scene": it.scene})  # a whole captions.jsonl record
        full = it.caption_meta[0]
        assert sum(len(d) for d in full["objects"]) == 3 * len(full["objects"])
        assert {"place", "relation", "count"} & set(full)


def test_written_negatives_are_false_and_differ_by_one_attribute(items):
    n_neg = 0
    for it in items:
        assert len(it.negatives) == len(it.negatives_meta) >= 2
        assert it.captions[0] not in it.negatives and len(set(it.negatives)) == len(it.negatives)
        for text, m in zip(it.negatives, it.negatives_meta, strict=True):
            assert not caption_fits(m, it.scene), (m, it.scene)
            assert _n_differences(m, it.caption_meta[0]) == 1
            assert text != it.captions[0]
        n_neg += len(it.negatives)
    assert n_neg > 2.5 * len(items)
    kinds = {_difference_kind(m, it.caption_meta[0]) for it in items for m in it.negatives_meta}
    assert kinds == {"colour", "shape", "relation", "count"}


def _n_differences(a, b):
    d = sum(a.get(k) != b.get(k) for k in ("relation", "count", "place"))
    assert len(a["objects"]) == len(b["objects"])
    for x, y in zip(a["objects"], b["objects"], strict=True):
        d += sum(x.get(k) != y.get(k) for k in ("colour", "shape", "size"))
    return d


def _difference_kind(a, b):
    for k in ("relation", "count"):
        if a.get(k) != b.get(k):
            return k
    for x, y in zip(a["objects"], b["objects"], strict=True):
        for k in ("colour", "shape"):
            if x.get(k) != y.get(k):
                return k
    return None


def test_objects_never_take_the_background_colour(items):
    for it in items:
        bg = it.scene["bg_rgb"]
        for o in it.scene["objects"]:
            assert o["colour"] != it.scene["background"]
            assert math.dist(S.COLOURS[o["colour"]], bg) >= 80


def _naive_relation(a, b):
    """Geometry of two centres -> the relation of a to b, or None when unclear."""
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]
    if abs(dx) > 0.3 and abs(dy) < 0.12:
        return "left of" if dx > 0 else "right of"
    if abs(dy) > 0.3 and abs(dx) < 0.12:
        return "above" if dy > 0 else "below"
    return None


def test_geometry_matches_the_records(items):
    for it in items:
        sc = it.scene
        for o in sc["objects"]:
            assert o["r"] <= o["x"] <= 1 - o["r"] and o["r"] <= o["y"] <= 1 - o["r"]
            assert (o["r"] >= 0.13) == (o["size"] == "large")
        if sc["kind"] == "pair":
            a, b = sc["objects"]
            assert _naive_relation(a, b) == sc["relation"]
            assert (a["colour"], a["shape"]) != (b["colour"], b["shape"])
            assert math.dist((a["x"], a["y"]), (b["x"], b["y"])) > a["r"] + b["r"]
        elif sc["kind"] == "single":
            (o,) = sc["objects"]
            x, y = o["x"] - 0.5, o["y"] - 0.5
            expect = (
                "center"
                if max(abs(x), abs(y)) < 0.1
                else ("left" if x < 0 else "right")
                if abs(x) > abs(y)
                else ("top" if y < 0 else "bottom")
            )
            assert expect == sc["place"]
        else:
            assert len({(o["colour"], o["shape"], o["size"]) for o in sc["objects"]}) == 1
            pts = [(o["x"], o["y"]) for o in sc["objects"]]
            assert all(math.dist(p, q) > 0.25 for p in pts for q in pts if p != q)


def test_pictures_show_the_objects_where_the_records_say(items):
    checked = 0
    for it in items[:200]:
        arr = np.asarray(Image.open(io.BytesIO(it.png)).convert("RGB"), dtype=np.float32)
        side = arr.shape[0]
        for o in it.scene["objects"]:
            if o["r"] * side < 6:
                continue
            cx, cy = round(o["x"] * side - 0.5), round(o["y"] * side - 0.5)
            patch = arr[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
            want = np.asarray(S.COLOURS[o["colour"]], np.float32)
            bg = np.asarray(it.scene["bg_rgb"], np.float32)
            assert np.linalg.norm(patch - want) < np.linalg.norm(patch - bg), (o, patch)
            checked += 1
        corner = arr[:3, :3].reshape(-1, 3).mean(0)
        if all(min(o["x"], o["y"]) - o["r"] > 0.1 for o in it.scene["objects"]):
            assert np.linalg.norm(corner - np.asarray(it.scene["bg_rgb"])) < 60
    assert checked > 100


def test_rendering_varies_for_one_scene():
    scene = S.sample_scene(random.Random(3), kind="single")
    pics = {S.render_scene(scene, 64, random.Random(k)).tobytes() for k in range(8)}
    assert len(pics) == 8


@pytest.mark.parametrize("kind", S.TEXTURES)
@pytest.mark.parametrize("aspect", [1.0, 2.0, 0.6])
def test_texture_and_aspect_keep_the_objects_and_the_random_stream(kind, aspect):
    """A textured or non-square drawing: the objects where the record says (relative to the
    width and height), in their colour; the background patterned; the caller's random stream
    left exactly where a plain drawing leaves it."""
    checked = 0
    for k in range(12):
        scene = S.sample_scene(random.Random(100 + k))
        spec = {**S.draw_texture(random.Random(k)), "kind": kind, "amp": 24.0}
        r_plain, r_tex = random.Random(k), random.Random(k)
        plain = np.asarray(S.render_scene(scene, 64, r_plain), np.float32)
        pic = np.asarray(S.render_scene(scene, 64, r_tex, spec, aspect), np.float32)
        assert r_plain.getstate() == r_tex.getstate()
        h, w = pic.shape[:2]
        assert min(h, w) == 64 and abs(w / h - aspect) < 0.02
        for o in scene["objects"]:
            if o["r"] * 64 < 6:
                continue
            cx, cy = round(o["x"] * w - 0.5), round(o["y"] * h - 0.5)
            patch = pic[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
            want = np.asarray(S.COLOURS[o["colour"]], np.float32)
            bg = np.asarray(scene["bg_rgb"], np.float32)
            assert np.linalg.norm(patch - want) < np.linalg.norm(patch - bg), (o, patch)
            checked += 1
        if aspect == 1.0:  # the same picture but for the background
            assert not np.array_equal(pic, plain)
    assert checked > 5


SCENE = {
    "kind": "pair",
    "relation": "left of",
    "place": None,
    "count": 2,
    "objects": [
        {"colour": "red", "shape": "circle", "size": "large"},
        {"colour": "blue", "shape": "square", "size": "small"},
    ],
}
RED, BLUE = {"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}
THREE = {
    "kind": "multi",
    "relation": None,
    "place": None,
    "count": 3,
    "objects": [{"colour": "red", "shape": "star", "size": "small"}] * 3,
}
ONE = {
    "kind": "single",
    "relation": None,
    "place": "top",
    "count": 1,
    "objects": [{"colour": "red", "shape": "circle", "size": "large"}],
}


@pytest.mark.parametrize(
    ("meaning", "scene", "expected"),
    [
        ({"objects": [RED, BLUE], "relation": "left of"}, SCENE, True),
        ({"objects": [BLUE, RED], "relation": "right of"}, SCENE, True),
        ({"objects": [RED, BLUE], "relation": "right of"}, SCENE, False),
        ({"objects": [BLUE, RED], "relation": "left of"}, SCENE, False),
        ({"objects": [RED, BLUE], "relation": "above"}, SCENE, False),
        (
            {"objects": [{"shape": "circle"}, {"shape": "square"}], "relation": "left of"},
            SCENE,
            True,
        ),
        ({"objects": [{"shape": "square"}]}, SCENE, True),
        ({"objects": [RED, BLUE]}, SCENE, True),
        ({"objects": [RED, RED]}, SCENE, False),
        ({"objects": [{"shape": "square", "size": "large"}]}, SCENE, False),
        ({"objects": [{"shape": "square"}], "count": 2}, SCENE, False),
        ({"objects": [{"shape": "square"}], "count": 1}, SCENE, True),
        ({"objects": [RED], "place": "left"}, SCENE, False),
        ({"objects": [{"colour": "red", "shape": "star"}], "count": 3}, THREE, True),
        ({"objects": [{"colour": "red", "shape": "star"}], "count": 2}, THREE, False),
        ({"objects": [{"shape": "star"}], "count": 1}, THREE, False),
        ({"objects": [{"colour": "red"}]}, THREE, True),
        ({"objects": [{"colour": "red", "shape": "star"}, {"shape": "star"}]}, THREE, True),
        ({"objects": [RED], "place": "top"}, ONE, True),
        ({"objects": [RED], "place": "bottom"}, ONE, False),
        ({"objects": [{"colour": "red"}], "place": "top"}, ONE, True),
        ({"objects": [RED], "count": 1}, ONE, True),
        ({"objects": [RED], "count": 2}, ONE, False),
        ({"objects": [RED, {"shape": "circle"}]}, ONE, False),
    ],
)
def test_caption_fits_rules(meaning, scene, expected):
    assert caption_fits(meaning, scene) is expected
