"""Backend registry: a model spec ``BACKEND:REST`` -> an :class:`Encoder`.

The backend is chosen by the exact registry key before the first colon, never by a
substring of a model name:

* ``openclip:ARCH[:PRETRAINED]`` (open_clip_torch; PRETRAINED is a tag, ``hf-hub:...`` id
  or a local checkpoint file),
* ``hf:REPO_OR_PATH`` (transformers; CLIP and SigLIP families),
* ``native:NAME_OR_PATH`` (lexlens's own models),
* ``lexical:INNER`` or ``lexical(OPTIONS):INNER`` (training-free lexical vectors for any
  other spec, :mod:`lexlens.models.lexical_adapter`).

A backend that takes options (``accepts_options``) is written ``KEY(OPTIONS):REST``; the
options end at the first ``"):"``. A bare local path is accepted when it holds a saved
lexlens model (``lexlens.json``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lexlens.errors import ModelNotAvailableError, UsageError
from lexlens.models.base import Encoder

__all__ = [
    "register_backend",
    "load_encoder",
    "parse_model_spec",
    "list_models",
    "BACKENDS",
    "ModelSpec",
]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``backend`` key, the backend-specific ``target`` and, for
    ``KEY(OPTIONS):TARGET``, the ``options`` text (``None`` without parentheses)."""

    backend: str
    target: str
    options: str | None = None

    def __str__(self) -> str:
        opts = "" if self.options is None else f"({self.options})"
        return f"{self.backend}{opts}:{self.target}"


@dataclass(frozen=True)
class _Backend:
    load: Callable[..., Encoder]
    list_names: Callable[[], list[str]]
    description: str
    accepts_options: bool = False


BACKENDS: dict[str, _Backend] = {}


def register_backend(
    key: str,
    load: Callable[..., Encoder],
    list_names: Callable[[], list[str]] = lambda: [],
    description: str = "",
    accepts_options: bool = False,
) -> None:
    """Register a backend under ``key`` (the text before the first ``:`` of a model spec).

    With ``accepts_options`` the spec may read ``KEY(OPTIONS):TARGET`` and the backend is
    called as ``load(TARGET, OPTIONS)`` (``OPTIONS`` is ``None`` without parentheses).
    """
    BACKENDS[key] = _Backend(
        load=load, list_names=list_names, description=description, accepts_options=accepts_options
    )


def _ensure_builtin_backends() -> None:
    if BACKENDS:
        return
    # Imported lazily so that `import lexlens` stays light and side-effect free.
    from lexlens.models import hf, lexical_adapter, native, openclip

    register_backend("native", native.load, native.list_names, "lexlens's own dual encoders")
    register_backend("openclip", openclip.load, openclip.list_names, "open_clip_torch models")
    register_backend("hf", hf.load, hf.list_names, "transformers CLIP / SigLIP models")
    register_backend(
        "lexical",
        lexical_adapter.load,
        description="training-free lexical vectors for any model: lexical[(OPTIONS)]:SPEC",
        accepts_options=True,
    )


_WITH_OPTIONS = re.compile(r"([A-Za-z][\w-]*)\((.*?)\):(.*)", re.DOTALL)


def parse_model_spec(spec: str, extra_known: Sequence[str] = ()) -> ModelSpec:
    """Split ``BACKEND:REST`` into a :class:`ModelSpec`; a saved model directory maps to native.

    ``extra_known``: other names the caller handles itself (e.g. ``bench search``'s
    ``synthetic:lexical``), listed with the backends when ``spec`` is unknown."""
    spec = str(spec).strip()
    if not spec:
        raise UsageError("empty model spec; try `lexlens models` for the list")
    _ensure_builtin_backends()
    m = _WITH_OPTIONS.fullmatch(spec)
    if m and m.group(1) in BACKENDS:
        key, options, rest = m.groups()
        if not BACKENDS[key].accepts_options:
            raise UsageError(f"model spec {spec!r}: backend '{key}:' takes no options")
        if not rest:
            raise UsageError(f"model spec {spec!r} names no model after '{key}(...):'")
        return ModelSpec(key, rest, options)
    key, sep, rest = spec.partition(":")
    if sep and key in BACKENDS:
        if not rest:
            raise UsageError(f"model spec {spec!r} names no model after '{key}:'")
        return ModelSpec(key, rest)
    p = Path(spec)
    if (p / "lexlens.json").is_file():
        return ModelSpec("native", spec)
    known = ", ".join([*(f"{k}:" for k in sorted(BACKENDS)), *extra_known])
    raise UsageError(
        f"unknown model spec {spec!r}: expected one of {known} or a saved lexlens model dir"
    )


def load_encoder(spec: str, extra_known: Sequence[str] = ()) -> Encoder:
    """Load the encoder named by ``spec`` (see module docstring); ``extra_known`` as in
    :func:`parse_model_spec`."""
    ms = parse_model_spec(spec, extra_known)
    backend = BACKENDS[ms.backend]
    enc = (
        backend.load(ms.target, ms.options) if backend.accepts_options else backend.load(ms.target)
    )
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
