"""Plan review: DVHs, clinical goals, protocol conflicts and the self-contained HTML report.

- :mod:`planner.review.dvh`: cumulative DVHs, statistics, dose resampling, CSV.
- :mod:`planner.review.goals`: a protocol's goals on a dose; impossible-protocol conflicts.
- :mod:`planner.review.quality`: conformity, whole-PTV coverage, normal tissue, hot spots.
- :mod:`planner.review.figures`: the report's matplotlib figures (Agg).
- :mod:`planner.review.report`: ``report.html`` with the PNGs and ``dvh.csv`` beside it.
- :mod:`planner.review.inputs`: dose and structures from DICOM files of any system.
"""

from planner.review.dvh import (
    DoseStatistics,
    Dvh,
    cumulative_dvh,
    dose_statistics,
    resample_dose,
    structure_dvhs,
    write_dvh_csv,
)
from planner.review.figures import FluenceMap
from planner.review.goals import Conflict, GoalRow, evaluate_protocol, protocol_conflicts
from planner.review.inputs import read_dose_and_structures
from planner.review.quality import QualityFigure, quality_figures
from planner.review.report import (
    PredictionRow,
    Review,
    ReviewPlan,
    aperture_fluences,
    write_report,
)

__all__ = ["Conflict", "DoseStatistics", "Dvh", "FluenceMap", "GoalRow", "PredictionRow",
           "QualityFigure", "Review", "ReviewPlan", "aperture_fluences", "cumulative_dvh",
           "dose_statistics", "evaluate_protocol", "protocol_conflicts", "quality_figures",
           "read_dose_and_structures", "resample_dose", "structure_dvhs", "write_dvh_csv",
           "write_report"]
