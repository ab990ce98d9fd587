"""``planner evaluate-prediction DATA_DIR``: OpenKBP dose and DVH scores, per patient and overall.

torch is imported only when the network is used.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from planner.cli.train import add_threads_option, set_threads
from planner.errors import InputError
from planner.io._atomic import write_file_atomic
from planner.io.openkbp import read_openkbp_case, read_openkbp_dose
from planner.predict.data import patient_folders
from planner.predict.metrics import PatientScores, overall_scores, score_patient


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate-prediction", help="score predicted doses with the OpenKBP challenge's metrics",
        description="Score dose predictions against the reference doses of an OpenKBP-format "
                    "folder (a split folder of pt_* patients, or one patient folder) with the "
                    "challenge's dose score and DVH score. Predictions come from --predictions "
                    "(challenge submission files pt_N.csv) or, by default, from the network "
                    "(--model, default the shipped weights).")
    parser.add_argument("data_dir", metavar="DATA_DIR", type=Path)
    parser.add_argument("--predictions", type=Path, default=None,
                        help="folder of predicted doses pt_N.csv[.gz] (or pt_N/dose.csv[.gz])")
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="model weights (default: data/models/openkbp_unet.pt); given more "
                             "than once, the mean of their doses (an ensemble) is scored")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_threads_option(parser)
    parser.add_argument("--csv", type=Path, default=None, help="also write per-patient scores here")
    parser.add_argument("--force", action="store_true", help="overwrite --csv")
    parser.set_defaults(run=run)


def _prediction_file(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.csv", folder / f"{name}.csv.gz",
                      folder / name / "dose.csv", folder / name / "dose.csv.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder / (name + '.csv')}: missing (no prediction for {name})")


def run(args: argparse.Namespace) -> int:
    folders = patient_folders(args.data_dir)
    if args.csv is not None and args.csv.exists() and not args.force:
        raise InputError(f"{args.csv}: already exists (use --force to overwrite)")
    model = None
    if args.predictions is None:
        from planner.predict.infer import load_model, predict_dose, torch_device
        from planner.predict.model import DoseEnsemble

        set_threads(args.threads)
        device = torch_device(args.device)
        models = [load_model(path, device) for path in args.model or [None]]
        model = models[0] if len(models) == 1 else DoseEnsemble(models)
    scores: list[PatientScores] = []
    print(f"{'patient':<12} {'dose score (Gy)':>15} {'DVH score (Gy)':>14}")
    for folder in folders:
        patient, reference = read_openkbp_case(
            folder, needed_for="no reference dose to score against")
        if model is None:
            predicted = read_openkbp_dose(_prediction_file(args.predictions, folder.name))
        else:
            predicted = predict_dose(patient, model).dose_gy
        s = score_patient(folder.name, reference, predicted, patient.possible_dose_mask,
                          {st.name: st.mask for st in patient.structures},
                          [st.name for st in patient.targets()], patient.grid.voxel_volume_cc * 1e3)
        scores.append(s)
        print(f"{s.name:<12} {s.dose_score_gy:15.3f} {s.dvh_score_gy:14.3f}", flush=True)
    dose, dvh = overall_scores(scores)
    print(f"{'overall':<12} {dose:15.3f} {dvh:14.3f}  ({len(scores)} patients; DVH score pooled "
          f"over all patient, ROI and metric errors)")
    if args.csv is not None:
        text = io.StringIO()
        text.write("patient,dose_score_gy,dvh_score_gy\n")
        for s in scores:
            text.write(f"{s.name},{s.dose_score_gy:.6f},{s.dvh_score_gy:.6f}\n")
        text.write(f"overall,{dose:.6f},{dvh:.6f}\n")
        write_file_atomic(args.csv, lambda tmp: tmp.write_text(text.getvalue()),
                          overwrite=args.force)
    return 0
