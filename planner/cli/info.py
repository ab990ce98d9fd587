"""``planner info PATIENT``: print the grid, structures and prescriptions of any supported input."""

from __future__ import annotations

import argparse

from planner.io import load_patient
from planner.patient import Patient


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="print a patient's grid, structures and prescriptions",
        description="Print the grid (shape, spacing, origin, extent), the structures (type, "
                    "volume) and the prescriptions of a patient.")
    parser.add_argument("patient", metavar="PATIENT",
                        help="example:cshape|water|slab, a matRad .mat file, an OpenKBP patient "
                             "folder or a DICOM folder (CT + RTSTRUCT)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(summary(load_patient(args.patient)))
    return 0


def summary(patient: Patient) -> str:
    """Human-readable description of ``patient``: grid, structures with volumes, prescriptions.

    Coordinates are given in the grid's (z, y, x) order, mm, DICOM patient coordinates (LPS).
    """
    grid = patient.grid
    low, high = grid.extent_mm()
    lines = [
        f"Patient {patient.name} ({patient.source})",
        "Grid (z, y, x; mm, DICOM patient coordinates LPS)",
        f"  shape    {_triple(grid.shape, 'd')} voxels",
        f"  spacing  {_triple(grid.spacing_mm, '.3f')} mm",
        f"  origin   ({', '.join(f'{v:.2f}' for v in grid.origin_mm)}) mm, centre of voxel "
        f"[0, 0, 0]",
        "  extent   " + ", ".join(f"{axis} {lo:.2f} to {hi:.2f}"
                                  for axis, lo, hi in zip("zyx", low, high)) + " mm",
    ]
    if patient.dicom is not None:
        lines.append(f"DICOM patient ID {patient.dicom.patient_id}, position "
                     f"{patient.dicom.patient_position}")
    width = max([len(s.name) for s in patient.structures] + [len("name")])
    lines.append(f"Structures ({len(patient.structures)})")
    lines.append(f"  {'name':<{width}}  {'type':<8}  {'volume (cc)':>11}")
    for s in patient.structures:
        lines.append(f"  {s.name:<{width}}  {s.kind:<8}  {patient.volume_cc(s.name):11.2f}")
    lines.append(f"Prescriptions ({len(patient.prescriptions)})")
    if not patient.prescriptions:
        lines.append("  none (DICOM CT and RTSTRUCT carry no prescription: the protocol gives it)")
    for rx in patient.prescriptions:
        lines.append(f"  {rx.target}: {rx.dose_gy:g} Gy in {rx.fractions} fractions "
                     f"({rx.dose_per_fraction_gy:g} Gy per fraction)")
    return "\n".join(lines)


def _triple(values: tuple, fmt: str) -> str:
    return " x ".join(format(v, fmt) for v in values)
