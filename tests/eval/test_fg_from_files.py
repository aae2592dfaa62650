"""Fine-grained accuracy of a dataset read from files: one check per image and true caption,
however ``fg.jsonl`` spreads its negatives over lines."""

from __future__ import annotations

import json

import pytest
from eval_fakes import COLOURS, ColourEncoder, write_png

from lexlens.data.readers import load_dataset
from lexlens.eval.protocol import evaluate


def test_fg_split_over_lines_counts_images_not_lines(tmp_path) -> None:
    for i, colour in enumerate(("red", "blue")):
        write_png(tmp_path / "images" / f"{i}.png", COLOURS[colour])
    caps = [{"image": "images/0.png", "captions": ["a red square"]},
            {"image": "images/1.png", "captions": ["a blue square"]}]  # fmt: skip
    fg = [
        {"image": "images/0.png", "positive": "a red square", "negatives": ["a blue square"]},
        # ColourEncoder reads only the colour: this swap ties with the truth (a failure)
        {"image": "images/0.png", "positive": "a red square", "negatives": ["a red circle"]},
        {"image": "images/1.png", "positive": "a blue square", "negatives": ["a green square"]},
    ]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in caps))
    (tmp_path / "fg.jsonl").write_text("".join(json.dumps(x) + "\n" for x in fg))
    res = evaluate(ColourEncoder(), load_dataset(tmp_path), progress=False)
    # per line it would be 2 of 3; image 0 fails (one swap ties), image 1 passes
    assert res["fg_n"] == 2
    assert res["fg_acc"] == pytest.approx(50.0)
