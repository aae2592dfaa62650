"""Read-only access to the towers of an ``openclip:`` or ``hf:`` model, for lexicon heads.

:func:`frozen_towers` wraps a backend's torch adapter (:mod:`lexlens.models.torch_modules`)
in a :class:`FrozenTowers` object that gives, without gradients and without changing the model:

* ``image(pixels) -> (states [b, N, w_img], features [b, d])``: the last-layer patch states
  (open_clip ViTs: the patch tokens after the final norm; transformers: the vision model's
  ``last_hidden_state``) and the unnormalised dense image embedding, in one forward pass;
* ``text(tokens) -> (states [b, L, w_txt], mask [b, L], features [b, d])``: the token states of
  the last layer, which of them are real tokens, and the dense text embedding;
* ``embedding_table() -> [V, w_emb]``: the text tower's input word-piece embeddings (the
  lexicon heads' tied output layer), ``pieces()``: the readable text of every word piece, and
  ``special_ids``: the ids that are never lexicon words.

A tower that cannot give its token states (an open_clip ResNet or timm image tower, a text
tower without an accessible final norm) falls back to its pooled embedding as one state
(``N = 1``); :attr:`FrozenTowers.pooled_only` says which towers do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["FrozenTowers", "frozen_towers"]


@contextmanager
def _captured(module: Any, pick: Callable[[Any], Any]) -> Iterator[dict[str, Any]]:
    """Record ``pick(output)`` of every call of ``module`` into the yielded dict (key ``"x"``)."""
    got: dict[str, Any] = {}

    def hook(_m: Any, _inputs: Any, output: Any) -> None:
        got["x"] = pick(output)

    handle = module.register_forward_hook(hook)
    try:
        yield got
    finally:
        handle.remove()


def _last_hidden(output: Any) -> Any:
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


@contextmanager
def _tokens_out(tower: Any) -> Iterator[None]:
    """An open_clip tower with ``output_tokens`` returns ``(pooled, tokens)`` inside this block."""
    old = tower.output_tokens
    tower.output_tokens = True
    try:
        yield
    finally:
        tower.output_tokens = old


def _piece_text(raw: str) -> str:
    """A readable word piece: BPE end-of-word marks and SentencePiece / GPT-2 spaces dropped."""
    text = raw.replace("</w>", "").lstrip("\u2581\u0120")
    return text or raw


class FrozenTowers:
    """The towers of a dense dual encoder module, read without gradients (module docstring)."""

    #: (image, text): True where that tower gives only its pooled embedding as one state
    pooled_only: tuple[bool, bool] = (False, False)

    def __init__(self, module: Any) -> None:
        self.module = module

    # -- implemented per backend --------------------------------------------------------
    def _image(self, pixels: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def _text(self, tokens: dict[str, Any]) -> tuple[Any, Any]:
        raise NotImplementedError

    def pad_id(self) -> int | None:
        """The padding id of token tensors without an ``attention_mask`` (None: no padding)."""
        raise NotImplementedError

    def embedding_table(self) -> Any:
        """The text tower's input word-piece embeddings ``[V, w_emb]`` (a frozen parameter)."""
        raise NotImplementedError

    def raw_pieces(self) -> list[str]:
        """The text tokenizer's word pieces by id, as it spells them (``##`` or ``</w>``
        markers kept): what query-word attribution joins into words."""
        raise NotImplementedError

    @property
    def special_ids(self) -> set[int]:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def image(self, pixels: Any) -> tuple[Any, Any]:
        """``(states [b, N, w], features [b, d])`` of preprocessed pixels ``[b, 3, H, W]``."""
        import torch

        with torch.no_grad():
            states, feats = self._image(pixels)
        if states is None or states.ndim != 3 or states.shape[1] == 0:
            states = feats[:, None]
        return states.float(), feats.float()

    def text(self, tokens: dict[str, Any]) -> tuple[Any, Any, Any]:
        """``(states [b, L, w], mask [b, L] (1 = real token), features [b, d])``."""
        import torch

        with torch.no_grad():
            states, feats = self._text(tokens)
        if states is None or states.ndim != 3 or states.shape[1] == 0:
            return feats[:, None].float(), torch.ones(feats.shape[0], 1), feats.float()
        mask = self.mask(tokens)[:, : states.shape[1]]
        return states.float(), mask, feats.float()

    def mask(self, tokens: dict[str, Any]) -> Any:
        """``[b, L]`` float 0/1: the real (non-padding) tokens."""
        import torch

        if "attention_mask" in tokens:
            return tokens["attention_mask"].float()
        ids = tokens["input_ids"]
        pad = self.pad_id()
        return torch.ones_like(ids, dtype=torch.float32) if pad is None else (ids != pad).float()

    def pieces(self) -> list[str]:
        """Readable text of every row of :meth:`embedding_table` (``[ID]`` where unknown)."""
        raw = self.raw_pieces()
        n = int(self.embedding_table().shape[0])
        return [_piece_text(raw[i]) if i < len(raw) and raw[i] else f"[{i}]" for i in range(n)]


class _OpenClipTowers(FrozenTowers):
    """open_clip ``CLIP`` / ``CustomTextCLIP``: ViT patch tokens, text tokens after ``ln_final``."""

    def __init__(self, module: Any) -> None:
        super().__init__(module)
        m = module.model
        self.pooled_only = (
            not hasattr(m.visual, "output_tokens"),
            not (hasattr(getattr(m, "text", None), "output_tokens") or hasattr(m, "ln_final")),
        )

    def _image(self, pixels: Any) -> tuple[Any, Any]:
        visual = self.module.model.visual
        if self.pooled_only[0]:
            return None, self.module.image_features(pixels)
        with _tokens_out(visual):
            feats, tokens = visual(pixels)
        return tokens, feats

    def _text(self, tokens: dict[str, Any]) -> tuple[Any, Any]:
        m = self.module.model
        ids = tokens["input_ids"]
        if hasattr(getattr(m, "text", None), "output_tokens"):  # CustomTextCLIP
            with _tokens_out(m.text):
                feats, states = m.text(ids)
            return states, feats
        if self.pooled_only[1]:
            return None, self.module.text_features(tokens)
        with _captured(m.ln_final, lambda out: out) as got:  # CLIP: ln_final sees every token
            feats = self.module.text_features(tokens)
        return got.get("x"), feats

    def _tokenizer(self) -> Any:
        return self.module.tokenizer

    def _hf(self) -> Any:
        return getattr(self._tokenizer(), "tokenizer", None)

    def pad_id(self) -> int | None:
        hf = self._hf()
        if hf is not None and getattr(hf, "pad_token_id", None) is not None:
            return int(hf.pad_token_id)
        return 0  # open_clip's SimpleTokenizer pads with 0

    def embedding_table(self) -> Any:
        m = self.module.model
        for owner in (m, getattr(m, "text", None)):
            emb = getattr(owner, "token_embedding", None)
            if emb is not None:
                return emb.weight
        return m.text.transformer.get_input_embeddings().weight  # an HF text tower

    def raw_pieces(self) -> list[str]:
        tok, hf = self._tokenizer(), self._hf()
        if hf is not None:
            return list(hf.convert_ids_to_tokens(list(range(len(hf)))))
        dec, bytes_of = tok.decoder, tok.byte_decoder
        out = []
        for i in range(len(dec)):
            s = dec.get(i, "")
            raw = bytearray(bytes_of.get(c, 63) for c in s.replace("</w>", ""))
            word = raw.decode("utf-8", errors="replace")
            out.append(word + ("</w>" if s.endswith("</w>") else ""))
        return out

    @property
    def special_ids(self) -> set[int]:
        tok, hf = self._tokenizer(), self._hf()
        ids = set(getattr(hf if hf is not None else tok, "all_special_ids", []) or [])
        return {int(i) for i in ids}


class _HFTowers(FrozenTowers):
    """transformers ``CLIPModel`` / ``SiglipModel``: the towers' ``last_hidden_state``."""

    def _image(self, pixels: Any) -> tuple[Any, Any]:
        with _captured(self.module.model.vision_model, _last_hidden) as got:
            feats = self.module.image_features(pixels)
        return got.get("x"), feats

    def _text(self, tokens: dict[str, Any]) -> tuple[Any, Any]:
        with _captured(self.module.model.text_model, _last_hidden) as got:
            feats = self.module.text_features(tokens)
        return got.get("x"), feats

    def pad_id(self) -> int | None:
        pad = getattr(self.module.tokenizer, "pad_token_id", None)
        return None if pad is None else int(pad)

    def embedding_table(self) -> Any:
        return self.module.model.text_model.get_input_embeddings().weight

    def raw_pieces(self) -> list[str]:
        tok = self.module.tokenizer
        return [str(t) for t in tok.convert_ids_to_tokens(list(range(len(tok))))]

    @property
    def special_ids(self) -> set[int]:
        return {int(i) for i in getattr(self.module.tokenizer, "all_special_ids", [])}


def frozen_towers(module: Any) -> FrozenTowers:
    """The :class:`FrozenTowers` of an ``openclip:`` or ``hf:`` torch adapter module."""
    from lexlens.errors import UsageError
    from lexlens.models.torch_modules import HFDualEncoder, OpenClipDualEncoder

    if isinstance(module, OpenClipDualEncoder):
        return _OpenClipTowers(module)
    if isinstance(module, HFDualEncoder):
        return _HFTowers(module)
    raise UsageError(
        f"lexicon heads on a frozen encoder need an openclip: or hf: model, not {type(module).__name__}"
    )
