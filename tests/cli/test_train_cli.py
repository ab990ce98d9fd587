"""``planner train``: a CI-sized run through the command line, refusal to overwrite, resume."""

from __future__ import annotations

import json
from pathlib import Path

from planner.cli.main import main


def test_train_command_runs_and_resumes(openkbp_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    common = ["train", str(openkbp_dir), "--out", str(out), "--cache", str(tmp_path / "cache"),
              "--base-channels", "4", "--levels", "3", "--crop", "64", "--limit-train", "1",
              "--limit-val", "1", "--device", "cpu", "--threads", "1"]
    assert main([*common, "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "epoch 1/1" in text and "validation dose score" in text
    card = json.loads((out / "model.json").read_text())
    assert card["epochs"] == 1 and card["train_config"]["base_channels"] == 4
    assert main([*common, "--epochs", "1"]) == 2
    assert "checkpoint.pt: already exists" in capsys.readouterr().err
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert main(["train", str(tmp_path), "--out", str(out)]) == 2
    assert "train-pats: no such folder" in capsys.readouterr().err
