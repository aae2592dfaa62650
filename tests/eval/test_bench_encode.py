"""``bench encode`` with a tiny fake encoder: the three stages see the same images."""

import json
import time

import numpy as np
import pytest

from lexlens.cli import main
from lexlens.data.images import preprocess_image
from lexlens.errors import UsageError
from lexlens.eval.bench_encode import bench_encode, format_bench_encode
from lexlens.models.base import Encoder, PreprocessConfig, l2_normalize


class CountingEncoder(Encoder):
    """Embedding = per-channel mean and std of the pixels; counts images; optional delay."""

    def __init__(self, delay_per_image: float = 0.0) -> None:
        self.name = "test:counting"
        self.dim = 6
        self.preprocess_config = PreprocessConfig(image_size=16)
        self.delay = delay_per_image
        self.seen = 0

    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        assert pixels.dtype == np.float32 and pixels.shape[1:] == (3, 16, 16)
        self.seen += len(pixels)
        if self.delay:
            time.sleep(self.delay * len(pixels))
        return np.concatenate([pixels.mean(axis=(2, 3)), pixels.std(axis=(2, 3))], axis=1)

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), self.dim), np.float32)


def _images(tmp_path, n):
    from lexlens.data.scenes import generate_scenes

    generate_scenes(tmp_path / "sc", n, seed=2, size=24, workers=1, progress=False)
    return [str(tmp_path / "sc" / "images" / f"{i:06d}.png") for i in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_three_stages_on_the_same_images(tmp_path, workers):
    paths = _images(tmp_path, 23)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    paths.insert(5, str(tmp_path / "broken.png"))
    enc = CountingEncoder()
    r = bench_encode(enc, paths, batch_size=4, workers=workers)
    assert (r["n"], r["failed"]) == (24, 1) and "broken.png" in r["failed_examples"][0]
    assert r["decode"]["images"] == r["forward"]["images"] == r["end_to_end"]["images"] == 23
    # warm-up batch + forward alone + end to end
    assert enc.seen == 4 + 23 + 23
    assert r["consistent"] and r["max_abs_diff"] <= 1e-5
    for stage in ("decode", "forward", "end_to_end"):
        s = r[stage]
        assert s["seconds"] > 0 and s["images_per_second"] == pytest.approx(
            s["images"] / s["seconds"], rel=0.01
        )
    assert r["bottleneck"] in ("decode", "forward") and r["workers"] == workers
    text = format_bench_encode(r)
    assert "end_to_end" in text and "unreadable" in text


@pytest.mark.parametrize("workers", [0, 2])
def test_every_stage_runs_a_caching_encoder(tmp_path, workers):
    """The lexical: adapter keeps recent forward passes for index building's lexical pass:
    none may serve the bench's warm-up, forward and end-to-end passes over the same images."""
    from lexlens.models.lexical_adapter import LexicalAdapter, parse_lexical_options

    paths = _images(tmp_path, 23)
    inner = CountingEncoder()
    enc = LexicalAdapter(inner, parse_lexical_options("words=scenes"))
    r = bench_encode(enc, paths, batch_size=4, workers=workers)
    assert r["forward"]["images"] == r["end_to_end"]["images"] == 23 and r["consistent"]
    assert inner.seen == 4 + 23 + 23
    # a second run measures the model again too
    bench_encode(enc, paths, batch_size=4, workers=workers)
    assert inner.seen == 2 * (4 + 23 + 23)


def test_forward_rate_reflects_the_model(tmp_path):
    paths = _images(tmp_path, 12)
    r = bench_encode(CountingEncoder(delay_per_image=0.01), paths, batch_size=4, workers=0)
    # 10 ms an image cannot run faster than 100 images/s, alone or end to end
    assert r["forward"]["images_per_second"] <= 100 and r["end_to_end"]["images_per_second"] <= 100


def test_embeddings_are_those_of_the_preprocessed_images(tmp_path):
    paths = _images(tmp_path, 5)
    enc = CountingEncoder()
    ref = l2_normalize(
        enc._forward_images(np.stack([preprocess_image(p, enc.preprocess_config) for p in paths]))
    )
    np.testing.assert_allclose(enc.encode_images(paths), ref, atol=1e-6)
    assert bench_encode(enc, paths, workers=0)["consistent"]


def test_nothing_decodable_is_an_error(tmp_path):
    (tmp_path / "x.png").write_text("no")
    with pytest.raises(UsageError, match="could be decoded"):
        bench_encode(CountingEncoder(), [str(tmp_path / "x.png")], workers=0)
    with pytest.raises(UsageError):
        bench_encode(CountingEncoder(), [], workers=0)


@pytest.fixture
def counting_backend():
    from lexlens.models import registry

    registry._ensure_builtin_backends()
    registry.register_backend("benchtest", lambda target: CountingEncoder())
    yield "benchtest:x"
    registry.BACKENDS.pop("benchtest", None)


def test_cli_bench_encode(tmp_path, counting_backend, capsys):
    _images(tmp_path, 10)
    argv = [
        "bench",
        "encode",
        "--model",
        counting_backend,
        "--data",
        str(tmp_path / "sc"),
        "--n",
        "7",
        "--batch-size",
        "3",
        "--workers",
        "0",
    ]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 7 and r["end_to_end"]["images"] == 7 and r["batch_size"] == 3
    assert main(argv) == 0
    assert "forward" in capsys.readouterr().out
    assert main([*argv[:-2], "--n", "0"]) == 2
