"""DVHs of planner against dicompyler-core on a real head-and-neck case, and review timings.

One OpenKBP patient (CT, structures, reference dose) is written as DICOM by planner's writers
(CT + RTSTRUCT, RT Dose on the CT grid), then:

- ``planner dvh`` sampling (:func:`planner.review.inputs.read_dose_and_structures`) and
  ``planner review`` sampling (masks on the CT) are compared with dicompyler-core 0.5.6
  (``dvhcalc.get_dvh``) for every structure over 5 cc: Dmean, D95, D2, Dmax, in % of the
  70 Gy prescription;
- the time of each step is printed (wall clock; other work may share the CPU).

Usage: ``.venv/bin/python benchmarks/bench_review_openkbp.py [PATIENT_FOLDER]`` (default the
first test patient of ../shared/openkbp).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from dicompylercore import dvhcalc

from planner.io.dicom_patient import STRUCTURE_SET_FILE, read_dicom_patient, write_dicom_patient
from planner.io.openkbp import read_openkbp_dose, read_openkbp_patient
from planner.io.rtdose import read_rt_dose, write_rt_dose
from planner.protocol import read_protocol
from planner.review.dvh import resample_dose, structure_dvhs
from planner.review.inputs import read_dose_and_structures
from planner.review.report import write_report

RX_GY = 70.0
DEFAULT = (Path(__file__).resolve().parents[2] / "shared" / "openkbp" / "provided-data"
           / "test-pats" / "pt_242")


def main(folder: Path) -> None:
    patient = read_openkbp_patient(folder)
    dose = read_openkbp_dose(folder)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        refs = write_dicom_patient(patient, root / "ct")
        write_rt_dose(root / "RD.dcm", dose, patient.grid, refs, rt_plan_sop_instance_uid="1.2.3")
        print(f"{folder.name}: grid {patient.grid.shape} at {patient.grid.spacing_mm} mm; "
              f"DICOM written in {time.perf_counter() - t:.1f} s")
        rtstruct, rtdose = root / "ct" / STRUCTURE_SET_FILE, root / "RD.dcm"

        t = time.perf_counter()
        d, grid, structures = read_dose_and_structures(rtdose, rtstruct)
        _, dvh_stats = structure_dvhs(d, grid, structures)
        print(f"planner dvh sampling: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        ct_patient = read_dicom_patient(root / "ct", structure_set=rtstruct)
        file_dose, dose_grid = read_rt_dose(rtdose)
        _, review_stats = structure_dvhs(resample_dose(file_dose, dose_grid, ct_patient.grid),
                                         ct_patient.grid, ct_patient.structures)
        print(f"planner review sampling: {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        reference = {}
        for number, s in enumerate(structures, start=1):
            r = dvhcalc.get_dvh(str(rtstruct), str(rtdose), number)
            reference[r.name] = r
        print(f"dicompyler-core: {time.perf_counter() - t:.1f} s for {len(structures)} ROIs")

        print(f"\ndifferences in % of {RX_GY:g} Gy (planner dvh / planner review sampling)")
        print(f"{'structure':<22}{'cc':>9}  {'Dmean':>13}  {'D95':>13}  {'D2':>13}  {'Dmax':>13}")
        worst = 0.0
        for a, b in zip(dvh_stats, review_stats):
            r = reference[a.name]
            if a.volume_cc <= 5.0:
                continue
            cells = []
            for ours_a, ours_b, theirs in ((a.mean_gy, b.mean_gy, r.mean),
                                           (a.d95_gy, b.d95_gy, r.D95.value),
                                           (a.d2_gy, b.d2_gy, r.D2.value),
                                           (a.max_gy, b.max_gy, r.max)):
                da, db = (100 * (o - theirs) / RX_GY for o in (ours_a, ours_b))
                worst = max(worst, abs(da), abs(db))
                cells.append(f"{da:+6.2f}/{db:+6.2f}")
            print(f"{a.name:<22}{a.volume_cc:9.1f}  " + "  ".join(cells))
        print(f"largest difference: {worst:.2f} % of the prescription")

        t = time.perf_counter()
        write_report(root / "report", ct_patient, dose, patient.grid,
                     protocol=read_protocol("head_and_neck"))
        print(f"\nreport (no beams) written in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
