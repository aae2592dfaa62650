"""``lexicon.text_expansion = false``: a text's lexicon holds only its own word pieces.

Reference: a loop over the query's word tokens (not ``[CLS]``/``[SEP]``/padding) running the
torch head on one token at a time and keeping ``log(1 + relu(z))`` of that token's own piece
only, max over the tokens that carry the piece.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lexlens.cli import main  # noqa: E402
from lexlens.errors import UsageError  # noqa: E402
from lexlens.models.attribution import WHOLE_QUERY  # noqa: E402
from lexlens.models.minilm import encode_batch, vocab_list  # noqa: E402
from lexlens.models.native import build_native, load_native_dir  # noqa: E402

TEXTS = [
    "a big red circle to the left of a small blue square",
    "three green hexagons and two pentagons",
    "red red red",
    "zzyzx qwv",  # pieces outside the active set
]


@pytest.fixture()
def grounded():
    torch.manual_seed(5)
    enc = build_native("tiny", texts=TEXTS[:3])
    enc.cfg.lexicon.text_expansion = False
    return enc


def _reference(enc, text: str) -> dict[int, float]:
    """{active position: weight} by the token loop (module docstring)."""
    net = enc.net
    ids, mask = encode_batch([text], enc.cfg.text.max_tokens)
    tok = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    out: dict[int, float] = {}
    with torch.no_grad():
        net.eval()
        st = net.text_states(tok)[0]
        table = net.active_table()
        for t, (i, m) in enumerate(zip(ids[0].tolist(), mask[0].tolist(), strict=True)):
            pos = int(net.active_lut[i])
            if not m or i in (101, 102) or pos < 0:
                continue
            z = net.text_lex.token_logits(st[None, t : t + 1], table)[0, 0, pos]
            out[pos] = max(out.get(pos, 0.0), float(torch.log1p(torch.relu(z))))
    return out


def test_text_lexicon_holds_only_the_texts_own_pieces(grounded):
    net = grounded.net
    tok = net.tokenize(TEXTS)
    with torch.no_grad():
        net.eval()
        w = net.text_lexical(net.text_states(tok), tok).numpy()
    for r, text in enumerate(TEXTS):
        ref = np.zeros(w.shape[1], np.float32)
        for pos, v in _reference(grounded, text).items():
            ref[pos] = v
        np.testing.assert_allclose(w[r], ref, rtol=1e-5, atol=1e-6)
    assert not w[3].any()  # no active piece in the text: an empty query vector
    # the expanding head puts weight outside the text's pieces on the same states
    grounded.cfg.lexicon.text_expansion = True
    with torch.no_grad():
        wide = net.text_lexical(net.text_states(tok), tok).numpy()
    assert ((wide[0] > 0) & (w[0] == 0)).any()


def test_every_query_piece_is_a_query_word(grounded):
    words = vocab_list()
    sp = grounded.encode_texts_lexical(TEXTS)
    sources = grounded.lexical_sources(TEXTS)
    for r, text in enumerate(TEXTS):
        vocab_ids, _ = sp.row(r)
        assert set(sources[r]) == set(vocab_ids.tolist())
        for v, word in sources[r].items():
            assert word != WHOLE_QUERY and word in text.lower().split()
            assert words[v].lstrip("#") in word


def test_cli_refits_heads_without_expansion_and_the_setting_is_saved(tmp_path, capsys):
    from lexlens.data.scenes import generate_scenes

    data = tmp_path / "scenes"
    generate_scenes(data, 24, seed=3, size=32, workers=1, progress=False)
    start = tmp_path / "start"
    torch.manual_seed(0)
    build_native("tiny", texts=["a red circle"]).save(start)
    out = tmp_path / "m"
    argv = ["train", "--model", f"native:{start}", "--objective", "lexical-heads"]
    argv += ["--no-text-expansion", "--data", str(data), "--out", str(out)]
    argv += ["--epochs", "1", "--batch-size", "8", "--json"]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    back = load_native_dir(out, "m")
    assert back.cfg.lexicon.text_expansion is False
    assert (
        json.loads((out / "lexlens.json").read_text())["config"]["lexicon"]["text_expansion"]
        is False
    )
    assert s["steps"] >= 1
    texts = ["a big red circle", "two blue squares"]
    sp = back.encode_texts_lexical(texts)
    own = [set(np.unique(encode_batch([t], 32)[0])) for t in texts]
    for r in range(len(texts)):
        assert set(sp.row(r)[0].tolist()) <= own[r]


def test_no_expansion_needs_lexicon_heads(tmp_path):
    from lexlens.models.native_config import load_config

    cfg = load_config("tiny")
    cfg.lexicon.enabled = False
    start = tmp_path / "dense-only"
    build_native(cfg).save(start)
    argv = ["train", "--model", f"native:{start}", "--no-text-expansion", "--data", "x"]
    assert main([*argv, "--out", str(tmp_path / "o")]) != 0
    from lexlens.train.api import TrainRequest, run_training

    with pytest.raises(UsageError, match="native models with lexicon heads"):
        run_training(
            TrainRequest(str(tmp_path / "o"), data="x", model=f"native:{start}",
                         text_expansion=False),
            progress=False,
        )  # fmt: skip
