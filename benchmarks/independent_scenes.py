#!/usr/bin/env python3
"""Scenes drawn and captioned independently of lexlens's generator (none of its code is used),
for robustness checks of a model: other sizes and aspect ratios, file formats and image modes,
textured backgrounds, other caption wording, quirky ``captions.jsonl`` files.

Usage: independent_scenes.py OUT --n 300 --seed 1 [--size 64x64|128x64|...|mix]
       [--fmt png|jpg|webp|bmp|tif|mix] [--mode RGB|RGBA|RGBA_T|P|L|I16|CMYK|mix]
       [--caps plain|varied] [--render basic|fancy|KIND:AMPLITUDE:CELLS]
       [--paths flat|mixed] [--jsonl clean|quirky] [--ncaps 5] [--meta]

``--render checker:25:8`` paints the background with a checkerboard of +-25 grey levels, 8 cells
across the shorter side (also ``stripes``, ``noise`` and ``cnoise``: grey or per-channel pixel
noise of that standard deviation). ``--meta`` adds the scene records and caption meanings in the
``lexlens.data.scenes`` schema, so ``lexlens eval`` prints the ceiling. The commands behind
``benchmarks/results/robustness/README.md`` are listed there.
"""

import argparse
import json
import math
import os
import random
import shutil

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (245, 225, 40),
    "purple": (130, 40, 170),
    "orange": (250, 140, 20),
    "pink": (250, 150, 195),
    "brown": (125, 75, 35),
    "gray": (128, 128, 128),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "cyan": (30, 215, 225),
}
if os.environ.get("QA_PALETTE") == "css":
    from PIL import ImageColor

    COLOURS = {k: ImageColor.getrgb(k) for k in COLOURS}
SHAPES = ["circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "pentagon"]
PLURAL = {s: s + ("es" if s == "cross" else "s") for s in SHAPES}
PLACES = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
RELS = ["left of", "right of", "above", "below"]
NUM = {1: "one", 2: "two", 3: "three"}


# ------------------------------------------------------------------ scenes
def sample_scene(rng):
    kind = rng.choice(["single", "pair", "multi"])
    if kind == "single":
        col, shp, size = (
            rng.choice(list(COLOURS)),
            rng.choice(SHAPES),
            rng.choice(["small", "large"]),
        )
        place = rng.choice(list(PLACES))
        cx, cy = PLACES[place]
        objs = [
            dict(
                colour=col,
                shape=shp,
                size=size,
                x=cx + rng.uniform(-0.06, 0.06),
                y=cy + rng.uniform(-0.06, 0.06),
            )
        ]
        return dict(kind=kind, place=place, objects=objs)
    if kind == "pair":
        while True:
            a = (rng.choice(list(COLOURS)), rng.choice(SHAPES))
            b = (rng.choice(list(COLOURS)), rng.choice(SHAPES))
            if a != b:
                break
        rel = rng.choice(RELS)
        sa, sb = rng.choice(["small", "large"]), rng.choice(["small", "large"])
        # A rel B
        m = rng.uniform(0.25, 0.3)
        c = rng.uniform(0.4, 0.6)
        if rel == "left of":
            pa, pb = (0.5 - m, c), (0.5 + m, c + rng.uniform(-0.05, 0.05))
        elif rel == "right of":
            pa, pb = (0.5 + m, c), (0.5 - m, c + rng.uniform(-0.05, 0.05))
        elif rel == "above":
            pa, pb = (c, 0.5 - m), (c + rng.uniform(-0.05, 0.05), 0.5 + m)
        else:
            pa, pb = (c, 0.5 + m), (c + rng.uniform(-0.05, 0.05), 0.5 - m)
        objs = [
            dict(colour=a[0], shape=a[1], size=sa, x=pa[0], y=pa[1]),
            dict(colour=b[0], shape=b[1], size=sb, x=pb[0], y=pb[1]),
        ]
        return dict(kind=kind, relation=rel, objects=objs)
    n = rng.choice([2, 3])
    col, shp = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    pts = []
    while len(pts) < n:
        p = (rng.uniform(0.18, 0.82), rng.uniform(0.18, 0.82))
        if all(math.hypot(p[0] - q[0], p[1] - q[1]) > 0.3 for q in pts):
            pts.append(p)
    objs = [dict(colour=col, shape=shp, size="small", x=x, y=y) for x, y in pts]
    return dict(kind=kind, count=n, objects=objs)


def poly(n, cx, cy, r, rot):
    return [
        (cx + r * math.cos(rot + 2 * math.pi * i / n), cy + r * math.sin(rot + 2 * math.pi * i / n))
        for i in range(n)
    ]


OUTLINE = os.environ.get("QA_OUTLINE")


def draw_shape(d, shape, cx, cy, r, fill, rot):
    _draw_shape(d, shape, cx, cy, r, fill, rot)
    if OUTLINE:
        col = (0, 0, 0) if fill[0] + fill[1] + fill[2] > 200 else (255, 255, 255)
        w = int(OUTLINE)

        class D:
            def __getattr__(self, name):
                f = getattr(d, name)

                def g(*a, **k):
                    k.pop("fill", None)
                    if name == "rectangle":
                        return None
                    return f(*a, outline=col, width=w)

                return g

        _draw_shape(D(), shape, cx, cy, r, fill, rot)


def _draw_shape(d, shape, cx, cy, r, fill, rot):
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        d.polygon(poly(4, cx, cy, s * math.sqrt(2), math.pi / 4 + rot), fill=fill)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=fill)
    elif shape == "triangle":
        d.polygon(poly(3, cx, cy + r * 0.15, r, -math.pi / 2 + rot), fill=fill)
    elif shape == "pentagon":
        d.polygon(poly(5, cx, cy, r, -math.pi / 2 + rot), fill=fill)
    elif shape == "hexagon":
        d.polygon(poly(6, cx, cy, r, rot), fill=fill)
    elif shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.42
            a = -math.pi / 2 + rot + math.pi * i / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        d.polygon(pts, fill=fill)
    elif shape == "cross":
        w = r * 0.33
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)


def render(scene, W, H, rng, fancy):
    ss = 4 if fancy is True and rng.random() < 0.6 else 1
    w, h = W * ss, H * ss
    used = {o["colour"] for o in scene["objects"]}
    bgname = rng.choice([c for c in COLOURS if c not in used])
    bg = COLOURS[bgname]
    if os.environ.get("QA_BG") == "white" and "white" not in used:
        bgname, bg = "white", (255, 255, 255)
    elif os.environ.get("QA_BG") == "light":
        bgname, bg = "light", tuple(rng.randint(200, 245) for _ in range(3))
    if isinstance(fancy, str):
        kind, c, n = (fancy.split(":") + ["25", "8"])[:3]
        c, n = float(c), int(n)
        arr = np.zeros((h, w, 3), np.float32) + np.array(bg, np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        cell = max(1, min(w, h) // n)
        if kind == "checker":
            arr += np.where(((yy // cell + xx // cell) % 2)[..., None] == 0, c, -c)
        elif kind == "stripes":
            arr += np.where(((xx + yy) // cell % 2)[..., None] == 0, c, -c)
        elif kind == "noise":
            arr += np.random.default_rng(rng.randrange(1 << 30)).normal(0, c, (h, w, 1))
        elif kind == "cnoise":
            arr += np.random.default_rng(rng.randrange(1 << 30)).normal(0, c, (h, w, 3))
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    elif fancy:
        # slightly shifted bg tone + vertical gradient
        bg = tuple(int(np.clip(v + rng.uniform(-20, 20), 0, 255)) for v in bg)
        arr = np.zeros((h, w, 3), np.float32) + np.array(bg, np.float32)
        arr += np.linspace(-18, 18, h)[:, None, None]
        arr = np.clip(arr, 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, "RGB")
    else:
        im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    side = min(w, h)
    for o in scene["objects"]:
        r = (rng.uniform(0.07, 0.10) if o["size"] == "small" else rng.uniform(0.15, 0.2)) * side
        col = COLOURS[o["colour"]]
        if fancy:
            col = tuple(int(np.clip(v + rng.uniform(-15, 15), 0, 255)) for v in col)
        rot = rng.uniform(-0.15, 0.15) if fancy else 0.0
        draw_shape(d, o["shape"], o["x"] * w, o["y"] * h, r, col, rot)
    if ss > 1:
        im = im.resize((W, H), Image.LANCZOS)
    if fancy is True:
        if rng.random() < 0.4:
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
        a = np.asarray(im).astype(np.float32) + np.random.default_rng(
            rng.randrange(1 << 30)
        ).normal(0, 4, (H, W, 3))
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    return im, bgname


# ------------------------------------------------------------------ captions
def np_(o, with_size, rng, style, article="a"):
    size = ""
    if with_size:
        size = o["size"]
        if style == "varied":
            size = rng.choice(
                {"small": ["small", "little", "tiny", "small"], "large": ["large", "big", "large"]}[
                    size
                ]
            )
        size += " "
    col = o["colour"]
    if style == "varied" and col == "gray" and rng.random() < 0.5:
        col = "grey"
    art = article
    first = (size or col)[0]
    if art == "a" and first in "aeiou":
        art = "an"
    return f"{art} {size}{col} {o['shape']}"


def place_phrase(p, rng, style):
    if style == "plain":
        return {
            "left": "on the left",
            "right": "on the right",
            "top": "at the top",
            "bottom": "at the bottom",
            "center": "in the center",
        }[p]
    return rng.choice(
        {
            "left": [
                "on the left",
                "at the left side",
                "toward the left",
                "in the left half",
                "on the left-hand side",
            ],
            "right": ["on the right", "at the right side", "toward the right", "in the right half"],
            "top": [
                "at the top",
                "near the top",
                "in the upper part",
                "up top",
                "at the top of the picture",
            ],
            "bottom": [
                "at the bottom",
                "near the bottom",
                "in the lower part",
                "down at the bottom",
            ],
            "center": [
                "in the center",
                "in the centre",
                "in the middle",
                "at the centre of the image",
                "right in the middle",
            ],
        }[p]
    )


REL_WORDS = {
    "left of": ["to the left of", "left of", "on the left of"],
    "right of": ["to the right of", "right of", "on the right of"],
    "above": ["above", "over", "on top of", "higher than"],
    "below": ["below", "under", "beneath", "underneath"],
}
FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
FILLERS_PRE = ["", "", "we see ", "this picture shows ", "in the image, ", "look: ", "here is "]
FILLERS_POST = ["", "", ".", "!", " in this image", " on a plain background", ", drawn simply"]


def decorate(s, rng, style):
    if style == "plain":
        return s
    s = rng.choice(FILLERS_PRE) + s + rng.choice(FILLERS_POST)
    if rng.random() < 0.4:
        s = s[0].upper() + s[1:]
    if rng.random() < 0.1:
        s = s.upper()
    return s


def _d(o, size):
    d = {"colour": o["colour"], "shape": o["shape"]}
    if size:
        d["size"] = o["size"]
    return d


def captions_for(scene, rng, style, n):
    out, metas = [], []
    k = scene["kind"]
    o = scene["objects"]
    for i in range(n):
        full = i < max(1, n - 1)  # last caption partial
        drop_size = full and i in (1, 3) and style == "plain"
        if k == "single":
            if full:
                if style == "plain" and i == 2:
                    s = f"{np_(o[0], True, rng, style)}"
                    m = {"objects": [_d(o[0], True)]}
                elif style == "plain" or rng.random() < 0.5:
                    s = f"{np_(o[0], not drop_size, rng, style)} {place_phrase(scene['place'], rng, style)}"
                    m = {"objects": [_d(o[0], not drop_size)], "place": scene["place"]}
                else:
                    pp = place_phrase(scene["place"], rng, style)
                    s = f"{pp[0].upper() + pp[1:]}, {np_(o[0], True, rng, style)}"
                    if style == "varied" and rng.random() < 0.3:
                        s = f"one {o[0]['size']} {o[0]['colour']} {o[0]['shape']} {place_phrase(scene['place'], rng, style)}"
                    m = {"objects": [_d(o[0], True)], "place": scene["place"]}
            else:
                s = np_(o[0], False, rng, style)
                m = {"objects": [_d(o[0], False)]}
        elif k == "pair":
            rel = scene["relation"]
            a, b = o
            ws = full and not drop_size
            if style == "plain":
                if i == 2:
                    s = f"{np_(b, ws, rng, style)} {FLIP[rel]} {np_(a, ws, rng, style)}"
                    m = {"objects": [_d(b, ws), _d(a, ws)], "relation": FLIP[rel]}
                else:
                    s = f"{np_(a, ws, rng, style)} {rel} {np_(b, ws, rng, style)}"
                    m = {"objects": [_d(a, ws), _d(b, ws)], "relation": rel}
            else:
                if rng.random() < 0.5:
                    s = f"{np_(a, ws, rng, style)} {rng.choice(REL_WORDS[rel])} {np_(b, ws, rng, style)}"
                    m = {"objects": [_d(a, ws), _d(b, ws)], "relation": rel}
                else:
                    s = f"{np_(b, ws, rng, style)} is {rng.choice(REL_WORDS[FLIP[rel]])} {np_(a, ws, rng, style)}"
                    m = {"objects": [_d(b, ws), _d(a, ws)], "relation": FLIP[rel]}
        else:
            c = scene["count"]
            num = NUM[c] if style == "plain" or rng.random() < 0.6 else str(c)
            sz = "small " if full and not drop_size else ""
            if style == "varied" and full:
                sz = rng.choice(["small ", "little ", "tiny ", ""])
            col = o[0]["colour"]
            if style == "plain" or rng.random() < 0.7:
                s = f"{num} {sz}{col} {PLURAL[o[0]['shape']]}"
            else:
                s = f"{sz}{col} {PLURAL[o[0]['shape']]}, {num} of them"
            m = {"objects": [_d(o[0], bool(sz))], "count": c}
        out.append(decorate(s, rng, style))
        metas.append(m)
    return out, metas


def fg_for(scene, rng):
    o = scene["objects"]
    k = scene["kind"]
    if k == "single":
        pos = f"a {o[0]['size']} {o[0]['colour']} {o[0]['shape']} {place_phrase(scene['place'], rng, 'plain')}"
        oc = rng.choice([c for c in COLOURS if c != o[0]["colour"]])
        osh = rng.choice([s for s in SHAPES if s != o[0]["shape"]])
        negs = [pos.replace(o[0]["colour"], oc, 1), pos.replace(" " + o[0]["shape"], " " + osh, 1)]
    elif k == "pair":
        a, b = o
        rel = scene["relation"]
        A = f"a {a['colour']} {a['shape']}"
        B = f"a {b['colour']} {b['shape']}"
        pos = f"{A} {rel} {B}"
        oc = rng.choice([c for c in COLOURS if c not in (a["colour"], b["colour"])])
        osh = rng.choice([s for s in SHAPES if s not in (a["shape"], b["shape"])])
        negs = [
            f"{A} {FLIP[rel]} {B}",
            f"a {oc} {a['shape']} {rel} {B}",
            f"{A} {rel} a {b['colour']} {osh}",
        ]
    else:
        c = scene["count"]
        col, shp = o[0]["colour"], o[0]["shape"]
        pos = f"{NUM[c]} {col} {PLURAL[shp]}"
        oc = rng.choice([x for x in COLOURS if x != col])
        osh = rng.choice([s for s in SHAPES if s != shp])
        negs = [
            f"{NUM[5 - c]} {col} {PLURAL[shp]}",
            f"{NUM[c]} {oc} {PLURAL[shp]}",
            f"{NUM[c]} {col} {PLURAL[osh]}",
        ]
    return pos, negs


# ------------------------------------------------------------------ saving
def save(im, path, fmt, mode, rng):
    if mode == "RGBA":
        im = im.convert("RGBA")
    elif mode == "RGBA_T":  # transparent background (alpha 0 where bg)
        a = np.asarray(im).astype(int)
        bg = a[0, 0]
        alpha = np.where(np.abs(a - bg).sum(-1) < 30, 0, 255).astype(np.uint8)
        im = Image.fromarray(np.dstack([a.astype(np.uint8), alpha]), "RGBA")
    elif mode == "P":
        im = im.convert("P", palette=Image.ADAPTIVE, colors=64)
    elif mode == "L":
        im = im.convert("L")
    elif mode == "I16":
        im = Image.fromarray(np.asarray(im.convert("L")).astype("<u2") * 257)
    elif mode == "CMYK":
        im = im.convert("CMYK")
    if fmt in ("jpg", "JPG", "jpeg") and im.mode in ("RGBA", "P", "I;16"):
        im = im.convert("RGB")
    if fmt in ("webp",) and im.mode == "I;16":
        im = im.convert("L")
    if fmt == "bmp" and im.mode in ("I;16", "CMYK"):
        im = im.convert("RGB")
    kw = {}
    if fmt.lower() in ("jpg", "jpeg"):
        kw["quality"] = rng.choice([75, 85, 95])
        kw["format"] = "JPEG"
    elif fmt.lower() == "webp":
        kw["format"] = "WEBP"
        kw["quality"] = 85
    elif fmt.lower() == "png":
        kw["format"] = "PNG"
    elif fmt.lower() == "bmp":
        kw["format"] = "BMP"
    elif fmt.lower() in ("tif", "tiff"):
        kw["format"] = "TIFF"
    im.save(path, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", default="64x64")
    ap.add_argument("--fmt", default="png")
    ap.add_argument("--mode", default="RGB")
    ap.add_argument("--caps", default="plain")
    ap.add_argument("--render", default="basic")
    ap.add_argument("--paths", default="flat")
    ap.add_argument("--jsonl", default="clean")
    ap.add_argument("--ncaps", type=int, default=5)
    ap.add_argument("--meta", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    lines, fg = [], []
    SIZES = ["64x64", "100x80", "300x300", "80x120", "128x128", "224x224"]
    FMTS = ["png", "jpg", "webp", "bmp", "PNG", "JPG", "jpeg", "tif"]
    MODES = ["RGB", "RGBA", "P", "RGB", "RGBA", "CMYK"]
    for i in range(a.n):
        scene = sample_scene(rng)
        size = rng.choice(SIZES) if a.size == "mix" else a.size
        W, H = map(int, size.split("x"))
        im, bgname = render(
            scene, W, H, rng, {"fancy": True, "basic": False}.get(a.render, a.render)
        )
        fmt = rng.choice(FMTS) if a.fmt == "mix" else a.fmt
        mode = rng.choice(MODES) if a.mode == "mix" else a.mode
        if mode == "CMYK" and fmt.lower() not in ("jpg", "jpeg", "tif"):
            mode = "RGB"
        name = f"{i:05d}.{fmt}"
        if a.paths == "mixed":
            sub = rng.choice(["images", "images/sub dir", "imágenes/ünï", "deep/a/b/c"])
            name = rng.choice([f"{i:05d}.{fmt}", f"img {i:05d}.{fmt}", f"ïmg_{i:05d}.{fmt}"])
            rel = f"{sub}/{name}"
        else:
            rel = f"images/{name}"
        full = os.path.join(a.out, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        save(im, full, fmt, mode, rng)
        ncap = a.ncaps if a.jsonl == "clean" else rng.choice([a.ncaps, 1, 3, 7])
        caps, metas = captions_for(scene, rng, a.caps, ncap)
        ref = rel
        if a.paths == "mixed":
            ref = rng.choice([rel, "./" + rel, os.path.abspath(full)])
        rec = {"image": ref, "captions": caps}
        if a.meta:
            rec["scene"] = scene
            rec["caption_meta"] = metas
        if a.jsonl == "quirky":
            rec = {
                "id": i,
                "captions": caps,
                "image": ref,
                "meta": {"bg": bgname, "kind": scene["kind"]},
                "source": "qa4",
            }
        lines.append(rec)
        pos, negs = fg_for(scene, rng)
        fg.append({"image": ref, "positive": pos, "negatives": negs})
    with open(os.path.join(a.out, "captions.jsonl"), "w", encoding="utf-8", newline="") as f:
        if a.jsonl == "quirky":
            f.write("\ufeff")
        for j, rec in enumerate(lines):
            s = json.dumps(rec, ensure_ascii=(j % 2 == 0))
            if a.jsonl == "quirky":
                f.write(s + "   \r\n")
                if j % 50 == 7:
                    f.write("\r\n")
            else:
                f.write(s + "\n")
    with open(os.path.join(a.out, "fg.jsonl"), "w", encoding="utf-8") as f:
        for rec in fg:
            f.write(json.dumps(rec) + "\n")
    print(f"wrote {a.n} to {a.out}")


if __name__ == "__main__":
    main()
