"""The ``native:`` backend (being written; see the issues)."""

from __future__ import annotations

from lexlens.errors import ModelNotAvailableError
from lexlens.models.base import Encoder

__all__ = ["load", "list_names"]


def load(target: str) -> Encoder:
    """Load ``native:TARGET``."""
    raise ModelNotAvailableError("the native backend is not implemented yet")


def list_names() -> list[str]:
    """Names this backend can load offline."""
    return []
