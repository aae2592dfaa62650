"""Training never overwrites, never resumes another run, refuses unusable settings, stops when
the loss stops being a number, and saves a checkpoint on Ctrl-C that --resume continues exactly."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest
import torch
from train_helpers import assert_same_weights

from lexlens.cli import main
from lexlens.errors import TrainingError, TrainingInterrupted, UsageError
from lexlens.models.native import build_native
from lexlens.train.api import check_output_folder
from lexlens.train.data import pairs_from_scenes
from lexlens.train.loop import TrainConfig, train

TINY = TrainConfig(epochs=2, batch_size=16, lr=3e-3, warmup_steps=2, hard_negatives=1,
                   checkpoint_every=0, log_every=0, threads=1)  # fmt: skip


@pytest.fixture(scope="module")
def pairs():
    return pairs_from_scenes(48, seed=6, image_size=32, workers=1, progress=False)


def _fresh(data):
    torch.manual_seed(0)
    return build_native("tiny", texts=[c for caps in data.captions for c in caps])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"epochs": 0}, "--epochs"),
        ({"epochs": -2}, "--epochs"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": -1.0}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"lr": float("inf")}, "--lr"),
        ({"hard_negatives": -1}, "--hard-negatives"),
        ({"threads": -1}, "--threads"),
        ({"batch_size": 0}, "--batch-size"),
        ({"seed": -3}, "--seed"),
        ({"w_lexical": float("nan")}, "w_lexical"),
        ({"objective": "nope"}, "unknown objective"),
    ],
)
def test_unusable_settings_are_refused_before_anything_is_written(pairs, tmp_path, change, named):
    with pytest.raises(UsageError, match=named):
        train(_fresh(pairs), pairs, replace(TINY, **change), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_output_folder_rules(tmp_path) -> None:
    check_output_folder(tmp_path / "new", resume=False, force=False)
    check_output_folder(tmp_path, resume=False, force=False)  # empty
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_output_folder(tmp_path / "f", resume=False, force=True)
    data = tmp_path / "data"
    data.mkdir()
    (data / "captions.jsonl").write_text("{}\n")
    for force in (False, True):
        with pytest.raises(UsageError, match="holds no model"):
            check_output_folder(data, resume=False, force=force)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(UsageError, match="--resume.*--force"):
        check_output_folder(run, resume=False, force=False)
    check_output_folder(run, resume=True, force=False)
    check_output_folder(run, resume=False, force=True)


def test_cli_train_does_not_overwrite_a_model(tmp_path, capsys) -> None:
    from lexlens.data.scenes import generate_scenes

    generate_scenes(tmp_path / "d", n=24, seed=3, size=32, workers=1, progress=False)
    args = ["train", "--data", str(tmp_path / "d"), "--config", "tiny", "--out",
            str(tmp_path / "m"), "--epochs", "1", "--batch-size", "8", "--json"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    saved = (tmp_path / "m" / "model.safetensors").read_bytes()
    assert main([*args, "--seed", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a model" in err[0]
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == saved
    assert main([*args, "--seed", "4", "--force"]) == 0
    assert (tmp_path / "m" / "model.safetensors").read_bytes() != saved


def test_resume_refuses_another_runs_checkpoint(pairs, tmp_path) -> None:
    train(_fresh(pairs), pairs, replace(TINY, stop_after=1), tmp_path / "r", progress=False)
    with pytest.raises(UsageError, match="epochs 2 -> 5"):
        train(_fresh(pairs), pairs, replace(TINY, epochs=5), tmp_path / "r", resume=True,
              progress=False)  # fmt: skip
    other = pairs.subset(range(40))
    with pytest.raises(UsageError, match=r"\(48 pairs\) -> .*\(40 pairs\)"):
        train(_fresh(other), other, TINY, tmp_path / "r", resume=True, progress=False)
    torch.manual_seed(0)
    bigger = build_native("tiny", texts=["a completely different vocabulary of words"])
    with pytest.raises(UsageError, match="another model"):
        train(bigger, pairs, TINY, tmp_path / "r", resume=True, progress=False)
    s = train(_fresh(pairs), pairs, replace(TINY, threads=2), tmp_path / "r", resume=True,
              progress=False)  # fmt: skip
    assert s["steps"] == 2 * (48 // 16)  # threads may change: it is how the run runs


def test_a_loss_that_is_not_a_number_stops_training(pairs, tmp_path, monkeypatch) -> None:
    import lexlens.train.loop as loop

    real = loop._step

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        return {**out, "dense": out["dense"] * float("nan")}

    monkeypatch.setattr(loop, "_step", poisoned)
    with pytest.raises(TrainingError, match="diverged at step 1"):
        train(_fresh(pairs), pairs, TINY, tmp_path / "n", progress=False)
    assert not (tmp_path / "n" / "model.safetensors").exists()


def test_ctrl_c_saves_a_checkpoint_that_resume_continues_exactly(pairs, tmp_path) -> None:
    cfg = replace(TINY, log_every=1)
    full = _fresh(pairs)
    train(full, pairs, cfg, tmp_path / "full", progress=False)

    def press_ctrl_c(line: str) -> None:
        if line.startswith("step 2/"):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="interrupted at step 2 of 6.*--resume"):
        train(_fresh(pairs), pairs, cfg, tmp_path / "cut", progress=False, log=press_ctrl_c)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    again = _fresh(pairs)
    s = train(again, pairs, cfg, tmp_path / "cut", resume=True, progress=False)
    assert s["steps"] == 6
    assert_same_weights(full, again)


def test_lexical_heads_on_a_fresh_config_is_refused_before_reading_data(tmp_path, capsys):
    argv = ["train", "--data", str(tmp_path / "no-such-data"), "--config", "tiny"]
    assert main([*argv, "--objective", "lexical-heads", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lexical-heads" in err[0] and "--model" in err[0]
    assert not (tmp_path / "m").exists()
