"""benchmarks/independent_scenes.py: its sets are read by lexlens, drawn at the size asked for,
and their captions are true of their scene records (the robustness figures rest on that)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lexlens.data.readers import load_dataset
from lexlens.data.scenes import caption_fits

_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "independent_scenes.py"


@pytest.mark.parametrize(("size", "render"), [("128x64", "checker:25:8"), ("64x64", "noise:15:1")])
def test_a_set_is_read_drawn_at_its_size_and_captioned_truly(tmp_path, size, render) -> None:
    out = tmp_path / "set"
    cmd = [sys.executable, str(_SCRIPT), str(out), "--n", "24", "--seed", "3", "--meta"]
    subprocess.run([*cmd, "--size", size, "--render", render], check=True, capture_output=True)
    ds = load_dataset(out, log=None)
    assert len(ds.images) == 24 and all(len(c) == 5 for c in ds.captions)
    w, h = map(int, size.split("x"))
    for path in ds.images:
        with Image.open(path) as im:
            assert im.size == (w, h)
    records = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    for rec in records:
        scene = rec["scene"]
        assert all(caption_fits(m, scene) for m in rec["caption_meta"])
