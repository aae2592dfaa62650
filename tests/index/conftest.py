"""Fixtures shared by the index tests."""

from __future__ import annotations

import pytest
from fakes import FakeEncoder


@pytest.fixture
def fake_backend():
    """The model spec ``test:fake``: a :class:`fakes.FakeEncoder` through the registry."""
    from lexlens.models import registry

    registry._ensure_builtin_backends()
    registry.register_backend("test", lambda target: FakeEncoder("test:" + target))
    yield "test:fake"
    registry.BACKENDS.pop("test", None)
