"""lexlens: image-text retrieval with dense, lexical (LexLIP-style) and hybrid search.

The top-level names are imported lazily, so ``import lexlens`` is cheap and has no
side effects; heavy dependencies (torch, faiss) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": "lexlens.models.registry",
    "list_models": "lexlens.models.registry",
    "Encoder": "lexlens.models.base",
    "SparseBatch": "lexlens.models.base",
    "topk": "lexlens.results",
    "LexlensError": "lexlens.errors",
    "Index": "lexlens.index.index",
    "Query": "lexlens.search",
    "SearchParams": "lexlens.index.base",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'lexlens' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__() -> list[str]:
    """Module attributes plus the lazily imported names (for ``dir()`` and completion)."""
    return sorted(set(globals()) | set(_LAZY))
