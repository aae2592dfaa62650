"""`lexlens eval` end to end with the shipped model: a hand-made 3-image Karpathy JSON and a
small scenes folder; numbers equal a naive recall loop over the model's own embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lexlens.cli import main
from lexlens.models.registry import load_encoder

MODEL = "native:scenes-mini"


def _naive_recall(sim_t2i: np.ndarray, t2i: list[int], k: int) -> tuple[float, float]:
    """Text->image and image->text R@k with the (-score, id) tie rule, by plain loops."""
    n_t, n_i = sim_t2i.shape
    hit_t = 0
    for t in range(n_t):
        order = sorted(range(n_i), key=lambda i: (-sim_t2i[t, i], i))
        hit_t += t2i[t] in order[:k]
    hit_i = 0
    for i in range(n_i):
        order = sorted(range(n_t), key=lambda t: (-sim_t2i[t, i], t))
        hit_i += any(t2i[t] == i for t in order[:k])
    return 100.0 * hit_t / n_t, 100.0 * hit_i / n_i


@pytest.fixture
def karpathy(tmp_path):
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    images, root = [], tmp_path / "imgs"
    root.mkdir()
    for j, (name, rgb) in enumerate(colours.items()):
        im = Image.new("RGB", (64, 64), (240, 240, 240))
        im.paste(rgb, (20, 20, 44, 44))
        im.save(root / f"{name}.png")
        sents = [{"raw": f"a large {name} square in the center"}, {"raw": f"a {name} square"}]
        images.append({"filename": f"{name}.png", "split": "test", "sentences": sents, "imgid": j})
    images.append(
        {"filename": "unused.png", "split": "train", "sentences": [{"raw": "x"}], "imgid": 9}
    )
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"dataset": "flickr30k", "images": images}))
    return path, root


def test_eval_karpathy_json_matches_naive_loop(karpathy, tmp_path) -> None:
    path, root = karpathy
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "--model",
                MODEL,
                "--data",
                str(path),
                "--split",
                "test",
                "--images",
                str(root),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert r["n_images"] == 3 and r["n_texts"] == 6
    enc = load_encoder(MODEL)
    img = enc.encode_images([root / f"{c}.png" for c in ("red", "blue", "green")])
    texts = [f"a large {c} square in the center" for c in ("red", "blue", "green")]
    texts = [
        t
        for c, t in zip(("red", "blue", "green"), texts, strict=True)
        for t in (t, f"a {c} square")
    ]
    sim = enc.encode_texts(texts) @ img.T
    t2i = [0, 0, 1, 1, 2, 2]
    for k in (1, 5, 10):
        want_t, want_i = _naive_recall(sim, t2i, k)
        assert r["t2i"][f"R@{k}"] == pytest.approx(want_t)
        assert r["i2t"][f"R@{k}"] == pytest.approx(want_i)
    assert r["rsum"] == pytest.approx(
        sum(r[d][f"R@{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10))
    )


def test_eval_scenes_folder_reports_fg_and_ceiling(tmp_path, capsys) -> None:
    from lexlens.data.scenes import generate_scenes

    generate_scenes(tmp_path / "s", n=24, seed=11, split="test", workers=1, progress=False)
    assert main(["eval", "--model", MODEL, "--data", str(tmp_path / "s"), "--json", "-"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["fg_n"] == 24
    assert main(["eval", "--model", MODEL, "--data", str(tmp_path / "s"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)  # --json alone is stdout too
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in r.items() if k != "seconds"
    }
    # naive fine-grained accuracy: the true caption strictly beats every swapped one
    enc = load_encoder(MODEL)
    wins = 0
    for line in (tmp_path / "s" / "fg.jsonl").read_text().splitlines():
        item = json.loads(line)
        im = enc.encode_images([tmp_path / "s" / item["image"]])[0]
        scores = enc.encode_texts([item["positive"], *item["negatives"]]) @ im
        wins += bool(np.all(scores[0] > scores[1:]))
    assert r["fg_acc"] == pytest.approx(100.0 * wins / 24)
    c = r["ceiling"]
    assert 0 < c["t2i"]["R@1"] <= c["t2i"]["R@5"] <= c["t2i"]["R@10"] <= 100


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lexlens: error: "), err
    return err[0]


def test_eval_input_errors_are_one_line_before_any_encoding(karpathy, tmp_path, capsys):
    path, root = karpathy
    base = ["eval", "--model", MODEL, "--data", str(path), "--split", "test"]
    # without --images the files are looked for beside the JSON: all 3 missing
    assert main(base) == 1
    line = _error_line(capsys)
    assert "3 of 3 images are missing" in line and "--images" in line
    (root / "blue.png").write_bytes((root / "red.png").read_bytes()[:50])  # truncated
    assert main([*base, "--images", str(root)]) == 1
    assert f"cannot read image {root / 'blue.png'}" in _error_line(capsys)
    assert (
        main([*base, "--images", str(root), "--index", "flat", "--query-mode", "inference-free"])
        == 2
    )
    assert "index flat is dense" in _error_line(capsys)
    with pytest.raises(SystemExit):
        main([*base, "--images", str(root), "--batch-size", "0"])
    assert "must be positive" in capsys.readouterr().err


def test_batch_size_is_checked_by_the_api() -> None:
    from lexlens.errors import UsageError

    enc = load_encoder(MODEL)
    for bad in (0, -4, 2.5, True):
        with pytest.raises(UsageError, match="batch size"):
            enc.encode_texts(["a red circle"], batch_size=bad)
