"""Plan review: DVHs, clinical goals, protocol conflicts and the self-contained HTML report."""

from planner.review.dvh import (
    Dvh,
    DoseStatistics,
    cumulative_dvh,
    dose_statistics,
    resample_dose,
    structure_dvhs,
    write_dvh_csv,
)

__all__ = ["DoseStatistics", "Dvh", "cumulative_dvh", "dose_statistics", "resample_dose",
           "structure_dvhs", "write_dvh_csv"]
