"""``planner plan --prescription`` and ``planner protocol init`` on DICOM patients the tests
write themselves: TG-263 names and local variants plan end to end, unknown and ambiguous target
names fail clearly, and the ``protocol init`` file plans the same as ``--prescription``.

The plans are CI-sized (3 coarse beams, 3 segments, unseeded: the C-shape is no head and neck).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from planner.cli.main import main
from planner.io.dicom_patient import write_dicom_patient
from planner.patient import Structure
from planner.phantoms import cshape_phantom

COARSE = ["--device", "cpu", "--beams", "3", "--beamlet-mm", "10", "--dose-grid-mm", "10",
          "--max-segments", "2", "--no-seed"]


def _dicom_patient(folder, names: dict[str, str], extra: tuple[str, ...] = ()):
    """The 8 mm C-shape with its PTV and core renamed (``names``) and small organs ``extra``
    (2 x 2 x 2 voxels at a corner of the body), written as CT + RTSTRUCT."""
    patient = cshape_phantom(voxel_mm=8.0, body_size_mm=(112.0, 144.0, 192.0), margin_mm=8.0)
    structures = [dataclasses.replace(s, name=names.get(s.name, s.name))
                  for s in patient.structures]
    body = patient.structure("BODY").mask
    z, y, x = (int(v.min()) + 2 for v in np.nonzero(body))
    for k, name in enumerate(extra):
        mask = np.zeros(patient.grid.shape, dtype=bool)
        mask[z:z + 2, y + 3 * k:y + 3 * k + 2, x:x + 2] = True
        structures.append(Structure(name, "organ", mask))
    write_dicom_patient(dataclasses.replace(patient, structures=tuple(structures)), folder)
    return folder


@pytest.fixture(scope="module")
def tg263_patient(tmp_path_factory):
    return _dicom_patient(tmp_path_factory.mktemp("tg263") / "ct",
                          {"PTV": "PTV_5000", "Core": "SpinalCord"}, ("Parotid_L", "Mystery"))


@pytest.fixture(scope="module")
def local_patient(tmp_path_factory):
    return _dicom_patient(tmp_path_factory.mktemp("local") / "ct",
                          {"PTV": "ptv 50gy", "Core": "Spinal-Cord"}, ("Lt Parotid",))


@pytest.mark.parametrize("which, prescription, cord", [
    ("tg263_patient", "PTV_5000=50/25", "SpinalCord"),
    ("local_patient", "PTV50=50/25", "Spinal-Cord"),
])
def test_prescription_plans_with_standard_and_local_names(tmp_path, capsys, request, which,
                                                          prescription, cord):
    folder = request.getfixturevalue(which)
    out = tmp_path / "plan"
    assert main(["plan", str(folder), "--prescription", prescription, "--out", str(out)]
                + COARSE) == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    target = prescription.split("=")[0]
    mapping = summary["structures"]["mapping"]
    assert mapping["SpinalCord"] == cord and mapping["Parotid_L"] in ("Parotid_L", "Lt Parotid")
    assert f"structures: {target}" in err  # the mapping, printed
    goals = {row["goal"] for row in summary["goals"]["plan"]}
    assert {f"{target} D99% >= 95 %", "SpinalCord D0.1cc <= 45 Gy",
            "Parotid_L Dmean <= 26 Gy"} <= goals
    if which == "tg263_patient":
        assert "protocol: no standard limits for Mystery" in err
        assert summary["structures"]["unmapped"] == ["BODY", "Mystery"]


@pytest.mark.parametrize("prescription, message", [
    ("PTV63=63/35", "--prescription PTV63=63/35: no structure 'PTV63' among the patient's"),
    ("PTV_50Gy=50/25", "--prescription PTV_50Gy=50/25: PTV_50Gy is ambiguous: it matches "
                       "'PTV_5000' and 'PTV50'"),
    ("PTV_5000=50", "--prescription PTV_5000=50: expected NAME=DOSE/FRACTIONS"),
])
def test_unknown_or_ambiguous_target_fails_clearly(tmp_path, capsys, prescription, message):
    folder = _dicom_patient(tmp_path / "ct", {"PTV": "PTV_5000"}, ("PTV50",))
    out = tmp_path / "plan"
    assert main(["plan", str(folder), "--prescription", prescription, "--out", str(out)]
                + COARSE) == 2
    captured = capsys.readouterr()
    assert captured.err == f"planner: error: {message}" + captured.err.split(message)[1]
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert not out.exists()


def test_protocol_init_file_plans_the_same_as_the_prescription(tmp_path, capsys, local_patient):
    protocol = tmp_path / "protocol.toml"
    assert main(["protocol", "init", str(local_patient), "--prescription", "PTV50=50/25",
                 "--toml", str(protocol)]) == 0
    text = protocol.read_text()
    assert "# patient structure: 'Spinal-Cord'" in text
    assert "# source: RTOG 0225 / 0615 (OpenKBP-Opt criteria)" in text
    capsys.readouterr()
    # Standard output by default; the file is not overwritten without --force.
    assert main(["protocol", "init", str(local_patient), "--prescription", "PTV50=50/25"]) == 0
    assert capsys.readouterr().out == text
    assert main(["protocol", "init", str(local_patient), "--toml", str(protocol)]) == 2
    assert "already exists" in capsys.readouterr().err and protocol.read_text() == text

    plans = {}
    for how in (["--prescription", "PTV50=50/25"], ["--protocol", str(protocol)]):
        out = tmp_path / how[0].strip("-")
        assert main(["plan", str(local_patient), *how, "--out", str(out)] + COARSE) == 0
        plans[how[0]] = json.loads((out / "summary.json").read_text())
    a, b = plans["--prescription"], plans["--protocol"]
    assert a["structures"] == b["structures"]
    assert a["goals"] == b["goals"] and a["mu"] == b["mu"]
