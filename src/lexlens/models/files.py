"""The permissions of the files of a saved model.

Every file lexlens writes for a model gets the mode of a file the process creates with
``open()``: ``0o666`` minus the umask (``0o644`` under the usual ``022``), so that a model
directory can be shared like any other. ``safetensors``' ``save_file`` (also behind
transformers' ``save_pretrained``) writes through a private temporary file and renames it,
which leaves the weights at ``0o600``: :func:`save_safetensors` and :func:`default_modes`
give such files the usual mode back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "process_umask",
    "default_file_mode",
    "give_default_mode",
    "save_safetensors",
    "default_modes",
]

_UMASK_LOCK = threading.Lock()


def process_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permission bits ``open()`` gives a new file in this process (``0o666 & ~umask``)."""
    return 0o666 & ~process_umask()


def give_default_mode(path: str | os.PathLike[str]) -> None:
    """Set ``path``'s permission bits to :func:`default_file_mode`."""
    os.chmod(path, default_file_mode())


def save_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file``, the file then given :func:`default_file_mode`."""
    from safetensors.torch import save_file

    save_file(dict(tensors), str(path), metadata=metadata)
    give_default_mode(path)


def _files(directory: Path) -> dict[str, tuple[int, int, int]]:
    out: dict[str, tuple[int, int, int]] = {}
    with os.scandir(directory) as it:
        for e in it:
            if e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                out[e.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


@contextmanager
def default_modes(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Every file the block creates or rewrites directly in ``directory`` gets
    :func:`default_file_mode` (for writers lexlens does not control, e.g. ``save_pretrained``)."""
    d = Path(directory)
    before = _files(d) if d.is_dir() else {}
    yield
    for name, key in _files(d).items():
        if before.get(name) != key:
            give_default_mode(d / name)
