"""Plan-quality figures a dosimetrist checks beyond the protocol's goals (DESIGN.md: Plan quality).

Pure numpy functions on a dose array and boolean masks on one grid (arrays indexed ``[z, y, x]``):

- :func:`volume_above_cc`: hot spots, e.g. tissue outside the PTVs above 110 % of the highest
  prescription (RTOG 0225 / RTOG 0615: at most 1 cc or 1 % of it);
- :func:`paddick_conformity`: how closely the prescription isodose hugs a target (Paddick 2000);
- :func:`gradient_r50`: how far the 50 % isodose reaches (RTOG 0813 / 0915 "R50%");
- :func:`air_mask`: voxels below an HU threshold, for targets judged on tissue (the PTV less
  its air, as DESIGN.md asks where OpenKBP's PTV70 holds part of the airway);
- :func:`quality_figures`: all of them for a :class:`planner.Patient`, a dose and a
  :class:`planner.protocol.Protocol`, as rows of :class:`QualityFigure`.

Dose-volume points (D99, D95) and mean doses use :mod:`optim.dvh`, the arithmetic the goal
evaluation uses, so a D99 here is the D99 of the goal table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optim.dvh import dose_at_volume, mean_dose
from planner.patient import Patient
from planner.protocol import Protocol, map_structures

#: The HU below which a voxel counts as air (DESIGN.md, "Plan quality": OpenKBP's PTV70 holds
#: 4-8 % of its voxels below -400 HU on some patients).
AIR_HU = -400.0
#: Name used in :class:`QualityFigure` rows for the body outside every prescribed target.
NORMAL_TISSUE = "normal tissue"
#: Name used for rows over the whole body (or every voxel where the patient has no outline).
BODY = "body"
#: Dose in the normal tissue whose volume is reported (V35Gy), Gy.
NORMAL_TISSUE_V_GY = 35.0
#: Hot-spot levels as fractions of the highest prescription: 107 % (the upper end of ICRU
#: Report 50's +7 % / -5 % homogeneity band) and 110 % (RTOG 0225 / 0615's limit outside PTVs).
HOT_SPOT_LEVELS = (1.07, 1.10)


@dataclass(frozen=True)
class QualityFigure:
    """One plan-quality figure.

    Attributes
    ----------
    name : str
        What it is, e.g. ``"Paddick CI"``, ``"D99%"``, ``"D99% tissue"``, ``"volume > 110 %"``.
    structure : str
        The patient's structure it is taken on, or :data:`NORMAL_TISSUE` / :data:`BODY`.
    value : float
        In ``unit``.
    unit : str
        ``"Gy"``, ``"cc"``, or ``""`` for ratios and yes (1) / no (0) answers.
    """

    name: str
    structure: str
    value: float
    unit: str


def _check_shapes(dose_gy: np.ndarray, *masks: np.ndarray | None) -> None:
    for mask in masks:
        if mask is not None and mask.shape != dose_gy.shape:
            raise ValueError(f"mask shape {mask.shape} differs from dose shape {dose_gy.shape}")


def volume_above_cc(dose_gy: np.ndarray, mask: np.ndarray, level_gy: float,
                    voxel_cc: float) -> float:
    """Volume of ``mask`` receiving more than ``level_gy``.

    Parameters
    ----------
    dose_gy : (nz, ny, nx) float array, Gy
    mask : (nz, ny, nx) bool array
        The region counted (e.g. the tissue outside every PTV).
    level_gy : float, Gy
        Voxels with dose strictly above it count.
    voxel_cc : float, cm^3
        Volume of one voxel.

    Returns
    -------
    float, cm^3

    References
    ----------
    RTOG 0225 / RTOG 0615 (head and neck IMRT): no more than 1 cc (or 1 %) of the tissue outside
    the PTVs above 110 % of the prescription.
    """
    _check_shapes(dose_gy, mask)
    return float(np.count_nonzero(dose_gy[mask] > level_gy)) * voxel_cc


def paddick_conformity(dose_gy: np.ndarray, target_mask: np.ndarray, level_gy: float,
                       body_mask: np.ndarray | None = None) -> float:
    """Paddick conformity index of a target at an isodose level.

    ``CI = TV_PIV^2 / (TV * PIV)``, with TV the target's volume, PIV the volume (anywhere in
    ``body_mask``) receiving at least ``level_gy`` and TV_PIV the part of the target inside PIV.
    1 is perfect conformity; a prescription isodose that misses part of the target, or spills
    beyond it, lowers it. Voxel counts are used: the voxel volume cancels.

    Parameters
    ----------
    dose_gy : (nz, ny, nx) float array, Gy
    target_mask : (nz, ny, nx) bool array
    level_gy : float, Gy
        The prescription isodose (voxels at ``>= level_gy`` make up PIV).
    body_mask : (nz, ny, nx) bool array, optional
        The voxels counted for PIV and TV_PIV (default: every voxel).

    Returns
    -------
    float
        In [0, 1]; 0 when no voxel reaches ``level_gy``.

    Raises
    ------
    ValueError
        An empty target, or a mask whose shape differs from the dose's.

    References
    ----------
    Paddick I. "A simple scoring ratio to index the conformity of radiosurgical treatment
    plans." J Neurosurg 93 (Suppl 3):219-222, 2000.
    """
    _check_shapes(dose_gy, target_mask, body_mask)
    tv = int(np.count_nonzero(target_mask))
    if tv == 0:
        raise ValueError("paddick_conformity: the target mask is empty")
    piv_mask = dose_gy >= level_gy
    if body_mask is not None:
        piv_mask &= body_mask
    piv = int(np.count_nonzero(piv_mask))
    if piv == 0:
        return 0.0
    tv_piv = int(np.count_nonzero(piv_mask & target_mask))
    return tv_piv * tv_piv / (tv * piv)


def gradient_r50(dose_gy: np.ndarray, target_mask: np.ndarray, level_gy: float,
                 body_mask: np.ndarray | None = None) -> float:
    """R50%: the volume receiving at least 50 % of ``level_gy``, over the target's volume.

    Parameters
    ----------
    dose_gy : (nz, ny, nx) float array, Gy
    target_mask : (nz, ny, nx) bool array
    level_gy : float, Gy
        The prescription; the isodose measured is ``0.5 * level_gy``.
    body_mask : (nz, ny, nx) bool array or None
        The voxels counted for the 50 % isodose volume (None: every voxel).

    Returns
    -------
    float
        Dimensionless, >= the fraction of the target at 50 %; smaller is a steeper fall-off.

    Raises
    ------
    ValueError
        An empty target, or a mask whose shape differs from the dose's.

    References
    ----------
    RTOG 0813 and RTOG 0915 (lung SBRT): "R50%", the ratio of the 50 % prescription isodose
    volume to the PTV volume, with limits tabulated by PTV volume.
    """
    _check_shapes(dose_gy, target_mask, body_mask)
    tv = int(np.count_nonzero(target_mask))
    if tv == 0:
        raise ValueError("gradient_r50: the target mask is empty")
    half = dose_gy >= 0.5 * level_gy
    if body_mask is not None:
        half &= body_mask
    return int(np.count_nonzero(half)) / tv


def air_mask(hu: np.ndarray, threshold_hu: float = AIR_HU) -> np.ndarray:
    """Voxels whose CT number is below ``threshold_hu``.

    Parameters
    ----------
    hu : (nz, ny, nx) float array, HU
    threshold_hu : float, HU
        Default -400 HU (DESIGN.md, "Plan quality").

    Returns
    -------
    (nz, ny, nx) bool array
    """
    return np.asarray(hu) < threshold_hu


def quality_figures(patient: Patient, dose_gy: np.ndarray, protocol: Protocol, *,
                    air_hu: float = AIR_HU) -> tuple[QualityFigure, ...]:
    """The plan-quality figures of a dose on a patient, for the protocol's prescriptions.

    Rows, in this order:

    - per prescribed target the patient has (protocol order), on the patient's structure ``T``:
      ``"Paddick CI"`` at its prescription (PIV counted in the body), ``"R50"`` at its
      prescription (:func:`gradient_r50`), ``"D99%"`` and ``"D95%"`` of the whole target (Gy),
      ``"D99% tissue"`` and ``"D95% tissue"`` of the target less its air (HU < ``air_hu``;
      left out when the target is all air), and ``"air"`` (cc of the target below ``air_hu``);
    - on :data:`NORMAL_TISSUE` (the body outside every prescribed target): ``"Dmean"`` (Gy),
      ``"V35Gy"`` (cc at >= 35 Gy), ``"volume > 107 %"`` and ``"volume > 110 %"`` (cc above that
      fraction of the highest prescription), ``"Dmax"`` (Gy);
    - on :data:`BODY`: ``"Dmax"`` (Gy); and on the highest-prescription target ``T``,
      ``"Dmax in target"``: 1 when the body's maximum is reached inside ``T``, else 0 (unit
      ``""``).

    The body is ``patient.body_mask()`` (external contour, else the possible-dose mask), or every
    voxel when the patient has neither. Note that the conformity of a lower-dose target counts
    the higher-dose targets inside its isodose as spill (the definition, applied as it is).

    Parameters
    ----------
    patient : Patient
    dose_gy : (nz, ny, nx) float array, Gy
        On ``patient.grid``.
    protocol : Protocol
        Its prescriptions and structure names (found in the patient with
        :func:`planner.protocol.map_structures`).
    air_hu : float, HU
        Voxels below it are air (default -400 HU).

    Returns
    -------
    tuple of QualityFigure

    Raises
    ------
    ValueError
        ``dose_gy`` not on the patient's grid.
    InputError
        A structure needed by a non-optional goal of the protocol is missing (from
        :func:`planner.protocol.map_structures`).
    """
    if dose_gy.shape != patient.grid.shape:
        raise ValueError(f"dose shape {dose_gy.shape} differs from grid {patient.grid.shape}")
    dose = np.asarray(dose_gy, dtype=np.float64)
    voxel_cc = patient.grid.voxel_volume_cc
    body = patient.body_mask()
    if body is None:
        body = np.ones(patient.grid.shape, dtype=bool)
    air = air_mask(patient.hu, air_hu)
    mapping = map_structures(protocol, [s.name for s in patient.structures]).mapping

    rows: list[QualityFigure] = []
    targets = [(mapping[rx.target], rx.dose_gy) for rx in protocol.prescriptions
               if rx.target in mapping]
    any_target = np.zeros(patient.grid.shape, dtype=bool)
    for name, rx_gy in targets:
        mask = patient.structure(name).mask
        any_target |= mask
        tissue = mask & ~air
        rows += [QualityFigure("Paddick CI", name,
                               paddick_conformity(dose, mask, rx_gy, body), ""),
                 QualityFigure("R50", name, gradient_r50(dose, mask, rx_gy, body), ""),
                 QualityFigure("D99%", name, dose_at_volume(dose[mask], 0.99), "Gy"),
                 QualityFigure("D95%", name, dose_at_volume(dose[mask], 0.95), "Gy")]
        if tissue.any():
            rows += [QualityFigure("D99% tissue", name, dose_at_volume(dose[tissue], 0.99), "Gy"),
                     QualityFigure("D95% tissue", name, dose_at_volume(dose[tissue], 0.95), "Gy")]
        rows.append(QualityFigure("air", name, float(np.count_nonzero(mask & air)) * voxel_cc,
                                  "cc"))

    highest_gy = (max(rx_gy for _, rx_gy in targets) if targets
                  else max(rx.dose_gy for rx in protocol.prescriptions))
    normal = body & ~any_target
    if normal.any():
        rows += [QualityFigure("Dmean", NORMAL_TISSUE, mean_dose(dose[normal]), "Gy"),
                 QualityFigure(f"V{NORMAL_TISSUE_V_GY:g}Gy", NORMAL_TISSUE,
                               float(np.count_nonzero(dose[normal] >= NORMAL_TISSUE_V_GY))
                               * voxel_cc, "cc")]
        rows += [QualityFigure(f"volume > {100 * f:.0f} %", NORMAL_TISSUE,
                               volume_above_cc(dose, normal, f * highest_gy, voxel_cc), "cc")
                 for f in HOT_SPOT_LEVELS]
        rows.append(QualityFigure("Dmax", NORMAL_TISSUE, float(dose[normal].max()), "Gy"))

    body_max = float(dose[body].max())
    rows.append(QualityFigure("Dmax", BODY, body_max, "Gy"))
    if targets:
        top = max(targets, key=lambda t: t[1])[0]
        top_in_body = patient.structure(top).mask & body
        inside = bool(top_in_body.any()) and float(dose[top_in_body].max()) >= body_max
        rows.append(QualityFigure("Dmax in target", top, 1.0 if inside else 0.0, ""))
    return tuple(rows)


def figure_value(figures: tuple[QualityFigure, ...], name: str, structure: str) -> float:
    """The value of the row called ``name`` on ``structure``; KeyError listing the rows if none.
    """
    for f in figures:
        if f.name == name and f.structure == structure:
            return f.value
    raise KeyError(f"no figure {name!r} on {structure!r}; figures: "
                   f"{[(f.name, f.structure) for f in figures]}")
