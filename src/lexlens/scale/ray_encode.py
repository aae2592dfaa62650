"""Distributed encoding on Ray: deterministic shards, resumable, fault tolerant.

The input list (image paths, or caption texts for a caption index) with its ids is cut into
contiguous shards of ``shard_size`` items (shard ``s`` holds items ``s*shard_size ..
(s+1)*shard_size-1`` in input order, so the plan is the same on every run). A pool of Ray
actors, each holding one encoder loaded once (from a spec string through
:func:`lexlens.models.registry.load_encoder`, or from a picklable factory), decodes and
encodes one shard per call -- with the very decode/preprocess function of the local path
(:mod:`lexlens.index.ingest`), so the vectors are the local ones -- and writes
``shard-00012.npz`` into the shard directory:

* ``ids`` int64, ``dense`` float32 ``[m, d]`` of the items that decoded;
* ``sparse_indptr`` / ``sparse_indices`` / ``sparse_values`` (CSR) with lexical weights;
* ``size`` / ``mtime`` / ``file_hash`` / ``pixel_hash`` of each decoded image (what the
  index keeps to find changed files and duplicates);
* ``failed_ids`` / ``failed_paths`` / ``failed_errors`` of the files that could not be read.

A shard file is written to a temporary name and renamed into place, so a file named
``shard-*.npz`` is always complete. A rerun with the same plan skips finished shards. When an
actor dies (killed, out of memory, node lost) or a shard raises, the shard goes back to the
queue and a fresh actor takes the dead one's place; a shard that fails ``max_retries + 1``
times stops the job with a clear error (finished shards stay on disk for the next run).
:func:`iter_shards` / :func:`merge_shards` read the shards back in id order.

Entry points: :func:`encode_with_ray` (Python API: inputs -> merged arrays + statistics) and
:func:`ray_encode_items` (a drop-in for :func:`lexlens.index.ingest.encode_items`, used by
``lexlens index build ... --ray``).

Ray is imported inside functions only (``lexlens.scale`` costs nothing until used). For tests,
``LEXLENS_RAY_FAULT="exit@3,raise@5"`` makes the first attempt of shard 3 kill its worker
process (after writing the temporary file, before the rename) and the first attempt of
shard 5 raise; the job must still finish with every id exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lexlens.errors import LexlensError, UsageError
from lexlens.models.base import Encoder, SparseBatch

if TYPE_CHECKING:
    from lexlens.index.ingest import EncodedBatch, SourceItem

__all__ = [
    "RayOptions",
    "encode_with_ray",
    "ray_encode_items",
    "RayEncodeHook",
    "iter_shards",
    "merge_shards",
    "plan_shards",
    "RayEncodeStats",
    "EncodedItems",
    "FAULT_ENV",
    "shard_file_name",
]

#: environment variable read by the driver for test-only fault injection (see module docstring)
FAULT_ENV = "LEXLENS_RAY_FAULT"
_PLAN_FILE = "plan.json"
_PLAN_VERSION = 2

EncoderSource = str | Callable[[], Encoder]


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run (see :func:`encode_with_ray`)."""

    address: str | None = None  # None/"local": start a local Ray; "auto"; "ray://host:10001"
    num_workers: int = 2
    shard_size: int = 1024
    batch_size: int = 64
    cpus_per_worker: float = 1.0
    max_retries: int = 3
    object_store_mb: int = 200


# ----------------------------------------------------------------------------- results
@dataclass
class EncodedItems:
    """Encoder output in ascending id order (what an index build consumes).

    ``size`` / ``mtime`` / ``file_hash`` / ``pixel_hash`` describe each encoded image (``None``
    for a caption index).
    """

    ids: np.ndarray  # int64 [n]
    dense: np.ndarray  # float32 [n, d]
    sparse: SparseBatch | None
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (id, path, error)
    size: np.ndarray | None = None
    mtime: np.ndarray | None = None
    file_hash: np.ndarray | None = None
    pixel_hash: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class RayEncodeStats:
    """Throughput and per-stage timings of one Ray encoding run.

    Stage times ``decode_s`` / ``encode_s`` / ``write_s`` are summed over the shards run by the
    workers (worker-seconds); ``wall_s`` is the driver's elapsed time for the encoding stage and
    ``merge_s`` the time to read the shards back. ``items_per_s`` is the items of the shards run
    in this call divided by ``wall_s``; ``worker_items_per_s`` the same per worker-second of
    decode + encode (the per-core rate with one CPU per worker).
    """

    n_items: int
    n_shards: int
    shards_run: int
    shards_skipped: int
    retries: int
    workers: int
    address: str
    n_encoded: int = 0
    n_failed: int = 0
    wall_s: float = 0.0
    decode_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    merge_s: float = 0.0
    items_per_s: float = 0.0
    worker_items_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class _Shard:
    index: int
    ids: np.ndarray
    inputs: list[str]


# ----------------------------------------------------------------------------- plan
def shard_file_name(index: int) -> str:
    """File name of shard ``index`` (``shard-00012.npz``)."""
    return f"shard-{index:05d}.npz"


def plan_shards(ids: np.ndarray, inputs: Sequence[str], shard_size: int) -> list[_Shard]:
    """Cut ``(ids, inputs)`` into contiguous shards of ``shard_size`` items, in input order."""
    if shard_size < 1:
        raise UsageError(f"shard size must be >= 1, got {shard_size}")
    return [
        _Shard(s, ids[a : a + shard_size], [str(p) for p in inputs[a : a + shard_size]])
        for s, a in enumerate(range(0, len(inputs), shard_size))
    ]


def _plan_record(
    encoder_name: str,
    items: str,
    want_sparse: bool | None,
    ids: np.ndarray,
    inputs: Sequence[str],
    shard_size: int,
) -> dict[str, Any]:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    for p in inputs:
        h.update(str(p).encode("utf-8", "surrogateescape") + b"\0")
    return {
        "version": _PLAN_VERSION,
        "encoder": encoder_name,
        "items": items,
        "sparse": want_sparse,
        "n_items": len(inputs),
        "shard_size": shard_size,
        "digest": h.hexdigest(),
    }


def _check_or_write_plan(out_dir: Path, plan: dict[str, Any]) -> None:
    f = out_dir / _PLAN_FILE
    if f.is_file():
        old = json.loads(f.read_text())
        if old != plan:
            diff = sorted(k for k in plan if old.get(k) != plan[k])
            raise UsageError(
                f"{out_dir} holds shards of another job (differs in {', '.join(diff)}); "
                "use a fresh directory or delete it"
            )
        return
    tmp = out_dir / f".{_PLAN_FILE}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(plan, indent=2))
    os.replace(tmp, f)


def _encoder_name(encoder: EncoderSource) -> str:
    if isinstance(encoder, str):
        return encoder
    mod = getattr(encoder, "__module__", type(encoder).__module__)
    qual = getattr(encoder, "__qualname__", type(encoder).__qualname__)
    return f"factory:{mod}.{qual}"


def _shard_is_done(path: Path, shard: _Shard) -> bool:
    """A finished shard file whose header matches the plan and whose image files are still
    as they were when it was encoded (size and mtime), so a resumed run never keeps the
    vectors of a file that changed in between."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["shard"]) != shard.index or not np.array_equal(z["planned_ids"], shard.ids):
                return False
            if "mtime" not in z:  # a shard of texts
                return True
            where = {int(i): k for k, i in enumerate(shard.ids)}
            for i, size, mtime in zip(z["ids"], z["size"], z["mtime"], strict=True):
                st = os.stat(shard.inputs[where[int(i)]])
                if (int(st.st_size), float(st.st_mtime)) != (int(size), float(mtime)):
                    return False
            return True
    except (OSError, ValueError, KeyError):
        return False


# ----------------------------------------------------------------------------- worker side
def _parse_faults(spec: str | None) -> dict[int, str]:
    """``"exit@3,raise@5"`` -> ``{3: "exit", 5: "raise"}`` (test-only fault injection)."""
    out: dict[int, str] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        mode, sep, num = part.partition("@")
        if not sep or mode not in ("exit", "raise") or not num.isdigit():
            raise UsageError(f"bad {FAULT_ENV} entry {part!r}: expected exit@N or raise@N")
        out[int(num)] = mode
    return out


def _load(encoder: EncoderSource) -> Encoder:
    if isinstance(encoder, str):
        from lexlens.models.registry import load_encoder

        return load_encoder(encoder)
    return encoder()


def _write_atomic(
    path: Path, arrays: dict[str, np.ndarray], before_rename: Callable[[], None]
) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    before_rename()
    os.replace(tmp, path)


def _sparse_arrays(sp: SparseBatch) -> dict[str, np.ndarray]:
    return {
        "sparse_indptr": np.asarray(sp.indptr, np.int64),
        "sparse_indices": np.asarray(sp.indices, np.int32),
        "sparse_values": np.asarray(sp.values, np.float32),
        "sparse_vocab_size": np.int64(sp.vocab_size),
    }


class _ShardWorker:
    """Body of the Ray actor: one encoder, one shard per :meth:`run` call."""

    def __init__(
        self,
        encoder: EncoderSource,
        out_dir: str,
        items: str,
        want_sparse: bool | None,
        batch_size: int,
        faults: dict[int, str],
    ) -> None:
        self.encoder = _load(encoder)
        self.out_dir = Path(out_dir)
        self.items = items
        self.want_sparse = self.encoder.has_lexical if want_sparse is None else want_sparse
        if self.want_sparse and not self.encoder.has_lexical:
            raise UsageError(f"{self.encoder.name} has no lexical output")
        self.batch_size = batch_size
        self.faults = faults

    def describe(self) -> dict[str, Any]:
        enc = self.encoder
        return {"dim": int(enc.dim), "lexical": bool(self.want_sparse), "pid": os.getpid()}

    def _decode(self, shard: _Shard) -> tuple[list[int], list[Any], dict[str, np.ndarray]]:
        """Decode a shard's images with the local path's function: ok rows, pixels, arrays."""
        from lexlens.index.ingest import _decode_one, _preprocessor

        prep = _preprocessor(self.encoder)
        ok: list[int] = []
        pixels: list[np.ndarray] = []
        info: list[tuple[int, float, str, str]] = []
        failed: list[tuple[int, str, str]] = []
        for i, p in enumerate(shard.inputs):
            status, data = _decode_one(p, prep)
            if status == "ok":
                ok.append(i)
                pixels.append(data[4])
                info.append(data[:4])
            else:
                failed.append((int(shard.ids[i]), p, str(data)))
        arrays = {
            "size": np.asarray([r[0] for r in info], np.int64),
            "mtime": np.asarray([r[1] for r in info], np.float64),
            "file_hash": np.asarray([r[2] for r in info], dtype=str),
            "pixel_hash": np.asarray([r[3] for r in info], dtype=str),
            "failed_ids": np.asarray([f[0] for f in failed], np.int64),
            "failed_paths": np.asarray([f[1] for f in failed], dtype=str),
            "failed_errors": np.asarray([f[2] for f in failed], dtype=str),
        }
        return ok, pixels, arrays

    def _encode(self, inputs: list[Any]) -> dict[str, np.ndarray]:
        enc = self.encoder
        images = self.items == "images"
        if not inputs:
            dense = np.zeros((0, enc.dim), np.float32)
        elif images:
            dense = enc.encode_images(np.stack(inputs), batch_size=self.batch_size)
        else:
            dense = enc.encode_texts(inputs, batch_size=self.batch_size)
        out = {"dense": np.asarray(dense, np.float32)}
        if self.want_sparse:
            if not inputs:
                empty = (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
                sp = SparseBatch(*empty, len(enc.vocab))
            elif images:
                sp = enc.encode_images_lexical(np.stack(inputs), batch_size=self.batch_size)
            else:
                sp = enc.encode_texts_lexical(inputs, batch_size=self.batch_size)
            out.update(_sparse_arrays(sp))
        return out

    def run(self, shard: _Shard, attempt: int) -> dict[str, Any]:
        fault = self.faults.get(shard.index) if attempt == 0 else None
        if fault == "raise":
            raise RuntimeError(f"injected fault in shard {shard.index}")
        t0 = time.perf_counter()
        if self.items == "images":
            ok, inputs, arrays = self._decode(shard)
        else:
            ok, inputs, arrays = list(range(len(shard.inputs))), list(shard.inputs), {}
        t1 = time.perf_counter()
        arrays.update(self._encode(inputs))
        arrays["shard"] = np.int64(shard.index)
        arrays["planned_ids"] = np.asarray(shard.ids, np.int64)
        arrays["ids"] = np.asarray(shard.ids, np.int64)[ok]
        t2 = time.perf_counter()

        def maybe_die() -> None:
            if fault == "exit":
                os._exit(17)  # simulate a killed worker: temp file written, never renamed

        _write_atomic(self.out_dir / shard_file_name(shard.index), arrays, maybe_die)
        t3 = time.perf_counter()
        return {
            "shard": shard.index,
            "n": len(shard.inputs),
            "decode_s": t1 - t0,
            "encode_s": t2 - t1,
            "write_s": t3 - t2,
        }


# ----------------------------------------------------------------------------- driver side
@dataclass
class _RayHandle:
    started_here: bool
    address: str


def _connect(options: RayOptions) -> _RayHandle:
    try:
        import ray
    except ImportError:
        raise LexlensError("--ray needs Ray: pip install 'lexlens[scale]'") from None

    if ray.is_initialized():
        return _RayHandle(False, "existing")
    address = options.address
    try:
        if address in (None, "", "local"):
            ray.init(
                num_cpus=max(1, int(np.ceil(options.num_workers * options.cpus_per_worker))),
                include_dashboard=False,
                object_store_memory=options.object_store_mb * 1024 * 1024,
                ignore_reinit_error=True,
                log_to_driver=False,
                configure_logging=False,
            )
            return _RayHandle(True, "local")
        ray.init(
            address=address, ignore_reinit_error=True, log_to_driver=False, configure_logging=False
        )
        return _RayHandle(True, str(address))
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise LexlensError(f"cannot start or reach Ray at {address or 'local'}: {e}") from e


def _run(
    encoder: EncoderSource,
    inputs: Sequence[str],
    ids: np.ndarray,
    out: Path,
    items: str,
    want_sparse: bool | None,
    options: RayOptions,
    progress: bool,
) -> RayEncodeStats:
    """Plan, skip finished shards, run the rest on Ray; the encoding stage of every entry point."""
    if items not in ("images", "texts"):
        raise UsageError(f"items must be 'images' or 'texts', got {items!r}")
    if ids.shape != (len(inputs),):
        raise UsageError(f"got {len(ids)} ids for {len(inputs)} inputs")
    if len(np.unique(ids)) != len(ids):
        raise UsageError("ids must be unique")
    if options.num_workers < 1:
        raise UsageError(f"need at least one Ray worker, got {options.num_workers}")
    if not inputs:
        raise UsageError("nothing to encode: the input list is empty")
    out.mkdir(parents=True, exist_ok=True)
    name = _encoder_name(encoder)
    _check_or_write_plan(
        out, _plan_record(name, items, want_sparse, ids, inputs, options.shard_size)
    )
    shards = plan_shards(ids, inputs, options.shard_size)
    todo = [s for s in shards if not _shard_is_done(out / shard_file_name(s.index), s)]
    handle = _connect(options) if todo else _RayHandle(False, "none")
    try:
        t0 = time.perf_counter()
        run_stats, retries = _run_pool(encoder, out, todo, items, want_sparse, options, progress)
        wall = time.perf_counter() - t0
    finally:
        if handle.started_here:
            import ray

            ray.shutdown()
    n_run = sum(r["n"] for r in run_stats)
    dec = sum(r["decode_s"] for r in run_stats)
    enc = sum(r["encode_s"] for r in run_stats)
    return RayEncodeStats(
        n_items=len(inputs),
        n_shards=len(shards),
        shards_run=len(run_stats),
        shards_skipped=len(shards) - len(todo),
        retries=retries,
        workers=options.num_workers,
        address=handle.address,
        wall_s=wall,
        decode_s=dec,
        encode_s=enc,
        write_s=sum(r["write_s"] for r in run_stats),
        items_per_s=n_run / wall if wall > 0 and n_run else 0.0,
        worker_items_per_s=n_run / (dec + enc) if dec + enc > 0 else 0.0,
    )


def encode_with_ray(
    encoder: EncoderSource,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    items: str = "images",
    ids: Sequence[int] | np.ndarray | None = None,
    want_sparse: bool | None = None,
    address: str | None = None,
    num_workers: int = 2,
    shard_size: int = 1024,
    batch_size: int = 64,
    cpus_per_worker: float = 1.0,
    max_retries: int = 3,
    object_store_mb: int = 200,
    progress: bool = False,
) -> tuple[EncodedItems, RayEncodeStats]:
    """Encode image files (or caption texts, ``items="texts"``) on Ray, then merge the shards.

    ``encoder`` is a model spec string (``"native:scenes-mini"``) or a picklable zero-argument
    factory returning an :class:`Encoder`. ``ids`` default to ``0..n-1`` (input positions).
    ``want_sparse`` defaults to the encoder having a lexical head. ``address`` is
    ``None``/``"local"`` (start a local Ray with ``num_workers`` CPUs), ``"auto"`` (the running
    cluster) or ``"ray://host:10001"``; an already initialised Ray is reused and left running.
    On a cluster ``out_dir`` must be storage every node can write (a shared file system).
    Shards stay in ``out_dir``: a rerun after an interruption encodes only the missing ones.
    """
    inputs = [os.fspath(p) for p in inputs]
    id_arr = (
        np.arange(len(inputs), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    )
    options = RayOptions(
        address, num_workers, shard_size, batch_size, cpus_per_worker, max_retries, object_store_mb
    )
    out = Path(out_dir)
    stats = _run(encoder, inputs, id_arr, out, items, want_sparse, options, progress)
    t = time.perf_counter()
    merged = merge_shards(out)
    stats.merge_s = time.perf_counter() - t
    stats.n_encoded, stats.n_failed = len(merged), len(merged.failed)
    return merged, stats


def ray_encode_items(
    todo: Sequence[SourceItem],
    model: EncoderSource,
    items: str,
    want_sparse: bool,
    shard_dir: str | os.PathLike[str],
    options: RayOptions | None = None,
    progress: bool = True,
) -> tuple[Iterator[EncodedBatch], RayEncodeStats]:
    """The Ray counterpart of :func:`lexlens.index.ingest.encode_items` for an index build.

    Encodes ``todo`` with the model spec ``model`` on Ray (eagerly: when this returns, every
    shard is on disk), then returns an iterator of :class:`~lexlens.index.ingest.EncodedBatch`
    (one per shard, in input order, read lazily: the merge stage) and the statistics, whose
    ``merge_s`` / ``n_encoded`` / ``n_failed`` grow as the iterator is consumed.
    """
    from lexlens.index.ingest import EncodedBatch, ItemRecord

    options = options or RayOptions()
    inputs = [str(s.path if items == "images" else s.text) for s in todo]
    out = Path(shard_dir)
    stats = _run(
        model,
        inputs,
        np.arange(len(todo), dtype=np.int64),
        out,
        items,
        want_sparse,
        options,
        progress,
    )

    def batches() -> Iterator[EncodedBatch]:
        t = time.perf_counter()
        for part in iter_shards(out):
            recs = []
            for j, i in enumerate(part.ids.tolist()):
                s = todo[i]
                rec = ItemRecord(s.path, s.text, list(s.captions), dict(s.fields))
                if part.file_hash is not None:
                    rec.size, rec.mtime = int(part.size[j]), float(part.mtime[j])
                    rec.file_hash, rec.pixel_hash = str(part.file_hash[j]), str(part.pixel_hash[j])
                recs.append(rec)
            failed = [(p, err) for _, p, err in part.failed]
            stats.n_encoded += len(recs)
            stats.n_failed += len(failed)
            stats.merge_s += time.perf_counter() - t
            yield EncodedBatch(recs, part.dense, part.sparse if want_sparse else None, failed)
            t = time.perf_counter()

    return batches(), stats


class RayEncodeHook:
    """``encode_with`` for :meth:`lexlens.Index.build` / :meth:`lexlens.Index.add`: encode on Ray.

    Shards go to ``shard_dir/plan-DIGEST/`` (one folder per distinct input list, so a rerun of
    the same build resumes and a different one never collides); ``stats`` holds the last
    run's :class:`RayEncodeStats`.
    """

    def __init__(
        self,
        model: EncoderSource,
        items: str,
        shard_dir: str | os.PathLike[str],
        options: RayOptions | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.items = items
        self.shard_dir = Path(shard_dir)
        self.options = options or RayOptions()
        self.progress = progress
        self.stats: RayEncodeStats | None = None

    def __call__(self, todo: Sequence[SourceItem], want_sparse: bool) -> Iterator[EncodedBatch]:
        inputs = [str(s.path if self.items == "images" else s.text) for s in todo]
        ids = np.arange(len(todo), dtype=np.int64)
        plan = _plan_record(
            _encoder_name(self.model), self.items, want_sparse, ids, inputs, self.options.shard_size
        )
        out = self.shard_dir / f"plan-{plan['digest'][:16]}"
        batches, self.stats = ray_encode_items(
            todo, self.model, self.items, want_sparse, out, self.options, self.progress
        )
        return batches


def _run_pool(
    encoder: EncoderSource,
    out: Path,
    todo: list[_Shard],
    items: str,
    want_sparse: bool | None,
    options: RayOptions,
    progress: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Feed shards to a pool of actors; replace dead actors and requeue their shards.

    Returns the per-shard stats of the shards run and the number of retries. The actors are
    killed on the way out, whatever happens.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from lexlens.progress import progress_bar

    if not todo:
        return [], 0
    faults = _parse_faults(os.environ.get(FAULT_ENV))
    remote_cls = ray.remote(num_cpus=options.cpus_per_worker, max_restarts=0)(_ShardWorker)

    def spawn() -> Any:
        return remote_cls.remote(encoder, str(out), items, want_sparse, options.batch_size, faults)

    actors = [spawn() for _ in range(min(options.num_workers, len(todo)))]
    queue: deque[tuple[_Shard, int]] = deque((s, 0) for s in todo)
    inflight: dict[Any, tuple[int, _Shard, int]] = {}
    done: list[dict[str, Any]] = []
    retries = 0

    def submit(slot: int) -> None:
        if queue:
            shard, attempt = queue.popleft()
            inflight[actors[slot].run.remote(shard, attempt)] = (slot, shard, attempt)

    try:
        try:
            ray.get(actors[0].describe.remote())
        except (RayActorError, RayTaskError) as e:
            raise LexlensError(f"a Ray worker could not load the encoder: {_one_line(e)}") from e
        total = sum(len(s.inputs) for s in todo)
        with progress_bar(total=total, desc="ray encode", unit="item", enabled=progress) as bar:
            for slot in range(len(actors)):
                submit(slot)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                slot, shard, attempt = inflight.pop(ready[0])
                try:
                    done.append(ray.get(ready[0]))
                    bar.update(len(shard.inputs))
                except (RayActorError, RayTaskError) as e:
                    if attempt >= options.max_retries:
                        raise LexlensError(
                            f"shard {shard.index} failed on all {attempt + 1} attempt(s), last: "
                            f"{_one_line(e)} (finished shards are kept; rerun to resume)"
                        ) from e
                    retries += 1
                    queue.append((shard, attempt + 1))
                    if isinstance(e, RayActorError):  # the process is gone: take a fresh one
                        ray.kill(actors[slot], no_restart=True)
                        actors[slot] = spawn()
                submit(slot)
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
    return done, retries


def _one_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]


# ----------------------------------------------------------------------------- merge
def _read_plan(out: Path) -> dict[str, Any]:
    plan_file = out / _PLAN_FILE
    if not plan_file.is_file():
        raise UsageError(f"{out} has no {_PLAN_FILE}: not a Ray encoding directory")
    return json.loads(plan_file.read_text())


def iter_shards(out_dir: str | os.PathLike[str]) -> Iterator[EncodedItems]:
    """The planned shards of ``out_dir`` one by one, in shard (= input) order.

    Raises when a planned shard is missing (the encoding did not finish). Removes temporary
    files that killed workers left behind.
    """
    out = Path(out_dir)
    plan = _read_plan(out)
    for tmp in out.glob(".shard-*.tmp-*"):
        tmp.unlink(missing_ok=True)
    n_shards = -(-int(plan["n_items"]) // int(plan["shard_size"]))
    for s in range(n_shards):
        f = out / shard_file_name(s)
        if not f.is_file():
            raise LexlensError(
                f"shard {s} of {out} is missing: the encoding did not finish; rerun to resume"
            )
        with np.load(f, allow_pickle=False) as z:
            sparse = None
            if "sparse_indptr" in z:
                sparse = SparseBatch(
                    z["sparse_indptr"],
                    z["sparse_indices"],
                    z["sparse_values"],
                    int(z["sparse_vocab_size"]),
                )
            failed = (
                list(
                    zip(
                        z["failed_ids"].tolist(),
                        z["failed_paths"].tolist(),
                        z["failed_errors"].tolist(),
                        strict=True,
                    )
                )
                if "failed_ids" in z
                else []
            )
            images = "file_hash" in z
            yield EncodedItems(
                ids=z["ids"],
                dense=z["dense"],
                sparse=sparse,
                failed=failed,
                size=z["size"] if images else None,
                mtime=z["mtime"] if images else None,
                file_hash=z["file_hash"] if images else None,
                pixel_hash=z["pixel_hash"] if images else None,
            )


def merge_shards(out_dir: str | os.PathLike[str]) -> EncodedItems:
    """Every planned shard of ``out_dir`` in one :class:`EncodedItems`, sorted by id.

    Raises when a planned shard is missing or an id occurs twice.
    """
    out = Path(out_dir)
    parts = list(iter_shards(out))
    ids = np.concatenate([p.ids for p in parts]).astype(np.int64)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise LexlensError(f"duplicate ids across the shards of {out}")

    def cat(name: str) -> np.ndarray | None:
        arrs = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrs) else np.concatenate(arrs)[order]

    sparse_parts = [p.sparse for p in parts if p.sparse is not None]
    sparse = _take_rows(SparseBatch.concat(sparse_parts), order) if sparse_parts else None
    failed = sorted(f for p in parts for f in p.failed)
    return EncodedItems(
        ids=ids,
        dense=np.concatenate([p.dense for p in parts]).astype(np.float32)[order],
        sparse=sparse,
        failed=failed,
        size=cat("size"),
        mtime=cat("mtime"),
        file_hash=cat("file_hash"),
        pixel_hash=cat("pixel_hash"),
    )


def _take_rows(sp: SparseBatch, order: np.ndarray) -> SparseBatch:
    if np.array_equal(order, np.arange(len(order))):
        return sp
    lens = np.diff(sp.indptr)[order]
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    pieces = [np.arange(sp.indptr[r], sp.indptr[r + 1]) for r in order]
    take = np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)
    return SparseBatch(indptr, sp.indices[take], sp.values[take], sp.vocab_size, sp.vocab)
