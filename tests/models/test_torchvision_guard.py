"""The import guard for an installed-but-broken torchvision (lexlens.models.torchvision_guard)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from lexlens.models import torchvision_guard as guard


def _torchvision_entries() -> dict[str, object]:
    return {
        k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")
    }


def test_hidden_torchvision_looks_absent_and_stand_ins_work_then_all_is_restored(monkeypatch):
    monkeypatch.setattr(guard, "torchvision_error", lambda: "RuntimeError: broken for the test")
    before = _torchvision_entries()
    with guard.broken_torchvision_hidden():
        assert importlib.util.find_spec("torchvision") is None
        with pytest.raises(ImportError):
            import torchvision  # noqa: F401
    assert _torchvision_entries() == before

    stand_ins = {"torchvision": {}, "torchvision.ops": {}, "torchvision.ops.misc": {"Thing": 42}}
    with guard.broken_torchvision_hidden(stand_ins, also_hide=("lexlens_test_absent_pkg",)):
        import torchvision.ops.misc as misc
        from torchvision.ops.misc import Thing

        assert Thing == 42 and misc.Thing == 42
        assert sys.modules["torchvision"].ops.misc is misc
        with pytest.raises(ImportError):
            import lexlens_test_absent_pkg  # noqa: F401
    assert _torchvision_entries() == before
    assert "lexlens_test_absent_pkg" not in sys.modules


def test_no_op_when_torchvision_imports(monkeypatch):
    monkeypatch.setattr(guard, "torchvision_error", lambda: None)
    snapshot = dict(sys.modules)
    with guard.broken_torchvision_hidden({"torchvision": {"X": 1}}, also_hide=("json",)):
        assert sys.modules.get("json") is snapshot.get("json")
        assert sys.modules.get("torchvision") is snapshot.get("torchvision")


def test_transformers_takes_a_broken_torchvision_for_an_absent_one():
    pytest.importorskip("transformers")
    if guard.torchvision_error() is None:
        pytest.skip("torchvision imports here")
    transformers = guard.import_transformers()
    from transformers.utils import import_utils

    assert import_utils.is_torchvision_available() is False
    # imported earlier by someone else, outside the guard: the cached "yes" is corrected
    import_utils.is_torchvision_available.cache_clear()
    assert import_utils.is_torchvision_available() is True
    assert guard.import_transformers() is transformers
    assert import_utils.is_torchvision_available() is False
    from transformers import CLIPModel  # modeling code imports only with torchvision absent

    assert CLIPModel.__name__ == "CLIPModel"
