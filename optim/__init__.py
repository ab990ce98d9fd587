"""Mathematics of plan optimisation: objectives, fluence optimiser, leaf sequencing, segment weights.

optim sees the dose engine only as a sparse matrix; it never imports ``dose`` or ``planner``.
"""

__all__: list[str] = []
