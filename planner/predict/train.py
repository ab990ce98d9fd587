"""Train the dose network on OpenKBP data, resumably, with validation scores per epoch.

Loss per patient (on a random crop, mirrored at random, see :func:`planner.predict.data.augment`):
the mean absolute dose error over the possible-dose mask (the challenge's dose score) plus
``dvh_weight`` times the mean over ROIs of the mean absolute difference between the sorted
predicted and sorted reference doses in the ROI. Sorted doses are the DVH read sideways (dose at
each volume fraction), so this term is the area between the two DVHs (the 1-Wasserstein distance
of the dose distributions): it is zero exactly when every D_x of the ROI agrees, the DVH score's
D99/D95/D1/D0.1cc/Dmean included, and it is differentiable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from planner.errors import InputError
from planner.io._atomic import write_file_atomic
from planner.predict.data import (
    CHANNELS,
    Case,
    augment,
    load_case,
    patient_folders,
    prepare_cache,
)
from planner.predict.infer import load_model, predict_inputs, save_model, torch_device
from planner.predict.metrics import PatientScores, overall_scores, score_patient
from planner.predict.model import DoseUNet

CHECKPOINT = "checkpoint.pt"
BEST_MODEL = "model.pt"


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does (saved in its checkpoint; a resumed run keeps it).

    epochs : total epochs (a resumed run continues up to this number)
    base_channels, levels : network size (:class:`DoseUNet`)
    learning_rate : Adam step size at the start
    lr_schedule : "cosine" (the step size falls along half a cosine from ``learning_rate`` to 1 %
        of it at ``epochs``; a resumed run with a new ``epochs`` follows the new curve from where
        it is) or "constant"
    crop : side of the random training cubes (a multiple of 2 ** levels), None for whole volumes
    dvh_weight : weight of the DVH term of the loss (module docstring)
    seed : seeds torch, numpy and Python's random (weights, patient order, augmentation); on the
        CPU a run is bit-reproducible, on CUDA cuDNN is set deterministic but some torch kernels
        (e.g. the sort's backward) may still differ in the last bits
    limit_train, limit_val : use only the first N patients of each split (None: all)
    """

    epochs: int = 100
    base_channels: int = 16
    levels: int = 5
    learning_rate: float = 5e-4
    lr_schedule: str = "cosine"
    crop: int | None = 96
    dvh_weight: float = 1.0
    seed: int = 0
    limit_train: int | None = None
    limit_val: int | None = None


def dvh_aware_loss(predicted: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
                   rois: list[torch.Tensor], dvh_weight: float) -> torch.Tensor:
    """Masked L1 plus ``dvh_weight`` times the mean sorted-dose L1 over non-empty ROIs (Gy).

    Parameters
    ----------
    predicted, reference : (D, H, W) float tensors, Gy
    mask : (D, H, W) bool tensor (possible-dose mask)
    rois : list of (D, H, W) bool tensors
    dvh_weight : float
    """
    loss = (predicted[mask] - reference[mask]).abs().mean()
    terms = [(torch.sort(predicted[roi]).values - torch.sort(reference[roi]).values).abs().mean()
             for roi in rois if bool(roi.any())]
    if terms and dvh_weight:
        loss = loss + dvh_weight * torch.stack(terms).mean()
    return loss


def learning_rate_at(config: TrainConfig, epoch: int) -> float:
    """Adam's step size for the 0-based ``epoch`` under ``config.lr_schedule``."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    floor = 0.01 * config.learning_rate
    cosine = 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    return floor + (config.learning_rate - floor) * cosine


def hardware(device: torch.device) -> str:
    """What trains: the GPU's name, or the CPU's model and torch's thread count."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"cpu: {cpu}, {torch.get_num_threads()} torch thread(s)"


def _rng_state(rng: np.random.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state,
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def score_cases(model: DoseUNet, cases: list[Case]) -> list[PatientScores]:
    """The challenge's scores of the model's single-pass predictions on whole cached patients
    (a sixth of the cost of the view average :func:`predict_inputs` makes by default, which
    scores better; per-epoch scores only rank the epochs)."""
    model.eval()
    scores = []
    for case in cases:
        predicted = predict_inputs(model, case.inputs(), average_views=False).cpu().numpy()
        scores.append(score_patient(case.name, case.dose_gy, predicted, case.possible_dose_mask,
                                    case.rois, case.targets, case.voxel_volume_mm3))
    return scores


def _train_step(model: DoseUNet, optimiser: torch.optim.Optimizer, case: Case,
                device: torch.device, dvh_weight: float) -> float:
    model.train()
    x = torch.from_numpy(case.inputs()).to(device)[None]
    reference = torch.from_numpy(case.dose_gy).to(device)
    mask = torch.from_numpy(case.possible_dose_mask).to(device)
    if not bool(mask.any()):
        return float("nan")  # a crop with no dose voxels teaches nothing
    rois = [torch.from_numpy(m).to(device) for m in case.rois.values()]
    loss = dvh_aware_loss(model(x)[0, 0], reference, mask, rois, dvh_weight)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def train(train_dir: Path, val_dir: Path, out_dir: Path, config: TrainConfig, *,
          cache_dir: Path, device: str = "auto", resume: bool = False, overwrite: bool = False,
          initial_model: Path | None = None,
          progress: Callable[[str], None] = print) -> list[dict]:
    """Train (or resume training) a :class:`DoseUNet`; returns the per-epoch history.

    After each epoch ``out_dir/checkpoint.pt`` holds model, optimiser, epoch, history, config
    and every random-number state, so ``resume=True`` continues exactly where it stopped; the
    best model so far by validation dose score is ``out_dir/model.pt`` with its JSON card.
    ``initial_model`` (a saved single network of the configured size) starts a new run from its
    weights with a fresh optimiser: to fine-tune, e.g. on whole volumes after training on crops.

    Raises
    ------
    InputError
        ``out_dir`` already holds a checkpoint and neither ``resume`` nor ``overwrite`` is set;
        or ``resume`` without a checkpoint; or ``initial_model`` with ``resume``, or not a single
        network of the configured size; or unreadable data.
    """
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists() and not (resume or overwrite):
        raise InputError(f"{checkpoint_path}: already exists (use --resume to continue it or "
                         f"--force to start again)")
    if resume and not checkpoint_path.exists():
        raise InputError(f"{checkpoint_path}: no checkpoint to resume")
    if resume and initial_model is not None:
        raise InputError(f"{initial_model}: a resumed run continues its checkpoint's weights; "
                         f"initial weights start a new run")
    saved = None
    if resume:
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        config = dataclasses.replace(TrainConfig(**saved["config"]), epochs=config.epochs)
    if config.lr_schedule not in ("cosine", "constant"):
        raise InputError(f"lr_schedule: must be 'cosine' or 'constant', got {config.lr_schedule!r}")
    if config.crop is not None and config.crop % 2**config.levels:
        raise InputError(f"--crop: must be a multiple of {2**config.levels} (2 ** levels), "
                         f"got {config.crop}")
    torch_dev = torch_device(device)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if torch_dev.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    train_folders = patient_folders(train_dir)[: config.limit_train]
    val_folders = patient_folders(val_dir)[: config.limit_val]
    train_paths = prepare_cache(train_folders, cache_dir, progress)
    val_cases = [load_case(p) for p in prepare_cache(val_folders, cache_dir, progress)]

    model = DoseUNet(len(CHANNELS), config.base_channels, config.levels).to(torch_dev)
    initial = None
    if initial_model is not None:
        loaded = load_model(initial_model)
        if not isinstance(loaded, DoseUNet) or loaded.config() != model.config():
            raise InputError(f"{initial_model}: not a single network of this run's size "
                             f"({model.config()})")
        model.load_state_dict(loaded.state_dict())
        initial = {"file": Path(initial_model).name,
                   "sha256": hashlib.sha256(Path(initial_model).read_bytes()).hexdigest()}
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    history: list[dict] = []
    start_epoch = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        history = saved["history"]
        start_epoch = saved["epoch"]
        initial = saved.get("initial_weights")
        _set_rng_state(saved["rng"], rng)
        progress(f"resuming {checkpoint_path} after epoch {start_epoch}")
    out_dir.mkdir(parents=True, exist_ok=True)
    best = min((h["val_dose_score_gy"] for h in history), default=float("inf"))

    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        learning_rate = learning_rate_at(config, epoch)
        for group in optimiser.param_groups:
            group["lr"] = learning_rate
        losses = []
        for index in rng.permutation(len(train_paths)):
            case = augment(load_case(train_paths[index]), rng, config.crop)
            losses.append(_train_step(model, optimiser, case, torch_dev, config.dvh_weight))
        train_s = time.perf_counter() - began
        scores = score_cases(model, val_cases)
        val_dose, val_dvh = overall_scores(scores)
        record = {"epoch": epoch + 1, "train_loss_gy": float(np.nanmean(losses)),
                  "val_dose_score_gy": val_dose, "val_dvh_score_gy": val_dvh,
                  "learning_rate": learning_rate, "train_s": train_s,
                  "epoch_s": time.perf_counter() - began}
        history.append(record)
        progress(f"epoch {epoch + 1}/{config.epochs}  loss {record['train_loss_gy']:.3f} Gy  "
                 f"validation dose score {val_dose:.3f} Gy  DVH score {val_dvh:.3f} Gy  "
                 f"({record['epoch_s']:.0f} s)")
        if val_dose < best:
            best = val_dose
            card = {
                "data": {"train": [f.name for f in train_folders],
                         "validation": [f.name for f in val_folders],
                         "source": f"OpenKBP provided-data {Path(train_dir).name} and "
                                   f"{Path(val_dir).name} (Babier et al., Med Phys 48:5549, "
                                   f"2021)"},
                "epochs": epoch + 1,
                "scores": {"validation": {"dose_score_gy": val_dose, "dvh_score_gy": val_dvh,
                                          "patients": len(val_cases)}},
                "train_config": dataclasses.asdict(config),
                "initial_weights": initial,
                "device": torch_dev.type,
                "hardware": hardware(torch_dev),
                "training_s": sum(h["epoch_s"] for h in history),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            }
            save_model(model, out_dir / BEST_MODEL, card, overwrite=True)
        state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                 "epoch": epoch + 1, "history": history, "config": dataclasses.asdict(config),
                 "rng": _rng_state(rng),
                 "initial_weights": initial}
        write_file_atomic(checkpoint_path, lambda tmp: torch.save(state, tmp), overwrite=True)
    write_file_atomic(out_dir / "history.json",
                      lambda tmp: tmp.write_text(json.dumps(history, indent=2) + "\n"),
                      overwrite=True)
    return history
