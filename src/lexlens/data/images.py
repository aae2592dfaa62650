"""Image decoding and preprocessing, in worker processes, tolerant of bad files.

* :func:`load_rgb` opens a path (or takes a ``PIL.Image``) and returns an RGB image: palette
  and grey images are converted, transparency is composited over white, 16-bit and float
  images are scaled to 8 bits, animated GIF/WebP give their first frame, EXIF orientation is
  applied. JPEGs are decoded in draft mode (DCT scaling, much faster) when the target is
  less than half their size.
* :func:`preprocess_image` turns one image into ``float32 [3, H, W]`` following a
  :class:`lexlens.models.base.PreprocessConfig`: resize the shorter side and centre-crop
  (``"shortest"``) or resize both sides (``"squash"``), then ``(x / 255 - mean) / std``.
* :func:`iter_preprocessed` decodes many paths in worker processes (bounded read-ahead,
  results in input order) and yields ``(positions, array[b, 3, H, W])`` batches. Unreadable,
  truncated or missing files are skipped and counted in ``.report``, never fatal.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.models.base import PreprocessConfig

__all__ = [
    "IMAGE_EXTENSIONS",
    "DecodeReport",
    "PreprocessedBatches",
    "load_rgb",
    "unreadable_image",
    "preprocess_image",
    "decode_and_preprocess",
    "iter_preprocessed",
    "is_image_file",
    "stderr_log",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

_RESAMPLE_NAMES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def _resample(name: str) -> Any:
    from PIL import Image

    if name not in _RESAMPLE_NAMES:
        raise ValueError(f"unknown interpolation {name!r}; expected one of {_RESAMPLE_NAMES}")
    return getattr(Image.Resampling, name.upper())


def _to_rgb(im: Any) -> Any:
    """Any PIL mode -> RGB (alpha over white, high bit depths scaled to 8 bits)."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(a * (255.0 / hi), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(image_or_path: Any, target_size: int | None = None) -> Any:
    """An RGB ``PIL.Image`` from a path or an image (first frame of animations).

    With ``target_size``, JPEGs at least twice that size are decoded in draft mode, which
    keeps both sides >= ``target_size`` (so a shorter-side resize still downsamples).
    Raises ``OSError``/``ValueError`` (e.g. ``PIL.UnidentifiedImageError``) on bad files.
    """
    from PIL import Image, ImageOps

    if isinstance(image_or_path, str | os.PathLike):
        with Image.open(image_or_path) as im:
            return _decode(im, target_size)
    if isinstance(image_or_path, Image.Image):
        im = image_or_path
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        return _to_rgb(ImageOps.exif_transpose(im) or im)
    raise TypeError(f"not an image or a path: {type(image_or_path).__name__}")


def _decode(im: Any, target_size: int | None) -> Any:
    from PIL import ImageOps

    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    if target_size and im.format == "JPEG" and min(im.size) >= 2 * target_size:
        im.draft("RGB", (target_size, target_size))
    im.load()
    out = _to_rgb(ImageOps.exif_transpose(im) or im)
    return out.copy() if out is im else out


def _resize_crop(im: Any, cfg: PreprocessConfig) -> Any:
    size = int(cfg.image_size)
    resample = _resample(cfg.interpolation)
    w, h = im.size
    if cfg.resize_mode == "squash":
        return im if (w, h) == (size, size) else im.resize((size, size), resample)
    if cfg.resize_mode != "shortest":
        raise ValueError(f"unknown resize mode {cfg.resize_mode!r}; expected shortest or squash")
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (size, size):
        im = im.crop((left, top, left + size, top + size))
    return im


def preprocess_image(image_or_path: Any, cfg: PreprocessConfig) -> np.ndarray:
    """One image (path or ``PIL.Image``) -> normalised ``float32 [3, H, W]`` (see module doc)."""
    im = _resize_crop(load_rgb(image_or_path, cfg.image_size), cfg)
    x = np.asarray(im, dtype=np.float32) * np.float32(1.0 / 255.0)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def unreadable_image(image: Any, exc: BaseException) -> Exception:
    """The one-line :class:`~lexlens.errors.DataError` for an image path that does not decode
    (missing, not an image, truncated), or ``exc`` itself for anything else."""
    from lexlens.errors import DataError

    decodes = (
        isinstance(exc, OSError | ValueError) or type(exc).__name__ == "DecompressionBombError"
    )
    if not isinstance(image, str | os.PathLike) or not decodes:
        return exc
    if isinstance(exc, FileNotFoundError):
        why = "no such file"
    elif isinstance(exc, IsADirectoryError):
        why = "it is a folder"
    elif type(exc).__name__ == "UnidentifiedImageError":
        why = "not an image file PIL can read"
    elif type(exc).__name__ == "DecompressionBombError":
        why = "too many pixels (PIL's decompression-bomb limit)"
    else:
        why = (str(exc).splitlines() or [type(exc).__name__])[0] or type(exc).__name__
    return DataError(f"cannot read image {os.fspath(image)}: {why}")


def decode_and_preprocess(path: str, cfg: PreprocessConfig) -> tuple[np.ndarray | None, str]:
    """``(array, "")`` or ``(None, reason)``: never raises for a bad or missing file."""
    try:
        return preprocess_image(path, cfg), ""
    except Exception as e:  # noqa: BLE001 - any failure to decode means "skip and report"
        msg = str(e).splitlines()[0] if str(e) else ""
        return None, f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ----------------------------------------------------------------------------- many files
@dataclass
class DecodeReport:
    """What happened to the images of one :func:`iter_preprocessed` run."""

    total: int = 0
    ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failed)

    def summary(self, limit: int = 5) -> str:
        """One line, plus up to ``limit`` failed files with their reasons."""
        line = f"decoded {self.ok}/{self.total} images in {self.seconds:.1f}s"
        if not self.failed:
            return line
        lines = [f"{line}; skipped {len(self.failed)} unreadable:"]
        lines += [f"  {p}: {why}" for p, why in self.failed[:limit]]
        if len(self.failed) > limit:
            lines.append(f"  ... and {len(self.failed) - limit} more")
        return "\n".join(lines)


def _decode_chunk(
    job: tuple[int, list[str], PreprocessConfig],
) -> list[tuple[int, np.ndarray | None, str]]:
    start, paths, cfg = job
    return [(start + i, *decode_and_preprocess(p, cfg)) for i, p in enumerate(paths)]


class PreprocessedBatches:
    """Iterable of ``(positions int64[b], array float32[b, 3, H, W])`` in input order.

    ``positions`` index the input ``paths``; failed files are missing from them and listed
    in :attr:`report` (complete once iteration has finished). Iterate once.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        cfg: PreprocessConfig,
        workers: int | None = None,
        batch_size: int = 64,
        chunk_size: int = 16,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if batch_size <= 0 or chunk_size <= 0:
            raise ValueError("batch_size and chunk_size must be positive")
        self.paths = [os.fspath(p) for p in paths]
        self.cfg = cfg
        self.workers = (os.cpu_count() or 1) if workers is None else max(0, int(workers))
        self.batch_size = int(batch_size)
        self.chunk_size = int(chunk_size)
        self.progress = progress
        self.log = log
        self.report = DecodeReport(total=len(self.paths))
        self._used = False

    def _results(self) -> Iterator[tuple[int, np.ndarray | None, str]]:
        jobs = (
            (a, self.paths[a : a + self.chunk_size], self.cfg)
            for a in range(0, len(self.paths), self.chunk_size)
        )
        if self.workers <= 1 or len(self.paths) <= self.chunk_size:
            for job in jobs:
                yield from _decode_chunk(job)
            return
        from multiprocessing import get_context

        # fork: workers inherit the imported modules, so no __main__ guard is needed
        pool = get_context("fork").Pool(self.workers)
        try:
            pending: deque[Any] = deque()
            ahead = 4 * self.workers  # bounded read-ahead keeps memory flat
            for job in jobs:
                pending.append(pool.apply_async(_decode_chunk, (job,)))
                if len(pending) >= ahead:
                    yield from pending.popleft().get()
            while pending:
                yield from pending.popleft().get()
        finally:
            pool.terminate()
            pool.join()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from lexlens.progress import progress_bar

        if self._used:
            raise RuntimeError("PreprocessedBatches can be iterated only once")
        self._used = True
        t0 = time.perf_counter()
        pos: list[int] = []
        arrs: list[np.ndarray] = []
        with progress_bar(len(self.paths), "decode images", "img", self.progress) as bar:
            for i, arr, why in self._results():
                bar.update(1)
                if arr is None:
                    self.report.failed.append((self.paths[i], why))
                    continue
                pos.append(i)
                arrs.append(arr)
                if len(arrs) == self.batch_size:
                    self.report.ok += len(arrs)
                    yield np.asarray(pos, dtype=np.int64), np.stack(arrs)
                    pos, arrs = [], []
            if arrs:
                self.report.ok += len(arrs)
                yield np.asarray(pos, dtype=np.int64), np.stack(arrs)
        self.report.seconds = time.perf_counter() - t0
        if self.report.failed and self.log is not None:
            self.log(self.report.summary())


def iter_preprocessed(
    paths: Sequence[str | os.PathLike[str]],
    cfg: PreprocessConfig,
    workers: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> PreprocessedBatches:
    """Decode and preprocess ``paths`` in ``workers`` processes (default: all cores; 0 or 1:
    in this process); iterate the result for ordered ``(positions, array)`` batches and read
    its ``.report`` afterwards. Bad files are skipped and reported (to ``log`` too)."""
    return PreprocessedBatches(paths, cfg, workers, batch_size, progress=progress, log=log)


def stderr_log(line: str) -> None:
    """A ``log`` callable printing to stderr (for command-line use)."""
    print(line, file=sys.stderr, flush=True)


def is_image_file(path: str | Path) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)
