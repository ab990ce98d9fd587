"""The steps ``planner plan`` reports, in order (shared by the pipeline and CLI tests)."""

STEPS = ["import", "dose grid", "beams", "dij", "seed", "optimisation", "sequencing",
         "segment doses", "segment weights", "final dose", "export", "report"]


def steps_run(summary: dict) -> list[str]:
    """STEPS, with the goal repair after the final dose when a hard goal was lost in sequencing."""
    repair = ["goal repair"] if summary["goal_repair"]["lost"] else []
    return STEPS[:STEPS.index("final dose") + 1] + repair + STEPS[STEPS.index("export"):]
