"""Helpers shared by the training tests."""

from __future__ import annotations

from typing import Any

import torch


def assert_same_weights(a: Any, b: Any) -> None:
    """Two native encoders hold the same parameters and buffers (float tolerance of CPU math)."""
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=k)
