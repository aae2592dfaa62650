"""Explanations of lexical hits grouped by query word (``Hit.explain_words``), on a sparse index
of a tiny random-initialised native model; the per-piece entries carry their ``query_word``.

References: the encoder's own ``lexical_sources`` for the words, and sums / sorts written out
here for the grouping; a model without attribution gives the piece-level output unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

pytest.importorskip("torch")

from lexlens.cli import main  # noqa: E402
from lexlens.index.index import Index  # noqa: E402
from lexlens.models.attribution import WHOLE_QUERY  # noqa: E402
from lexlens.models.base import Encoder  # noqa: E402
from lexlens.search import Query, format_results  # noqa: E402

QUERIES = ["a big red circle to the left of a small blue square", "two small green stars"]


def _texts() -> list[Query]:
    return [Query(text=t) for t in QUERIES]


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    """(index dir, tiny native encoder saved as ``native:DIR``) of 16 generated scenes, spec
    ``sparse``."""
    import torch

    from lexlens.data.scenes import generate_scenes
    from lexlens.models.native import build_native
    from lexlens.models.registry import load_encoder

    d = tmp_path_factory.mktemp("explain")
    generate_scenes(d / "scenes", 16, seed=2, size=32, workers=1, progress=False)
    torch.manual_seed(5)
    build_native("tiny", texts=QUERIES).save(d / "model")
    enc = load_encoder(f"native:{d / 'model'}")
    Index.build(d / "scenes", enc, d / "idx", spec="sparse", progress=False, workers=0)
    return d / "idx", enc


def _grouped(entries: Sequence[dict]) -> list[tuple[str, float, list[str]]]:
    sums: dict[str, float] = {}
    pieces: dict[str, list[str]] = {}
    for e in entries:
        sums[e["query_word"]] = sums.get(e["query_word"], 0.0) + e["contribution"]
        pieces.setdefault(e["query_word"], []).append(e["word"])
    return sorted(((w, s, pieces[w]) for w, s in sums.items()), key=lambda g: (-g[1], g[0]))


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
def test_explanations_are_grouped_by_query_word(tiny_index, mode) -> None:
    path, enc = tiny_index
    res = Index.open(path, model=enc).search(_texts(), k=5, explain=True, query_mode=mode)
    sources = enc.lexical_sources(QUERIES, mode)
    n_groups = 0
    for text, src, hits in zip(QUERIES, sources, res.hits, strict=True):
        assert hits
        for h in hits:
            assert h.explain and all(e["query_word"] == src[e["id"]] for e in h.explain)
            got = [(g["query_word"], g["contribution"], g["pieces"]) for g in h.explain_words]
            ref = _grouped(h.explain)
            assert [(w, p) for w, _, p in got] == [(w, p) for w, _, p in ref]
            np.testing.assert_allclose([c for _, c, _ in got], [c for _, c, _ in ref], rtol=1e-12)
            total = sum(g["contribution"] for g in h.explain_words)
            assert total == pytest.approx(sum(e["contribution"] for e in h.explain), rel=1e-12)
            assert total == pytest.approx(h.score, rel=1e-5, abs=1e-5)
            if mode == "inference-free":  # every piece is a token of one of the query's words
                assert {g["query_word"] for g in h.explain_words} <= set(text.split())
            n_groups += len(got)
    assert n_groups > len(QUERIES)
    first = res.hits[0][0].explain_words[0]
    head = f"matched: {first['query_word']} {first['contribution']:.2f}"
    # the pieces follow in brackets unless they are just the word itself
    tail = "" if first["pieces"] == [first["query_word"]] else f" ({', '.join(first['pieces'])})"
    assert head + tail in format_results(res)
    assert "shared words:" not in format_results(res)


def test_json_output_has_pieces_and_groups(tiny_index, capsys) -> None:
    path, _ = tiny_index
    assert main(["search", str(path), QUERIES[0], "--explain", "--k", "2", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["results"][0]["hits"][0]
    assert hit["explain"] and all("query_word" in e for e in hit["explain"])
    assert sorted(p for g in hit["explain_words"] for p in g["pieces"]) == sorted(
        e["word"] for e in hit["explain"]
    )


class PiecesOnly(Encoder):
    """The same model without ``lexical_sources`` (like the training-free lexical adapter)."""

    def __init__(self, inner: Encoder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.preprocess_config = inner.preprocess_config

    def _forward_images(self, pixels):
        return self.inner._forward_images(pixels)

    def _forward_texts(self, texts):
        return self.inner._forward_texts(texts)

    has_lexical = property(lambda self: True)
    vocab = property(lambda self: self.inner.vocab)
    lexical_query_modes = property(lambda self: self.inner.lexical_query_modes)

    def encode_images_lexical(self, images, batch_size=64, progress=False):
        return self.inner.encode_images_lexical(images, batch_size, progress)

    def encode_texts_lexical(self, texts, batch_size=256, progress=False, mode="encoder"):
        return self.inner.encode_texts_lexical(texts, batch_size, progress, mode)


def test_a_model_without_attribution_keeps_piece_explanations(tiny_index) -> None:
    path, enc = tiny_index
    plain = Index.open(path, model=PiecesOnly(enc)).search(_texts(), k=5, explain=True)
    worded = Index.open(path, model=enc).search(_texts(), k=5, explain=True)
    np.testing.assert_array_equal(plain.ids, worded.ids)
    for a, b in zip(plain.hits, worded.hits, strict=True):
        for ha, hb in zip(a, b, strict=True):
            assert ha.explain_words is None and ha.explain
            assert ha.explain == [
                {k: v for k, v in e.items() if k != "query_word"} for e in hb.explain
            ]
    text = format_results(plain)
    assert "shared words:" in text and "matched:" not in text


def test_queries_that_are_not_a_text_alone_keep_piece_explanations(tiny_index) -> None:
    path, enc = tiny_index
    idx = Index.open(path, model=enc)
    image = str(sorted((path.parent / "scenes").rglob("*.png"))[0])
    queries = [Query(item=3), Query(image=image, text="red"), Query(text=QUERIES[1])]
    res = idx.search(queries, k=3, explain=True)
    assert res.hits[0][0].id == 3
    for hits in res.hits[:2]:  # an item's or an image's pieces come from no query word
        assert hits[0].explain and all(h.explain_words is None for h in hits)
    assert all(h.explain_words is not None for h in res.hits[2])
    # the tiny model's [CLS] / [SEP] tokens win pieces too: they stand for the whole query
    words = {e["query_word"] for h in res.hits[2] for e in h.explain}
    assert words <= set(QUERIES[1].split()) | {WHOLE_QUERY}


def test_explanation_line_names_the_lexical_score_when_the_hit_is_ranked_by_another() -> None:
    from lexlens.search import Hit, SearchResults, explain_by_word

    pieces = [
        {"word": "blue", "id": 1, "query": 1.5, "item": 2.0, "contribution": 3.0, "query_word": "blue"},
        {"word": "star", "id": 2, "query": 0.5, "item": 2.0, "contribution": 1.0, "query_word": "stars"},
    ]  # fmt: skip
    lexical = Hit(1, 7, 4.0, explain=pieces, explain_words=explain_by_word(pieces))
    fused = Hit(2, 8, 0.91, explain=pieces, explain_words=explain_by_word(pieces))
    text = format_results(
        SearchResults(np.zeros((1, 2)), np.array([[7, 8]]), [[lexical, fused]], ["q"])
    ).splitlines()
    assert text[2].strip() == "matched: blue 3.00, stars 1.00 (star)"
    assert text[4].strip() == "matched (lexical score 4.0000): blue 3.00, stars 1.00 (star)"


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_query_text_is_a_usage_error(tiny_index, text, capsys) -> None:
    from lexlens.errors import UsageError

    with pytest.raises(UsageError, match="query text is empty"):
        Query(text=text)
    assert main(["search", str(tiny_index[0]), text]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "query text is empty" in err[0]


def test_short_k_option_limits_the_results(tiny_index, capsys) -> None:
    path, _ = tiny_index
    for flag in ("-k", "--k"):
        assert main(["search", str(path), QUERIES[1], flag, "3", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)["results"][0]["hits"]
        assert [h["rank"] for h in hits] == [1, 2, 3]


@pytest.mark.parametrize("mode", ["encoder", "inference-free"])
def test_image_and_text_query_vectors_mix_the_separate_encodings(tiny_index, mode) -> None:
    """An image+text query on a lexical index: the dense vectors fused and the lexical weights
    mixed by ``weight``, from the encoder's separate calls written out here."""
    from lexlens.search import encode_queries, fuse

    path, enc = tiny_index
    idx = Index.open(path, model=enc)
    image = str(sorted((path.parent / "scenes").rglob("*.png"))[1])
    v = encode_queries(idx, [Query(image=image, text="a red circle", weight=0.3)], mode)
    want_dense = fuse(enc.encode_images([image]), enc.encode_texts(["a red circle"]), 0.3)
    np.testing.assert_array_equal(v.dense[0], want_dense[0])
    img = enc.encode_images_lexical([image]).to_dense()[0]
    txt = enc.encode_texts_lexical(["a red circle"], mode=mode).to_dense()[0]
    np.testing.assert_allclose(v.sparse.to_dense()[0], 0.7 * img + 0.3 * txt, rtol=1e-6)


def test_an_explained_search_encodes_its_queries_once(tiny_index, monkeypatch) -> None:
    path, enc = tiny_index
    idx = Index.open(path, model=enc)
    plain = idx.search(_texts(), k=5)
    calls = []
    original = enc.net.text_states

    def counted(*a, **k):
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(enc.net, "text_states", counted)
    explained = idx.search(_texts(), k=5, explain=True)
    assert len(calls) == 1  # the query vectors and their words come from the same pass
    np.testing.assert_array_equal(explained.ids, plain.ids)
    np.testing.assert_array_equal(explained.scores, plain.scores)
    assert all(h.explain_words for hits in explained.hits for h in hits)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lexlens: error: "), err
    return err[0]


def test_a_query_image_that_does_not_decode_is_one_line(tiny_index, tmp_path, capsys) -> None:
    from PIL import Image

    path = str(tiny_index[0])
    fake, cut, png = tmp_path / "fake.png", tmp_path / "cut.png", tmp_path / "ok.png"
    fake.write_text("not an image")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png)
    cut.write_bytes(png.read_bytes()[:60])
    assert main(["search", path, str(fake)]) == 1
    assert "not an image file" in _one_line_error(capsys)
    for args in ([str(cut)], ["--image", str(cut), "--text", "red"]):
        assert main(["search", path, *args]) == 1
        assert f"cannot read image {cut}" in _one_line_error(capsys)
    assert main(["search", path, str(tmp_path / "gone.png")]) == 2
    assert "no image file" in _one_line_error(capsys)
    assert main(["search", path, "a photo of cats.png on a wall"]) == 0  # text with a space


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array(["a", "b"]), "must hold numbers"),
        (np.full(8, np.nan, np.float32), "NaN or infinite"),
        (np.zeros(8, np.float32), "all zeros"),
        (np.ones((2, 2, 8), np.float32), "must hold [d] or [n, d]"),
        (np.zeros((0, 8), np.float32), "must hold [d] or [n, d]"),
        (np.array([{"a": 1}], dtype=object), "not a numeric .npy array"),
    ],
)
def test_bad_embedding_files_are_one_line_errors(tiny_index, tmp_path, values, message, capsys):
    f = tmp_path / "e.npy"
    np.save(f, values, allow_pickle=True)
    assert main(["search", str(tiny_index[0]), "--embedding", str(f)]) == 2
    assert message in _one_line_error(capsys)


def test_check_embeddings_scales_rows_and_keeps_directions() -> None:
    from lexlens.search import check_embeddings

    raw = np.array([[3.0, -4.0, 0.0], [1e300, 1e300, -2e300]])
    got = check_embeddings(raw)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    ref = raw / np.abs(raw).max(axis=1, keepdims=True)  # naive: row / largest magnitude
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_explain_on_a_dense_index_says_why_nothing_is_explained(tiny_index, tmp_path, capsys):
    path, enc = tiny_index
    Index.build(path.parent / "scenes", enc, tmp_path / "flat", spec="flat", progress=False)
    assert main(["search", str(tmp_path / "flat"), QUERIES[1], "--explain", "--json"]) == 0
    out = capsys.readouterr()
    assert all(not h.get("explain") for h in json.loads(out.out)["results"][0]["hits"])
    assert "has no lexical weights" in out.err
    assert main(["search", str(path), QUERIES[1], "--explain"]) == 0
    assert "has no lexical weights" not in capsys.readouterr().err


def test_min_score_bounds_are_checked_and_never_overflow(tiny_index) -> None:
    import warnings

    from lexlens.errors import UsageError

    idx = Index.open(tiny_index[0], model=tiny_index[1])
    with pytest.raises(UsageError, match="NaN"):
        idx.search(_texts(), k=3, min_score=float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        none = idx.search(_texts(), k=3, min_score=1e300)
        every = idx.search(_texts(), k=3, min_score=-1e300)
    assert (none.ids == -1).all()
    assert (every.ids == idx.search(_texts(), k=3).ids).all()


def test_a_query_naming_an_image_file_with_spaces_is_an_image(tiny_index, tmp_path, capsys):
    import shutil

    from lexlens.search import queries_from_cli

    path, _ = tiny_index
    scene = sorted((path.parent / "scenes" / "images").iterdir())[3]
    spaced = tmp_path / "sub dir" / "img 00003.png"
    spaced.parent.mkdir()
    shutil.copy(scene, spaced)
    [q] = queries_from_cli(str(spaced), None, None, 0.5, None, None)
    assert (q.image, q.text) == (str(spaced), None)
    assert main(["search", str(path), str(spaced), "--k", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["query"] == f"image {spaced}"
    # the same picture under its own name ranks the same item first
    assert main(["search", str(path), str(scene), "--k", "1", "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert own["results"][0]["hits"][0]["id"] == out["results"][0]["hits"][0]["id"]


@pytest.mark.parametrize(
    "query",
    ["sub dir/gone 01.png", "my holiday photo.JPG", "shots/cat.jpg please", "x\\y.webp"],
)
def test_a_query_that_looks_like_a_missing_image_path_is_an_error(tmp_path, query, monkeypatch):
    from lexlens.errors import UsageError
    from lexlens.search import queries_from_cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="no image file .*use --text"):
        queries_from_cli(query, None, None, 0.5, None, None)


@pytest.mark.parametrize(
    "query",
    [
        "a red circle left of a blue square",
        "a photo of a.png-like thing",
        "a photo of cats.png on a wall",
        "red/blue circles",
        "red",  # a file of that name exists (no image ending): still a text
    ],
)
def test_sentences_stay_text_queries(tmp_path, query, monkeypatch) -> None:
    from lexlens.search import queries_from_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "red").write_text("not a picture")
    [q] = queries_from_cli(query, None, None, 0.5, None, None)
    assert (q.text, q.image) == (query, None)
