"""LexLIP lexicon heads fitted on a frozen ``openclip:`` / ``hf:`` dual encoder.

``lexlens train --model openclip:... --objective lexical-heads`` (issue #6 item 4) adds to a
pretrained dense model, whose weights never change, what a native model has
(:mod:`lexlens.models.lexicon`):

* an image head and a text head: the frozen towers' last-layer patch / token states
  (:mod:`lexlens.models.frozen_towers`; the pooled embedding as one state where a tower has
  none) -> logits over the *text tower's own word pieces*, the output layer tied to the text
  tower's frozen input word-piece embeddings -> ``log(1 + relu)`` -> max-pool over patches /
  tokens -> top-k per item, 8-bit levels;
* the inference-free query table (tokenise with the model's tokenizer, one learned weight per
  word piece, no network at query time).

Only the *active* word pieces get logits: those of the training captions (special tokens
excluded); every other id of the vocabulary weighs 0.

Saving writes the backend's own model files (``Encoder.save``) plus ``lexlens_heads.json``
and ``lexlens_heads.safetensors`` into the same directory; ``openclip:DIR`` / ``hf:DIR``
then loads the dense model with its heads (:func:`load_heads`), dense output unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import ModelNotAvailableError, UsageError
from lexlens.models.attribution import LexicalSources, free_token_weights
from lexlens.models.base import (
    QUERY_MODES,
    Encoder,
    ImageInput,
    SparseBatch,
    WrappedEncoder,
)
from lexlens.models.lexicon import piece_presence
from lexlens.models.native_config import LexiconConfig

__all__ = [
    "HeadsConfig",
    "LexHeadsEncoder",
    "attach_heads",
    "has_heads",
    "load_heads",
    "HEADS_CONFIG",
    "HEADS_WEIGHTS",
]

HEADS_CONFIG = "lexlens_heads.json"
HEADS_WEIGHTS = "lexlens_heads.safetensors"
FORMAT = "lexlens-lexicon-heads"
FORMAT_VERSION = 1
_LEX = LexiconConfig()  # the native defaults of the index-time cut and quantisation


@dataclass
class HeadsConfig:
    """Sizes of the heads and the index-time cut (saved as ``lexlens_heads.json``)."""

    active_ids: list[int]
    vocab_size: int
    image_dim: int  # width of the image states
    text_dim: int  # width of the text states
    table_dim: int  # width of the tied word-piece embeddings
    top_k_image: int = _LEX.top_k_image
    top_k_text: int = _LEX.top_k_text
    quant_bits: int = _LEX.quant_bits
    quant_max: float = _LEX.quant_max
    meta: dict[str, Any] = field(default_factory=dict)


def build_heads_net(dense: Any, cfg: HeadsConfig) -> Any:
    """The trainable ``torch.nn.Module``: the frozen ``dense`` adapter module and new heads.

    Parameter names follow the native model's (``image_lex.``, ``text_lex.``, ``free_table.``,
    ``lex_logit_scale``, ``free_logit_scale``), so ``lexical-heads`` training moves only them;
    the dense module's parameters live under ``dense.``.
    """
    import torch
    from torch import nn

    from lexlens.models.frozen_towers import frozen_towers
    from lexlens.models.lexicon import build_inference_free_table, build_lexicon_head

    n_active = len(cfg.active_ids)

    class LexHeadsNet(nn.Module):
        """Lexicon heads on a frozen dense dual encoder (it stays in eval mode)."""

        def __init__(self) -> None:
            super().__init__()
            self.dense = dense
            self.towers = frozen_towers(dense)
            self.register_buffer("active_ids", torch.as_tensor(cfg.active_ids, dtype=torch.long))
            lut = torch.full((cfg.vocab_size,), -1, dtype=torch.long)
            lut[self.active_ids] = torch.arange(n_active)
            self.register_buffer("active_lut", lut, persistent=False)
            self.image_lex = build_lexicon_head(cfg.image_dim, cfg.table_dim, n_active)
            self.text_lex = build_lexicon_head(cfg.text_dim, cfg.table_dim, n_active)
            self.free_table = build_inference_free_table(n_active)
            self.lex_logit_scale = nn.Parameter(torch.tensor(0.0))
            self.free_logit_scale = nn.Parameter(torch.tensor(0.0))
            self.dense.eval()

        def train(self, mode: bool = True) -> LexHeadsNet:
            super().train(mode)
            self.dense.eval()  # frozen: no dropout, batch-norm statistics kept
            return self

        # -- the dense model, unchanged ------------------------------------------------
        @property
        def logit_scale(self) -> torch.Tensor:
            return self.dense.logit_scale

        def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
            return self.dense.tokenize(texts)

        def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.dense.image_features(pixels)

        def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.dense.text_features(tokens)

        def frozen_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """``(states [b, N, w], dense features [b, d])``, no gradients."""
            return self.towers.image(pixels)

        def frozen_text(
            self, tokens: dict[str, torch.Tensor]
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """``(states [b, L, w], mask [b, L], dense features [b, d])``, no gradients."""
            return self.towers.text(tokens)

        # -- lexical outputs (the native model's names) -----------------------------------
        def active_table(self) -> torch.Tensor:
            """Frozen word-piece embeddings of the active pieces ``[V_active, table_dim]``."""
            return self.towers.embedding_table().detach()[self.active_ids].float()

        def image_lexical(self, states: torch.Tensor) -> torch.Tensor:
            return self.image_lex(states, None, self.active_table())

        def image_lexical_with_logits(
            self, states: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return self.image_lex.forward_with_logits(states, None, self.active_table())

        def text_lexical(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.text_lex(states, mask, self.active_table())

        def text_presence(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
            """``[b, V_active]`` 0/1: the active word pieces among each text's real tokens."""
            ids = tokens["input_ids"]
            pos = self.active_lut[ids.clamp(0, cfg.vocab_size - 1)]
            return piece_presence(pos, self.towers.mask(tokens) > 0, n_active)

        def text_lexical_free(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.free_table(self.text_presence(tokens))

        def heads_state(self) -> dict[str, torch.Tensor]:
            """The heads' weights (everything but the dense model)."""
            return {k: v for k, v in self.state_dict().items() if not k.startswith("dense.")}

    return LexHeadsNet()


class LexHeadsEncoder(LexicalSources, WrappedEncoder):
    """A dense ``openclip:`` / ``hf:`` encoder plus lexicon heads (lexical output, both query modes).

    Dense embeddings are the inner encoder's own; :meth:`trainable` is the heads module (with
    the frozen dense module inside); :meth:`save` writes the inner model and the heads.
    """

    def __init__(self, inner: Encoder, net: Any, cfg: HeadsConfig) -> None:
        WrappedEncoder.__init__(self, inner)
        self.net = net.eval()
        self.cfg = cfg
        self.meta = dict(cfg.meta)
        self._active = np.asarray(cfg.active_ids, np.int64)
        self._vocab: list[str] | None = None
        self._raw: tuple[list[str], set[int]] | None = None

    # -- lexical -----------------------------------------------------------------------
    @property
    def has_lexical(self) -> bool:
        return True

    @property
    def vocab(self) -> Sequence[str]:
        """The text tower's word pieces, readable (BPE end-of-word marks dropped)."""
        if self._vocab is None:
            self._vocab = self.net.towers.pieces()
        return self._vocab

    @property
    def lexical_query_modes(self) -> tuple[str, ...]:
        return QUERY_MODES

    def _sparse(self, w: np.ndarray, top_k: int) -> SparseBatch:
        from lexlens.models.lexicon import to_sparse_batch

        c = self.cfg
        return to_sparse_batch(
            w, self._active, c.vocab_size, top_k, c.quant_max, c.quant_bits, vocab=self.vocab
        )

    def encode_images_lexical(
        self, images: Sequence[ImageInput], batch_size: int = 64, progress: bool = False
    ) -> SparseBatch:
        """Sparse word-piece weights of images (top-k per image, 8-bit levels)."""
        import torch

        images = list(images)
        parts = []
        for a, b in self._batches(len(images), batch_size, "lexical images", "img", progress):
            px = torch.from_numpy(self._to_pixels(images[a:b]))
            with self._inference():
                states, _ = self.net.frozen_image(px)
                w = self.net.image_lexical(states).float().numpy()
            parts.append(self._sparse(w, self.cfg.top_k_image))
        return self._concat(parts)

    def encode_texts_lexical(
        self,
        texts: Sequence[str],
        batch_size: int = 256,
        progress: bool = False,
        mode: str = "encoder",
    ) -> SparseBatch:
        """Sparse word-piece weights of texts; ``mode`` is one of :data:`QUERY_MODES`."""
        self.check_query_mode(mode)
        texts = [str(t) for t in texts]
        parts = []
        for a, b in self._batches(len(texts), batch_size, "lexical texts", "txt", progress):
            tok = self.net.tokenize(texts[a:b])
            with self._inference():
                if mode == "encoder":
                    states, mask, _ = self.net.frozen_text(tok)
                    w = self.net.text_lexical(states, mask)
                else:
                    w = self.net.text_lexical_free(tok)
            parts.append(self._sparse(w.float().numpy(), self.cfg.top_k_text))
        return self._concat(parts)

    def encode_text_queries(
        self, texts: Sequence[str], mode: str = "encoder", batch_size: int = 256
    ) -> tuple[np.ndarray, SparseBatch]:
        """Dense embeddings and lexical weights of query texts; in ``encoder`` mode from one
        pass of the frozen text tower (its features are the inner encoder's embeddings)."""
        if self.check_query_mode(mode) != "encoder":
            return super().encode_text_queries(texts, mode, batch_size)

        def forward(tok: dict[str, Any]) -> tuple[Any, Any]:
            states, mask, feats = self.net.frozen_text(tok)
            return feats, self.net.text_lexical(states, mask)

        return self._dense_and_lexical(texts, self.dim, batch_size, self.cfg.top_k_text, forward)

    # -- query word attribution (models.attribution.LexicalSources) -------------------------
    @property
    def _text_top_k(self) -> int:
        return self.cfg.top_k_text

    def _text_pieces(self) -> tuple[Sequence[str], set[int]]:
        if self._raw is None:
            towers = self.net.towers
            self._raw = (towers.raw_pieces(), set(towers.special_ids))
        return self._raw

    def _token_lexical(self, tok: dict[str, Any], mode: str) -> tuple[Any, Any, Any]:
        if mode == "encoder":
            return self._token_outputs(tok, mode)[1:]
        return self._free_token_lexical(tok)

    def _free_token_lexical(self, tok: dict[str, Any]) -> tuple[Any, Any, Any]:
        """Inference-free ``(pooled, per-token, real)``: the learned table, no network."""
        real = self.net.towers.mask(tok) > 0
        pos = self.net.active_lut[tok["input_ids"].clamp(0, self.cfg.vocab_size - 1)]
        per_token = free_token_weights(pos, real, self.net.free_table.weights())
        return self.net.text_lexical_free(tok), per_token, real

    def _token_outputs(self, tok: dict[str, Any], mode: str) -> tuple[Any, Any, Any, Any]:
        states, mask, feats = self.net.frozen_text(tok)
        if mode != "encoder":
            return (feats, *self._free_token_lexical(tok))
        per_token = self.net.text_lex.token_weights(states, self.net.active_table())
        return feats, self.net.text_lexical(states, mask), per_token, mask > 0

    # -- training / saving -----------------------------------------------------------------
    def trainable(self) -> Any:
        return self.net

    def save(self, path: str | Path) -> None:
        """The inner model's files, then ``lexlens_heads.json`` + ``lexlens_heads.safetensors``."""
        from lexlens.models.files import save_safetensors

        out = Path(path)
        self.inner.save(out)
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.heads_state().items()}
        tmp = out / (HEADS_WEIGHTS + ".tmp")
        save_safetensors(state, tmp)
        tmp.replace(out / HEADS_WEIGHTS)
        self.cfg.meta = dict(self.meta)
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(self.cfg)}
        tmpj = out / (HEADS_CONFIG + ".tmp")
        tmpj.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        tmpj.replace(out / HEADS_CONFIG)

    def describe(self) -> dict[str, Any]:
        d = self.inner.describe()
        d.update(
            lexical=True,
            vocab_size=self.cfg.vocab_size,
            lexicon_heads={
                "active_word_pieces": len(self._active),
                "top_k_image": self.cfg.top_k_image,
                "top_k_text": self.cfg.top_k_text,
                "pooled_only": list(self.net.towers.pooled_only),
            },
            query_modes=list(self.lexical_query_modes),
        )
        d.update({k: v for k, v in self.meta.items() if k == "trained"})
        return d


def _inner_module(encoder: Encoder) -> Any:
    try:
        return encoder.trainable()
    except NotImplementedError as e:
        raise UsageError(f"{encoder.name}: lexicon heads need a trainable model ({e})") from None


def attach_heads(
    encoder: Encoder, texts: Sequence[str], seed: int = 0, **options: Any
) -> LexHeadsEncoder:
    """New (randomly initialised) lexicon heads on ``encoder``, an ``openclip:``/``hf:`` model.

    The active word pieces are those of ``texts`` (the training captions) under the model's
    own tokenizer; ``options`` override :class:`HeadsConfig` fields (``top_k_image``, ...).
    """
    import torch

    if isinstance(encoder, LexHeadsEncoder):
        raise UsageError(f"{encoder.name} already has lexicon heads")
    dense = _inner_module(encoder)
    from lexlens.models.frozen_towers import frozen_towers

    towers = frozen_towers(dense.eval())
    table = towers.embedding_table()
    special = towers.special_ids
    ids: set[int] = set()
    texts = [str(t) for t in texts]
    for a in range(0, len(texts), 1024):
        tok = dense.tokenize(texts[a : a + 1024])
        real = towers.mask(tok) > 0
        ids.update(int(i) for i in torch.unique(tok["input_ids"][real]))
    active = sorted(i for i in ids - special if 0 <= i < table.shape[0])
    if not active:
        raise UsageError("lexicon heads need training captions with at least one word")
    size = encoder.preprocess_config.image_size
    with torch.no_grad():  # one probe forward pass gives the widths of the states
        img_states, _ = towers.image(torch.zeros(1, 3, size, size))
        txt_states, _, _ = towers.text(dense.tokenize(["a photo"]))
    cfg = HeadsConfig(
        active_ids=active,
        vocab_size=int(table.shape[0]),
        image_dim=int(img_states.shape[-1]),
        text_dim=int(txt_states.shape[-1]),
        table_dim=int(table.shape[1]),
        **options,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_heads_net(dense, cfg)
    return LexHeadsEncoder(encoder, net, cfg)


def has_heads(path: str | Path) -> bool:
    """True when ``path`` is a model directory with saved lexicon heads."""
    return (Path(path) / HEADS_CONFIG).is_file()


def load_heads(encoder: Encoder, path: str | Path) -> LexHeadsEncoder:
    """``encoder`` (loaded from ``path``) with the lexicon heads saved in ``path``."""
    from safetensors.torch import load_file

    p = Path(path)
    try:
        doc = json.loads((p / HEADS_CONFIG).read_text(encoding="utf-8"))
        cfg = HeadsConfig(**doc["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelNotAvailableError(f"{p}: unreadable {HEADS_CONFIG} ({e})") from e
    if doc.get("format") != FORMAT or int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelNotAvailableError(
            f"{p}: {HEADS_CONFIG} is format {doc.get('format')!r} "
            f"v{doc.get('format_version')}, expected {FORMAT} v{FORMAT_VERSION} or older"
        )
    net = build_heads_net(_inner_module(encoder), cfg)
    try:
        state = load_file(str(p / HEADS_WEIGHTS))
    except Exception as e:  # noqa: BLE001 - any unreadable weight file is one clear error
        raise ModelNotAvailableError(f"{p}: cannot read {HEADS_WEIGHTS} ({e})") from e
    own = net.heads_state()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise ModelNotAvailableError(f"{p}: {HEADS_WEIGHTS} does not match {HEADS_CONFIG}")
    net.load_state_dict(state, strict=False)
    return LexHeadsEncoder(encoder, net, cfg)
