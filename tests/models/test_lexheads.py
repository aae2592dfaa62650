"""Lexicon heads fitted on a frozen ``openclip:`` / ``hf:`` model (``--objective lexical-heads``).

Tiny random-initialised models, no downloads. References: open_clip's own modules and the
heads' weights in numpy (never the code under test), brute-force sparse scoring.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend_helpers import assert_files_have_open_mode  # noqa: E402
from test_hf_backend import clip_dir, siglip_dir  # noqa: E402, F401 (fixtures)
from test_openclip_backend import ARCH, TINY  # noqa: E402

from lexlens.cli import main  # noqa: E402
from lexlens.models import openclip as backend  # noqa: E402
from lexlens.models.lexheads import LexHeadsEncoder, attach_heads  # noqa: E402
from lexlens.models.registry import load_encoder  # noqa: E402
from lexlens.train.data import pairs_from_scenes  # noqa: E402
from lexlens.train.loop import TrainConfig, train  # noqa: E402

QUERIES = ["a red circle", "two blue squares left of a star", ""]


def _cfg(**kw):
    base = dict(
        objective="lexical-heads",
        batch_size=16,
        lr=1e-2,
        warmup_steps=2,
        hard_negatives=1,
        augment=False,
        checkpoint_every=0,
        log_every=0,
    )
    return TrainConfig(**{**base, **kw})


def _texts(data):
    return [c for caps in data.captions for c in caps]


def _same(a, b):
    for x, y in ((a.indptr, b.indptr), (a.indices, b.indices), (a.values, b.values)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(spec, open_clip model, tokenizer, scenes folder, training pairs)."""
    from lexlens.data.scenes import generate_scenes

    oc = backend.import_open_clip()
    d = tmp_path_factory.mktemp("lexheads")
    cfg = d / f"{ARCH}.json"
    cfg.write_text(json.dumps(TINY))
    oc.add_model_config(cfg)
    torch.manual_seed(2)
    model = oc.create_model(ARCH).eval()
    torch.save(model.state_dict(), d / "tiny.pt")
    generate_scenes(d / "scenes", 24, seed=3, size=32, workers=1, progress=False)
    data = pairs_from_scenes(32, seed=5, image_size=32, workers=1, progress=False)
    data.captions = [caps[:1] for caps in data.captions]
    data.meanings = [m[:1] for m in data.meanings]
    data.negatives = [n[:1] for n in data.negatives]
    return f"openclip:{cfg}:{d / 'tiny.pt'}", model, oc.get_tokenizer(ARCH), d / "scenes", data


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """(heads encoder after training, its saved directory, summary, dense weights before)."""
    spec, _, _, _, data = tiny
    enc = attach_heads(load_encoder(spec), _texts(data))
    dense_before = {k: v.clone() for k, v in enc.inner.trainable().state_dict().items()}
    heads_before = {k: v.clone() for k, v in enc.net.heads_state().items()}
    out = tmp_path_factory.mktemp("heads") / "model"
    summary = train(enc, data, _cfg(epochs=30), out, progress=False)
    enc.save(out)
    return enc, out, summary, dense_before, heads_before


def test_training_lowers_the_loss_and_moves_only_the_heads(tiny, trained):
    spec, model, tok, _, _ = tiny
    enc, _, s, dense_before, heads_before = trained
    first, last = s["history"][0]["loss"], s["history"][-1]["loss"]
    assert {"lexical", "free", "distill", "flops"} <= set(last)
    assert last["lexical"] < first["lexical"] - 0.05
    assert last["free"] < first["free"] - 0.05
    for k, v in enc.inner.trainable().state_dict().items():  # the encoder is untouched
        assert torch.equal(v, dense_before[k]), k
    moved = [k for k, v in enc.net.heads_state().items() if not torch.equal(v, heads_before[k])]
    assert set(moved) == {k for k, _ in enc.net.named_parameters() if not k.startswith("dense.")}
    # dense output = open_clip's own model (the fixture's, never trained)
    px = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model.encode_image(torch.from_numpy(px)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode_images(list(px)), ref, atol=1e-5)


def _erf(x):
    from math import erf

    return np.vectorize(erf)(x)


def _head(params, prefix, states, table):
    """The lexicon head in numpy: log(1 + relu(scale * LN(gelu(W x + b)) @ E^T + bias))."""
    p = {
        k[len(prefix) :]: v.numpy().astype(np.float64)
        for k, v in params.items()
        if k.startswith(prefix)
    }
    h = states @ p["proj.weight"].T + p["proj.bias"]
    h = 0.5 * h * (1 + _erf(h / np.sqrt(2)))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    h = h * p["norm.weight"] + p["norm.bias"]
    z = p["scale"] * h @ table.T + p["bias"]
    return np.log1p(np.maximum(z, 0))


def test_lexical_vectors_match_a_numpy_reference(tiny, trained):
    """Patch tokens / ln_final token states of open_clip's own modules through the heads."""
    _, model, tok, _, _ = tiny
    enc, _, _, _, _ = trained
    full = LexHeadsEncoder(
        enc.inner, enc.net, replace(enc.cfg, top_k_image=10**6, top_k_text=10**6, quant_bits=0)
    )
    params = enc.net.heads_state()
    active = np.asarray(enc.cfg.active_ids)
    table = model.token_embedding.weight.detach().numpy().astype(np.float64)[active]
    px = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    model.visual.output_tokens = True
    try:
        with torch.no_grad():
            _, patches = model.visual(torch.from_numpy(px))
    finally:
        model.visual.output_tokens = False
    want = _head(params, "image_lex.", patches.numpy().astype(np.float64), table).max(axis=1)
    got = full.encode_images_lexical(list(px)).to_dense()[:, active]
    np.testing.assert_allclose(got, want, atol=1e-4)

    ids = tok(QUERIES)
    with torch.no_grad():
        x = model.token_embedding(ids) + model.positional_embedding
        states = model.ln_final(model.transformer(x, attn_mask=model.attn_mask)).numpy()
    free_w = np.log1p(np.maximum(params["free_table.logit"].numpy(), 0))
    got_enc = full.encode_texts_lexical(QUERIES).to_dense()[:, active]
    got_free = full.encode_texts_lexical(QUERIES, mode="inference-free").to_dense()[:, active]
    for r in range(len(QUERIES)):
        real = ids[r].numpy() != 0  # open_clip pads with 0
        w = _head(params, "text_lex.", states[r][real].astype(np.float64), table)
        np.testing.assert_allclose(got_enc[r], w.max(axis=0), atol=1e-4)
        present = np.isin(active, ids[r].numpy()[real])
        np.testing.assert_allclose(got_free[r], np.where(present, free_w, 0), atol=1e-6)
    assert got_free[2].sum() == 0  # an empty query has no word
    # the default cut: top-k, 8-bit levels of quant_max
    img = enc.encode_images_lexical(list(px))
    assert all(len(img.row(r)[0]) <= enc.cfg.top_k_image for r in range(3))
    levels = img.values / enc.cfg.quant_max * 255
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)


def test_saved_model_loads_back_with_identical_vectors(tiny, trained):
    enc, out, _, _, _ = trained
    assert_files_have_open_mode(out)  # the inner model's files and the heads'
    back = load_encoder(f"openclip:{out}")
    assert isinstance(back, LexHeadsEncoder) and back.has_lexical
    assert back.lexical_query_modes == ("encoder", "inference-free")
    px = np.random.default_rng(2).normal(size=(4, 3, 32, 32)).astype(np.float32)
    _same(back.encode_images_lexical(list(px)), enc.encode_images_lexical(list(px)))
    for mode in ("encoder", "inference-free"):
        _same(
            back.encode_texts_lexical(QUERIES, mode=mode),
            enc.encode_texts_lexical(QUERIES, mode=mode),
        )
    np.testing.assert_array_equal(back.encode_images(list(px)), enc.encode_images(list(px)))
    assert back.vocab[back.encode_texts_lexical(["red"], mode="inference-free").indices[0]] == "red"


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
def test_sparse_and_hybrid_indexes_over_the_heads(tiny, trained, tmp_path, mode):
    from lexlens.index.index import Index

    _, _, _, scenes, _ = tiny
    _, out, _, _, _ = trained
    spec = f"openclip:{out}"
    enc = load_encoder(spec)
    idx = Index.build(scenes, spec, tmp_path / "sp", spec="sparse", progress=False, workers=0)
    q = enc.encode_texts_lexical(["a red circle"], mode=mode).to_dense()[0]
    items = idx.vectors(list(range(len(idx)))).sparse.to_dense()
    scores = items @ q
    want = [i for _, i in sorted((-s, i) for i, s in enumerate(scores) if s > 0)][:5]
    res = Index.open(tmp_path / "sp").search("a red circle", k=5, explain=True, query_mode=mode)
    assert want and res.ids[0][res.ids[0] >= 0].tolist() == want
    assert all(h.explain for h in res.hits[0])
    Index.build(
        scenes, spec, tmp_path / "hy", spec="hybrid(sparse,flat)", progress=False, workers=0
    )
    got = Index.open(tmp_path / "hy").search("a red circle", k=3, query_mode=mode)
    sharing = [i for i, s in enumerate(scores) if s > 0]  # < 50 candidates: all are re-scored
    dense = idx.vectors(sharing).dense @ enc.encode_texts(["a red circle"])[0]
    order = sorted(range(len(sharing)), key=lambda j: (-dense[j], sharing[j]))
    assert got.ids[0].tolist() == [sharing[j] for j in order][:3]


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_hf_heads_train_save_and_load(family, request, tiny, tmp_path):
    out_dir, model = request.getfixturevalue(f"{family}_dir")[:2]
    data = tiny[4]
    enc = attach_heads(load_encoder(f"hf:{out_dir}"), _texts(data), top_k_text=8)
    assert enc.net.towers.pooled_only == (False, False)
    before = {k: v.clone() for k, v in enc.inner.trainable().state_dict().items()}
    init = {k: v.clone() for k, v in enc.net.heads_state().items()}
    s = train(enc, data, _cfg(epochs=2), tmp_path / "run", progress=False)
    assert s["steps"] == 4 and all(np.isfinite(v) for v in s["final_loss"].values())
    for k, v in enc.inner.trainable().state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, init[k]) for k, v in enc.net.heads_state().items())
    enc.save(tmp_path / "m")
    assert_files_have_open_mode(tmp_path / "m")
    back = load_encoder(f"hf:{tmp_path / 'm'}")
    assert isinstance(back, LexHeadsEncoder) and back.cfg.top_k_text == 8
    px = np.random.default_rng(3).normal(size=(3, 3, 32, 32)).astype(np.float32)
    _same(back.encode_images_lexical(list(px)), enc.encode_images_lexical(list(px)))
    for mode in ("encoder", "inference-free"):
        got = back.encode_texts_lexical(QUERIES, mode=mode)
        _same(got, enc.encode_texts_lexical(QUERIES, mode=mode))
        assert all(len(got.row(r)[0]) <= 8 for r in range(len(QUERIES)))
    ref = model.get_image_features(pixel_values=torch.from_numpy(px))
    ref = (ref if isinstance(ref, torch.Tensor) else ref.pooler_output).detach().numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(back.encode_images(list(px)), ref, atol=1e-5)


@pytest.mark.parametrize("family", ["openclip", "clip", "siglip"])
def test_query_texts_in_one_pass_equal_the_separate_calls(family, request, tiny) -> None:
    """encode_text_queries == the inner encoder's encode_texts + encode_texts_lexical."""
    from lexlens.models.base import Encoder

    spec = tiny[0] if family == "openclip" else f"hf:{request.getfixturevalue(f'{family}_dir')[0]}"
    enc = attach_heads(load_encoder(spec), _texts(tiny[4]))
    texts = [*QUERIES, "a pair of small green stars", "three crosses"]
    for mode in ("encoder", "inference-free"):
        for impl in (
            enc.encode_text_queries,
            lambda t, m, b: Encoder.encode_text_queries(enc, t, m, b),
        ):
            dense, sparse = impl(texts, mode, 2)
            np.testing.assert_array_equal(dense, enc.inner.encode_texts(texts, batch_size=2))
            _same(sparse, enc.encode_texts_lexical(texts, batch_size=2, mode=mode))


def test_cli_train_lexical_heads_on_openclip(tiny, tmp_path, capsys):
    spec, model, _, scenes, _ = tiny
    out = tmp_path / "m"
    argv = ["train", "--model", spec, "--objective", "lexical-heads", "--data", str(scenes)]
    argv += ["--out", str(out), "--epochs", "2", "--batch-size", "8", "--json"]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["model_spec"] == f"openclip:{out}" and s["steps"] == 6
    assert {"lexical", "free", "distill"} <= set(s["final_loss"])
    enc = load_encoder(s["model_spec"])
    assert isinstance(enc, LexHeadsEncoder)
    assert enc.describe()["trained"]["steps"] == 6
    px = np.random.default_rng(4).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model.encode_image(torch.from_numpy(px)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode_images(list(px)), ref, atol=1e-5)


def test_lexical_heads_needs_an_openclip_or_hf_model_and_one_objective(tiny, trained, tmp_path):
    from lexlens.errors import UsageError

    enc, _, _, _, _ = trained
    with pytest.raises(UsageError, match="use lexical-heads"):
        train(enc, tiny[4], _cfg(objective="lexlip", epochs=1), tmp_path / "x", progress=False)
    with pytest.raises(UsageError, match="already has lexicon heads"):
        attach_heads(enc, ["a red circle"])
    from lexlens.train.api import TrainRequest, run_training

    spec, scenes = f"lexical(topk=6,nref=8,words=scenes):{tiny[0]}", str(tiny[3])
    req = TrainRequest(str(tmp_path / "y"), data=scenes, model=spec)
    req.overrides = {"objective": "lexical-heads", "epochs": 1}
    with pytest.raises(UsageError, match="cannot be trained; train the model it wraps"):
        run_training(req, progress=False)


def test_resume_reads_a_heads_only_checkpoint(tiny, tmp_path):
    """The checkpoint holds the heads, not the frozen encoder; resuming gives the same heads."""
    spec, _, _, _, data = tiny
    cfg = _cfg(epochs=2)

    def fresh():
        return attach_heads(load_encoder(spec), _texts(data))

    a = fresh()
    train(a, data, cfg, tmp_path / "a", progress=False)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert set(ck["model"]) == set(a.net.heads_state())
    train(fresh(), data, replace(cfg, stop_after=2), tmp_path / "b", progress=False)
    b = fresh()
    s = train(b, data, cfg, tmp_path / "b", resume=True, progress=False)
    assert s["steps"] == 4
    for k, v in a.net.heads_state().items():
        torch.testing.assert_close(b.net.heads_state()[k], v, rtol=1e-4, atol=1e-5)


def test_a_tower_without_token_states_feeds_its_pooled_embedding(tiny, tmp_path):
    """An open_clip ResNet image tower: its pooled embedding is the one image state."""
    oc = backend.import_open_clip()
    rn = {**TINY, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}}
    cfg = tmp_path / "lexlens-test-tiny-rn.json"
    cfg.write_text(json.dumps(rn))
    oc.add_model_config(cfg)
    torch.manual_seed(3)
    torch.save(oc.create_model("lexlens-test-tiny-rn").state_dict(), tmp_path / "rn.pt")
    data = tiny[4]
    enc = attach_heads(load_encoder(f"openclip:{cfg}:{tmp_path / 'rn.pt'}"), _texts(data))
    assert enc.net.towers.pooled_only == (True, False) and enc.cfg.image_dim == 16
    s = train(enc, data, _cfg(epochs=1), tmp_path / "run", progress=False)
    assert all(np.isfinite(v) for v in s["final_loss"].values())
    px = np.random.default_rng(5).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        pooled = enc.inner.trainable().image_features(torch.from_numpy(px))
        want = enc.net.image_lexical(pooled[:, None]).numpy()
    full = LexHeadsEncoder(enc.inner, enc.net, replace(enc.cfg, top_k_image=10**6, quant_bits=0))
    got = full.encode_images_lexical(list(px)).to_dense()[:, enc.cfg.active_ids]
    np.testing.assert_allclose(got, want, atol=1e-6)
    enc.save(tmp_path / "m")
    _same(
        load_encoder(f"openclip:{tmp_path / 'm'}").encode_images_lexical(list(px)),
        enc.encode_images_lexical(list(px)),
    )
