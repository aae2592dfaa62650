"""Import open_clip and transformers on machines where torchvision is installed but broken.

A torchvision wheel built for a CUDA torch raises ``RuntimeError: operator torchvision::nms
does not exist`` when imported next to a CPU torch. transformers treats torchvision as optional
but imports it whenever it is *installed*; open_clip imports it unconditionally, only for its
PIL transforms and ``FrozenBatchNorm2d``. lexlens preprocesses images itself
(:mod:`lexlens.data.images`) and needs neither, so :func:`broken_torchvision_hidden` lets those
imports go through. When torchvision imports fine it does nothing at all.
"""

from __future__ import annotations

import functools
import importlib.machinery
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

__all__ = ["torchvision_error", "broken_torchvision_hidden", "import_transformers"]


@functools.cache
def torchvision_error() -> str | None:
    """``None`` when ``import torchvision`` works, else its error as one line (probed once)."""
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # RuntimeError when broken, ImportError when absent
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
    return None


@contextmanager
def broken_torchvision_hidden(
    stand_ins: Mapping[str, Mapping[str, object]] | None = None,
    also_hide: Sequence[str] = (),
) -> Iterator[None]:
    """While active, a torchvision that cannot be imported looks *not installed*.

    Why: see the module docstring. How: ``sys.modules["torchvision"] = None`` is importlib's
    own "absent" marker (``find_spec`` returns ``None``, ``import`` raises ImportError), which
    the optional-dependency checks of transformers understand (they cache the answer, so the
    first import of transformers must happen inside this block). ``stand_ins`` instead
    provides placeholder modules (module name -> {attribute: object}) for a library that
    imports torchvision names unconditionally; ``also_hide`` marks more packages as absent
    (e.g. timm, which imports torchvision too). Everything in ``sys.modules`` is restored on
    exit; leftovers of the failed torchvision import are kept out of the way meanwhile.
    """
    if torchvision_error() is None:
        yield
        return
    prefixes = ("torchvision", *also_hide)
    saved = {
        k: sys.modules.pop(k)
        for k in list(sys.modules)
        if any(k == p or k.startswith(p + ".") for p in prefixes)
    }
    placed: dict[str, types.ModuleType | None] = {p: None for p in prefixes}
    for name, attrs in (stand_ins or {}).items():
        mod = types.ModuleType(name, "lexlens placeholder: torchvision cannot be imported here")
        mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
        mod.__dict__.update(attrs)
        placed[name] = mod
    for name, mod in placed.items():  # `import a.b as m` also reads attribute b of module a
        parent, _, child = name.rpartition(".")
        if mod is not None and isinstance(placed.get(parent), types.ModuleType):
            setattr(placed[parent], child, mod)
    sys.modules.update(placed)
    try:
        yield
    finally:
        for name in placed:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def import_transformers() -> types.ModuleType:
    """``import transformers`` so that it takes a broken torchvision for an absent one.

    transformers decides once per process (cached) whether torchvision is available; when a
    module imported it earlier outside :func:`broken_torchvision_hidden` and cached "yes",
    that answer is cleared so that the next check, made here, sees torchvision hidden.
    """
    with broken_torchvision_hidden():
        import transformers

        if torchvision_error() is not None:
            from transformers.utils import import_utils

            for name in ("is_torchvision_available", "is_torchvision_v2_available"):
                check = getattr(import_utils, name, None)
                if hasattr(check, "cache_clear"):
                    check.cache_clear()
                    check()  # cached again, now as False
    return transformers
