"""A compact 3D U-Net that predicts dose (Gy) from CT and structure masks.

U-Net: Ronneberger et al., MICCAI 2015 (2D), Cicek et al., MICCAI 2016 (3D). Plain 3D U-Nets reach
an OpenKBP dose score of about 2.8 Gy when trained well (see DESIGN.md). To keep training
practical on a 2-core CPU this one works at half the OpenKBP resolution without discarding any
input voxel: the 128^3 input is rearranged losslessly into 8 times the channels at 64^3
(space-to-depth), the U-Net runs at 64^3 and below, and its last layer predicts the 8 sub-voxels
of each 64^3 voxel (depth-to-space), so the output is at the full 128^3 resolution. (A 64^3
prediction upsampled trilinearly would cost 0.5-1.1 Gy of dose score by itself, measured on
train-pats pt_1, pt_10, pt_11, pt_12.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def space_to_depth(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """``(B, C, D, H, W)`` to ``(B, C f^3, D/f, H/f, W/f)``, every voxel kept."""
    b, c, d, h, w = x.shape
    f = factor
    x = x.reshape(b, c, d // f, f, h // f, f, w // f, f)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * f**3, d // f, h // f, w // f)


def depth_to_space(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`."""
    b, cf, d, h, w = x.shape
    f = factor
    c = cf // f**3
    x = x.reshape(b, c, f, f, f, d, h, w)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, d * f, h * f, w * f)


class _ConvBlock(nn.Sequential):
    """Two 3^3 convolutions, each with group norm (works at batch size 1) and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        groups = max(1, out_channels // 8)
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        )


class DoseUNet(nn.Module):
    """3D U-Net from ``in_channels`` input volumes to one dose volume in Gy.

    Parameters
    ----------
    in_channels : int
        Input volumes (CT, target and organ masks: see :mod:`planner.predict.data`).
    base_channels : int
        Feature channels at the top level; doubled at each level down.
    levels : int
        Resolution levels of the U-Net (the top one included). The input's sides must be
        multiples of ``2 ** levels``.
    dose_scale_gy : float
        The last layer predicts dose divided by this (order 1), which keeps its weights small.

    Input ``(B, in_channels, D, H, W)`` float32; output ``(B, 1, D, H, W)`` float32, Gy (may be
    slightly negative: :func:`planner.predict.infer.predict_dose` clips it at 0).
    """

    def __init__(self, in_channels: int, base_channels: int = 16, levels: int = 4,
                 dose_scale_gy: float = 70.0) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.in_channels = in_channels
        self.base_channels = base_channels
        self.levels = levels
        self.dose_scale_gy = dose_scale_gy
        widths = [base_channels * 2**i for i in range(levels)]
        self.stem = nn.Conv3d(in_channels * 8, widths[0], 1)
        self.encoders = nn.ModuleList(
            [_ConvBlock(widths[0], widths[0])]
            + [_ConvBlock(widths[i - 1], widths[i]) for i in range(1, levels)]
        )
        self.ups = nn.ModuleList(
            [nn.ConvTranspose3d(widths[i], widths[i - 1], 2, stride=2)
             for i in range(levels - 1, 0, -1)]
        )
        self.decoders = nn.ModuleList(
            [_ConvBlock(2 * widths[i - 1], widths[i - 1]) for i in range(levels - 1, 0, -1)]
        )
        self.head = nn.Conv3d(widths[0], 8, 1)

    def config(self) -> dict[str, float | int]:
        """The constructor's arguments (saved beside the weights)."""
        return {"in_channels": self.in_channels, "base_channels": self.base_channels,
                "levels": self.levels, "dose_scale_gy": self.dose_scale_gy}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2**self.levels
        if any(s % multiple for s in x.shape[2:]):
            raise ValueError(f"input sides {tuple(x.shape[2:])} must be multiples of {multiple}")
        h = self.stem(space_to_depth(x))
        skips = []
        for i, encoder in enumerate(self.encoders):
            h = encoder(h if i == 0 else F.max_pool3d(h, 2))
            skips.append(h)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            h = decoder(torch.cat([up(h), skip], dim=1))
        return depth_to_space(self.head(h)) * self.dose_scale_gy


class DoseEnsemble(nn.Module):
    """The mean dose of several :class:`DoseUNet` of one configuration.

    Used for a snapshot ensemble: the weights one training run reaches at the ends of its
    learning-rate cycles (Huang et al., "Snapshot ensembles: train 1, get M for free", ICLR 2017),
    whose errors differ enough that their mean predicts better than either.
    """

    def __init__(self, members: list[DoseUNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if any(m.config() != members[0].config() for m in members):
            raise ValueError("ensemble members must share one configuration")
        self.members = nn.ModuleList(members)

    def config(self) -> dict[str, float | int]:
        """The members' configuration."""
        return self.members[0].config()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


#: What :func:`planner.predict.infer.load_model` returns.
DoseModel = DoseUNet | DoseEnsemble
