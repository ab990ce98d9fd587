"""Inference: resampling on analytic volumes, applicability, predictions on OpenKBP and other
grids."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dose.grid import Grid
from planner.errors import InputError
from planner.io.openkbp import read_openkbp_case, read_openkbp_patient
from planner.patient import Patient, Prescription, Structure
from planner.phantoms import cshape_phantom
from planner.predict.data import CHANNELS, MIRRORED_CHANNELS
from planner.predict.infer import (
    DEFAULT_MODEL,
    VIEW_SHIFTS_VOXELS,
    load_model,
    network_grid,
    openkbp_organs,
    predict_dose,
    predict_inputs,
    save_model,
    shift_volume,
    unsupported_reason,
)
from planner.predict.metrics import overall_scores, score_patient
from planner.predict.model import DoseEnsemble, DoseUNet


def _tiny_model(seed: int = 0) -> DoseUNet:
    torch.manual_seed(seed)
    return DoseUNet(len(CHANNELS), 4, 3).eval()


def test_unsupported_patients_say_why():
    phantom = cshape_phantom()
    assert "not head and neck: none of the organs" in unsupported_reason(phantom)
    bare = dataclasses.replace(phantom, prescriptions=())
    assert unsupported_reason(bare) == "no target with a prescription"
    with pytest.raises(InputError, match="dose prediction not possible: no target"):
        predict_dose(bare, _tiny_model())


def test_organ_aliases():
    grid = Grid((0, 0, 0), (1, 1, 1), (2, 2, 2))
    mask = np.zeros(grid.shape, bool)
    names = ["Parotid_L", "parotid R", "Cord", "BrainStem", "PTV70", "Oesophagus", "Heart"]
    structures = tuple(Structure(n, "target" if n.startswith("PTV") else "organ", mask)
                       for n in names)
    patient = Patient("p", grid, np.zeros(grid.shape, np.float32),
                      np.ones(grid.shape, np.float32), structures,
                      (Prescription("PTV70", 70.0, 35),))
    assert openkbp_organs(patient) == {"LeftParotid": "Parotid_L", "RightParotid": "parotid R",
                                       "SpinalCord": "Cord", "Brainstem": "BrainStem",
                                       "Esophagus": "Oesophagus"}
    assert unsupported_reason(patient) is None
    high = dataclasses.replace(patient, prescriptions=(Prescription("PTV70", 90.0, 45),))
    assert "outside the 40-80 Gy" in unsupported_reason(high)


def test_openkbp_patient_predicted_on_own_grid_and_elsewhere(openkbp_dir: Path):
    """An OpenKBP patient is predicted on its own grid; the same anatomy on another grid (a
    sub-volume, respaced) goes through resampling and agrees inside, within interpolation."""
    patient = read_openkbp_patient(openkbp_dir / "train-pats" / "pt_1")
    assert network_grid(patient) == patient.grid
    model = _tiny_model()
    direct = predict_dose(patient, model)
    assert direct.grid == patient.grid and direct.dose_gy.shape == patient.grid.shape
    assert np.all(direct.dose_gy >= 0) and np.all(direct.dose_gy[~patient.possible_dose_mask] == 0)
    assert direct.organs["SpinalCord"] == "SpinalCord"
    # the same patient on a 96^3 sub-grid: resampled to a median-spacing grid and back
    window = (slice(16, 112),) * 3
    origin = patient.grid.index_to_position_mm(np.array([16, 16, 16]))
    sub = Grid(tuple(origin), patient.grid.spacing_mm, (96, 96, 96))
    moved = dataclasses.replace(
        patient, grid=sub, hu=patient.hu[window], density=patient.density[window],
        structures=tuple(dataclasses.replace(s, mask=s.mask[window]) for s in patient.structures),
        possible_dose_mask=None)
    assert network_grid(moved) != sub and network_grid(moved).shape == (128, 128, 128)
    other = predict_dose(moved, model)
    assert other.grid == sub and np.all(other.dose_gy[moved.hu <= -500] == 0)
    coarse = Grid(sub.origin_mm, tuple(2 * s for s in sub.spacing_mm), (48, 48, 48))
    assert predict_dose(moved, model, dose_grid=coarse).dose_gy.shape == (48, 48, 48)


class _Recording(torch.nn.Module):
    """A network that remembers the inputs it was given."""

    def __init__(self, net: DoseUNet) -> None:
        super().__init__()
        self.net = net
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.net(x)


def test_one_organ_is_enough_and_absent_organs_enter_empty(openkbp_dir: Path):
    """A head-and-neck patient with only the spinal cord contoured is predicted; the channels of
    the six other organs are empty (as for the organs missing in training), the cord's is not."""
    patient = read_openkbp_patient(openkbp_dir / "train-pats" / "pt_1")
    cord_only = dataclasses.replace(patient, structures=tuple(
        s for s in patient.structures if s.kind == "target" or s.name == "SpinalCord"))
    assert unsupported_reason(cord_only) is None
    model = _Recording(_tiny_model())
    prediction = predict_dose(cord_only, model)
    assert prediction.organs == {"SpinalCord": "SpinalCord"} and prediction.dose_gy.any()
    first = model.inputs[0][0]
    for organ in ("Brainstem", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible"):
        assert not first[CHANNELS.index(organ)].any()
    assert first[CHANNELS.index("SpinalCord")].any() and first[CHANNELS.index("targets")].any()
    no_organ = dataclasses.replace(patient, structures=patient.targets())
    assert "not head and neck: none of the organs" in unsupported_reason(no_organ)


def test_save_load_round_trip(tmp_path: Path):
    model = _tiny_model()
    path = save_model(model, tmp_path / "m.pt", {"epochs": 0})
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["config"] == model.config() and card["epochs"] == 0
    loaded = load_model(path)
    x = torch.randn(1, len(CHANNELS), 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))  # float32 weights, stored exactly
    with pytest.raises(InputError, match="no model weights"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match=r"bad\.pt: not a planner dose model"):
        load_model(tmp_path / "bad.pt")


def test_ensemble_round_trip_is_the_mean_of_its_members(tmp_path: Path):
    torch.manual_seed(1)
    members = [DoseUNet(len(CHANNELS), 16, 2).eval() for _ in range(2)]
    x = torch.randn(1, len(CHANNELS), 32, 32, 32)
    with torch.no_grad():
        mean = 0.5 * (members[0](x) + members[1](x))
        path = save_model(DoseEnsemble(members), tmp_path / "e.pt", {})
        loaded = load_model(path)
        assert isinstance(loaded, DoseEnsemble) and len(loaded.members) == 2
        assert json.loads((tmp_path / "e.json").read_text())["members"] == 2
        # float16 storage: 11 bits of mantissa, so relative weight errors below 2^-11
        assert torch.allclose(loaded(x), mean, rtol=0.0, atol=5e-3 * float(mean.abs().max()))
    single = save_model(members[0], tmp_path / "m.pt", {})
    assert path.stat().st_size < 1.2 * single.stat().st_size  # two members at half the size
    with pytest.raises(ValueError, match="share one configuration"):
        DoseEnsemble([DoseUNet(len(CHANNELS), 4, 2), DoseUNet(len(CHANNELS), 8, 2)])


def test_shipped_model_matches_its_card():
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no shipped weights at {DEFAULT_MODEL}")
    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    assert DEFAULT_MODEL.stat().st_size <= 30e6
    model = load_model(DEFAULT_MODEL)
    assert model.config() == card["config"]
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    # the data by split and patient ID, never a machine path; what trained it, how long, scores
    assert all(pt.startswith("pt_") for split in ("train", "validation")
               for pt in card["data"][split])
    assert not re.search(r'"(/|[A-Za-z]:\\)', json.dumps(card))
    assert card["hardware"] and card["training_s"] > 0 and card["date"]
    for split in ("validation_view_average", "test"):
        assert set(card["scores"][split]) >= {"dose_score_gy", "dvh_score_gy", "command"}


def test_shipped_model_predicts_validation_patients(openkbp_dir: Path):
    """The shipped network on 3 OpenKBP validation patients, scored with the challenge's metrics
    against their reference plans: a trained network's dose score (about 3.2 Gy over all 15,
    see the card); an untrained one scores above 15 Gy. The bound leaves room for the spread
    between patients."""
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no shipped weights at {DEFAULT_MODEL}")
    model = load_model(DEFAULT_MODEL)
    scores = []
    for folder in sorted((openkbp_dir / "validation-pats").iterdir())[:3]:
        patient, reference = read_openkbp_case(folder, needed_for="the reference dose")
        predicted = predict_dose(patient, model).dose_gy
        scores.append(score_patient(folder.name, reference, predicted,
                                    patient.possible_dose_mask,
                                    {st.name: st.mask for st in patient.structures},
                                    [st.name for st in patient.targets()],
                                    patient.grid.voxel_volume_cc * 1e3))
    dose_score, dvh_score = overall_scores(scores)
    assert dose_score < 5.0 and dvh_score < 5.0, scores


def test_view_average_is_mirror_symmetric():
    """Averaged over the views, the prediction for a mirrored patient (flipped, parotids
    swapped) is the mirrored prediction, to float rounding; a single pass of an untrained
    network is not."""
    model = _tiny_model()
    x = torch.rand(len(CHANNELS), 32, 32, 32)
    left, right = CHANNELS.index("LeftParotid"), CHANNELS.index("RightParotid")
    swap = [right if c == left else left if c == right else c for c in range(len(CHANNELS))]
    assert list(MIRRORED_CHANNELS) == swap
    mirrored = x.flip(-1)[swap]
    assert torch.allclose(predict_inputs(model, mirrored), predict_inputs(model, x).flip(-1),
                          atol=1e-6)
    single = predict_inputs(model, x, average_views=False)
    assert not torch.allclose(predict_inputs(model, mirrored, average_views=False).flip(-1),
                              single, atol=1e-4)


def test_view_average_is_the_mean_of_the_shifted_passes():
    """The view average, written out by hand with numpy's slicing: each shifted, mirrored or
    not, predicted and moved back; the mean of the raw passes, then clipped at 0 Gy."""
    model = _tiny_model()
    x = torch.rand(len(CHANNELS), 32, 32, 32)
    mirrored = x.flip(-1)[list(MIRRORED_CHANNELS)]

    def by_hand(volume: np.ndarray, shift: tuple[int, int, int]) -> np.ndarray:
        # np.pad with "edge" repeats the border voxel, the meaning shift_volume documents
        pad = [(0, 0)] * (volume.ndim - 3) + [(max(v, 0), max(-v, 0)) for v in shift]
        padded = np.pad(volume, pad, mode="edge")
        return padded[(..., *(slice(max(-v, 0), max(-v, 0) + n)
                              for v, n in zip(shift, volume.shape[-3:])))]

    passes = []
    with torch.no_grad():
        for shift in VIEW_SHIFTS_VOXELS:
            back = tuple(-v for v in shift)
            for image, flip in ((x, False), (mirrored, True)):
                moved = torch.from_numpy(by_hand(image.numpy(), shift).copy())
                dose = by_hand(model(moved[None])[0, 0].numpy(), back)
                passes.append(dose[..., ::-1] if flip else dose)
    expected = np.clip(np.mean(passes, axis=0), 0.0, None)
    assert len(passes) == 6 and (0, 0, 0) in VIEW_SHIFTS_VOXELS
    np.testing.assert_allclose(predict_inputs(model, x).numpy(), expected, atol=1e-6)


def test_shift_volume_moves_content_and_repeats_the_edge():
    x = torch.arange(4.0).reshape(1, 1, 4)[None].expand(1, 2, 1, 4).contiguous()
    assert shift_volume(x, (0, 0, 1))[0, 0, 0].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert shift_volume(x, (0, 0, -2))[0, 0, 0].tolist() == [2.0, 3.0, 3.0, 3.0]
    assert torch.equal(shift_volume(x, (0, 0, 0)), x)
