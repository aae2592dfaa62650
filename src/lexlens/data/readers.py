"""Read any supported image(-text) dataset into one :class:`Dataset`.

:func:`load_dataset` detects the format of ``path``:

* a folder with ``captions.jsonl`` (the project's folder format, e.g. from
  ``lexlens data scenes``): one JSON object a line, ``{"image": "images/000001.png",
  "captions": [...], ...}``; other keys of a line become the image's record (the scenes
  generator puts the scene record under ``"scene"`` and the caption meanings under
  ``"caption_meta"``); a repeated image's captions are added to its first line's;
  ``fg.jsonl`` next to it is the fine-grained set: its image paths are resolved as the
  captions' are (a path naming a dataset image by the end of its path, e.g. a bare file
  name, is that image when only one image ends so), lines of the same image and positive
  are merged (negatives united, once each), lines naming no image of the dataset are
  skipped with a note (none matching is an error);
* a plain folder of images, searched recursively (jpg jpeg png webp gif bmp tif tiff),
  sorted by relative path, no captions;
* a ``.txt`` list of image paths, one a line (blank lines and ``#`` comments skipped);
* a CSV or Parquet table with an image column (``--image-column``, or the first of
  image, image_path, path, filepath, file_path, file, filename, file_name, img, url) and an
  optional caption column (``--caption-column``, or caption, captions, text, sentence,
  sentences, title, description, or else numbered columns of one of those names:
  ``caption_0``, ``caption_1``, ... / ``caption1``, ... read in order); rows naming the same
  image are merged (one caption a row is common; repeated captions are kept, as in JSONL);
  the other columns become the image's record;
* a Karpathy split JSON (``dataset_flickr30k.json``, ``dataset_coco.json``):
  ``{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}``; ``split``
  selects train / val / test / restval (comma-separated for several);
* a ``captions.jsonl`` file itself, or a single image file.

Relative image paths are resolved against the dataset file's folder, or ``images_root``
when given. Image paths in the result are absolute. Files are not opened here: unreadable
images are skipped (and reported) when they are decoded. Every problem with the dataset
itself is a :class:`lexlens.errors.DataError` with one clear line.

Text files are UTF-8, with or without a byte-order mark; any other encoding is an error
naming the file and line. Blank captions (empty or whitespace only) are dropped in every
format, fine-grained positives and negatives too; what a reader dropped or skipped is said
in :attr:`Dataset.notes`, which :func:`load_dataset` also hands to its ``log`` (by default
one ``lexlens: note: ...`` line each on stderr, so ``--json`` output on stdout stays clean).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexlens.data.images import IMAGE_EXTENSIONS, is_image_file
from lexlens.errors import DataError

__all__ = [
    "Dataset",
    "load_dataset",
    "dataset_info",
    "note_to_stderr",
    "IMAGE_COLUMNS",
    "CAPTION_COLUMNS",
]

IMAGE_COLUMNS = (
    "image",
    "image_path",
    "path",
    "filepath",
    "file_path",
    "file",
    "filename",
    "file_name",
    "img",
    "url",
)
CAPTION_COLUMNS = ("caption", "captions", "text", "sentence", "sentences", "title", "description")
KARPATHY_SPLITS = ("train", "val", "test", "restval")


@dataclass
class Dataset:
    """Images with their captions and metadata, in a fixed order.

    ``image_paths[i]`` (absolute) has captions ``captions[i]`` (possibly empty) and record
    ``records[i]`` (the user's metadata of that image: extra JSONL keys, other table
    columns, Karpathy fields; ``None`` for formats without metadata). For scenes data,
    ``records[i]["scene"]`` is the scene record and ``caption_meta[i]`` the structured
    meanings of ``captions[i]`` (see :mod:`lexlens.data.scenes`). ``fg`` is the
    fine-grained set (``{"image": absolute path, "positive", "negatives"}``, one item per
    image and positive caption) or ``None``. ``notes`` are one-line remarks of the reader
    (blank captions dropped, fine-grained lines skipped).
    """

    root: Path
    format: str
    image_paths: list[str]
    captions: list[list[str]]
    records: list[dict[str, Any]] | None = None
    caption_meta: list[list[dict[str, Any]]] | None = None
    fg: list[dict[str, Any]] | None = None
    split: str | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def images(self) -> list[str]:
        """Alias of :attr:`image_paths`."""
        return self.image_paths

    @property
    def scenes(self) -> list[dict[str, Any]] | None:
        """The scene record of every image, or ``None`` unless every image has one."""
        if not self.records or any(not isinstance(r.get("scene"), dict) for r in self.records):
            return None
        return [r["scene"] for r in self.records]


# ----------------------------------------------------------------------------- entry point
def note_to_stderr(line: str) -> None:
    """The default ``log`` of :func:`load_dataset`: ``lexlens: note: LINE`` on stderr."""
    print(f"lexlens: note: {line}", file=sys.stderr, flush=True)


def load_dataset(
    path: str | os.PathLike[str],
    split: str | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    images_root: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = note_to_stderr,
) -> Dataset:
    """Read the dataset at ``path`` (format detected as in the module docstring).

    Every line of the result's :attr:`Dataset.notes` is also passed to ``log`` (``None``:
    silent).
    """
    ds = _load(path, split, image_column, caption_column, images_root)
    if log is not None:
        for line in ds.notes:
            log(line)
    return ds


def _load(
    path: str | os.PathLike[str],
    split: str | None,
    image_column: str | None,
    caption_column: str | None,
    images_root: str | os.PathLike[str] | None,
) -> Dataset:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    root = Path(images_root) if images_root is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"images root {root} is not a folder")
    if p.is_dir():
        if (p / "captions.jsonl").is_file():
            ds = _read_jsonl_folder(p / "captions.jsonl", root)
        else:
            ds = _read_image_folder(p)
    else:
        suffix = p.suffix.lower()
        if suffix == ".jsonl":
            ds = _read_jsonl_folder(p, root)
        elif suffix == ".json":
            return _read_karpathy(p, split, root)
        elif suffix in (".csv", ".tsv", ".parquet", ".pq"):
            ds = _read_table(p, image_column, caption_column, root)
        elif suffix in (".txt", ".lst"):
            ds = _read_list(p, root)
        elif is_image_file(p):
            ds = Dataset(p.parent.resolve(), "image", [str(p.resolve())], [[]])
        else:
            raise DataError(
                f"{p}: unknown dataset format (expected a folder, .jsonl, .json (Karpathy), "
                ".csv, .parquet, .txt or an image)"
            )
    return _select_split(ds, split)


def _select_split(ds: Dataset, split: str | None) -> Dataset:
    """Keep the images whose record's ``split`` is ``split`` (a dataset.json split counts)."""
    if split is None:
        return ds
    wanted = {s.strip() for s in split.split(",") if s.strip()}
    recs = ds.records
    if recs and any(_split_of(r) is not None for r in recs):
        # a line without a split is in the dataset's split (dataset.json) when it has one
        splits = [_split_of(r) or ds.split for r in recs]
        missing = [i for i, s in enumerate(splits) if s is None]
        if missing:
            first = os.path.relpath(ds.image_paths[missing[0]], ds.root)
            raise DataError(
                f'{ds.root}: {len(missing)} of {len(recs)} images have no "split" field '
                f"(first: {first}), so split {split!r} is ambiguous; give every image a split "
                "or leave out --split"
            )
        keep = [i for i, s in enumerate(splits) if s in wanted]
        if not keep:
            have = sorted({str(s) for s in splits})
            raise DataError(f"{ds.root}: no images in split {split!r} (splits: {', '.join(have)})")
        return _subset(ds, keep, split)
    if ds.split is not None:
        if ds.split not in wanted:
            raise DataError(f"{ds.root}: this dataset is the {ds.split!r} split, not {split!r}")
        return ds
    raise DataError(f"{ds.root}: this {ds.format} dataset has no splits (asked for {split!r})")


def _split_of(record: dict[str, Any]) -> str | None:
    """A record's ``split`` as text, or ``None`` when it has none (missing, null, blank)."""
    value = record.get("split")
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def _subset(ds: Dataset, keep: list[int], split: str) -> Dataset:
    paths = [ds.image_paths[i] for i in keep]
    kept = set(paths)
    return Dataset(
        root=ds.root,
        format=ds.format,
        image_paths=paths,
        captions=[ds.captions[i] for i in keep],
        records=None if ds.records is None else [ds.records[i] for i in keep],
        caption_meta=None if ds.caption_meta is None else [ds.caption_meta[i] for i in keep],
        fg=None if ds.fg is None else [f for f in ds.fg if f["image"] in kept],
        split=split,
        notes=list(ds.notes),
    )


def _resolve(name: str, base: Path) -> str:
    if name.startswith(("http://", "https://", "s3://", "gs://")):
        raise DataError(f"{name}: remote images are not supported; give local file paths")
    q = Path(os.path.expanduser(name))
    return os.path.abspath(q if q.is_absolute() else base / q)


# ----------------------------------------------------------------------------- folders
def _read_image_folder(folder: Path) -> Dataset:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and is_image_file(f)
        )
    if not found:
        raise DataError(f"{folder}: no images found (extensions: {' '.join(IMAGE_EXTENSIONS)})")
    root = folder.resolve()
    paths = sorted((os.path.abspath(f) for f in found), key=lambda f: os.path.relpath(f, root))
    return Dataset(root, "folder", paths, [[] for _ in paths])


def _null(_constant: str) -> None:
    """``json`` hook: NaN / Infinity (not JSON, though Python writes them) are read as null."""
    return None


# ----------------------------------------------------------------------------- text and notes
def _utf8_problem(path: Path) -> DataError | None:
    """The one-line error for ``path`` when it is not UTF-8 text (naming the line of its first
    bad byte), or ``None`` when it is. Reads the whole file: for error paths only."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return DataError(f"{path}: cannot read ({e.strerror})")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return DataError(f"{path}: UTF-16 text; dataset text files must be UTF-8")
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        pos = start + e.start
        line = data.count(b"\n", 0, pos) + 1
        return DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[pos]:02x}); dataset text files must "
            "be UTF-8"
        )
    return None


def _not_utf8(path: Path) -> DataError:
    return _utf8_problem(path) or DataError(
        f"{path}: not valid UTF-8; dataset text files must be UTF-8"
    )


def _read_text(path: Path) -> str:
    """The text of a UTF-8 file (a byte-order mark skipped); a :class:`DataError` otherwise."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Blanks:
    """Counts the blank captions (empty or whitespace only) a reader drops, and the first place."""

    def __init__(self) -> None:
        self.n = 0
        self.first: str | None = None

    def keep(self, captions: Sequence[str], where: str) -> list[str]:
        """``captions`` without the blank ones, which are counted (``where``: their place)."""
        kept = [c for c in captions if c.strip()]
        if len(kept) < len(captions):
            self.n += len(captions) - len(kept)
            self.first = self.first or where
        return kept

    def notes(self, path: Path) -> list[str]:
        """The note on what was dropped from ``path`` (none when nothing was)."""
        if not self.n:
            return []
        return [
            f"{path}: dropped {_plural(self.n, 'blank caption')} (empty or whitespace only; "
            f"first at {self.first})"
        ]


# ----------------------------------------------------------------------------- JSONL
def _json_lines(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            try:
                for no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line, parse_constant=_null)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{no}: not valid JSON ({e.msg})") from None
                    if not isinstance(obj, dict):
                        raise DataError(f"{path}:{no}: expected a JSON object")
                    yield no, obj
            except UnicodeDecodeError:
                raise _not_utf8(path) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _captions_of(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(c, str) for c in value):
        return list(value)
    raise DataError(f"{where}: captions must be a string or a list of strings")


def _read_jsonl_folder(path: Path, images_root: Path | None) -> Dataset:
    folder = path.parent.resolve()
    base = images_root or folder
    paths: list[str] = []
    captions: list[list[str]] = []
    records: list[dict[str, Any]] = []
    metas: list[list[dict[str, Any]] | None] = []
    row_of: dict[str, int] = {}
    blanks = _Blanks()
    for no, obj in _json_lines(path):
        image_key = "image" if "image" in obj else "path"
        caption_key = "captions" if "captions" in obj else "caption"
        image = obj.get(image_key)
        if not isinstance(image, str) or not image:
            raise DataError(f'{path}:{no}: missing the "image" path')
        caps = _captions_of(obj.get(caption_key), f"{path}:{no}")
        meta = obj.get("caption_meta")
        if meta is not None and (not isinstance(meta, list) or len(meta) != len(caps)):
            raise DataError(f"{path}:{no}: caption_meta must have one entry per caption")
        kept = blanks.keep(caps, f"line {no}")
        if len(kept) < len(caps):
            if meta is not None:
                meta = [m for c, m in zip(caps, meta, strict=True) if c.strip()]
            caps = kept
        resolved = _resolve(image, base)
        if resolved in row_of:  # the same image on another line: its captions are added
            i = row_of[resolved]
            if caps:
                held = metas[i]
                if not captions[i]:
                    metas[i] = meta
                else:
                    metas[i] = None if held is None or meta is None else held + meta
                captions[i] = captions[i] + caps
            continue
        row_of[resolved] = len(paths)
        paths.append(resolved)
        captions.append(caps)
        metas.append(meta)
        # the keys read as the image and its captions; any other key (a "path" beside an
        # "image") is the record's own
        records.append(
            {k: v for k, v in obj.items() if k not in (image_key, caption_key, "caption_meta")}
        )
    if not paths:
        raise DataError(f"{path}: no images listed")
    split = None
    info = folder / "dataset.json"
    if info.is_file():
        try:
            split = json.loads(info.read_text(encoding="utf-8-sig")).get("split")
        except (OSError, ValueError, AttributeError):  # ValueError: bad JSON or not UTF-8
            split = None
    notes = blanks.notes(path)
    fg = None
    if path.name == "captions.jsonl":
        fg = _read_fg(path.with_name("fg.jsonl"), base, paths, notes)
    return Dataset(
        root=folder,
        format="jsonl",
        image_paths=paths,
        captions=captions,
        records=records,
        caption_meta=None if any(m is None for m in metas) else metas,  # type: ignore[misc]
        fg=fg,
        split=split,
        notes=notes,
    )


class _ImageMatcher:
    """The dataset image a path names: the path resolved as captions.jsonl's paths are, else
    the only image whose path ends with it (``00001.png``, ``images/00001.png``)."""

    def __init__(self, images: Sequence[str]) -> None:
        self.images = set(images)
        self.by_name: dict[str, list[str]] = {}
        for p in images:
            self.by_name.setdefault(os.path.basename(p), []).append(p)

    def __call__(self, name: str, base: Path) -> tuple[str | None, int]:
        """``(image, 1)``, or ``(None, n)`` with ``n`` the images it could be (0: none)."""
        full = _resolve(name, base)
        if full in self.images:
            return full, 1
        tail = os.path.normpath(name)
        if os.path.isabs(tail) or tail == ".." or tail.startswith(".." + os.sep):
            return None, 0
        found = [
            p for p in self.by_name.get(os.path.basename(tail), []) if p.endswith(os.sep + tail)
        ]
        return (found[0], 1) if len(found) == 1 else (None, len(found))


def _read_fg(
    path: Path, base: Path, images: Sequence[str], notes: list[str]
) -> list[dict[str, Any]] | None:
    """The fine-grained items of ``path`` on the dataset's ``images`` (``None``: no file).

    One item per image and positive caption (lines repeating both are merged, their negatives
    united, each once); blank captions are dropped, lines with a blank positive and lines
    naming no image of the dataset are skipped, and ``notes`` told so. An ``fg.jsonl`` none
    of whose lines names a dataset image is an error."""
    if not path.is_file():
        return None
    match = _ImageMatcher(images)
    blanks = _Blanks()
    items: dict[tuple[str, str], dict[str, Any]] = {}
    lines = 0
    unmatched: list[str] = []
    blank_positive: list[int] = []
    for no, obj in _json_lines(path):
        lines += 1
        if not isinstance(obj.get("image"), str) or not isinstance(obj.get("positive"), str):
            raise DataError(f'{path}:{no}: needs "image" and "positive"')
        negs = obj.get("negatives")
        if not isinstance(negs, list) or not all(isinstance(n, str) for n in negs):
            raise DataError(f'{path}:{no}: "negatives" must be a list of strings')
        image, candidates = match(obj["image"], base)
        if image is None:
            why = f", which {candidates} images end with" if candidates > 1 else ""
            unmatched.append(f"line {no} ({obj['image']}{why})")
            continue
        positive = obj["positive"]
        if not positive.strip():
            blank_positive.append(no)
            continue
        negs = blanks.keep(negs, f"line {no}")
        item = items.get((image, positive))
        if item is None:
            items[(image, positive)] = {
                **obj,
                "image": image,
                "negatives": list(dict.fromkeys(negs)),
            }
        else:
            item["negatives"] += [n for n in dict.fromkeys(negs) if n not in item["negatives"]]
    if lines and len(unmatched) == lines:
        raise DataError(
            f"{path}: none of its {_plural(lines, 'line')} names an image of the dataset "
            f"(first: {unmatched[0]}); give the images as captions.jsonl does"
        )
    if unmatched:
        more = ", ..." if len(unmatched) > 3 else ""
        notes.append(
            f"{path}: skipped {len(unmatched)} of {_plural(lines, 'line')} naming no image of "
            f"the dataset: {', '.join(unmatched[:3])}{more}"
        )
    if blank_positive:
        notes.append(
            f"{path}: skipped {_plural(len(blank_positive), 'line')} with a blank positive "
            f"(first: line {blank_positive[0]})"
        )
    notes.extend(blanks.notes(path))
    return list(items.values())


def _read_list(path: Path, images_root: Path | None) -> Dataset:
    base = images_root or path.parent.resolve()
    lines = _read_text(path).splitlines()
    paths = [
        _resolve(s.strip(), base) for s in lines if s.strip() and not s.lstrip().startswith("#")
    ]
    if not paths:
        raise DataError(f"{path}: the list of images is empty")
    return Dataset(path.parent.resolve(), "list", paths, [[] for _ in paths])


# ----------------------------------------------------------------------------- tables
def _read_table_rows(path: Path, text_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The rows of a Parquet or CSV/TSV file; ``text_columns`` of a CSV are read as text (so
    file names and captions that look like numbers stay as written). A CSV must be UTF-8."""
    is_csv = path.suffix.lower() not in (".parquet", ".pq")
    try:
        if not is_csv:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow as pa
            import pyarrow.csv as pcsv

            opts = pcsv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            conv = pcsv.ConvertOptions(column_types={c: pa.string() for c in text_columns})
            table = pcsv.read_csv(path, parse_options=opts, convert_options=conv)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
        bad = _utf8_problem(path) if is_csv else None
        if bad is not None:
            raise bad from None
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot read the table ({first})") from None
    if is_csv:
        import pyarrow as pa

        # pyarrow reads a column that is not valid UTF-8 as bytes
        if any(
            pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in table.schema
        ):
            raise _not_utf8(path)
    return table.to_pylist()


def _pick_column(
    columns: list[str], given: str | None, candidates: tuple[str, ...], what: str, path: Path
) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataError(f"{path}: no {what} column {given!r} (columns: {', '.join(columns)})")
        return given
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


_NUMBERED = re.compile(r"(?P<name>[a-z]+)[ _-]?(?P<n>[0-9]+)", re.IGNORECASE)


def _caption_columns(columns: list[str], given: str | None, path: Path) -> list[str]:
    """The caption columns of a table: ``given``, else the first of :data:`CAPTION_COLUMNS`,
    else the numbered columns of the first such name (``caption_0``, ``caption_1``, ... or
    ``caption1``, ...) in the order of their numbers; none: ``[]``."""
    one = _pick_column(columns, given, CAPTION_COLUMNS, "caption", path)
    if one is not None:
        return [one]
    numbered: dict[str, list[tuple[int, str]]] = {}
    for c in columns:
        m = _NUMBERED.fullmatch(c.strip())
        if m and m["name"].lower() in CAPTION_COLUMNS:
            numbered.setdefault(m["name"].lower(), []).append((int(m["n"]), c))
    name = next((n for n in CAPTION_COLUMNS if n in numbered), None)
    return [] if name is None else [c for _, c in sorted(numbered[name])]


def _as_text(value: Any) -> Any:
    """A number in a text column (a typed Parquet column) as its text; anything else as is."""
    if isinstance(value, float) and value != value:  # NaN: an empty cell
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _table_captions(value: Any, where: str) -> list[str]:
    """The captions of one cell (blank ones included: the caller drops and counts them)."""
    value = _as_text(value)
    if value is None:
        return []
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("[") and s.endswith("]"):
            try:
                return _captions_of(json.loads(s), where)
            except (json.JSONDecodeError, DataError):
                pass
        return [value]
    return _captions_of(value, where)


def _read_table(
    path: Path, image_column: str | None, caption_column: str | None, images_root: Path | None
) -> Dataset:
    rows = _read_table_rows(path)
    if not rows:
        raise DataError(f"{path}: the table has no rows")
    columns = list(rows[0])
    img_col = _pick_column(columns, image_column, IMAGE_COLUMNS, "image", path)
    if img_col is None:
        raise DataError(
            f"{path}: no image column (columns: {', '.join(columns)}); pass --image-column"
        )
    cap_cols = _caption_columns(columns, caption_column, path)
    notes: list[str] = []
    others = [c for c in columns if c != img_col]
    if not cap_cols and others:
        notes.append(
            f"{path}: no caption column among {', '.join(others)}, so the images have no "
            "captions; name it caption (several: caption_0, caption_1, ...) or pass "
            "--caption-column"
        )
    text_cols = [img_col, *cap_cols]
    typed = any(not isinstance(r.get(c), str | list | None) for r in rows for c in text_cols)
    if typed and path.suffix.lower() in (".csv", ".tsv"):
        rows = _read_table_rows(path, text_cols)  # numbers-looking names read back as text
    base = images_root or path.parent.resolve()
    position: dict[str, int] = {}
    paths: list[str] = []
    captions: list[list[str]] = []
    records: list[dict[str, Any]] = []
    blanks = _Blanks()
    for no, row in enumerate(rows, 2 if path.suffix.lower() in (".csv", ".tsv") else 1):
        name = _as_text(row.get(img_col))
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path}: row {no} has no image path in column {img_col!r}")
        full = _resolve(name.strip(), base)
        caps = [c for col in cap_cols for c in _table_captions(row.get(col), f"{path}: row {no}")]
        caps = blanks.keep(caps, f"row {no}")
        i = position.get(full)
        if i is None:
            position[full] = len(paths)
            paths.append(full)
            captions.append(caps)
            records.append({k: v for k, v in row.items() if k != img_col and k not in cap_cols})
        else:
            captions[i].extend(caps)  # repeated captions are kept, as JSONL and Karpathy keep them
    notes.extend(blanks.notes(path))
    return Dataset(path.parent.resolve(), "table", paths, captions, records, notes=notes)


# ----------------------------------------------------------------------------- Karpathy
def _read_karpathy(path: Path, split: str | None, images_root: Path | None) -> Dataset:
    try:
        data = json.loads(_read_text(path), parse_constant=_null)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError(f'{path}: not a Karpathy split file (expected {{"images": [...]}})')
    wanted = None
    if split is not None:
        wanted = {s.strip() for s in split.split(",") if s.strip()}
        unknown = wanted - set(KARPATHY_SPLITS)
        if unknown:
            raise DataError(
                f"unknown split {', '.join(sorted(unknown))} (expected {', '.join(KARPATHY_SPLITS)})"
            )
    base = images_root or _karpathy_root(path, images)
    paths, captions, records = [], [], []
    blanks = _Blanks()
    for no, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("filename"), str):
            raise DataError(f'{path}: images[{no}] has no "filename"')
        if wanted is not None and im.get("split") not in wanted:
            continue
        rel = os.path.join(im.get("filepath") or "", im["filename"])
        caps = []
        for j, s in enumerate(im.get("sentences") or []):
            raw = s.get("raw") if isinstance(s, dict) else str(s)
            if not isinstance(raw, str):
                raise DataError(f'{path}: images[{no}].sentences[{j}] has no "raw" text')
            caps.append(raw.strip())
        paths.append(_resolve(rel, base))
        captions.append(blanks.keep(caps, f"images[{no}]"))
        records.append(
            {
                k: v
                for k, v in im.items()
                if k not in ("sentences", "sentids", "filename", "filepath")
            }
        )
    if not paths:
        have = sorted({str(im.get("split")) for im in images if isinstance(im, dict)})
        raise DataError(f"{path}: no images in split {split!r} (splits: {', '.join(have)})")
    return Dataset(
        path.parent.resolve(),
        "karpathy",
        paths,
        captions,
        records,
        split=split,
        notes=blanks.notes(path),
    )


def _karpathy_root(path: Path, images: list[Any]) -> Path:
    """The folder the image files are under: next to the JSON, or a usual subfolder."""
    folder = path.parent.resolve()
    first = next((im for im in images if isinstance(im, dict) and "filename" in im), None)
    if first is None:
        return folder
    rel = os.path.join(first.get("filepath") or "", first["filename"])
    for cand in (folder, folder / "images", folder / "flickr30k-images", folder / "Images"):
        if (cand / rel).is_file():
            return cand
    return folder


# ----------------------------------------------------------------------------- info
def dataset_info(ds: Dataset, check_files: bool = True) -> dict[str, Any]:
    """Counts of a dataset (images, captions, fine-grained items, scene kinds, missing files)."""
    n_caps = [len(c) for c in ds.captions]
    info: dict[str, Any] = {
        "root": str(ds.root),
        "format": ds.format,
        "split": ds.split,
        "images": len(ds),
        "captions": sum(n_caps),
        "captions_per_image": {"min": min(n_caps), "max": max(n_caps)} if n_caps else None,
        "images_without_captions": sum(1 for n in n_caps if n == 0),
        "caption_meanings": ds.caption_meta is not None,
    }
    scenes = ds.scenes
    if scenes is not None:
        kinds: dict[str, int] = {}
        for s in scenes:
            kinds[str(s.get("kind"))] = kinds.get(str(s.get("kind")), 0) + 1
        info["scene_kinds"] = kinds
    if ds.fg is not None:
        info["fg_items"] = len(ds.fg)
        info["fg_negatives"] = sum(len(f["negatives"]) for f in ds.fg)
    if check_files:
        info["missing_files"] = sum(1 for p in ds.image_paths if not os.path.isfile(p))
    return info
