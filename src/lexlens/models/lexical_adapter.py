"""Training-free lexical vectors for any dense dual encoder: the ``lexical:`` backend.

Wrap any model spec to give it a sparse, explainable output over whole words, without
training (issue #6 item 4)::

    lexical:INNER                  lexical:openclip:ViT-B-32:laion2b_s34b_b79k
    lexical(OPTIONS):INNER         lexical(topk=16,words=scenes):native:scenes-mini

``INNER`` is any model spec (``openclip:``, ``hf:``, ``native:``, a saved model dir). The
dense output is the inner model's, unchanged. ``OPTIONS`` are ``key=value`` pairs separated
by commas (values may not contain ``,`` or ``)``); the canonical spec (the encoder's
``name``, stored in an index's manifest) lists only the options that differ from the
defaults, in the order of this table:

=========  ==========  ======================================================================
option     default     meaning
=========  ==========  ======================================================================
topk       32          words kept per image (its lexical vector has at most ``topk`` entries)
weight     center      image word weights: ``center`` = relu(s - mu_w), with mu_w the word's
                       mean similarity over reference images; ``z`` = relu((s - mu_w) / sd_w)
                       (also divided by the spread); ``sim`` = relu(s);
                       ``img`` = relu of s standardised over the vocabulary per image;
                       ``softmax`` = softmax(s / temp) over the vocabulary
ref        scenes      reference images of ``z``/``center``: ``scenes`` (``nref`` generated
                       scenes, deterministic) or a dataset path lexlens reads (first ``nref``)
nref       256         number of reference images
words      minilm      vocabulary: ``minilm`` (the MiniLM word-piece vocabulary's whole words,
                       alphabetic, 2+ letters, minus a few function words, plus the scenes
                       words it lacks), ``scenes`` (only the scenes words), or a file (one
                       word a line)
prompts    photo       word prompts, averaged: ``photo`` ("a photo of a {}.", "a {}.", "{}"),
                       ``plain`` ("{}"), or a file (one template a line, ``{}`` = the word)
expand     0           query expansion: each query word adds its ``expand`` nearest
                       vocabulary words (weight = the cosine of their word embeddings)
qtopk      16          ``encoder`` query mode: the text embedding's ``qtopk`` nearest words
                       are added to the query's own words (0: both modes give the words only)
temp       0.01        softmax temperature (``weight=softmax``)
cache      (none)      directory where the word embeddings and reference statistics are kept
                       (otherwise they are kept in memory for the process only)
=========  ==========  ======================================================================

How it works: every vocabulary word ``w`` gets a text embedding ``e_w`` (the inner model's,
averaged over the prompts, computed once). An image's similarities ``s_w = <img, e_w>`` are
turned into non-negative weights (``weight``) and the ``topk`` largest are kept (ties: lower
word id first). A text's lexical vector in the ``inference-free`` query mode is its own
words that are in the vocabulary (``[a-z]+|[0-9]+`` on the lower-cased text), weight 1,
optionally expanded: no network. The ``encoder`` mode (the default) also runs the text tower
and adds the ``qtopk`` words whose embeddings are closest to the text's (similarity minus
the word's mean over reference texts, scaled so that the closest weighs 1), which brings in
words the text implies but does not spell. The score of an image for a query is the sum over
shared words of query weight x image weight: every result is explained by those words.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import DataError, UsageError
from lexlens.models.base import (
    QUERY_MODES,
    Encoder,
    ImageInput,
    SparseBatch,
    l2_normalize,
    uses_default_preprocess,
)

__all__ = [
    "LexicalOptions",
    "LexicalAdapter",
    "parse_lexical_options",
    "format_lexical_spec",
    "load",
    "with_options",
    "words_of",
    "scenes_words",
    "default_vocabulary",
    "WEIGHTS",
    "PROMPT_SETS",
]

#: the image weight transforms (see module docstring)
WEIGHTS = ("center", "z", "sim", "img", "softmax")
#: named prompt sets
PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.", "a {}.", "{}"),
    "plain": ("{}",),
}
#: the word rule shared by the vocabulary and the query side
WORD_RE = re.compile(r"[a-z]+|[0-9]+")
#: the concept words of the scenes benchmark (shared/scenes-vocabulary.md) and the caption
#: words its generator uses for them
_SCENES_WORDS = (
    "red green blue yellow purple orange pink brown gray grey white black cyan "
    "circle square triangle star hexagon cross diamond pentagon "
    "circles squares triangles stars hexagons crosses diamonds pentagons "
    "small large big little tiny left right top bottom center centre middle "
    "above below one two three single pair shape object figure"
).split()
#: function words left out of the default vocabulary (they describe no image); the scenes
#: words (e.g. "above", "one") stay
STOPWORDS = frozenset(
    """about after again against all am an and any are as at be because been before being
    both but by can could did do does doing during each few for from further had has have
    having he her here hers herself him himself his how if in into is it its itself just me
    more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then
    there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours yourself yourselves""".split()
) - frozenset(_SCENES_WORDS)
#: the text whose embedding fingerprints the inner model in the caches
_PROBE = "a photo of a lexlens probe."
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class LexicalOptions:
    """The options of a ``lexical(...)`` spec (module docstring); field order = canonical order."""

    topk: int = 32
    weight: str = "center"
    ref: str = "scenes"
    nref: int = 256
    words: str = "minilm"
    prompts: str = "photo"
    expand: int = 0
    qtopk: int = 16
    temp: float = 0.01
    cache: str | None = None

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise UsageError(f"lexical option topk must be >= 1, got {self.topk}")
        if self.weight not in WEIGHTS:
            raise UsageError(
                f"lexical option weight={self.weight!r}: expected one of {', '.join(WEIGHTS)}"
            )
        if self.nref < 2:
            raise UsageError(f"lexical option nref must be >= 2, got {self.nref}")
        if self.expand < 0:
            raise UsageError(f"lexical option expand must be >= 0, got {self.expand}")
        if self.qtopk < 0:
            raise UsageError(f"lexical option qtopk must be >= 0, got {self.qtopk}")
        if not self.temp > 0:
            raise UsageError(f"lexical option temp must be > 0, got {self.temp}")
        for key in ("ref", "words", "prompts", "cache"):
            v = getattr(self, key)
            if v is not None and (not v or any(c in v for c in ",()")):
                raise UsageError(f"lexical option {key}={v!r}: empty or holds ',', '(' or ')'")


_INT_OPTS = {"topk", "nref", "expand", "qtopk"}
_FLOAT_OPTS = {"temp"}


def parse_lexical_options(text: str | None) -> LexicalOptions:
    """``"topk=16,weight=sim"`` (the part inside ``lexical(...)``) -> :class:`LexicalOptions`.

    ``None`` or ``""`` gives the defaults. Unknown keys, repeated keys, bad numbers: one-line
    :class:`~lexlens.errors.UsageError`.
    """
    if text is None or not text.strip():
        return LexicalOptions()
    known = [f.name for f in fields(LexicalOptions)]
    values: dict[str, Any] = {}
    for part in text.split(","):
        key, eq, val = part.partition("=")
        key, val = key.strip().lower(), val.strip()
        if not eq or not key or not val:
            raise UsageError(f"lexical option {part.strip()!r}: expected KEY=VALUE")
        if key not in known:
            raise UsageError(f"unknown lexical option {key!r}: expected one of {', '.join(known)}")
        if key in values:
            raise UsageError(f"lexical option {key!r} given twice")
        try:
            values[key] = (
                int(val) if key in _INT_OPTS else float(val) if key in _FLOAT_OPTS else val
            )
        except ValueError:
            kind = "an integer" if key in _INT_OPTS else "a number"
            raise UsageError(f"lexical option {key}={val!r} is not {kind}") from None
    if isinstance(values.get("weight"), str):
        values["weight"] = values["weight"].lower()
    return LexicalOptions(**values)


def format_lexical_spec(options: LexicalOptions, inner: str) -> str:
    """The canonical spec: ``lexical:INNER`` or ``lexical(k=v,...):INNER`` (non-defaults only).

    ``parse_lexical_options`` of the part in parentheses gives ``options`` back.
    """
    default = LexicalOptions()
    parts = []
    for f in fields(LexicalOptions):
        v = getattr(options, f.name)
        if v != getattr(default, f.name):
            parts.append(f"{f.name}={v!r}" if isinstance(v, float) else f"{f.name}={v}")
    return f"lexical({','.join(parts)}):{inner}" if parts else f"lexical:{inner}"


# ----------------------------------------------------------------------------- vocabulary
def words_of(text: str) -> list[str]:
    """The words of ``text`` under the adapter's word rule (lower-cased ``[a-z]+|[0-9]+``)."""
    return WORD_RE.findall(str(text).lower())


def scenes_words() -> tuple[str, ...]:
    """The scenes benchmark's concept words (and the generator's caption words for them)."""
    return tuple(dict.fromkeys(_SCENES_WORDS))


def default_vocabulary() -> tuple[str, ...]:
    """MiniLM's whole words (alphabetic, 2+ letters, not :data:`STOPWORDS`), in MiniLM id
    order, then the scenes words MiniLM lacks."""
    from lexlens.models.minilm import vocab_list

    words = [
        w
        for w in vocab_list()
        if len(w) >= 2 and w.isascii() and w.isalpha() and w.islower() and w not in STOPWORDS
    ]
    return tuple(dict.fromkeys([*words, *scenes_words()]))


def _read_lines(path: str, what: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"lexical {what} file {path} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read lexical {what} file {path}: {e}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _vocabulary(words: str) -> tuple[str, ...]:
    if words == "minilm":
        return default_vocabulary()
    if words == "scenes":
        return scenes_words()
    out: list[str] = []
    for line in _read_lines(words, "word list"):
        ws = words_of(line)
        if ws != [line.lower()]:
            raise DataError(f"{words}: {line!r} is not one word ([a-z]+ or [0-9]+)")
        out.append(ws[0])
    if not out:
        raise DataError(f"lexical word list {words} holds no words")
    return tuple(dict.fromkeys(out))


def _prompts(prompts: str) -> tuple[str, ...]:
    if prompts in PROMPT_SETS:
        return PROMPT_SETS[prompts]
    lines = _read_lines(prompts, "prompts")
    bad = [t for t in lines if t.count("{}") != 1]
    if bad or not lines:
        raise DataError(f"{prompts}: every prompt needs exactly one {{}} (got {bad[:1] or 'none'})")
    return tuple(lines)


# ----------------------------------------------------------------------------- tables
@dataclass
class _Tables:
    """What is computed once per (inner model, vocabulary, prompts): word embeddings; and per
    reference set: each word's similarity mean and standard deviation over its images."""

    probe: np.ndarray
    emb: np.ndarray  # float32 [V, d], rows L2-normalised
    ref: dict[str, tuple[np.ndarray, np.ndarray]]


_MEMORY: OrderedDict[str, _Tables] = OrderedDict()
_MEMORY_MAX = 8
_MEMORY_LOCK = threading.Lock()


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


# ----------------------------------------------------------------------------- the encoder
class LexicalAdapter(Encoder):
    """``inner``'s dense embeddings plus training-free lexical vectors (module docstring)."""

    def __new__(
        cls, inner: Encoder | None = None, options: LexicalOptions | None = None
    ) -> LexicalAdapter:
        # the inner model's own preprocessing when it has one; otherwise Encoder's, which the
        # index's decoding workers run from preprocess_config without pickling the model
        if cls is LexicalAdapter and inner is not None and not uses_default_preprocess(inner):
            cls = _OwnPreprocessAdapter
        return super().__new__(cls)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in ("_lock", "_tables", "_recent", "_neighbours"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._tables = None
        self._recent = OrderedDict()
        self._neighbours = {}

    def __init__(self, inner: Encoder, options: LexicalOptions | None = None) -> None:
        self.inner = inner
        self.options = options or LexicalOptions()
        self.name = format_lexical_spec(self.options, inner.name)
        self.dim = inner.dim
        self.preprocess_config = inner.preprocess_config
        self._words = _vocabulary(self.options.words)
        self._word_id = {w: i for i, w in enumerate(self._words)}
        self._prompt_list = _prompts(self.options.prompts)
        self._lock = threading.RLock()
        self._tables: _Tables | None = None
        # forward passes of the last preprocessed batches, by (side, pixel digest), for the
        # other side's pass over the same batch (see _handoff)
        self._recent: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
        self._neighbours: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- dense: the inner model's ------------------------------------------------
    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        return self.inner._forward_images(pixels)

    def _inner_batches(self) -> bool:
        # the inner model encodes through Encoder's batching (so through _forward_images)
        return type(self.inner).encode_images is Encoder.encode_images

    def encode_images(
        self, images: Sequence[ImageInput], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        return self._encode_images_for("dense", images, batch_size, progress)

    def _encode_images_for(
        self, side: str | None, images: Sequence[ImageInput], batch_size: int, progress: bool
    ) -> np.ndarray:
        """:meth:`Encoder.encode_images` for ``side`` (``"dense"``: :meth:`encode_images`,
        ``"lexical"``: :meth:`encode_images_lexical`, ``None``: neither, nothing is handed
        over), each batch's forward pass going through :meth:`_handoff`."""
        if not self._inner_batches():
            return self.inner.encode_images(images, batch_size=batch_size, progress=progress)
        return self._encode_image_batches(
            images, batch_size, progress, lambda batch: self._handoff(side, batch)
        )

    def _handoff(self, side: str | None, pixels: np.ndarray) -> np.ndarray:
        """The inner model's forward pass of a preprocessed batch, for ``side``.

        Index building asks for the dense and then the lexical vectors of the same batch: the
        second asks for a forward pass the first has just run. So the output of a ``side``'s
        pass is kept (the last 16 batches) for the *other* side only, and is dropped when
        that side takes it: a forward pass serves at most one pass of the other side, and
        repeated passes of one side (``bench encode``'s warm-up, forward and end-to-end
        stages; a second index of the same images) always run the model."""
        if side is None:
            return np.asarray(self.inner._forward_images(pixels), np.float32)
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        digest = (
            hashlib.blake2b(pixels.tobytes(), digest_size=16).digest() + str(pixels.shape).encode()
        )
        other = "lexical" if side == "dense" else "dense"
        with self._lock:
            hit = self._recent.pop((other, digest), None)
        if hit is not None:
            return hit
        out = np.asarray(self.inner._forward_images(pixels), np.float32)
        with self._lock:
            self._recent[(side, digest)] = out.copy()
            self._recent.move_to_end((side, digest))
            while len(self._recent) > 16:
                self._recent.popitem(last=False)
        return out

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        return self.inner._forward_texts(texts)

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        return self.inner.encode_texts(texts, batch_size=batch_size, progress=progress)

    # -- lexical --------------------------------------------------------------------
    @property
    def has_lexical(self) -> bool:
        return True

    @property
    def vocab(self) -> Sequence[str]:
        return self._words

    @property
    def lexical_query_modes(self) -> tuple[str, ...]:
        """Both: ``encoder`` (words + the text embedding's nearest words) and
        ``inference-free`` (the words alone, looked up: no network)."""
        return QUERY_MODES

    @property
    def prompts(self) -> tuple[str, ...]:
        """The prompt templates each word's embedding averages."""
        return self._prompt_list

    def word_embeddings(self, progress: bool = True) -> np.ndarray:
        """``float32 [V, d]``: each word's text embedding, averaged over the prompts."""
        return self._get_tables(progress).emb

    def reference_stats(self, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Each word's similarity mean and standard deviation over the reference images."""
        return self._stats("img", progress)

    def text_reference_stats(self, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Each word's similarity mean and standard deviation over the reference texts (the
        reference images' captions; without captions, the word prompts themselves)."""
        return self._stats("txt", progress)

    def _stats(self, side: str, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        t = self._get_tables(progress)
        key = f"{side}{self._ref_key()}"
        if key not in t.ref:
            with self._lock:
                if key not in t.ref:
                    images, texts = self._reference_set()
                    if side == "img":
                        dense = self._encode_images_for(None, images, 64, progress)
                    elif texts:
                        dense = self.inner.encode_texts(texts, progress=progress)
                    else:
                        dense = t.emb
                    t.ref[key] = _column_stats(dense @ t.emb.T)
                    self._save_disk(t)
        return t.ref[key]

    def similarities(self, dense: np.ndarray) -> np.ndarray:
        """``float32 [n, V]``: cosine of each (normalised) embedding with each word."""
        return np.asarray(dense, np.float32) @ self.word_embeddings().T

    def weigh(self, sims: np.ndarray) -> np.ndarray:
        """Non-negative word weights from similarities (``weight`` option), before the top-k."""
        s = np.asarray(sims, np.float32)
        w = self.options.weight
        if w == "sim":
            out = s
        elif w == "z":
            mu, sd = self.reference_stats()
            out = (s - mu) / sd
        elif w == "center":
            mu, _ = self.reference_stats()
            out = s - mu
        elif w == "img":
            out = (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-6)
        else:  # softmax
            z = s / self.options.temp
            z = np.exp(z - z.max(axis=1, keepdims=True))
            out = z / z.sum(axis=1, keepdims=True)
        return np.maximum(out, 0.0).astype(np.float32)

    def lexical_from_dense(self, dense: np.ndarray) -> SparseBatch:
        """Lexical vectors of images from their dense embeddings: the ``topk`` heaviest words."""
        return _top_words(self.weigh(self.similarities(dense)), self.options.topk, self._words)

    def encode_images_lexical(
        self, images: Sequence[ImageInput], batch_size: int = 64, progress: bool = False
    ) -> SparseBatch:
        self.word_embeddings(progress=True)
        dense = self._encode_images_for("lexical", images, batch_size, progress)
        return self.lexical_from_dense(dense)

    def encode_texts_lexical(
        self,
        texts: Sequence[str],
        batch_size: int = 256,
        progress: bool = False,
        mode: str = "encoder",
    ) -> SparseBatch:
        """The texts' vocabulary words (weight 1, plus ``expand`` neighbours each); in the
        ``encoder`` mode plus the ``qtopk`` words closest to the text's embedding (module
        docstring). ``inference-free`` runs no network."""
        self.check_query_mode(mode)
        words = self._query_words(texts)
        if mode != "encoder" or not self.options.qtopk or not len(words):
            return words
        dense = self.inner.encode_texts(texts, batch_size=batch_size, progress=progress)
        mu, _ = self.text_reference_stats()
        enc_words = _top_words(
            np.maximum(self.similarities(dense) - mu, 0.0), self.options.qtopk, self._words
        )
        return _add_rows_scaled(words, enc_words)

    def _query_words(self, texts: Sequence[str]) -> SparseBatch:
        """The inference-free part: vocabulary words of each text, optionally expanded."""
        indptr = [0]
        idx_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        for t in texts:
            ids = sorted({self._word_id[w] for w in words_of(t) if w in self._word_id})
            row = dict.fromkeys(ids, 1.0)
            if self.options.expand and ids:
                for i in ids:
                    nb, cos = self._neighbours_of(i)
                    for j, c in zip(nb.tolist(), cos.tolist(), strict=True):
                        if c > row.get(j, 0.0):
                            row[j] = c
            keys = np.asarray(sorted(row), np.int32)
            idx_parts.append(keys)
            val_parts.append(np.asarray([row[int(k)] for k in keys], np.float32))
            indptr.append(indptr[-1] + len(keys))
        return SparseBatch(
            indptr=np.asarray(indptr, np.int64),
            indices=np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32),
            values=np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32),
            vocab_size=len(self._words),
            vocab=self._words,
        )

    def _neighbours_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``expand`` nearest other words of word ``i`` with positive cosine."""
        if i not in self._neighbours:
            emb = self.word_embeddings()
            cos = emb @ emb[i]
            cos[i] = -np.inf
            order = np.lexsort((np.arange(len(cos)), -cos))[: self.options.expand]
            order = order[cos[order] > 0]
            self._neighbours[i] = (order.astype(np.int64), cos[order].astype(np.float32))
        return self._neighbours[i]

    # -- tables: computed once, kept in memory (and on disk with cache=DIR) ----------
    def _table_key(self) -> str:
        return _digest(_CACHE_VERSION, self.inner.name, self._words, self._prompt_list)

    def _ref_key(self) -> str:
        ref = self.options.ref
        if ref != "scenes":
            p = Path(ref).expanduser()
            ref = str(p.resolve())
        return _digest(ref, self.options.nref)

    def _get_tables(self, progress: bool) -> _Tables:
        if self._tables is not None:
            return self._tables
        with self._lock:
            if self._tables is not None:
                return self._tables
            key = self._table_key()
            probe = l2_normalize(self.inner.encode_texts([_PROBE]))[0]
            with _MEMORY_LOCK:
                t = _MEMORY.get(key)
            if t is None or not _same_model(t.probe, probe):
                t = self._load_disk(key, probe)
            if t is None:
                t = _Tables(probe, self._compute_embeddings(progress), {})
                self._tables = t
                self._save_disk(t)
            with _MEMORY_LOCK:
                _MEMORY[key] = t
                _MEMORY.move_to_end(key)
                while len(_MEMORY) > _MEMORY_MAX:
                    _MEMORY.popitem(last=False)
            self._tables = t
            return t

    def _compute_embeddings(self, progress: bool) -> np.ndarray:
        from lexlens.progress import progress_bar

        acc = np.zeros((len(self._words), self.dim), np.float32)
        step = 512
        with progress_bar(
            total=len(self._words), desc="lexical: word embeddings", unit="word", enabled=progress
        ) as bar:
            for a in range(0, len(self._words), step):
                chunk = self._words[a : a + step]
                for template in self._prompt_list:
                    acc[a : a + len(chunk)] += self.inner.encode_texts(
                        [template.format(w) for w in chunk]
                    )
                bar.update(len(chunk))
        return l2_normalize(acc)

    def _reference_set(self) -> tuple[list[Any], list[str]]:
        """The reference images and their captions (``ref``, first ``nref`` images)."""
        n = self.options.nref
        if self.options.ref == "scenes":
            import io

            from PIL import Image

            from lexlens.data.scenes import make_item

            items = [make_item(0, i, 64, "lexical-reference") for i in range(n)]
            images = [Image.open(io.BytesIO(it.png)).convert("RGB") for it in items]
            return images, [c for it in items for c in it.captions]
        from lexlens.data.readers import load_dataset

        ds = load_dataset(self.options.ref)
        paths = list(ds.image_paths[:n])
        if len(paths) < 2:
            raise DataError(f"lexical reference set {self.options.ref} has fewer than 2 images")
        return paths, [str(c) for caps in list(ds.captions)[:n] for c in caps]

    def _cache_file(self, key: str) -> Path | None:
        if self.options.cache is None:
            return None
        return Path(self.options.cache).expanduser() / f"lexical-{key}.npz"

    def _load_disk(self, key: str, probe: np.ndarray) -> _Tables | None:
        path = self._cache_file(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                t = _Tables(z["probe"], z["emb"], {})
                for name in z.files:
                    if name.startswith("mu_"):
                        rk = name[3:]
                        t.ref[rk] = (z[f"mu_{rk}"], z[f"sd_{rk}"])
        except (OSError, ValueError, KeyError):
            return None  # unreadable cache: recompute (and overwrite)
        if t.emb.shape != (len(self._words), self.dim) or not _same_model(t.probe, probe):
            return None
        return t

    def _save_disk(self, t: _Tables) -> None:
        path = self._cache_file(self._table_key())
        if path is None:
            return
        arrays = {"probe": t.probe, "emb": t.emb}
        for rk, (mu, sd) in t.ref.items():
            arrays[f"mu_{rk}"], arrays[f"sd_{rk}"] = mu, sd
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{threading.get_ident()}.npz")
            np.savez(tmp, **arrays)
            tmp.replace(path)
        except OSError as e:
            raise UsageError(f"cannot write the lexical cache {path}: {e.strerror}") from None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(inner=self.inner.name, lexical_options=_public(self.options))
        return d


def _public(o: LexicalOptions) -> dict[str, Any]:
    return {f.name: getattr(o, f.name) for f in fields(o)}


class _OwnPreprocessAdapter(LexicalAdapter):
    """A :class:`LexicalAdapter` over a model with its own ``preprocess``."""

    def preprocess(self, image: Any) -> np.ndarray:
        return self.inner.preprocess(image)


def _column_stats(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (word) mean and standard deviation (+1e-4) of a similarity matrix."""
    return sims.mean(axis=0).astype(np.float32), (sims.std(axis=0) + 1e-4).astype(np.float32)


def _same_model(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and float(np.dot(a, b)) >= 0.999


def _add_rows_scaled(a: SparseBatch, b: SparseBatch) -> SparseBatch:
    """``a + b / max(b row)`` row by row (same vocabulary); ids ascending."""
    indptr = [0]
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for r in range(len(a)):
        row: dict[int, float] = {}
        ia, va = a.row(r)
        ib, vb = b.row(r)
        top = float(vb.max()) if len(vb) else 0.0
        for i, v in zip(ia.tolist(), va.tolist(), strict=True):
            row[i] = row.get(i, 0.0) + v
        for i, v in zip(ib.tolist(), vb.tolist(), strict=True):
            row[i] = row.get(i, 0.0) + v / top
        keys = sorted(row)
        idx_parts.append(np.asarray(keys, np.int32))
        val_parts.append(np.asarray([row[k] for k in keys], np.float32))
        indptr.append(indptr[-1] + len(keys))
    return SparseBatch(
        indptr=np.asarray(indptr, np.int64),
        indices=np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32),
        values=np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32),
        vocab_size=a.vocab_size,
        vocab=a.vocab,
    )


def _top_words(weights: np.ndarray, k: int, vocab: Sequence[str]) -> SparseBatch:
    """CSR rows of the ``k`` largest positive weights per row (ties: lower id), ids ascending."""
    w = np.asarray(weights, np.float32)
    n, v = w.shape
    kk = min(k, v)
    indptr = np.zeros(n + 1, np.int64)
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for r in range(n):
        row = w[r]
        if kk < v:
            # every entry >= the k-th largest value, then an exact (-w, id) cut
            kth = np.partition(row, v - kk)[v - kk]
            cand = np.flatnonzero(row >= kth)
        else:
            cand = np.arange(v)
        cand = cand[row[cand] > 0]
        keep = np.sort(cand[np.lexsort((cand, -row[cand]))[:kk]])
        idx_parts.append(keep.astype(np.int32))
        val_parts.append(row[keep])
        indptr[r + 1] = indptr[r] + len(keep)
    return SparseBatch(
        indptr=indptr,
        indices=np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32),
        values=np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32),
        vocab_size=v,
        vocab=tuple(vocab),
    )


# ----------------------------------------------------------------------------- backend
def load(target: str, options: str | None = None) -> LexicalAdapter:
    """The ``lexical:`` backend: ``target`` is the inner model spec, ``options`` the text
    inside ``lexical(...)`` (``None`` without parentheses)."""
    from lexlens.models.registry import load_encoder

    opts = parse_lexical_options(options)
    inner = load_encoder(target)
    if isinstance(inner, LexicalAdapter):
        raise UsageError(f"{target!r} is already a lexical: spec; wrap the inner model once")
    return LexicalAdapter(inner, opts)


def with_options(adapter: LexicalAdapter, **changes: Any) -> LexicalAdapter:
    """The same inner model with other options (shares the cached word embeddings)."""
    return LexicalAdapter(adapter.inner, replace(adapter.options, **changes))
