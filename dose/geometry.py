"""IEC 61217 beam geometry: patient (DICOM LPS) coordinates to beam's-eye-view coordinates.

Frames (IEC 61217, all rotations right-handed about the named axis):

- fixed ``f``: origin at the isocentre, X to the right of an observer at the foot of the couch
  facing the gantry, Y towards the gantry, Z up;
- patient support: the fixed frame turned by the couch angle about Z_f;
- gantry ``g``: the fixed frame turned by the gantry angle about Y_f (gantry 0: source above,
  gantry 90: source at +X_f, i.e. clockwise seen from the foot of the couch);
- beam limiting device ``b``: the gantry frame turned by the collimator angle about Z_g; the source
  is at ``(0, 0, SAD)``, MLC leaves travel along X_b, leaf pairs are stacked along Y_b.

Only head-first supine patients are handled: DICOM LPS ``(x, y, z)`` maps to the patient-support
frame as ``X = x`` (patient left), ``Y = z`` (superior, towards the gantry), ``Z = -y`` (anterior).
"""

from __future__ import annotations

from typing import Any

import numpy as np


# Patient LPS offsets (x, y, z) to the IEC patient-support frame for a head-first supine patient.
_HFS_TO_SUPPORT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _rot_y(angle_deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(angle_deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def patient_to_beam_matrix(gantry_deg: float, collimator_deg: float, couch_deg: float
                           ) -> np.ndarray:
    """Rotation taking patient LPS offsets from the isocentre to beam-limiting-device coordinates.

    Parameters
    ----------
    gantry_deg, collimator_deg, couch_deg : float, degrees
        IEC 61217 gantry, beam-limiting-device and patient-support angles.

    Returns
    -------
    (3, 3) float array
        ``b = R @ (p - iso)`` with ``p`` in LPS ``(x, y, z)`` and ``b`` in ``(X_b, Y_b, Z_b)``, mm.
    """
    support_to_fixed = _rot_z(couch_deg)
    fixed_to_gantry = _rot_y(gantry_deg).T
    gantry_to_bld = _rot_z(collimator_deg).T
    return gantry_to_bld @ fixed_to_gantry @ support_to_fixed @ _HFS_TO_SUPPORT


def source_position_xyz_mm(gantry_deg: float, collimator_deg: float, couch_deg: float,
                           isocenter_xyz_mm: tuple[float, float, float], sad_mm: float
                           ) -> np.ndarray:
    """Position of the source in patient LPS coordinates ``(x, y, z)``, mm, shape ``(3,)``."""
    rotation = patient_to_beam_matrix(gantry_deg, collimator_deg, couch_deg)
    return np.asarray(isocenter_xyz_mm, dtype=float) + rotation.T @ np.array([0.0, 0.0, sad_mm])


def project_to_beam(points_xyz_mm: Any, rotation: np.ndarray, isocenter_xyz_mm: Any,
                    sad_mm: float) -> tuple[Any, Any, Any]:
    """Divergent beam's-eye-view coordinates of points.

    Parameters
    ----------
    points_xyz_mm : (n, 3) array, mm
        Points in patient LPS coordinates (numpy or cupy).
    rotation : (3, 3) float array
        From :func:`patient_to_beam_matrix`.
    isocenter_xyz_mm : (3,) array, mm
    sad_mm : float, mm

    Returns
    -------
    u_mm, v_mm : (n,) arrays, mm
        Where the ray from the source through each point crosses the isocentre plane, along X_b
        and Y_b.
    t_mm : (n,) array, mm
        Distance from the source to the point's projection on the beam axis (so the inverse-square
        factor is ``(sad_mm / t_mm) ** 2`` and the magnification at the point is ``t_mm / sad_mm``).
    """
    x, y, z = (points_xyz_mm[:, axis] - float(isocenter_xyz_mm[axis]) for axis in range(3))
    r = np.asarray(rotation, dtype=float)
    # Written out: a (n, 3) @ (3, 3) product is far slower than three fused sums in numpy.
    t_mm = sad_mm - (r[2, 0] * x + r[2, 1] * y + r[2, 2] * z)
    scale = sad_mm / t_mm
    u_mm = (r[0, 0] * x + r[0, 1] * y + r[0, 2] * z) * scale
    v_mm = (r[1, 0] * x + r[1, 1] * y + r[1, 2] * z) * scale
    return u_mm, v_mm, t_mm
