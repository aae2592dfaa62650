"""Role targets (lexlens.train.roles) against naive rules from the scenes' coordinates."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lexlens.data import scenes as S
from lexlens.models import minilm
from lexlens.train.data import twin_scene
from lexlens.train.roles import (
    LAYOUT_DIMS,
    RoleHeads,
    image_role_targets,
    layout_targets,
    role_losses,
    text_role_targets,
)

SLOT = {n: k for k, n in enumerate((*S.COLOURS, *S.SHAPES))}


def _side_from_coordinates(scene, colour, shape):
    """-1/+1: the side of the object (colour, shape) relative to the other, on the relation axis."""
    axis = 0 if scene["relation"] in ("left of", "right of") else 1
    key = "xy"[axis]
    a, b = scene["objects"]
    me, other = (a, b) if (a["colour"], a["shape"]) == (colour, shape) else (b, a)
    assert (me["colour"], me["shape"]) == (colour, shape)
    return axis, float(np.sign(me[key] - other[key]))


def _pairs(n, seed=11):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        scene = S.sample_scene(rng, "pair")
        a, b = scene["objects"]
        if (a["colour"], a["shape"]) == (b["colour"], b["shape"]):
            continue
        texts, metas, _ = S.write_captions(scene, rng)
        out.append((scene, texts, metas))
    return out


def test_layout_code_is_shared_by_a_pair_and_its_captions_and_flips_with_its_twin():
    rng = random.Random(3)
    pairs = 0
    for kind in S.KINDS * 30:
        scene = S.sample_scene(rng, kind)
        _, metas, _ = S.write_captions(scene, rng)
        codes = layout_targets([scene, twin_scene(scene), *metas])
        if kind != "pair":
            assert not codes.any()
            continue
        pairs += 1
        want = np.zeros(LAYOUT_DIMS, np.float32)
        for obj in scene["objects"]:
            axis, side = _side_from_coordinates(scene, obj["colour"], obj["shape"])
            for key in ("colour", "shape"):
                want[2 * SLOT[obj[key]] + axis] += side
        assert np.array_equal(codes[0], want)
        assert codes[0].any() and codes[0].sum() == 0
        assert np.array_equal(codes[1], -codes[0])  # the twin: places traded
        for m, c in zip(metas, codes[2:], strict=True):
            if m.get("relation") is None:  # a partial caption may drop the relation
                assert not c.any()
            else:
                assert np.array_equal(c, codes[0]), m
    assert pairs > 20
    same = {"colour": "red", "shape": "circle"}
    code = layout_targets(
        [{"objects": [same, {"colour": "red", "shape": "star"}], "relation": "above"}]
    )
    assert code[0, 2 * SLOT["red"] + 1] == 0  # a colour both share says nothing
    assert code[0, 2 * SLOT["circle"] + 1] == -1 and code[0, 2 * SLOT["star"] + 1] == 1
    assert not layout_targets([None, {}]).any()


def test_text_role_targets_mark_each_objects_words_with_its_side():
    tok = minilm.get_tokenizer(32)
    checked = 0
    for scene, texts, metas in _pairs(40):
        encs = tok.encode_batch(texts)
        tt, tm = text_role_targets(
            metas, [e.word_ids for e in encs], texts, [e.offsets for e in encs]
        )
        assert tt.shape == tm.shape == (len(texts), len(encs[0].ids), 2)
        for n, (text, meta, e) in enumerate(zip(texts, metas, encs, strict=True)):
            if meta.get("relation") is None:
                assert not tm[n].any()
                continue
            words = {}  # word index -> its text, from the offsets (naive: join the pieces)
            for t, w in enumerate(e.word_ids):
                if w is not None:
                    words.setdefault(w, []).append(t)
            for toks in words.values():
                word = text[e.offsets[toks[0]][0] : e.offsets[toks[-1]][1]].lower()
                word = {"grey": "gray"}.get(word, word)
                owners = [o for o in scene["objects"] if word in (o["colour"], o["shape"])]
                named = [o for o in meta["objects"] if word in (o.get("colour"), o.get("shape"))]
                if len(owners) == 1 and len(named) == 1:
                    o = owners[0]
                    axis, side = _side_from_coordinates(scene, o["colour"], o["shape"])
                    for t in toks:
                        assert tm[n, t, axis] == 1 and tm[n, t, 1 - axis] == 0, (text, word)
                        assert tt[n, t, axis] == side, (text, word)
                        checked += 1
                else:
                    assert not tm[n, toks].any(), (text, word)
    assert checked > 300


def test_image_role_targets_point_at_each_objects_patch():
    grid = 8
    scenes = [s for s, _, _ in _pairs(30)]
    scenes += [twin_scene(s) for s in scenes] + [S.sample_scene(random.Random(1), "single")]
    index, target, mask = image_role_targets(scenes, grid)
    assert (index[-1] == -1).all() and not mask[-1].any()
    for n, scene in enumerate(scenes[:-1]):
        for k, obj in enumerate(scene["objects"]):
            r, c = divmod(int(index[n, k]) - 1, grid)
            assert c / grid <= obj["x"] < (c + 1) / grid and r / grid <= obj["y"] < (r + 1) / grid
            axis, side = _side_from_coordinates(scene, obj["colour"], obj["shape"])
            assert mask[n, k, axis] == 1 and mask[n, k, 1 - axis] == 0
            assert target[n, k, axis] == side
    half = len(scenes[:-1]) // 2
    assert np.array_equal(target[:half], -target[half:-1])  # twins: sides traded


def test_role_losses_against_a_loop():
    g = torch.Generator().manual_seed(0)
    heads = RoleHeads(text_width=6, image_width=5, embed_dim=LAYOUT_DIMS + 3)
    B, L, P = 3, 4, 5
    tst, ist = torch.randn(B, L, 6, generator=g), torch.randn(B, P, 5, generator=g)
    txt, img = (
        torch.randn(B, LAYOUT_DIMS + 3, generator=g),
        torch.randn(B, LAYOUT_DIMS + 3, generator=g),
    )
    tt = np.sign(np.random.default_rng(0).normal(size=(B, L - 1, 2))).astype(np.float32)
    tm = (np.random.default_rng(1).random((B, L - 1, 2)) < 0.5).astype(np.float32)
    index = np.array([[1, 3], [-1, -1], [4, 2]])
    it = np.ones((B, 2, 2), np.float32)
    im = np.zeros((B, 2, 2), np.float32)
    im[0, :, 0] = im[2, :, 1] = 1
    tc = np.zeros((B, LAYOUT_DIMS), np.float32)
    tc[0, 0], tc[2, 5] = 1, -1
    ic = np.zeros((B, LAYOUT_DIMS), np.float32)
    ic[1, 3] = 1
    with torch.no_grad():
        got = role_losses(heads, tst, ist, txt, img, (tt, tm), (index, it, im), tc, ic)
    _check_role_losses(got, heads, tst, ist, txt, img, tt, tm, index, it, im, tc, ic)


@torch.no_grad()
def _check_role_losses(got, heads, tst, ist, txt, img, tt, tm, index, it, im, tc, ic):
    B, L = tst.shape[:2]
    m = heads.module
    num = den = 0.0
    for b in range(B):
        for t in range(L - 1):  # the last token has no target (a longer negative padded it)
            for a in range(2):
                if tm[b, t, a]:
                    num += float(m["text_tokens"](tst[b, t])[a] - tt[b, t, a]) ** 2
                    den += 1
    want = num / den
    num = den = 0.0
    for b in range(B):
        for k in range(2):
            for a in range(2):
                if im[b, k, a]:
                    num += float(m["image_patches"](ist[b, index[b, k]])[a] - it[b, k, a]) ** 2
                    den += 1
    want += num / den
    num, den = 0.0, 0
    for emb, codes, head in ((txt, tc, "text_code"), (img, ic, "image_code")):
        for b in range(B):
            if codes[b].any():
                num += float(((m[head](emb[b]) - torch.from_numpy(codes[b])) ** 2).sum())
                den += 1
    assert float(got["roles"]) == pytest.approx(want, rel=1e-5)
    assert float(got["layout"]) == pytest.approx(num / den, rel=1e-5)
