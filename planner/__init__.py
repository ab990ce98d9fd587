"""planner: 6 MV IMRT treatment planning from CT and RT Structure Set to a deliverable RT Plan."""

from dose.grid import Grid
from planner.errors import InputError, PlannerError
from planner.patient import DicomReferences, Patient, Prescription, Structure

__all__ = ["DicomReferences", "Grid", "InputError", "Patient", "PlannerError", "Prescription",
           "Structure"]
__version__ = "0.1.0"
