"""Synthetic "scenes": small pictures of coloured shapes described in English.

The generator covers the whole vocabulary of ``shared/scenes-vocabulary.md``: 12 colours,
8 shapes, two sizes, five places of a single object, four relations between two objects,
and counts one to three. Three scene kinds are about equally common: ``single`` (one
object at a place), ``pair`` (two different objects in a relation) and ``multi`` (two or
three identical small objects).

Output folder (:func:`generate_scenes`, ``lexlens data scenes OUT``)::

    images/000000.png ...
    captions.jsonl   {"image", "captions": [5 str], "scene": SCENE, "caption_meta": [5 MEANING]}
    fg.jsonl         {"image", "positive", "negatives": [str], "negatives_meta": [MEANING]}
    dataset.json     {"name", "n", "seed", "size", "split", "generator_version"}

Scene record (``SCENE``)
------------------------
::

    {"kind": "single" | "pair" | "multi",
     "background": str,            # palette colour name the background resembles
     "bg_rgb": [r, g, b],
     "place": str | None,          # single: left / right / top / bottom / center
     "relation": str | None,       # pair: objects[0] RELATION objects[1]
     "count": int,                 # number of objects (1, 2 or 3)
     "objects": [{"colour": str, "shape": str, "size": "small" | "large",
                  "x": float, "y": float,     # centre, in units of the image side
                  "r": float, "rot": float}]} # radius (image side units), degrees

Coordinates grow rightwards and downwards. No object has the background's colour (nor a
colour close to it). In a pair, "A left of B" means A's centre is at least 0.36 of the
image side left of B's while their vertical offset is at most 0.1 (likewise above/below),
so exactly one relation holds and it is unambiguous.

Caption meaning (``MEANING``)
-----------------------------
::

    {"objects": [{"colour"?: str, "shape"?: str, "size"?: str}, ...],  # 1 or 2 descriptions
     "place"?: str,     # with one description
     "relation"?: str,  # with two descriptions: objects[0] RELATION objects[1]
     "count"?: int}     # with one description: exactly that many objects match it

:func:`caption_fits` decides exactly whether a meaning is true of ANY scene record, i.e.
what a perfect reader knows. Rules: an object description matches an object when every
attribute it names is equal; a relation holds only in a pair scene whose two objects match
the two descriptions in that relation (or in the inverse relation with the descriptions
swapped); a place holds only for the object of a single scene at that place; a count holds
when exactly that many objects match; otherwise every description must match a distinct
object (so "a red circle" fits any scene containing a red circle). The evaluation uses it
for the ceiling; the fine-grained negatives are checked with it to be false.

Rendering varies on purpose (positions inside the place's region, size jitter, rotation,
colour jitter, solid/gradient/noisy backgrounds, supersampled or aliased edges, blur), and
so do captions (templates, word orders, synonyms, fillers, plural forms, capitals, final
period, partial descriptions), because held-out data is drawn and written independently.
Every image is generated from its own generator seeded by ``(seed, split, index)``, so the
output is the same whatever the number of worker processes.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TEXTURES",
    "draw_texture",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "PLACES",
    "RELATIONS",
    "COUNTS",
    "KINDS",
    "INVERSE_RELATION",
    "GENERATOR_VERSION",
    "PARTIAL_SHARE",
    "CaptionStyle",
    "SceneItem",
    "sample_scene",
    "render_scene",
    "write_captions",
    "realise",
    "WIDE_REL_WORDS",
    "caption_fits",
    "swap_negatives",
    "make_item",
    "generate_scenes",
    "generate",
]

GENERATOR_VERSION = 3

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 50),
    "blue": (35, 70, 220),
    "yellow": (245, 220, 30),
    "purple": (130, 45, 170),
    "orange": (250, 140, 20),
    "pink": (250, 130, 190),
    "brown": (125, 75, 30),
    "gray": (128, 128, 128),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "cyan": (30, 220, 230),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "pentagon")
SIZES = ("small", "large")
PLACES = ("left", "right", "top", "bottom", "center")
RELATIONS = ("left of", "right of", "above", "below")
COUNTS = (1, 2, 3)
KINDS = ("single", "pair", "multi")
INVERSE_RELATION = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}

# light and dark neutrals besides the palette colours themselves: (name it resembles, rgb)
_NEUTRALS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("white", (245, 245, 242)),
    ("white", (228, 230, 235)),
    ("gray", (175, 175, 172)),
    ("gray", (128, 128, 130)),
    ("gray", (90, 90, 94)),
    ("black", (38, 36, 42)),
    ("black", (15, 15, 18)),
)
_MIN_CONTRAST = 90.0  # Euclidean RGB distance between an object colour and the background

# (x range, y range) of the centre of a single object at each place
_PLACE_BOX = {
    "left": ((0.16, 0.30), (0.32, 0.68)),
    "right": ((0.70, 0.84), (0.32, 0.68)),
    "top": ((0.32, 0.68), (0.16, 0.30)),
    "bottom": ((0.32, 0.68), (0.70, 0.84)),
    "center": ((0.42, 0.58), (0.42, 0.58)),
}


# ----------------------------------------------------------------------------- sampling
def _radius(size: str, rng: random.Random, kind: str) -> float:
    if size == "large":
        return rng.uniform(0.13, 0.16) if kind == "pair" else rng.uniform(0.15, 0.20)
    return rng.uniform(0.075, 0.10)


def _object(
    rng: random.Random, colour: str, shape: str, size: str, x: float, y: float, r: float
) -> dict[str, Any]:
    rot = 0.0 if shape == "circle" else rng.uniform(-15.0, 15.0)
    return {"colour": colour, "shape": shape, "size": size, "x": x, "y": y, "r": r, "rot": rot}


def _inside(v: float, r: float) -> float:
    """Keep a centre coordinate so that the object stays within the picture."""
    return min(max(v, r + 0.02), 1.0 - r - 0.02)


def _background(rng: random.Random) -> tuple[str, tuple[int, int, int]]:
    if rng.random() < 0.5:
        return rng.choice(_NEUTRALS)
    name = rng.choice(list(COLOURS))
    return name, COLOURS[name]


def sample_scene(rng: random.Random, kind: str | None = None) -> dict[str, Any]:
    """Draw a scene record (see the module docstring) from ``rng``."""
    kind = kind or rng.choice(KINDS)
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {KINDS}")
    bg_name, bg_rgb = _background(rng)
    colours = [
        c for c, rgb in COLOURS.items() if c != bg_name and math.dist(rgb, bg_rgb) >= _MIN_CONTRAST
    ]
    scene: dict[str, Any] = {
        "kind": kind,
        "background": bg_name,
        "bg_rgb": list(bg_rgb),
        "place": None,
        "relation": None,
    }
    if kind == "single":
        place, size = rng.choice(PLACES), rng.choice(SIZES)
        (x0, x1), (y0, y1) = _PLACE_BOX[place]
        r = _radius(size, rng, kind)
        x, y = _inside(rng.uniform(x0, x1), r), _inside(rng.uniform(y0, y1), r)
        objects = [_object(rng, rng.choice(colours), rng.choice(SHAPES), size, x, y, r)]
        scene["place"] = place
    elif kind == "pair":
        while True:
            a, b = (
                (rng.choice(colours), rng.choice(SHAPES)),
                (rng.choice(colours), rng.choice(SHAPES)),
            )
            if a != b:
                break
        rel = rng.choice(RELATIONS)
        sa, sb = rng.choice(SIZES), rng.choice(SIZES)
        ra, rb = _radius(sa, rng, kind), _radius(sb, rng, kind)
        lo, hi = rng.uniform(0.18, 0.32), rng.uniform(0.68, 0.82)  # along the relation axis
        ca, cb = (lo, hi) if rel in ("left of", "above") else (hi, lo)
        across = rng.uniform(0.35, 0.65)  # the other axis: nearly aligned
        oa, ob = across + rng.uniform(-0.05, 0.05), across + rng.uniform(-0.05, 0.05)
        if rel in ("left of", "right of"):
            pa, pb = (ca, oa), (cb, ob)
        else:
            pa, pb = (oa, ca), (ob, cb)
        objects = [_object(rng, *a, sa, *pa, ra), _object(rng, *b, sb, *pb, rb)]
        scene["relation"] = rel
    else:
        count = rng.choice((2, 3))
        colour, shape = rng.choice(colours), rng.choice(SHAPES)
        pts: list[tuple[float, float]] = []
        while len(pts) < count:
            p = (rng.uniform(0.14, 0.86), rng.uniform(0.14, 0.86))
            if all(math.dist(p, q) > 0.27 for q in pts):
                pts.append(p)
        objects = [
            _object(rng, colour, shape, "small", x, y, _radius("small", rng, kind)) for x, y in pts
        ]
    scene["count"] = len(objects)
    scene["objects"] = objects
    return scene


# ----------------------------------------------------------------------------- rendering
def _unit_outline(shape: str) -> list[tuple[float, float]]:
    """The outline of ``shape`` inside the unit circle (y grows downwards)."""

    def ring(n: int, start: float = -90.0) -> list[tuple[float, float]]:
        return [
            (
                math.cos(math.radians(start + 360.0 * i / n)),
                math.sin(math.radians(start + 360.0 * i / n)),
            )
            for i in range(n)
        ]

    if shape == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if shape == "triangle":
        return [(x, y + 0.15) for x, y in ring(3)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.66, 0.0), (0.0, 1.0), (-0.66, 0.0)]
    if shape == "pentagon":
        return ring(5)
    if shape == "hexagon":
        return ring(6, 0.0)
    if shape == "star":
        return [
            (p[0] * (1.0 if i % 2 == 0 else 0.42), p[1] * (1.0 if i % 2 == 0 else 0.42))
            for i, p in enumerate(ring(10))
        ]
    if shape == "cross":
        t = 0.33
        return [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ]
    raise ValueError(f"not a polygon shape: {shape}")


_OUTLINES = {s: _unit_outline(s) for s in SHAPES if s != "circle"}


def _polygon(
    shape: str, cx: float, cy: float, r: float, rot_deg: float
) -> list[tuple[float, float]]:
    c, s = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in _OUTLINES[shape]]


def _jitter(rgb: Sequence[int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, int(v) + rng.randint(-amount, amount))) for v in rgb)
    return r, g, b


def _paint_background(
    width: int, height: int, rgb: tuple[int, int, int], rng: random.Random
) -> Any:
    """Solid colour, or a mild gradient (vertical, horizontal or diagonal)."""
    from PIL import Image

    if rng.random() < 0.6:
        return Image.new("RGB", (width, height), rgb)
    ty = np.linspace(-1.0, 1.0, height, dtype=np.float32)
    tx = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    direction = rng.randrange(3)
    ramp = (
        ty[:, None]
        if direction == 0
        else tx[None, :]
        if direction == 1
        else (ty[:, None] + tx[None, :]) / 2
    )
    amp = rng.uniform(6.0, 22.0) * rng.choice((-1.0, 1.0))
    ramp = np.broadcast_to(ramp, (height, width))
    arr = np.asarray(rgb, np.float32)[None, None, :] + (ramp * amp)[:, :, None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


TEXTURES = ("checker", "stripes", "grain", "blobs")


def draw_texture(rng: random.Random) -> dict[str, Any]:
    """A random background texture for :func:`render_scene` (training only): a checkerboard,
    stripes (horizontal, vertical or diagonal), pixel grain (grey or per channel) or smooth
    blobs, of amplitude 4-32 grey levels, so that a model learns to look past the background
    pattern of a renderer other than this one."""
    kind = rng.choice(TEXTURES)
    return {
        "kind": kind,
        "amp": rng.uniform(4.0, 32.0),
        "cells": rng.choice((2, 3, 4, 6, 8, 12, 16, 24)),  # pattern periods across the side
        "angle": rng.choice((0, 1, 2, 3)),  # stripes: horizontal, vertical, two diagonals
        "colour": rng.random() < 0.3,  # grain: each channel its own
        "seed": rng.getrandbits(32),
    }


def _texture(width: int, height: int, spec: dict[str, Any]) -> np.ndarray:
    """``float32 [height, width, 1 or 3]`` in about ``[-amp, amp]``: the pattern of ``spec``
    (its period in units of the shorter side)."""
    amp = float(spec["amp"])
    unit = spec["cells"] / min(width, height)
    ty = np.arange(height, dtype=np.float32)[:, None] * unit
    tx = np.arange(width, dtype=np.float32)[None, :] * unit
    kind = spec["kind"]
    if kind == "checker":
        cells = (np.floor(ty) + np.floor(tx)) % 2
        return ((cells * 2.0 - 1.0) * amp)[:, :, None].astype(np.float32)
    if kind == "stripes":
        angle = spec["angle"]  # only the chosen direction is computed
        along = (
            np.broadcast_to(ty, (height, width))
            if angle == 0
            else np.broadcast_to(tx, (height, width))
            if angle == 1
            else (ty + tx) / 2
            if angle == 2
            else (ty - tx) / 2
        )
        wave = (np.floor(along * 2) % 2) * 2.0 - 1.0
        return (wave * amp)[:, :, None].astype(np.float32)
    gen = np.random.default_rng(spec["seed"])
    if kind == "grain":
        channels = 3 if spec["colour"] else 1
        return (gen.normal(0.0, amp / 2.0, (height, width, channels))).astype(np.float32)
    # blobs: coarse noise, bilinearly upsampled
    from PIL import Image

    n = max(2, int(spec["cells"]))
    coarse = gen.uniform(-1.0, 1.0, (n, n)).astype(np.float32)
    im = Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return (np.asarray(im, np.float32) * amp)[:, :, None]


def render_scene(
    scene: dict[str, Any],
    size: int,
    rng: random.Random,
    texture: dict[str, Any] | None = None,
    aspect: float = 1.0,
) -> Any:
    """Draw ``scene`` as an RGB ``PIL.Image`` of ``size`` x ``size`` pixels (``aspect`` =
    width / height other than 1: ``size`` is the shorter side, and the scene's unit square is
    stretched over the picture while the objects keep their shapes and their size relative
    to the shorter side).

    The drawing is randomised by ``rng`` (not by the record): supersampling factor 1-4
    (1 = aliased edges) and the downsampling filter, background jitter and gradient, radius
    jitter, colour jitter of every object, then optionally a slight blur or pixel noise.
    ``texture`` (:func:`draw_texture`) adds a pattern to the background, under the objects;
    it draws nothing from ``rng``, so the rest of the picture stays the same (so does
    ``aspect``).
    """
    from PIL import Image, ImageDraw, ImageFilter

    ss = rng.choice((1, 2, 3, 4))
    side = size * ss
    out_w, out_h = (round(size * aspect), size) if aspect >= 1 else (size, round(size / aspect))
    width, height = out_w * ss, out_h * ss
    img = _paint_background(width, height, _jitter(scene["bg_rgb"], rng, 10), rng)
    if texture is not None:
        arr = np.asarray(img, np.float32) + _texture(width, height, texture)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for o in scene["objects"]:
        fill = _jitter(COLOURS[o["colour"]], rng, 16)
        cx, cy = o["x"] * width, o["y"] * height
        r = o["r"] * side * rng.uniform(0.94, 1.06)
        if o["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(o["shape"], cx, cy, r, o["rot"]), fill=fill)
    if ss > 1:
        resample = rng.choice(
            (Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.LANCZOS)
        )
        img = img.resize((out_w, out_h), resample)
    u = rng.random()
    if u < 0.15:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    elif u < 0.35:
        arr = np.asarray(img, dtype=np.float32)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(
            0.0, rng.uniform(2.0, 7.0), arr.shape
        )
        img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8), "RGB")
    return img


# ----------------------------------------------------------------------------- meaning
_ATTRS = ("colour", "shape", "size")


def _obj_fits(desc: dict[str, Any], o: dict[str, Any]) -> bool:
    return all(o[k] == desc[k] for k in _ATTRS if k in desc)


def caption_fits(meaning: dict[str, Any], scene: dict[str, Any]) -> bool:
    """True when the caption ``meaning`` is true of ``scene`` (rules in the module docstring).

    ``scene`` is a scene record, or a ``captions.jsonl`` record holding it under ``"scene"``.
    Pure: depends on nothing but its arguments.
    """
    if "objects" not in scene and isinstance(scene.get("scene"), dict):
        scene = scene["scene"]
    objs = scene["objects"]
    descs = meaning.get("objects") or []
    if "relation" in meaning:
        if scene.get("kind") != "pair" or len(descs) != 2 or len(objs) != 2:
            return False
        a, b = objs
        rel, srel = meaning["relation"], scene["relation"]
        direct = rel == srel and _obj_fits(descs[0], a) and _obj_fits(descs[1], b)
        inverse = (
            rel == INVERSE_RELATION[srel] and _obj_fits(descs[0], b) and _obj_fits(descs[1], a)
        )
        return direct or inverse
    if "place" in meaning and (scene.get("kind") != "single" or meaning["place"] != scene["place"]):
        return False
    if "count" in meaning:
        return len(descs) == 1 and sum(_obj_fits(descs[0], o) for o in objs) == meaning["count"]
    return _distinct_match(descs, objs)


def _distinct_match(descs: list[dict[str, Any]], objs: list[dict[str, Any]]) -> bool:
    """Every description matched by a different object (tiny bipartite search)."""
    used: set[int] = set()

    def assign(i: int) -> bool:
        if i == len(descs):
            return True
        for j, o in enumerate(objs):
            if j not in used and _obj_fits(descs[i], o):
                used.add(j)
                if assign(i + 1):
                    return True
                used.discard(j)
        return False

    return assign(0)


# ----------------------------------------------------------------------------- words
_SIZE_WORDS = {
    "large": ("large", "big", "large", "big"),
    "small": ("small", "little", "tiny", "small"),
}
_COLOUR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLOURS} | {"gray": ("gray", "grey")}
_PLACE_WORDS = {
    "left": (
        "on the left",
        "at the left",
        "on the left side",
        "in the left part of the picture",
        "on the left-hand side",
    ),
    "right": (
        "on the right",
        "at the right",
        "on the right side",
        "in the right part of the picture",
        "on the right-hand side",
    ),
    "top": ("at the top", "near the top", "in the upper part", "at the top of the image", "up top"),
    "bottom": (
        "at the bottom",
        "near the bottom",
        "in the lower part",
        "at the bottom of the image",
        "down at the bottom",
    ),
    "center": (
        "in the center",
        "in the centre",
        "in the middle",
        "at the center",
        "in the middle of the image",
    ),
}
_PLACE_SHORT = {
    "left": ("left",),
    "right": ("right",),
    "top": ("top",),
    "bottom": ("bottom",),
    "center": ("center", "centre", "middle"),
}
_REL_WORDS = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "underneath"),
}
# phrases of each relation the generator's captions never use
_MORE_REL_WORDS = {
    "left of": (
        "on the left side of",
        "to the left side of",
        "at the left of",
        "further left than",
    ),
    "right of": (
        "on the right side of",
        "to the right side of",
        "at the right of",
        "further right than",
    ),
    "above": ("on top of", "atop", "up above"),
    "below": ("lower than", "down below"),
}
#: more ways to say each relation, for training only (``pairs_from_scenes(paraphrase=...)``):
#: the generator's own phrases, then others; its captions keep :data:`_REL_WORDS` alone, so
#: generated data sets stay the same
WIDE_REL_WORDS: dict[str, tuple[str, ...]] = {
    rel: (*words, *_MORE_REL_WORDS[rel]) for rel, words in _REL_WORDS.items()
}
_COUNT_WORDS = {1: ("one", "a single", "1"), 2: ("two", "2", "a pair of"), 3: ("three", "3")}
_THING_WORDS = ("shape", "object", "figure")
# fillers only in front of noun phrases ("a picture of" + "a red circle on the left")
_FILLERS = (
    "",
    "",
    "",
    "",
    "",
    "a picture of ",
    "an image of ",
    "an image showing ",
    "a photo of ",
    "a drawing of ",
    "there is ",
    "we can see ",
    "this image shows ",
    "here we have ",
    "an illustration with ",
    "a render of ",
)
_PICKS = ("size0", "size1", "col0", "col1", "place", "rel", "count", "thing", "form", "filler")


@dataclass(frozen=True)
class CaptionStyle:
    """Every random word choice of one caption, so a swapped caption can reuse them all."""

    picks: tuple[int, ...]
    capitalise: bool
    period: bool

    def pick(self, key: str, options: Sequence[str]) -> str:
        return options[self.picks[_PICKS.index(key)] % len(options)]

    @classmethod
    def draw(cls, rng: random.Random) -> CaptionStyle:
        return cls(
            picks=tuple(rng.randrange(1 << 16) for _ in _PICKS),
            capitalise=rng.random() < 0.4,
            period=rng.random() < 0.3,
        )


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun(desc: dict[str, Any], st: CaptionStyle, slot: int, plural: bool = False) -> str:
    """'[size] [colour] shape(s)' without determiner."""
    words = []
    if "size" in desc:
        words.append(st.pick(f"size{slot}", _SIZE_WORDS[desc["size"]]))
    if "colour" in desc:
        words.append(st.pick(f"col{slot}", _COLOUR_WORDS[desc["colour"]]))
    noun = desc.get("shape") or st.pick("thing", _THING_WORDS)
    words.append(_plural(noun) if plural else noun)
    return " ".join(words)


def _pick_form(
    st: CaptionStyle, nps: Sequence[str], clauses: Sequence[str], plural: bool = False
) -> str:
    """One of the noun-phrase forms (with a filler) or of the clause forms."""
    forms = [*nps, *clauses]
    i = st.picks[_PICKS.index("form")] % len(forms)
    if i >= len(nps):
        return forms[i]
    filler = st.pick("filler", _FILLERS)
    return ("there are " if plural and filler == "there is " else filler) + forms[i]


def realise(
    meaning: dict[str, Any],
    style: CaptionStyle,
    rel_words: dict[str, tuple[str, ...]] | None = None,
) -> str:
    """Write a caption meaning (module docstring) in English with the choices of ``style``
    (``rel_words``: the phrases of each relation, by default the generator's own)."""
    descs = meaning["objects"]
    if "relation" in meaning:
        a, b = _article(_noun(descs[0], style, 0)), _article(_noun(descs[1], style, 1))
        rel = style.pick("rel", (rel_words or _REL_WORDS)[meaning["relation"]])
        text = _pick_form(
            style,
            (f"{a} {rel} {b}", f"{b} with {a} {rel} it", f"{a} placed {rel} {b}"),
            (
                f"{a} is {rel} {b}",
                f"{rel} {b} there is {a}",
                f"{rel} {b} is {a}",
                f"{a} sits {rel} {b}",
            ),
        )
    elif "count" in meaning:
        n = meaning["count"]
        cw = style.pick("count", _COUNT_WORDS[n])
        noun = _noun(descs[0], style, 0, plural=n > 1)
        be = "are" if n > 1 else "is"
        exact = _COUNT_WORDS[n][0] if cw.startswith("a ") else cw
        text = _pick_form(
            style,
            (f"{cw} {noun}", f"exactly {exact} {noun}", f"{cw} {noun} in the picture"),
            (f"there {be} {cw} {noun}", f"{noun}: {n}", f"the image contains {cw} {noun}"),
            plural=n > 1,
        )
    elif "place" in meaning:
        obj = _article(_noun(descs[0], style, 0))
        place = style.pick("place", _PLACE_WORDS[meaning["place"]])
        short = style.pick("place", _PLACE_SHORT[meaning["place"]])
        text = _pick_form(
            style,
            (f"{obj} {place}", f"{obj} located {place}"),
            (
                f"{obj} is {place}",
                f"{place} there is {obj}",
                f"{place}, {obj}",
                f"{short}: {_noun(descs[0], style, 0)}",
            ),
        )
    else:
        parts = [_article(_noun(d, style, i)) for i, d in enumerate(descs)]
        joined = " and ".join(parts)
        text = _pick_form(style, (joined,), (f"{joined} can be seen", f"in this picture: {joined}"))
    if style.capitalise:
        text = text[0].upper() + text[1:]
    return text + "." if style.period else text


# ----------------------------------------------------------------------------- captions
def _full_meaning(scene: dict[str, Any]) -> dict[str, Any]:
    objs = [{k: o[k] for k in _ATTRS} for o in scene["objects"]]
    if scene["kind"] == "single":
        return {"objects": objs, "place": scene["place"]}
    if scene["kind"] == "pair":
        return {"objects": objs, "relation": scene["relation"]}
    return {"objects": [objs[0]], "count": len(objs)}


def _drop(d: dict[str, Any], *keys: str) -> None:
    for k in keys:
        d.pop(k, None)


# Share of captions 2-5 that describe only part of the scene. Calibrated on the held-out set's
# published ceiling (t2i R@1 79 / R@5 99.9, i2t R@1 76 / R@5 98, rSum 553): captions that fit
# many scenes ("a circle", "two stars") would pull a perfect reader's image-to-text R@1 far
# below 76, so people's partial captions here leave out one or two details, never the
# colour-and-shape identity of the objects.
PARTIAL_SHARE = 0.15


def _partial(meaning: dict[str, Any], kind: str, rng: random.Random) -> dict[str, Any]:
    """Leave out a detail or two, as people do when they describe only part of a scene."""
    m = copy.deepcopy(meaning)
    d = m["objects"][0]
    if kind == "single":
        choice = rng.randrange(3)
        if choice == 0:  # "a red circle on the left"
            _drop(d, "size")
        elif choice == 1:  # "a large red circle"
            m.pop("place")
        else:  # "a red circle" or "one red circle" (for a large red circle on the left)
            _drop(d, "size")
            m.pop("place")
            if rng.random() < 0.5:
                m["count"] = 1
    elif kind == "pair":
        # "a red circle left of a blue square", sizes left out
        for o in m["objects"]:
            _drop(o, "size")
    else:  # "two red stars"
        _drop(d, "size")
    return m


def _orient(meaning: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Describe a pair from either object's point of view (same meaning)."""
    if "relation" in meaning and rng.random() < 0.5:
        return {
            "objects": meaning["objects"][::-1],
            "relation": INVERSE_RELATION[meaning["relation"]],
        }
    return meaning


def write_captions(
    scene: dict[str, Any], rng: random.Random, n: int = 5
) -> tuple[list[str], list[dict[str, Any]], list[CaptionStyle]]:
    """``n`` captions of ``scene``: texts, meanings and styles.

    The first caption names everything (full meaning); the others are full or partial.
    """
    texts, metas, styles = [], [], []
    for i in range(n):
        m = _full_meaning(scene)
        if i > 0 and rng.random() < PARTIAL_SHARE:
            m = _partial(m, scene["kind"], rng)
        m = _orient(m, rng)
        st = CaptionStyle.draw(rng)
        texts.append(realise(m, st))
        metas.append(m)
        styles.append(st)
    return texts, metas, styles


def swap_negatives(
    meaning: dict[str, Any], scene: dict[str, Any], rng: random.Random
) -> list[dict[str, Any]]:
    """Meanings differing from ``meaning`` by exactly one attribute and false of ``scene``.

    Swaps: each described object's colour and shape, the relation flipped, the count changed.
    """
    out: list[dict[str, Any]] = []
    for i, d in enumerate(meaning["objects"]):
        for key, values in (("colour", tuple(COLOURS)), ("shape", SHAPES)):
            if key in d:
                m = copy.deepcopy(meaning)
                m["objects"][i][key] = rng.choice([v for v in values if v != d[key]])
                out.append(m)
    if "relation" in meaning:
        m = copy.deepcopy(meaning)
        m["relation"] = INVERSE_RELATION[meaning["relation"]]
        out.append(m)
    if "count" in meaning:
        m = copy.deepcopy(meaning)
        m["count"] = rng.choice([c for c in COUNTS if c != meaning["count"]])
        out.append(m)
    return [m for m in out if not caption_fits(m, scene)]


# ----------------------------------------------------------------------------- items
@dataclass
class SceneItem:
    """One generated example: record, captions with meanings, fine-grained negatives, PNG."""

    scene: dict[str, Any]
    captions: list[str]
    caption_meta: list[dict[str, Any]]
    negatives: list[str]
    negatives_meta: list[dict[str, Any]]
    png: bytes


def _rng(seed: int, split: str, index: int) -> random.Random:
    # a str seed is hashed with sha512 by random.Random: stable across runs and platforms
    return random.Random(f"lexlens-scenes:{GENERATOR_VERSION}:{seed}:{split}:{index}")


def make_item(seed: int, index: int, size: int = 64, split: str = "train") -> SceneItem:
    """Example ``index`` of the stream ``(seed, split)``: independent of workers and order."""
    rng = _rng(seed, split, index)
    scene = sample_scene(rng)
    captions, metas, styles = write_captions(scene, rng)
    neg_meta, negs = [], []
    for m in swap_negatives(metas[0], scene, rng):
        text = realise(m, styles[0])
        if text != captions[0] and text not in negs:
            neg_meta.append(m)
            negs.append(text)
    img = render_scene(scene, size, rng)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return SceneItem(scene, captions, metas, negs, neg_meta, buf.getvalue())


def _make_chunk(job: tuple[int, str, int, int, int, str, int]) -> list[tuple[str, str, str, int]]:
    """Worker: write the PNGs of ``[start, stop)``; return their two JSON lines, kind, #negatives."""
    seed, split, start, stop, size, out, width = job
    lines = []
    for i in range(start, stop):
        it = make_item(seed, i, size, split)
        rel = f"images/{i:0{width}d}.png"
        with open(os.path.join(out, rel), "wb") as f:
            f.write(it.png)
        cap = {
            "image": rel,
            "captions": it.captions,
            "scene": it.scene,
            "caption_meta": it.caption_meta,
        }
        fg = {
            "image": rel,
            "positive": it.captions[0],
            "negatives": it.negatives,
            "negatives_meta": it.negatives_meta,
        }
        lines.append((json.dumps(cap), json.dumps(fg), it.scene["kind"], len(it.negatives)))
    return lines


def _check_output_folder(out: Path, overwrite: bool) -> set[str]:
    """Refuse an output folder holding anything but (with ``overwrite``) an earlier scenes
    dataset; returns the names of that dataset's images, to delete those not written again."""
    from lexlens.errors import UsageError

    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return set()
    try:
        meta = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        meta = None
    is_scenes = isinstance(meta, dict) and meta.get("name") == "scenes"
    if not is_scenes:
        raise UsageError(
            f"{out} is not empty and holds no scenes dataset; choose a new or empty folder"
        )
    if not overwrite:
        raise UsageError(
            f"{out} already holds a scenes dataset; choose a new folder, or pass --force "
            "to replace it"
        )
    images = out / "images"
    if not images.is_dir():
        return set()
    return {p.name for p in images.iterdir() if re.fullmatch(r"[0-9]+\.png", p.name)}


def generate_scenes(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 64,
    split: str = "train",
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``n`` scenes into ``out_dir`` (layout in the module docstring); returns stats.

    Deterministic per ``(seed, split)``: the bytes written do not depend on ``workers``
    (default: all cores). ``captions.jsonl`` and ``fg.jsonl`` are in index order and are
    replaced atomically at the end.

    ``out_dir`` must be new or empty. With ``overwrite`` it may also hold an earlier scenes
    dataset (its ``dataset.json`` says so), which is replaced: images the new one does not
    write are deleted, so the folder never mixes two datasets. Any other folder with content is
    refused, so no one's files are overwritten.
    """
    from multiprocessing import get_context

    from lexlens.errors import UsageError
    from lexlens.progress import progress_bar

    if n <= 0:
        raise UsageError(f"the number of scenes must be positive, got {n}")
    if size < 16:
        raise UsageError(f"the image size must be at least 16 pixels, got {size}")
    if split not in ("train", "val", "test"):
        raise UsageError(f"split must be train, val or test, got {split!r}")
    out = Path(out_dir)
    stale = _check_output_folder(out, overwrite)
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out / 'images'}: {e.strerror}") from e
    meta = {
        "name": "scenes",
        "n": n,
        "seed": seed,
        "size": size,
        "split": split,
        "generator_version": GENERATOR_VERSION,
    }
    # written first too, so an interrupted run's folder is recognised (and --force replaces it)
    (out / "dataset.json").write_text(json.dumps({**meta, "complete": False}, indent=2) + "\n")
    workers = max(1, min(workers or os.cpu_count() or 1, 64))
    width = max(6, len(str(n - 1)))
    chunk = max(16, min(256, n // (workers * 8) or 16))
    jobs = [(seed, split, a, min(n, a + chunk), size, str(out), width) for a in range(0, n, chunk)]
    kinds = dict.fromkeys(KINDS, 0)
    n_neg = 0
    t0 = time.perf_counter()
    cap_tmp, fg_tmp = out / "captions.jsonl.tmp", out / "fg.jsonl.tmp"
    pool = get_context("fork").Pool(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap(_make_chunk, jobs) if pool else map(_make_chunk, jobs)
        with (
            open(cap_tmp, "w") as fc,
            open(fg_tmp, "w") as ff,
            progress_bar(n, "scenes", "img", progress) as bar,
        ):
            for lines in results:
                for cap, fg, kind, k in lines:
                    fc.write(cap + "\n")
                    ff.write(fg + "\n")
                    kinds[kind] += 1
                    n_neg += k
                bar.update(len(lines))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    os.replace(cap_tmp, out / "captions.jsonl")
    os.replace(fg_tmp, out / "fg.jsonl")
    written = {f"{i:0{width}d}.png" for i in range(n)}
    for name in stale - written:
        (out / "images" / name).unlink(missing_ok=True)
    elapsed = time.perf_counter() - t0
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {
        **meta,
        "out": str(out),
        "workers": workers,
        "kinds": kinds,
        "fg_negatives": n_neg,
        "seconds": round(elapsed, 3),
        "images_per_second": round(n / max(elapsed, 1e-9), 1),
    }


#: alias of :func:`generate_scenes`
generate = generate_scenes
