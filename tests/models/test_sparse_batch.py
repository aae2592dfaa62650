"""SparseBatch: CSR rows, dense round trip, row slices."""

from __future__ import annotations

import numpy as np
import pytest

from lexlens.index.base import Vectors
from lexlens.models.base import SparseBatch


@pytest.fixture
def dense() -> np.ndarray:
    x = np.random.default_rng(3).random((6, 9)).astype(np.float32)
    x[x < 0.6] = 0.0
    x[2] = 0.0  # an empty row
    return x


def test_dense_round_trip(dense) -> None:
    np.testing.assert_array_equal(SparseBatch.from_dense(dense).to_dense(), dense)


@pytest.mark.parametrize(("start", "stop"), [(0, 6), (1, 4), (2, 3), (5, 6), (3, 3)])
def test_rows_slice_equals_slicing_the_dense_matrix(dense, start, stop) -> None:
    sb = SparseBatch.from_dense(dense, vocab=[f"w{i}" for i in range(9)])
    part = sb.rows(start, stop)
    assert len(part) == stop - start and part.vocab == sb.vocab
    np.testing.assert_array_equal(part.to_dense(), dense[start:stop])
    v = Vectors(dense=dense, sparse=sb).rows(start, stop)
    np.testing.assert_array_equal(v.dense, dense[start:stop])
    assert v.sparse is not None and len(v) == stop - start
