"""The beam model in water against published 6 MV data (BJR Supplement 25, DESIGN.md).

Tuned on (dose/commissioning.py, data/beam_model/generic_6mv.toml): the 10 x 10 cm field only,
d_max 15 mm, PDD(10) 67.5 %, PDD(20) 39.3 % and an 80-20 % penumbra of 6.0 mm at 10 cm depth.
Held out (the real check): the 6 x 6 and 7 x 7 cm fields' PDDs, their penumbrae and d_max, and
the output factors of 4 x 4 and 20 x 20 cm fields. Every dose here comes from
``dose.segments.segment_dose`` on a water density grid (ray tracing, fluence, kernels, MU
calibration), not from a separate 1-D model.
"""

import csv
from pathlib import Path

import numpy as np
import pytest

from dose.beam_model import load_beam_model
from dose.commissioning import derive_spectrum, water_field
from dose.machine import load_machine

DATA = Path(__file__).resolve().parents[2] / "data" / "beam_model" / "bjr25_6mv.csv"


def reference(quantity: str, field_cm: float, depth_mm: float = 100.0) -> float:
    lines = [line for line in DATA.read_text().splitlines() if not line.startswith("#")]
    for row in csv.DictReader(lines):
        if (row["quantity"] == quantity and float(row["field_cm"]) == field_cm
                and float(row["depth_mm"]) == depth_mm):
            return float(row["value"])
    raise KeyError((quantity, field_cm, depth_mm))


@pytest.fixture(scope="module")
def fields():
    model, machine = load_beam_model(), load_machine()
    return {side: water_field(model, machine, 10.0 * side) for side in (4, 6, 7, 10, 20)}


@pytest.mark.parametrize("side", [6, 7, 10])
@pytest.mark.parametrize("depth_mm", [100.0, 200.0])
def test_pdd_against_bjr25(fields, side, depth_mm):
    """PDD within 2 % of the local BJR 25 value (MPPG 5.b water tolerance); 10 x 10 was tuned."""
    published = reference("pdd_percent", side, depth_mm)
    assert fields[side].pdd_percent(depth_mm) == pytest.approx(published, rel=0.02)


@pytest.mark.parametrize("side", [6, 7, 10])
def test_dmax_and_penumbra(fields, side):
    """d_max 12-18 mm and 80-20 % penumbra 4-8 mm at 10 cm depth (issue 3 acceptance ranges)."""
    assert 12.0 <= fields[side].dmax_mm <= 18.0
    assert 4.0 <= fields[side].penumbra_mm() <= 8.0


def test_absolute_calibration(fields):
    """100 MU, 10 x 10 cm, SSD 100 cm: 1.00 Gy at d_max (15 mm) within 1 % (DESIGN.md)."""
    assert 100 * fields[10].dose_gy_per_mu(15.0) == pytest.approx(1.00, rel=0.01)
    assert 100 * fields[10].axis_gy_per_mu.max() == pytest.approx(1.00, rel=0.01)


def test_output_factors_rise_with_field_size(fields):
    """Output factors at 10 cm depth relative to 10 x 10 rise with field size; typical published
    values are 0.88 (4 x 4) and 1.06 (20 x 20). Tolerance 5 %: the typical values spread by a few
    per cent between linacs, and this model's scatter range is fitted to one field's PDD only
    (it gives about 0.87 and 1.10; see the report in dose/commissioning.py)."""
    out = {side: fields[side].dose_gy_per_mu(100.0) / fields[10].dose_gy_per_mu(100.0)
           for side in fields}
    sides = sorted(out)
    assert all(out[a] < out[b] for a, b in zip(sides, sides[1:]))
    assert out[4] == pytest.approx(reference("output_factor", 4), rel=0.05)
    assert out[20] == pytest.approx(reference("output_factor", 20), rel=0.05)


def test_tpr_20_10(fields):
    """TPR20,10 from the PDDs (IAEA TRS-398: 1.2661 PDD20/PDD10 - 0.0595) near 0.678 (DESIGN.md);
    a consequence of the tuned 10 x 10 PDDs, so a tight 1 % check of the arithmetic chain."""
    r = fields[10]
    tpr = 1.2661 * r.pdd_percent(200.0) / r.pdd_percent(100.0) - 0.0595
    assert tpr == pytest.approx(0.678, rel=0.01)


def test_spectrum_mean_energy_and_table():
    """The stored spectrum is the derived one (fluence-mean 1.9 MeV, Mohan et al. 1985)."""
    energies, weights, _ = derive_spectrum()
    model = load_beam_model()
    assert model.fluence_mean_energy_mev() == pytest.approx(1.9, abs=0.01)
    np.testing.assert_allclose(model.fluence_weights, weights, rtol=1e-4)  # 6 digits in the table
    np.testing.assert_allclose(model.energies_mev, energies, rtol=1e-4)
    assert energies.size == 14 and energies.min() > 0.2 and energies.max() < 6.0
