"""The ``lexlens`` command line: one :func:`main` with subcommands.

Arguments are parsed only here, into one dataclass per command, and handed to the
library (``lexlens.data``, ``lexlens.index``, ``lexlens.search``, ``lexlens.eval``, ...).
Errors reach the user as one line on stderr; ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lexlens.errors import LexlensError

if TYPE_CHECKING:
    from lexlens.index.ingest import ReaderOptions

__all__ = ["main", "build_parser"]


# ----------------------------------------------------------------------------- helpers
def _emit(result: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """Print ``result`` as JSON (``--json``) or as human text."""
    if as_json:
        payload = asdict(result) if is_dataclass(result) else result
        print(json.dumps(payload, indent=2, default=_json_default))
    elif text is not None:
        print(text(result))
    else:
        print(result)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class _NotYet(LexlensError):
    pass


def _not_yet(what: str, issue: int) -> Callable[[Any], int]:
    def run(_: Any) -> int:
        raise _NotYet(f"`lexlens {what}` is not implemented yet (tracked in issue #{issue})")

    return run


# ----------------------------------------------------------------------------- models
@dataclass
class ModelsArgs:
    json: bool = False


def _build_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(_make=lambda ns: ModelsArgs(json=ns.json), _run=_run_models)


def _run_models(a: ModelsArgs) -> int:
    from lexlens.models.registry import BACKENDS, list_models

    models = list_models()

    def text(m: dict[str, list[str]]) -> str:
        lines = []
        for key, names in m.items():
            lines.append(f"{key}:  ({BACKENDS[key].description})")
            lines.extend(f"  {key}:{n}" for n in names)
            if not names:
                lines.append("  (no names known offline; pass a local path)")
        return "\n".join(lines)

    _emit(models, a.json, text)
    return 0


# ----------------------------------------------------------------------------- data  (issue #2)
@dataclass
class DataScenesArgs:
    out: str
    n: int
    seed: int = 0
    size: int = 64
    split: str = "train"
    workers: int | None = None
    json: bool = False
    force: bool = False


@dataclass
class DataInfoArgs:
    path: str
    split: str | None = None
    image_column: str | None = None
    caption_column: str | None = None
    images_root: str | None = None
    json: bool = False


def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that reads a dataset with ``lexlens.data.readers``."""
    p.add_argument(
        "--split", help="split to read (Karpathy: train, val, test, restval; a,b for several)"
    )
    _add_reader_options(p)


def _add_reader_options(p: argparse.ArgumentParser) -> None:
    """``--image-column``, ``--caption-column`` and ``--images DIR``: how a dataset is read,
    the same on every command that reads one."""
    p.add_argument("--image-column", help="CSV/Parquet column holding image paths")
    p.add_argument("--caption-column", help="CSV/Parquet column holding captions")
    p.add_argument(
        "--images",
        dest="images_root",
        metavar="DIR",
        help="folder the dataset's relative image paths start from (default: its folder)",
    )


def _reader_options(
    image_column: str | None, caption_column: str | None, images: str | None
) -> ReaderOptions:
    """The :class:`lexlens.index.ingest.ReaderOptions` of the dataset options."""
    from lexlens.index.ingest import ReaderOptions

    return ReaderOptions(image_column, caption_column, images)


def _build_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="generate or inspect datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    p.set_defaults(_make=lambda ns: ns, _run=lambda _: (p.print_help(), 2)[1])

    s = dsub.add_parser(
        "scenes",
        help="generate the synthetic scenes dataset (folder format)",
        description="Write OUT/images/*.png, captions.jsonl (5 captions, scene record, caption "
        "meanings), fg.jsonl (fine-grained negatives) and dataset.json. Deterministic per "
        "--seed and --split whatever --workers.",
    )
    s.add_argument("out", help="output folder")
    s.add_argument("--n", type=int, required=True, help="number of images")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    s.add_argument("--split", choices=["train", "val", "test"], default="train")
    s.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    s.add_argument("--force", action="store_true", help="replace a scenes dataset already in OUT")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(
        _make=lambda ns: DataScenesArgs(
            ns.out, ns.n, ns.seed, ns.size, ns.split, ns.workers, ns.json, ns.force
        ),
        _run=_run_data_scenes,
    )

    i = dsub.add_parser(
        "info",
        help="counts of any supported dataset",
        description="Read a dataset (folder of images, captions.jsonl folder, .txt list, "
        "CSV/Parquet, Karpathy JSON) and print its counts.",
    )
    i.add_argument("path", help="dataset folder or file")
    _add_dataset_options(i)
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(
        _make=lambda ns: DataInfoArgs(
            ns.path, ns.split, ns.image_column, ns.caption_column, ns.images_root, ns.json
        ),
        _run=_run_data_info,
    )


def _run_data_scenes(a: DataScenesArgs) -> int:
    from lexlens.data.scenes import generate_scenes

    stats = generate_scenes(
        a.out,
        a.n,
        a.seed,
        size=a.size,
        split=a.split,
        workers=a.workers,
        progress=not a.json,
        overwrite=a.force,
    )
    _emit(
        stats,
        a.json,
        lambda s: (
            f"wrote {s['n']} scenes ({s['size']}px, {s['split']}) to {s['out']} in "
            f"{s['seconds']:.1f}s: {s['images_per_second']:.0f} images/s on {s['workers']} workers"
        ),
    )
    return 0


def _run_data_info(a: DataInfoArgs) -> int:
    from lexlens.data.readers import dataset_info, load_dataset

    ds = load_dataset(a.path, a.split, a.image_column, a.caption_column, a.images_root)
    info = dataset_info(ds)

    def text(d: dict[str, Any]) -> str:
        return "\n".join(f"{k}: {v}" for k, v in d.items() if v is not None)

    _emit(info, a.json, text)
    return 0


# ----------------------------------------------------------------------------- train (issue #4)
@dataclass
class TrainArgs:
    out: str
    recipe: str | None = None
    data: str | None = None
    val: str | None = None
    split: str | None = None
    model: str | None = None
    config: str | None = None
    objective: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    hard_negatives: int | None = None
    augment: bool = True
    limit: int | None = None
    seed: int | None = None
    threads: int | None = None
    resume: bool = False
    json: bool = False
    text_expansion: bool | None = None
    force: bool = False
    image_column: str | None = None
    caption_column: str | None = None
    images_root: str | None = None


def _build_train(sub: argparse._SubParsersAction) -> None:
    from lexlens.train.loop import OBJECTIVES

    p = sub.add_parser(
        "train",
        help="train or fine-tune a dual encoder",
        description="Train a native model from a registered config (--config), fine-tune any "
        "model (--model native:/openclip:/hf:) on image-caption pairs (--data), or reproduce a "
        "shipped model with its recipe (--recipe scenes-mini). Checkpoints go to OUT after "
        "every epoch; --resume continues from the last one. The trained model is saved to OUT "
        "and loads as native:OUT (or the backend's own spec with OUT).",
    )
    p.add_argument("--out", required=True, help="output directory (model + checkpoint.pt)")
    p.add_argument(
        "--recipe", help="a named recipe that fixes data and settings (e.g. scenes-mini)"
    )
    p.add_argument("--data", help="training pairs: any dataset lexlens reads")
    p.add_argument("--val", help="validation pairs (default: 5%% of --data)")
    p.add_argument("--split", help="split of --data to read (Karpathy JSON)")
    p.add_argument("--model", help="start from this model (fine-tuning)")
    p.add_argument("--config", help="start from a fresh native config (default scenes-mini)")
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        help="loss terms (default lexlip for native models, clip otherwise; lexical-heads "
        "fits lexicon heads on a frozen model, native:, openclip: or hf:)",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument(
        "--hard-negatives",
        type=int,
        help="swapped captions per image (from fg.jsonl or scenes meanings)",
    )
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument(
        "--no-text-expansion",
        dest="text_expansion",
        action="store_const",
        const=False,
        help="native models: a text's lexicon weighs only its own words (no expansion), so "
        "explanations name query words; refit the heads with --objective lexical-heads",
    )
    p.add_argument("--limit", type=_positive_int, help="use at most this many training images")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--force", action="store_true", help="replace the model or training run already in OUT"
    )
    _add_reader_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(
        _make=lambda ns: TrainArgs(
            ns.out,
            ns.recipe,
            ns.data,
            ns.val,
            ns.split,
            ns.model,
            ns.config,
            ns.objective,
            ns.epochs,
            ns.batch_size,
            ns.lr,
            ns.hard_negatives,
            ns.augment,
            ns.limit,
            ns.seed,
            ns.threads,
            ns.resume,
            ns.json,
            ns.text_expansion,
            ns.force,
            ns.image_column,
            ns.caption_column,
            ns.images_root,
        ),
        _run=_run_train,
    )


def _run_train(a: TrainArgs) -> int:
    from lexlens.errors import UsageError
    from lexlens.train.api import TrainRequest, run_training

    if a.recipe and (a.data or a.model or a.config):
        raise UsageError(
            "--recipe fixes the data and model; do not combine it with --data/--model/--config"
        )
    if not a.recipe and not a.data:
        raise UsageError("give --data DATASET (or --recipe NAME)")
    if a.recipe and a.text_expansion is not None:
        raise UsageError("--recipe fixes the model's settings; --no-text-expansion needs --model")
    if a.model and a.config:
        raise UsageError("--model (fine-tune) and --config (fresh model) exclude each other")
    overrides = {
        k: v
        for k, v in dict(
            objective=a.objective,
            epochs=a.epochs,
            batch_size=a.batch_size,
            lr=a.lr,
            hard_negatives=a.hard_negatives,
            seed=a.seed,
            threads=a.threads,
        ).items()
        if v is not None
    }
    if not a.augment:
        overrides["augment"] = False
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if not a.json else None
    req = TrainRequest(
        a.out,
        a.recipe,
        a.data,
        a.val,
        a.split,
        a.model,
        a.config,
        a.limit,
        overrides,
        a.resume,
        text_expansion=a.text_expansion,
        force=a.force,
        image_column=a.image_column,
        caption_column=a.caption_column,
        images_root=a.images_root,
    )
    summary = run_training(req, progress=not a.json, log=log)

    def text(s: dict[str, Any]) -> str:
        lines = [
            f"trained {s['steps']} steps ({s['epochs']:.1f} epochs, {s['train_pairs']} pairs) in "
            f"{s['seconds']:.0f}s, {s['images_per_second']:.0f} images/s; model saved to {s['model_dir']}"
        ]
        val = s["history"][-1].get("val", {}) if s["history"] else {}
        for kind, v in val.items():
            lines.append(
                f"  val {kind}: rSum {v['rsum']:.1f}  t2i R@1/5/10 "
                + "/".join(f"{v['t2i'][f'R@{k}']:.1f}" for k in (1, 5, 10))
                + "  i2t R@1/5/10 "
                + "/".join(f"{v['i2t'][f'R@{k}']:.1f}" for k in (1, 5, 10))
            )
        lines.append(f"  load it with --model {s['model_spec']}")
        return "\n".join(lines)

    _emit(summary, a.json, text)
    return 0


# ----------------------------------------------------------------------------- index (issue #5)
@dataclass
class IndexBuildArgs:
    source: str
    model: str
    out: str
    spec: str | None = None
    items: str = "images"
    workers: int | None = None
    batch_size: int = 256
    json: bool = False
    ray: str | None = None  # encode on Ray: "local", "auto" or "ray://host:10001"
    ray_workers: int | None = None  # default 2 (with --ray only)
    shard_size: int | None = None  # default 1024 (with --ray only)
    backend: str | None = None  # "milvus://PATH_OR_URI"
    image_column: str | None = None
    caption_column: str | None = None
    images_root: str | None = None


@dataclass
class IndexAddArgs:
    index: str
    source: str
    workers: int | None = None
    batch_size: int = 256
    json: bool = False
    ray: str | None = None
    ray_workers: int | None = None  # default 2 (with --ray only)
    shard_size: int | None = None  # default 1024 (with --ray only)
    image_column: str | None = None
    caption_column: str | None = None
    images_root: str | None = None


@dataclass
class IndexRemoveArgs:
    index: str
    paths: list[str]
    ids: list[int]
    missing: bool = False
    json: bool = False


@dataclass
class IndexInfoArgs:
    index: str
    verify: bool = False
    json: bool = False


@dataclass
class IndexDupsArgs:
    index: str
    threshold: float = 0.95
    json: bool = False


def _build_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, update and inspect indexes")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    p.set_defaults(_make=lambda ns: ns, _run=lambda _: p.print_help() or 2)

    b = isub.add_parser("build", help="encode a dataset into a new index")
    b.add_argument("source", help="dataset folder or file (captions.jsonl, image folder)")
    b.add_argument("--model", required=True, help="model spec, e.g. native:scenes-mini")
    b.add_argument("--out", required=True, help="index directory to create")
    b.add_argument("--spec", help="index spec, e.g. flat, hnsw32, ivf4096,pq32 (default: by size)")
    b.add_argument(
        "--items", choices=["images", "texts"], default="images", help="index images or captions"
    )
    b.add_argument(
        "--workers", type=int, help="image decoding processes (default: CPUs - 1, at most 4)"
    )
    b.add_argument("--batch-size", type=_positive_int, default=256, help="encoding batch size")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    _add_reader_options(b)
    _add_scale_options(b)
    b.add_argument(
        "--backend",
        metavar="milvus://PATH_OR_URI",
        help="keep the index structure in Milvus: milvus://./x.db (Milvus Lite file; "
        "plain `milvus` = INDEX/milvus.db) or milvus://http://host:19530",
    )
    b.set_defaults(
        _make=lambda ns: IndexBuildArgs(
            ns.source,
            ns.model,
            ns.out,
            ns.spec,
            ns.items,
            ns.workers,
            ns.batch_size,
            ns.json,
            ns.ray,
            ns.ray_workers,
            ns.shard_size,
            ns.backend,
            ns.image_column,
            ns.caption_column,
            ns.images_root,
        ),
        _run=_run_index_build,
    )

    a = isub.add_parser("add", help="add new or changed items (resumes after an interruption)")
    a.add_argument("index")
    a.add_argument("source", help="dataset folder or file")
    a.add_argument("--workers", type=int, help="image decoding processes")
    a.add_argument("--batch-size", type=_positive_int, default=256, help="encoding batch size")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    _add_reader_options(a)
    _add_scale_options(a)
    a.set_defaults(
        _make=lambda ns: IndexAddArgs(
            ns.index,
            ns.source,
            ns.workers,
            ns.batch_size,
            ns.json,
            ns.ray,
            ns.ray_workers,
            ns.shard_size,
            ns.image_column,
            ns.caption_column,
            ns.images_root,
        ),
        _run=_run_index_add,
    )

    r = isub.add_parser("remove", help="remove items by path or id, or those whose file is gone")
    r.add_argument("index")
    r.add_argument("paths", nargs="*", help="image paths to remove")
    r.add_argument(
        "--id", dest="ids", type=int, action="append", default=[], help="an item id (repeatable)"
    )
    r.add_argument(
        "--missing", action="store_true", help="remove items whose file no longer exists"
    )
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(
        _make=lambda ns: IndexRemoveArgs(ns.index, ns.paths, ns.ids, ns.missing, ns.json),
        _run=_run_index_remove,
    )

    i = isub.add_parser("info", help="model, spec, counts, sizes of an index")
    i.add_argument("index")
    i.add_argument("--verify", action="store_true", help="re-hash every file against the manifest")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(
        _make=lambda ns: IndexInfoArgs(ns.index, ns.verify, ns.json), _run=_run_index_info
    )

    d = isub.add_parser("dups", help="exact and near-duplicate groups")
    d.add_argument("index")
    d.add_argument(
        "--threshold", type=float, default=0.95, help="cosine similarity for near duplicates"
    )
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(
        _make=lambda ns: IndexDupsArgs(ns.index, ns.threshold, ns.json), _run=_run_index_dups
    )


def _add_scale_options(p: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]`` and its knobs (issue #8: encoding on a Ray cluster)."""
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="encode on Ray: no value = a local Ray, `auto` = the running cluster, "
        "ray://host:10001 = a remote one (shards are resumable)",
    )
    p.add_argument(
        "--ray-workers", type=_positive_int, help="Ray encoder actors, one CPU each (default 2)"
    )
    p.add_argument("--shard-size", type=_positive_int, help="items per Ray shard (default 1024)")


def _ray_hook(
    ray: str | None,
    workers: int | None,
    shard_size: int | None,
    model: Any,
    items: str,
    index: str,
    quiet: bool,
) -> Any:
    """The ``encode_with`` hook for ``--ray`` (None without it); shards live in INDEX/pending/ray."""
    if ray is None:
        if workers is not None or shard_size is not None:
            from lexlens.errors import UsageError

            raise UsageError("--ray-workers and --shard-size apply only with --ray")
        return None
    from lexlens.index.store import IndexDir
    from lexlens.scale.ray_encode import RayEncodeHook, RayOptions

    knobs = {"num_workers": workers, "shard_size": shard_size}
    options = RayOptions(
        address=None if ray == "local" else ray,
        **{name: v for name, v in knobs.items() if v is not None},
    )
    return RayEncodeHook(model, items, IndexDir(index).pending / "ray", options, progress=not quiet)


def _with_ray_stats(report: dict[str, Any], hook: Any) -> dict[str, Any]:
    if hook is not None and hook.stats is not None:
        return {**report, "ray": hook.stats.to_dict()}
    return report


def _report_text(r: dict[str, Any]) -> str:
    lines = [
        f"added {r['added']}, updated {r['updated']}, unchanged {r['skipped']}, failed {r['failed']}"
        + (f", relabelled {r['relabelled']}" if r.get("relabelled") else "")
        + (f", removed {r['removed']}" if r.get("removed") else "")
        + (f", resumed {r['reused']} from checkpoints" if r.get("reused") else ""),
        f"{r['count']} items (generation {r['generation']})",
    ]
    paths, errors = r.get("failed_paths", []), r.get("failed_errors", [])
    lines += [
        f"  unreadable: {p}" + (f" ({errors[i]})" if i < len(errors) else "")
        for i, p in enumerate(paths[:10])
    ]
    if r.get("ray"):
        ray = r["ray"]
        lines.append(
            f"ray: {ray['n_items']} items in {ray['shards_run']} shards "
            f"({ray['shards_skipped']} resumed, {ray['retries']} retried) on {ray['workers']} "
            f"workers: {ray['items_per_s']:.1f} items/s; decode {ray['decode_s']:.1f}s, encode "
            f"{ray['encode_s']:.1f}s, write {ray['write_s']:.1f}s, merge {ray['merge_s']:.1f}s"
        )
    return "\n".join(lines)


def _run_index_build(a: IndexBuildArgs) -> int:
    from lexlens.index.index import Index

    hook = _ray_hook(a.ray, a.ray_workers, a.shard_size, a.model, a.items, a.out, a.json)
    idx = Index.build(
        a.source,
        a.model,
        a.out,
        spec=a.spec,
        items=a.items,
        progress=not a.json,
        workers=a.workers,
        batch_size=a.batch_size,
        encode_with=hook,
        backend=a.backend,
        reader=_reader_options(a.image_column, a.caption_column, a.images_root),
    )
    _emit(
        _with_ray_stats({**idx.last_report, "index": str(idx.path), "spec": str(idx.spec)}, hook),
        a.json,
        lambda r: f"built {r['index']} ({r['spec']})\n" + _report_text(r),
    )
    return 0


def _run_index_add(a: IndexAddArgs) -> int:
    from lexlens.index.index import Index, nothing_read_error

    idx = Index.open(a.index)
    model = idx.info()["model"]
    hook = _ray_hook(a.ray, a.ray_workers, a.shard_size, model, idx.items, a.index, a.json)
    report = idx.add(
        a.source,
        progress=not a.json,
        workers=a.workers,
        batch_size=a.batch_size,
        encode_with=hook,
        reader=_reader_options(a.image_column, a.caption_column, a.images_root),
    )
    err = nothing_read_error(a.source, report, f"{a.index} is unchanged")
    if err is not None:
        raise err
    _emit(_with_ray_stats(report, hook), a.json, _report_text)
    return 0


def _run_index_remove(a: IndexRemoveArgs) -> int:
    from lexlens.errors import UsageError
    from lexlens.index.index import Index

    if not (a.paths or a.ids or a.missing):
        raise UsageError("nothing to remove: give paths, --id ID or --missing")
    idx = Index.open(a.index)
    held = idx.ids_of(a.paths)
    absent = [p for p in a.paths if os.path.abspath(p) not in held]
    held_ids = idx.rows(a.ids)
    absent += [str(i) for i in a.ids if i not in held_ids]
    n = idx.remove([*a.paths, *a.ids], missing=a.missing)
    _emit(
        {"removed": n, "count": len(idx), "not_found": absent},
        a.json,
        lambda r: (
            f"removed {r['removed']}; {r['count']} items left"
            + (f"; not in the index: {', '.join(r['not_found'])}" if r["not_found"] else "")
        ),
    )
    return 0


def _run_index_info(a: IndexInfoArgs) -> int:
    from lexlens.index.index import index_info

    info = index_info(a.index, verify=a.verify)
    _emit(
        info,
        a.json,
        lambda d: "\n".join(
            [f"{k:>22}: {v}" for k, v in d.items() if k != "problems"]
            + [f"{'problem':>22}: {p}" for p in d.get("problems", [])]
        ),
    )
    return 1 if a.verify and not info["verified"] else 0


def _run_index_dups(a: IndexDupsArgs) -> int:
    from lexlens.index.index import Index

    groups = Index.open(a.index).dups(a.threshold, progress=not a.json)

    def text(gs: list[Any]) -> str:
        if not gs:
            return "no duplicates"
        out = []
        for g in gs:
            out.append(f"{g.kind} ({len(g.ids)} items, similarity >= {g.min_similarity:.4f}):")
            texts = g.texts or [None] * len(g.ids)
            out += [
                f'  #{i}  "{t}"  ({p})' if t is not None else f"  #{i}  {p}"
                for i, p, t in zip(g.ids, g.paths, texts, strict=True)
            ]
        return "\n".join(out)

    _emit([asdict(g) for g in groups] if a.json else groups, a.json, text)
    return 0


# ----------------------------------------------------------------------------- search (issue #5)
@dataclass
class SearchArgs:
    index: str
    query: str | None = None
    image: str | None = None
    text: str | None = None
    weight: float = 0.5
    item: int | None = None
    embedding: str | None = None
    k: int = 10
    min_score: float | None = None
    where: str | None = None
    nprobe: int | None = None
    ef: int | None = None
    explain: bool = False
    json: bool = False
    query_mode: str = "encoder"


def _add_query_mode_option(p: argparse.ArgumentParser) -> None:
    """``--query-mode``: how lexical query texts are encoded (issue #6)."""
    from lexlens.models.base import QUERY_MODES

    p.add_argument(
        "--query-mode",
        choices=QUERY_MODES,
        default="encoder",
        help="lexical queries: the full text encoder (default) or inference-free "
        "(tokenise + learned per-token weights, no network)",
    )


def _build_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="query an index by text, image, image+text or embedding")
    p.add_argument("index")
    p.add_argument("query", nargs="?", help="query text, or the path of an image file")
    p.add_argument("--image", help="query image (with --text: image + text)")
    p.add_argument("--text", help="query text (with --image: image + text)")
    p.add_argument(
        "--weight", type=float, default=0.5, help="share of the text in image+text (0..1)"
    )
    p.add_argument(
        "--item", type=int, help="search with a stored item's own vector (more like this)"
    )
    p.add_argument("--embedding", help=".npy file with one embedding [d] or several [n, d]")
    p.add_argument("-k", "--k", type=int, default=10, help="results per query")
    p.add_argument("--min-score", type=float, help="drop results scoring below this")
    p.add_argument("--where", help='metadata filter, e.g. "color=red AND n>2"')
    p.add_argument("--nprobe", type=int, help="IVF lists probed (this query only)")
    p.add_argument("--ef", type=int, help="HNSW efSearch (this query only)")
    p.add_argument("--explain", action="store_true", help="show the words lexical matches share")
    _add_query_mode_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(
        _make=lambda ns: SearchArgs(
            ns.index,
            ns.query,
            ns.image,
            ns.text,
            ns.weight,
            ns.item,
            ns.embedding,
            ns.k,
            ns.min_score,
            ns.where,
            ns.nprobe,
            ns.ef,
            ns.explain,
            ns.json,
            ns.query_mode,
        ),
        _run=_run_search,
    )


def _run_search(a: SearchArgs) -> int:
    from lexlens.index.base import SearchParams
    from lexlens.index.filters import COLUMN_MEANINGS
    from lexlens.index.index import Index
    from lexlens.index.spec import spec_needs
    from lexlens.search import format_results, queries_from_cli

    queries = queries_from_cli(a.query, a.image, a.text, a.weight, a.item, a.embedding)
    idx = Index.open(a.index)
    if a.explain and not spec_needs(idx.spec)[1]:
        print(
            f"lexlens: note: index {a.index} ({idx.spec}) has no lexical weights, so --explain "
            "has nothing to show; a sparse or hybrid index explains its hits",
            file=sys.stderr,
        )
    for name in idx.unknown_fields(a.where):
        print(
            f"lexlens: note: no item of {a.index} has a field {name!r}, so conditions on it "
            "match nothing (nested fields are dotted: scene.count)",
            file=sys.stderr,
        )
    for name in idx.shadowed_fields(a.where):
        print(
            f"lexlens: note: {name!r} in --where is the item column ({COLUMN_MEANINGS[name]}); "
            f"items of {a.index} also have a field {name!r} of their own, which filters cannot "
            "reach (rename it in the dataset to filter on it)",
            file=sys.stderr,
        )
    res = idx.search(
        queries,
        k=a.k,
        params=SearchParams(nprobe=a.nprobe, ef_search=a.ef),
        min_score=a.min_score,
        where=a.where,
        explain=a.explain,
        query_mode=a.query_mode,
    )
    _emit(res.to_dict(), a.json, lambda _: format_results(res))
    return 0


# ----------------------------------------------------------------------------- eval (issue #3)
@dataclass
class EvalArgs:
    model: str
    data: str
    split: str | None = None
    index: str | None = None
    images_root: str | None = None
    limit: int | None = None
    json_out: str | None = None
    batch_size: int = 64
    query_mode: str = "encoder"
    image_column: str | None = None
    caption_column: str | None = None


def _build_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="Recall@K both ways, rSum, fine-grained accuracy",
        description="The standard retrieval protocol: text->image and image->text R@1/5/10, "
        "rSum, mean/median rank; fine-grained accuracy (fg.jsonl) and the ceiling (scene "
        "records) when the data has them. Ties: (-score, id). Values in percent.",
    )
    p.add_argument("--model", required=True, help="model spec, e.g. native:scenes-mini")
    p.add_argument(
        "--data", required=True, help="scenes folder, Karpathy JSON, or CSV/Parquet file"
    )
    p.add_argument("--split", help="split to evaluate (Karpathy JSON: test)")
    p.add_argument(
        "--index",
        metavar="SPEC",
        help="evaluate through an index of this kind (flat, hnsw32, sparse, hybrid(sparse,flat), ...)",
    )
    _add_reader_options(p)
    p.add_argument(
        "--limit", type=_positive_int, help="only the first N images (and their captions)"
    )
    p.add_argument(
        "--json",
        dest="json_out",
        metavar="OUT",
        nargs="?",
        const="-",
        help="write the JSON result to OUT ('-' or no OUT: stdout)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, help="image encoding batch size")
    _add_query_mode_option(p)
    p.set_defaults(
        _make=lambda ns: EvalArgs(
            ns.model,
            ns.data,
            ns.split,
            ns.index,
            ns.images_root,
            ns.limit,
            ns.json_out,
            ns.batch_size,
            ns.query_mode,
            ns.image_column,
            ns.caption_column,
        ),
        _run=_run_eval,
    )


def _run_eval(a: EvalArgs) -> int:
    from lexlens.eval.protocol import evaluate, format_report, load_eval_set
    from lexlens.models.registry import load_encoder

    if a.json_out not in (None, "-"):
        _check_output_file(a.json_out, "--json")
    data = load_eval_set(
        a.data,
        split=a.split,
        images_root=a.images_root,
        limit=a.limit,
        image_column=a.image_column,
        caption_column=a.caption_column,
    )
    encoder = load_encoder(a.model)
    result = evaluate(
        encoder,
        data,
        index_spec=a.index,
        batch_size=a.batch_size,
        progress=a.json_out != "-",
        query_mode=a.query_mode,
    )
    if a.json_out == "-":
        _emit(result, True)
        return 0
    if a.json_out:
        from lexlens.errors import UsageError

        try:
            Path(a.json_out).write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
        except OSError as e:
            print(json.dumps(result, indent=2, default=_json_default))  # nothing is lost
            raise UsageError(f"cannot write {a.json_out}: {e.strerror}") from e
    print(format_report(result))
    return 0


def _check_output_file(path: str, option: str) -> None:
    """Make sure the output file ``path`` can be written before any work: its folder is
    created (as every command's output folder is); a one-line :class:`UsageError` if not."""
    from lexlens.errors import UsageError

    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = e.strerror or str(e)
        above = next((p for p in out.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            why = f"{above} is not a folder"
        raise UsageError(f"cannot write {path}: {why}") from None
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")


# ----------------------------------------------------------------------------- bench (issues #2, #3)
def _build_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed and memory benchmarks")
    bench_sub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    # one builder per benchmark: `encode` (issue #2), `search` (issue #3)
    _build_bench_encode(bench_sub)
    _build_bench_search(bench_sub)
    p.set_defaults(_make=lambda ns: ns, _run=lambda _: (p.print_help(), 2)[1])


@dataclass
class BenchEncodeArgs:
    model: str
    data: str
    n: int = 1000
    batch_size: int = 64
    workers: int | None = None
    split: str | None = None
    json: bool = False
    image_column: str | None = None
    caption_column: str | None = None
    images_root: str | None = None


def _build_bench_encode(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "encode",
        help="images/s of decoding+preprocessing, model forward and end to end",
        description="On the same N images of a dataset, in one run: images per second of "
        "decoding+preprocessing alone (worker processes), of the model forward alone (on the "
        "preprocessed arrays) and of both together.",
    )
    p.add_argument("--model", required=True, help="model spec, e.g. native:scenes-mini")
    p.add_argument(
        "--data", required=True, help="any dataset lexlens reads (folder, list, CSV, ...)"
    )
    p.add_argument("--n", type=int, default=1000, help="images used (the first N; default 1000)")
    p.add_argument(
        "--batch-size", type=_positive_int, default=64, help="forward batch size (default 64)"
    )
    p.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    p.add_argument("--split", help="dataset split to read")
    _add_reader_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(
        _make=lambda ns: BenchEncodeArgs(
            ns.model,
            ns.data,
            ns.n,
            ns.batch_size,
            ns.workers,
            ns.split,
            ns.json,
            ns.image_column,
            ns.caption_column,
            ns.images_root,
        ),
        _run=_run_bench_encode,
    )


def _run_bench_encode(a: BenchEncodeArgs) -> int:
    from lexlens.data.readers import load_dataset
    from lexlens.errors import UsageError
    from lexlens.eval.bench_encode import bench_encode, format_bench_encode
    from lexlens.models.registry import load_encoder

    if a.n <= 0:
        raise UsageError(f"--n must be positive, got {a.n}")
    paths = load_dataset(
        a.data, a.split, a.image_column, a.caption_column, a.images_root
    ).image_paths[: a.n]
    encoder = load_encoder(a.model)
    log = None if a.json else (lambda line: print(line, file=sys.stderr, flush=True))
    result = bench_encode(
        encoder, paths, batch_size=a.batch_size, workers=a.workers, progress=not a.json, log=log
    )
    _emit(result, a.json, format_bench_encode)
    return 0


@dataclass
class BenchSearchArgs:
    model: str
    sizes: str = "1000,10000,100000"
    kinds: str = "flat,hnsw32"
    queries: int = 200
    k: int = 10
    data: str | None = None
    encode: int = 20000
    out: str = "bench-search"
    max_memory: str | None = None
    seed: int = 0
    batch_size: int = 64
    json: bool = False
    sweep: str | None = None


def _build_bench_search(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "search",
        help="build time, size, latency, q/s and recall of index kinds against N",
        description="For each size N and index kind: build time, bytes on disk and in memory, "
        "single-query latency p50/p95/p99, batched q/s, recall@k against exact search. "
        "Writes OUT/bench_search.{md,json,png}.",
    )
    p.add_argument("--model", required=True, help="model spec that encodes the gallery")
    p.add_argument("--sizes", default="1000,10000,100000", help="collection sizes, e.g. 1k,10k,1M")
    p.add_argument(
        "--kinds",
        default="flat,hnsw32",
        help="index specs, comma-separated (ivf1024,pq32 is one spec); ';' also separates",
    )
    p.add_argument("--queries", type=int, default=200, help="number of caption queries")
    p.add_argument("-k", "--k", type=int, default=10, help="results per query (recall@k)")
    p.add_argument("--data", help="dataset whose images are encoded (default: generated scenes)")
    p.add_argument(
        "--encode",
        type=int,
        default=20000,
        help="images encoded at most; larger N get synthetic vectors of the same statistics",
    )
    p.add_argument("--out", default="bench-search", help="folder for the table, JSON and plot")
    p.add_argument("--max-memory", help="memory allowed, e.g. 8G (default: 80%% of available RAM)")
    p.add_argument("--seed", type=int, default=0, help="seed of scenes, queries and synthesis")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="image encoding batch size")
    p.add_argument("--json", action="store_true", help="print the JSON result")
    p.add_argument(
        "--sweep",
        help="query-time values searched per kind, e.g. 'ef=16,64,256;budget=0.002,0.01' "
        "(ef: hnsw, nprobe: ivf, budget: sparse, candidates: hybrid); gives latency/recall curves",
    )
    p.set_defaults(
        _make=lambda ns: BenchSearchArgs(
            ns.model,
            ns.sizes,
            ns.kinds,
            ns.queries,
            ns.k,
            ns.data,
            ns.encode,
            ns.out,
            ns.max_memory,
            ns.seed,
            ns.batch_size,
            ns.json,
            ns.sweep,
        ),
        _run=_run_bench_search,
    )


def _run_bench_search(a: BenchSearchArgs) -> int:
    from lexlens.eval import bench_search as bs

    cfg = bs.BenchSearchConfig(
        model=a.model,
        sizes=bs.parse_sizes(a.sizes),
        kinds=bs.split_kinds(a.kinds),
        queries=a.queries,
        k=a.k,
        data=a.data,
        encode=a.encode,
        out=a.out,
        max_memory=bs.parse_bytes(a.max_memory) if a.max_memory else None,
        seed=a.seed,
        batch_size=a.batch_size,
        progress=not a.json,
        sweep=bs.parse_sweep(a.sweep),
    )
    log = None if a.json else (lambda line: print(line, file=sys.stderr, flush=True))
    result = bs.bench_search(cfg, log=log)
    _emit(result, a.json, lambda r: bs.markdown_table(r) + f"\n\n(written to {a.out}/)")
    return 0


# ----------------------------------------------------------------------------- serve (issue #7)
@dataclass
class ServeArgs:
    indexes: list[str]
    names: list[str] | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_upload_mb: float = 16.0
    max_pixels: int = 40_000_000
    log_level: str = "info"
    json: bool = False


def _build_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP API and web page")
    p.add_argument("indexes", nargs="+", metavar="IDX", help="index folders to serve")
    p.add_argument(
        "--name",
        action="append",
        dest="names",
        help="name of each IDX, in order (default: folder name)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (non-loopback needs --api-key)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument(
        "--api-key", help="key for the write routes (header X-API-Key); default $LEXLENS_API_KEY"
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=16.0, help="largest image upload (413 above)"
    )
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image in pixels")
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument(
        "--json", action="store_true", help="print the address as a JSON line when ready"
    )
    p.set_defaults(
        _make=lambda ns: ServeArgs(
            ns.indexes,
            ns.names,
            ns.host,
            ns.port,
            ns.api_key,
            ns.max_upload_mb,
            ns.max_pixels,
            ns.log_level,
            ns.json,
        ),
        _run=_run_serve,
    )


def _serve_announce(as_json: bool, names: list[str] | None = None) -> Callable[[str], None]:
    def announce(url: str) -> None:
        if as_json:
            print(json.dumps({"url": url, "indexes": names}), flush=True)
        else:
            print(f"Serving on {url} (Ctrl-C to stop)", flush=True)

    return announce


def _run_serve(a: ServeArgs) -> int:
    import os

    from lexlens.errors import UsageError
    from lexlens.server.app import API_KEY_ENV, Limits
    from lexlens.server.run import ServeConfig, serve_indexes

    if a.max_upload_mb <= 0 or a.max_pixels <= 0 or not 0 <= a.port <= 65535:
        raise UsageError("--max-upload-mb and --max-pixels must be positive, --port 0..65535")
    cfg = ServeConfig(
        host=a.host,
        port=a.port,
        api_key=a.api_key or os.environ.get(API_KEY_ENV) or None,
        limits=Limits(
            max_upload_bytes=int(a.max_upload_mb * 1024 * 1024), max_image_pixels=a.max_pixels
        ),
        log_level=a.log_level,
    )
    serve_indexes(a.indexes, a.names, cfg, _serve_announce(a.json, a.names or a.indexes))
    return 0


# ----------------------------------------------------------------------------- demo (issue #4)
@dataclass
class DemoArgs:
    out: str = "demo"
    n: int = 2000
    model: str = "native:scenes-mini"
    k: int = 5
    json: bool = False
    serve: bool = True
    port: int = 8000


def _build_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the scenes demo collection and search it")
    p.add_argument("--out", default="demo", help="folder for the scenes and the index")
    p.add_argument("--n", type=int, default=2000, help="number of scenes")
    p.add_argument("--model", default="native:scenes-mini", help="model spec")
    p.add_argument("-k", "--k", type=int, default=5, help="results shown per query")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then serve the demo index (API + web page) on 127.0.0.1 until Ctrl-C",
    )
    p.add_argument("--port", type=int, default=8000, help="port of --serve")
    p.set_defaults(
        _make=lambda ns: DemoArgs(ns.out, ns.n, ns.model, ns.k, ns.json, ns.serve, ns.port),
        _run=_run_demo,
    )


def _run_demo(a: DemoArgs) -> int:
    from lexlens.demo import run_demo

    report = run_demo(a.out, n=a.n, model=a.model, k=a.k, progress=not a.json)
    _emit(report, a.json, lambda r: r.text)
    if a.serve:
        from lexlens.server.run import ServeConfig, serve_indexes

        cfg = ServeConfig(host="127.0.0.1", port=a.port, log_level="warning")
        serve_indexes([report.index], ["scenes"], cfg, _serve_announce(a.json, ["scenes"]))
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


# ----------------------------------------------------------------------------- parser
_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _build_data,
    _build_train,
    _build_index,
    _build_search,
    _build_eval,
    _build_bench,
    _build_serve,
    _build_models,
    _build_demo,
]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (like every other lexlens error) that point at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one subparser per command)."""
    parser = _Parser(
        prog="lexlens",
        description="Image-text retrieval: dense, lexical and hybrid search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for build in _BUILDERS:
        build(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not getattr(ns, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(ns._run(ns._make(ns)) or 0)
    except LexlensError as e:
        print(f"lexlens: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("lexlens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
