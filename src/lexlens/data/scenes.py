"""Synthetic "scenes": small pictures of coloured shapes described in English.

The generator covers the whole vocabulary of ``shared/scenes-vocabulary.md``:
12 colours, 8 shapes, two sizes, five places of a single object, four relations
between two objects, and counts one to three of identical small objects. Three scene
kinds are about equally common: ``single`` (one object), ``pair`` (two different
objects in a relation) and ``multi`` (two or three identical small objects).

Records
-------
A scene record (the ``scene`` key of a ``captions.jsonl`` line)::

    {"kind": "single" | "pair" | "multi",
     "background": "white" | ... (the colour name the background resembles),
     "objects": [{"colour": str, "shape": str, "size": "small" | "large",
                  "x": float, "y": float, "r": float, "rot": float}, ...],
     "place": str | None,      # single: left/right/top/bottom/center
     "relation": str | None}   # pair: objects[0] RELATION objects[1]

The structured meaning of a caption (``caption_meta``)::

    {"objects": [{"colour"?: str, "shape"?: str, "size"?: str}, ...],
     "place"?: str, "relation"?: str, "count"?: int}

:func:`caption_fits` decides exactly whether a meaning is true of a scene, which is
what a perfect reader knows; the evaluation uses it for the ceiling, and the
fine-grained negatives are checked with it to be false.

Rendering varies on purpose (positions, sizes, rotation, colour jitter, backgrounds,
gradients, noise, anti-aliasing, blur), and so do captions (templates, word order,
synonyms, fillers, partial descriptions), because held-out data is drawn and written
independently of this module.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "COLOURS",
    "SHAPES",
    "SIZES",
    "PLACES",
    "RELATIONS",
    "INVERSE_RELATION",
    "sample_scene",
    "render_scene",
    "write_captions",
    "caption_fits",
    "swap_negatives",
    "realise",
    "generate_scenes",
    "SceneItem",
    "make_item",
]

GENERATOR_VERSION = 1

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
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
KINDS = ("single", "pair", "multi")

# Backgrounds: (name of the colour it resembles, rgb). Objects never take that colour.
_BACKGROUNDS: list[tuple[str, tuple[int, int, int]]] = [
    ("white", (245, 245, 242)),
    ("white", (232, 234, 238)),
    ("gray", (120, 120, 124)),
    ("gray", (170, 170, 168)),
    ("black", (18, 18, 22)),
    ("black", (40, 38, 44)),
    ("blue", (40, 60, 150)),
    ("green", (60, 120, 60)),
    ("yellow", (235, 225, 150)),
    ("brown", (110, 80, 55)),
]

# ----------------------------------------------------------------------------- sampling

_PLACE_BOX = {  # (x range, y range) of the object centre, in units of the image side
    "left": ((0.18, 0.30), (0.30, 0.70)),
    "right": ((0.70, 0.82), (0.30, 0.70)),
    "top": ((0.30, 0.70), (0.18, 0.30)),
    "bottom": ((0.30, 0.70), (0.70, 0.82)),
    "center": ((0.42, 0.58), (0.42, 0.58)),
}


def _radius(size: str, rng: random.Random, pair: bool = False) -> float:
    if size == "large":
        return rng.uniform(0.13, 0.17) if pair else rng.uniform(0.15, 0.19)
    return rng.uniform(0.07, 0.10)


def sample_scene(rng: random.Random, kind: str | None = None) -> dict[str, Any]:
    """Draw a scene record (see the module docstring) from ``rng``."""
    kind = kind or rng.choice(KINDS)
    bg_name, bg_rgb = rng.choice(_BACKGROUNDS)
    colours = [c for c in COLOURS if c != bg_name]

    def obj(colour: str, shape: str, size: str, x: float, y: float, r: float) -> dict[str, Any]:
        rot = 0.0 if shape == "circle" else rng.uniform(-15.0, 15.0)
        return {"colour": colour, "shape": shape, "size": size, "x": x, "y": y, "r": r, "rot": rot}

    scene: dict[str, Any] = {"kind": kind, "background": bg_name, "bg_rgb": list(bg_rgb)}
    if kind == "single":
        place = rng.choice(PLACES)
        size = rng.choice(SIZES)
        (x0, x1), (y0, y1) = _PLACE_BOX[place]
        r = _radius(size, rng)
        scene.update(place=place, relation=None)
        scene["objects"] = [
            obj(rng.choice(colours), rng.choice(SHAPES), size, rng.uniform(x0, x1), rng.uniform(y0, y1), r)
        ]
    elif kind == "pair":
        while True:
            a = (rng.choice(colours), rng.choice(SHAPES))
            b = (rng.choice(colours), rng.choice(SHAPES))
            if a != b:
                break
        rel = rng.choice(RELATIONS)
        sa, sb = rng.choice(SIZES), rng.choice(SIZES)
        ra, rb = _radius(sa, rng, True), _radius(sb, rng, True)
        near, far = rng.uniform(0.2, 0.32), rng.uniform(0.68, 0.8)
        other_a, other_b = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        first, second = (near, far) if rel in ("left of", "above") else (far, near)
        if rel in ("left of", "right of"):
            pa, pb = (first, other_a), (second, other_b)
        else:
            pa, pb = (other_a, first), (other_b, second)
        scene.update(place=None, relation=rel)
        scene["objects"] = [obj(*a, sa, *pa, ra), obj(*b, sb, *pb, rb)]
    else:
        count = rng.choice((2, 3))
        colour, shape = rng.choice(colours), rng.choice(SHAPES)
        pts: list[tuple[float, float]] = []
        while len(pts) < count:
            p = (rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85))
            if all(math.dist(p, q) > 0.26 for q in pts):
                pts.append(p)
        scene.update(place=None, relation=None, count=count)
        scene["objects"] = [obj(colour, shape, "small", x, y, _radius("small", rng)) for x, y in pts]
    return scene


# ----------------------------------------------------------------------------- rendering


def _polygon(shape: str, cx: float, cy: float, r: float, rot_deg: float) -> list[tuple[float, float]]:
    rot = math.radians(rot_deg)
    if shape == "square":
        base = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        base = [(x * 0.82, y * 0.82) for x, y in base]
    elif shape == "triangle":
        base = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (-90, 30, 150)]
        base = [(x, y + 0.15) for x, y in base]
    elif shape == "diamond":
        base = [(0, -1), (0.68, 0), (0, 1), (-0.68, 0)]
    elif shape in ("pentagon", "hexagon"):
        n = 5 if shape == "pentagon" else 6
        base = [(math.cos(2 * math.pi * i / n - math.pi / 2), math.sin(2 * math.pi * i / n - math.pi / 2)) for i in range(n)]
    elif shape == "star":
        base = []
        for i in range(10):
            rad = 1.0 if i % 2 == 0 else 0.42
            a = 2 * math.pi * i / 10 - math.pi / 2
            base.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape == "cross":
        t = 0.34
        base = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t)]
    else:
        raise ValueError(f"not a polygon shape: {shape}")
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in base]


def _jitter(rgb: Sequence[int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v + rng.randint(-amount, amount)))) for v in rgb)  # type: ignore[return-value]


def render_scene(scene: dict[str, Any], size: int, rng: random.Random) -> Any:
    """Draw ``scene`` as an RGB ``PIL.Image`` of ``size`` x ``size`` pixels."""
    from PIL import Image, ImageDraw, ImageFilter

    ss = rng.choice((1, 2, 3, 4))  # supersampling factor: 1 = aliased edges
    side = size * ss
    bg = _jitter(scene["bg_rgb"], rng, 10)
    img = Image.new("RGB", (side, side), bg)
    if rng.random() < 0.35:  # mild vertical gradient
        arr = np.asarray(img, dtype=np.float32)
        ramp = np.linspace(-1, 1, side, dtype=np.float32)[:, None, None] * rng.uniform(4, 18)
        img = Image.fromarray(np.clip(arr + ramp, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for o in scene["objects"]:
        fill = _jitter(COLOURS[o["colour"]], rng, 14)
        cx, cy, r = o["x"] * side, o["y"] * side, o["r"] * side * rng.uniform(0.95, 1.05)
        if o["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(o["shape"], cx, cy, r, o["rot"]), fill=fill)
    if ss > 1:
        img = img.resize((size, size), rng.choice((Image.BOX, Image.BILINEAR, Image.LANCZOS)))
    u = rng.random()
    if u < 0.15:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    elif u < 0.35:
        arr = np.asarray(img, dtype=np.float32)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 7), arr.shape)
        img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    return img


# ----------------------------------------------------------------------------- meaning


def _obj_fits(desc: dict[str, Any], o: dict[str, Any]) -> bool:
    return all(o[key] == desc[key] for key in ("colour", "shape", "size") if key in desc)


def caption_fits(meaning: dict[str, Any], scene: dict[str, Any]) -> bool:
    """True when the caption meaning (see module docstring) is true of the scene record.

    Rules: a relation needs a pair scene whose two objects match the two described ones
    in that relation (either order, relation inverted for the other order); a count needs
    exactly that many matching objects; a place needs a single-object scene at that place;
    otherwise every described object must match a distinct object of the scene.
    """
    objs = scene["objects"]
    descs = meaning.get("objects", [])
    if "relation" in meaning:
        if scene["kind"] != "pair" or len(descs) != 2:
            return False
        a, b = objs
        rel, srel = meaning["relation"], scene["relation"]
        direct = _obj_fits(descs[0], a) and _obj_fits(descs[1], b) and rel == srel
        flipped = _obj_fits(descs[0], b) and _obj_fits(descs[1], a) and rel == INVERSE_RELATION[srel]
        return direct or flipped
    if "place" in meaning:
        if scene["kind"] != "single" or meaning["place"] != scene["place"]:
            return False
    if "count" in meaning:
        return len(descs) == 1 and sum(_obj_fits(descs[0], o) for o in objs) == meaning["count"]
    # every description matched by a distinct object (tiny bipartite check)
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


# ----------------------------------------------------------------------------- captions

_SIZE_WORDS = {"large": ("large", "big", "large", "huge"), "small": ("small", "little", "tiny", "small")}
_COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"gray": ("gray", "grey")}
_PLACE_WORDS = {
    "left": ("on the left", "at the left", "on the left side", "in the left part of the image", "to the left"),
    "right": ("on the right", "at the right", "on the right side", "in the right part of the image", "to the right"),
    "top": ("at the top", "near the top", "in the upper part", "at the top of the image", "up top"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part", "at the bottom of the image", "down below"),
    "center": ("in the center", "in the centre", "in the middle", "at the center", "in the middle of the image"),
}
_REL_WORDS = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "underneath", "lower than"),
}
_COUNT_WORDS = {1: ("one", "a single", "1"), 2: ("two", "2", "a pair of"), 3: ("three", "3")}
_FILLERS = (
    "", "", "", "", "a picture of ", "an image of ", "a photo of ", "a drawing of ",
    "this image shows ", "we can see ", "there is ", "an illustration with ", "the picture contains ",
)


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("ss") else "s")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass
class _Style:
    """All random word choices of one caption, so a swapped caption can reuse them."""

    template: int
    picks: dict[str, int]
    filler: str
    capitalise: bool
    period: bool

    def pick(self, key: str, options: Sequence[str]) -> str:
        return options[self.picks.get(key, 0) % len(options)]


def _style(rng: random.Random, n_templates: int) -> _Style:
    return _Style(
        template=rng.randrange(n_templates),
        picks={k: rng.randrange(1000) for k in ("size0", "size1", "col0", "col1", "place", "rel", "count", "det")},
        filler=rng.choice(_FILLERS),
        capitalise=rng.random() < 0.4,
        period=rng.random() < 0.3,
    )


def _np(desc: dict[str, Any], st: _Style, slot: int, plural: bool = False) -> str:
    """Noun phrase without determiner: '[size] [colour] shape(s)'."""
    words = []
    if "size" in desc:
        words.append(st.pick(f"size{slot}", _SIZE_WORDS[desc["size"]]))
    if "colour" in desc:
        words.append(st.pick(f"col{slot}", _COLOUR_WORDS[desc["colour"]]))
    if "shape" in desc:
        words.append(_plural(desc["shape"]) if plural else desc["shape"])
    else:
        words.append("shapes" if plural else st.pick("det", ("shape", "object", "thing")))
    return " ".join(words)


def _det_np(desc: dict[str, Any], st: _Style, slot: int) -> str:
    phrase = _np(desc, st, slot)
    return f"{_article(phrase)} {phrase}"


def realise(meaning: dict[str, Any], style: _Style) -> str:
    """Write a meaning as an English caption with the word choices of ``style``."""
    descs = meaning["objects"]
    t = style.template
    if "relation" in meaning:
        a, b = _det_np(descs[0], style, 0), _det_np(descs[1], style, 1)
        rel = style.pick("rel", _REL_WORDS[meaning["relation"]])
        forms = (
            f"{a} {rel} {b}",
            f"{a} is {rel} {b}",
            f"{a} placed {rel} {b}",
            f"{rel} {b} there is {a}",
            f"{a}, {rel} {b}",
            f"{a} that is {rel} {b}",
        )
        text = forms[t % len(forms)]
    elif "count" in meaning:
        n = meaning["count"]
        cw = style.pick("count", _COUNT_WORDS[n])
        phrase = _np(descs[0], style, 0, plural=n > 1)
        forms = (
            f"{cw} {phrase}",
            f"there are {cw} {phrase}" if n > 1 else f"there is {cw} {phrase}",
            f"{phrase}, {cw} of them" if n > 1 else f"{cw} {phrase}",
            f"exactly {cw} {phrase}",
            f"{cw} identical {phrase}" if n > 1 else f"just {cw} {phrase}",
        )
        text = forms[t % len(forms)]
    elif "place" in meaning:
        obj = _det_np(descs[0], style, 0)
        place = style.pick("place", _PLACE_WORDS[meaning["place"]])
        forms = (
            f"{obj} {place}",
            f"{place} there is {obj}",
            f"{place}, {obj}",
            f"{obj} is {place}",
            f"{obj} located {place}",
        )
        text = forms[t % len(forms)]
    else:
        parts = [_det_np(d, style, i) for i, d in enumerate(descs)]
        text = " and ".join(parts)
    text = style.filler + text
    if style.capitalise:
        text = text[0].upper() + text[1:]
    if style.period:
        text += "."
    return text


def _partial(meaning: dict[str, Any], rng: random.Random, scene: dict[str, Any]) -> dict[str, Any]:
    """Drop some attributes, as people do when they describe only part of a scene."""
    m = json.loads(json.dumps(meaning))
    kind = scene["kind"]
    if kind == "single":
        choice = rng.randrange(5)
        d = m["objects"][0]
        if choice == 0:
            d.pop("size", None)
        elif choice == 1:
            m.pop("place", None)
        elif choice == 2:
            d.pop("size", None)
            m.pop("place", None)
        elif choice == 3:
            d.pop("colour", None)
        else:
            m.pop("place", None)
            d.pop("colour", None)
            d.pop("size", None)
    elif kind == "pair":
        choice = rng.randrange(4)
        if choice == 0:
            for d in m["objects"]:
                d.pop("size", None)
        elif choice == 1:  # only one of the two objects
            m.pop("relation", None)
            m["objects"] = [rng.choice(m["objects"])]
            m["objects"][0].pop("size", None)
        elif choice == 2:  # both objects, no relation
            m.pop("relation", None)
            for d in m["objects"]:
                d.pop("size", None)
        else:
            for d in m["objects"]:
                d.pop("size", None)
            rng.choice(m["objects"]).pop("colour", None)
    else:
        choice = rng.randrange(3)
        d = m["objects"][0]
        d.pop("size", None)
        if choice == 1:
            d.pop("colour", None)
        elif choice == 2:
            m.pop("count", None)
    return m


def _full_meaning(scene: dict[str, Any]) -> dict[str, Any]:
    objs = [{"colour": o["colour"], "shape": o["shape"], "size": o["size"]} for o in scene["objects"]]
    if scene["kind"] == "single":
        return {"objects": objs, "place": scene["place"]}
    if scene["kind"] == "pair":
        return {"objects": objs, "relation": scene["relation"]}
    return {"objects": [objs[0]], "count": len(objs)}


def _orient(meaning: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Randomly describe a pair from the other object's point of view."""
    if "relation" in meaning and rng.random() < 0.5:
        return {"objects": meaning["objects"][::-1], "relation": INVERSE_RELATION[meaning["relation"]]}
    return meaning


def write_captions(scene: dict[str, Any], rng: random.Random, n: int = 5) -> tuple[list[str], list[dict[str, Any]], list[_Style]]:
    """Five captions of a scene: the first names everything, the others vary and are often partial."""
    texts, metas, styles = [], [], []
    for i in range(n):
        m = _full_meaning(scene)
        if i > 0 and rng.random() < 0.6:
            m = _partial(m, rng, scene)
        m = _orient(m, rng)
        st = _style(rng, 6)
        texts.append(realise(m, st))
        metas.append(m)
        styles.append(st)
    return texts, metas, styles


def swap_negatives(meaning: dict[str, Any], scene: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """Meanings that differ from ``meaning`` by exactly one attribute and are false of ``scene``.

    Swaps: one object's colour, one object's shape, the relation flipped, the count changed.
    """
    out: list[dict[str, Any]] = []
    for i, d in enumerate(meaning["objects"]):
        if "colour" in d:
            m = json.loads(json.dumps(meaning))
            m["objects"][i]["colour"] = rng.choice([c for c in COLOURS if c != d["colour"]])
            out.append(m)
        if "shape" in d:
            m = json.loads(json.dumps(meaning))
            m["objects"][i]["shape"] = rng.choice([s for s in SHAPES if s != d["shape"]])
            out.append(m)
    if "relation" in meaning:
        m = json.loads(json.dumps(meaning))
        m["relation"] = INVERSE_RELATION[meaning["relation"]]
        out.append(m)
    if "count" in meaning:
        m = json.loads(json.dumps(meaning))
        m["count"] = {1: 2, 2: 3, 3: 2}[meaning["count"]]
        out.append(m)
    return [m for m in out if not caption_fits(m, scene)]


# ----------------------------------------------------------------------------- items


@dataclass
class SceneItem:
    """One generated example: record, five captions with meanings, fine-grained negatives."""

    scene: dict[str, Any]
    captions: list[str]
    caption_meta: list[dict[str, Any]]
    negatives: list[str]
    png: bytes


def make_item(seed: int, index: int, size: int = 64) -> SceneItem:
    """Generate example ``index`` of the stream ``seed`` (independent of workers and order)."""
    rng = random.Random((seed * 1_000_003 + index) * 7919 + GENERATOR_VERSION)
    scene = sample_scene(rng)
    captions, metas, styles = write_captions(scene, rng)
    negs = [realise(m, styles[0]) for m in swap_negatives(metas[0], scene, rng)]
    img = render_scene(scene, size, rng)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return SceneItem(scene=scene, captions=captions, caption_meta=metas, negatives=negs, png=buf.getvalue())


def _make_chunk(args: tuple[int, int, int, int]) -> list[SceneItem]:
    seed, start, stop, size = args
    return [make_item(seed, i, size) for i in range(start, stop)]


def generate_scenes(
    out_dir: str | Path,
    n: int,
    seed: int,
    size: int = 64,
    split: str = "train",
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``n`` scenes into ``out_dir`` (images/, captions.jsonl, fg.jsonl, dataset.json).

    Deterministic per ``seed``: the output does not depend on ``workers``.
    """
    import time
    from multiprocessing import get_context

    from lexlens.errors import UsageError
    from lexlens.progress import progress_bar

    if n <= 0:
        raise UsageError("--n must be positive")
    if size < 16:
        raise UsageError("--size must be at least 16 pixels")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or os.cpu_count() or 1)
    chunk = 256
    jobs = [(seed, a, min(n, a + chunk), size) for a in range(0, n, chunk)]
    t0 = time.perf_counter()
    width = max(6, len(str(n - 1)))
    cap_tmp, fg_tmp = out / "captions.jsonl.tmp", out / "fg.jsonl.tmp"
    with open(cap_tmp, "w") as fc, open(fg_tmp, "w") as ff, progress_bar(n, "scenes", "img", progress) as bar:
        ctx = get_context("fork") if workers > 1 else None
        pool = ctx.Pool(workers) if ctx else None
        try:
            results = pool.imap(_make_chunk, jobs) if pool else map(_make_chunk, jobs)
            i = 0
            for items in results:
                for it in items:
                    rel = f"images/{i:0{width}d}.png"
                    (out / rel).write_bytes(it.png)
                    fc.write(json.dumps({"image": rel, "captions": it.captions, "scene": it.scene, "caption_meta": it.caption_meta}) + "\n")
                    ff.write(json.dumps({"image": rel, "positive": it.captions[0], "negatives": it.negatives}) + "\n")
                    i += 1
                bar.update(len(items))
        finally:
            if pool:
                pool.close()
                pool.join()
    os.replace(cap_tmp, out / "captions.jsonl")
    os.replace(fg_tmp, out / "fg.jsonl")
    elapsed = time.perf_counter() - t0
    stats = {
        "name": "scenes",
        "n": n,
        "seed": seed,
        "size": size,
        "split": split,
        "generator_version": GENERATOR_VERSION,
        "seconds": round(elapsed, 3),
        "images_per_second": round(n / max(elapsed, 1e-9), 1),
        "out": str(out),
    }
    (out / "dataset.json").write_text(json.dumps({k: v for k, v in stats.items() if k not in ("seconds", "images_per_second", "out")}, indent=2))
    return stats
