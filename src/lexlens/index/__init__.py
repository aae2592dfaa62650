"""Indexes: spec strings, index kinds (dense faiss, sparse, hybrid), the on-disk format.

``Index`` (the on-disk index), ``parse_spec`` / ``default_spec`` and ``IndexSpec`` are
imported lazily so that ``import lexlens.index`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Index": "lexlens.index.index",
    "IndexSpec": "lexlens.index.spec",
    "parse_spec": "lexlens.index.spec",
    "default_spec": "lexlens.index.spec",
    "SearchParams": "lexlens.index.base",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'lexlens.index' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
