"""``planner optimize PATIENT --dij DIJ.npz --protocol P --out DIR``: automatic fluence plan.

Writes into DIR (created complete or not at all): ``fluence.npz`` (``x``, one weight per Dij
column), ``dose.npz`` (``dose_gy`` on the patient grid with ``origin_mm`` and ``spacing_mm``,
[z, y, x]) and ``goals.csv`` (the goal table); the goal table and what stopped the optimiser are
also printed (and written as JSON with ``--json FILE``).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from dose._xp import resolve_device
from planner.errors import InputError
from planner.io import load_patient
from planner.cli._numbers import positive
from planner.cli._output import add_json_option, add_out_option, check_outputs, write_json
from planner.io._atomic import atomic_directory
from planner.optimize import PatientPlan, optimise_patient
from planner.protocol import read_protocol


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "optimize", help="optimise beamlet fluences to a protocol's goals (automatic planning)",
        description="Automatic fluence-map optimisation: from a patient, its dose-influence "
                    "matrix and a protocol, reach the protocol's goals in prioritised steps "
                    "(coverage, hard goals, organ sparing) and write the fluence, the planned "
                    "dose and the goal table into DIR.")
    parser.add_argument("patient", metavar="PATIENT",
                        help="example:cshape|water|slab, a matRad .mat file, an OpenKBP patient "
                             "folder or a DICOM folder")
    parser.add_argument("--dij", type=Path, required=True,
                        help="dose-influence matrix, scipy.sparse .npz (rows: the patient grid's "
                             "voxels in C order of [z, y, x]; columns: beamlets; Gy per unit)")
    parser.add_argument("--protocol", required=True,
                        help="protocol TOML file, or a bundled one: tg119_c_shape, "
                             "head_and_neck, prostate")
    parser.add_argument("--time-limit", type=positive, default=None, metavar="S",
                        help="wall-time budget of the optimisation, seconds")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the Dij products run (default: CUDA when cupy finds a GPU)")
    add_out_option(parser, "fluence.npz, dose.npz and goals.csv")
    add_json_option(parser)
    parser.set_defaults(run=run)


def read_dij(path: Path, n_voxels: int) -> scipy.sparse.csr_matrix:
    """Read a scipy.sparse ``.npz`` Dij as float32 CSR; InputError naming the file otherwise."""
    try:
        D = scipy.sparse.load_npz(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{path}: not a scipy.sparse .npz matrix ({error})") from None
    if D.shape[0] != n_voxels:
        raise InputError(f"{path}: Dij has {D.shape[0]} rows, the patient grid {n_voxels} voxels")
    return D.tocsr().astype(np.float32)


def run(args: argparse.Namespace) -> int:
    check_outputs(args)
    try:
        device = resolve_device(args.device)
    except RuntimeError as error:  # --device cuda without a usable GPU: a bad option
        raise InputError(f"--device {args.device}: {error}") from None
    protocol = read_protocol(args.protocol)
    patient = load_patient(args.patient)
    D = read_dij(args.dij, patient.grid.size)
    if device == "cuda":
        import cupyx.scipy.sparse

        D = cupyx.scipy.sparse.csr_matrix(D)
    plan = optimise_patient(patient, D, protocol, time_limit_s=args.time_limit)
    with atomic_directory(args.out, overwrite=args.force) as tmp:
        write_plan(plan, patient.grid.origin_mm, patient.grid.spacing_mm, tmp)
    print(goal_table(plan))
    print(f"wrote fluence.npz, dose.npz and goals.csv to {args.out}")
    write_json(args, results_json(plan))
    return 0


def write_plan(plan: PatientPlan, origin_mm: tuple, spacing_mm: tuple, folder: Path) -> None:
    """The three output files of ``planner optimize`` into ``folder``."""
    np.savez(folder / "fluence.npz", x=plan.result.x)
    np.savez_compressed(folder / "dose.npz", dose_gy=plan.dose_gy,
                        origin_mm=np.asarray(origin_mm), spacing_mm=np.asarray(spacing_mm))
    with open(folder / "goals.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["goal", "priority", "value", "limit", "unit", "met", "margin"])
        for r in plan.result.goals:
            writer.writerow([r.label, "hard" if r.hard else "soft", f"{r.value:.4f}",
                             f"{r.limit:.4f}", r.unit, "yes" if r.met else "no",
                             f"{r.margin:.4f}"])


def results_json(plan: PatientPlan) -> dict[str, Any]:
    """What :func:`goal_table` prints, as plain data for JSON (a goal without a limit: null)."""
    def number(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    result = plan.result
    return {"goals": [{"goal": r.label, "priority": "hard" if r.hard else "soft",
                       "value": number(r.value), "limit": number(r.limit), "unit": r.unit,
                       "met": bool(r.met), "margin": number(r.margin)} for r in result.goals],
            "iterations": result.iterations, "steps": len(result.steps),
            "elapsed_s": result.elapsed_s, "stopped_by": result.stopped_by,
            "structures_not_in_protocol": list(plan.mapping.unmapped),
            "protocol_structures_missing": list(plan.mapping.missing)}


def goal_table(plan: PatientPlan) -> str:
    """The goal table as text, then the steps' totals and what stopped progress."""
    result = plan.result
    width = max(len(r.label) for r in result.goals) if result.goals else 4
    lines = [f"{'goal':<{width}}  {'prio':<4}  {'value':>9}  {'limit':>9}  met  {'margin':>9}"]
    for r in result.goals:
        scale, unit = (100.0, "%") if r.unit == "fraction" else (1.0, r.unit)
        lines.append(f"{r.label:<{width}}  {'hard' if r.hard else 'soft':<4}  "
                     f"{r.value * scale:7.2f}{unit:>2}  {r.limit * scale:7.2f}{unit:>2}  "
                     f"{'yes' if r.met else 'NO ':<3}  {r.margin * scale:+7.2f}{unit:>2}")
    met = sum(r.met for r in result.goals)
    lines.append(f"{met} of {len(result.goals)} goals met; {result.iterations} iterations in "
                 f"{len(result.steps)} steps, {result.elapsed_s:.1f} s; stopped: {result.stopped_by}")
    if plan.mapping.unmapped:
        lines.append(f"structures not in the protocol: {', '.join(plan.mapping.unmapped)}")
    if plan.mapping.missing:
        lines.append(f"optional protocol structures missing (goals skipped): "
                     f"{', '.join(plan.mapping.missing)}")
    return "\n".join(lines)
