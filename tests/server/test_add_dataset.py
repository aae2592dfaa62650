"""``POST /items`` with a dataset on the server, large enough (64+ images) for the decoding
processes: what they are sent must not be the served (wrapped) model itself."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from server_fakes import FakeEncoder

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def native_model(tmp_path_factory):
    """The folder of a tiny native model (its network class cannot be pickled)."""
    import torch

    from lexlens.models.native import build_native

    d = tmp_path_factory.mktemp("srv-add-model")
    torch.manual_seed(3)
    build_native("tiny", texts=["a red circle"]).save(d / "model")
    return d / "model"


def test_the_served_model_sends_the_cli_preprocessing_to_worker_processes(native_model) -> None:
    from PIL import Image

    from lexlens.index.ingest import _preprocessor
    from lexlens.models.registry import load_encoder
    from lexlens.server.backend import TimedEncoder

    inner = load_encoder(f"native:{native_model}")
    timed = TimedEncoder(inner)
    im = Image.new("RGB", (40, 30), (200, 30, 30))
    for enc in (inner, timed):
        prep = pickle.loads(pickle.dumps(_preprocessor(enc)))  # what the pool receives
        np.testing.assert_array_equal(prep(im), inner.preprocess(im))
    # a model with its own preprocessing keeps it through the wrapper (and both pickle)
    fake = FakeEncoder()
    wrapped = TimedEncoder(fake)
    np.testing.assert_array_equal(wrapped.preprocess(im), fake.preprocess(im))
    prep = pickle.loads(pickle.dumps(_preprocessor(wrapped)))
    np.testing.assert_array_equal(prep(im), fake.preprocess(im))


def test_post_items_adds_a_dataset_of_64_images_with_a_native_model(
    native_model, tmp_path, monkeypatch
) -> None:
    from fastapi.testclient import TestClient

    from lexlens.data.scenes import generate_scenes
    from lexlens.index import ingest
    from lexlens.index.index import Index
    from lexlens.server.app import create_app
    from lexlens.server.backend import Backend

    generate_scenes(tmp_path / "first", 4, seed=1, size=32, workers=1, progress=False)
    generate_scenes(tmp_path / "more", 70, seed=2, size=32, workers=1, progress=False)
    spec = f"native:{native_model}"
    Index.build(tmp_path / "first", spec, tmp_path / "idx", spec="flat", progress=False)
    monkeypatch.setattr(ingest, "default_workers", lambda: 2)  # decode in worker processes
    with TestClient(create_app(Backend.open([tmp_path / "idx"], names=["s"]))) as c:
        r = c.post("/items", json={"source": str(tmp_path / "more")})
        assert r.status_code == 200, r.text
        report = r.json()["report"]
        assert (report["added"], report["failed"], report["count"]) == (70, 0, 74)
        hit = c.post("/search", json={"item": 40, "k": 1}).json()["hits"][0]
    # the same vectors as `lexlens index add` gives
    ref = Index.build(tmp_path / "more", spec, tmp_path / "ref", spec="flat", progress=False)
    mine = Index.open(tmp_path / "idx")
    row = mine.rows([hit["id"]])[hit["id"]]
    ref_id = ref.ids_of([row.path])[row.path][0]
    np.testing.assert_allclose(
        mine.vectors([hit["id"]]).dense, ref.vectors([ref_id]).dense, rtol=1e-5, atol=1e-6
    )
