"""The CLI: one main(argv); errors are one line, exit codes non-zero."""

import json

from lexlens.cli import main


def test_models_json_lists_every_backend(capsys):
    assert main(["models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"native", "openclip", "hf"} <= set(out)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out.lower()
