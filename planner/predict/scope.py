"""Where the dose-prediction network applies, and why not where it does not (no torch here, so
that the report can state the rule cheaply).

The network was trained on OpenKBP head-and-neck plans (70/63/56 Gy; every training patient has
3 to 7 of the 7 OpenKBP organs contoured, the channels of the others empty). It applies to a
patient with a CT, at least one target with a prescription of 40-80 Gy and at least one OpenKBP
organ recognised by name (which shows the patient is head and neck: a prostate or a phantom has
none). Organs not contoured enter as empty channels, as in training.
"""

from __future__ import annotations

import dataclasses

from planner.io.openkbp import OAR_NAMES
from planner.patient import Patient
from planner.protocol import map_structures, read_protocol

#: Prescriptions around those of the training data (56-70 Gy); outside, the model extrapolates.
SUPPORTED_RX_GY = (40.0, 80.0)

#: The rule, in words, for the README and the report.
APPLIES_TO = (f"The dose prediction applies to head-and-neck patients: a CT, at least one target "
              f"with a prescription of {SUPPORTED_RX_GY[0]:g}-{SUPPORTED_RX_GY[1]:g} Gy, and at "
              f"least one of the OpenKBP organs ({', '.join(OAR_NAMES)}) recognised by name; "
              f"organs not contoured enter the network empty, as they did in training")


def openkbp_organs(patient: Patient) -> dict[str, str]:
    """Map OpenKBP organ names to the patient's organ structures that stand for them.

    Names are matched as the head-and-neck protocol matches them
    (:func:`planner.protocol.map_structures` with ``data/protocols/head_and_neck.toml``, whose
    structures carry the OpenKBP names): its synonyms, then the same words in any spelling.
    """
    # Without goals no structure is required, so the matcher reports instead of raising.
    names_only = dataclasses.replace(read_protocol("head_and_neck"), goals=())
    organs = [s.name for s in patient.structures if s.kind == "organ"]
    mapping = map_structures(names_only, organs).mapping
    return {organ: name for organ, name in mapping.items() if organ in OAR_NAMES}


def prescribed_targets(patient: Patient) -> dict[str, float]:
    """The patient's targets that have a prescription: name -> dose in Gy."""
    dose = {rx.target: rx.dose_gy for rx in patient.prescriptions}
    return {s.name: dose[s.name] for s in patient.targets() if s.name in dose}


def unsupported_reason(patient: Patient) -> str | None:
    """Why the network does not apply to ``patient`` (None when it does; :data:`APPLIES_TO`)."""
    targets = prescribed_targets(patient)
    if not targets:
        return "no target with a prescription"
    outside = {n: d for n, d in targets.items()
               if not SUPPORTED_RX_GY[0] <= d <= SUPPORTED_RX_GY[1]}
    if outside:
        return (f"prescription {outside} Gy outside the {SUPPORTED_RX_GY[0]:g}-"
                f"{SUPPORTED_RX_GY[1]:g} Gy the head-and-neck model knows")
    if not openkbp_organs(patient):
        return f"not head and neck: none of the organs {', '.join(OAR_NAMES)} found"
    return None
