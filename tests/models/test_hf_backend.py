"""The ``hf:`` backend on tiny random-initialised CLIP and SigLIP checkpoints (no downloads).

References are computed with transformers' own model, tokenizer and (PIL) image processor,
never with the backend under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend_helpers import (  # noqa: E402
    assert_files_have_open_mode,
    block_network,
    check_trainable,
)

from lexlens.errors import ModelNotAvailableError  # noqa: E402
from lexlens.models import hf as backend  # noqa: E402
from lexlens.models.base import PreprocessConfig  # noqa: E402
from lexlens.models.registry import load_encoder  # noqa: E402
from lexlens.models.torchvision_guard import import_transformers  # noqa: E402

TEXTS = ["a red circle", "two blue squares left of a red star", "", "a big green triangle " * 10]
#: a tiny transformer tower (text and vision, CLIP and SigLIP)
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
WORDS = "a red blue green circle square star triangle two big small left of above"


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte -> printable character table (the alphabet of its byte-level BPE)."""
    bs = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def _clip_tokenizer(d):
    """A tiny CLIP BPE tokenizer: the byte alphabet, its word-final forms and a few merges."""
    tf = import_transformers()
    chars = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    merges = ["r e", "re d</w>", "b l", "bl u", "blu e</w>", "s t", "st a", "sta r</w>"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return tf.CLIPTokenizer.from_pretrained(str(d), local_files_only=True)


def _pil_processor(tf, name: str, **kw):
    """transformers' PIL image processor (v5 names it ...Pil; v4's default class is PIL based)."""
    return (
        getattr(tf, name + "Pil", None)(**kw)
        if hasattr(tf, name + "Pil")
        else getattr(tf, name)(**kw)
    )


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A saved tiny CLIPModel + tokenizer + image processor; returns (dir, model, tokenizer, processor)."""
    tf = import_transformers()
    d = tmp_path_factory.mktemp("hf_clip")
    tok = _clip_tokenizer(d / "tok")
    cfg = tf.CLIPConfig(
        text_config=dict(
            TOWER,
            vocab_size=len(tok),
            max_position_embeddings=16,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(TOWER, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = tf.CLIPModel(cfg).eval()
    proc = _pil_processor(
        tf,
        "CLIPImageProcessor",
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.5, 0.4, 0.3],
        image_std=[0.2, 0.25, 0.3],
        resample=2,
    )
    out = d / "model"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    proc.save_pretrained(str(out))
    return out, model, tok, proc


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    """A saved tiny SiglipModel + SentencePiece tokenizer, no image-processor config."""
    spm = pytest.importorskip("sentencepiece")
    tf = import_transformers()
    d = tmp_path_factory.mktemp("hf_siglip")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join([WORDS, *TEXTS[:3]] * 20))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(d / "spm"),
        vocab_size=30,
        hard_vocab_limit=False,
        model_type="unigram",
        unk_id=0,
        pad_id=1,
        eos_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    tok = tf.SiglipTokenizer(vocab_file=str(d / "spm.model"))
    cfg = tf.SiglipConfig(
        text_config=dict(TOWER, vocab_size=len(tok), max_position_embeddings=12),
        vision_config=dict(TOWER, image_size=32, patch_size=8),
    )
    torch.manual_seed(1)
    model = tf.SiglipModel(cfg).eval()
    out = d / "model"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out, model, tok


def _feat(out):
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()


def _images():
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(32, 32), (48, 40), (40, 64)]  # (w, h): square, landscape, portrait
    return [Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)) for w, h in sizes]


def _check(got, ref, dim, atol=1e-5):
    assert got.dtype == np.float32 and got.shape == ref.shape == (len(ref), dim)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, ref, atol=atol)


def test_clip_by_path_matches_transformers(clip_dir):
    d, model, tok, proc = clip_dir
    enc = load_encoder(f"hf:{d}")
    assert enc.dim == 16 and enc.name == f"hf:{d}"
    assert enc.preprocess_config == PreprocessConfig(
        32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), "shortest", "bilinear"
    )
    images = _images()
    with torch.no_grad():
        pv = torch.from_numpy(proc(images=images, return_tensors="np")["pixel_values"])
        ref_img = _normalize(_feat(model.get_image_features(pixel_values=pv)))
        t = tok(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
        ref_txt = _normalize(
            _feat(
                model.get_text_features(
                    input_ids=t["input_ids"], attention_mask=t["attention_mask"]
                )
            )
        )
    _check(enc.encode_images(images, batch_size=2), ref_img, 16, atol=1e-4)
    _check(enc.encode_texts(TEXTS, batch_size=3), ref_txt, 16)


def test_siglip_by_path_matches_transformers(siglip_dir):
    d, model, tok = siglip_dir
    enc = load_encoder(f"hf:{d}")
    # no preprocessor config: SigLIP defaults (squash to the model's size, mean = std = 0.5)
    assert enc.preprocess_config == PreprocessConfig(
        32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "squash", "bicubic"
    )
    pixels = np.random.default_rng(2).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref_img = _normalize(_feat(model.get_image_features(pixel_values=torch.from_numpy(pixels))))
        ids = tok(TEXTS, padding="max_length", truncation=True, max_length=12, return_tensors="pt")[
            "input_ids"
        ]
        ref_txt = _normalize(_feat(model.get_text_features(input_ids=ids)))
    assert enc.dim == ref_img.shape[1]
    _check(enc.encode_images(list(pixels)), ref_img, enc.dim)
    _check(enc.encode_texts(TEXTS), ref_txt, enc.dim)
    m = enc.trainable()
    assert set(m.tokenize(TEXTS)) == {"input_ids"} and isinstance(m.logit_bias, torch.nn.Parameter)


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_save_then_load_gives_identical_embeddings(which, clip_dir, siglip_dir, tmp_path):
    d = (clip_dir if which == "clip" else siglip_dir)[0]
    enc = load_encoder(f"hf:{d}")
    enc.save(tmp_path / "saved")
    assert_files_have_open_mode(tmp_path / "saved")
    again = load_encoder(f"hf:{tmp_path / 'saved'}")
    images = _images()
    np.testing.assert_array_equal(again.encode_images(images), enc.encode_images(images))
    np.testing.assert_array_equal(again.encode_texts(TEXTS), enc.encode_texts(TEXTS))
    assert again.preprocess_config == enc.preprocess_config and again.dim == enc.dim


def test_trainable_module_features_match_encoder_and_training_changes_it(clip_dir, tmp_path):
    enc = load_encoder(f"hf:{clip_dir[0]}")
    pixels = np.random.default_rng(3).normal(size=(4, 3, 32, 32)).astype(np.float32)
    check_trainable(enc, pixels, TEXTS, lambda p: load_encoder(f"hf:{p}"), tmp_path / "tuned")


@pytest.mark.timeout(60)
def test_uncached_repo_fails_fast_with_one_line(monkeypatch, tmp_path):
    attempts = block_network(monkeypatch, tmp_path)
    with pytest.raises(ModelNotAvailableError) as e:
        load_encoder("hf:openai/clip-vit-base-patch32")
    msg = str(e.value)
    assert "not in the Hugging Face cache" in msg and "hf:/path/to/dir" in msg and "\n" not in msg
    assert attempts == []


def test_unsupported_model_type_and_bad_paths_are_one_line_errors(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(
        ModelNotAvailableError, match="model_type 'bert' is not supported .*clip, siglip"
    ):
        load_encoder(f"hf:{tmp_path / 'bert'}")
    with pytest.raises(ModelNotAvailableError, match="no such directory"):
        load_encoder(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        load_encoder(f"hf:{tmp_path}")


def test_preprocess_config_round_trip_and_unsupported_processors():
    clip, siglip = backend.FAMILIES["clip"], backend.FAMILIES["siglip"]
    for cfg, fam in [
        (PreprocessConfig(224, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "shortest", "bicubic"), clip),
        (PreprocessConfig(384, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "squash", "bilinear"), siglip),
    ]:
        assert (
            backend.preprocess_from_hf(backend.preprocess_to_hf(cfg, fam), fam, cfg.image_size, "x")
            == cfg
        )
    resize_256_crop_224 = {
        "size": {"shortest_edge": 256},
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
    }
    with pytest.raises(ModelNotAvailableError, match="not supported"):
        backend.preprocess_from_hf(resize_256_crop_224, clip, 224, "x")
    with pytest.raises(ModelNotAvailableError, match="square"):
        backend.preprocess_from_hf({"size": {"height": 224, "width": 256}}, siglip, 224, "x")
    with pytest.raises(ModelNotAvailableError, match="model takes 224"):
        backend.preprocess_from_hf({"size": {"height": 256, "width": 256}}, siglip, 224, "x")


def test_models_json_lists_known_repos(capsys):
    from lexlens.cli import main

    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hf"] == list(backend.KNOWN_REPOS)
