"""The 6 MV beam model: spectrum, depth terms of the pencil kernel, lateral kernels, source.

The dose per MU at a point of radiological depth ``d`` and beam's-eye position ``(u, v)`` at
magnification ``m = t / SAD`` is (a two-component pencil-beam model in the form of Ahnesjo et al.,
Med Phys 19:263, 1992, with depth terms built from the spectrum)::

    D = c * (SAD / t)^2 * [P(d) * (F (*) k_p,m)(u, v) + S(d) * (F (*) k_s,m)(u, v)]

- ``F`` is the MU fluence at the isocentre plane blurred by the source: a Gaussian focal spot and a
  broad Gaussian extra-focal (flattening-filter) source carrying the head scatter.
- ``P(d)`` is the primary collision kerma of the polyenergetic spectrum
  ``sum_E w_E E (mu_en/rho)_E exp(-mu_E d)`` carried forward by the secondary electrons (an
  exponential build-up of rate ``electron_buildup_per_mm``); beam hardening follows from the
  spectrum.
- ``S(d)`` is the energy handed to scattered photons ``sum_E w_E E (mu - mu_en)_E exp(-mu_E d)``
  carried forward over their mean free path ``1 / scatter_attenuation_per_mm`` with a deposited
  share ``scatter_deposit_fraction``.
- The lateral kernels ``k(r) = b exp(-b r) / (2 pi r)`` (each integrates to 1 over the plane) have
  the primary rate ``primary_lateral_per_mm`` (electron transport) and the scatter rate
  ``scatter_attenuation_per_mm``; at magnification ``m`` they are evaluated at ``m r`` (physical
  distance at depth) with area ``m^2``, so fields widen with depth.
- ``c`` (``gy_per_mu``) makes 100 MU give 1 Gy at 15 mm depth on the axis of a 10 x 10 cm field at
  SSD 100 cm (DESIGN.md calibration).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dose._data import DATA_DIR
from dose._xp import array_module, fft_module, ndimage_module

DEFAULT_BEAM_MODEL = DATA_DIR / "beam_model" / "generic_6mv.toml"
WATER_TABLE = DATA_DIR / "beam_model" / "water_attenuation.csv"
CALIBRATION_DEPTH_MM = 15.0
CALIBRATION_FIELD_MM = 100.0
CALIBRATION_GY_PER_MU = 0.01
DEPTH_STEP_MM = 0.5
MAX_DEPTH_MM = 800.0
# Magnification planes: the Dij's beamlet table takes the nearest (0.025 apart: the kernels'
# scale within 1.25 %); segment doses interpolate linearly between planes 0.05 apart, within
# 1.3e-4 of each segment's maximum of planes 0.0125 apart (fields of OpenKBP pt_201's plan).
MAGNIFICATION_STEP = 0.025
INTERPOLATED_MAGNIFICATION_STEP = 0.05
# Lateral densities (g/cm^3) of the primary planes: lung to cortical bone, closer near water.
LATERAL_DENSITIES = np.array([0.2, 0.3, 0.45, 0.65, 0.85, 1.0, 1.2, 1.5, 1.9])
REACH_MM = 150.0  # fluence maps extend this far beyond the jaws: the kernels' reach


@dataclass(frozen=True)
class BeamModel:
    """Parameters of the 6 MV pencil-beam model (see the module docstring).

    Parameters
    ----------
    energies_mev : (n_bins,) float array, MeV
        Representative energy of each spectrum bin.
    fluence_weights : (n_bins,) float array
        Photon fluence per bin, normalised to sum 1.
    mu_per_mm, mu_en_per_mm : (n_bins,) float arrays, 1/mm
        Linear attenuation and energy-absorption coefficients of water at each bin energy.
    electron_buildup_per_mm : float, 1/mm
    scatter_attenuation_per_mm : float, 1/mm
    scatter_deposit_fraction : float
    primary_lateral_per_mm : float, 1/mm
    focal_sigma_mm : float, mm
        Gaussian focal-spot blur projected to the isocentre plane.
    extrafocal_fraction : float
        Share of the fluence from the extra-focal source.
    extrafocal_sigma_mm : float, mm
        Width of the extra-focal source projected to the isocentre plane.
    gy_per_mu : float
        Calibration constant ``c``; computed by :func:`load_beam_model`.
    """

    energies_mev: np.ndarray = field(repr=False)
    fluence_weights: np.ndarray = field(repr=False)
    mu_per_mm: np.ndarray = field(repr=False)
    mu_en_per_mm: np.ndarray = field(repr=False)
    electron_buildup_per_mm: float
    scatter_attenuation_per_mm: float
    scatter_deposit_fraction: float
    primary_lateral_per_mm: float
    focal_sigma_mm: float
    extrafocal_fraction: float
    extrafocal_sigma_mm: float
    gy_per_mu: float = 1.0

    def fluence_mean_energy_mev(self) -> float:
        """Fluence-weighted mean photon energy of the spectrum, MeV."""
        return float(np.sum(self.fluence_weights * self.energies_mev) / self.fluence_weights.sum())


def water_coefficients(energies_mev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear ``mu`` and ``mu_en`` of water (1/mm) at ``energies_mev`` (log-log interpolation of
    the NIST table in ``data/beam_model/water_attenuation.csv``)."""
    table = np.loadtxt(WATER_TABLE, delimiter=",", comments="#", skiprows=9)
    log_e = np.log(np.asarray(energies_mev, dtype=float))
    mu = np.exp(np.interp(log_e, np.log(table[:, 0]), np.log(table[:, 1])))
    mu_en = np.exp(np.interp(log_e, np.log(table[:, 0]), np.log(table[:, 2])))
    return mu / 10.0, mu_en / 10.0  # cm^2/g at 1 g/cm^3 -> 1/mm


def load_beam_model(path: str | Path = DEFAULT_BEAM_MODEL) -> BeamModel:
    """Read the beam model table and compute its MU calibration.

    Parameters
    ----------
    path : str or Path
        TOML table (``data/beam_model/generic_6mv.toml`` by default; regenerated by
        ``python -m dose.commissioning``).

    Returns
    -------
    BeamModel
        With ``gy_per_mu`` set so that the model meets the DESIGN.md calibration.
    """
    path = Path(path)
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    try:
        spectrum, kernel, source = data["spectrum"], data["kernel"], data["source"]
        energies = np.asarray(spectrum["energies_mev"], dtype=float)
        weights = np.asarray(spectrum["fluence_weights"], dtype=float)
        mu, mu_en = water_coefficients(energies)
        model = BeamModel(
            energies_mev=energies, fluence_weights=weights / weights.sum(),
            mu_per_mm=mu, mu_en_per_mm=mu_en,
            electron_buildup_per_mm=float(kernel["electron_buildup_per_mm"]),
            scatter_attenuation_per_mm=float(kernel["scatter_attenuation_per_mm"]),
            scatter_deposit_fraction=float(kernel["scatter_deposit_fraction"]),
            primary_lateral_per_mm=float(kernel["primary_lateral_per_mm"]),
            focal_sigma_mm=float(source["focal_sigma_mm"]),
            extrafocal_fraction=float(source["extrafocal_fraction"]),
            extrafocal_sigma_mm=float(source["extrafocal_sigma_mm"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: invalid beam model ({error})") from error
    return calibrated(model)


def calibrated(model: BeamModel) -> BeamModel:
    """The model with ``gy_per_mu`` set to the DESIGN.md calibration (1 cGy/MU at 15 mm depth,
    10 x 10 cm field, SSD 100 cm, on the axis)."""
    sad = 1000.0
    depth = CALIBRATION_DEPTH_MM
    spacing = 1.0
    half = CALIBRATION_FIELD_MM / 2
    edges = np.arange(-half - REACH_MM, half + REACH_MM + spacing / 2, spacing)
    planes = lateral_planes(centred_square(edges, half), spacing, edges[0], edges[0],
                            np.array([(sad + depth) / sad]), model)
    t = np.array([sad + depth])
    primary_conv, scatter_conv = sample_planes(planes, t, np.zeros(1), np.zeros(1), sad)
    primary, scatter = depth_terms(model, np.array([depth]))
    per_mu = (sad / t[0]) ** 2 * (primary[0] * primary_conv[0] + scatter[0] * scatter_conv[0])
    return replace(model, gy_per_mu=CALIBRATION_GY_PER_MU / float(per_mu))


def centred_square(edges_mm: np.ndarray, half_mm: float) -> np.ndarray:
    """Open fraction of each pixel of a square ``[-half, half]^2`` on a grid with these pixel
    edges (the same along u and v), ``(n, n)``: a 1 MU square field's fluence."""
    open_1d = np.clip(np.minimum(edges_mm[1:], half_mm) - np.maximum(edges_mm[:-1], -half_mm),
                      0, None) / np.diff(edges_mm)
    return np.outer(open_1d, open_1d)


def depth_terms(model: BeamModel, depth_mm: Any) -> tuple[Any, Any]:
    """Primary ``P(d)`` and scatter ``S(d)`` depth terms at radiological depths ``depth_mm``.

    Parameters
    ----------
    model : BeamModel
    depth_mm : array, mm (water-equivalent), any shape, numpy or cupy

    Returns
    -------
    primary, scatter : arrays like ``depth_mm``
        Energy deposited per unit energy fluence, relative units (the calibration sits in
        ``model.gy_per_mu``). Both are 0 at the surface and build up over the electron range and
        the scattered photons' mean free path.
    """
    xp = array_module(depth_mm)
    table_depth, table_primary, table_scatter = depth_tables(model)
    depth = xp.clip(depth_mm, 0.0, MAX_DEPTH_MM)
    grid = xp.asarray(table_depth)
    primary = xp.interp(depth, grid, xp.asarray(table_primary))
    scatter = xp.interp(depth, grid, xp.asarray(table_scatter))
    return primary, scatter


def _forward_carry(released: np.ndarray, rate_per_mm: float, step_mm: float) -> np.ndarray:
    """``out(z) = int_0^z released(z') rate exp(-rate (z - z')) dz'`` on a uniform grid (exact
    for ``released`` linear within each step)."""
    decay = np.exp(-rate_per_mm * step_mm)
    # Exact integral over one step of a linear function times the exponential kernel; unrolled,
    # out[i] = w_new x[i] + sum_k>=1 decay^(k-1) (w_old + decay w_new) x[i-k], with out[0] = 0.
    w_new = 1.0 - (1.0 - decay) / (rate_per_mm * step_mm)
    w_old = (1.0 - decay) / (rate_per_mm * step_mm) - decay
    n = released.size
    powers = decay ** np.arange(n)
    taps = np.concatenate([[w_new], (w_old + decay * w_new) * powers[:-1]])
    return np.convolve(released, taps)[:n] - released[0] * w_new * powers


def depth_tables(model: BeamModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth terms tabulated every ``DEPTH_STEP_MM`` from 0 to ``MAX_DEPTH_MM``.

    Returns
    -------
    depth_mm, primary, scatter : (n,) float64 arrays
    """
    depth = np.arange(0.0, MAX_DEPTH_MM + DEPTH_STEP_MM / 2, DEPTH_STEP_MM)
    attenuation = np.exp(-np.outer(depth, model.mu_per_mm))
    energy_fluence = model.fluence_weights * model.energies_mev
    kerma = attenuation @ (energy_fluence * model.mu_en_per_mm)
    to_scatter = attenuation @ (energy_fluence * (model.mu_per_mm - model.mu_en_per_mm))
    primary = _forward_carry(kerma, model.electron_buildup_per_mm, DEPTH_STEP_MM)
    scatter = model.scatter_deposit_fraction * _forward_carry(
        to_scatter, model.scatter_attenuation_per_mm, DEPTH_STEP_MM)
    return depth, primary, scatter


@dataclass(frozen=True)
class Planes:
    """Fluences convolved with the primary and scatter kernels at several magnifications.

    The primary planes are on the fluence's pixels; the scatter planes, smooth, on pixels
    ``scatter_factor`` times larger (same first edge).

    Attributes
    ----------
    primary : (n_m, n_rho, nv, nu) float32 array, MU
        One plane per magnification and lateral density (primary kernel rate scaled by the
        density, see :func:`lateral_planes`); ``(n_f, n_m, n_rho, nv, nu)`` for ``n_f`` fluences.
    scatter : (n_m, nv // f, nu // f) float32 array, MU
        ``(n_f, n_m, nv // f, nu // f)`` for ``n_f`` fluences.
    magnifications : (n_m,) float array, evenly spaced
    densities : (n_rho,) float array, g/cm^3, increasing
    u0_mm, v0_mm : float, mm
        Lower edges of the maps at the isocentre plane.
    spacing_mm : float, mm
        Primary pixel size.
    scatter_factor : int
    """

    primary: Any
    scatter: Any
    magnifications: np.ndarray
    densities: np.ndarray
    u0_mm: float
    v0_mm: float
    spacing_mm: float
    scatter_factor: int


def lateral_planes(fluence: Any, spacing_mm: float, u0_mm: float, v0_mm: float,
                   magnifications: np.ndarray, model: BeamModel, *,
                   densities: np.ndarray = np.array([1.0]),
                   scatter_spacing_mm: float = 2.0) -> Planes:
    """Fluence blurred by the source and convolved with the lateral kernels, per magnification.

    The convolutions are products in the Fourier domain with the kernels' analytic transforms
    (a kernel at magnification ``m`` has transform ``b / sqrt(b^2 + (k/m)^2)``) and the source's
    Gaussian transforms. The maps are zero-padded so that the periodic images of the kernels
    stay negligible: 20 mm / density for the primary kernel (images at least 40 mm / density
    away: ``exp(-b 40 mm) < 1e-5`` for the fitted b) and three map widths for the scatter
    kernel. The transforms are float32 (relative error ~1e-6 of the map's maximum, below the
    float32 planes' own rounding); a stack of fluences shares the kernels' transforms.

    Lateral density scaling: the secondary electrons that spread the primary dose travel
    ``1 / density`` times further in a medium of that density (same kernel in radiological
    distance), so the primary kernel at density ``rho`` has rate ``b rho``; this gives the lower
    dose inside lung of fields narrower than the electrons' range (lateral disequilibrium). The
    scatter kernel is not scaled (photon scatter reaching a point comes from the whole
    irradiated volume, not only the local medium).

    Parameters
    ----------
    fluence : (nv, nu) or (n_f, nv, nu) array, MU (numpy or cupy)
        Fluence on square pixels of ``spacing_mm`` at the isocentre plane (rows v, columns u);
        with a leading axis, ``n_f`` fluences on the same pixels.
    spacing_mm : float, mm
    u0_mm, v0_mm : float, mm
        Lower edges of the map along u and v.
    magnifications : (n_m,) float array, evenly spaced
        ``t / SAD`` at which the kernels are evaluated.
    model : BeamModel
    densities : (n_rho,) float array, g/cm^3
        Lateral densities at which the primary planes are computed (increasing).
    scatter_spacing_mm : float, mm
        Approximate pixel size for the scatter convolution (a whole multiple of ``spacing_mm``).

    Returns
    -------
    Planes
        With a leading ``n_f`` axis on its arrays when ``fluence`` has one.
    """
    xp = array_module(fluence)
    fft = fft_module(xp)
    stacked = xp.asarray(fluence, dtype=xp.float32)
    single = stacked.ndim == 2
    if single:
        stacked = stacked[None]
    count, nv, nu = stacked.shape
    factor = max(1, int(round(scatter_spacing_mm / spacing_mm)))
    # Block sums keep the scatter map's integral; pad to whole blocks.
    cv, cu = -(-nv // factor), -(-nu // factor)
    blocks = xp.zeros((count, cv * factor, cu * factor), dtype=xp.float32)
    blocks[:, :nv, :nu] = stacked
    coarse = blocks.reshape(count, cv, factor, cu, factor).mean(axis=(2, 4))

    def convolve(images: Any, spacing: float, pad: int, rates: list[float], out: Any) -> None:
        """``images`` convolved with the kernels of ``rates``, for each magnification, into
        ``out`` (count, magnifications, rates, rows, cols)."""
        rows, cols = images.shape[1:]
        shape = (_fast_len(rows + 2 * pad), _fast_len(cols + 2 * pad))
        spectrum = fft.rfft2(images, s=shape)
        kv = 2 * np.pi * np.fft.fftfreq(shape[0], d=spacing)[:, None]
        ku = 2 * np.pi * np.fft.rfftfreq(shape[1], d=spacing)[None, :]
        k2 = kv**2 + ku**2
        source = ((1 - model.extrafocal_fraction) * np.exp(-0.5 * k2 * model.focal_sigma_mm**2)
                  + model.extrafocal_fraction * np.exp(-0.5 * k2 * model.extrafocal_sigma_mm**2))
        # The source's transform is folded into the spectrum once; each plane's kernel transform
        # (b / sqrt(b^2 + (k/m)^2), the Hankel transform of b exp(-b r) / (2 pi r)) is then three
        # float32 passes on the device.
        spectrum *= xp.asarray(source, dtype=xp.float32)
        k2 = xp.asarray(k2, dtype=xp.float32)
        transfer = xp.empty_like(k2)
        for index, magnification in enumerate(magnifications):
            for which, rate in enumerate(rates):
                xp.multiply(k2, np.float32(1.0 / magnification**2), out=transfer)
                transfer += np.float32(rate**2)
                xp.sqrt(transfer, out=transfer)
                xp.divide(np.float32(rate), transfer, out=transfer)
                out[:, index, which] = fft.irfft2(spectrum * transfer, s=shape)[:, :rows, :cols]

    densities = np.asarray(densities, dtype=float)
    primary = xp.empty((count, len(magnifications), densities.size, nv, nu), dtype=xp.float32)
    # Each density's planes padded for its own kernel's reach: the transforms of the denser
    # planes are smaller (a third of the area at 1.9 g/cm^3 of that at 0.2 for a 10 cm field).
    for which, rho in enumerate(densities):
        convolve(stacked, spacing_mm, int(np.ceil(20.0 / rho / spacing_mm)),
                 [model.primary_lateral_per_mm * rho], primary[:, :, which:which + 1])
    scatter = xp.empty((count, len(magnifications), 1, cv, cu), dtype=xp.float32)
    convolve(coarse, spacing_mm * factor, max(cv, cu), [model.scatter_attenuation_per_mm],
             scatter)
    scatter = scatter[:, :, 0]
    if single:
        primary, scatter = primary[0], scatter[0]
    return Planes(primary, scatter, np.asarray(magnifications, dtype=float), densities,
                  float(u0_mm), float(v0_mm), float(spacing_mm), factor)


def density_planes(lateral_density: Any) -> np.ndarray:
    """The lateral densities of ``LATERAL_DENSITIES`` whose planes cover the 1st to 99th
    percentile of the voxels' lateral densities (g/cm^3); just ``[1.0]`` for water. Voxels
    outside take the nearest plane (e.g. partial-volume voxels at the skin)."""
    xp = array_module(lateral_density)
    if lateral_density.size == 0:
        return np.array([1.0])
    low, high = (float(v) for v in xp.percentile(lateral_density, xp.asarray([1.0, 99.0])))
    grid = LATERAL_DENSITIES
    first = max(0, int(np.searchsorted(grid, low, side="right")) - 1)
    last = min(grid.size - 1, int(np.searchsorted(grid, high, side="left")))
    return grid[first:last + 1]


def magnification_planes(t_min_mm: float, t_max_mm: float, sad_mm: float,
                         step: float = MAGNIFICATION_STEP) -> np.ndarray:
    """Magnifications ``t / SAD`` at which lateral planes are computed to cover ``[t_min, t_max]``:
    the multiples of ``step`` (0.025: 25 mm of depth at SAD 1000 mm; see ``MAGNIFICATION_STEP``
    and ``INTERPOLATED_MAGNIFICATION_STEP``) from the last at or below ``t_min`` to the first at
    or above ``t_max``, so that a voxel's dose does not depend on which voxels share its planes
    (one plane more where ``t_min`` or ``t_max`` is on a plane: rounding must not put it
    outside)."""
    first = int(np.floor(t_min_mm / sad_mm / step - 1e-6))
    last = max(int(np.ceil(t_max_mm / sad_mm / step + 1e-6)), first + 1)
    return step * np.arange(first, last + 1)


@dataclass(frozen=True)
class PlaneLookup:
    """Multilinear interpolation of planes at fixed points, shared by every fluence whose planes
    have the same layout (all segments of a beam).

    Attributes
    ----------
    primary_index, scatter_index : (n_corners, n) int arrays
        Flat indices into one fluence's primary (2^4 or 2^3 corners: m, [rho,] v, u) and scatter
        (2^3 corners) planes.
    primary_weight, scatter_weight : (n_corners, n) float32 arrays
        Interpolation weights; all 0 for a point outside the planes.
    """

    primary_index: Any
    primary_weight: Any
    scatter_index: Any
    scatter_weight: Any


def _corners(shape: tuple[int, ...], coords: list[Any]) -> tuple[Any, Any]:
    """Flat indices and weights ``(2^d, n)`` of multilinear interpolation on an array of
    ``shape`` at index coordinates ``coords`` (d arrays (n,)); a point outside ``[0, size - 1]``
    in any axis gets weight 0, as in ``map_coordinates(order=1, mode="constant", cval=0)``."""
    xp = array_module(*coords)
    n = coords[0].size
    index_type = xp.int32 if int(np.prod(shape)) < 2**31 else xp.int64
    inside = xp.ones(n, dtype=bool)
    index = xp.zeros((1, n), dtype=index_type)
    weight = xp.ones((1, n), dtype=xp.float32)
    stride = int(np.prod(shape))
    for size, coord in zip(shape, coords):
        stride //= size
        coord = coord.astype(xp.float64)
        inside &= (coord >= 0) & (coord <= size - 1)
        low = xp.clip(xp.floor(coord), 0, max(size - 2, 0))
        fraction = (coord - low).astype(xp.float32)
        offset = (low * stride).astype(index_type)
        # Each axis doubles the corners: lower neighbour then upper (same cell if size 1).
        index = xp.concatenate([index + offset, index + offset + (stride if size > 1 else 0)])
        weight = xp.concatenate([weight * (1 - fraction), weight * fraction])
    return xp.where(inside, index, 0), weight * inside


def _plane_coordinates(planes: Planes, t_mm: Any, u_mm: Any, v_mm: Any, sad_mm: float,
                       density: Any) -> list[tuple[tuple[int, ...], Any]]:
    """For the primary then the scatter planes: the shape of one fluence's planes as they are
    interpolated (no density axis when there is one density) and the points' index coordinates
    in it, ``(d, n)`` float32."""
    xp = array_module(planes.primary)
    m = planes.magnifications
    m_index = (t_mm / sad_mm - m[0]) / (m[1] - m[0]) if m.size > 1 else 0.0 * t_mm
    out = []
    for shape, spacing in ((planes.primary.shape[-4:], planes.spacing_mm),
                           (planes.scatter.shape[-3:], planes.spacing_mm * planes.scatter_factor)):
        coords = [m_index, (v_mm - planes.v0_mm) / spacing - 0.5,
                  (u_mm - planes.u0_mm) / spacing - 0.5]
        if len(shape) == 4:
            if planes.densities.size == 1:
                shape = shape[:1] + shape[2:]
            else:
                coords.insert(1, xp.interp(density, xp.asarray(planes.densities),
                                           xp.arange(planes.densities.size, dtype=xp.float64)))
        out.append((tuple(shape), xp.stack(coords).astype(xp.float32)))
    return out


def plane_lookup(planes: Planes, t_mm: Any, u_mm: Any, v_mm: Any, sad_mm: float,
                 density: Any = None) -> PlaneLookup:
    """Interpolation of ``planes`` (one fluence's layout) at beam's-eye-view points, linear in
    (m, rho, v, u).

    Parameters
    ----------
    planes : Planes
        Supplies the layout (magnifications, densities, map shapes and edges); with a leading
        fluence axis, the layout of each fluence.
    t_mm, u_mm, v_mm : (n,) float arrays, mm
        Axial distance from the source and isocentre-plane position of each point.
    sad_mm : float, mm
    density : (n,) float array, g/cm^3, optional
        Lateral density at each point (needed when the planes have more than one density).

    Returns
    -------
    PlaneLookup
    """
    tables = [_corners(shape, list(coords))
              for shape, coords in _plane_coordinates(planes, t_mm, u_mm, v_mm, sad_mm, density)]
    return PlaneLookup(tables[0][0], tables[0][1], tables[1][0], tables[1][1])


def sample_lookup(planes: Planes, lookup: PlaneLookup) -> tuple[Any, Any]:
    """Primary and scatter values of ``planes`` at a lookup's points.

    Returns
    -------
    primary, scatter : (n,) float32 arrays, MU (0 outside the maps)
        ``(n_f, n)`` when the planes hold a stack of ``n_f`` fluences.
    """
    xp = array_module(planes.primary)
    values = []
    for array, index, weight, ndim in ((planes.primary, lookup.primary_index,
                                        lookup.primary_weight, 4),
                                       (planes.scatter, lookup.scatter_index,
                                        lookup.scatter_weight, 3)):
        stack = array[None] if array.ndim == ndim else array
        flat = stack.reshape(stack.shape[0], -1)
        total = xp.stack([(xp.take(plane, index) * weight).sum(axis=0) for plane in flat])
        values.append(total[0] if array.ndim == ndim else total)
    return values[0], values[1]


def sample_planes(planes: Planes, t_mm: Any, u_mm: Any, v_mm: Any, sad_mm: float,
                  density: Any = None) -> tuple[Any, Any]:
    """Primary and scatter convolutions at beam's-eye-view points, linear in (m, rho, v, u).

    Parameters
    ----------
    planes : Planes
        One fluence's planes (or a stack of one). For many fluences at the same points,
        :func:`plane_lookup` and :func:`sample_lookup` share the interpolation instead.
    t_mm, u_mm, v_mm : (n,) float arrays, mm
        Axial distance from the source and isocentre-plane position of each point.
    sad_mm : float, mm
    density : (n,) float array, g/cm^3, optional
        Lateral density at each point (needed when the planes have more than one density).

    Returns
    -------
    primary, scatter : (n,) float32 arrays, MU (0 outside the maps)
    """
    ndimage = ndimage_module(array_module(planes.primary))
    values = []
    layouts = _plane_coordinates(planes, t_mm, u_mm, v_mm, sad_mm, density)
    for array, (shape, coords) in zip((planes.primary, planes.scatter), layouts):
        values.append(ndimage.map_coordinates(array.reshape(shape), coords, order=1,
                                              mode="constant", cval=0.0))
    return values[0], values[1]


def _fast_len(n: int) -> int:
    """The next size >= n made of factors 2, 3 and 5 (fast FFT on numpy and cupy)."""
    size = n
    while True:
        m = size
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return size
        size += 1
