"""The CLI: one main(argv); errors are one line, exit codes non-zero."""

import json

import pytest

from lexlens.cli import main


def test_models_json_lists_every_backend(capsys):
    assert main(["models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"native", "openclip", "hf"} <= set(out)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out.lower()


@pytest.mark.parametrize(
    "argv",
    [
        ["nosuch"],
        ["search"],
        ["train", "--objective", "foo", "--out", "x"],
        ["eval", "--model", "m", "--data", "d", "--batch-size", "0"],
        ["index", "build", "d", "--model", "m", "--out", "o", "--ray", "--shard-size", "0"],
        ["index", "add", "i", "d", "--ray", "--ray-workers", "-1"],
    ],
)
def test_argument_errors_are_one_line_pointing_at_help(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0] and "--help'" in err[0]


def test_ray_knobs_without_ray_are_refused_before_anything_is_written(tmp_path, capsys) -> None:
    out = tmp_path / "idx"
    argv = ["index", "build", str(tmp_path), "--model", "m", "--out", str(out)]
    assert main([*argv, "--shard-size", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ray" in err[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- eval output and columns
MODEL = "native:scenes-mini"


def _colour_table(tmp_path):
    """A CSV whose columns are not found by name: img_file, sentence_text (3 images)."""
    from PIL import Image

    rows = ["img_file,sentence_text"]
    for name, rgb in {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}.items():
        im = Image.new("RGB", (64, 64), (240, 240, 240))
        im.paste(rgb, (20, 20, 44, 44))
        im.save(tmp_path / f"{name}.png")
        rows += [f"{name}.png,a large {name} square", f"{name}.png,a {name} square"]
    table = tmp_path / "odd.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


def test_eval_takes_the_table_columns(tmp_path, capsys) -> None:
    table = _colour_table(tmp_path)
    assert main(["eval", "--model", MODEL, "--data", str(table)]) == 1
    assert "--image-column" in capsys.readouterr().err
    cols = ["--image-column", "img_file", "--caption-column", "sentence_text"]
    assert main(["eval", "--model", MODEL, "--data", str(table), *cols, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["n_images"], r["n_texts"]) == (3, 6)


def test_eval_json_into_a_new_folder_creates_it(tmp_path, capsys) -> None:
    table = _colour_table(tmp_path)
    out = tmp_path / "out" / "sub" / "r.json"
    cols = ["--image-column", "img_file", "--caption-column", "sentence_text"]
    assert main(["eval", "--model", MODEL, "--data", str(table), *cols, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["n_images"] == 3
    assert "text->image" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["afile/r.json", "afile/sub/r.json", "folder"])
def test_eval_json_that_cannot_be_written_is_refused_before_any_work(
    tmp_path, where, monkeypatch, capsys
) -> None:
    import lexlens.eval.protocol as protocol

    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()

    def no_work(*a, **k):
        raise AssertionError("the evaluation started")

    monkeypatch.setattr(protocol, "load_eval_set", no_work)
    monkeypatch.setattr(protocol, "evaluate", no_work)
    argv = ["eval", "--model", MODEL, "--data", str(tmp_path), "--json", str(tmp_path / where)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lexlens: error: "), err
    assert "is not a folder" in err[0] or "is a folder; give a file name" in err[0]
