"""Commissioning the 6 MV beam model: water-phantom depth doses and profiles, the spectrum, and
the fit of the free kernel parameters to the 10 x 10 cm field.

``python -m dose.commissioning`` regenerates ``data/beam_model/generic_6mv.toml``:

1. Spectrum: a thick-target bremsstrahlung spectrum (Kramers, photon fluence ~ (E0 - E) / E with
   E0 = 6 MeV) hardened by a water-equivalent filter (target + flattening filter) whose thickness
   is set so that the fluence-mean energy is 1.9 MeV (Mohan et al., Med Phys 12:592, 1985),
   in 14 bins from 0.2 to 6 MeV.
2. Source: focal spot and extra-focal source widths and weight are fixed, representative values
   (see the table's comments), not fitted.
3. Kernel: the electron build-up rate, the scattered photons' attenuation and deposited share are
   fitted to d_max = 15 mm, PDD(10 cm) = 67.5 % and PDD(20 cm) = 39.3 % of the 10 x 10 cm field
   at SSD 100 cm (BJR Supplement 25); then the primary lateral rate to an 80-20 % penumbra of
   6.0 mm at 10 cm depth for the same field (typical 6 MV, DESIGN.md). Only the 10 x 10 cm field
   is used: the other fields and the output factors are the held-out check (tests/dose).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import brentq, least_squares

from dose._xp import to_device
from dose.beam_model import (DEFAULT_BEAM_MODEL, BeamModel, calibrated, load_beam_model,
                             water_coefficients)
from dose.beams import Beam
from dose.grid import Grid
from dose.machine import Machine, load_machine
from dose.segments import open_field, segment_dose

SSD_MM = 1000.0
SPECTRUM_EDGES_MEV = np.array([0.2, 0.375, 0.625, 0.875, 1.125, 1.375, 1.625, 1.875, 2.25, 2.75,
                               3.25, 3.75, 4.5, 5.25, 6.0])
MEAN_ENERGY_MEV = 1.9
ENDPOINT_MEV = 6.0


def derive_spectrum(mean_energy_mev: float = MEAN_ENERGY_MEV
                    ) -> tuple[np.ndarray, np.ndarray, float]:
    """Filtered thick-target spectrum in the 14 bins of ``SPECTRUM_EDGES_MEV``.

    Returns
    -------
    energies_mev : (14,) float array, MeV
        Fluence-weighted mean energy of each bin.
    weights : (14,) float array
        Photon fluence per bin, summing to 1.
    filtration_g_cm2 : float, g/cm^2
        Water-equivalent filter giving the requested fluence-mean energy.
    """
    energy = np.linspace(SPECTRUM_EDGES_MEV[0], SPECTRUM_EDGES_MEV[-1], 5801)[:-1] + 0.0005
    mu_per_mm, _ = water_coefficients(energy)
    unfiltered = (ENDPOINT_MEV - energy) / energy

    def spectrum(filtration_g_cm2: float) -> np.ndarray:
        return unfiltered * np.exp(-mu_per_mm * 10.0 * filtration_g_cm2)

    def mean_minus_target(filtration_g_cm2: float) -> float:
        phi = spectrum(filtration_g_cm2)
        return float(np.sum(phi * energy) / phi.sum()) - mean_energy_mev

    filtration = brentq(mean_minus_target, 0.0, 200.0, xtol=1e-6)
    phi = spectrum(filtration)
    bins = np.digitize(energy, SPECTRUM_EDGES_MEV) - 1
    weights = np.bincount(bins, weights=phi, minlength=14)[:14]
    energies = np.bincount(bins, weights=phi * energy, minlength=14)[:14] / weights
    return energies, weights / weights.sum(), float(filtration)


@dataclass(frozen=True)
class WaterResult:
    """Depth dose and profile of one square field in water at SSD 100 cm.

    Attributes
    ----------
    field_mm : float
        Side of the square field at the isocentre (= surface) plane, mm.
    depth_mm : (n,) float array
        Depths of the central-axis dose, mm.
    axis_gy_per_mu : (n,) float array, Gy/MU
    profile_depth_mm : float
    offaxis_mm : (k,) float array
        Positions across the field (X, leaf travel direction) at ``profile_depth_mm``, mm.
    profile_gy_per_mu : (k,) float array, Gy/MU
    """

    field_mm: float
    depth_mm: np.ndarray
    axis_gy_per_mu: np.ndarray
    profile_depth_mm: float
    offaxis_mm: np.ndarray
    profile_gy_per_mu: np.ndarray

    @property
    def dmax_mm(self) -> float:
        """Depth of the maximum, refined by a parabola through the three highest points."""
        i = int(np.argmax(self.axis_gy_per_mu))
        y0, y1, y2 = self.axis_gy_per_mu[i - 1: i + 2]
        step = self.depth_mm[i + 1] - self.depth_mm[i]
        return float(self.depth_mm[i] + 0.5 * step * (y0 - y2) / (y0 - 2 * y1 + y2))

    def pdd_percent(self, depth_mm: float) -> float:
        """Percentage depth dose at ``depth_mm`` (linear interpolation)."""
        return float(100 * np.interp(depth_mm, self.depth_mm, self.axis_gy_per_mu)
                     / self.axis_gy_per_mu.max())

    def dose_gy_per_mu(self, depth_mm: float) -> float:
        return float(np.interp(depth_mm, self.depth_mm, self.axis_gy_per_mu))

    def penumbra_mm(self) -> float:
        """80-20 % width of the +X edge of the profile, relative to the central-axis value."""
        centre = float(np.interp(0.0, self.offaxis_mm, self.profile_gy_per_mu))
        side = self.offaxis_mm >= 0
        x, y = self.offaxis_mm[side], self.profile_gy_per_mu[side] / centre
        # Past the shoulder the profile falls monotonically: interpolate x as a function of y.
        start = int(np.argmax(y < 0.95))
        x, y = x[start:], y[start:]
        return float(np.interp(0.2, y[::-1], x[::-1]) - np.interp(0.8, y[::-1], x[::-1]))


def water_field(model: BeamModel, machine: Machine, field_mm: float, *,
                depth_mm: np.ndarray | None = None, profile_depth_mm: float = 100.0,
                profile_halfwidth_mm: float | None = None, fluence_spacing_mm: float = 1.0,
                ssd_mm: float = SSD_MM, xp: object = np) -> WaterResult:
    """Central-axis depth dose and a profile of a square open field in a water phantom.

    The phantom is a density grid of water (40 cm deep, 30 cm wide plus the field) with its
    surface at SSD 100 cm, computed with :func:`dose.segments.segment_dose` like any patient: the
    same ray tracing, fluence and kernels.

    Parameters
    ----------
    model : BeamModel
    machine : Machine
    field_mm : float, mm
        Side of the square field at the isocentre (= surface) plane.
    depth_mm : (n,) float array, mm, optional
        Central-axis depths, every 1 mm from 0.5 to 300.5 by default.
    profile_depth_mm : float, mm
    profile_halfwidth_mm : float, mm, optional
        Profile from -w to w every 0.5 mm; ``field_mm / 2 + 30`` by default.
    fluence_spacing_mm : float, mm
    ssd_mm : float, mm
        Source-surface distance; the field size is defined at the isocentre (SAD 1000 mm), so
        at SSD 900 mm and 100 mm depth this is the isocentric set-up of output factors.
    xp : module
        ``numpy`` or ``cupy``.
    """
    if depth_mm is None:
        depth_mm = np.arange(0.5, 301.0, 1.0)
    if profile_halfwidth_mm is None:
        profile_halfwidth_mm = field_mm / 2 + 30.0
    half_width = field_mm / 2 + 160.0
    spacing = (4.0, 1.0, 4.0)
    # Gantry 0 looks along +y (LPS posterior): the surface is the plane y = 0 at ``ssd_mm`` from
    # the source, the isocentre is SAD - SSD below it, voxel edges fall on the surface.
    n_x = int(np.ceil(2 * half_width / spacing[2])) | 1
    density_grid = Grid((-spacing[0], spacing[1] / 2, -(n_x // 2) * spacing[2]), spacing,
                        (3, 400, n_x))
    density = xp.ones(density_grid.shape, dtype=xp.float32)
    beam = Beam(0.0, 0.0, 0.0, (0.0, machine.sad_mm - ssd_mm, 0.0))
    segment = open_field(machine, (-field_mm / 2, field_mm / 2), (-field_mm / 2, field_mm / 2), 1.0)
    depth_step = float(depth_mm[1] - depth_mm[0])
    axis_grid = Grid((0.0, float(depth_mm[0]), 0.0), (1.0, depth_step, 1.0), (1, depth_mm.size, 1))
    axis = segment_dose(density, density_grid, axis_grid, [beam], [[segment]], machine, model,
                        fluence_spacing_mm=fluence_spacing_mm)
    offaxis = np.arange(-profile_halfwidth_mm, profile_halfwidth_mm + 0.25, 0.5)
    profile_grid = Grid((0.0, profile_depth_mm, float(offaxis[0])), (1.0, 1.0, 0.5),
                        (1, 1, offaxis.size))
    profile = segment_dose(density, density_grid, profile_grid, [beam], [[segment]], machine,
                           model, fluence_spacing_mm=fluence_spacing_mm)
    return WaterResult(float(field_mm), np.asarray(depth_mm, dtype=float),
                       to_device(axis, "cpu").ravel().astype(float), float(profile_depth_mm),
                       offaxis,
                       to_device(profile, "cpu").ravel().astype(float))


def fit_model(model: BeamModel, machine: Machine, *, dmax_mm: float = 15.0,
              pdd10_percent: float = 67.5, pdd20_percent: float = 39.3,
              penumbra_mm: float = 6.0) -> BeamModel:
    """Fit the kernel's free parameters to the 10 x 10 cm field (see the module docstring)."""
    depths = np.arange(0.5, 221.0, 1.0)

    def with_params(params: np.ndarray, base: BeamModel) -> BeamModel:
        beta, mu_s, eta = np.exp(params)
        return calibrated(replace(base, electron_buildup_per_mm=beta,
                                  scatter_attenuation_per_mm=mu_s, scatter_deposit_fraction=eta))

    def residuals(params: np.ndarray, base: BeamModel) -> np.ndarray:
        result = water_field(with_params(params, base), machine, 100.0, depth_mm=depths,
                             profile_halfwidth_mm=1.0, fluence_spacing_mm=2.0)
        return np.array([(result.dmax_mm - dmax_mm) / 1.0,
                         result.pdd_percent(100.0) - pdd10_percent,
                         result.pdd_percent(200.0) - pdd20_percent])

    start = np.log([model.electron_buildup_per_mm, model.scatter_attenuation_per_mm,
                    model.scatter_deposit_fraction])
    for _ in range(2):  # the penumbra fit hardly moves the depth dose: two rounds settle both
        fit = least_squares(residuals, start, args=(model,), x_scale=0.3, diff_step=1e-3,
                            xtol=1e-6, ftol=1e-8)
        model = with_params(fit.x, model)
        start = fit.x

        def penumbra_minus_target(rate: float, base: BeamModel = model) -> float:
            result = water_field(calibrated(replace(base, primary_lateral_per_mm=rate)), machine,
                                 100.0, depth_mm=np.array([15.0, 16.0]))
            return result.penumbra_mm() - penumbra_mm

        rate = brentq(penumbra_minus_target, 0.05, 5.0, xtol=1e-4)
        model = calibrated(replace(model, primary_lateral_per_mm=rate))
    return model


def write_beam_model(model: BeamModel, filtration_g_cm2: float, path: Path) -> None:
    """Write the model table (TOML) with the provenance of every number."""
    def floats(values: np.ndarray) -> str:
        return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"

    text = f"""# Generic 6 MV pencil-beam model for planner (formula: dose/beam_model.py).
# Generated by `python -m dose.commissioning` (dose/commissioning.py); do not edit by hand.

[spectrum]
# Kramers thick-target spectrum (photon fluence ~ (E0 - E) / E, E0 = {ENDPOINT_MEV} MeV),
# hardened by {filtration_g_cm2:.4g} g/cm^2 of water-equivalent filter, chosen so that the
# fluence-mean energy is {MEAN_ENERGY_MEV} MeV (Mohan et al., Med Phys 12:592, 1985). 14 bins, edges (MeV):
# {floats(SPECTRUM_EDGES_MEV)}
energies_mev = {floats(model.energies_mev)}
fluence_weights = {floats(model.fluence_weights)}

[kernel]
# Fitted to the 10 x 10 cm field only: d_max 15 mm, PDD(10 cm) 67.5 %, PDD(20 cm) 39.3 % (BJR
# Supplement 25, SSD 100 cm), and an 80-20 % penumbra of 6.0 mm at 10 cm depth (typical 6 MV).
electron_buildup_per_mm = {model.electron_buildup_per_mm:.6g}
scatter_attenuation_per_mm = {model.scatter_attenuation_per_mm:.6g}
scatter_deposit_fraction = {model.scatter_deposit_fraction:.6g}
primary_lateral_per_mm = {model.primary_lateral_per_mm:.6g}

[source]
# Fixed, representative values (not fitted). Focal spot: about 1.5-2 mm FWHM electron spot on the
# target (Jaffray et al., Med Phys 20:1417, 1993), projected to the isocentre plane.
# Extra-focal (flattening filter) source: a broad Gaussian carrying about 8 % of the fluence
# (Ahnesjo, Med Phys 21:1227, 1994 reports 5-12 % head scatter for 4-18 MV), its width set by a
# filter about 120 mm from the target seen through jaws about 400 mm from the target.
focal_sigma_mm = {model.focal_sigma_mm:.6g}
extrafocal_fraction = {model.extrafocal_fraction:.6g}
extrafocal_sigma_mm = {model.extrafocal_sigma_mm:.6g}
"""
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the 6 MV beam model table.")
    parser.add_argument("--out", type=Path, default=DEFAULT_BEAM_MODEL)
    args = parser.parse_args(argv)
    machine = load_machine()
    energies, weights, filtration = derive_spectrum()
    model = replace(load_beam_model(), energies_mev=energies, fluence_weights=weights)
    mu, mu_en = water_coefficients(energies)
    model = replace(model, mu_per_mm=mu, mu_en_per_mm=mu_en)
    model = fit_model(calibrated(model), machine)
    write_beam_model(model, filtration, args.out)
    print(f"wrote {args.out}: {model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
