"""Held-out-like scenes: an independent renderer and caption writer for the scenes vocabulary.

Issue #4 promises a held-out set of 1,000 images "rendered and captioned independently"
(ceiling t->i R@1 79 / R@5 99.9, i->t R@1 76 / R@5 98, rSum 553). This script imitates such a
set without lexlens's own generator (``lexlens.data.scenes`` is used only as the judge,
:func:`lexlens.data.scenes.caption_fits`, so ``lexlens eval`` can compute the ceiling):

* its own scene sampler (exactly balanced kinds; place regions, pair geometry and sizes of
  its own; objects never near the background colour);
* its own renderer (numpy signed-distance shapes of its own geometry; image sides 96, 128,
  160 or 224 px; smooth / aliased / supersampled edges; solid, gradient, radial, stripe,
  checker and value-noise backgrounds; object shading, colour jitter, grain, blur, JPEG
  round trips);
* its own caption writer (other templates and word orders, fronted places and relations,
  "a blue star with a red circle to its left", synonyms grey / middle / big / little /
  beneath / on top of, numerals and "a pair of", fillers, capitals and punctuation), with
  a few partial captions that leave out the size or the place.

Output (the project's folder format, scene records and caption meanings in the schema of
``lexlens.data.scenes``)::

    OUT/images/000000.png ...
    OUT/captions.jsonl  {"image", "captions": [5], "scene", "caption_meta": [5], "caption_forms": [5]}
    OUT/fg.jsonl        {"image", "positive", "negatives", "negatives_meta", "swaps"}
    OUT/dataset.json    {"name", "n", "seed", "split", "generator", "partial_share", "sizes",
                         "renderer"}

``fg.jsonl`` swaps one attribute of the first (always complete) caption: a colour, a shape,
the relation flipped (pairs) or the count changed (multi); each negative is re-written with
the same wording and checked false of the scene.

    python benchmarks/heldout_like.py OUT --n 1000 --seed 4242
    python benchmarks/heldout_like.py OUT2 --n 1000 --seed 4242 --renderer generator
    python benchmarks/heldout_like.py --breakdown native:scenes-mini \\
        --data /work/runs/heldout-like --data /work/runs/test1k-v3 \\
        --json benchmarks/results/heldout_like/breakdown-shipped.json

``--renderer generator`` draws the same scenes (same captions) with lexlens's own renderer,
so the difference between the two folders' scores is what the drawing alone costs a model.

``--breakdown`` encodes each ``--data`` folder once and writes where the model fails:
recall and "top-1 image fits the caption" by scene kind, by complete/partial captions, by
wording (synonyms, numerals, fronted phrases), which attribute the wrong top-1 image gets
wrong, and fine-grained accuracy per swap type.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "COLOURS",
    "SHAPES",
    "PLACES",
    "RELATIONS",
    "KINDS",
    "IMAGE_SIDES",
    "PARTIAL_SHARE",
    "Wording",
    "sample_scene",
    "render",
    "caption",
    "full_meaning",
    "partial_meaning",
    "swaps",
    "make_record",
    "describe",
    "generate",
    "meaning_kind",
    "mismatch",
    "swap_type",
    "RENDERERS",
    "breakdown",
    "main",
]

# ----------------------------------------------------------------------------- vocabulary
COLOURS: dict[str, tuple[int, int, int]] = {  # this renderer's own anchors
    "red": (212, 38, 44),
    "green": (52, 158, 64),
    "blue": (42, 82, 212),
    "yellow": (238, 214, 52),
    "purple": (136, 58, 166),
    "orange": (244, 132, 32),
    "pink": (244, 142, 186),
    "brown": (118, 78, 40),
    "gray": (136, 136, 138),
    "white": (246, 246, 244),
    "black": (24, 24, 26),
    "cyan": (44, 208, 218),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "pentagon")
PLACES = ("left", "right", "top", "bottom", "center")
RELATIONS = ("left of", "right of", "above", "below")
KINDS = ("single", "pair", "multi")
IMAGE_SIDES = (96, 128, 160, 224)
PARTIAL_SHARE = 0.06  # of captions 2..5; tuned so the ceiling is near the held-out set's
RENDERERS = ("own", "generator")  # who draws the images (make_record)
_FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_BG_GAP = 100.0  # minimum RGB distance between an object's colour anchor and the background

# centre boxes (x0, x1, y0, y1) of a single object's place, image-side units
_PLACE_BOX = {
    "left": (0.12, 0.27, 0.38, 0.62),
    "right": (0.73, 0.88, 0.38, 0.62),
    "top": (0.38, 0.62, 0.12, 0.27),
    "bottom": (0.38, 0.62, 0.73, 0.88),
    "center": (0.44, 0.56, 0.44, 0.56),
}


# ----------------------------------------------------------------------------- sampling
def _radius(size: str, rng: random.Random) -> float:
    return rng.uniform(0.15, 0.21) if size == "large" else rng.uniform(0.065, 0.095)


def _obj(
    colour: str, shape: str, size: str, x: float, y: float, r: float, rng: random.Random
) -> dict[str, Any]:
    return {
        "colour": colour,
        "shape": shape,
        "size": size,
        "x": x,
        "y": y,
        "r": r,
        "rot": rng.uniform(-10, 10),
    }


def _clamp(v: float, r: float) -> float:
    return min(max(v, r + 0.025), 1.0 - r - 0.025)


def _colours_for(bg_rgb: Sequence[int], bg_name: str) -> list[str]:
    return [c for c, rgb in COLOURS.items() if c != bg_name and math.dist(rgb, bg_rgb) >= _BG_GAP]


def _pair_positions(
    rel: str, ra: float, rb: float, rng: random.Random
) -> tuple[float, float, float, float]:
    """Centres of A and B with ``A rel B``: >= 0.4 apart along the axis, <= 0.07 across it."""
    a_first = rel in ("left of", "above")
    r1, r2 = (ra, rb) if a_first else (rb, ra)
    for _ in range(5000):
        p1 = rng.uniform(r1 + 0.03, 1 - r1 - 0.03)
        p2 = rng.uniform(r2 + 0.03, 1 - r2 - 0.03)
        if p2 - p1 < 0.4:
            continue
        a_along, b_along = (p1, p2) if a_first else (p2, p1)
        mid = rng.uniform(max(ra, rb) + 0.06, 1 - max(ra, rb) - 0.06)
        off = rng.uniform(-0.07, 0.07)
        a_across, b_across = _clamp(mid + off / 2, ra), _clamp(mid - off / 2, rb)
        if rel in ("left of", "right of"):
            return a_along, a_across, b_along, b_across
        return a_across, a_along, b_across, b_along
    raise RuntimeError("no pair layout found")  # pragma: no cover - the ranges always admit one


def sample_scene(rng: random.Random, kind: str) -> dict[str, Any]:
    """A scene record (``lexlens.data.scenes`` schema) of ``kind``, sampled by this script's rules."""
    bg_name = rng.choice(list(COLOURS))
    base = np.array(COLOURS[bg_name], dtype=float)
    mix = rng.uniform(0.0, 0.2)
    bg = (
        base * (1 - mix)
        + np.array([128.0, 128.0, 128.0]) * mix
        + np.array([rng.uniform(-10, 10) for _ in range(3)])
    )
    bg_rgb = [int(v) for v in np.clip(bg, 0, 255).round()]
    colours = _colours_for(bg_rgb, bg_name)
    scene: dict[str, Any] = {
        "kind": kind,
        "background": bg_name,
        "bg_rgb": bg_rgb,
        "place": None,
        "relation": None,
        "count": 1,
        "objects": [],
    }
    if kind == "single":
        place, size = rng.choice(PLACES), rng.choice(("small", "large"))
        r = _radius(size, rng)
        x0, x1, y0, y1 = _PLACE_BOX[place]
        x, y = _clamp(rng.uniform(x0, x1), r), _clamp(rng.uniform(y0, y1), r)
        scene["place"] = place
        scene["objects"] = [_obj(rng.choice(colours), rng.choice(SHAPES), size, x, y, r, rng)]
    elif kind == "pair":
        while True:
            a = (rng.choice(colours), rng.choice(SHAPES))
            b = (rng.choice(colours), rng.choice(SHAPES))
            if a != b:
                break
        sa, sb = rng.choice(("small", "large")), rng.choice(("small", "large"))
        ra, rb = _radius(sa, rng), _radius(sb, rng)
        rel = rng.choice(RELATIONS)
        ax, ay, bx, by = _pair_positions(rel, ra, rb, rng)
        scene["relation"], scene["count"] = rel, 2
        scene["objects"] = [_obj(*a, sa, ax, ay, ra, rng), _obj(*b, sb, bx, by, rb, rng)]
    else:
        count, colour, shape = rng.choice((2, 3)), rng.choice(colours), rng.choice(SHAPES)
        objs: list[dict[str, Any]] = []
        while len(objs) < count:
            r = _radius("small", rng)
            x, y = rng.uniform(r + 0.04, 1 - r - 0.04), rng.uniform(r + 0.04, 1 - r - 0.04)
            if all(math.dist((x, y), (o["x"], o["y"])) > r + o["r"] + 0.06 for o in objs):
                objs.append(_obj(colour, shape, "small", x, y, r, rng))
        scene["count"], scene["objects"] = count, objs
    return scene


# ----------------------------------------------------------------------------- rendering
def _regular(n: int, start_deg: float, scale: float = 1.0) -> list[tuple[float, float]]:
    return [
        (
            scale * math.cos(math.radians(start_deg + 360.0 * k / n)),
            scale * math.sin(math.radians(start_deg + 360.0 * k / n)),
        )
        for k in range(n)
    ]


def _outline(shape: str) -> list[tuple[float, float]]:
    """Vertices of a shape of nominal radius 1 (y grows downwards); not used for circles."""
    if shape == "square":
        return [(-0.84, -0.84), (0.84, -0.84), (0.84, 0.84), (-0.84, 0.84)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)]
    if shape == "triangle":
        return [(x, y + 0.12) for x, y in _regular(3, -90.0, 1.08)]
    if shape == "pentagon":
        return _regular(5, -90.0)
    if shape == "hexagon":
        return _regular(6, 0.0, 0.98)
    if shape == "star":
        outer, inner = _regular(5, -90.0), _regular(5, -54.0, 0.43)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "cross":
        w = 0.32
        return [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    raise ValueError(shape)


def _signed_distance(
    shape: str, px: np.ndarray, py: np.ndarray, cx: float, cy: float, r: float, rot: float
) -> np.ndarray:
    """Signed distance (pixels; < 0 inside) of points to the shape: exact for polygons."""
    if shape == "circle":
        return np.hypot(px - cx, py - cy) - 0.95 * r
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    verts = [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in _outline(shape)]
    dist = np.full(px.shape, np.inf)
    inside = np.zeros(px.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(verts, verts[1:] + verts[:1], strict=True):
        ex, ey = x2 - x1, y2 - y1
        t = np.clip(((px - x1) * ex + (py - y1) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(px - x1 - t * ex, py - y1 - t * ey))
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (py - y1) * ex / (ey if ey != 0 else 1e-12)
        inside ^= crosses & (px < x_at)
    return np.where(inside, -dist, dist)


def _background(side: int, rgb: Sequence[int], rng: random.Random) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    kind = rng.choice(("solid", "linear", "radial", "stripes", "checker", "noise", "noise"))
    amp = rng.uniform(8, 26)
    if kind == "solid":
        field_ = np.zeros_like(xx)
    elif kind == "linear":
        a = rng.uniform(0, 2 * math.pi)
        field_ = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a)
    elif kind == "radial":
        field_ = 0.5 - np.hypot(xx - rng.uniform(0.3, 0.7), yy - rng.uniform(0.3, 0.7))
    elif kind == "stripes":
        a, f = rng.uniform(0, math.pi), rng.uniform(6, 18)
        field_ = 0.25 * np.sin(2 * math.pi * f * (xx * math.cos(a) + yy * math.sin(a)))
    elif kind == "checker":
        n = rng.choice((4, 6, 8, 12))
        field_ = 0.2 * (((xx * n).astype(int) + (yy * n).astype(int)) % 2 - 0.5)
    else:  # value noise: a coarse random grid upsampled bilinearly
        g = rng.choice((4, 6, 9))
        grid = np.array(
            [[rng.uniform(-0.5, 0.5) for _ in range(g + 1)] for _ in range(g + 1)], dtype=np.float32
        )
        fx, fy = xx * g, yy * g
        ix, iy = np.minimum(fx.astype(int), g - 1), np.minimum(fy.astype(int), g - 1)
        tx, ty = fx - ix, fy - iy
        field_ = (
            grid[iy, ix] * (1 - tx) * (1 - ty)
            + grid[iy, ix + 1] * tx * (1 - ty)
            + grid[iy + 1, ix] * (1 - tx) * ty
            + grid[iy + 1, ix + 1] * tx * ty
        )
    tint = np.array([rng.uniform(0.7, 1.3) for _ in range(3)], dtype=np.float32)
    img = np.asarray(rgb, dtype=np.float32)[None, None, :] + amp * field_[..., None] * tint
    return img


def render(scene: dict[str, Any], side: int, rng: random.Random) -> Any:
    """A PIL image ``side`` px square showing ``scene`` (this script's own drawing rules)."""
    from PIL import Image, ImageFilter

    img = _background(side, scene["bg_rgb"], rng)
    edge = rng.choice(("smooth", "smooth", "aliased", "super"))
    soft = rng.uniform(0.6, 1.6)
    for o in scene["objects"]:
        cx, cy, r = o["x"] * side, o["y"] * side, o["r"] * side
        x0, x1 = max(int(cx - 1.2 * r) - 2, 0), min(int(cx + 1.2 * r) + 3, side)
        y0, y1 = max(int(cy - 1.2 * r) - 2, 0), min(int(cy + 1.2 * r) + 3, side)
        py, px = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
        if edge == "super":
            offs = [(-1 / 3, -1 / 3), (-1 / 3, 1 / 3), (1 / 3, -1 / 3), (1 / 3, 1 / 3), (0.0, 0.0)]
            alpha = np.mean(
                [
                    _signed_distance(o["shape"], px + dx, py + dy, cx, cy, r, o["rot"]) < 0
                    for dx, dy in offs
                ],
                axis=0,
            )
        else:
            d = _signed_distance(o["shape"], px, py, cx, cy, r, o["rot"])
            alpha = (
                (d < 0).astype(np.float64)
                if edge == "aliased"
                else np.clip(0.5 - d / soft, 0.0, 1.0)
            )
        rgb = np.array(COLOURS[o["colour"]], dtype=np.float64) * rng.uniform(0.93, 1.05)
        rgb = rgb + np.array([rng.uniform(-10, 10) for _ in range(3)])
        shade = 1.0 + rng.uniform(0.0, 0.09) * ((py - cy) / max(r, 1.0)) * rng.choice((-1, 1))
        col = np.clip(rgb[None, None, :] * shade[..., None], 0, 255)
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = patch * (1 - alpha[..., None]) + col * alpha[..., None]
    grain = rng.choice((0.0, 0.0, 2.5, 5.0))
    if grain:
        nrng = np.random.default_rng(rng.getrandbits(32))
        img = img + nrng.normal(0.0, grain, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")
    if rng.random() < 0.5:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 0.011 * side)))
    if rng.random() < 0.3:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=rng.randint(60, 92))
        pil = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return pil


# ----------------------------------------------------------------------------- meanings
def full_meaning(scene: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Everything about the scene; a pair is told from either object (random)."""
    objs = [{k: o[k] for k in ("colour", "shape", "size")} for o in scene["objects"]]
    if scene["kind"] == "single":
        return {"objects": objs, "place": scene["place"]}
    if scene["kind"] == "multi":
        return {"objects": objs[:1], "count": scene["count"]}
    if rng.random() < 0.5:
        return {"objects": objs, "relation": scene["relation"]}
    return {"objects": objs[::-1], "relation": _FLIP[scene["relation"]]}


def partial_meaning(meaning: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Leave out one detail: the size (of one or both objects) or, for one object, its place."""
    m = json.loads(json.dumps(meaning))
    if "place" in m and rng.random() < 0.25:
        del m["place"]
        return m
    targets = (
        m["objects"] if len(m["objects"]) == 1 or rng.random() < 0.5 else [rng.choice(m["objects"])]
    )
    for d in targets:
        d.pop("size", None)
    return m


def meaning_kind(meaning: dict[str, Any]) -> str:
    """The scene kind a meaning speaks of: pair (relation), multi (count), single (otherwise)."""
    if "relation" in meaning:
        return "pair"
    if "count" in meaning:
        return "multi"
    return "single"


# ----------------------------------------------------------------------------- wording
_SIZE = {"large": ("large", "big"), "small": ("small", "little")}
_COLOUR_WORD = {"gray": ("gray", "grey")}
_PLACE_AFTER = {
    "left": (
        "on the left",
        "on the left side",
        "at the left",
        "on the left-hand side",
        "in the left half of the image",
    ),
    "right": (
        "on the right",
        "on the right side",
        "at the right",
        "on the right-hand side",
        "in the right half of the image",
    ),
    "top": (
        "at the top",
        "near the top",
        "in the upper part",
        "along the top edge",
        "in the top half of the image",
    ),
    "bottom": (
        "at the bottom",
        "near the bottom",
        "in the lower part",
        "along the bottom edge",
        "in the bottom half of the image",
    ),
    "center": (
        "in the middle",
        "in the center",
        "in the centre",
        "at the center",
        "in the middle of the image",
    ),
}
_REL_INFIX = {
    "left of": ("to the left of", "left of", "on the left of", "placed left of"),
    "right of": ("to the right of", "right of", "on the right of", "placed right of"),
    "above": ("above", "on top of", "over", "higher up than"),
    "below": ("below", "beneath", "under", "underneath"),
}
_REL_PRONOUN = {  # "B with A <this>": A rel B
    "left of": ("to its left", "on its left", "left of it", "to the left of it"),
    "right of": ("to its right", "on its right", "right of it", "to the right of it"),
    "above": ("above it", "over it", "on top of it", "higher up"),
    "below": ("below it", "beneath it", "under it", "underneath it"),
}
_COUNT = {1: ("one", "1", "a single"), 2: ("two", "2", "a pair of"), 3: ("three", "3", "three")}
_COUNT_PLAIN = {1: ("one", "1"), 2: ("two", "2"), 3: ("three", "3")}
_PREFIX = (
    "",
    "",
    "",
    "a drawing of ",
    "an image with ",
    "here we have ",
    "this one shows ",
    "shown: ",
    "depicted: ",
)
_SUFFIX = ("", "", "", "", " here", " in this scene", " in the drawing", " on the canvas")
_SINGLE_FORMS = (
    "np-place",
    "there-np-place",
    "place-front",
    "np-place-comma",
    "see-np-place",
    "np-sits-place",
)
_PAIR_FORMS = ("a-rel-b", "there-a-rel-b", "rel-front", "b-with-a", "a-is-rel-b", "see-a-rel-b")
_MULTI_FORMS = (
    "n-np",
    "there-are-n",
    "n-identical",
    "np-n-of-them",
    "exactly-n-shown",
    "count-colon",
)


@dataclass
class Wording:
    """Every wording choice of one caption, drawn once so a swapped meaning reads the same."""

    seed: int
    form_index: int
    capital: bool
    period: bool
    prefix: str
    suffix: str
    picks: dict[str, int] = field(default_factory=dict)

    @classmethod
    def draw(cls, rng: random.Random) -> Wording:
        """A random wording."""
        return cls(
            seed=rng.getrandbits(30),
            form_index=rng.randrange(6),
            capital=rng.random() < 0.55,
            period=rng.random() < 0.45,
            prefix=rng.choice(_PREFIX),
            suffix=rng.choice(_SUFFIX),
        )

    def pick(self, key: str, options: Sequence[str]) -> str:
        """The same option for the same key in every caption written with this wording."""
        if key not in self.picks:
            self.picks[key] = random.Random(f"{self.seed}:{key}").randrange(1 << 20)
        return options[self.picks[key] % len(options)]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("ss", "x", "ch", "sh")) or shape == "cross" else "s")


def _adjectives(d: dict[str, Any], w: Wording, slot: str) -> str:
    words = []
    if "size" in d:
        words.append(w.pick(f"size{slot}{d['size']}", _SIZE[d["size"]]))
    if "colour" in d:
        words.append(w.pick(f"col{slot}", _COLOUR_WORD.get(d["colour"], (d["colour"],))))
    return " ".join(words)


def _np(
    d: dict[str, Any], w: Wording, slot: str, article: bool = True, plural: bool = False
) -> str:
    adj = _adjectives(d, w, slot)
    noun = _plural(d["shape"]) if plural else d["shape"]
    phrase = f"{adj} {noun}".strip()
    return _article(phrase) if article and not plural else phrase


def _finish(text: str, w: Wording, allow_affixes: bool = True) -> str:
    if allow_affixes:
        text = w.prefix + text + w.suffix
    text = re.sub(r"\s+", " ", text).strip()
    if w.capital:
        text = text[0].upper() + text[1:]
    return text + ("." if w.period else "")


# form -> (template, whether the wording's filler prefix and suffix may wrap it)
_SINGLE_TEXT = {
    "np-place": ("{np} {place}", True),
    "there-np-place": ("there is {np} {place}", False),
    "place-front": ("{place}, {np}", False),
    "np-place-comma": ("{np}, {place}", True),
    "see-np-place": ("you can see {np} {place}", False),
    "np-sits-place": ("{np} sits {place}", True),
}
_PAIR_TEXT = {
    "a-rel-b": ("{a} {rel} {b}", True),
    "there-a-rel-b": ("there is {a} {rel} {b}", False),
    "rel-front": ("{rel} {b} there is {a}", False),
    "b-with-a": ("{b} with {a} {pron}", True),
    "a-is-rel-b": ("{a} is {rel} {b}", False),
    "see-a-rel-b": ("we see {a} {rel} {b}", False),
}
_MULTI_TEXT = {
    "n-np": ("{word} {np}", True),
    "there-are-n": ("there {be} {word} {np}", False),
    "n-identical": ("{plain} {identical}{np}", True),
    "np-n-of-them": ("{np}, {tail}", True),
    "exactly-n-shown": ("exactly {plain} {np} {be} shown", False),
    "count-colon": ("{np} (count: {plain})", False),
}


def _fill(
    table: dict[str, tuple[str, bool]], form: str, w: Wording, **fields: str
) -> tuple[str, str]:
    template, affixes = table[form]
    return form, _finish(template.format(**fields), w, affixes)


def _single(m: dict[str, Any], w: Wording) -> tuple[str, str]:
    form = _SINGLE_FORMS[w.form_index]
    place = w.pick("place", _PLACE_AFTER[m["place"]]) if "place" in m else ""
    if not place and form in ("place-front", "np-place-comma", "np-sits-place"):
        form = "np-place"
    return _fill(_SINGLE_TEXT, form, w, np=_np(m["objects"][0], w, "0"), place=place)


def _pair(m: dict[str, Any], w: Wording) -> tuple[str, str]:
    (a, b), rel = m["objects"], m["relation"]
    return _fill(
        _PAIR_TEXT,
        _PAIR_FORMS[w.form_index],
        w,
        a=_np(a, w, "0"),
        b=_np(b, w, "1"),
        rel=w.pick(f"rel{rel}", _REL_INFIX[rel]),
        pron=w.pick(f"pron{rel}", _REL_PRONOUN[rel]),
    )


def _multi(m: dict[str, Any], w: Wording) -> tuple[str, str]:
    d, n = m["objects"][0], m["count"]
    one = n == 1
    plain = w.pick(f"plain{n}", _COUNT_PLAIN[n])
    return _fill(
        _MULTI_TEXT,
        _MULTI_FORMS[w.form_index],
        w,
        np=_np(d, w, "0", article=False, plural=not one),
        word=w.pick(f"count{n}", _COUNT[n]),
        plain=plain,
        be="is" if one else "are",
        identical="" if one else "identical ",
        tail="just one" if one else f"{plain} of them",
    )


def caption(meaning: dict[str, Any], w: Wording) -> tuple[str, str]:
    """``(form, text)``: the sentence saying ``meaning`` with ``w``'s wording."""
    kind = meaning_kind(meaning)
    return (_pair if kind == "pair" else _multi if kind == "multi" else _single)(meaning, w)


# ----------------------------------------------------------------------------- negatives
def swap_type(positive: dict[str, Any], negative: dict[str, Any]) -> str:
    """Which attribute a one-attribute swap changed: colour, shape, size, relation, count, place."""
    if positive.get("relation") != negative.get("relation"):
        return "relation"
    if positive.get("count") != negative.get("count"):
        return "count"
    if positive.get("place") != negative.get("place"):
        return "place"
    for p, n in zip(positive.get("objects", []), negative.get("objects", []), strict=False):
        for k in ("colour", "shape", "size"):
            if p.get(k) != n.get(k):
                return k
    return "other"


def swaps(
    meaning: dict[str, Any],
    scene: dict[str, Any],
    rng: random.Random,
    fits: Callable[[dict, dict], bool],
) -> list[dict[str, Any]]:
    """One-attribute swaps of ``meaning`` false of ``scene``: colour, shape, then relation or count."""
    out = []
    for attr, pool in (("colour", list(COLOURS)), ("shape", list(SHAPES))):
        slots = list(range(len(meaning["objects"])))
        rng.shuffle(slots)
        done = False
        for i in slots:
            values = [v for v in pool if v != meaning["objects"][i][attr]]
            rng.shuffle(values)
            for v in values:
                neg = json.loads(json.dumps(meaning))
                neg["objects"][i][attr] = v
                if not fits(neg, scene):
                    out.append(neg)
                    done = True
                    break
            if done:
                break
    if "relation" in meaning:
        neg = {**meaning, "relation": _FLIP[meaning["relation"]]}
        if not fits(neg, scene):
            out.append(neg)
    if "count" in meaning:
        for c in rng.sample([c for c in (1, 2, 3) if c != meaning["count"]], 2):
            neg = {**meaning, "count": c}
            if not fits(neg, scene):
                out.append(neg)
                break
    return out


# ----------------------------------------------------------------------------- records
def _fits() -> Callable[[dict, dict], bool]:
    from lexlens.data.scenes import caption_fits

    return caption_fits


def make_record(
    seed: int,
    index: int,
    kind: str,
    partial_share: float = PARTIAL_SHARE,
    sides: Sequence[int] = IMAGE_SIDES,
    renderer: str = "own",
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(image, captions record, fg record)`` of image ``index``; deterministic in (seed, index).

    ``renderer``: ``"own"`` (this script's :func:`render`) or ``"generator"`` (lexlens's
    ``scenes.render_scene``, fed the same random numbers: the same scenes and captions, drawn
    the way the model was trained, to measure what the drawing alone costs a model)."""
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; expected one of {RENDERERS}")
    scene, rec, fg = describe(seed, index, kind, partial_share)
    draw = random.Random(f"heldout-like:render:{seed}:{index}")
    if renderer == "generator":
        from lexlens.data.scenes import render_scene as draw_scene
    else:
        draw_scene = render
    return draw_scene(scene, draw.choice(list(sides)), draw), rec, fg


def describe(
    seed: int, index: int, kind: str, partial_share: float = PARTIAL_SHARE
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(scene, captions record, fg record)`` of image ``index`` without drawing it."""
    fits = _fits()
    scene = sample_scene(random.Random(f"heldout-like:scene:{seed}:{index}"), kind)
    rng = random.Random(f"heldout-like:captions:{seed}:{index}")
    name = f"images/{index:06d}.png"
    caps: list[str] = []
    metas: list[dict[str, Any]] = []
    forms: list[str] = []
    words: list[Wording] = []
    for j in range(5):
        for _ in range(8):  # avoid repeating a caption of the same image
            m = full_meaning(scene, rng)
            if j > 0 and rng.random() < partial_share:
                m = partial_meaning(m, rng)
            w = Wording.draw(rng)
            form, text = caption(m, w)
            if text not in caps:
                break
        if not fits(m, scene):  # pragma: no cover - a bug in this script
            raise AssertionError(f"caption {text!r} does not fit its scene")
        caps.append(text)
        metas.append(m)
        forms.append(form)
        words.append(w)
    negs = swaps(metas[0], scene, rng, fits)
    fg = {
        "image": name,
        "positive": caps[0],
        "negatives": [caption(n, words[0])[1] for n in negs],
        "negatives_meta": negs,
        "swaps": [swap_type(metas[0], n) for n in negs],
    }
    rec = {
        "image": name,
        "captions": caps,
        "scene": scene,
        "caption_meta": metas,
        "caption_forms": forms,
    }
    return scene, rec, fg


def generate(
    out: Path,
    n: int,
    seed: int,
    partial_share: float = PARTIAL_SHARE,
    sides: Sequence[int] = IMAGE_SIDES,
    progress: bool = True,
    renderer: str = "own",
) -> dict[str, Any]:
    """Write ``n`` held-out-like scenes to ``out``; kinds exactly balanced (shuffled); a summary."""
    from lexlens.progress import progress_bar

    kinds = [KINDS[i % 3] for i in range(n)]
    random.Random(f"heldout-like-kinds:{seed}").shuffle(kinds)
    (out / "images").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with (
        open(out / "captions.jsonl", "w") as fc,
        open(out / "fg.jsonl", "w") as ff,
        progress_bar(total=n, desc="heldout-like", unit="image", enabled=progress) as bar,
    ):
        for i, kind in enumerate(kinds):
            image, rec, fg = make_record(seed, i, kind, partial_share, sides, renderer)
            image.save(out / rec["image"])
            fc.write(json.dumps(rec) + "\n")
            ff.write(json.dumps(fg) + "\n")
            bar.update(1)
    info = {
        "name": "heldout-like",
        "n": n,
        "seed": seed,
        "split": "test",
        "generator": "benchmarks/heldout_like.py",
        "partial_share": partial_share,
        "sizes": list(sides),
        "renderer": renderer,
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return {**info, "kinds": dict(Counter(kinds)), "seconds": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------- breakdown
def mismatch(meaning: dict[str, Any], scene: dict[str, Any]) -> list[str]:
    """What about ``scene`` a caption ``meaning`` gets wrong (empty when it fits; ``kind`` when
    the caption speaks of another kind of scene); the alignment with the fewest errors."""
    if _fits()(meaning, scene):
        return []
    kind = meaning_kind(meaning)
    if kind != scene["kind"] and not (kind == "single" and "place" not in meaning):
        return ["kind"]
    objs, descs = scene["objects"], meaning["objects"]

    def diff(d: dict[str, Any], o: dict[str, Any]) -> set[str]:
        return {k for k in ("colour", "shape", "size") if k in d and d[k] != o[k]}

    if kind == "pair":
        direct = diff(descs[0], objs[0]) | diff(descs[1], objs[1])
        if meaning["relation"] != scene["relation"]:
            direct.add("relation")
        inverse = diff(descs[0], objs[1]) | diff(descs[1], objs[0])
        if meaning["relation"] != _FLIP[scene["relation"]]:
            inverse.add("relation")
        return sorted(min(direct, inverse, key=len))
    if kind == "multi":
        errs = diff(descs[0], objs[0])
        if "count" in meaning and scene["count"] != meaning["count"] and not errs:
            errs.add("count")
        return sorted(errs or {"count"})
    best = min((diff(descs[0], o) for o in objs), key=len)
    if "place" in meaning and scene.get("place") != meaning["place"]:
        best = best | {"place"}
    return sorted(best or {"kind"})


_WORDING_FEATURES = {  # regexes on the lower-cased caption, for both data sets
    "grey": r"\bgrey\b",
    "gray": r"\bgray\b",
    "big": r"\bbig\b",
    "little": r"\blittle\b",
    "tiny": r"\btiny\b",
    "middle": r"\bmiddle\b",
    "centre/center": r"\bcent(er|re)\b",
    "numeral 2/3": r"\b[23]\b",
    "a pair of": r"\bpair of\b",
    "on top of / over / higher": r"\b(on top of|over|higher)\b",
    "on top of (not 'of it')": r"\bon top of (?!it\b)",
    "higher up than": r"\bhigher up than\b",
    "placed left/right of": r"\bplaced (left|right) of\b",
    "beneath / under(neath)": r"\b(beneath|under|underneath)\b",
    "above": r"\babove\b",
    "below": r"\bbelow\b",
    "to its / of it": r"\b(its|of it|above it|below it|under it|beneath it|over it)\b",
    "fronted relation": r"^(to the (left|right) of|(on the (left|right) of)|left of|right of|above|below|beneath|under|over|on top of|higher up than|placed)",
    "fronted place": r"^(on the|at the|near the|in the|along the)",
    "filler prefix": r"^(a drawing of|an image with|here we have|this one shows|shown:|depicted:|you can see|we see)",
}


def _encode(model: Any, folder: Path) -> dict[str, Any]:
    from lexlens.eval.protocol import load_eval_set

    es = load_eval_set(str(folder))
    texts = [c for cs in es.captions for c in cs]
    t2i = np.array([i for i, cs in enumerate(es.captions) for _ in cs])
    img = model.encode_images(es.images, batch_size=64)
    txt = model.encode_texts(texts, batch_size=256)
    fg_rows = [
        json.loads(line) for line in (folder / "fg.jsonl").read_text().splitlines() if line.strip()
    ]
    fg_txt = model.encode_texts(
        [r["positive"] for r in fg_rows] + [n for r in fg_rows for n in r["negatives"]]
    )
    return {
        "es": es,
        "texts": texts,
        "t2i": t2i,
        "img": img,
        "txt": txt,
        "fg": fg_rows,
        "fg_txt": fg_txt,
    }


def _pct(x: Sequence[float] | np.ndarray) -> float | None:
    return None if len(x) == 0 else round(100.0 * float(np.mean(x)), 1)


def breakdown_of(enc: dict[str, Any]) -> dict[str, Any]:
    """Failure analysis of one encoded data set (see the module docstring)."""
    from lexlens.eval.protocol import fits_matrix

    es, texts, t2i = enc["es"], enc["texts"], enc["t2i"]
    scenes = [r["scene"] for r in es.records]
    meta = [m for ms in es.caption_meta for m in ms]
    fits = fits_matrix(meta, es.records, _fits())
    fits[np.arange(len(t2i)), t2i] = True
    sim = enc["txt"] @ enc["img"].T
    n_img = sim.shape[1]
    # t->i rank of the own image with the tie rule (-score, id)
    own = sim[np.arange(len(t2i)), t2i]
    ids = np.arange(n_img)
    rank = ((sim > own[:, None]) | ((sim == own[:, None]) & (ids[None, :] < t2i[:, None]))).sum(1)
    top = np.lexsort((np.broadcast_to(ids, sim.shape), -sim), axis=1)[:, 0]
    top_fits = fits[np.arange(len(t2i)), top]
    m_fit = fits.sum(1)
    ceil_r1 = 1.0 / m_fit
    ceil_r5 = np.minimum(1.0, 5.0 / m_fit)
    # i->t: rank of the first own caption
    sim_i = sim.T
    cap_img = t2i
    i2t_r1 = []
    i2t_fit1 = []
    for i in range(n_img):
        best = int(np.lexsort((np.arange(len(t2i)), -sim_i[i]))[0])
        i2t_r1.append(cap_img[best] == i)
        i2t_fit1.append(bool(fits[best, i]))
    i2t_r1, i2t_fit1 = np.array(i2t_r1), np.array(i2t_fit1)
    kinds = np.array([s["kind"] for s in scenes])
    cap_kind = kinds[t2i]
    partial = np.array([m != _full_of(m, scenes[t2i[j]]) for j, m in enumerate(meta)])
    out: dict[str, Any] = {"n_images": n_img, "n_captions": len(texts)}

    def block(mask: np.ndarray) -> dict[str, Any]:
        return {
            "n": int(mask.sum()),
            "t2i_R@1": _pct((rank < 1)[mask]),
            "t2i_R@5": _pct((rank < 5)[mask]),
            "ceiling_R@1": _pct(ceil_r1[mask]),
            "ceiling_R@5": _pct(ceil_r5[mask]),
            "top1_fits": _pct(top_fits[mask]),
        }

    out["t2i_by_kind"] = {k: block(cap_kind == k) for k in KINDS}
    out["t2i_by_caption"] = {"complete": block(~partial), "partial": block(partial)}
    out["i2t_by_kind"] = {
        k: {
            "n": int((kinds == k).sum()),
            "R@1": _pct(i2t_r1[kinds == k]),
            "top1_caption_fits": _pct(i2t_fit1[kinds == k]),
        }
        for k in KINDS
    }
    feats: dict[str, Any] = {}
    low = [t.lower() for t in texts]
    for name, rx in _WORDING_FEATURES.items():
        mask = np.array([re.search(rx, t) is not None for t in low])
        if mask.sum() >= 20:
            feats[name] = block(mask)
    out["t2i_by_wording"] = feats
    forms = [f for r in es.records for f in r.get("caption_forms", [])]
    if len(forms) == len(texts):
        fa = np.array(forms)
        out["t2i_by_form"] = {f: block(fa == f) for f in sorted(set(forms))}
    errs: dict[str, Counter] = defaultdict(Counter)
    for j in np.nonzero(~top_fits)[0]:
        for e in mismatch(meta[j], scenes[top[j]]):
            errs[cap_kind[j]][e] += 1
    out["wrong_top1_attribute"] = {
        k: {
            e: round(100.0 * c / max(1, int((cap_kind == k).sum())), 1)
            for e, c in errs[k].most_common()
        }
        for k in KINDS
    }
    # fine-grained per swap type
    rows, ft = enc["fg"], enc["fg_txt"]
    if len(rows) != len(es.fg):
        raise ValueError("fg.jsonl names images that are not in captions.jsonl")
    pos_vec, neg_vec = ft[: len(rows)], ft[len(rows) :]
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_type_kind: dict[str, list[bool]] = defaultdict(list)
    wins = []
    k = 0
    for r_i, (r, item) in enumerate(zip(rows, es.fg, strict=True)):
        i = item.image
        ps = float(pos_vec[r_i] @ enc["img"][i])
        pm = es.caption_meta[i][0]
        all_win = True
        for n_j, nm in enumerate(r.get("negatives_meta") or [None] * len(r["negatives"])):
            won = ps > float(neg_vec[k + n_j] @ enc["img"][i])
            all_win &= won
            t = swap_type(pm, nm) if nm is not None else "unknown"
            by_type[t].append(won)
            by_type_kind[f"{scenes[i]['kind']}:{t}"].append(won)
        k += len(r["negatives"])
        wins.append(all_win)
    out["fg_acc"] = _pct(wins)
    out["fg_pairwise_by_swap"] = {
        t: {"n": len(v), "acc": _pct(v)} for t, v in sorted(by_type.items())
    }
    out["fg_pairwise_by_kind_swap"] = {
        t: {"n": len(v), "acc": _pct(v)} for t, v in sorted(by_type_kind.items())
    }
    worst = np.argsort(rank)[::-1][:15]
    out["worst_captions"] = [
        {
            "caption": texts[j],
            "rank": int(rank[j]) + 1,
            "top1_wrong": mismatch(meta[j], scenes[top[j]]),
        }
        for j in worst
    ]
    return out


def _full_of(m: dict[str, Any], scene: dict[str, Any]) -> dict[str, Any]:
    """``m`` with nothing left out (the same orientation), to tell partial captions apart."""
    if "relation" in m:
        objs = scene["objects"] if m["relation"] == scene["relation"] else scene["objects"][::-1]
        return {
            "objects": [{k: o[k] for k in ("colour", "shape", "size")} for o in objs],
            "relation": m["relation"],
        }
    o = scene["objects"][0]
    d = {"objects": [{k: o[k] for k in ("colour", "shape", "size")}]}
    if scene["kind"] == "single":
        d["place"] = scene["place"]
    if scene["kind"] == "multi":
        d["count"] = scene["count"]
    return d


def breakdown(model_spec: str, folders: Sequence[Path]) -> dict[str, Any]:
    """Encode each folder with the model once and analyse its failures."""
    from lexlens.models.registry import load_encoder

    model = load_encoder(model_spec)
    return {"model": model_spec, "data": {str(f): breakdown_of(_encode(model, f)) for f in folders}}


def _markdown(res: dict[str, Any]) -> str:
    lines = [f"# Failure breakdown: {res['model']}", ""]
    names = list(res["data"])
    for section in ("t2i_by_kind", "t2i_by_caption", "t2i_by_wording", "t2i_by_form"):
        lines += [
            f"## {section}",
            "",
            "| group | "
            + " | ".join(
                f"{Path(n).name} n / R@1 / R@5 / ceil R@1 / ceil R@5 / top-1 fits" for n in names
            )
            + " |",
            "|---|" + "---|" * len(names),
        ]
        groups = sorted({g for n in names for g in res["data"][n].get(section, {})})
        for g in groups:
            cells = []
            for n in names:
                b = res["data"][n].get(section, {}).get(g)
                cells.append(
                    "-"
                    if b is None
                    else " / ".join(
                        str(b[k])
                        for k in (
                            "n",
                            "t2i_R@1",
                            "t2i_R@5",
                            "ceiling_R@1",
                            "ceiling_R@5",
                            "top1_fits",
                        )
                    )
                )
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
        lines.append("")
    for section in (
        "i2t_by_kind",
        "wrong_top1_attribute",
        "fg_pairwise_by_swap",
        "fg_pairwise_by_kind_swap",
    ):
        lines += [f"## {section}", ""]
        for n in names:
            lines.append(f"- {Path(n).name}: `{json.dumps(res['data'][n][section])}`")
        lines.append("")
    lines += ["## fine-grained accuracy", ""] + [
        f"- {Path(n).name}: {res['data'][n]['fg_acc']}" for n in names
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """Generate a held-out-like folder, or (``--breakdown MODEL``) analyse a model's failures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, help="folder to write the scenes to")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--partial-share", type=float, default=PARTIAL_SHARE)
    p.add_argument(
        "--sizes", default=",".join(map(str, IMAGE_SIDES)), help="image sides (px), comma-separated"
    )
    p.add_argument(
        "--renderer",
        choices=RENDERERS,
        default="own",
        help="draw with this script's renderer (default) or lexlens's generator's, same scenes",
    )
    p.add_argument(
        "--breakdown", metavar="MODEL", help="analyse MODEL's failures on every --data folder"
    )
    p.add_argument("--data", type=Path, action="append", default=[], help="folder for --breakdown")
    p.add_argument(
        "--json", dest="json_out", type=Path, help="write the summary / breakdown JSON here"
    )
    a = p.parse_args(argv)
    if a.breakdown:
        if not a.data:
            p.error("--breakdown needs at least one --data folder")
        res = breakdown(a.breakdown, a.data)
        if a.json_out:
            a.json_out.parent.mkdir(parents=True, exist_ok=True)
            a.json_out.write_text(json.dumps(res, indent=1) + "\n")
            a.json_out.with_suffix(".md").write_text(_markdown(res))
        print(_markdown(res))
        return 0
    if a.out is None:
        p.error("give OUT (or --breakdown MODEL --data DIR)")
    if a.n < 1:
        p.error("--n must be at least 1")
    sides = tuple(int(s) for s in a.sizes.split(","))
    summary = generate(a.out, a.n, a.seed, a.partial_share, sides, renderer=a.renderer)
    print(json.dumps(summary))
    if a.json_out:
        a.json_out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
