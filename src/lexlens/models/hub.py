"""Offline-first model files, shared by the ``openclip:`` and ``hf:`` backends.

lexlens never reaches for the network to load a model unless asked to: downloads happen only
when ``LEXLENS_ALLOW_DOWNLOADS=1`` is set (and ``HF_HUB_OFFLINE`` is not). Otherwise only local
paths and files already in the Hugging Face cache are used, and while a model loads
``huggingface_hub`` is held in its offline mode, so that no library call tries the network
(which, on a machine without one, can hang instead of failing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from lexlens.errors import ModelNotAvailableError

__all__ = [
    "DOWNLOADS_ENV",
    "downloads_allowed",
    "hub_access",
    "cached_hub_file",
    "offline_hint",
    "one_line",
    "load_error",
]

#: set to 1 to let the model backends download weights
DOWNLOADS_ENV = "LEXLENS_ALLOW_DOWNLOADS"

_TRUE = ("1", "true", "yes", "on")


def downloads_allowed() -> bool:
    """True when the user asked for downloads and did not also ask the hub to stay offline."""
    wanted = os.environ.get(DOWNLOADS_ENV, "").strip().lower() in _TRUE
    hub_off = any(
        os.environ.get(v, "").strip().lower() in _TRUE
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return wanted and not hub_off


@contextmanager
def hub_access() -> Iterator[bool]:
    """Yield whether downloads are allowed; when not, keep ``huggingface_hub`` offline meanwhile.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once at import, into
    ``huggingface_hub.constants.HF_HUB_OFFLINE``, and every request (its own and those of
    transformers and open_clip) checks that constant: setting it here makes them fail at once
    with their "offline mode" error, or use the cache.
    """
    allowed = downloads_allowed()
    try:
        from huggingface_hub import constants
    except ImportError:  # no hub client: nothing can be downloaded anyway
        yield allowed
        return
    before = constants.HF_HUB_OFFLINE
    if not allowed:
        constants.HF_HUB_OFFLINE = True
    try:
        yield allowed
    finally:
        constants.HF_HUB_OFFLINE = before


def cached_hub_file(repo_id: str, filename: str) -> str | None:
    """Path of ``filename`` of hub repo ``repo_id`` when it is in the local cache, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename)
    except ValueError:  # not a valid repo id
        return None
    return found if isinstance(found, str) and os.path.isfile(found) else None


def offline_hint() -> str:
    """The end of every 'not cached' message: how to allow downloads where there is a network."""
    return f"(or set {DOWNLOADS_ENV}=1 on a machine with a network)"


def one_line(e: BaseException) -> str:
    """``Type: first line of the message`` of an exception raised by a library."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_error(spec: str, e: BaseException) -> ModelNotAvailableError:
    """The one-line error for a library failure while loading ``spec``.

    File errors (OSError: missing files, no cache entry, no connection) get the download hint
    when downloads are off.
    """
    hint = f" {offline_hint()}" if isinstance(e, OSError) and not downloads_allowed() else ""
    return ModelNotAvailableError(f"cannot load {spec}: {one_line(e)}{hint}")
