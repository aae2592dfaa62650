"""Ray encoding on a local two-worker Ray: same vectors as the local path, resumable,
a killed or failing worker's shard is redone and nothing is lost or duplicated."""

from __future__ import annotations

import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from scale_fakes import make_fake_encoder, write_images  # noqa: E402

from lexlens.errors import LexlensError, UsageError  # noqa: E402
from lexlens.index.ingest import encode_items, read_source  # noqa: E402
from lexlens.models.base import SparseBatch  # noqa: E402
from lexlens.scale.ray_encode import (  # noqa: E402
    FAULT_ENV,
    RayOptions,
    encode_with_ray,
    merge_shards,
    ray_encode_items,
    shard_file_name,
)

BAD = 17  # position of the unreadable file


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """40 tiny images plus one unreadable file at position BAD."""
    root = tmp_path_factory.mktemp("imgs")
    paths = write_images(root, 40)
    bad = root / "broken.png"
    bad.write_bytes(b"not an image")
    paths.insert(BAD, bad)
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def local(collection):
    """The local path of the index engine (one process, no shards) on the same files."""
    batches = list(
        encode_items(
            read_source(collection),
            make_fake_encoder(),
            "images",
            True,
            batch_size=16,
            workers=0,
            progress=False,
        )
    )
    recs = [r for b in batches for r in b.records]
    dense = np.concatenate([b.dense for b in batches])
    sparse = SparseBatch.concat([b.sparse for b in batches])
    failed = [f for b in batches for f in b.failed]
    return recs, dense, sparse, failed


def _check_same_as_local(items, collection, local):
    recs, dense, sparse, failed = local
    assert [collection[i] for i in items.ids] == [r.path for r in recs]
    np.testing.assert_array_equal(items.ids, [i for i in range(41) if i != BAD])
    np.testing.assert_allclose(items.dense, dense, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(items.sparse.indptr, sparse.indptr)
    np.testing.assert_array_equal(items.sparse.indices, sparse.indices)
    np.testing.assert_allclose(items.sparse.values, sparse.values, rtol=0, atol=1e-6)
    assert items.file_hash.tolist() == [r.file_hash for r in recs]
    assert items.pixel_hash.tolist() == [r.pixel_hash for r in recs]
    assert [(i, p) for i, p, _ in items.failed] == [(BAD, collection[BAD])]
    assert [p for p, _ in failed] == [collection[BAD]]


def test_two_workers_match_local_path_and_rerun_skips(local_ray, collection, local, tmp_path):
    run = dict(num_workers=2, shard_size=7)
    items, stats = encode_with_ray(make_fake_encoder, collection, tmp_path, **run)
    _check_same_as_local(items, collection, local)
    assert stats.n_shards == 6 and stats.shards_run == 6 and stats.retries == 0
    assert stats.n_encoded == 40 and stats.n_failed == 1
    assert stats.decode_s > 0 and stats.encode_s > 0 and stats.write_s > 0 and stats.items_per_s > 0

    # rerun: everything is on disk already
    items2, stats2 = encode_with_ray(make_fake_encoder, collection, tmp_path, **run)
    assert stats2.shards_run == 0 and stats2.shards_skipped == 6
    np.testing.assert_array_equal(items2.dense, items.dense)

    # a lost shard file is the only one redone
    (tmp_path / shard_file_name(3)).unlink()
    _, stats3 = encode_with_ray(make_fake_encoder, collection, tmp_path, **run)
    assert (stats3.shards_run, stats3.shards_skipped) == (1, 5)
    _check_same_as_local(merge_shards(tmp_path), collection, local)

    # a file changed since its shard was written: that shard is redone, the others kept
    path = collection[16]  # shard 2 (ids 14..20)
    st = os.stat(path)
    try:
        os.utime(path, (st.st_atime, st.st_mtime + 5))
        _, stats4 = encode_with_ray(make_fake_encoder, collection, tmp_path, **run)
        assert (stats4.shards_run, stats4.shards_skipped) == (1, 5)
    finally:
        os.utime(path, (st.st_atime, st.st_mtime))

    # another job in the same directory is refused, nothing is overwritten
    with pytest.raises(UsageError, match="another job"):
        encode_with_ray(make_fake_encoder, collection, tmp_path, num_workers=2, shard_size=5)

    # the index engine's entry point: EncodedBatch records like encode_items gives
    batches, st = ray_encode_items(
        read_source(collection),
        make_fake_encoder,
        "images",
        True,
        tmp_path / "idx",
        RayOptions(shard_size=9),
    )
    batches = list(batches)
    recs, dense, _, failed = local
    assert [r for b in batches for r in b.records] == recs
    np.testing.assert_allclose(np.concatenate([b.dense for b in batches]), dense, rtol=0, atol=1e-6)
    assert [f for b in batches for f in b.failed][0][0] == failed[0][0]
    assert st.n_encoded == 40 and st.n_failed == 1 and st.merge_s > 0


def test_killed_and_failing_workers_are_retried(
    local_ray, collection, local, tmp_path, monkeypatch
):
    # shard 1: the worker process dies after writing its temp file; shard 4: the shard raises
    monkeypatch.setenv(FAULT_ENV, "exit@1,raise@4")
    items, stats = encode_with_ray(
        make_fake_encoder, collection, tmp_path, num_workers=2, shard_size=7, max_retries=1
    )
    assert stats.retries == 2 and stats.shards_run == 6
    assert len(np.unique(items.ids)) == len(items.ids) == 40
    _check_same_as_local(items, collection, local)
    assert not list(tmp_path.glob(".shard-*"))  # the dead worker's temp file is gone

    # without retries the same fault stops the job with a clear error, finished shards stay
    monkeypatch.setenv(FAULT_ENV, "raise@2")
    out2 = tmp_path / "again"
    with pytest.raises(LexlensError, match="shard 2 failed on all 1 attempt"):
        encode_with_ray(
            make_fake_encoder, collection, out2, num_workers=2, shard_size=7, max_retries=0
        )
    assert not (out2 / shard_file_name(2)).exists()
    monkeypatch.delenv(FAULT_ENV)
    _, stats2 = encode_with_ray(make_fake_encoder, collection, out2, num_workers=2, shard_size=7)
    assert stats2.shards_run >= 1 and stats2.shards_run + stats2.shards_skipped == 6
    _check_same_as_local(merge_shards(out2), collection, local)
