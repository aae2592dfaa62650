"""The ``lexical:`` backend (training-free lexical vectors) against naive recomputations.

References use only the inner encoder's own ``encode_texts`` / ``encode_images`` and plain
numpy loops (full sorts), never the adapter's code.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from lexical_fakes import HashEncoder, colour_image

from lexlens.errors import DataError, UsageError
from lexlens.models import lexical_adapter as LA
from lexlens.models import registry
from lexlens.models.base import QUERY_MODES, encode_query_lexical
from lexlens.models.lexical_adapter import LexicalAdapter, parse_lexical_options

WORDS = (
    "red green blue yellow white black circle square star cross small large left right top "
    "two three 7 apple river cloud"
).split()
PROMPTS = ("a picture of {}", "{} here")
COLOURS = [(230, 20, 20), (20, 200, 40), (20, 40, 230), (240, 230, 20), (250, 250, 250)]


@pytest.fixture()
def files(tmp_path):
    """Word list, prompts and a reference image folder (12 images)."""
    (tmp_path / "words.txt").write_text("# a comment\n" + "\n".join(WORDS) + "\nRed\n")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(12):
        colour_image(COLOURS[i % 5], seed=100 + i).save(ref / f"r{i:02d}.png")
    return tmp_path


def _opts(files: Path, **extra: object) -> str:
    base = {
        "words": files / "words.txt",
        "prompts": files / "prompts.txt",
        "ref": files / "ref",
        "nref": 12,
    }
    base.update(extra)
    return ",".join(f"{k}={v}" for k, v in base.items())


def _naive_word_embeddings(inner: HashEncoder) -> np.ndarray:
    rows = []
    for w in WORDS:
        vs = [inner.encode_texts([p.replace("{}", w)])[0] for p in PROMPTS]
        m = np.mean(vs, axis=0)
        rows.append(m / np.linalg.norm(m))
    return np.asarray(rows)


def _naive_weights(weight: str, sims: np.ndarray, ref_sims: np.ndarray, temp: float) -> np.ndarray:
    out = np.zeros_like(sims, dtype=np.float64)
    for r in range(sims.shape[0]):
        for j in range(sims.shape[1]):
            s = float(sims[r, j])
            if weight == "sim":
                v = s
            elif weight == "z":
                col = ref_sims[:, j].astype(np.float64)
                v = (s - col.mean()) / (col.std() + 1e-4)
            elif weight == "center":
                v = s - float(ref_sims[:, j].astype(np.float64).mean())
            elif weight == "img":
                row = sims[r].astype(np.float64)
                v = (s - row.mean()) / (row.std() + 1e-6)
            else:
                row = sims[r].astype(np.float64) / temp
                v = float(np.exp(s / temp - row.max()) / np.exp(row - row.max()).sum())
            out[r, j] = max(v, 0.0)
    return out


def _naive_topk(weights: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    rows = []
    for r in range(weights.shape[0]):
        pairs = sorted(
            ((j, float(weights[r, j])) for j in range(weights.shape[1]) if weights[r, j] > 0),
            key=lambda p: (-p[1], p[0]),
        )[:k]
        rows.append(sorted(pairs))
    return rows


@pytest.mark.parametrize("weight", LA.WEIGHTS)
def test_image_topk_words_equal_brute_force(files, weight):
    inner = HashEncoder()
    enc = LexicalAdapter(inner, parse_lexical_options(_opts(files, topk=5, weight=weight)))
    assert list(enc.vocab) == WORDS  # the file's words, once, in order
    images = [colour_image(COLOURS[i % 5], seed=i) for i in range(9)]
    got = enc.encode_images_lexical(images, batch_size=4)

    emb = _naive_word_embeddings(inner)
    dense = inner.encode_images(images)
    ref_images = sorted((files / "ref").glob("*.png"))
    ref_sims = inner.encode_images([str(p) for p in ref_images]) @ emb.T
    want = _naive_topk(_naive_weights(weight, dense @ emb.T, ref_sims, 0.01), 5)

    assert got.vocab_size == len(WORDS) and list(got.vocab) == WORDS
    assert len(got) == len(images)
    for r, pairs in enumerate(want):
        idx, val = got.row(r)
        assert idx.tolist() == [j for j, _ in pairs]
        np.testing.assert_allclose(val, [v for _, v in pairs], rtol=2e-4, atol=1e-6)
        assert (val > 0).all()
    # the dense output is the inner model's, unchanged
    np.testing.assert_allclose(enc.encode_images(images), dense, atol=1e-6)
    np.testing.assert_allclose(enc.encode_texts(["a red star"]), inner.encode_texts(["a red star"]))


def test_topk_cut_breaks_ties_by_lower_word_id():
    w = np.asarray([[0.5, 0.9, 0.5, 0.0, 0.5, 0.9], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    vocab = [f"w{i}" for i in range(6)]
    for k in range(1, 7):
        got = LA._top_words(w, k, vocab)
        want = _naive_topk(w, k)
        for r in range(2):
            assert got.row(r)[0].tolist() == [j for j, _ in want[r]]
    assert LA._top_words(w, 3, vocab).row(0)[0].tolist() == [0, 1, 5]


def _rows(enc: LexicalAdapter, sb) -> list[dict[str, float]]:
    return [
        {enc.vocab[int(i)]: float(v) for i, v in zip(*sb.row(r), strict=True)}
        for r in range(len(sb))
    ]


TEXTS = ["A RED star, left of 2 red... Squares", "nothing known", "7 apples? apple!"]
WORDS_OF_TEXTS = [{"red": 1.0, "star": 1.0, "left": 1.0}, {}, {"7": 1.0, "apple": 1.0}]


def test_inference_free_queries_are_their_vocabulary_words(files):
    inner = HashEncoder()
    enc = LexicalAdapter(inner, parse_lexical_options(_opts(files)))
    assert enc.lexical_query_modes == QUERY_MODES
    before = inner.texts_encoded
    assert _rows(enc, encode_query_lexical(enc, TEXTS, "inference-free")) == WORDS_OF_TEXTS
    assert inner.texts_encoded == before  # no network at query time
    with pytest.raises(UsageError, match="unknown query mode"):
        enc.encode_texts_lexical(["red"], mode="fast")
    # without the encoder part (qtopk=0) both modes give the words alone
    enc0 = LexicalAdapter(inner, parse_lexical_options(_opts(files, qtopk=0)))
    assert _rows(enc0, enc0.encode_texts_lexical(TEXTS)) == WORDS_OF_TEXTS


def test_encoder_queries_add_the_text_embeddings_nearest_words(files):
    inner = HashEncoder()
    enc = LexicalAdapter(inner, parse_lexical_options(_opts(files, qtopk=3)))
    got = _rows(enc, encode_query_lexical(enc, TEXTS, "encoder"))
    emb = _naive_word_embeddings(inner)
    mu = (emb @ emb.T).mean(axis=0)  # the reference folder has no captions: words stand in
    for r, text in enumerate(TEXTS):
        c = inner.encode_texts([text])[0] @ emb.T - mu
        top = sorted((-c[j], j) for j in range(len(WORDS)) if c[j] > 0)[:3]
        want = dict(WORDS_OF_TEXTS[r])
        for negc, j in top:
            want[WORDS[j]] = want.get(WORDS[j], 0.0) + (-negc) / (-top[0][0])
        assert got[r].keys() == want.keys()
        for w, v in want.items():
            assert got[r][w] == pytest.approx(v, rel=1e-4, abs=1e-5)
        assert max(got[r].values()) <= 2.0 + 1e-6


def test_query_expansion_adds_nearest_words_by_cosine(files):
    inner = HashEncoder()
    enc = LexicalAdapter(inner, parse_lexical_options(_opts(files, expand=2)))
    emb = _naive_word_embeddings(inner)
    sb = enc.encode_texts_lexical(["red cloud"], mode="inference-free")
    got = {enc.vocab[int(i)]: float(v) for i, v in zip(*sb.row(0), strict=True)}
    want: dict[str, float] = {"red": 1.0, "cloud": 1.0}
    for w in ("red", "cloud"):
        i = WORDS.index(w)
        cos = [(float(emb[i] @ emb[j]), j) for j in range(len(WORDS)) if j != i]
        for c, j in sorted(cos, key=lambda p: (-p[0], p[1]))[:2]:
            if c > 0:
                want[WORDS[j]] = max(want.get(WORDS[j], 0.0), c)
    assert got.keys() == want.keys()
    for w, v in want.items():
        assert got[w] == pytest.approx(v, abs=1e-5)


def test_results_explain_themselves_by_words(files):
    enc = LexicalAdapter(HashEncoder(), parse_lexical_options(_opts(files, topk=4)))
    img = enc.encode_images_lexical([colour_image(COLOURS[0])])
    q = enc.encode_texts_lexical(["red green blue yellow white black circle star"])
    shared = set(q.row(0)[0].tolist()) & set(img.row(0)[0].tolist())
    score = float(q.to_dense()[0] @ img.to_dense()[0])
    words = {img.vocab[i]: float(q.to_dense()[0, i] * img.to_dense()[0, i]) for i in shared}
    assert score == pytest.approx(sum(words.values()))
    assert all(isinstance(w, str) and w in WORDS for w in words)


# ----------------------------------------------------------------------------- spec
@pytest.fixture()
def hash_backend(monkeypatch):
    """``hash:SEED`` loads a HashEncoder (and counts how often)."""
    registry.list_models()  # built-ins first
    loads: list[str] = []

    def load(target: str) -> HashEncoder:
        loads.append(target)
        return HashEncoder(name=f"hash:{target}", seed=int(target))

    monkeypatch.setitem(registry.BACKENDS, "hash", registry._Backend(load, list, "tests"))
    return loads


def test_spec_round_trip_and_canonical_name(hash_backend, files):
    enc = registry.load_encoder("lexical:hash:3")
    assert isinstance(enc, LexicalAdapter) and enc.name == "lexical:hash:3"
    assert enc.options == LA.LexicalOptions() and enc.inner.name == "hash:3"
    spec = f"lexical( WEIGHT=SIM , topk=7,words={files / 'words.txt'},temp=0.5):hash:4"
    enc = registry.load_encoder(spec)
    canonical = f"lexical(topk=7,weight=sim,words={files / 'words.txt'},temp=0.5):hash:4"
    assert enc.name == canonical
    again = registry.load_encoder(enc.name)
    assert again.name == canonical and again.options == enc.options
    ms = registry.parse_model_spec(canonical)
    assert (ms.backend, ms.target) == ("lexical", "hash:4") and str(ms) == canonical
    assert registry.load_encoder("lexical():hash:3").name == "lexical:hash:3"
    # defaults are left out; the inner spec keeps its own colons
    opts = parse_lexical_options("topk=32,weight=center,expand=1")
    assert LA.format_lexical_spec(opts, "openclip:ViT-B-32:laion2b_s34b_b79k") == (
        "lexical(expand=1):openclip:ViT-B-32:laion2b_s34b_b79k"
    )
    for text in ("", "topk=3", "weight=softmax,temp=0.25,cache=/tmp/x:y", "ref=/data/set,nref=9"):
        o = parse_lexical_options(text)
        s = LA.format_lexical_spec(o, "hash:1")
        inner = s[len("lexical(") : s.index("):")] if s.startswith("lexical(") else ""
        assert parse_lexical_options(inner) == o


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lexical(topk=0):hash:1", "topk must be >= 1"),
        ("lexical(topk=many):hash:1", "is not an integer"),
        ("lexical(temp=hot):hash:1", "is not a number"),
        ("lexical(topk=3,topk=4):hash:1", "given twice"),
        ("lexical(colour=red):hash:1", "unknown lexical option 'colour'"),
        ("lexical(topk):hash:1", "expected KEY=VALUE"),
        ("lexical(weight=log):hash:1", "expected one of center, z, sim, img, softmax"),
        ("lexical(words=/no/such/file):hash:1", "does not exist"),
        ("lexical(topk=3):", "names no model"),
        ("lexical:", "names no model"),
        ("hash(topk=3):1", "takes no options"),
        ("lexical:lexical:hash:1", "already a lexical"),
        ("lexical:nosuch:thing", "unknown model spec"),
    ],
)
def test_spec_errors_are_one_line(hash_backend, spec, message):
    with pytest.raises(UsageError, match=re.escape(message)) as e:
        registry.load_encoder(spec)
    assert "\n" not in str(e.value)


def test_bad_word_and_prompt_files(tmp_path):
    (tmp_path / "w.txt").write_text("red\ntwo words\n")
    (tmp_path / "p.txt").write_text("no placeholder\n")
    with pytest.raises(DataError, match="not one word"):
        LexicalAdapter(HashEncoder(), parse_lexical_options(f"words={tmp_path / 'w.txt'}"))
    with pytest.raises(DataError, match="exactly one"):
        LexicalAdapter(HashEncoder(), parse_lexical_options(f"prompts={tmp_path / 'p.txt'}"))


# ----------------------------------------------------------------------------- vocabulary
def _scenes_doc() -> Path | None:
    here = Path(__file__).resolve()
    for p in (Path("/work/shared"), here.parents[3] / "shared", here.parents[2] / "shared"):
        if (p / "scenes-vocabulary.md").is_file():
            return p / "scenes-vocabulary.md"
    return None


def test_default_vocabulary_has_the_scenes_words():
    vocab = LA.default_vocabulary()
    assert len(vocab) == len(set(vocab)) > 20000
    assert all(re.fullmatch(r"[a-z]+|[0-9]+", w) for w in vocab)
    assert not LA.STOPWORDS & set(vocab)
    assert {"cyan", "hexagon", "circle", "middle"} <= set(vocab)  # cyan/hexagon: not in MiniLM
    assert set(LA.scenes_words()) <= set(vocab)
    doc = _scenes_doc()
    if doc is None:
        pytest.skip("shared/scenes-vocabulary.md not found beside the repository")
    table = [ln for ln in doc.read_text().splitlines() if ln.startswith("| ") and "---" not in ln]
    words = {w for ln in table[1:] for w in LA.words_of(ln.split("|")[2])}
    assert words  # the table was read
    assert words - LA.STOPWORDS <= set(vocab) and words - LA.STOPWORDS <= set(LA.scenes_words())


# ----------------------------------------------------------------------------- caches
def test_word_embeddings_are_computed_once_and_cached_on_disk(files, tmp_path, monkeypatch):
    monkeypatch.setattr(LA, "_MEMORY", LA.OrderedDict())
    cache = tmp_path / "cache"
    opts = parse_lexical_options(_opts(files, cache=cache))
    inner = HashEncoder()
    enc = LexicalAdapter(inner, opts)
    first = enc.encode_images_lexical([colour_image(COLOURS[1])])
    n_words = len(WORDS) * len(PROMPTS)
    assert inner.texts_encoded == 1 + n_words  # the probe and every prompt once
    assert len(list(cache.glob("lexical-*.npz"))) == 1
    enc.encode_images_lexical([colour_image(COLOURS[2])])
    assert inner.texts_encoded == 1 + n_words

    # a new process (empty memory): only the probe is encoded, same vectors
    monkeypatch.setattr(LA, "_MEMORY", LA.OrderedDict())
    inner2 = HashEncoder()
    again = LexicalAdapter(inner2, opts).encode_images_lexical([colour_image(COLOURS[1])])
    assert inner2.texts_encoded == 1
    np.testing.assert_array_equal(again.indices, first.indices)
    np.testing.assert_allclose(again.values, first.values, rtol=1e-6)

    # another model under the same name (retrained): its probe differs, so all is recomputed
    monkeypatch.setattr(LA, "_MEMORY", LA.OrderedDict())
    other = HashEncoder(seed=99)
    other.name = inner.name
    LexicalAdapter(other, opts).encode_images_lexical([colour_image(COLOURS[1])])
    assert other.texts_encoded == 1 + n_words

    # without cache=, nothing is written anywhere; the process memory is used instead
    plain = parse_lexical_options(_opts(files))
    inner3 = HashEncoder()
    LexicalAdapter(inner3, plain).encode_images_lexical([colour_image(COLOURS[1])])
    inner4 = HashEncoder()
    LexicalAdapter(inner4, plain).encode_images_lexical([colour_image(COLOURS[1])])
    assert inner4.texts_encoded == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "prompts.txt",
        "ref",
        "words.txt",
    ]


def _counted_adapter(files):
    """(inner HashEncoder counting its image batches, a sim adapter over it with its word
    embeddings computed, pixels of the colour images)."""
    inner = HashEncoder()
    enc = LexicalAdapter(inner, parse_lexical_options(_opts(files, weight="sim")))
    pixels = np.stack([inner.preprocess(colour_image(c, seed=5)) for c in COLOURS])
    enc.word_embeddings()
    return inner, enc, pixels


def test_dense_and_lexical_of_one_batch_share_a_forward_pass(files):
    inner, enc, pixels = _counted_adapter(files)
    before = inner.image_batches
    dense = enc.encode_images(pixels, batch_size=8)
    sparse = enc.encode_images_lexical(pixels, batch_size=8)
    assert inner.image_batches == before + 1
    np.testing.assert_allclose(dense, inner.encode_images(pixels), atol=1e-6)
    assert len(sparse) == len(COLOURS)


def test_a_forward_pass_serves_only_the_other_side_once(files):
    inner, enc, pixels = _counted_adapter(files)
    before = inner.image_batches
    # repeated dense passes (a benchmark's) run the model every time
    first = enc.encode_images(pixels, batch_size=8)
    np.testing.assert_array_equal(enc.encode_images(pixels, batch_size=8), first)
    assert inner.image_batches == before + 2
    # the lexical pass takes the last dense pass, once; the next one runs the model
    sparse = enc.encode_images_lexical(pixels, batch_size=8)
    assert inner.image_batches == before + 2
    again = enc.encode_images_lexical(pixels, batch_size=8)
    assert inner.image_batches == before + 3
    np.testing.assert_array_equal(again.to_dense(), sparse.to_dense())
    # and the other way round: lexical first, then dense
    enc.encode_images_lexical(pixels[:2], batch_size=8)
    assert inner.image_batches == before + 4
    np.testing.assert_allclose(enc.encode_images(pixels[:2], batch_size=8), first[:2], atol=1e-6)
    assert inner.image_batches == before + 4
    enc.encode_images(pixels[:2], batch_size=8)
    assert inner.image_batches == before + 5


def test_decoding_workers_get_a_picklable_preprocessing(files):
    import pickle

    from lexlens.index.ingest import _preprocessor
    from lexlens.models.base import Encoder

    class ConfigPreprocessing(HashEncoder):
        preprocess = Encoder.preprocess  # the shared, config-driven preprocessing

    enc = LexicalAdapter(ConfigPreprocessing(), parse_lexical_options(_opts(files)))
    assert type(enc).preprocess is Encoder.preprocess  # workers rebuild it from the config
    pickle.dumps(_preprocessor(enc))
    own = LexicalAdapter(HashEncoder(), parse_lexical_options(_opts(files, weight="sim")))
    img = colour_image(COLOURS[3])
    np.testing.assert_array_equal(own.preprocess(img), HashEncoder().preprocess(img))
    want = own.encode_images_lexical([img])
    back = pickle.loads(pickle.dumps(_preprocessor(own))).__self__  # the adapter itself
    got = back.encode_images_lexical([img])
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-6)
