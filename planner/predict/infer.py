"""Predict a dose with the trained network: for OpenKBP patients and for any other patient.

A patient on another grid is resampled (trilinear, axis-aligned) onto a 128^3 network grid of the
OpenKBP median spacing (2.5 mm slices, 3.906 mm pixels) centred on its targets, predicted there,
resampled back onto the dose grid (:func:`dose.grid.resample`) and set to 0 where no dose is
possible (the possible-dose mask, else the external contour, else CT above -500 HU). The network
runs in torch on the chosen device, so the same code serves the CPU and a CUDA GPU.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dose._data import DATA_DIR
from dose.grid import Grid, resample
from planner.errors import InputError
from planner.io._atomic import write_file_atomic
from planner.io.openkbp import OPENKBP_SHAPE
from planner.patient import Patient
from planner.predict.data import MIRRORED_CHANNELS, encode_inputs
from planner.predict.model import DoseEnsemble, DoseModel, DoseUNet
from planner.predict.scope import openkbp_organs, prescribed_targets, unsupported_reason

DEFAULT_MODEL = DATA_DIR / "models" / "openkbp_unet.pt"
#: OpenKBP median voxel size (data README: slices 2.5 mm, pixels 3.9 mm), (dz, dy, dx) mm.
NETWORK_SPACING_MM = (2.5, 3.906, 3.906)
#: Voxel sizes seen in training (data README: pixels 1.95-5.42 mm, slices 1.5-3.3 mm); a 128^3
#: patient inside them is predicted on its own grid, as in training.
TRAINED_PIXEL_MM = (1.95, 5.42)
TRAINED_SLICE_MM = (1.5, 3.3)
BODY_HU = -500.0


def torch_device(device: str) -> torch.device:
    """``auto|cpu|cuda`` as a torch device (``auto``: CUDA when torch sees a GPU)."""
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device: expected auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch finds no CUDA device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def save_model(model: DoseModel, path: Path, card: dict, *, overwrite: bool = False) -> Path:
    """Write the weights (``path``) and the JSON card (``path`` with ``.json``), which gets the
    weights' sha256 so the pair can be checked.

    A :class:`DoseUNet` is stored in float32 (23 MB for the default network); the members of a
    :class:`DoseEnsemble` in float16, half the size (11 MB each), so two fit the 30 MB allowed
    for shipped weights. They are computed in float32 after loading; the float16 copy of the
    epoch-87 network predicts validation pt_201 within 0.022 Gy of the float32 one (mean
    0.003 Gy).
    """
    def state(member: DoseUNet, dtype: torch.dtype) -> dict:
        return {k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu())
                for k, v in member.state_dict().items()}

    if isinstance(model, DoseEnsemble):
        payload = {"config": model.config(),
                   "states": [state(m, torch.float16) for m in model.members]}
    else:
        payload = {"config": model.config(), "state": state(model, torch.float32)}
    path = Path(path)
    write_file_atomic(path, lambda tmp: torch.save(payload, tmp), overwrite=overwrite)
    card = {**card, "model": type(model).__name__, "config": model.config(),
            "members": len(model.members) if isinstance(model, DoseEnsemble) else 1,
            "parameters": sum(p.numel() for p in model.parameters()),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    write_file_atomic(path.with_suffix(".json"),
                      lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"), overwrite=True)
    return path


def load_model(path: Path | None = None, device: torch.device | str = "cpu") -> DoseModel:
    """The network saved by :func:`save_model` (default: the weights shipped in ``data/models``):
    a :class:`DoseUNet`, or a :class:`DoseEnsemble` where the file holds several members."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise InputError(f"{path}: no model weights (train one with 'planner train')")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        members = []
        for state in saved["states"] if "states" in saved else [saved["state"]]:
            member = DoseUNet(**saved["config"])
            member.load_state_dict(state)  # float16 members are cast to float32 here
            members.append(member)
    except (RuntimeError, KeyError, TypeError, ValueError, OSError,
            pickle.UnpicklingError) as error:
        raise InputError(f"{path}: not a planner dose model ({error})") from error
    model = members[0] if len(members) == 1 else DoseEnsemble(members)
    return model.to(device).eval()


#: The one-voxel shifts (z, y, x) of the views averaged by :func:`predict_inputs`.
VIEW_SHIFTS_VOXELS = ((0, 0, 0), (1, 1, 1), (-1, -1, -1))


def shift_volume(x: torch.Tensor, shift: tuple[int, ...]) -> torch.Tensor:
    """``x`` (``(..., D, H, W)``, at least 4-D) moved by ``shift`` voxels along its last three
    axes, same shape: the voxels moved out are dropped, the edge voxels repeated in their place."""
    pad = []
    for v in reversed(shift):  # F.pad takes the last axis first
        pad += [max(v, 0), max(-v, 0)]
    padded = torch.nn.functional.pad(x, pad, mode="replicate")
    window = tuple(slice(max(-v, 0), max(-v, 0) + n) for v, n in zip(shift, x.shape[-3:]))
    return padded[(..., *window)]


def predict_inputs(model: DoseModel, inputs: np.ndarray | torch.Tensor, *,
                   average_views: bool = True) -> torch.Tensor:
    """Dose (Gy, >= 0) on the network grid from encoded inputs ``(9, D, H, W)``.

    With ``average_views`` the prediction is the mean of the network's doses for 6 views of the
    patient, each moved back into place: the patient and its left-right mirror image (parotids
    swapped, as in training; the OpenKBP beam arrangement is mirror-symmetric, so both estimate
    the same dose), each as it is and moved by one voxel diagonally either way
    (:data:`VIEW_SHIFTS_VOXELS`). The network sees 2^3-voxel blocks (space-to-depth) pooled down to
    cells 32 voxels on a side, so its errors depend on where the anatomy falls on that lattice; a
    one-voxel shift on every axis changes it, and the mean of the views has less error. On the
    15 validation patients, dose / DVH score in Gy: the weights trained on crops (epoch 112) one
    pass 3.468 / 2.136, the mirror pair 3.396 / 2.058, the 6 views 3.361 / 2.035, all 27 shifts
    of -1..1 voxel with their mirrors (54 passes) 3.354 / 2.028; the weights of f5e3c3c (then
    fine-tuned on whole volumes) one pass 3.342 / 2.103, the mirror pair 3.280 / 2.044, the 6
    views 3.246 / 2.049. The mean is the same for a mirrored patient, mirrored (each shift acts
    in the network's frame of both images). Costs 6 passes.

    Returns a ``(D, H, W)`` float32 tensor on the model's device.
    """
    device = next(model.parameters()).device
    x = torch.as_tensor(inputs, dtype=torch.float32, device=device)[None]
    with torch.inference_mode():
        if not average_views:
            return model(x)[0, 0].clamp_min(0.0)
        mirrored = x[:, list(MIRRORED_CHANNELS)].flip(-1)
        total = torch.zeros(x.shape[2:], dtype=torch.float32, device=device)
        for shift in VIEW_SHIFTS_VOXELS:
            back = tuple(-v for v in shift)
            total += shift_volume(model(shift_volume(x, shift)), back)[0, 0]
            total += shift_volume(model(shift_volume(mirrored, shift)), back)[0, 0].flip(-1)
        return (total / (2 * len(VIEW_SHIFTS_VOXELS))).clamp_min(0.0)


def _is_network_grid(grid: Grid) -> bool:
    dz, dy, dx = grid.spacing_mm
    return (grid.shape == OPENKBP_SHAPE
            and all(TRAINED_PIXEL_MM[0] <= d <= TRAINED_PIXEL_MM[1] for d in (dy, dx))
            and TRAINED_SLICE_MM[0] <= dz <= TRAINED_SLICE_MM[1])


def network_grid(patient: Patient) -> Grid:
    """The 128^3 grid the network predicts on: the patient's own grid when it is an OpenKBP-like
    128^3 grid, else one of the OpenKBP median spacing centred on the targets' centroid."""
    if _is_network_grid(patient.grid):
        return patient.grid
    union = np.zeros(patient.grid.shape, bool)
    for s in patient.targets():
        union |= s.mask
    if not union.any():
        raise InputError(f"{patient.name}: no target voxels to centre the prediction on")
    centre = patient.grid.index_to_position_mm(np.argwhere(union).mean(axis=0))
    spacing = np.asarray(NETWORK_SPACING_MM)
    origin = centre - spacing * (np.asarray(OPENKBP_SHAPE) - 1) / 2
    return Grid(tuple(origin), tuple(spacing), OPENKBP_SHAPE)


def dose_possible_mask(patient: Patient) -> np.ndarray:
    """Where dose may be: the possible-dose mask, else the external contour, else CT > -500 HU."""
    if patient.possible_dose_mask is not None:
        return patient.possible_dose_mask
    external = [s.mask for s in patient.structures if s.kind == "external"]
    return external[0] if external else patient.hu > BODY_HU


@dataclass(frozen=True)
class DosePrediction:
    """A predicted dose on a grid. ``dose_gy`` ``(grid.shape)`` float32, Gy; ``organs`` the
    patient structures that stood for the OpenKBP organs (OpenKBP name -> structure name)."""

    grid: Grid
    dose_gy: np.ndarray = field(repr=False)
    organs: dict[str, str]


def predict_dose(patient: Patient, model: DoseModel,
                 dose_grid: Grid | None = None) -> DosePrediction:
    """Predict the dose of a head-and-neck plan for ``patient``.

    Parameters
    ----------
    patient : Patient
        Must pass :func:`unsupported_reason` (InputError otherwise).
    model : DoseUNet or DoseEnsemble
        From :func:`load_model`, on the device to use.
    dose_grid : Grid, optional
        Where the dose is wanted (default: the patient grid).

    Returns
    -------
    DosePrediction
        0 where no dose is possible (module docstring).
    """
    reason = unsupported_reason(patient)
    if reason is not None:
        raise InputError(f"{patient.name}: dose prediction not possible: {reason}")
    net = network_grid(patient)
    dose_grid = dose_grid or patient.grid

    def to_net(array: np.ndarray, fill: float) -> np.ndarray:
        return resample(np.asarray(array, dtype=np.float32), patient.grid, net, fill=fill)

    organs = openkbp_organs(patient)
    targets = {name: (to_net(patient.structure(name).mask, 0.0), rx)
               for name, rx in prescribed_targets(patient).items()}
    inputs = encode_inputs(to_net(patient.hu, -1024.0), targets,
                           {organ: to_net(patient.structure(name).mask, 0.0)
                            for organ, name in organs.items()})
    dose = resample(predict_inputs(model, inputs).cpu().numpy(), net, dose_grid)
    possible = dose_possible_mask(patient)
    if dose_grid != patient.grid:
        possible = resample(possible.astype(np.float32), patient.grid, dose_grid) >= 0.5
    return DosePrediction(dose_grid, np.where(possible, dose, np.float32(0.0)), organs)
