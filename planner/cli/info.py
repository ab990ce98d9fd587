"""``planner info PATIENT``: print the grid, structures and prescriptions of any supported input.

A DICOM folder that does not read as a patient (no RT Structure Set, two ROIs of one name, ...)
gets what does read printed first (the CT grid; each structure set's ROIs with their numbers),
then the one error line that says what is missing or ambiguous (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dose.grid import Grid
from planner.cli._output import add_force_option, add_json_option, check_outputs, write_json
from planner.errors import InputError
from planner.io import load_patient
from planner.io.dicom_patient import DicomFolder, read_dicom_folder
from planner.patient import Patient


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="print a patient's grid, structures and prescriptions",
        description="Print the grid (shape, spacing, origin, extent), the structures (type, "
                    "volume) and the prescriptions of a patient.")
    parser.add_argument("patient", metavar="PATIENT",
                        help="example:cshape|water|slab, a matRad .mat file, an OpenKBP patient "
                             "folder or a DICOM folder (CT + RTSTRUCT)")
    add_json_option(parser)
    add_force_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_outputs(args)
    try:
        patient = load_patient(args.patient)
    except InputError:
        # A DICOM folder that does not read as a patient: show what does read, then the error.
        folder = Path(args.patient)
        if folder.is_dir() and not any((folder / f).is_file() for f in ("ct.csv", "ct.csv.gz")):
            print(folder_summary(read_dicom_folder(folder)))
        raise
    print(summary(patient))
    write_json(args, summary_json(patient))
    return 0


def folder_summary(contents: DicomFolder) -> str:
    """What :func:`planner.io.dicom_patient.read_dicom_folder` could read: the CT grid, and each
    structure set's ROIs with their numbers, type and number of closed contours."""
    lines = grid_lines(contents.ct.grid) if contents.ct else ["CT series: none that reads"]
    if not contents.structure_sets:
        lines.append("RT Structure Set: none that reads")
    for structure_set in contents.structure_sets:
        lines.append(f"RT Structure Set {structure_set.path} ({len(structure_set.rois)} ROIs)")
        width = max([len(r.name) for r in structure_set.rois] + [len("name")])
        lines.append(f"  {'number':>6}  {'name':<{width}}  {'type':<10}  contours")
        lines += [f"  {r.number:>6}  {r.name:<{width}}  {r.interpreted_type or '-':<10}  "
                  f"{len(r.contours)}" for r in structure_set.rois]
    return "\n".join(lines)


def summary(patient: Patient) -> str:
    """Human-readable description of ``patient``: grid, structures with volumes, prescriptions.

    Coordinates are given in the grid's (z, y, x) order, mm, DICOM patient coordinates (LPS).
    """
    lines = [f"Patient {patient.name} ({patient.source})"] + grid_lines(patient.grid)
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


def summary_json(patient: Patient) -> dict[str, Any]:
    """:func:`summary` as plain data for JSON (mm, Gy, cc; the grid's axes in (z, y, x) order)."""
    low, high = patient.grid.extent_mm()
    return {
        "patient": patient.name, "source": patient.source,
        "grid": {"shape_zyx": list(patient.grid.shape),
                 "spacing_zyx_mm": list(patient.grid.spacing_mm),
                 "origin_zyx_mm": list(patient.grid.origin_mm),
                 "extent_zyx_mm": [[lo, hi] for lo, hi in zip(low, high)]},
        "dicom": None if patient.dicom is None else {
            "patient_id": patient.dicom.patient_id,
            "patient_position": patient.dicom.patient_position},
        "structures": [{"name": s.name, "type": s.kind, "volume_cc": patient.volume_cc(s.name)}
                       for s in patient.structures],
        "prescriptions": [{"target": rx.target, "dose_gy": rx.dose_gy, "fractions": rx.fractions}
                          for rx in patient.prescriptions],
    }


def grid_lines(grid: Grid) -> list[str]:
    """The grid's shape, spacing, origin and extent (mm, DICOM patient coordinates LPS)."""
    low, high = grid.extent_mm()
    return [
        "Grid (z, y, x; mm, DICOM patient coordinates LPS)",
        f"  shape    {_triple(grid.shape, 'd')} voxels",
        f"  spacing  {_triple(grid.spacing_mm, '.3f')} mm",
        f"  origin   ({', '.join(f'{v:.2f}' for v in grid.origin_mm)}) mm, centre of voxel "
        f"[0, 0, 0]",
        "  extent   " + ", ".join(f"{axis} {lo:.2f} to {hi:.2f}"
                                  for axis, lo, hi in zip("zyx", low, high)) + " mm",
    ]


def _triple(values: tuple, fmt: str) -> str:
    return " x ".join(format(v, fmt) for v in values)
