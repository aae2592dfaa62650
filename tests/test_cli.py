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
