"""The native backend: every registered config builds and encodes; save/load round trips;
lexical outputs obey their contract; one-line errors for what cannot be loaded."""

from __future__ import annotations

import os

import numpy as np
import pytest
from backend_helpers import assert_files_have_open_mode

from lexlens.errors import ModelNotAvailableError, UsageError
from lexlens.models.native import build_native, list_names, load
from lexlens.models.native_config import (
    config_from_dict,
    config_to_dict,
    load_config,
    registered_configs,
)
from lexlens.models.registry import load_encoder

TEXTS = [
    "a red circle on the left",
    "two small blue squares",
    "a green star above a large yellow cross",
]


def _pixels(enc, n: int = 3, seed: int = 0) -> np.ndarray:
    s = enc.preprocess_config.image_size
    return np.random.default_rng(seed).normal(size=(n, 3, s, s)).astype(np.float32)


@pytest.mark.parametrize("name", registered_configs())
def test_every_registered_config_builds_and_encodes(name: str) -> None:
    cfg = load_config(name)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    enc = build_native(name, texts=TEXTS)
    img, txt = enc.encode_images(list(_pixels(enc))), enc.encode_texts(TEXTS)
    assert img.shape == (3, cfg.embed_dim) and txt.shape == (3, cfg.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    sp = enc.encode_texts_lexical(TEXTS)
    assert len(sp) == 3 and (sp.values > 0).all()
    assert all(len(sp.row(i)[0]) <= cfg.lexicon.top_k_text for i in range(3))


def test_unknown_config_keys_are_an_error() -> None:
    d = config_to_dict(load_config("tiny"))
    d["image"]["wdith"] = 3
    with pytest.raises(ModelNotAvailableError, match="wdith"):
        config_from_dict(d)


@pytest.mark.parametrize("mode", ["shortest", "squash"])
def test_image_resize_mode_is_the_configs_and_survives_save(tmp_path, mode) -> None:
    """A 2:1 picture: ``shortest`` keeps its centre square, ``squash`` all of it (the left
    and right quarters, painted in their own colours, stay visible)."""
    from PIL import Image

    from lexlens.data.images import preprocess_image

    d = config_to_dict(load_config("tiny"))
    d["image"]["resize"] = mode
    enc = build_native(config_from_dict(d), texts=TEXTS)
    enc.save(tmp_path / "m")
    back = load_encoder(f"native:{tmp_path / 'm'}")
    assert back.preprocess_config.resize_mode == enc.preprocess_config.resize_mode == mode
    s = enc.preprocess_config.image_size
    arr = np.full((s, 2 * s, 3), 128, np.uint8)
    arr[:, : s // 4] = (255, 0, 0)
    arr[:, -s // 4 :] = (0, 0, 255)
    cfg = back.preprocess_config
    x = preprocess_image(Image.fromarray(arr), cfg)
    rgb = x * np.asarray(cfg.std)[:, None, None] + np.asarray(cfg.mean)[:, None, None]
    red_left = rgb[0, :, 0].mean() > 0.9 and rgb[2, :, 0].mean() < 0.1
    blue_right = rgb[2, :, -1].mean() > 0.9 and rgb[0, :, -1].mean() < 0.1
    assert red_left == blue_right == (mode == "squash")


def test_unknown_resize_mode_is_an_error() -> None:
    d = config_to_dict(load_config("tiny"))
    d["image"]["resize"] = "stretch"
    with pytest.raises(ModelNotAvailableError, match="resize"):
        config_from_dict(d)


def test_save_load_round_trip_identical(tmp_path) -> None:
    enc = build_native("tiny", texts=TEXTS)
    px = _pixels(enc)
    enc.save(tmp_path / "m")
    back = load_encoder(f"native:{tmp_path / 'm'}")
    np.testing.assert_array_equal(back.encode_images(list(px)), enc.encode_images(list(px)))
    np.testing.assert_array_equal(back.encode_texts(TEXTS), enc.encode_texts(TEXTS))
    a, b = back.encode_images_lexical(list(px)), enc.encode_images_lexical(list(px))
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    # a bare directory is a native model spec too
    assert load_encoder(str(tmp_path / "m")).dim == enc.dim


def test_half_precision_save_is_close(tmp_path) -> None:
    enc = build_native("tiny", texts=TEXTS)
    enc.save(tmp_path / "h", half=True)
    back = load(str(tmp_path / "h"))
    np.testing.assert_allclose(back.encode_texts(TEXTS), enc.encode_texts(TEXTS), atol=2e-2)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o027], ids=oct)
@pytest.mark.parametrize("half", [False, True])
def test_saved_files_have_the_mode_of_any_new_file(tmp_path, umask, half) -> None:
    """safetensors writes its weights 0600; lexlens gives them the umask's usual mode."""
    from lexlens.models.files import process_umask

    enc = build_native("tiny", texts=TEXTS)
    old = os.umask(umask)
    try:
        assert process_umask() == umask
        enc.save(tmp_path / "m", half=half)
        enc.save(tmp_path / "m", half=half)  # replacing a saved model too
        names = sorted(p.name for p in (tmp_path / "m").iterdir())
        assert names == ["lexlens.json", "model.safetensors"]
        assert_files_have_open_mode(tmp_path / "m")
        assert (tmp_path / "m" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)


def test_lexical_rows_are_topk_of_the_head(tmp_path) -> None:
    """encode_texts_lexical == top-k of the head's weights, snapped to 8-bit levels."""
    import torch

    from lexlens.models.lexicon import snap

    enc = build_native("tiny", texts=TEXTS)
    net = enc.net
    lc = enc.cfg.lexicon
    tok = net.tokenize(TEXTS)
    with torch.no_grad():
        w = net.text_lexical(net.text_states(tok), tok).numpy()
    sp = enc.encode_texts_lexical(TEXTS)
    ids = net.active_ids.numpy()
    for r in range(len(TEXTS)):
        order = sorted(range(len(ids)), key=lambda j: (-w[r, j], ids[j]))[: lc.top_k_text]
        want = {
            int(ids[j]): float(snap(np.array([w[r, j]]), lc.quant_max, lc.quant_bits)[0])
            for j in order
            if w[r, j] > 0
        }
        want = {k: v for k, v in want.items() if v > 0}
        got_i, got_v = sp.row(r)
        assert dict(zip(got_i.tolist(), got_v.tolist(), strict=True)) == pytest.approx(want)
        assert sp.vocab is not None and all(sp.vocab[i] for i in got_i)


def test_inference_free_queries_use_only_the_query_words() -> None:
    enc = build_native("tiny", texts=TEXTS)
    assert set(enc.lexical_query_modes) == {"encoder", "inference-free"}
    sp = enc.encode_texts_lexical(["red circle", "zebra"], mode="inference-free")
    words = {enc.vocab[i] for i in sp.row(0)[0]}
    assert words == {"red", "circle"}
    assert len(sp.row(1)[0]) == 0  # no active word piece in the query
    with pytest.raises(UsageError):
        enc.encode_texts_lexical(["x"], mode="telepathy")


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
def test_query_texts_in_one_pass_equal_the_separate_calls(mode) -> None:
    """encode_text_queries gives exactly encode_texts + encode_texts_lexical, across batches."""
    from lexlens.models.base import Encoder

    enc = build_native("tiny", texts=TEXTS)
    texts = [*TEXTS, "a pair of red circles", "zebra", "a small blue star to the left"]
    for impl in (
        enc.encode_text_queries,
        lambda t, m, b: Encoder.encode_text_queries(enc, t, m, b),
    ):
        dense, sparse = impl(texts, mode, 2)
        assert np.array_equal(dense, enc.encode_texts(texts, batch_size=2))
        want = enc.encode_texts_lexical(texts, batch_size=2, mode=mode)
        assert np.array_equal(sparse.indptr, want.indptr)
        assert np.array_equal(sparse.indices, want.indices)
        assert np.array_equal(sparse.values, want.values)
    with pytest.raises(UsageError):
        enc.encode_text_queries(["x"], "telepathy")


def test_training_mode_is_kept_while_encoding() -> None:
    enc = build_native("tiny", texts=TEXTS)
    enc.trainable().train()
    enc.encode_texts(TEXTS)
    assert enc.trainable().training


def test_load_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(ModelNotAvailableError, match="no native model 'nope'"):
        load("nope")
    with pytest.raises(ModelNotAvailableError, match="has no trained weights"):
        load("tiny")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "lexlens.json").write_text("{not json")
    with pytest.raises(ModelNotAvailableError, match="not a readable lexlens model"):
        load(str(tmp_path / "bad"))
    for e in ("nope", "tiny"):
        try:
            load(e)
        except ModelNotAvailableError as err:
            assert "\n" not in str(err)


def test_shipped_models_load() -> None:
    for name in list_names():
        enc = load(name)
        assert enc.encode_texts(TEXTS).shape == (3, enc.dim)
