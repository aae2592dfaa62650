"""Distributed image encoding on Ray: deterministic shards, resumable, fault tolerant.

The input list ``(ids, paths)`` is cut into contiguous shards of ``shard_size`` items (shard
``s`` holds items ``s*shard_size .. (s+1)*shard_size-1`` in input order, so the plan is the same
on every run). A pool of Ray actors, each holding one encoder loaded once (from a spec string
through :func:`lexlens.models.registry.load_encoder`, or from a picklable factory), decodes and
encodes one shard per call and writes ``shard-00012.npz`` into ``out_dir``:

* ``ids`` int64, ``dense`` float32 ``[m, d]`` of the items that decoded;
* ``sparse_indptr`` / ``sparse_indices`` / ``sparse_values`` (CSR) when the encoder has a
  lexical head;
* ``failed_ids`` / ``failed_paths`` / ``failed_errors`` of the files that could not be read.

A shard file is written to a temporary name and renamed into place, so a file named
``shard-*.npz`` is always complete. A rerun with the same plan skips finished shards. When an
actor dies (killed, out of memory, node lost) or a shard raises, the shard goes back to the
queue and a fresh actor takes the dead one's place; a shard that fails ``max_retries + 1`` times
stops the job with a clear error (finished shards stay on disk for the next run).
:func:`merge_shards` reads the shards back in id order into the arrays an index build needs.

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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import LexlensError, UsageError
from lexlens.models.base import Encoder, SparseBatch

__all__ = [
    "encode_with_ray",
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
_PLAN_VERSION = 1

EncoderSource = str | Callable[[], Encoder]


# ----------------------------------------------------------------------------- results
@dataclass
class EncodedItems:
    """Merged encoder output in ascending id order (what an index build consumes)."""

    ids: np.ndarray  # int64 [n]
    dense: np.ndarray  # float32 [n, d]
    sparse: SparseBatch | None
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (id, path, error)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class RayEncodeStats:
    """Throughput and per-stage timings of one :func:`encode_with_ray` run.

    Stage times ``decode_s`` / ``encode_s`` / ``write_s`` are summed over the shards run by the
    workers (worker-seconds); ``wall_s`` is the driver's elapsed time for the encoding stage and
    ``merge_s`` the time to read the shards back. ``items_per_s`` is items of the shards run in
    this call divided by ``wall_s``.
    """

    n_items: int
    n_encoded: int
    n_failed: int
    n_shards: int
    shards_run: int
    shards_skipped: int
    retries: int
    workers: int
    address: str
    dim: int
    lexical: bool
    wall_s: float = 0.0
    decode_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    merge_s: float = 0.0
    items_per_s: float = 0.0
    worker_items_per_s: float = 0.0  # items / (decode_s + encode_s): per-worker (per-core) rate

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class _Shard:
    index: int
    ids: np.ndarray
    paths: list[str]


# ----------------------------------------------------------------------------- plan
def shard_file_name(index: int) -> str:
    """File name of shard ``index`` (``shard-00012.npz``)."""
    return f"shard-{index:05d}.npz"


def plan_shards(ids: np.ndarray, paths: Sequence[str], shard_size: int) -> list[_Shard]:
    """Cut ``(ids, paths)`` into contiguous shards of ``shard_size`` items, in input order."""
    if shard_size < 1:
        raise UsageError(f"shard size must be >= 1, got {shard_size}")
    return [
        _Shard(s, ids[a : a + shard_size], [str(p) for p in paths[a : a + shard_size]])
        for s, a in enumerate(range(0, len(paths), shard_size))
    ]


def _plan_record(encoder_name: str, ids: np.ndarray, paths: Sequence[str], shard_size: int) -> dict:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    for p in paths:
        h.update(str(p).encode("utf-8", "surrogateescape") + b"\0")
    return {
        "version": _PLAN_VERSION,
        "encoder": encoder_name,
        "n_items": len(paths),
        "shard_size": shard_size,
        "digest": h.hexdigest(),
    }


def _check_or_write_plan(out_dir: Path, plan: dict) -> None:
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
    """A finished shard file whose header matches the plan."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return int(z["shard"]) == shard.index and np.array_equal(z["planned_ids"], shard.ids)
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


class _ShardWorker:
    """Body of the Ray actor: one encoder, one shard per :meth:`run` call."""

    def __init__(
        self, encoder: EncoderSource, out_dir: str, batch_size: int, faults: dict[int, str]
    ):
        self.encoder = _load(encoder)
        self.out_dir = Path(out_dir)
        self.batch_size = batch_size
        self.faults = faults

    def describe(self) -> dict[str, Any]:
        return {
            "dim": int(self.encoder.dim),
            "lexical": bool(self.encoder.has_lexical),
            "pid": os.getpid(),
        }

    def run(self, shard: _Shard, attempt: int) -> dict[str, Any]:
        fault = self.faults.get(shard.index) if attempt == 0 else None
        if fault == "raise":
            raise RuntimeError(f"injected fault in shard {shard.index}")
        t0 = time.perf_counter()
        pixels: list[np.ndarray] = []
        ok: list[int] = []
        failed_ids: list[int] = []
        failed_paths: list[str] = []
        failed_errors: list[str] = []
        for i, p in enumerate(shard.paths):
            try:
                pixels.append(self.encoder.preprocess(p))
                ok.append(i)
            except Exception as e:  # noqa: BLE001 - any unreadable file is recorded, not fatal
                failed_ids.append(int(shard.ids[i]))
                failed_paths.append(p)
                failed_errors.append(f"{type(e).__name__}: {e}".splitlines()[0][:500])
        t1 = time.perf_counter()
        enc = self.encoder
        dense = (
            enc.encode_images(pixels, batch_size=self.batch_size)
            if pixels
            else np.zeros((0, enc.dim), np.float32)
        )
        arrays: dict[str, np.ndarray] = {
            "shard": np.int64(shard.index),
            "planned_ids": np.asarray(shard.ids, np.int64),
            "ids": np.asarray(shard.ids, np.int64)[ok],
            "dense": np.asarray(dense, np.float32),
            "failed_ids": np.asarray(failed_ids, np.int64),
            "failed_paths": np.asarray(failed_paths, dtype=str),
            "failed_errors": np.asarray(failed_errors, dtype=str),
        }
        if enc.has_lexical:
            sp = (
                enc.encode_images_lexical(pixels, batch_size=self.batch_size)
                if pixels
                else SparseBatch(
                    np.zeros(1, np.int64),
                    np.zeros(0, np.int32),
                    np.zeros(0, np.float32),
                    len(enc.vocab),
                )
            )
            arrays["sparse_indptr"] = np.asarray(sp.indptr, np.int64)
            arrays["sparse_indices"] = np.asarray(sp.indices, np.int32)
            arrays["sparse_values"] = np.asarray(sp.values, np.float32)
            arrays["sparse_vocab_size"] = np.int64(sp.vocab_size)
        t2 = time.perf_counter()

        def maybe_die() -> None:
            if fault == "exit":
                os._exit(17)  # simulate a killed worker: temp file written, never renamed

        _write_atomic(self.out_dir / shard_file_name(shard.index), arrays, maybe_die)
        t3 = time.perf_counter()
        return {
            "shard": shard.index,
            "n": len(shard.paths),
            "n_failed": len(failed_ids),
            "decode_s": t1 - t0,
            "encode_s": t2 - t1,
            "write_s": t3 - t2,
        }


# ----------------------------------------------------------------------------- driver side
@dataclass
class _RayHandle:
    started_here: bool
    address: str


def _connect(address: str | None, num_workers: int, object_store_mb: int) -> _RayHandle:
    import ray

    if ray.is_initialized():
        return _RayHandle(False, "existing")
    try:
        if address in (None, "", "local"):
            ray.init(
                num_cpus=num_workers,
                include_dashboard=False,
                object_store_memory=object_store_mb * 1024 * 1024,
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


def encode_with_ray(
    encoder: EncoderSource,
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    ids: Sequence[int] | np.ndarray | None = None,
    address: str | None = None,
    num_workers: int = 2,
    shard_size: int = 1024,
    batch_size: int = 64,
    cpus_per_worker: float = 1.0,
    max_retries: int = 3,
    object_store_mb: int = 200,
    progress: bool = False,
) -> tuple[EncodedItems, RayEncodeStats]:
    """Encode image files on Ray into resumable shards under ``out_dir``, then merge them.

    ``encoder`` is a model spec string (``"native:scenes-mini"``) or a picklable zero-argument
    factory returning an :class:`Encoder`. ``ids`` default to ``0..n-1`` (input positions).
    ``address`` is ``None``/``"local"`` (start a local Ray with ``num_workers`` CPUs), ``"auto"``
    (the running cluster) or ``"ray://host:10001"``; an already initialised Ray is reused and left
    running. On a cluster ``out_dir`` must be storage every node can write (shared file system).
    Returns the merged items in id order and the run's statistics.
    """
    paths = [os.fspath(p) for p in paths]
    id_arr = (
        np.arange(len(paths), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    )
    if id_arr.shape != (len(paths),):
        raise UsageError(f"got {len(id_arr)} ids for {len(paths)} paths")
    if len(np.unique(id_arr)) != len(id_arr):
        raise UsageError("ids must be unique")
    if num_workers < 1:
        raise UsageError(f"need at least one worker, got {num_workers}")
    if not paths:
        raise UsageError("nothing to encode: the input list is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write_plan(out, _plan_record(_encoder_name(encoder), id_arr, paths, shard_size))
    shards = plan_shards(id_arr, paths, shard_size)
    todo = [s for s in shards if not _shard_is_done(out / shard_file_name(s.index), s)]

    handle = _connect(address, num_workers, object_store_mb)
    try:
        t0 = time.perf_counter()
        run_stats, retries, info = _run_pool(
            encoder, out, todo, num_workers, batch_size, cpus_per_worker, max_retries, progress
        )
        wall = time.perf_counter() - t0
    finally:
        if handle.started_here:
            import ray

            ray.shutdown()
    t1 = time.perf_counter()
    items = merge_shards(out)
    merge_s = time.perf_counter() - t1
    n_run = sum(r["n"] for r in run_stats)
    dec = sum(r["decode_s"] for r in run_stats)
    enc = sum(r["encode_s"] for r in run_stats)
    stats = RayEncodeStats(
        n_items=len(paths),
        n_encoded=len(items),
        n_failed=len(items.failed),
        n_shards=len(shards),
        shards_run=len(run_stats),
        shards_skipped=len(shards) - len(todo),
        retries=retries,
        workers=num_workers,
        address=handle.address,
        dim=int(items.dense.shape[1]) if items.dense.ndim == 2 else info.get("dim", 0),
        lexical=items.sparse is not None,
        wall_s=wall,
        decode_s=dec,
        encode_s=enc,
        write_s=sum(r["write_s"] for r in run_stats),
        merge_s=merge_s,
        items_per_s=n_run / wall if wall > 0 and n_run else 0.0,
        worker_items_per_s=n_run / (dec + enc) if dec + enc > 0 else 0.0,
    )
    return items, stats


def _run_pool(
    encoder: EncoderSource,
    out: Path,
    todo: list[_Shard],
    num_workers: int,
    batch_size: int,
    cpus_per_worker: float,
    max_retries: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """Feed shards to a pool of actors; replace dead actors and requeue their shards.

    Returns the per-shard stats of the shards run, the number of retries and the encoder's
    description. The actors are killed on the way out, whatever happens.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from lexlens.progress import progress_bar

    if not todo:
        return [], 0, {}
    faults = _parse_faults(os.environ.get(FAULT_ENV))
    remote_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(_ShardWorker)

    def spawn() -> Any:
        return remote_cls.remote(encoder, str(out), batch_size, faults)

    actors = [spawn() for _ in range(min(num_workers, len(todo)))]
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
            info = ray.get(actors[0].describe.remote())
        except (RayActorError, RayTaskError) as e:
            raise LexlensError(f"a ray worker could not load the encoder: {_one_line(e)}") from e
        total = sum(len(s.paths) for s in todo)
        with progress_bar(total=total, desc="ray encode", unit="img", enabled=progress) as bar:
            for slot in range(len(actors)):
                submit(slot)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                slot, shard, attempt = inflight.pop(ready[0])
                try:
                    done.append(ray.get(ready[0]))
                    bar.update(len(shard.paths))
                except (RayActorError, RayTaskError) as e:
                    if attempt >= max_retries:
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
    return done, retries, info


def _one_line(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]


# ----------------------------------------------------------------------------- merge
def merge_shards(out_dir: str | os.PathLike[str]) -> EncodedItems:
    """Read every planned shard of ``out_dir`` into arrays sorted by id.

    Raises when a planned shard is missing (the encoding did not finish) or an id occurs twice.
    """
    out = Path(out_dir)
    plan_file = out / _PLAN_FILE
    if not plan_file.is_file():
        raise UsageError(f"{out} has no {_PLAN_FILE}: not a ray encoding directory")
    plan = json.loads(plan_file.read_text())
    n_shards = -(-int(plan["n_items"]) // int(plan["shard_size"]))
    ids, dense, failed = [], [], []
    sparse: list[SparseBatch] = []
    for s in range(n_shards):
        f = out / shard_file_name(s)
        if not f.is_file():
            raise LexlensError(
                f"shard {s} of {out} is missing: the encoding did not finish; rerun to resume"
            )
        with np.load(f, allow_pickle=False) as z:
            ids.append(z["ids"])
            dense.append(z["dense"])
            failed.extend(
                zip(
                    z["failed_ids"].tolist(),
                    z["failed_paths"].tolist(),
                    z["failed_errors"].tolist(),
                    strict=True,
                )
            )
            if "sparse_indptr" in z:
                sparse.append(
                    SparseBatch(
                        z["sparse_indptr"],
                        z["sparse_indices"],
                        z["sparse_values"],
                        int(z["sparse_vocab_size"]),
                    )
                )
    for tmp in out.glob(".shard-*.tmp-*"):  # leftovers of killed workers
        tmp.unlink(missing_ok=True)
    all_ids = np.concatenate(ids).astype(np.int64)
    all_dense = np.concatenate(dense).astype(np.float32)
    order = np.argsort(all_ids, kind="stable")
    all_ids = all_ids[order]
    if len(all_ids) > 1 and np.any(all_ids[1:] == all_ids[:-1]):
        raise LexlensError(f"duplicate ids across the shards of {out}")
    merged_sparse = _take_rows(SparseBatch.concat(sparse), order) if sparse else None
    failed.sort()
    return EncodedItems(ids=all_ids, dense=all_dense[order], sparse=merged_sparse, failed=failed)


def _take_rows(sp: SparseBatch, order: np.ndarray) -> SparseBatch:
    if np.array_equal(order, np.arange(len(order))):
        return sp
    lens = np.diff(sp.indptr)[order]
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    take = (
        np.concatenate([np.arange(sp.indptr[r], sp.indptr[r + 1]) for r in order])
        if len(order)
        else []
    )
    take = np.asarray(take, dtype=np.int64)
    return SparseBatch(indptr, sp.indices[take], sp.values[take], sp.vocab_size, sp.vocab)
