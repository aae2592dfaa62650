"""``lexlens demo`` / ``make demo``: a scenes collection, indexed with the shipped model, searched.

Steps: check the model loads (one clear line if it does not), generate ``n`` scenes into
``OUT/scenes`` (kept when already there), build ``OUT/index`` (or bring it up to date with
``add``; an index it cannot open, made by another model or layout or damaged, is moved to
``OUT/index.stale`` and built anew), then answer a few text queries and one image query, printing the top results (with
the query words each lexical match shares).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexlens.errors import DataError, IndexMismatchError, ModelNotAvailableError

__all__ = ["DEMO_QUERIES", "DemoReport", "run_demo"]

DEMO_MODEL = "native:scenes-mini"
DEMO_QUERIES = ("a red circle", "two blue stars", "a green triangle above a yellow square")


@dataclass
class DemoReport:
    """What the demo did and found (``results``: one entry per query, as in ``search --json``)."""

    scenes: str
    index: str
    count: int
    build: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""


def _load_model(model: str) -> Any:
    from lexlens.models.registry import load_encoder

    try:
        return load_encoder(model)
    except ModelNotAvailableError as e:
        raise ModelNotAvailableError(
            f"the demo needs the model {model}, which is not available ({e}); "
            "train and ship it first (issue #4) or pass --model"
        ) from None


def _scenes(folder: Path, n: int, seed: int, progress: bool) -> Path:
    """Generate the scenes unless ``folder`` already holds ``n`` of them."""
    from lexlens.data.scenes import generate_scenes

    marker = folder / "captions.jsonl"
    if marker.is_file() and sum(1 for _ in marker.open()) >= n:
        return folder
    generate_scenes(folder, n=n, seed=seed, progress=progress, overwrite=True)
    return folder


def _open_own_index(idx_dir: Path, encoder: Any) -> tuple[Any, str]:
    """``(index, "")``, or ``(None, why)`` when the demo's index cannot be used: made by another
    model or an older layout, or damaged (a damage report is checked by opening once more, so a
    generation published meanwhile is not mistaken for one)."""
    from lexlens.index.index import Index

    why = ""
    for _ in range(2):
        try:
            return Index.open(idx_dir, model=encoder), ""
        except IndexMismatchError as e:
            return None, str(e)
        except DataError as e:
            why = str(e)
    return None, why


def _move_aside(idx_dir: Path, stale: Path) -> Path:
    """Rename ``idx_dir`` to ``stale`` (replacing an older one); one clear error if it cannot."""
    try:
        if stale.is_symlink() or stale.is_file():
            stale.unlink()
        elif stale.exists():
            shutil.rmtree(stale)
        idx_dir.rename(stale)
    except OSError as e:
        raise DataError(
            f"cannot move the unusable demo index {idx_dir} to {stale} ({e.strerror or e}); "
            "remove it or pass another --out"
        ) from None
    return stale


def run_demo(
    out: str | Path = "demo",
    n: int = 2000,
    model: str = DEMO_MODEL,
    k: int = 5,
    seed: int = 2024,
    progress: bool = True,
) -> DemoReport:
    """Run the demo (see module docstring); returns what it printed and found."""
    from lexlens.index.index import Index
    from lexlens.search import Query, format_results

    out = Path(out)
    encoder = _load_model(model)
    scenes = _scenes(out / "scenes", n, seed, progress)
    idx_dir = out / "index"
    index, build, note = None, {}, ""
    if (idx_dir / "CURRENT").is_file():
        index, reason = _open_own_index(idx_dir, encoder)
        if index is None:
            stale = _move_aside(idx_dir, out / "index.stale")
            note = f"rebuilt {idx_dir} (the old one, moved to {stale}: {reason})\n"
        else:
            build = index.add(scenes, progress=progress)
    if index is None:
        index = Index.build(scenes, encoder, idx_dir, progress=progress)
        build = index.last_report
    queries = [Query(text=t) for t in DEMO_QUERIES]
    first = index.rows([0]).get(0)
    if first is not None and first.path:
        queries.append(Query(image=first.path))
    # a lexical index explains its matches by the query words they share
    res = index.search(queries, k=k, explain=True)
    text = (
        note
        + f"demo collection: {len(index)} scenes in {scenes}, index {idx_dir} ({index.spec})\n\n"
        + format_results(res)
    )
    return DemoReport(str(scenes), str(idx_dir), len(index), build, res.to_dict()["results"], text)
