"""Which query word produced each word piece of a lexical query (readable, faithful explanations).

A text lexicon head (:mod:`lexlens.models.lexicon`) max-pools per-token weights: the weight of
word piece ``p`` in a query is ``w_p = max_t w[t, p]`` over the query's real tokens ``t``.
The token that wins that max (the argmax over real tokens, the lowest position on ties) is
where the piece comes from, and its *query word* is the whole word holding that token (a
WordPiece word with its ``##`` continuations, a BPE word up to its end-of-word mark, a
SentencePiece word from its space mark). Special tokens (``[CLS]``, ``[SEP]``, start / end of
text), which see the whole query, and a text tower that gives only its pooled state stand for
:data:`WHOLE_QUERY`. In the inference-free query mode every piece is one of the query's own
tokens, so it goes to the word of its first occurrence.

A hit's lexical score is ``sum_p q_p * d_p`` over the pieces query and item share, so adding
the contributions of each query word's pieces decomposes the score exactly.

:class:`LexicalSources` gives encoders with such heads the optional capability
``lexical_sources(texts, query_mode) -> [{vocabulary id: query word}]``, and
``explained_text_queries``: the query vectors and those sources from one pass.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from lexlens.errors import UsageError
from lexlens.models.base import SparseBatch
from lexlens.models.lexicon import LexicalEncoding

__all__ = [
    "WHOLE_QUERY",
    "word_scheme",
    "token_words",
    "max_pool_sources",
    "free_token_weights",
    "LexicalSources",
]

#: the query word of pieces won by a special token or by a pooled-only text tower
WHOLE_QUERY = "(whole query)"

_SPACE_MARKS = ("\u2581", "\u0120")  # SentencePiece and GPT-2 byte-level word starts


def word_scheme(pieces: Sequence[str]) -> str:
    """How a vocabulary's raw pieces mark words: ``"end-mark"`` (BPE ``</w>`` ends a word),
    ``"space-mark"`` (``\u2581`` / ``\u0120`` starts one) or ``"wordpiece"`` (``##`` continues one)."""
    if any(p.endswith("</w>") for p in pieces):
        return "end-mark"
    if any(p.startswith(_SPACE_MARKS) for p in pieces):
        return "space-mark"
    return "wordpiece"


def _piece_text(raw: str, scheme: str) -> str:
    if scheme == "end-mark":
        return raw.removesuffix("</w>")
    if scheme == "space-mark":
        return raw.lstrip("".join(_SPACE_MARKS))
    return raw.removeprefix("##")


def token_words(
    ids: Sequence[int],
    valid: Sequence[bool],
    pieces: Sequence[str],
    special: set[int] | frozenset[int],
    scheme: str | None = None,
) -> list[str | None]:
    """The query word of each token position of one tokenised text.

    ``pieces``: the raw word pieces by id (with their word marks); ``special``: ids that are
    no word (:data:`WHOLE_QUERY`); padding (``valid`` false) gives ``None``.
    """
    scheme = scheme or word_scheme(pieces)
    out: list[str | None] = [None] * len(ids)
    word: list[int] = []  # positions of the word being read

    def close() -> None:
        if word:
            raws = [pieces[int(ids[p])] if 0 <= int(ids[p]) < len(pieces) else "" for p in word]
            text = "".join(_piece_text(r, scheme) for r in raws) or "".join(raws)
            for p in word:
                out[p] = text
            word.clear()

    for t, (i, ok) in enumerate(zip(ids, valid, strict=True)):
        i = int(i)
        if not ok or i in special:
            close()
            out[t] = WHOLE_QUERY if ok else None
            continue
        raw = pieces[i] if 0 <= i < len(pieces) else ""
        if (scheme == "wordpiece" and not raw.startswith("##")) or (
            scheme == "space-mark" and raw.startswith(_SPACE_MARKS)
        ):
            close()
        word.append(t)
        if scheme == "end-mark" and raw.endswith("</w>"):
            close()
    close()
    return out


def max_pool_sources(
    token_weights: np.ndarray, valid: np.ndarray, cols: Sequence[int]
) -> np.ndarray:
    """For each column in ``cols`` of ``token_weights [L, V]``, the real token (``valid [L]``)
    with the largest weight: the one a max-pool takes (the lowest position on ties)."""
    w = np.asarray(token_weights)[:, np.asarray(cols, np.int64)]
    w = np.where(np.asarray(valid, bool)[:, None], w, -np.inf)
    return np.argmax(w, axis=0) if w.shape[1] else np.zeros(0, np.int64)


def free_token_weights(pos: Any, valid: Any, weights: Any) -> Any:
    """Per-token inference-free weights ``[b, L, V_active]``: token ``t`` carries the learned
    weight of its own piece (``pos [b, L]``: its active position, -1 when inactive), so their
    max-pool is the inference-free query vector."""
    import torch

    n = int(weights.shape[0])
    keep = valid & (pos >= 0)
    onehot = torch.nn.functional.one_hot(pos.clamp(min=0), n).to(weights.dtype)
    return onehot * keep[..., None].to(weights.dtype) * weights


class LexicalSources(LexicalEncoding):
    """``lexical_sources`` for encoders whose text lexicon head max-pools per-token weights.

    An encoder provides :meth:`_token_lexical`, :meth:`_text_pieces` and ``_text_top_k``
    (besides :class:`~lexlens.models.lexicon.LexicalEncoding`'s ``net``, ``_active`` and
    ``_sparse``).
    """

    _text_top_k: int
    name: str
    dim: int
    has_lexical: bool
    check_query_mode: Any  # the Encoder's

    def _token_lexical(self, tok: dict[str, Any], mode: str) -> tuple[Any, Any, Any]:
        """``(pooled [b, V_active], per-token [b, L', V_active], real tokens [b, L'])`` torch
        tensors in query ``mode``; ``pooled`` exactly as ``encode_texts_lexical`` computes it
        (``L' != L``: the states do not line up with the tokens)."""
        raise NotImplementedError

    def _text_pieces(self) -> tuple[Sequence[str], set[int]]:
        """The raw word pieces of the text tokenizer by id, and its special ids."""
        raise NotImplementedError

    @functools.cached_property
    def _pieces_scheme(self) -> tuple[Sequence[str], set[int], str]:
        """:meth:`_text_pieces` and their :func:`word_scheme`, worked out once per encoder (the
        scheme reads the whole vocabulary)."""
        pieces, special = self._text_pieces()
        return pieces, special, word_scheme(pieces)

    def _token_outputs(self, tok: dict[str, Any], mode: str) -> tuple[Any, Any, Any, Any]:
        """``(dense [b, d] unnormalised, pooled, per-token, real)``: :meth:`_token_lexical`'s
        tensors and the text embedding, from one pass of the text tower."""
        raise NotImplementedError

    def _check_sources(self, query_mode: str) -> None:
        if not self.has_lexical:
            raise UsageError(f"{self.name} has no lexical output")
        self.check_query_mode(query_mode)

    def _batch_sources(
        self, tok: dict[str, Any], sp: SparseBatch, per_token: Any, real: Any
    ) -> list[dict[int, str]]:
        """``{vocabulary id: query word}`` for each row of the batch's query vectors ``sp``."""
        pieces, special, scheme = self._pieces_scheme
        col = self._active_column
        ids = tok["input_ids"].numpy()
        per_token, real = per_token.float().numpy(), real.numpy().astype(bool)
        out: list[dict[int, str]] = []
        for r in range(len(sp)):
            vocab_ids = sp.row(r)[0].tolist()
            if per_token.shape[1] != ids.shape[1]:
                out.append(dict.fromkeys(vocab_ids, WHOLE_QUERY))
                continue
            words = token_words(ids[r], real[r], pieces, special, scheme)
            won = max_pool_sources(per_token[r], real[r], [col[v] for v in vocab_ids])
            out.append(
                {v: words[p] or WHOLE_QUERY for v, p in zip(vocab_ids, won.tolist(), strict=True)}
            )
        return out

    @functools.cached_property
    def _active_column(self) -> dict[int, int]:
        """Vocabulary id -> column of the lexicon heads' active pieces."""
        return {int(v): j for j, v in enumerate(np.asarray(self._active).tolist())}

    def lexical_sources(
        self, texts: Sequence[str], query_mode: str = "encoder", batch_size: int = 256
    ) -> list[dict[int, str]]:
        """For each text, ``{vocabulary id: query word}`` over every non-zero piece of its
        lexical query vector in ``query_mode`` (same top-k and quantisation; module docstring)."""
        self._check_sources(query_mode)
        texts = [str(t) for t in texts]
        out: list[dict[int, str]] = []
        for a in range(0, len(texts), batch_size):
            tok = self.net.tokenize(texts[a : a + batch_size])
            with self._inference():
                pooled, per_token, real = self._token_lexical(tok, query_mode)
            sp = self._sparse(pooled.float().numpy(), self._text_top_k)
            out += self._batch_sources(tok, sp, per_token, real)
        return out

    def explained_text_queries(
        self, texts: Sequence[str], query_mode: str = "encoder", batch_size: int = 256
    ) -> tuple[np.ndarray, SparseBatch, list[dict[int, str]]]:
        """What ``encode_text_queries`` and :meth:`lexical_sources` give (the dense embeddings,
        the lexical query vectors, and which query word each piece came from), from one pass
        of the text tower per batch: an explained search encodes its query once."""
        self._check_sources(query_mode)
        out: list[dict[int, str]] = []
        dense, sparse = self._dense_and_lexical(
            texts,
            self.dim,
            batch_size,
            self._text_top_k,
            lambda tok: self._token_outputs(tok, query_mode),
            lambda tok, sp, per_token, real: out.extend(
                self._batch_sources(tok, sp, per_token, real)
            ),
        )
        return dense, sparse, out
