"""Training on tiny generated sets: it learns, it resumes at the same step, the CLI works."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from train_helpers import assert_same_weights

from lexlens.cli import main
from lexlens.errors import UsageError
from lexlens.models.native import build_native
from lexlens.models.registry import load_encoder
from lexlens.train.data import batch_fits, pairs_from_scenes
from lexlens.train.loop import TrainConfig, evaluate_pairs, train


@pytest.fixture(scope="module")
def tiny_set():
    return pairs_from_scenes(96, seed=5, image_size=32, workers=1, progress=False, twins=True)


def _fresh(data):
    torch.manual_seed(0)
    return build_native("tiny", texts=[c for caps in data.captions for c in caps])


def test_batch_fits_agrees_with_generator(tiny_set) -> None:
    from lexlens.data.scenes import caption_fits

    metas = [m[1] for m in tiny_set.meanings[:10]]
    f = batch_fits(metas, tiny_set.scenes[:12])
    for t in range(10):
        assert f[t, t]  # a caption fits its own scene
        for i in range(12):
            assert f[t, i] == caption_fits(metas[t], tiny_set.scenes[i])


def test_tiny_model_learns_a_tiny_set(tiny_set, tmp_path) -> None:
    """32 pairs, one caption each: the loss falls and recall rises far above chance (1/32)."""
    data = tiny_set.subset(range(32))
    data.captions = [caps[:1] for caps in data.captions]
    data.meanings = [m[:1] for m in data.meanings]
    data.negatives = [n[:1] for n in data.negatives]
    enc = _fresh(data)
    before = evaluate_pairs(enc, data)
    cfg = TrainConfig(
        epochs=40,
        batch_size=32,
        lr=1e-3,
        warmup_steps=3,
        hard_negatives=1,
        augment=False,
        checkpoint_every=0,
        log_every=0,
    )
    s = train(enc, data, cfg, tmp_path / "run", progress=False)
    after = evaluate_pairs(enc, data)
    first, last = s["history"][0]["loss"]["dense"], s["history"][-1]["loss"]["dense"]
    assert last < first - 1.0
    assert after["dense"]["t2i"]["R@1"] > max(30.0, before["dense"]["t2i"]["R@1"] + 20)
    assert after["lexical"]["rsum"] > before["lexical"]["rsum"] + 50


def test_resume_continues_from_the_same_step(tiny_set, tmp_path) -> None:
    data = tiny_set.subset(range(64))
    cfg = TrainConfig(
        epochs=2,
        batch_size=32,
        lr=3e-3,
        warmup_steps=2,
        hard_negatives=1,
        checkpoint_every=0,
        threads=1,
    )
    a = _fresh(data)
    train(a, data, cfg, tmp_path / "a", progress=False)
    b = _fresh(data)
    from dataclasses import replace

    train(b, data, replace(cfg, stop_after=2), tmp_path / "b", progress=False)
    b2 = _fresh(data)
    s = train(b2, data, cfg, tmp_path / "b", resume=True, progress=False)
    assert s["steps"] == 4
    assert_same_weights(a, b2)


def test_cli_train_recipe_json_and_reload(tmp_path, capsys) -> None:
    out = tmp_path / "m"
    assert main(["train", "--recipe", "tiny", "--out", str(out), "--epochs", "1", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["steps"] >= 1 and s["model_spec"] == f"native:{out}"
    assert "val" in s["history"][-1]
    enc = load_encoder(s["model_spec"])
    assert enc.encode_texts(["a red circle"]).shape == (1, enc.dim)


def test_recipe_stage_switches_text_expansion_off(tmp_path) -> None:
    """A stage with ``text_expansion=False`` refits the heads (towers unchanged) and the saved
    model keeps the setting: its query vectors hold only the query's own word pieces."""
    from lexlens.models.minilm import encode_batch
    from lexlens.train.recipes import Recipe, Stage, run_recipe

    tiny = TrainConfig(objective="lexlip", epochs=1, batch_size=16, warmup_steps=1,
                       hard_negatives=1, log_every=0)  # fmt: skip
    heads = replace(tiny, objective="lexical-heads")
    recipe = Recipe("t", "tiny", (Stage(32, 1, tiny), Stage(32, 2, heads, text_expansion=False)),
                    n_val=8, val_seed=2)  # fmt: skip
    run_recipe(recipe, tmp_path / "m", progress=False)
    enc = load_encoder(f"native:{tmp_path / 'm'}")
    assert enc.cfg.lexicon.text_expansion is False
    stage1 = torch.load(tmp_path / "m" / "stage1" / "checkpoint.pt", weights_only=False)["model"]
    stage2 = torch.load(tmp_path / "m" / "stage2" / "checkpoint.pt", weights_only=False)["model"]
    for k, v in stage2.items():
        if not k.startswith(("image_lex.", "text_lex.", "free_table.", "lex_logit", "free_logit")):
            torch.testing.assert_close(v, stage1[k])
    texts = ["a big red circle", "three blue stars left of a square"]
    sp = enc.encode_texts_lexical(texts)
    for r, t in enumerate(texts):
        assert set(sp.row(r)[0].tolist()) <= set(encode_batch([t], 32)[0][0].tolist())


def test_recipe_stage_draws_spread_sizes(tmp_path) -> None:
    from lexlens.train.recipes import Recipe, Stage, run_recipe

    tiny = TrainConfig(objective="lexlip", epochs=1, batch_size=16, warmup_steps=1,
                       hard_negatives=1, log_every=0)  # fmt: skip
    stages = (
        Stage(16, 1, tiny),
        Stage(16, 2, tiny, size_spread=0.2, paraphrase=0.5, texture=0.5, aspect=0.3),
    )
    recipe = Recipe("t", "tiny", stages, n_val=8, val_seed=2)
    summary = run_recipe(recipe, tmp_path / "m", progress=False)
    assert [s["source"] for s in summary["stages"]] == [
        "scenes(seed=1, split=train)",
        "scenes(seed=2, split=train, size_spread=0.2, paraphrase=0.5, texture=0.5, aspect=0.3)",
    ]


def test_cli_train_reads_a_table_with_its_columns_and_image_folder(tmp_path, capsys) -> None:
    import csv

    from lexlens.data.scenes import generate_scenes

    generate_scenes(tmp_path / "d", n=40, seed=3, size=32, workers=1, progress=False)
    records = [json.loads(x) for x in (tmp_path / "d" / "captions.jsonl").read_text().splitlines()]
    (tmp_path / "t").mkdir()
    with open(tmp_path / "t" / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_file", "sentence"])
        for r in records:
            w.writerows([r["image"], c] for c in r["captions"][:2])
    argv = ["train", "--data", str(tmp_path / "t" / "pairs.csv"), "--config", "tiny",
            "--epochs", "1", "--batch-size", "16", "--json"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) != 0  # no column of a known name
    assert "--image-column" in capsys.readouterr().err
    options = ["--image-column", "img_file", "--caption-column", "sentence"]
    options += ["--images", str(tmp_path / "d")]
    assert main([*argv, *options, "--out", str(tmp_path / "m")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["train_pairs"] == 40 - 2


def test_cli_train_on_a_folder(tmp_path, capsys) -> None:
    from lexlens.data.scenes import generate_scenes

    generate_scenes(tmp_path / "d", n=48, seed=3, size=32, workers=1, progress=False)
    out = tmp_path / "m"
    rc = main(
        [
            "train",
            "--data",
            str(tmp_path / "d"),
            "--config",
            "tiny",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--json",
        ]
    )
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["train_pairs"] == 48 - 2  # 5% (at least one... here 2) held out for validation
    assert np.isfinite(s["final_loss"]["dense"])


def test_cli_train_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["train", "--out", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--data" in err
    assert main(["train", "--recipe", "nope", "--out", str(tmp_path / "x")]) != 0
    assert "no training recipe" in capsys.readouterr().err


@pytest.mark.parametrize(
    "objective", sorted(__import__("lexlens.train.loop", fromlist=["OBJECTIVES"]).OBJECTIVES)
)
def test_every_objective_trains_a_step(objective, tiny_set, tmp_path) -> None:
    from lexlens.train.loop import OBJECTIVES

    data = tiny_set.subset(range(16))
    enc = _fresh(data)
    before = {k: v.clone() for k, v in enc.net.state_dict().items()}
    cfg = TrainConfig(
        objective=objective,
        epochs=1,
        batch_size=16,
        warmup_steps=1,
        hard_negatives=1,
        checkpoint_every=0,
        log_every=0,
    )
    s = train(enc, data, cfg, tmp_path / objective, progress=False)
    assert set(OBJECTIVES[objective]) <= set(s["final_loss"])
    assert all(np.isfinite(v) for v in s["final_loss"].values())
    changed = [
        k
        for k, v in enc.net.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, before[k])
    ]
    assert changed
    if objective == "lexical-heads":  # only the lexicon heads and the query table move
        assert all(
            k.startswith(("image_lex.", "text_lex.", "free_table.", "lex_logit", "free_logit"))
            for k in changed
        )


def test_training_swaps_change_one_attribute_and_are_false():
    import random

    from lexlens.data import scenes as S
    from lexlens.train.data import training_swaps

    def details(m):
        out = {k: m[k] for k in ("place", "relation", "count") if k in m}
        for i, o in enumerate(m["objects"]):
            out.update({(i, k): v for k, v in o.items()})
        return out

    rng = random.Random(7)
    flips = 0
    for kind in S.KINDS * 30:
        scene = S.sample_scene(rng, kind)
        _, metas, _ = S.write_captions(scene, rng)
        for m in metas:
            swaps = training_swaps(m, scene, rng)
            assert swaps
            for x in swaps:
                assert not S.caption_fits(x, scene)
                if x["objects"] == m["objects"][::-1] and len(m["objects"]) == 2:
                    flips += 1  # the relation flipped by swapping the objects' order
                    continue
                a, b = details(m), details(x)
                assert a.keys() == b.keys()
                assert sum(a[k] != b[k] for k in a) == 1
    assert flips >= 30 * 5 * 0.9


def test_twin_scenes_change_only_places_and_flip_place_captions():
    import random

    from lexlens.data import scenes as S
    from lexlens.train.data import twin_scene

    rng = random.Random(3)
    said = 0
    for kind in S.KINDS * 40:
        scene = S.sample_scene(rng, kind)
        twin = twin_scene(scene)
        if kind == "multi" or scene["place"] == "center":
            assert twin is None
            continue
        assert twin is not None
        strip = ("x", "y")
        assert [{k: v for k, v in o.items() if k not in strip} for o in twin["objects"]] == [
            {k: v for k, v in o.items() if k not in strip} for o in scene["objects"]
        ]
        _, metas, _ = S.write_captions(scene, rng)
        for m in metas:
            assert S.caption_fits(m, scene)
            if "relation" in m or "place" in m:  # says where: false of the twin
                assert not S.caption_fits(m, twin)
                said += 1
            else:  # says nothing of places: still true
                assert S.caption_fits(m, twin)
    assert said > 100


def test_pairs_with_twins_keep_the_stream_and_draw_the_twins(tmp_path):
    from lexlens.train.data import pairs_from_scenes

    plain = pairs_from_scenes(24, seed=9, image_size=32, workers=1, progress=False)
    both = pairs_from_scenes(24, seed=9, image_size=32, workers=1, progress=False, twins=True)
    assert np.array_equal(plain.images, both.images) and plain.captions == both.captions
    assert plain.twins is None and both.twins is not None and both.twin_scenes is not None
    with_twin = [i for i, t in enumerate(both.twin_scenes) if t is not None]
    assert 0 < len(with_twin) < 24
    for i in range(24):
        if i in with_twin:
            assert not np.array_equal(both.twins[i], both.images[i])
        else:
            assert not both.twins[i].any()
    sub = both.subset(with_twin[:2])
    assert np.array_equal(sub.twins, both.twins[with_twin[:2]])
    assert sub.twin_scenes == [both.twin_scenes[i] for i in with_twin[:2]]


def test_twins_objective_needs_twin_images(tiny_set, tmp_path):
    data = replace(tiny_set.subset(range(16)), twins=None, twin_scenes=None)
    cfg = TrainConfig(objective="lexlip-twins", epochs=1, batch_size=16, checkpoint_every=0)
    with pytest.raises(UsageError, match="twin images"):
        train(_fresh(data), data, cfg, tmp_path / "x", progress=False)


def test_twins_share_the_image_forward_pass(tiny_set, tmp_path):
    """Images and their twins go through the image tower as one batch: separate batches would
    get separate batch-norm statistics, a cue that tells twins apart by itself."""
    data = tiny_set.subset(range(16))
    enc = _fresh(data)
    n_twins = sum(t is not None for t in data.twin_scenes)
    assert 0 < n_twins < 16
    sizes = []
    forward = enc.net.image_states
    enc.net.image_states = lambda px: sizes.append(px.shape[0]) or forward(px)
    cfg = TrainConfig(
        objective="lexlip-twins", epochs=1, batch_size=16, warmup_steps=1, checkpoint_every=0
    )
    s = train(enc, data, cfg, tmp_path / "t", progress=False)
    assert sizes == [16 + n_twins]
    assert np.isfinite(s["final_loss"]["twins"]) and s["final_loss"]["twins"] > 0


def test_size_spread_keeps_scenes_and_captions_and_draws_other_sizes():
    from lexlens.data import scenes as S
    from lexlens.train.data import LARGE_MIN_R, SMALL_MAX_R, pairs_from_scenes, twin_scene

    plain = pairs_from_scenes(60, seed=4, image_size=32, workers=1, progress=False, twins=True)
    spread = pairs_from_scenes(
        60, seed=4, image_size=32, workers=1, progress=False, twins=True, size_spread=0.3
    )
    assert spread.captions == plain.captions and spread.negatives == plain.negatives
    ratios = []
    for a, b, tw, metas in zip(
        plain.scenes, spread.scenes, spread.twin_scenes, spread.meanings, strict=True
    ):
        assert {k: v for k, v in a.items() if k != "objects"} == {
            k: v for k, v in b.items() if k != "objects"
        }
        for oa, ob in zip(a["objects"], b["objects"], strict=True):
            assert {k: oa[k] for k in ("colour", "shape", "size", "rot")} == {
                k: ob[k] for k in ("colour", "shape", "size", "rot")
            }
            assert ob["r"] <= SMALL_MAX_R if ob["size"] == "small" else ob["r"] >= LARGE_MIN_R
            assert ob["r"] + 0.01 <= ob["x"] <= 1 - ob["r"] - 0.01 + 1e-12
            assert ob["r"] + 0.01 <= ob["y"] <= 1 - ob["r"] - 0.01 + 1e-12
            ratios.append(ob["r"] / oa["r"])
        for m in metas:
            assert S.caption_fits(m, b)  # every caption still true of what is drawn
        if tw is not None:  # the twin: the same objects at the same (spread) sizes
            assert tw == twin_scene(b)
    assert min(ratios) < 0.8 and max(ratios) > 1.2  # sizes really spread (both ways)
    assert not np.array_equal(spread.images, plain.images)


def test_paraphrase_rewords_only_relation_captions_and_their_negatives():
    from lexlens.data import scenes as S

    kw = {"seed": 4, "image_size": 32, "workers": 1, "progress": False}
    plain = pairs_from_scenes(80, **kw)
    assert pairs_from_scenes(80, paraphrase=0.0, **kw).captions == plain.captions
    wide = pairs_from_scenes(80, paraphrase=1.0, **kw)
    assert np.array_equal(wide.images, plain.images) and wide.scenes == plain.scenes
    assert wide.meanings == plain.meanings
    changed = 0
    for i, metas in enumerate(plain.meanings):
        for j, m in enumerate(metas):
            a, b = plain.captions[i][j], wide.captions[i][j]
            if "relation" not in m:
                assert a == b and wide.negatives[i][j] == plain.negatives[i][j]
                continue
            assert S.caption_fits(m, wide.scenes[i])
            said = [w for w in S.WIDE_REL_WORDS[m["relation"]] if w in b.lower()]
            assert said, b  # the relation in one of its wider phrases
            if a == b:
                continue
            changed += 1
            # the flipped-relation negative is worded from the same wider phrases
            flip = S.WIDE_REL_WORDS[S.INVERSE_RELATION[m["relation"]]]
            assert any(w in n.lower() for n in wide.negatives[i][j] for w in flip)
            assert len(wide.negatives[i][j]) == len(plain.negatives[i][j])
    assert changed >= 20
    half = pairs_from_scenes(80, paraphrase=0.5, **kw)
    pairs = zip(half.captions, plain.captions, strict=True)
    n_half = sum(a != b for x, y in pairs for a, b in zip(x, y, strict=True))
    assert 0 < n_half <= changed
    with pytest.raises(UsageError, match="paraphrase"):
        pairs_from_scenes(4, paraphrase=1.5, **kw)
    with pytest.raises(UsageError, match="size_spread"):
        pairs_from_scenes(4, size_spread=1.0, **kw)


@pytest.mark.parametrize("change", [{"texture": 1.0}, {"aspect": 1.0}])
def test_texture_and_aspect_change_only_the_pictures(change):
    kw = {"seed": 4, "image_size": 32, "workers": 1, "progress": False, "twins": True}
    plain = pairs_from_scenes(40, **kw)
    other = pairs_from_scenes(40, **kw, **change)
    assert other.captions == plain.captions and other.negatives == plain.negatives
    assert other.scenes == plain.scenes and other.twin_scenes == plain.twin_scenes
    assert other.images.shape == plain.images.shape  # squared again when drawn wider
    changed = [not np.array_equal(a, b) for a, b in zip(other.images, plain.images, strict=True)]
    assert all(changed)
    # none of it is drawn without being asked for
    assert np.array_equal(pairs_from_scenes(40, texture=0.0, aspect=0.0, **kw).images, plain.images)
    name = next(iter(change))
    with pytest.raises(UsageError, match=name):
        pairs_from_scenes(4, **{**kw, name: 1.5})


def test_roles_heads_live_in_the_checkpoint_not_in_the_model(tiny_set, tmp_path):
    from lexlens.train.roles import RoleHeads

    data = tiny_set.subset(range(16))
    enc = _fresh(data)
    keys = set(enc.net.state_dict())
    cfg = TrainConfig(
        objective="lexlip-roles", epochs=2, batch_size=8, warmup_steps=1, checkpoint_every=0
    )
    s = train(enc, data, replace(cfg, stop_after=2), tmp_path / "r", progress=False)
    assert s["final_loss"]["roles"] > 0 and s["final_loss"]["layout"] > 0
    assert set(enc.net.state_dict()) == keys  # the saved model is the same architecture
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert set(ck["role_heads"]) == set(RoleHeads.for_net(enc.net).module.state_dict())
    s2 = train(enc, data, cfg, tmp_path / "r", progress=False, resume=True)
    assert s2["steps"] == 4
    plain = data.subset(range(16))
    plain.scenes = None  # pairs without scene records (any dataset read from disk)
    with pytest.raises(UsageError, match="lexlip-roles|twin"):
        train(_fresh(plain), plain, cfg, tmp_path / "p", progress=False)


def test_every_recipe_stage_names_a_known_objective_and_its_data():
    from lexlens.train.recipes import RECIPES

    for recipe in RECIPES.values():
        for stage in recipe.stages:
            terms = stage.train.terms()  # a UsageError for an unknown objective
            assert stage.n_train > 0 and 0.0 <= stage.size_spread < 1.0
            assert 0.0 <= stage.paraphrase <= 1.0
            if "roles" in terms:  # role targets ride on the twins' scenes
                assert "twins" in terms
    seeds = [s.seed for s in RECIPES["scenes-mini"].stages]
    assert len(seeds) == len(set(seeds))  # every stage on scenes of its own
