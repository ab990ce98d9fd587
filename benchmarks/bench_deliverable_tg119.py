"""TG-119 C-shape, 9 fields: fluence plan, leaf sequencing, segment doses, segment weights.

Reports the goal table of the fluence plan, of the sequenced plan with the sequencer's weights
and after segment-weight optimisation (segment doses from ``dose.segment_dose``, not from the
beamlets), segments per beam, MU per beam and per fraction, and the least MU any decomposition of
each beam's fluence into apertures can have (max over leaf pairs of the summed rises, Engel
2005), which shows how much of the MU comes from the fluence itself.

The segment-weight objectives follow the fluence plan's dose voxel by voxel (targets: under-dose
weighed 4x; core and body: over-dose only), so that the deliverable plan recovers its quality.

Run: ``.venv/bin/python benchmarks/bench_deliverable_tg119.py [voxel_mm] [n_levels]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from dose.beam_model import load_beam_model
from dose.beams import beamlets_covering, coplanar_beams
from dose.dij import compute_dij
from dose.machine import load_machine
from dose.segments import Segment, segment_dose
from optim.autoplan import evaluate_goals
from optim.objectives import DoseMimicking
from optim.segment_weights import optimise_segment_weights
from optim.sequencing import sequence_leaves
from planner.optimize import fluence_problem, optimise_patient
from planner.phantoms import cshape_phantom
from planner.protocol import read_protocol

MIN_MU_PER_FRACTION = 2.0
MAX_SEGMENTS = 15


def main(voxel_mm: float = 5.0, n_levels: int = 10) -> None:
    start = time.perf_counter()
    patient = cshape_phantom(voxel_mm=voxel_mm)
    protocol = read_protocol("tg119_c_shape")
    fractions = patient.prescriptions[0].fractions
    fraction_dose_cgy = patient.prescriptions[0].dose_per_fraction_gy * 100
    machine, model = load_machine(), load_beam_model()
    ptv = patient.structure("PTV").mask
    centre = patient.grid.index_to_position_mm(np.argwhere(ptv).mean(axis=0))
    beams = coplanar_beams(np.arange(0.0, 360.0, 40.0), tuple(centre[::-1]))
    beamset = beamlets_covering(beams, ptv, patient.grid, beamlet_size_mm=5.0)
    t = time.perf_counter()
    dij = compute_dij(patient.density, patient.grid, patient.grid, beamset, model)
    print(f"grid {patient.grid.shape} ({voxel_mm} mm), {beamset.n_beamlets} beamlets, "
          f"Dij {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    plan = optimise_patient(patient, dij.matrix, protocol)
    print(f"fluence optimisation {time.perf_counter() - t:.1f} s")
    goals = fluence_problem(patient, protocol).goals

    def table(dose: np.ndarray, title: str) -> None:
        print(title)
        for r in evaluate_goals(np.asarray(dose, dtype=np.float64).ravel(), goals):
            print(f"  {r.label:<26} {r.value:7.2f}  limit {r.limit:6.2f}  "
                  f"{'met' if r.met else 'NOT met'}")

    table(plan.dose_gy, "fluence plan")
    x = plan.result.x  # MU over all fractions through each beamlet
    segments, beam_of, w0, bound = [], [], [], 0.0
    t = time.perf_counter()
    for b in range(len(beams)):
        cols = beamset.beamlets_of(b)
        u, v, h = beamset.u_mm[cols], beamset.v_mm[cols], beamset.beamlet_size_mm
        iu, iv = (np.rint((a - a.min()) / h).astype(int) for a in (u, v))
        fluence = np.zeros((iv.max() + 1, iu.max() + 1))
        fluence[iv, iu] = x[cols]
        bound += np.clip(np.diff(fluence, prepend=0, axis=1), 0, None).sum(axis=1).max()
        seq = sequence_leaves(
            fluence, v.min() - h / 2 + h * np.arange(fluence.shape[0] + 1),
            u.min() - h / 2 + h * np.arange(fluence.shape[1] + 1), machine.leaf_boundaries_mm,
            n_levels=n_levels, max_segments=MAX_SEGMENTS,
            min_weight=MIN_MU_PER_FRACTION * fractions, min_gap_mm=machine.min_leaf_gap_mm,
            leaf_travel_mm=(machine.leaf_position_min_mm, machine.leaf_position_max_mm),
            jaw_overtravel_mm=(machine.jaw_x_overtravel_mm, machine.jaw_y_overtravel_mm),
            max_leaf_span_mm=machine.max_leaf_span_mm, interdigitation=machine.interdigitation)
        for leaves, jaws, w in zip(seq.leaf_positions_mm, seq.jaws_mm, seq.weights):
            segments.append(Segment((jaws[0], jaws[1]), (jaws[2], jaws[3]), leaves, 1.0))
            beam_of.append(b)
            w0.append(w)
    beam_of, w0 = np.array(beam_of), np.array(w0)
    print(f"sequencing {time.perf_counter() - t:.2f} s; segments per beam "
          f"{np.bincount(beam_of).tolist()}; MU/fraction {w0.sum() / fractions:.0f} "
          f"(least possible for these fluences {bound / fractions:.0f})")

    t = time.perf_counter()
    body = np.flatnonzero(patient.density.ravel() >= 0.05)
    S = np.empty((body.size, len(segments)), dtype=np.float32)  # Gy per MU
    for k, (segment, b) in enumerate(zip(segments, beam_of)):
        dose = segment_dose(patient.density, patient.grid, patient.grid, [beams[b]], [[segment]],
                            machine, model)
        S[:, k] = np.asarray(dose).ravel()[body]
    print(f"segment doses {time.perf_counter() - t:.1f} s ({len(segments)} segments)")

    def on_grid(values: np.ndarray) -> np.ndarray:
        full = np.zeros(patient.grid.size)
        full[body] = values
        return full

    table(on_grid(S @ w0), "sequenced, sequencer weights")
    reference = plan.dose_gy.ravel()[body].astype(np.float64)
    in_ptv = np.flatnonzero(np.isin(body, np.flatnonzero(ptv)))
    in_core = np.flatnonzero(np.isin(body, np.flatnonzero(patient.structure("Core").mask)))
    objectives = [DoseMimicking(in_ptv, reference[in_ptv], weight=10.0, under=4.0, over=1.0),
                  DoseMimicking(in_core, reference[in_core], weight=3.0, under=0.0, over=1.0),
                  DoseMimicking(np.arange(body.size), reference, weight=1.0, under=0.0, over=1.0)]
    t = time.perf_counter()
    result = optimise_segment_weights(S, objectives, w0, max_iter=500,
                                      min_weight=MIN_MU_PER_FRACTION * fractions)
    print(f"segment weights {time.perf_counter() - t:.1f} s, {result.iterations} iterations "
          f"({result.stop_reason})")
    table(on_grid(S @ result.x), "after segment-weight optimisation")
    mu = result.x / fractions
    print(f"segments per beam {np.bincount(beam_of[mu > 0], minlength=len(beams)).tolist()}")
    print(f"MU per beam per fraction {np.bincount(beam_of, weights=mu).round(0).tolist()}")
    print(f"total MU per fraction {mu.sum():.0f} for {fraction_dose_cgy:.0f} cGy: "
          f"{mu.sum() / fraction_dose_cgy:.2f} MU/cGy; whole run {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(*(float(a) if i == 0 else int(a) for i, a in enumerate(sys.argv[1:])))
