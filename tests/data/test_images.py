"""Preprocessing against naive numpy references; bad files skipped and counted."""

import numpy as np
import pytest
from PIL import Image

from lexlens.data.images import (
    iter_preprocessed,
    load_rgb,
    preprocess_image,
)
from lexlens.models.base import PreprocessConfig

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _naive_normalise(rgb_uint8: np.ndarray) -> np.ndarray:
    """Loop over channels: (x / 255 - mean) / std, channels first."""
    h, w, _ = rgb_uint8.shape
    out = np.zeros((3, h, w), np.float32)
    for c in range(3):
        for y in range(h):
            for x in range(w):
                out[c, y, x] = (rgb_uint8[y, x, c] / 255.0 - MEAN[c]) / STD[c]
    return out


def _pixels(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_centre_crop_without_resize_is_exact():
    px = _pixels(20, 32)  # shorter side already the target: only the crop remains
    cfg = PreprocessConfig(image_size=20, mean=MEAN, std=STD)
    got = preprocess_image(Image.fromarray(px), cfg)
    assert got.dtype == np.float32 and got.shape == (3, 20, 20)
    np.testing.assert_allclose(got, _naive_normalise(px[:, 6:26]), atol=1e-5)
    tall = _pixels(33, 20, seed=1)
    got = preprocess_image(Image.fromarray(tall), cfg)
    np.testing.assert_allclose(got, _naive_normalise(tall[6:26, :]), atol=1e-5)


def test_resize_then_crop_matches_a_reference():
    px = _pixels(30, 60, seed=2)
    cfg = PreprocessConfig(image_size=10, mean=MEAN, std=STD, interpolation="bilinear")
    ref = np.asarray(Image.fromarray(px).resize((20, 10), Image.Resampling.BILINEAR))[:, 5:15]
    np.testing.assert_allclose(
        preprocess_image(Image.fromarray(px), cfg), _naive_normalise(ref), atol=1e-5
    )
    # nearest neighbour downscale by 3 is plain subsampling: a reference with no PIL at all
    cfg = PreprocessConfig(
        image_size=10, mean=MEAN, std=STD, interpolation="nearest", resize_mode="squash"
    )
    px = _pixels(30, 30, seed=3)
    np.testing.assert_allclose(
        preprocess_image(Image.fromarray(px), cfg), _naive_normalise(px[1::3, 1::3]), atol=1e-5
    )


def test_squash_keeps_the_whole_picture():
    px = np.zeros((10, 40, 3), np.uint8)
    px[:, :5] = 255  # a white band at the far left survives squash, not centre crop
    white = [(1 - m) / s for m, s in zip(MEAN, STD, strict=True)]
    sq = preprocess_image(Image.fromarray(px), PreprocessConfig(10, MEAN, STD, "squash", "nearest"))
    cr = preprocess_image(
        Image.fromarray(px), PreprocessConfig(10, MEAN, STD, "shortest", "nearest")
    )
    np.testing.assert_allclose(
        sq[:, :, 0], np.array(white, np.float32)[:, None].repeat(10, 1), atol=1e-5
    )
    assert (cr < 0).all()


def test_modes_become_rgb(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0
    rgba[0, 0, 3] = 255
    got = np.asarray(load_rgb(Image.fromarray(rgba, "RGBA")))
    assert tuple(got[0, 0]) == (200, 0, 0) and tuple(got[1, 1]) == (255, 255, 255)  # over white
    la = np.asarray(load_rgb(Image.fromarray(np.full((3, 3), 77, np.uint8), "L")))
    assert (la == 77).all() and la.shape == (3, 3, 3)
    i16 = Image.fromarray(np.full((3, 3), 65535, np.uint16))
    assert (np.asarray(load_rgb(i16)) == 255).all()
    pal = Image.fromarray(_pixels(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(
        np.asarray(load_rgb(tmp_path / "p.png")), np.asarray(pal.convert("RGB"))
    )
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_rgb(tmp_path / "a.gif"))[3, 3]) == (255, 0, 0)


def test_jpeg_draft_mode_decodes_small_targets_close_to_full_decoding(tmp_path):
    y, x = np.mgrid[0:512, 0:768]
    px = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(px).save(tmp_path / "big.jpg", quality=95)
    assert min(load_rgb(tmp_path / "big.jpg", target_size=64).size) in range(64, 256)
    assert load_rgb(tmp_path / "big.jpg").size == (768, 512)
    cfg = PreprocessConfig(64, MEAN, STD)
    fast = preprocess_image(tmp_path / "big.jpg", cfg)
    with Image.open(tmp_path / "big.jpg") as im:
        full = preprocess_image(im.convert("RGB"), cfg)
    assert np.abs(fast - full).mean() < 0.1


def _write_collection(folder):
    folder.mkdir()
    paths = []
    for i in range(7):
        p = folder / f"{i}.png"
        Image.fromarray(_pixels(12, 12, seed=i)).save(p)
        paths.append(p)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) // 2])  # truncated
    paths[4].write_text("not an image")
    paths.append(folder / "missing.png")
    return [str(p) for p in paths]


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_files_are_skipped_counted_and_reported(tmp_path, workers):
    paths = _write_collection(tmp_path / "imgs")
    cfg = PreprocessConfig(8, MEAN, STD)
    lines = []
    batches = iter_preprocessed(paths, cfg, workers=workers, batch_size=3, log=lines.append)
    batches.chunk_size = 2  # several worker tasks even for a few files
    got = list(batches)
    positions = np.concatenate([p for p, _ in got]).tolist()
    assert positions == [0, 1, 3, 5, 6]
    assert [len(p) for p, _ in got] == [3, 2]
    arrays = np.concatenate([a for _, a in got])
    for k, i in enumerate(positions):
        np.testing.assert_array_equal(arrays[k], preprocess_image(paths[i], cfg))
    rep = batches.report
    assert (rep.total, rep.ok, rep.n_failed) == (8, 5, 3)
    assert [p for p, _ in rep.failed] == [paths[2], paths[4], paths[7]]
    assert all(why for _, why in rep.failed)
    assert len(lines) == 1 and "skipped 3" in lines[0]
