"""``lexlens demo`` on a tiny random-initialised native model: it builds its index, brings it up
to date on a second run, and rebuilds an index it cannot open (damaged, or made by another
model), keeping the old one aside."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from lexlens.demo import DEMO_QUERIES, run_demo  # noqa: E402


def _tiny_model(path, seed):
    import torch

    from lexlens.models.native import build_native

    torch.manual_seed(seed)
    build_native("tiny", texts=list(DEMO_QUERIES)).save(path)
    return f"native:{path}"


def test_demo_builds_updates_and_rebuilds_a_stale_index(tmp_path) -> None:
    model = _tiny_model(tmp_path / "m1", 1)
    out = tmp_path / "demo"
    first = run_demo(out, n=12, model=model, k=3, progress=False)
    assert first.count == 12 and first.build["added"] == 12
    assert len(first.results) == len(DEMO_QUERIES) + 1  # the texts and one image query
    assert all(r["hits"] for r in first.results)
    again = run_demo(out, n=12, model=model, k=3, progress=False)
    assert again.build["added"] == 0 and again.build["skipped"] == 12
    assert again.results == first.results and "rebuilt" not in again.text

    # an index it cannot open (a file changed behind its back): moved aside, built anew
    metas = list((out / "index").rglob("sparse.json"))
    assert metas, "the demo index has a sparse part"
    for p in metas:
        meta = json.loads(p.read_text())
        meta["format"] = 1
        p.write_text(json.dumps(meta))
    third = run_demo(out, n=12, model=model, k=3, progress=False)
    assert third.text.startswith(f"rebuilt {out / 'index'}") and "damaged" in third.text
    assert (out / "index.stale" / "CURRENT").is_file()
    assert third.results == first.results

    # another model: the same again (the previous stale copy replaced)
    other = _tiny_model(tmp_path / "m2", 2)
    fourth = run_demo(out, n=12, model=other, k=3, progress=False)
    assert "rebuilt" in fourth.text and fourth.count == 12
    assert (out / "index.stale" / "CURRENT").is_file() and "was built with model" in fourth.text
