"""Backend registry: a model spec ``BACKEND:REST`` -> an :class:`Encoder`.

The backend is chosen by the exact registry key before the first colon, never by a
substring of a model name:

* ``openclip:ARCH[:PRETRAINED]`` (open_clip_torch; PRETRAINED is a tag, ``hf-hub:...`` id
  or a local checkpoint file),
* ``hf:REPO_OR_PATH`` (transformers; CLIP and SigLIP families),
* ``native:NAME_OR_PATH`` (lexlens's own models).

A bare local path is accepted when it holds a saved lexlens model (``lexlens.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lexlens.errors import ModelNotAvailableError, UsageError
from lexlens.models.base import Encoder

__all__ = ["register_backend", "load_encoder", "parse_model_spec", "list_models", "BACKENDS", "ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``backend`` key and the backend-specific ``target``."""

    backend: str
    target: str

    def __str__(self) -> str:
        return f"{self.backend}:{self.target}"


@dataclass(frozen=True)
class _Backend:
    load: Callable[[str], Encoder]
    list_names: Callable[[], list[str]]
    description: str


BACKENDS: dict[str, _Backend] = {}


def register_backend(
    key: str,
    load: Callable[[str], Encoder],
    list_names: Callable[[], list[str]] = lambda: [],
    description: str = "",
) -> None:
    """Register a backend under ``key`` (the text before the first ``:`` of a model spec)."""
    BACKENDS[key] = _Backend(load=load, list_names=list_names, description=description)


def _ensure_builtin_backends() -> None:
    if BACKENDS:
        return
    # Imported lazily so that `import lexlens` stays light and side-effect free.
    from lexlens.models import hf, native, openclip

    register_backend("native", native.load, native.list_names, "lexlens's own dual encoders")
    register_backend("openclip", openclip.load, openclip.list_names, "open_clip_torch models")
    register_backend("hf", hf.load, hf.list_names, "transformers CLIP / SigLIP models")


def parse_model_spec(spec: str) -> ModelSpec:
    """Split ``BACKEND:REST`` into a :class:`ModelSpec`; a saved model directory maps to native."""
    spec = str(spec).strip()
    if not spec:
        raise UsageError("empty model spec; try `lexlens models` for the list")
    _ensure_builtin_backends()
    key, sep, rest = spec.partition(":")
    if sep and key in BACKENDS:
        if not rest:
            raise UsageError(f"model spec {spec!r} names no model after '{key}:'")
        return ModelSpec(key, rest)
    p = Path(spec)
    if (p / "lexlens.json").is_file():
        return ModelSpec("native", spec)
    known = ", ".join(f"{k}:" for k in sorted(BACKENDS))
    raise UsageError(f"unknown model spec {spec!r}: expected one of {known} or a saved lexlens model dir")


def load_encoder(spec: str) -> Encoder:
    """Load the encoder named by ``spec`` (see module docstring)."""
    ms = parse_model_spec(spec)
    enc = BACKENDS[ms.backend].load(ms.target)
    if not enc.name:
        enc.name = str(ms)
    return enc


def list_models() -> dict[str, list[str]]:
    """Known model names per backend (what can be loaded without guessing)."""
    _ensure_builtin_backends()
    out: dict[str, list[str]] = {}
    for key, b in sorted(BACKENDS.items()):
        try:
            out[key] = b.list_names()
        except ModelNotAvailableError:
            out[key] = []
    return out
