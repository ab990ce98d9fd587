"""GPU check: cupy against numpy on the same Dij and final dose, and plan times on each device.

For each case (``NAME=PATIENT``, anything ``planner plan`` reads) the whole plan is made with
:func:`planner.plan.plan_patient` on every device given (its step times: Dij, optimisation, final
dose, total); then, where CUDA is among them, the Dij of the case (:func:`planner.plan.beamlet_dose`
on the plan's set-up) and the final dose of the CPU plan's segments (:func:`dose.segment_dose`)
are computed on both devices and compared: the largest absolute difference in per cent of the
largest value (of the matrix, of the dose). Results go to ``OUT_DIR/gpu_check.json`` and
``OUT_DIR/gpu_check.md``; each plan's folder to ``OUT_DIR/plans/NAME-DEVICE``.

Run (``benchmarks/gpu_check.sh`` does): ``python benchmarks/bench_gpu.py OUT_DIR --case
tg119=example:cshape --case openkbp=PATIENT_DIR --device cuda --device cpu [--quick]``.
``--quick`` plans on a coarse set-up (5 fields, 10 mm beamlets, 8 mm dose grid, 5 segments a
field), for a short run on a CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from dose import load_beam_model, load_machine, segment_dose
from dose._xp import to_device
from planner.io import load_patient
from planner.plan import beamlet_dose, place_beams, plan_patient, prepare_case, prepare_grids

FULL = {"beam_count": 9, "beamlet_mm": 5.0, "dose_grid_mm": 3.0}
QUICK = {"beam_count": 5, "beamlet_mm": 10.0, "dose_grid_mm": 8.0, "max_segments_per_beam": 5}
#: The steps of plan.log whose times the table shows (the rest add up to the total).
STEPS = ("dij", "optimisation", "segment weights", "final dose")


def _host(array: Any) -> Any:
    """A numpy array or scipy matrix of a cupy one (``get``), else the argument."""
    return array.get() if hasattr(array, "get") else array


def _synchronise(device: str) -> None:
    if device == "cuda":
        import cupy

        cupy.cuda.Device().synchronize()


def compare_devices(result: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The Dij and the final dose of one case on CUDA against the CPU, with their times."""
    case = prepare_case(result.patient, result.protocol)
    grids = prepare_grids(case, settings["dose_grid_mm"])
    beams = place_beams(case, settings["beam_count"], settings["beamlet_mm"])
    machine, model = load_machine(), load_beam_model()
    out: dict[str, Any] = {}
    matrices, doses = {}, {}
    for device in ("cpu", "cuda"):
        start = time.perf_counter()
        matrices[device] = _host(beamlet_dose(case, grids, beams, device=device).matrix)
        _synchronise(device)
        out[f"dij_s_{device}"] = time.perf_counter() - start
        start = time.perf_counter()
        doses[device] = np.asarray(_host(segment_dose(
            to_device(result.patient.density, device), result.patient.grid, result.dose_grid,
            [b.beam for b in result.beams], [b.segments for b in result.beams], machine,
            model)))
        _synchronise(device)
        out[f"final_dose_s_{device}"] = time.perf_counter() - start
    cpu, cuda = matrices["cpu"], matrices["cuda"]
    out["dij_nonzeros"] = {"cpu": int(cpu.nnz), "cuda": int(cuda.nnz)}
    out["dij_max_difference_percent"] = float(
        100.0 * abs(cuda - cpu).max() / abs(cpu).max())
    out["final_dose_max_difference_percent"] = float(
        100.0 * np.abs(doses["cuda"] - doses["cpu"]).max() / np.abs(doses["cpu"]).max())
    return out


def _markdown(rows: list[dict[str, Any]], comparisons: dict[str, dict[str, Any]],
              quick: bool) -> str:
    lines = [f"# GPU check ({'quick set-up' if quick else 'full set-up'}, "
             f"{platform.node()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             "| case | device | " + " | ".join(f"{s} (s)" for s in STEPS)
             + " | whole plan (s) | goals met | MU |",
             "|---|---|" + "---|" * (len(STEPS) + 3)]
    for r in rows:
        lines.append(f"| {r['case']} | {r['device']} | "
                     + " | ".join(f"{r['times_s'].get(s, float('nan')):.2f}" for s in STEPS)
                     + f" | {r['total_s']:.1f} | {r['goals_met']} | {r['mu']:.0f} |")
    for name, c in comparisons.items():
        lines += ["", f"{name}, cupy against numpy on the same input: Dij largest difference "
                      f"{c['dij_max_difference_percent']:.2e} % of its largest element "
                      f"(non-zeros {c['dij_nonzeros']['cuda']} / {c['dij_nonzeros']['cpu']}), "
                      f"final dose largest difference {c['final_dose_max_difference_percent']:.2e}"
                      f" % of its maximum; Dij {c['dij_s_cuda']:.2f} s on CUDA, "
                      f"{c['dij_s_cpu']:.2f} s on the CPU; final dose {c['final_dose_s_cuda']:.2f}"
                      f" s / {c['final_dose_s_cpu']:.2f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="results folder (created)")
    parser.add_argument("--case", action="append", required=True, metavar="NAME=PATIENT")
    parser.add_argument("--device", action="append", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--quick", action="store_true", help="coarse set-up (a CPU test run)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    rows, comparisons = [], {}
    for spec in args.case:
        name, _, source = spec.partition("=")
        patient = load_patient(source)
        results = {}
        for device in args.device:
            result = plan_patient(patient, out_dir=args.out / "plans" / f"{name}-{device}",
                                  device=device, overwrite=True, **settings)
            results[device] = result
            rows.append({"case": name, "device": device, "times_s": result.times_s,
                         "total_s": result.summary["total_s"], "mu": result.total_mu,
                         "goals_met": f"{sum(g.met for g in result.goals_plan)} of "
                                      f"{len(result.goals_plan)}"})
            print(f"{name} on {device}: " + ", ".join(
                f"{k} {v:.2f} s" for k, v in result.times_s.items()), flush=True)
        if "cuda" in args.device:
            comparisons[name] = compare_devices(results.get("cpu", results["cuda"]), settings)
            print(f"{name}: {comparisons[name]}", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(
        {"settings": settings, "plans": rows, "cupy_against_numpy": comparisons}, indent=1)
        + "\n")
    (args.out / "gpu_check.md").write_text(_markdown(rows, comparisons, args.quick))
    print(f"wrote {args.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
