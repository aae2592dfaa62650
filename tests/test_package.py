"""The top-level package: lazy names are listed, resolvable, and cheap to import."""

from __future__ import annotations

import subprocess
import sys

import lexlens


def test_dir_lists_every_public_name() -> None:
    names = dir(lexlens)
    for name in lexlens.__all__:
        assert name in names, name


def test_every_public_name_resolves() -> None:
    for name in lexlens.__all__:
        assert getattr(lexlens, name) is not None, name


def test_import_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, lexlens; dir(lexlens); "
        "print(','.join(m for m in ('torch', 'faiss', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
