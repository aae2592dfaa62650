"""The ``openclip:`` backend on a tiny random-initialised architecture (no downloads).

References are computed with open_clip's own model and tokenizer and a naive numpy
normalisation, never with the backend under test.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend_helpers import (  # noqa: E402
    assert_files_have_open_mode,
    block_network,
    check_trainable,
)

from lexlens.errors import ModelNotAvailableError, UsageError  # noqa: E402
from lexlens.models import openclip as backend  # noqa: E402
from lexlens.models.registry import load_encoder  # noqa: E402

ARCH = "lexlens-test-tiny-vit"  # the config file's stem is the architecture name
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TEXTS = ["a red circle", "two blue squares left of a star", "", "a big green triangle " * 10]


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config path, checkpoint path, open_clip model, tokenizer) of a seeded tiny model."""
    oc = backend.import_open_clip()
    d = tmp_path_factory.mktemp("openclip")
    cfg = d / f"{ARCH}.json"
    cfg.write_text(json.dumps(TINY))
    oc.add_model_config(cfg)
    torch.manual_seed(0)
    model = oc.create_model(ARCH).eval()
    ckpt = d / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return cfg, ckpt, model, oc.get_tokenizer(ARCH)


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)


def _reference(model, tokenizer, pixels, texts):
    with torch.no_grad():
        img = model.encode_image(torch.from_numpy(pixels)).numpy()
        txt = model.encode_text(tokenizer(texts)).numpy()
    return _normalize(img), _normalize(txt)


def _check(enc, pixels, ref_img, ref_txt):
    img = enc.encode_images(list(pixels), batch_size=2)
    txt = enc.encode_texts(TEXTS, batch_size=3)
    for got, ref in ((img, ref_img), (txt, ref_txt)):
        assert got.dtype == np.float32 and got.shape == ref.shape == (len(ref), 16)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_config_and_checkpoint_by_path_give_the_models_embeddings(tiny, pixels):
    cfg, ckpt, model, tok = tiny
    ref_img, ref_txt = _reference(model, tok, pixels, TEXTS)
    enc = load_encoder(f"openclip:{cfg}:{ckpt}")
    _check(enc, pixels, ref_img, ref_txt)
    assert enc.dim == 16 and enc.name == f"openclip:{cfg}:{ckpt}"
    pc = enc.preprocess_config
    assert (pc.image_size, pc.resize_mode, pc.interpolation) == (32, "shortest", "bicubic")
    # ARCH:CHECKPOINT (the architecture is known to open_clip once its config is registered)
    _check(load_encoder(f"openclip:{ARCH}:{ckpt}"), pixels, ref_img, ref_txt)


def test_save_then_load_directory_gives_identical_embeddings(tiny, pixels, tmp_path):
    cfg, ckpt, model, tok = tiny
    enc = load_encoder(f"openclip:{cfg}:{ckpt}")
    enc.save(tmp_path / "saved")
    assert (tmp_path / "saved" / backend.CONFIG_NAME).is_file()
    assert_files_have_open_mode(tmp_path / "saved")
    again = load_encoder(f"openclip:{tmp_path / 'saved'}")
    np.testing.assert_array_equal(
        again.encode_images(list(pixels)), enc.encode_images(list(pixels))
    )
    np.testing.assert_array_equal(again.encode_texts(TEXTS), enc.encode_texts(TEXTS))
    assert again.preprocess_config == enc.preprocess_config
    assert load_encoder(f"openclip:local-dir:{tmp_path / 'saved'}").dim == 16


def test_pil_images_are_preprocessed_with_the_models_mean_and_std(tiny):
    from PIL import Image

    cfg, ckpt, model, _ = tiny
    enc = load_encoder(f"openclip:{cfg}:{ckpt}")
    rgb = np.random.default_rng(1).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)  # open_clip's OpenAI defaults
    std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
    x = ((rgb / np.float32(255) - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    with torch.no_grad():
        ref = _normalize(model.encode_image(torch.from_numpy(x)).numpy())
    got = enc.encode_images([Image.fromarray(a) for a in rgb])
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_trainable_module_features_match_encoder_and_training_changes_it(tiny, pixels, tmp_path):
    cfg, ckpt, _, _ = tiny
    enc = load_encoder(f"openclip:{cfg}:{ckpt}")
    reload = lambda p: load_encoder(f"openclip:{p}")  # noqa: E731
    check_trainable(enc, pixels, TEXTS, reload, tmp_path / "tuned")


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    return block_network(monkeypatch, tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "spec, words",
    [
        (
            "openclip:ViT-B-32:laion2b_s34b_b79k",
            "openclip:ViT-B-32:/path/to/open_clip_pytorch_model.bin",
        ),
        ("openclip:ViT-B-32:openai", "not cached"),
        ("openclip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "openclip:/path/to/dir"),
    ],
)
def test_uncached_pretrained_fails_fast_with_one_line(no_network, spec, words):
    with pytest.raises(ModelNotAvailableError) as e:
        load_encoder(spec)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "LEXLENS_ALLOW_DOWNLOADS=1" in msg
    assert no_network == []


@pytest.mark.timeout(60)
def test_cli_reports_uncached_weights_as_one_error_line(no_network, tmp_path, capsys):
    from PIL import Image

    from lexlens.cli import main

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    code = main(
        [
            "bench",
            "encode",
            "--model",
            "openclip:ViT-B-32:laion2b_s34b_b79k",
            "--data",
            str(tmp_path / "a.png"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code != 0
        and len(err) == 1
        and err[0].startswith("lexlens: error:")
        and "not cached" in err[0]
    )


@pytest.mark.parametrize(
    "spec, error, words",
    [
        ("openclip:ViT-B-32:no_such_tag", ModelNotAvailableError, "laion2b_s34b_b79k"),
        ("openclip:No-Such-Arch", ModelNotAvailableError, "unknown open_clip architecture"),
        (
            "openclip:ViT-B-32:/no/such/file.bin",
            ModelNotAvailableError,
            "checkpoint file not found",
        ),
        ("openclip:/no/such/config.json", ModelNotAvailableError, "model config not found"),
        ("openclip:ViT-B-32:hf-hub:org/repo", UsageError, "openclip:hf-hub:org/repo"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, error, words):
    with pytest.raises(error) as e:
        load_encoder(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_of_another_architecture_is_a_clear_error(tiny, tmp_path):
    cfg, ckpt, _, _ = tiny
    other = dict(TINY, embed_dim=8)
    path = tmp_path / "lexlens-test-other-vit.json"
    path.write_text(json.dumps(other))
    with pytest.raises(ModelNotAvailableError) as e:
        load_encoder(f"openclip:{path}:{ckpt}")
    assert "cannot load" in str(e.value) and "\n" not in str(e.value)


def test_parse_target_forms(tmp_path):
    P = backend.OpenClipTarget
    assert backend.parse_target("ViT-B-32") == P("arch", "ViT-B-32")
    assert backend.parse_target("ViT-B-32:laion2b_s34b_b79k") == P(
        "arch", "ViT-B-32", "laion2b_s34b_b79k"
    )
    assert backend.parse_target("ViT-B-32:/w/x.bin") == P("arch", "ViT-B-32", "/w/x.bin")
    assert backend.parse_target("hf-hub:org/repo") == P("hub", "org/repo")
    assert backend.parse_target(str(tmp_path)) == P("dir", str(tmp_path))
    assert backend.parse_target("local-dir:/x") == P("dir", "/x")
    assert backend.parse_target("/c/m.json") == P("config", "/c/m.json")
    assert backend.parse_target("/c/m.json:/w/x.pt") == P("config", "/c/m.json", "/w/x.pt")


def test_models_json_lists_open_clip_pretrained_names(capsys):
    from lexlens.cli import main

    assert main(["models", "--json"]) == 0
    names = json.loads(capsys.readouterr().out)["openclip"]
    oc = backend.import_open_clip()
    assert names == [f"{a}:{t}" for a, t in oc.list_pretrained()]
    assert "ViT-B-32:laion2b_s34b_b79k" in names


def test_torchvision_placeholders_do_not_outlive_the_import():
    from lexlens.models.torchvision_guard import torchvision_error

    oc = backend.import_open_clip()
    tv = sys.modules.get("torchvision")
    assert tv is None or "placeholder" not in (tv.__doc__ or "")
    if torchvision_error() is None:
        pytest.skip("torchvision imports here: no placeholders are used")
    with pytest.raises(ModelNotAvailableError, match="needs torchvision"):
        oc.transform.Normalize(mean=0, std=1)
