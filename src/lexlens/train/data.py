"""Training pairs held in memory: images decoded once, captions, and what the losses need.

Two sources:

* :func:`pairs_from_dataset`: any dataset lexlens reads (folder, captions.jsonl, CSV/Parquet,
  Karpathy JSON). When the dataset carries scene records and caption meanings (scenes
  folders), they are kept, so the losses can tell false negatives apart; ``fg.jsonl``
  negatives become hard negatives of each image's first caption.
* :func:`pairs_from_scenes`: scenes generated in memory for the training recipe. Each image
  is rendered at a random size (48 to 128 px) and resized with a random filter, as other
  renderers would, and every caption gets one-attribute swaps as hard negatives (:func:`training_swaps`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lexlens.errors import DataError, UsageError
from lexlens.models.base import PreprocessConfig

__all__ = [
    "PairSet",
    "pairs_from_dataset",
    "pairs_from_scenes",
    "training_swaps",
    "batch_fits",
    "twin_scene",
    "spread_sizes",
]


@dataclass
class PairSet:
    """Images ``uint8 [n, 3, S, S]`` (resized, not normalised) with their captions.

    ``captions[i]``: the captions of image ``i``; optional ``meanings[i][j]`` (caption meaning
    dicts of the scenes generator), ``scenes[i]`` (scene records) and ``negatives[i][j]``
    (hard-negative captions of caption ``j``).
    """

    images: np.ndarray
    captions: list[list[str]]
    meanings: list[list[dict[str, Any]]] | None = None
    scenes: list[dict[str, Any]] | None = None
    negatives: list[list[list[str]]] | None = None
    source: str = ""
    #: counterfactual twins (``pairs_from_scenes(..., twins=True)``): image ``i`` drawn again
    #: with its objects moved (:func:`twin_scene`), ``uint8 [n, 3, S, S]``, and the moved scene
    #: records (``None`` where a scene has no twin; its image row is then zeros)
    twins: np.ndarray | None = None
    twin_scenes: list[dict[str, Any] | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, idx: Sequence[int]) -> PairSet:
        """The items ``idx`` (copies)."""
        idx = list(idx)

        def pick(x: list[Any] | None) -> list[Any] | None:
            return None if x is None else [x[i] for i in idx]

        return PairSet(
            self.images[np.asarray(idx, dtype=np.int64)],
            [self.captions[i] for i in idx],
            pick(self.meanings),
            pick(self.scenes),
            pick(self.negatives),
            self.source,
            None if self.twins is None else self.twins[np.asarray(idx, dtype=np.int64)],
            pick(self.twin_scenes),
        )


def _to_uint8(im: Any, size: int) -> np.ndarray:
    """A PIL image -> ``uint8 [3, size, size]`` (shorter side resized, centre crop)."""
    from lexlens.data.images import _resize_crop

    im = _resize_crop(im.convert("RGB"), PreprocessConfig(image_size=size))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def pairs_from_dataset(
    path: str,
    image_size: int,
    limit: int | None = None,
    progress: bool = True,
    split: str | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    images_root: str | None = None,
) -> PairSet:
    """Decode every image of a dataset once (skipping unreadable files) into a :class:`PairSet`
    (the dataset read as :func:`lexlens.data.readers.load_dataset` reads it, with the same
    column and image-folder options)."""
    from lexlens.data.images import load_rgb
    from lexlens.data.readers import load_dataset
    from lexlens.progress import progress_bar

    ds = load_dataset(path, split, image_column, caption_column, images_root)
    n = len(ds.images) if limit is None else min(limit, len(ds.images))
    if n == 0:
        raise DataError(f"{path}: no images to train on")
    keep, arrays, skipped = [], [], 0
    with progress_bar(n, "decode", "img", progress) as bar:
        for i in range(n):
            caps = ds.captions[i] if i < len(ds.captions) else []
            if not caps:
                skipped += 1
                bar.update(1)
                continue
            try:
                arrays.append(_to_uint8(load_rgb(ds.images[i], image_size), image_size))
                keep.append(i)
            except Exception:  # noqa: BLE001 - unreadable images are skipped and counted
                skipped += 1
            bar.update(1)
    if not keep:
        raise DataError(f"{path}: none of the {n} images could be read with captions")
    meta = getattr(ds, "caption_meta", None)
    scenes = getattr(ds, "scenes", None)
    has_meaning = (
        bool(meta) and bool(scenes) and all(meta[i] for i in keep) and all(scenes[i] for i in keep)
    )
    negatives = _fg_negatives(path, ds, keep)
    return PairSet(
        np.stack(arrays),
        [list(ds.captions[i]) for i in keep],
        [list(meta[i]) for i in keep] if has_meaning else None,
        [scenes[i] for i in keep] if has_meaning else None,
        negatives,
        source=str(path),
        extra={"skipped": skipped},
    )


def _fg_negatives(path: str, ds: Any, keep: list[int]) -> list[list[list[str]]] | None:
    """Hard negatives of each image's first caption from ``fg.jsonl`` when the dataset has one."""
    fg = getattr(ds, "fg", None)
    if not fg:
        return None
    by_image = {str(item.get("image")): item for item in fg}
    out: list[list[list[str]]] = []
    for i in keep:
        item = by_image.get(str(ds.image_paths[i]))
        caps = ds.captions[i]
        negs = [[] for _ in caps]
        if item and caps and item.get("positive") == caps[0]:
            negs[0] = list(item.get("negatives", []))
        out.append(negs)
    return out


#: width : height ratios (or their inverse) of the pictures drawn with ``aspect`` > 0
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 2.0)

#: radius bounds that keep "small" and "large" apart when :func:`spread_sizes` rescales them
SMALL_MAX_R, LARGE_MIN_R = 0.105, 0.12


def spread_sizes(scene: dict[str, Any], spread: float, rng: random.Random) -> None:
    """Draw each object of ``scene`` (in place) at its radius times ``uniform(1 - spread,
    1 + spread)``, small ones at most :data:`SMALL_MAX_R` and large ones at least
    :data:`LARGE_MIN_R`, their centres moved only as far as keeps them inside the picture.
    Training only: the model meets objects smaller and larger than the generator draws (a
    renderer of its own may draw them so; shapes under ~4.8 px were its most missed)."""
    for o in scene["objects"]:
        r = o["r"] * rng.uniform(1.0 - spread, 1.0 + spread)
        r = min(r, SMALL_MAX_R) if o["size"] == "small" else max(r, LARGE_MIN_R)
        o["r"] = r
        o["x"] = min(max(o["x"], r + 0.01), 1.0 - r - 0.01)
        o["y"] = min(max(o["y"], r + 0.01), 1.0 - r - 0.01)


def _scene_chunk(
    job: tuple[int, str, int, int, int, bool, bool, float, float, float, float],
) -> list[tuple[np.ndarray, list[str], list[dict], dict, list[list[str]], Any, Any]]:
    """Worker: items ``[start, stop)`` of the stream ``(seed, split)`` rendered in memory, each
    with its twin scene and image (``None`` without twins)."""
    from PIL import Image

    from lexlens.data import scenes as S

    seed, split, start, stop, size, vary, with_twins, size_spread, paraphrase, texture, aspect = job
    out = []
    for i in range(start, stop):
        rng = random.Random(f"lexlens-train:{S.GENERATOR_VERSION}:{seed}:{split}:{i}")
        scene = S.sample_scene(rng)
        if size_spread > 0:  # its own random stream: the scenes and captions stay the same
            spread_sizes(scene, size_spread, random.Random(f"lexlens-sizes:{seed}:{split}:{i}"))
        texts, metas, styles = S.write_captions(scene, rng)
        # which relation captions say their relation in other words: their own random stream,
        # so the scenes, images and every other caption stay the same
        wide = [False] * len(texts)
        if paraphrase > 0:
            prng = random.Random(f"lexlens-paraphrase:{seed}:{split}:{i}")
            wide = ["relation" in m and prng.random() < paraphrase for m in metas]
        negs: list[list[str]] = []
        for j, (m, st) in enumerate(zip(metas, styles, strict=True)):
            words = S.WIDE_REL_WORDS if wide[j] else None
            if wide[j]:
                texts[j] = S.realise(m, st, words)
            cand = [S.realise(x, st, words) for x in training_swaps(m, scene, rng)]
            negs.append(sorted({c for c in cand if c != texts[j]}))
        render = rng.choice((48, 56, 64, 64, 80, 96, 128)) if vary else size
        # a textured background (its own random stream; the twin gets the same texture)
        tex = None
        if texture > 0:
            trng = random.Random(f"lexlens-texture:{seed}:{split}:{i}")
            tex = S.draw_texture(trng) if trng.random() < texture else None
        # drawn at another width : height and squashed back to a square (its own stream)
        ratio = 1.0
        if aspect > 0:
            arng = random.Random(f"lexlens-aspect:{seed}:{split}:{i}")
            if arng.random() < aspect:
                ratio = arng.choice(ASPECTS) ** arng.choice((1, -1))
        before = rng.getstate()
        drawn = [S.render_scene(scene, render, rng, tex, ratio)]
        twin = twin_scene(scene) if with_twins else None
        if twin is not None:  # drawn with the same random choices: only the places differ
            after = rng.getstate()
            rng.setstate(before)
            drawn.append(S.render_scene(twin, render, rng, tex, ratio))
            rng.setstate(after)
        if render != size or ratio != 1.0:
            filt = rng.choice(
                (
                    Image.Resampling.BILINEAR,
                    Image.Resampling.BICUBIC,
                    Image.Resampling.LANCZOS,
                    Image.Resampling.BOX,
                )
            )
            drawn = [im.resize((size, size), filt) for im in drawn]
        arrs = [
            np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy() for im in drawn
        ]
        out.append(
            (arrs[0], texts, metas, scene, negs, twin, arrs[1] if twin is not None else None)
        )
    return out


_MIRROR_PLACE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def twin_scene(scene: dict[str, Any]) -> dict[str, Any] | None:
    """The scene with its objects moved so that what captions say of places changes, all
    else equal: a pair's two objects trade places (so the relation inverts); a single object
    moves to the mirrored place (left <-> right, top <-> bottom). ``None`` for other scenes
    and an object in the centre. A twin drawn with the same random choices is a hard
    negative *image* for a caption naming the place or relation (training only)."""
    import copy

    from lexlens.data import scenes as S

    kind = scene.get("kind")
    if kind == "pair" and scene.get("relation") in S.INVERSE_RELATION:
        t = copy.deepcopy(scene)
        a, b = t["objects"]
        a["x"], a["y"], b["x"], b["y"] = b["x"], b["y"], a["x"], a["y"]
        t["relation"] = S.INVERSE_RELATION[scene["relation"]]
        return t
    if kind == "single" and scene.get("place") in _MIRROR_PLACE:
        t = copy.deepcopy(scene)
        o = t["objects"][0]
        if scene["place"] in ("left", "right"):
            o["x"] = 1.0 - o["x"]
        else:
            o["y"] = 1.0 - o["y"]
        t["place"] = _MIRROR_PLACE[scene["place"]]
        return t
    return None


# shapes a small renderer confuses most: each is swapped for its look-alikes first
_LOOKALIKE = {
    "circle": ("hexagon", "pentagon"),
    "hexagon": ("circle", "pentagon"),
    "pentagon": ("hexagon", "circle"),
    "star": ("triangle", "cross"),
    "triangle": ("star", "diamond"),
    "cross": ("star", "square"),
    "diamond": ("square", "triangle"),
    "square": ("diamond", "cross"),
}


def training_swaps(
    meaning: dict[str, Any], scene: dict[str, Any], rng: random.Random
) -> list[dict[str, Any]]:
    """Hard-negative meanings for training: one attribute changed, false of ``scene``.

    Richer than the evaluation's one swap per attribute (``swap_negatives``): every object's
    shape is swapped for its two look-alikes and one random other shape, its colour and size
    once; a relation is flipped in both word orders ("A right of B", "B left of A"), since the
    flip is the hardest swap and caption pools are sampled uniformly; a place and a count are
    changed once.
    """
    import copy

    from lexlens.data import scenes as S

    out: list[dict[str, Any]] = []

    def swap(key: str, value: Any, obj: int | None = None) -> None:
        """A copy of ``meaning`` with ``key`` (of object ``obj``, or of the whole) set to ``value``."""
        m = copy.deepcopy(meaning)
        (m if obj is None else m["objects"][obj])[key] = value
        out.append(m)

    for i, d in enumerate(meaning["objects"]):
        if "shape" in d:
            others = [v for v in S.SHAPES if v != d["shape"] and v not in _LOOKALIKE[d["shape"]]]
            for v in (*_LOOKALIKE[d["shape"]], rng.choice(others)):
                swap("shape", v, i)
        if "colour" in d:
            swap("colour", rng.choice([c for c in S.COLOURS if c != d["colour"]]), i)
        if "size" in d:
            swap("size", "small" if d["size"] == "large" else "large", i)
    if "relation" in meaning:
        swap("relation", S.INVERSE_RELATION[meaning["relation"]])
        swap("objects", copy.deepcopy(meaning["objects"][::-1]))
    if "place" in meaning:
        swap("place", rng.choice([p for p in S.PLACES if p != meaning["place"]]))
    if "count" in meaning:
        swap("count", rng.choice([c for c in S.COUNTS if c != meaning["count"]]))
    return [m for m in out if not S.caption_fits(m, scene)]


def pairs_from_scenes(
    n: int,
    seed: int,
    image_size: int = 64,
    split: str = "train",
    vary_render: bool = True,
    progress: bool = True,
    workers: int | None = None,
    twins: bool = False,
    size_spread: float = 0.0,
    paraphrase: float = 0.0,
    texture: float = 0.0,
    aspect: float = 0.0,
) -> PairSet:
    """Generate ``n`` scenes in memory (deterministic per ``seed`` and ``split``; ``twins``
    adds each pair and placed single scene's counterfactual twin, :func:`twin_scene`, without
    changing the rest; ``size_spread`` > 0 draws objects at other sizes, :func:`spread_sizes`,
    with the same scenes and captions; ``paraphrase`` is the share of relation captions, and
    of their negatives, written with the wider relation phrases of
    :data:`lexlens.data.scenes.WIDE_REL_WORDS`, the rest unchanged; ``texture`` is the share
    of images drawn on a textured background, :func:`lexlens.data.scenes.draw_texture`, the
    rest of each picture unchanged; ``aspect`` the share drawn at a width : height of
    :data:`ASPECTS` (either way round) and squashed to a square, as a ``squash`` preprocessor
    does to a picture of that shape)."""
    if not 0.0 <= size_spread < 1.0:
        raise UsageError(f"size_spread must be at least 0 and below 1, got {size_spread}")
    if not 0.0 <= paraphrase <= 1.0:
        raise UsageError(f"paraphrase must be between 0 and 1, got {paraphrase}")
    if not 0.0 <= texture <= 1.0:
        raise UsageError(f"texture must be between 0 and 1, got {texture}")
    if not 0.0 <= aspect <= 1.0:
        raise UsageError(f"aspect must be between 0 and 1, got {aspect}")
    import os
    from multiprocessing import get_context

    from lexlens.progress import progress_bar

    workers = max(1, workers or os.cpu_count() or 1)
    chunk = 256
    jobs = [
        (
            seed,
            split,
            a,
            min(n, a + chunk),
            image_size,
            vary_render,
            twins,
            size_spread,
            paraphrase,
            texture,
            aspect,
        )
        for a in range(0, n, chunk)
    ]
    images = np.zeros((n, 3, image_size, image_size), np.uint8)
    twin_images = np.zeros_like(images) if twins else None
    caps, metas, scenes, negs = [], [], [], []
    twin_scenes: list[dict[str, Any] | None] = []
    pool = get_context("fork").Pool(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap(_scene_chunk, jobs) if pool else map(_scene_chunk, jobs)
        with progress_bar(n, "render scenes", "img", progress) as bar:
            k = 0
            for part in results:
                for arr, t, m, s, ng, tw_scene, tw in part:
                    images[k] = arr
                    if twin_images is not None and tw is not None:
                        twin_images[k] = tw
                    twin_scenes.append(tw_scene)
                    caps.append(t)
                    metas.append(m)
                    scenes.append(s)
                    negs.append(ng)
                    k += 1
                bar.update(len(part))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return PairSet(
        images,
        caps,
        metas,
        scenes,
        negs,
        source=f"scenes(seed={seed}, split={split}"
        + (f", size_spread={size_spread}" if size_spread > 0 else "")
        + (f", paraphrase={paraphrase}" if paraphrase > 0 else "")
        + (f", texture={texture}" if texture > 0 else "")
        + (f", aspect={aspect}" if aspect > 0 else "")
        + ")",
        twins=twin_images,
        twin_scenes=twin_scenes if twins else None,
    )


def batch_fits(meanings: Sequence[dict[str, Any]], scenes: Sequence[dict[str, Any]]) -> np.ndarray:
    """``bool [T, I]``: caption meaning ``t`` is true of scene ``i`` (the scenes generator's rule)."""
    from lexlens.data.scenes import caption_fits

    cache: dict[str, np.ndarray] = {}
    out = np.zeros((len(meanings), len(scenes)), dtype=bool)
    import json

    for t, m in enumerate(meanings):
        key = json.dumps(m, sort_keys=True)
        row = cache.get(key)
        if row is None:
            row = np.fromiter((caption_fits(m, s) for s in scenes), dtype=bool, count=len(scenes))
            cache[key] = row
        out[t] = row
    return out
