"""Fluence: the beamlet dose (Dij), the seed (the dose prediction, made while the Dij is
computed) and the fluence optimisation to the protocol's goals."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage

from dose import DoseInfluence, compute_dij
from dose._xp import array_module, to_device
from optim.autoplan import AutoPlanResult, StepReport, correct_for_delivery
from optim.fluence import Progress
from planner.optimize import FluenceProblem, fluence_problem, optimise_patient
from planner.patient import Patient
from planner.plan.beams import PlanBeams, smoothness_regulariser
from planner.plan.grid import PlanGrids, protocol_goals
from planner.plan.log import StepLog
from planner.plan.setup import PlanCase
from planner.protocol import Protocol
from planner.review.goals import GoalRow


@dataclass(frozen=True)
class FluenceInputs:
    """What the fluence optimisation ran on besides its problem, kept for the delivery
    correction (:func:`correct_fluence`): the Dij, the sparing objectives (the seed's) and the
    regularisers."""

    D: Any = field(repr=False)
    sparing_objectives: tuple[Any, ...] = field(repr=False)
    regularisers: tuple[Any, ...] = field(repr=False)


@dataclass(frozen=True)
class FluencePlan:
    """The optimised fluence and what the later steps take from it.

    Attributes
    ----------
    problem : FluenceProblem
        The optimiser's targets and goals on the dose grid (the goal repair's hard goals).
    result : AutoPlanResult
        Beamlet weights ``x`` (MU over all fractions), the goals on the optimiser's voxels, steps.
    dose_gy : (nz, ny, nx) float32 array, Gy
        The fluence plan's dose on the dose grid (the Dij's sampled voxels filled from their
        nearest computed neighbour, :func:`fill_uncomputed`).
    goals : tuple of GoalRow
        The protocol's goals on the fluence plan (CT grid, as the report reads them).
    dij_nonzeros : int
    seed_note : str
    predicted_gy : (nz, ny, nx) float32 array, Gy, or None
        The dose prediction on the dose grid; None when unseeded.
    inputs : FluenceInputs or None
        Kept until the deliverable plan is settled, then dropped (:meth:`without_inputs`): the
        Dij is 1-2 GB.
    """

    problem: FluenceProblem = field(repr=False)
    result: AutoPlanResult = field(repr=False)
    dose_gy: np.ndarray = field(repr=False)
    goals: tuple[GoalRow, ...] = field(repr=False)
    dij_nonzeros: int
    seed_note: str
    predicted_gy: np.ndarray | None = field(repr=False)
    inputs: FluenceInputs | None = field(repr=False)

    def without_inputs(self) -> FluencePlan:
        """This plan without its inputs (the Dij freed once nothing else holds it)."""
        return dataclasses.replace(self, inputs=None)


def optimise_fluence(case: PlanCase, grids: PlanGrids, beams: PlanBeams, *, device: str,
                     seed: bool, time_limit_s: float | None, log: StepLog) -> FluencePlan:
    """The steps "dij", "seed" and "optimisation".

    The Dij is computed on the needed voxels of the dose grid (:func:`planner.plan.grid.
    needed_voxels`) while, with ``seed``, the network predicts the dose on a second thread (it
    needs no Dij); the prediction's arguments (:func:`planner.predict.seed.seed_arguments`) and
    the fluence smoothness join the optimisation (:func:`planner.optimize.optimise_patient`).
    The Dij stays in the result's ``inputs`` for the delivery correction.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        predicting = (pool.submit(_predict_seed, grids.dose_patient, case.protocol, device)
                      if seed else None)
        D = beamlet_dose(case, grids, beams, device=device).matrix
        log.step("dij", f"{D.shape[0]} x {D.shape[1]}, {D.nnz} non-zeros")
        seeding, predicted_gy, seed_note = _seed_inputs(predicting, grids.dose_patient, D)
    log.step("seed", seed_note)

    problem = fluence_problem(grids.dose_patient, case.protocol, xp=array_module(D),
                              structures=grids.dose_structures)
    inputs = FluenceInputs(D, tuple(seeding.get("sparing_objectives", ())),
                           (smoothness_regulariser(beams.beamset),))
    fluence = optimise_patient(grids.dose_patient, D, case.protocol,
                               regularisers=inputs.regularisers, time_limit_s=time_limit_s,
                               progress=_iteration_lines(log), problem=problem, **seeding)
    result = fluence.result
    _say_steps(result.steps, log)
    dose = fill_uncomputed(fluence.dose_gy, grids.needed)
    log.step("optimisation", f"{result.iterations} iterations in {len(result.steps)} steps; "
                             f"stopped: {result.stopped_by}")
    return FluencePlan(problem, result, dose, protocol_goals(case, grids, dose), int(D.nnz),
                       seed_note, predicted_gy, inputs)


def correct_fluence(case: PlanCase, grids: PlanGrids, fluence: FluencePlan,
                    delivered_gy: np.ndarray, *, log: StepLog) -> FluencePlan:
    """The step "delivery correction": ``fluence`` optimised on with the dose that delivering it
    added (``delivered_gy``, a deliverable plan's dose on the dose grid, less the fluence's
    ``D x``) as a fixed part of every objective and goal
    (:func:`optim.autoplan.correct_for_delivery`). The result's dose is ``D x`` plus that
    difference: the dose expected once the corrected fluence is delivered."""
    inputs, problem = fluence.inputs, fluence.problem
    if inputs is None:
        raise ValueError("the fluence plan's inputs were dropped; no correction possible")
    D = inputs.D
    xp = array_module(D)
    beamlet_gy = D @ xp.asarray(fluence.result.x, dtype=D.dtype)
    offset = xp.asarray(np.asarray(delivered_gy, dtype=np.float32).ravel()) - beamlet_gy
    result = correct_for_delivery(D, problem.targets, problem.goals, fluence.result, offset,
                                  normal_tissue=problem.normal_tissue,
                                  sparing_objectives=inputs.sparing_objectives,
                                  regularisers=inputs.regularisers,
                                  progress=_iteration_lines(log))
    _say_steps(result.steps[len(fluence.result.steps):], log)
    dose = D @ xp.asarray(result.x, dtype=D.dtype) + offset
    dose = np.asarray(to_device(dose, "cpu"), dtype=np.float32).reshape(grids.dose_grid.shape)
    dose = fill_uncomputed(dose, grids.needed)
    unmet = [r.label for r in result.goals if r.hard and not r.met]
    log.step("delivery correction",
             f"{len(result.steps) - len(fluence.result.steps)} optimisations; "
             + (f"hard goals unmet on the expected dose: {', '.join(unmet)}" if unmet
                else "every hard goal met on the expected dose"))
    return dataclasses.replace(fluence, result=result, dose_gy=dose,
                               goals=protocol_goals(case, grids, dose))


def _iteration_lines(log: StepLog) -> Callable[[str, Progress], None]:
    """The optimiser's progress as transient log lines."""
    def on_iteration(name: str, p: Progress) -> None:
        log.transient(f"  optimisation {name}: iteration {p.iteration}, objective "
                      f"{p.value:.4g}, {p.elapsed_s:.1f} s")
    return on_iteration


def _say_steps(steps: Sequence[StepReport], log: StepLog) -> None:
    for s in steps:
        log.say(f"  {s.step}: {s.iterations} iterations, {s.elapsed_s:.1f} s, {s.goals_met} "
                f"goals met ({s.note})")


def beamlet_dose(case: PlanCase, grids: PlanGrids, beams: PlanBeams, *, device: str,
                 **options: Any) -> DoseInfluence:
    """The Dij of ``beams`` (:func:`dose.compute_dij`) on the needed voxels of the dose grid
    (:attr:`PlanGrids.needed`), on ``device``; ``options`` go to :func:`dose.compute_dij`."""
    return compute_dij(to_device(case.patient.density, device), case.patient.grid,
                       grids.dose_grid, beams.beamset, beams.model,
                       dose_mask=to_device(grids.needed, device), **options)


def fill_uncomputed(dose_gy: np.ndarray, computed: np.ndarray) -> np.ndarray:
    """``dose_gy`` with each voxel outside ``computed`` given the dose of the nearest computed
    voxel (a dose on sampled rows made whole, for goal tables on another grid)."""
    if computed.all() or not computed.any():
        return dose_gy
    nearest = scipy.ndimage.distance_transform_edt(~computed, return_distances=False,
                                                   return_indices=True)
    return dose_gy[tuple(nearest)]


def _predict_seed(patient: Patient, protocol: Protocol, device: str) -> Any:
    # Imported here: torch takes seconds to import and only the seed needs it.
    from planner.predict.seed import predict_seed, prediction_patient

    return predict_seed(prediction_patient(patient, protocol), device=device)


def _seed_inputs(predicting: Future | None, patient: Patient, D: Any
                 ) -> tuple[dict[str, Any], np.ndarray | None, str]:
    """The seed's keyword arguments of :func:`planner.optimize.optimise_patient`, the predicted
    dose (None when unseeded) and the seed's note."""
    if predicting is None:
        return {}, None, "unseeded: --no-seed"
    from planner.predict.seed import seed_arguments

    seed = predicting.result()
    return seed_arguments(patient, D, seed), seed.dose_gy, seed.note
