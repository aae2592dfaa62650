"""Query-word attribution of lexical query pieces (``lexical_sources``).

References: a loop over the query's tokens running the torch lexicon head on one token at a
time (strictly larger wins, so the lowest position keeps a tie), and the query words the
tokenizers give themselves (``tokenizers`` word ids and offsets; a BPE word per ``</w>``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import test_openclip_backend  # noqa: E402

from lexlens.errors import UsageError  # noqa: E402
from lexlens.models.attribution import (  # noqa: E402
    WHOLE_QUERY,
    max_pool_sources,
    token_words,
)
from lexlens.models.minilm import get_tokenizer, vocab_list  # noqa: E402
from lexlens.models.native import build_native  # noqa: E402

TEXTS = [
    "a big red circle to the left of a small blue square",
    "three green hexagons and two pentagons",
    "Two pentagons, then HEXAGONS left-hand",
    "star",
]


@pytest.fixture(scope="module")
def native():
    torch.manual_seed(11)
    return build_native("tiny", texts=TEXTS)


def _tokenizer_words(text: str, max_tokens: int) -> list[str | None]:
    """Each token's query word by the tokenizer itself (specials: WHOLE_QUERY)."""
    enc = get_tokenizer(max_tokens).encode(text)
    spans: dict[int, tuple[int, int]] = {}
    for w, (a, b) in zip(enc.word_ids, enc.offsets, strict=True):
        if w is not None:
            lo, hi = spans.get(w, (a, b))
            spans[w] = (min(lo, a), max(hi, b))
    out: list[str | None] = []
    for w, m in zip(enc.word_ids, enc.attention_mask, strict=True):
        out.append(None if not m else WHOLE_QUERY if w is None else text[slice(*spans[w])].lower())
    return out


def _winners(net, states, real, ids, col, mode) -> dict[int, int]:
    """``{piece: token position}``: the largest weight over the real tokens, one token at a
    time through the torch head (or the inference-free table); strictly larger wins."""
    best: dict[int, tuple[float, int]] = {}
    with torch.no_grad():
        free = net.free_table.weights()
        table = net.active_table()
    for t, i in enumerate(ids):
        if not real[t]:
            continue
        if mode == "encoder":
            with torch.no_grad():
                w = net.text_lex.token_weights(states[None, t : t + 1], table)[0, 0].numpy()
        else:
            w = np.zeros(len(col), np.float32)
            if i in col:
                w[col[i]] = float(free[col[i]])
        for v, j in col.items():
            if v not in best or w[j] > best[v][0]:
                best[v] = (float(w[j]), t)
    return {v: t for v, (_, t) in best.items()}


def _reference_sources(enc, texts: list[str], mode: str) -> list[dict[int, str]]:
    """Per text: each non-zero piece of its query vector -> the word of its winning token."""
    net = enc.net
    sp = enc.encode_texts_lexical(texts, mode=mode)
    tok = net.tokenize(texts)
    col = {int(v): j for j, v in enumerate(enc._active.tolist())}
    with torch.no_grad():
        states = net.text_states(tok)
    out = []
    for r, text in enumerate(texts):
        words = _tokenizer_words(text, enc.cfg.text.max_tokens)
        ids = tok["input_ids"][r].tolist()
        won = _winners(net, states[r], tok["attention_mask"][r] > 0, ids, col, mode)
        out.append({v: words[won[v]] for v in sp.row(r)[0].tolist()})
    return out


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
def test_sources_match_a_token_by_token_reference(native, mode) -> None:
    got = native.lexical_sources(TEXTS, mode)
    sp = native.encode_texts_lexical(TEXTS, mode=mode)
    assert got == _reference_sources(native, TEXTS, mode)
    for r, src in enumerate(got):  # exactly the pieces of the query vector
        assert sorted(src) == sp.row(r)[0].tolist() and src


def test_inference_free_pieces_are_the_querys_own_words(native) -> None:
    vocab = vocab_list()
    for text, src in zip(TEXTS, native.lexical_sources(TEXTS, "inference-free"), strict=True):
        words = [w for w in _tokenizer_words(text, 24) if w not in (None, WHOLE_QUERY)]
        for v, w in src.items():
            assert w in words and vocab[v].removeprefix("##") in w
    # a piece in two words goes to the first: "##s" of "hexagons" or of "pentagons"
    s = vocab.index("##s")
    a, b = native.lexical_sources(["hexagons pentagons", "pentagons hexagons"], "inference-free")
    assert (a[s], b[s]) == ("hexagons", "pentagons")


def test_ties_go_to_the_lowest_position() -> None:
    """Equal weights at every token (a head that ignores its input): [CLS] wins everything."""
    enc = build_native("tiny", texts=TEXTS)
    with torch.no_grad():
        enc.net.text_lex.proj.weight.zero_()
        enc.net.text_lex.bias.fill_(1.0)
    src = enc.lexical_sources(TEXTS)
    assert all(src) and all(w == WHOLE_QUERY for s in src for w in s.values())


def test_max_pool_sources_against_a_loop() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        w = rng.integers(0, 3, (7, 5)).astype(np.float32)  # many ties
        valid = rng.random(7) < 0.7
        valid[rng.integers(7)] = True
        cols = rng.permutation(5)[: rng.integers(1, 6)]
        expected = []
        for c in cols:
            best = None
            for t in range(7):
                if valid[t] and (best is None or w[t, c] > w[best, c]):
                    best = t
            expected.append(best)
        assert max_pool_sources(w, valid, cols).tolist() == expected


def test_token_words_match_the_tokenizer() -> None:
    from lexlens.models.minilm import encode_batch

    ids, mask = encode_batch(TEXTS, 24)
    for r, text in enumerate(TEXTS):
        got = token_words(ids[r], mask[r] > 0, vocab_list(), {0, 100, 101, 102, 103})
        ref = _tokenizer_words(text, 24)  # alone, so without the batch's padding
        assert got == ref + [None] * (len(got) - len(ref))


def test_token_words_of_bpe_and_sentencepiece_marks() -> None:
    bpe = ["<s>", "re", "d</w>", "circle</w>", "a</w>", "</s>"]
    assert token_words([0, 4, 1, 2, 3, 5, 5], [1] * 6 + [0], bpe, {0, 5}) == [
        WHOLE_QUERY, "a", "red", "red", "circle", WHOLE_QUERY, None,
    ]  # fmt: skip
    spm = ["<s>", "\u2581a", "\u2581re", "d", "\u2581circle", "s"]
    assert token_words([0, 1, 2, 3, 4, 5], [1] * 6, spm, {0}) == [
        WHOLE_QUERY, "a", "red", "red", "circles", "circles",
    ]  # fmt: skip


def test_errors_are_one_line(native) -> None:
    with pytest.raises(UsageError, match="query mode"):
        native.lexical_sources(["red"], "nonsense")


# -- the lexical-heads encoder on a tiny open_clip model ----------------------------------------
tiny = test_openclip_backend.tiny  # (config, checkpoint, model, tokenizer) of a tiny open_clip


@pytest.fixture(scope="module")
def heads(tiny):
    """Random lexicon heads on the tiny open_clip model."""
    from lexlens.models.lexheads import attach_heads
    from lexlens.models.registry import load_encoder

    cfg, ckpt, _, _ = tiny
    enc = attach_heads(load_encoder(f"openclip:{cfg}:{ckpt}"), TEXTS, seed=1)
    with torch.no_grad():  # vary the inference-free weights (they start equal)
        enc.net.free_table.logit.copy_(torch.linspace(-0.5, 2.0, len(enc._active)))
    return enc


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
def test_lexical_heads_sources_match_a_token_by_token_reference(heads, mode) -> None:
    """CLIP BPE: the query word of token t is the k-th word of the text, k = the number of
    word-final (``</w>``) pieces before t."""
    texts = [t.lower().replace(",", "").replace("-", " ") for t in TEXTS]
    net, raw, special = heads.net, heads.net.towers.raw_pieces(), heads.net.towers.special_ids
    tok = net.tokenize(texts)
    col = {int(v): j for j, v in enumerate(heads._active.tolist())}
    with torch.no_grad():
        states, mask, _ = net.frozen_text(tok)
    sp = heads.encode_texts_lexical(texts, mode=mode)
    for r, (text, src) in enumerate(zip(texts, heads.lexical_sources(texts, mode), strict=True)):
        ids = tok["input_ids"][r].tolist()
        words: list[str | None] = []
        k = 0
        for t, i in enumerate(ids):
            if not mask[r, t]:
                words.append(None)
                continue
            words.append(WHOLE_QUERY if i in special else text.split()[k])
            k += raw[i].endswith("</w>") and i not in special
        won = _winners(net, states[r], mask[r] > 0, ids, col, mode)
        assert src == {v: words[won[v]] for v in sp.row(r)[0].tolist()}
        assert src


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
@pytest.mark.parametrize("which", ["native", "heads"])
def test_explained_queries_are_the_separate_calls_from_one_pass(request, which, mode) -> None:
    """``explained_text_queries`` gives ``encode_text_queries``' vectors and
    ``lexical_sources``' words, running the text tower once per batch."""
    enc = request.getfixturevalue(which)
    texts = TEXTS if which == "native" else [t.lower() for t in TEXTS]
    dense, sparse = enc.encode_text_queries(texts, mode)
    sources = enc.lexical_sources(texts, mode)
    tower = "text_states" if which == "native" else "frozen_text"
    calls = []
    original = getattr(enc.net, tower)

    def counted(*a, **k):
        calls.append(1)
        return original(*a, **k)

    setattr(enc.net, tower, counted)
    try:
        got_dense, got_sparse, got_sources = enc.explained_text_queries(texts, mode, batch_size=3)
    finally:
        delattr(enc.net, tower)
    assert len(calls) == 2  # two batches (3 + 1 texts), one tower pass each
    np.testing.assert_allclose(got_dense, dense, rtol=0, atol=1e-6)
    for r in range(len(texts)):
        np.testing.assert_array_equal(got_sparse.row(r)[0], sparse.row(r)[0])
        np.testing.assert_array_equal(got_sparse.row(r)[1], sparse.row(r)[1])
    assert got_sources == sources and any(sources)
