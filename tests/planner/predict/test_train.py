"""Training: the DVH-aware loss on hand values, a CI-sized run lowering the error, exact resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from planner.errors import InputError
from planner.predict.data import CHANNELS, Case, augment, load_case, patient_folders, prepare_cache
from planner.predict.model import DoseUNet
from planner.predict.train import (
    TrainConfig,
    dvh_aware_loss,
    learning_rate_at,
    score_cases,
    train,
)
from planner.predict.metrics import overall_scores


def test_loss_hand_values():
    """Prediction = reference + 1 Gy on the mask: L1 = 1, each sorted-ROI term = 1 -> 1 + w.
    A permutation of the doses inside the ROI keeps its DVH: the DVH term is 0, the L1 is not."""
    reference = torch.arange(8.0).reshape(2, 2, 2)
    mask = torch.ones(2, 2, 2, dtype=torch.bool)
    roi = torch.zeros(2, 2, 2, dtype=torch.bool)
    roi[0] = True
    assert float(dvh_aware_loss(reference + 1, reference, mask, [roi], 0.5)) == pytest.approx(1.5)
    permuted = reference.clone()
    permuted[0] = reference[0].flip(0).flip(1)  # 0,1,2,3 -> 3,2,1,0 inside the ROI
    l1 = float((permuted - reference).abs().mean())  # (3+1+1+3)/8 = 1
    assert l1 == pytest.approx(1.0)
    assert float(dvh_aware_loss(permuted, reference, mask, [roi], 5.0)) == pytest.approx(l1)
    empty = torch.zeros_like(roi)
    assert float(dvh_aware_loss(reference + 2, reference, mask, [empty], 1.0)) == pytest.approx(2)


def test_cosine_schedule_end_points():
    """Full rate at epoch 0, half-way between rate and floor at the middle, 1 % at the end."""
    config = TrainConfig(epochs=10, learning_rate=1e-3)
    assert learning_rate_at(config, 0) == pytest.approx(1e-3)
    assert learning_rate_at(config, 5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate_at(config, 10) == pytest.approx(1e-5)
    rates = [learning_rate_at(config, e) for e in range(11)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    constant = dataclasses.replace(config, lr_schedule="constant")
    assert {learning_rate_at(constant, e) for e in range(11)} == {1e-3}


def _case() -> Case:
    shape = (32, 32, 32)
    left = np.zeros(shape, bool)
    left[..., 28:] = True  # +x is patient left
    dose = np.where(left, 1.0, 0.0).astype(np.float32)
    return Case("c", np.zeros(shape, np.float32), dose, np.ones(shape, bool),
                {"LeftParotid": left}, 1.0)


def test_augment_mirror_swaps_parotids():
    case = _case()
    assert case.inputs()[CHANNELS.index("LeftParotid")][..., 28:].all()
    mirrored = [augment(case, np.random.default_rng(seed), None) for seed in range(8)]
    flipped = [m for m in mirrored if "RightParotid" in m.rois]
    assert 0 < len(flipped) < 8  # about half of them, for a fixed set of seeds
    m = flipped[0]
    assert m.rois["RightParotid"][..., :4].all() and not m.rois["RightParotid"][..., 4:].any()
    inputs = m.inputs()
    assert inputs[CHANNELS.index("RightParotid")][..., :4].all()
    assert not inputs[CHANNELS.index("LeftParotid")].any()
    assert m.dose_gy[..., :4].all() and not m.dose_gy[..., 4:].any()
    cropped = augment(case, np.random.default_rng(0), 16)
    assert cropped.inputs().shape == (9, 16, 16, 16) and cropped.dose_gy.shape == (16, 16, 16)


def _split(openkbp_dir: Path):
    return openkbp_dir / "train-pats", openkbp_dir / "train-pats"


def test_short_run_lowers_error(openkbp_dir: Path, cache_dir: Path, tmp_path: Path, tiny):
    """6 epochs of 2 steps on 2 patients lower the first one's dose score below that of the same
    network before training (fixed seed 0 of the ``tiny`` fixture; not chosen)."""
    config = dataclasses.replace(tiny, epochs=6)
    train_dir, val_dir = _split(openkbp_dir)
    folders = patient_folders(val_dir)[: config.limit_val]
    cases = [load_case(p) for p in prepare_cache(folders, cache_dir)]
    torch.manual_seed(config.seed)
    untrained = DoseUNet(len(CHANNELS), config.base_channels, config.levels)
    before, _ = overall_scores(score_cases(untrained, cases))
    history = train(train_dir, val_dir, tmp_path / "run", config, cache_dir=cache_dir,
                    device="cpu", progress=lambda line: None)
    assert [h["epoch"] for h in history] == list(range(1, 7))
    after = history[-1]["val_dose_score_gy"]
    assert after < 0.8 * before, (before, [h["val_dose_score_gy"] for h in history])
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    best = min(history, key=lambda h: h["val_dose_score_gy"])
    assert card["epochs"] == best["epoch"]
    assert card["scores"]["validation"]["dose_score_gy"] == best["val_dose_score_gy"]
    weights = (tmp_path / "run" / "model.pt").read_bytes()
    assert card["sha256"] == hashlib.sha256(weights).hexdigest()
    # patients by split and ID, never a machine path; what trained, for how long
    assert card["data"]["train"] == [f.name for f in patient_folders(train_dir)[:2]]
    assert card["data"]["validation"] == [folders[0].name]
    assert "/" not in json.dumps(card["data"]) + json.dumps(card["initial_weights"])
    assert card["hardware"].startswith("cpu: ") and card["training_s"] > 0


def test_resume_continues_exactly(openkbp_dir: Path, cache_dir: Path, tmp_path: Path, tiny):
    """2 epochs in one go == 1 epoch, stop, resume to 2 (model, optimiser and RNG states saved)."""
    train_dir, val_dir = _split(openkbp_dir)
    quiet = {"cache_dir": cache_dir, "device": "cpu", "progress": lambda line: None}
    straight = train(train_dir, val_dir, tmp_path / "a", tiny, **quiet)
    train(train_dir, val_dir, tmp_path / "b", dataclasses.replace(tiny, epochs=1), **quiet)
    resumed = train(train_dir, val_dir, tmp_path / "b", tiny, resume=True, **quiet)
    assert [h["train_loss_gy"] for h in resumed] == [h["train_loss_gy"] for h in straight]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match=r"checkpoint\.pt: already exists"):
        train(train_dir, val_dir, tmp_path / "b", tiny, **quiet)
    with pytest.raises(InputError, match=r"checkpoint\.pt: no checkpoint to resume"):
        train(train_dir, val_dir, tmp_path / "c", tiny, resume=True, **quiet)


def test_bad_crop(openkbp_dir: Path, cache_dir: Path, tmp_path: Path):
    with pytest.raises(InputError, match=r"--crop: must be a multiple of 32 \(2 \*\* levels\), "
                                         r"got 48"):
        train(*_split(openkbp_dir), tmp_path, TrainConfig(crop=48), cache_dir=cache_dir)


def test_initial_weights_start_a_new_run(openkbp_dir: Path, cache_dir: Path, tmp_path: Path,
                                         tiny):
    """A run from a trained model's weights at learning rate 0 scores exactly what that model
    scored; its card names the weights. Weights of another size, or with --resume, are refused."""
    train_dir, val_dir = _split(openkbp_dir)
    quiet = {"cache_dir": cache_dir, "device": "cpu", "progress": lambda line: None}
    first = train(train_dir, val_dir, tmp_path / "a", tiny, **quiet)
    weights = tmp_path / "a" / "model.pt"
    frozen = dataclasses.replace(tiny, epochs=1, learning_rate=0.0, lr_schedule="constant",
                                 seed=tiny.seed + 1)
    again = train(train_dir, val_dir, tmp_path / "b", frozen, initial_model=weights, **quiet)
    assert again[0]["val_dose_score_gy"] == min(h["val_dose_score_gy"] for h in first)
    card = json.loads((tmp_path / "b" / "model.json").read_text())
    assert card["initial_weights"] == {"file": "model.pt",
                                       "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    wider = dataclasses.replace(frozen, base_channels=2 * tiny.base_channels)
    with pytest.raises(InputError, match=r"model\.pt: not a single network of this run's size"):
        train(train_dir, val_dir, tmp_path / "c", wider, initial_model=weights, **quiet)
    with pytest.raises(InputError, match=r"model\.pt: a resumed run continues"):
        train(train_dir, val_dir, tmp_path / "b", frozen, initial_model=weights, resume=True,
              **quiet)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_cuda(openkbp_dir: Path, cache_dir: Path, tmp_path: Path, tiny):
    """The same run on CUDA: it trains, scores, and the card names the GPU."""
    train_dir, val_dir = _split(openkbp_dir)
    history = train(train_dir, val_dir, tmp_path / "run", tiny, cache_dir=cache_dir,
                    device="cuda", progress=lambda line: None)
    assert len(history) == tiny.epochs and np.isfinite(history[-1]["val_dose_score_gy"])
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["device"] == "cuda" and card["hardware"].startswith("cuda: ")
