"""Structure names: TG-263 standard names and their variants (Mayo et al., IJROBP 100:1057,
2018)."""

from __future__ import annotations

import pytest

from planner.errors import InputError
from planner.names import find_one, name_key, target_dose_gy


def same_name(a: str, b: str) -> bool:
    return name_key(a) == name_key(b)


@pytest.mark.parametrize("variant", [
    "Parotid_L", "parotid_l", "PAROTID L", "L_Parotid", "Lt Parotid", "Parotid-Lt", "LeftParotid",
    "Parotid.Left", "parotid_LT",
])
def test_side_case_separator_and_order_variants_are_one_name(variant):
    assert same_name(variant, "Parotid_L")
    assert not same_name(variant, "Parotid_R")


@pytest.mark.parametrize("name, dose", [
    ("PTV_7000", 70.0), ("PTV70", 70.0), ("PTV_70Gy", 70.0), ("ptv 70 gy", 70.0),
    ("PTV7000cGy", 70.0), ("PTV_5040", 50.4), ("PTV_50.4", 50.4), ("CTV_6000", 60.0),
    ("PTV_High", None), ("PTV", None), ("PTV1", None), ("PTV_2", None), ("Parotid_L", None),
])
def test_dose_in_a_target_name(name, dose):
    """A bare number is cGy from 200 up, Gy from 10 up, an index below 10."""
    assert target_dose_gy(name) == dose


def test_targets_match_by_type_dose_and_other_words():
    assert same_name("PTV_7000", "PTV70") and same_name("PTV_70Gy", "ptv 7000")
    assert not same_name("PTV_7000", "PTV_6300")
    assert not same_name("PTV_7000", "CTV_7000")
    assert not same_name("PTV70", "PTV70_opt")  # an optimisation structure is another name
    assert not same_name("PTV1", "PTV2") and same_name("PTV_1", "ptv1")
    assert name_key("PTV_High") == name_key("ptv high") != name_key("PTV_Low")


def test_find_one_prefers_an_exact_name_and_lists_ambiguous_candidates():
    names = ["PTV70", "PTV_7000", "Cord"]
    assert find_one("ptv70", (), names, source="s") == "PTV70"  # equal ignoring case wins
    assert find_one("SpinalCord", ("Cord",), names, source="s") == "Cord"
    assert find_one("Brainstem", (), names, source="s") is None
    with pytest.raises(InputError, match=r"^s: PTV_70Gy is ambiguous: it matches 'PTV70' and "
                                         r"'PTV_7000'; rename one"):
        find_one("PTV_70Gy", (), names, source="s")
