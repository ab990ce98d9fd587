"""OpenKBP import, training-step and inference timings of the dose-prediction network.

Measures, on this machine (note what else runs: the numbers scale with free cores):

1. ``read_openkbp_patient`` + ``read_openkbp_dose`` over the first patients of train-pats;
2. seconds per training step (forward, backward, Adam) of the default network (16 channels,
   5 levels) on 96^3 crops (the default) and on whole 128^3 volumes, and the implied epoch time
   (80 training steps + 15 validation predictions);
3. ``predict_dose`` per patient: an OpenKBP patient on its own grid, and the same anatomy on
   another grid (resampled to the network grid and back), on the CPU and, if torch sees one, on a
   CUDA GPU.

Training timings use random weights (timings do not depend on them), ``predict_dose`` the
shipped ones (their number of members does). Nothing is written.

Run: ``.venv/bin/python benchmarks/bench_predict.py [OPENKBP_PROVIDED_DATA] [--threads N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch

from dose.grid import Grid
from planner.io.openkbp import read_openkbp_dose, read_openkbp_patient
from planner.predict.data import CHANNELS, augment, load_case, patient_folders, prepare_cache
from planner.predict.infer import load_model, predict_dose, predict_inputs
from planner.predict.model import DoseUNet
from planner.predict.train import TrainConfig, _train_step

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "openkbp" / "provided-data"


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU threads, "
          f"load average {os.getloadavg()[0]:.1f}")

    folders = patient_folders(args.data / "train-pats")[:5]
    times = []
    for folder in folders:
        start = time.perf_counter()
        read_openkbp_patient(folder)
        read_openkbp_dose(folder)
        times.append(time.perf_counter() - start)
    print(f"import (patient + dose), {len(folders)} patients: median {np.median(times):.2f} s, "
          f"max {max(times):.2f} s")

    cache = Path(os.environ.get("TMPDIR", "/tmp")) / "planner_bench_predict_cache"
    case = load_case(prepare_cache(folders[:1], cache)[0])
    config = TrainConfig()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for crop in (config.crop, None):
        model = DoseUNet(len(CHANNELS), config.base_channels, config.levels)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        step = _median_time(lambda: _train_step(model, optimiser, augment(case, rng, crop),
                                                torch.device("cpu"), config.dvh_weight),
                            args.steps)
        model.eval()
        predict = _median_time(
            lambda: predict_inputs(model, case.inputs(), average_views=False), 2)
        print(f"train step, crop {crop or 128}^3: {step:.2f} s; validation prediction "
              f"{predict:.2f} s; epoch (80 steps + 15 predictions) about "
              f"{(80 * step + 15 * predict) / 60:.1f} min")
    params = sum(p.numel() for p in model.parameters())
    print(f"network: {params / 1e6:.2f} M parameters ({params * 4 / 1e6:.1f} MB float32)")

    patient = read_openkbp_patient(folders[0])
    window = (slice(16, 112),) * 3
    sub = Grid(tuple(patient.grid.index_to_position_mm(np.array([16, 16, 16]))),
               patient.grid.spacing_mm, (96, 96, 96))
    moved = dataclasses.replace(
        patient, grid=sub, hu=patient.hu[window], density=patient.density[window],
        structures=tuple(dataclasses.replace(s, mask=s.mask[window]) for s in patient.structures),
        possible_dose_mask=None)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        model = load_model(device=device)  # the shipped weights: one network or an ensemble
        predict_dose(patient, model)  # warm-up (CUDA context, allocator)
        own = _median_time(lambda: predict_dose(patient, model), 3)
        other = _median_time(lambda: predict_dose(moved, model), 3)
        print(f"predict_dose on {device} ({type(model).__name__}): OpenKBP grid {own:.2f} s, other grid (resampled) "
              f"{other:.2f} s per patient")


if __name__ == "__main__":
    main()
