"""``lexlens demo`` on a tiny random-initialised native model: it builds its index, brings it up
to date on a second run, and rebuilds an index it cannot open (an older layout, damaged, or made
by another model), keeping the old one aside."""

from __future__ import annotations

import hashlib
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

    # a sparse part in an older layout (its manifest consistent): moved aside, built anew
    gen = out / "index" / "generations" / (out / "index" / "CURRENT").read_text().strip()
    manifest = json.loads((gen / "manifest.json").read_text())
    for p in (gen / "kind").rglob("sparse.json"):
        meta = json.loads(p.read_text())
        meta["format"] = 1
        p.write_text(json.dumps(meta))
        body = p.read_bytes()
        entry = manifest["files"][p.relative_to(gen).as_posix()]
        entry.update(size=len(body), sha256=hashlib.sha256(body).hexdigest())
    (gen / "manifest.json").write_text(json.dumps(manifest))
    third = run_demo(out, n=12, model=model, k=3, progress=False)
    assert third.text.startswith(f"rebuilt {out / 'index'}") and "layout 1" in third.text
    assert (out / "index.stale" / "CURRENT").is_file()
    assert third.results == first.results

    # damaged (a file changed behind the manifest's back): the same
    current = (out / "index" / "CURRENT").read_text().strip()
    victim = out / "index" / "generations" / current / "ids.npy"
    victim.write_bytes(victim.read_bytes()[:-8])
    damaged = run_demo(out, n=12, model=model, k=3, progress=False)
    assert "damaged" in damaged.text and damaged.results == first.results

    # another model: the same again (the previous stale copy replaced)
    other = _tiny_model(tmp_path / "m2", 2)
    fourth = run_demo(out, n=12, model=other, k=3, progress=False)
    assert "rebuilt" in fourth.text and fourth.count == 12
    assert (out / "index.stale" / "CURRENT").is_file() and "was built with model" in fourth.text


def test_an_index_that_cannot_be_moved_aside_is_one_clear_error(tmp_path) -> None:
    from lexlens.demo import _move_aside
    from lexlens.errors import DataError

    (tmp_path / "index").mkdir()
    (tmp_path / "stale").write_text("a file where the stale copy goes")
    assert _move_aside(tmp_path / "index", tmp_path / "stale") == tmp_path / "stale"
    assert (tmp_path / "stale").is_dir() and not (tmp_path / "index").exists()
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")  # a broken symlink is replaced too
    (tmp_path / "index").mkdir()
    _move_aside(tmp_path / "index", tmp_path / "link")
    assert (tmp_path / "link").is_dir() and not (tmp_path / "link").is_symlink()
    with pytest.raises(DataError, match="cannot move the unusable demo index"):
        _move_aside(tmp_path / "missing", tmp_path / "stale2")
