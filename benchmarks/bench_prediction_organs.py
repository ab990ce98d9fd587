"""How much the dose prediction loses when only one organ is contoured.

For each OpenKBP patient of a split: the shipped network's prediction (the default 6-view
average) from all its organs, and from its targets and one organ alone (the spinal cord: the
other organs' input channels empty, as :mod:`planner.predict.scope` allows). Both are scored
against the reference dose on all the patient's ROIs (the challenge's dose and DVH scores).

Run: ``.venv/bin/python benchmarks/bench_prediction_organs.py [SPLIT_DIR] [--threads N]``
(default ``../shared/openkbp/provided-data/validation-pats``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from planner.io.openkbp import read_openkbp_case
from planner.predict.data import patient_folders
from planner.predict.infer import load_model, predict_dose
from planner.predict.metrics import overall_scores, score_patient

DATA = (Path(__file__).resolve().parent.parent.parent / "shared" / "openkbp" / "provided-data"
        / "validation-pats")
KEPT_ORGAN = "SpinalCord"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("split", nargs="?", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model()
    scores: dict[str, list] = {"all organs": [], f"{KEPT_ORGAN} only": []}
    print(f"{'patient':<8} {'organs':>6}  dose score all / one organ (Gy)  DVH score all / one")
    for folder in patient_folders(args.split):
        patient, reference = read_openkbp_case(folder, needed_for="the scores")
        if all(s.name != KEPT_ORGAN for s in patient.structures):
            print(f"{folder.name:<8} no {KEPT_ORGAN}: skipped")
            continue
        one = dataclasses.replace(patient, structures=tuple(
            s for s in patient.structures if s.kind == "target" or s.name == KEPT_ORGAN))
        rois = {s.name: s.mask for s in patient.structures}
        targets = [s.name for s in patient.targets()]
        row = []
        for key, p in zip(scores, (patient, one)):
            s = score_patient(folder.name, reference, predict_dose(p, model).dose_gy,
                              patient.possible_dose_mask, rois, targets,
                              patient.grid.voxel_volume_cc * 1e3)
            scores[key].append(s)
            row.append(s)
        organs = sum(s.kind == "organ" for s in patient.structures)
        print(f"{folder.name:<8} {organs:>6}  {row[0].dose_score_gy:6.3f} / "
              f"{row[1].dose_score_gy:6.3f}                  {row[0].dvh_score_gy:6.3f} / "
              f"{row[1].dvh_score_gy:6.3f}", flush=True)
    for key, rows in scores.items():
        dose, dvh = overall_scores(rows)
        print(f"{key:<16} dose score {dose:.3f} Gy, DVH score {dvh:.3f} Gy ({len(rows)} patients)")
    change = [b.dose_score_gy - a.dose_score_gy for a, b in zip(*scores.values())]
    print(f"dose score, one organ less all organs, per patient: median {np.median(change):+.3f} "
          f"Gy, max {max(change):+.3f} Gy")


if __name__ == "__main__":
    main()
