"""The steps ``planner plan`` reports, in order (shared by the planner.plan and CLI tests)."""

STEPS = ["import", "dose grid", "beams", "dij", "seed", "optimisation", "sequencing",
         "segment doses", "segment weights", "final dose", "normalisation", "export", "report"]


def steps_run(summary: dict, normalised: bool = True) -> list[str]:
    """STEPS, with the goal repair after the final dose when a hard goal was lost in sequencing
    (and the delivery correction after it when the repair left one lost), and without the
    normalisation when the protocol says ``normalise = false``."""
    repair = ["goal repair"] if summary["goal_repair"]["lost"] else []
    if summary["delivery_correction"] is not None:  # the delivery steps run again after it
        repair = ["goal repair", "delivery correction"]
    after = STEPS[STEPS.index("normalisation" if normalised else "export"):]
    return STEPS[:STEPS.index("final dose") + 1] + repair + after
