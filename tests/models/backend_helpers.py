"""Test helpers shared by the model-backend tests: no network, the trainable() contract."""

from __future__ import annotations

import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = ["block_network", "check_trainable", "assert_files_have_open_mode"]


def block_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[object]:
    """Empty Hugging Face and open_clip caches, downloads off, connection attempts refused.

    Returns the list into which every attempted connection's address is recorded.
    """
    from huggingface_hub import constants

    attempts: list[object] = []

    def refuse(self: socket.socket, address: object, *args: object, **kwargs: object) -> None:
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL cache is ~/.cache/clip
    monkeypatch.delenv("LEXLENS_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def assert_files_have_open_mode(directory: Path) -> None:
    """Every file in ``directory`` (not below) has the permission bits ``open()`` gives a new
    file in this process now (its umask): a saved model is as shareable as any other file."""
    probe = directory.parent / f".{directory.name}.mode-probe"
    with open(probe, "w"):
        pass
    want = oct(stat.S_IMODE(probe.stat().st_mode))
    probe.unlink()
    modes = {
        p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in directory.iterdir() if p.is_file()
    }
    assert modes and all(m == want for m in modes.values()), (want, modes)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def check_trainable(
    enc: Any, pixels: np.ndarray, texts: list[str], reload: Callable[[Path], Any], out: Path
) -> None:
    """``enc.trainable()`` computes ``enc``'s embeddings before normalisation; a training step
    on it changes what ``enc`` encodes (same weights, modes kept); ``save`` keeps the change."""
    import torch

    m = enc.trainable()
    assert isinstance(m, torch.nn.Module) and isinstance(m.logit_scale, torch.nn.Parameter)
    with torch.no_grad():
        img = m.image_features(torch.from_numpy(pixels)).numpy()
        txt = m.text_features(m.tokenize(texts)).numpy()
    np.testing.assert_allclose(_normalize(img), enc.encode_images(list(pixels)), atol=1e-5)
    np.testing.assert_allclose(_normalize(txt), enc.encode_texts(texts), atol=1e-5)

    m.train()
    before = enc.encode_texts(texts[:2])
    assert m.training
    i = torch.nn.functional.normalize(m.image_features(torch.from_numpy(pixels[:2])), dim=-1)
    t = torch.nn.functional.normalize(m.text_features(m.tokenize(texts[:2])), dim=-1)
    loss = torch.nn.functional.cross_entropy(m.logit_scale.exp() * i @ t.T, torch.arange(2))
    loss.backward()
    torch.optim.SGD(m.parameters(), lr=1.0).step()
    after = enc.encode_texts(texts[:2])
    assert not np.allclose(before, after, atol=1e-4)
    enc.save(out)
    np.testing.assert_array_equal(reload(out).encode_texts(texts[:2]), after)
