"""Mathematics of plan optimisation: objectives, fluence optimiser, leaf sequencing, segment weights.

optim sees the dose engine only as a sparse matrix; it never imports ``dose`` or ``planner``.
"""

from optim.autoplan import (
    AutoPlanResult,
    GoalResult,
    NormalTissue,
    PlanGoal,
    StepReport,
    TargetDose,
    evaluate_goal,
    evaluate_goals,
    plan_automatically,
)
from optim.dvh import dose_at_volume, mean_dose, volume_at_dose
from optim.fluence import FluenceResult, Progress, optimise_fluence
from optim.objectives import (
    GEUD,
    DoseFalloff,
    DoseMimicking,
    FluenceSmoothness,
    FluenceVariation,
    LinearCost,
    MaxDose,
    MaxDVH,
    MeanDose,
    MinDose,
    MinDVH,
    SquaredOverdose,
    SquaredUnderdose,
    falloff_limit_gy,
    neighbour_pairs,
    resolve_overlaps,
)
from optim.segment_weights import GoalRepair, optimise_segment_weights, restore_goals
from optim.sequencing import LeafSequence, leaf_pair_fluence, sequence_leaves

__all__ = [
    "AutoPlanResult",
    "GoalRepair",
    "GoalResult",
    "NormalTissue",
    "PlanGoal",
    "StepReport",
    "TargetDose",
    "evaluate_goal",
    "evaluate_goals",
    "plan_automatically",
    "GEUD",
    "DoseFalloff",
    "DoseMimicking",
    "FluenceResult",
    "FluenceSmoothness",
    "FluenceVariation",
    "LeafSequence",
    "LinearCost",
    "MaxDVH",
    "MaxDose",
    "MeanDose",
    "MinDVH",
    "MinDose",
    "Progress",
    "SquaredOverdose",
    "SquaredUnderdose",
    "dose_at_volume",
    "falloff_limit_gy",
    "leaf_pair_fluence",
    "mean_dose",
    "neighbour_pairs",
    "optimise_fluence",
    "optimise_segment_weights",
    "resolve_overlaps",
    "restore_goals",
    "sequence_leaves",
    "volume_at_dose",
]
