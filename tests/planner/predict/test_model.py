"""DoseUNet: lossless space-to-depth, output shapes of a few configurations (MONAI's habit)."""

from __future__ import annotations

import pytest
import torch

from planner.predict.model import DoseUNet, depth_to_space, space_to_depth


def test_space_to_depth_is_lossless_and_inverted():
    x = torch.arange(2 * 3 * 4 * 6 * 8, dtype=torch.float32).reshape(2, 3, 4, 6, 8)
    y = space_to_depth(x)
    assert y.shape == (2, 24, 2, 3, 4)
    assert torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
    assert torch.equal(depth_to_space(y), x)
    # channel c*8 + (dz*4 + dy*2 + dx) at [k, j, i] holds x[c, 2k+dz, 2j+dy, 2i+dx]
    assert y[1, 2 * 8 + 5, 1, 2, 3] == x[1, 2, 2 + 1, 4 + 0, 6 + 1]


@pytest.mark.parametrize(("base", "levels", "side"), [(4, 2, 16), (4, 3, 32), (8, 4, 32)])
def test_output_shape_and_config(base: int, levels: int, side: int):
    torch.manual_seed(0)
    model = DoseUNet(9, base, levels).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 9, side, side, side))
    assert y.shape == (1, 1, side, side, side) and torch.isfinite(y).all()
    assert DoseUNet(**model.config()).config() == model.config()


def test_shipping_size_stays_under_limits():
    """The default network (16 channels, 5 levels) stays under 8 M parameters (issue 6)."""
    params = sum(p.numel() for p in DoseUNet(9).parameters())
    assert 1e6 < params < 8e6


def test_side_must_fit_levels():
    with pytest.raises(ValueError, match=r"multiples of 16"):
        DoseUNet(9, 4, 4)(torch.zeros(1, 9, 24, 32, 32))
