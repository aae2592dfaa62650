"""LexLIP lexicon heads: token / patch states -> sparse non-negative weights over word pieces.

For each token (text) or patch (image) state ``h``: vocabulary logits
``z = MLP(h) @ E_active^T + b`` where ``E_active`` are the rows of the frozen MiniLM
word-embedding table for the model's *active* word pieces (the output layer is tied to that
table); then ``w = log(1 + relu(z))`` and a max over the tokens/patches gives one weight
per active word piece. Word pieces outside the active set always weigh 0, which keeps the
head cheap on a CPU (the full 30522-way output is never computed).

Also here: the inference-free query table (a learned weight per word piece, no network at
query time), the FLOPS regulariser, 8-bit quantisation helpers and the conversion of
``[b, V_active]`` weights into a :class:`~lexlens.models.base.SparseBatch` over the full
word-piece vocabulary (top-k per row).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from lexlens.models.base import SparseBatch, l2_normalize

__all__ = [
    "active_piece_ids",
    "quantize",
    "dequantize",
    "snap",
    "to_sparse_batch",
    "build_lexicon_head",
    "build_inference_free_table",
    "flops_regularizer",
    "piece_presence",
    "LexicalEncoding",
]


def active_piece_ids(
    words: Iterable[str], texts: Iterable[str] = (), max_tokens: int = 64
) -> list[int]:
    """Sorted word-piece ids of ``words`` and of every text in ``texts`` (specials excluded)."""
    from lexlens.models.minilm import encode_batch

    items = [str(w) for w in words] + [str(t) for t in texts]
    ids: set[int] = set()
    for a in range(0, len(items), 4096):
        tok, mask = encode_batch(items[a : a + 4096], max_tokens)
        ids.update(int(i) for i in np.unique(tok[mask > 0]))
    return sorted(i for i in ids if i not in (0, 100, 101, 102, 103))


def quantize(values: np.ndarray, max_value: float, bits: int = 8) -> np.ndarray:
    """Non-negative weights -> unsigned integer levels ``round(v / max_value * (2^bits - 1))`` (clipped)."""
    levels = (1 << bits) - 1
    q = np.rint(np.clip(np.asarray(values, np.float64) / max_value, 0.0, 1.0) * levels)
    return q.astype(np.uint8 if bits <= 8 else np.uint16)


def dequantize(q: np.ndarray, max_value: float, bits: int = 8) -> np.ndarray:
    """Inverse of :func:`quantize` (``float32``)."""
    levels = (1 << bits) - 1
    return (np.asarray(q, np.float32) * np.float32(max_value / levels)).astype(np.float32)


def snap(values: np.ndarray, max_value: float, bits: int) -> np.ndarray:
    """Round weights to the values an index stores with ``bits`` bits (``bits == 0``: unchanged)."""
    if bits <= 0:
        return np.asarray(values, np.float32)
    return dequantize(quantize(values, max_value, bits), max_value, bits)


def to_sparse_batch(
    weights: np.ndarray,
    active_ids: np.ndarray,
    vocab_size: int,
    top_k: int | None,
    max_value: float = 4.0,
    bits: int = 0,
    vocab: Sequence[str] | None = None,
) -> SparseBatch:
    """``weights[b, V_active]`` -> CSR rows over the full vocabulary (ids ``active_ids``).

    Keeps the ``top_k`` largest positive entries per row (ties by lower vocabulary id),
    snaps them to ``bits``-bit levels and drops those that become 0.
    """
    w = np.asarray(weights, np.float32)
    active_ids = np.asarray(active_ids, np.int64)
    order_ids = np.argsort(active_ids, kind="stable")  # emit columns in vocabulary-id order
    w = w[:, order_ids]
    ids_sorted = active_ids[order_ids]
    indptr = [0]
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for r in range(w.shape[0]):
        row = w[r]
        nz = np.flatnonzero(row > 0)
        if top_k is not None and len(nz) > top_k:
            keep = np.lexsort((nz, -row[nz]))[:top_k]
            nz = np.sort(nz[keep])
        vals = snap(row[nz], max_value, bits)
        good = vals > 0
        idx_parts.append(ids_sorted[nz[good]].astype(np.int32))
        val_parts.append(vals[good].astype(np.float32))
        indptr.append(indptr[-1] + int(good.sum()))
    return SparseBatch(
        indptr=np.asarray(indptr, np.int64),
        indices=np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32),
        values=np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32),
        vocab_size=vocab_size,
        vocab=vocab,
    )


def build_lexicon_head(in_dim: int, hidden: int, n_active: int) -> Any:
    """A :class:`torch.nn.Module` mapping states ``[b, L, in_dim]`` (+ mask ``[b, L]``) to ``[b, V_active]``.

    The tied output table (``E_active [V_active, hidden]``) is passed at call time, so it is
    never part of the module's saved weights.
    """
    import torch
    from torch import nn

    class LexiconHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(in_dim, hidden)
            self.norm = nn.LayerNorm(hidden)
            self.bias = nn.Parameter(torch.zeros(n_active))
            self.scale = nn.Parameter(torch.tensor(1.0))

        def token_logits(self, states: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
            """``[b, L, in_dim]`` -> vocabulary logits ``z [b, L, V_active]`` (tied output layer)."""
            h = self.norm(nn.functional.gelu(self.proj(states)))  # [b, L, hidden]
            return self.scale * (h @ table.t()) + self.bias  # [b, L, V_active]

        def token_weights(self, states: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
            """``[b, L, in_dim]`` -> per-token weights ``[b, L, V_active]`` = log(1 + relu(z))."""
            return torch.log1p(torch.relu(self.token_logits(states, table)))

        def forward_with_logits(
            self, states: torch.Tensor, mask: torch.Tensor | None, table: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """``(weights [b, V_active], max-pooled logits [b, V_active])`` in one pass."""
            z = self.token_logits(states, table)
            if mask is not None:
                z = z.masked_fill(mask[:, :, None] == 0, float("-inf"))
            zmax = z.max(dim=1).values
            return torch.log1p(torch.relu(zmax)), zmax

        def forward(
            self, states: torch.Tensor, mask: torch.Tensor | None, table: torch.Tensor
        ) -> torch.Tensor:
            """Max-pool the per-token weights over valid tokens -> ``[b, V_active]``."""
            w = self.token_weights(states, table)
            if mask is not None:
                w = w * mask[:, :, None].to(w.dtype)  # weights are >= 0, so 0 never wins wrongly
            return w.max(dim=1).values

    return LexiconHead()


def build_inference_free_table(n_active: int) -> Any:
    """A learned non-negative weight per active word piece (query side, no network).

    ``forward(onehot[b, L, V_active] as token-presence [b, V_active]) -> [b, V_active]``:
    the weight of each word piece present in the query, 0 elsewhere.
    """
    import torch
    from torch import nn

    class InferenceFreeTable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logit = nn.Parameter(torch.full((n_active,), 1.0))

        def weights(self) -> torch.Tensor:
            return torch.log1p(torch.relu(self.logit))  # [V_active]

        def forward(self, present: torch.Tensor) -> torch.Tensor:
            return present.to(self.logit.dtype) * self.weights()[None, :]

    return InferenceFreeTable()


def flops_regularizer(w: Any) -> Any:
    """FLOPS regulariser (Paria et al. 2020): ``sum_j (mean_i w[i, j])^2`` for ``w [b, V]``."""
    return (w.abs().mean(dim=0) ** 2).sum()


def piece_presence(pos: Any, real: Any, n_active: int) -> Any:
    """Which active word pieces occur in each text: ``[b, V_active]`` of 0/1.

    ``pos [b, L]``: each token's position in the active set (-1 when inactive); ``real
    [b, L]`` (bool): the real (not padding) tokens.
    """
    import torch

    pos = torch.where(real & (pos >= 0), pos, torch.full_like(pos, -1))
    out = torch.zeros(pos.shape[0], n_active + 1, device=pos.device)
    out.scatter_(1, pos + 1, 1.0)  # column 0 collects the inactive ones
    return out[:, 1:]


class LexicalEncoding:
    """Inference helpers shared by encoders with torch lexicon heads (``self.net``,
    ``self._active`` and a ``self._sparse(weights, top_k)``)."""

    net: Any
    _active: np.ndarray

    def _sparse(self, w: np.ndarray, top_k: int) -> SparseBatch:
        raise NotImplementedError

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """No gradients and eval mode (batch-norm statistics), the caller's mode restored."""
        import torch

        was = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.net.train(was)

    def _batches(
        self, n: int, batch_size: int, desc: str, unit: str, progress: bool
    ) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each batch, with a progress bar over ``n`` items."""
        from lexlens.progress import progress_bar

        with progress_bar(n, desc, unit, progress) as bar:
            for a in range(0, n, batch_size):
                yield a, min(n, a + batch_size)
                bar.update(min(n, a + batch_size) - a)

    def _dense_and_lexical(
        self,
        texts: Sequence[str],
        dim: int,
        batch_size: int,
        top_k: int,
        forward: Any,
        each_batch: Any = None,
    ) -> tuple[np.ndarray, SparseBatch]:
        """Query texts' L2-normalised embeddings ``[n, dim]`` and top-``top_k`` lexical rows
        from one pass per batch: ``forward(tokens) -> (embeddings [b, dim], lexicon weights
        [b, V_active], *more)`` (torch tensors; run without gradients, in eval mode), then
        ``each_batch(tokens, the batch's lexical rows, *more)`` when given."""
        texts = [str(t) for t in texts]
        dense = np.zeros((len(texts), dim), np.float32)
        parts = []
        for a, b in self._batches(len(texts), batch_size, "encode queries", "txt", False):
            tok = self.net.tokenize(texts[a:b])
            with self._inference():
                emb, w, *more = forward(tok)
            dense[a:b] = l2_normalize(emb.float().numpy())
            parts.append(self._sparse(w.float().numpy(), top_k))
            if each_batch is not None:
                each_batch(tok, parts[-1], *more)
        return dense, self._concat(parts)

    def _concat(self, parts: list[SparseBatch]) -> SparseBatch:
        """The batches' rows in order (an empty batch over the vocabulary when none)."""
        return (
            SparseBatch.concat(parts)
            if parts
            else self._sparse(np.zeros((0, len(self._active))), 1)
        )
