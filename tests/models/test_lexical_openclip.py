"""``lexical(...):openclip:...`` end to end on a tiny random open_clip model (no downloads):
load by spec, word embeddings = open_clip's own text embeddings of the prompts, evaluation,
and an index of the ``sparse`` kind searched with explanations (once that kind exists).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend_helpers import block_network  # noqa: E402
from test_openclip_backend import ARCH, TINY  # noqa: E402

from lexlens.models import openclip as backend  # noqa: E402
from lexlens.models.lexical_adapter import PROMPT_SETS, LexicalAdapter, scenes_words  # noqa: E402
from lexlens.models.registry import load_encoder  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config path, checkpoint, open_clip model, tokenizer, scenes folder)."""
    from lexlens.data.scenes import generate_scenes

    oc = backend.import_open_clip()
    d = tmp_path_factory.mktemp("lexclip")
    cfg = d / f"{ARCH}.json"
    cfg.write_text(json.dumps(TINY))
    oc.add_model_config(cfg)
    torch.manual_seed(1)
    model = oc.create_model(ARCH).eval()
    ckpt = d / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    generate_scenes(d / "scenes", 12, seed=3, size=32, workers=1, progress=False)
    return cfg, ckpt, model, oc.get_tokenizer(ARCH), d / "scenes"


def test_wrapped_open_clip_model_end_to_end(tiny, tmp_path, monkeypatch):
    from lexlens.eval.protocol import evaluate, load_eval_set

    cfg, ckpt, model, tok, scenes = tiny
    attempts = block_network(monkeypatch, tmp_path)
    spec = f"lexical(topk=6,nref=8,words=scenes,cache={tmp_path / 'c'}):openclip:{cfg}:{ckpt}"
    enc = load_encoder(spec)
    assert isinstance(enc, LexicalAdapter) and enc.name == spec
    assert enc.dim == 16 and list(enc.vocab) == list(scenes_words())

    # word embedding = normalised mean of open_clip's normalised prompt embeddings
    with torch.no_grad():
        e = model.encode_text(tok([p.format("hexagon") for p in PROMPT_SETS["photo"]])).numpy()
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    want = e.mean(axis=0) / np.linalg.norm(e.mean(axis=0))
    got = enc.word_embeddings()[list(enc.vocab).index("hexagon")]
    np.testing.assert_allclose(got, want, atol=1e-5)

    data = load_eval_set(str(scenes))
    res = evaluate(enc, data, progress=False, query_mode="inference-free")
    assert res["query_mode"] == "inference-free" and 0 <= res["lexical"]["rsum"] <= 600
    img = enc.encode_images_lexical(data.images[:4])
    lens = [len(img.row(r)[0]) for r in range(4)]  # random weights: a row may score no word
    assert all(n <= 6 for n in lens) and sum(lens) > 0
    assert attempts == []
    assert list((tmp_path / "c").glob("lexical-*.npz"))


def test_sparse_index_over_the_wrapped_model(tiny, tmp_path):
    from lexlens.index.index import Index
    from lexlens.index.spec import known_kinds

    if "sparse" not in known_kinds():
        pytest.skip("the sparse index kind (lexlens.index.sparse) is not registered yet")
    cfg, ckpt, _, _, scenes = tiny
    spec = f"lexical(topk=6,nref=8,words=scenes):openclip:{cfg}:{ckpt}"
    idx = Index.build(scenes, spec, tmp_path / "idx", spec="sparse", progress=False, workers=0)
    res = Index.open(tmp_path / "idx").search("a red circle", k=5, explain=True)
    enc = load_encoder(spec)
    q = enc.encode_texts_lexical(["a red circle"]).to_dense()[0]
    items = idx.vectors(list(range(len(idx)))).sparse.to_dense()
    scores = items @ q
    order = sorted((-s, i) for i, s in enumerate(scores) if s > 0)[:5]
    assert res.ids[0][res.ids[0] >= 0].tolist() == [i for _, i in order]
    for h in res.hits[0]:
        assert h.explain  # the words it shares with the query
    # the same model behind a hybrid index (rerank): the items sharing a word with the query,
    # ordered by the dense similarity (more than k of them share one here)
    Index.build(
        scenes, spec, tmp_path / "hyb", spec="hybrid(sparse,flat)", progress=False, workers=0
    )
    sharing = [i for i, s in enumerate(scores) if s > 0]
    assert len(sharing) >= 2
    k = min(3, len(sharing) - 1)  # fewer than the items sharing a word: the order matters
    got = Index.open(tmp_path / "hyb").search("a red circle", k=k, query_mode="inference-free")
    dense = idx.vectors(sharing).dense @ enc.encode_texts(["a red circle"])[0]
    want = [sharing[j] for j in sorted(range(len(sharing)), key=lambda j: (-dense[j], sharing[j]))]
    assert got.ids[0].tolist() == want[:k]


def test_index_build_with_decoding_workers_pickles_the_wrapped_model(tiny, tmp_path):
    """Decoding workers (>= 64 images, workers=1) get the encoder's preprocess pickled."""
    import pickle

    from lexlens.data.scenes import generate_scenes
    from lexlens.index.index import Index

    cfg, ckpt, _, _, _ = tiny
    spec = f"lexical(topk=6,nref=8,words=scenes):openclip:{cfg}:{ckpt}"
    enc = load_encoder(spec)
    back = pickle.loads(pickle.dumps(enc))
    px = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(back.encode_images(list(px)), enc.encode_images(list(px)))
    generate_scenes(tmp_path / "s", 64, seed=4, size=32, workers=1, progress=False)
    built = {}
    for workers in (1, 0):
        idx = Index.build(
            tmp_path / "s", spec, tmp_path / f"i{workers}", progress=False, workers=workers
        )
        assert len(idx) == 64
        built[workers] = idx.vectors(list(range(64))).dense
    np.testing.assert_array_equal(built[1], built[0])
