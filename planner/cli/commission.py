"""``planner commission --out DIR``: water-phantom depth doses and profiles of the 6 MV beam model
against the published data, as PNG plots and a CSV table."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from dose._xp import resolve_device
from dose.beam_model import load_beam_model
from dose.commissioning import WaterResult, water_field
from dose.machine import load_machine
from planner.cli._output import add_json_option, add_out_option, check_outputs, write_json
from planner.io._atomic import atomic_directory

#: Square fields (cm) computed; BJR Supplement 25 gives PDDs for 6, 7 and 10 cm (DESIGN.md).
FIELDS_CM = (4, 6, 7, 10, 20)
#: Published 6 MV PDDs at SSD 100 cm (BJR Supplement 25, as quoted in DESIGN.md): field -> depth.
BJR25_PDD = {6: {100: 64.9, 200: 36.4}, 7: {100: 65.7, 200: 37.2}, 10: {100: 67.5, 200: 39.3}}
#: Typical 6 MV output factors at 10 cm depth, relative to 10 x 10 (DESIGN.md).
TYPICAL_OUTPUT = {4: 0.88, 10: 1.00, 20: 1.06}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "commission", help="plot the beam model's water depth doses and profiles vs BJR 25",
        description="Compute central-axis depth doses (SSD 100 cm) and profiles at 10 cm depth "
                    f"in water for square fields of {', '.join(map(str, FIELDS_CM))} cm, write "
                    "pdd.png, profiles.png and commissioning.csv (PDD(10), PDD(20), d_max, "
                    "80-20 % penumbra and output factor beside the published values).")
    add_out_option(parser, "pdd.png, profiles.png and commissioning.csv")
    add_json_option(parser)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="array backend (auto: CUDA when cupy finds a GPU)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_outputs(args)
    device = resolve_device(args.device)
    xp = np
    if device == "cuda":
        import cupy as xp  # noqa: N813 - the array module, by convention
    results = commission_fields(xp=xp)
    with atomic_directory(args.out, overwrite=args.force) as folder:
        write_table(results, folder / "commissioning.csv")
        plot(results, folder)
    print(f"wrote {args.out / 'commissioning.csv'}, pdd.png, profiles.png")
    rows = table_rows(results)
    for row in rows:
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items() if v != ""))
    write_json(args, rows)
    return 0


def commission_fields(xp: object = np) -> dict[int, WaterResult]:
    """The water-phantom results of every field of ``FIELDS_CM``."""
    model, machine = load_beam_model(), load_machine()
    return {side: water_field(model, machine, 10.0 * side, xp=xp) for side in FIELDS_CM}


def table_rows(results: dict[int, WaterResult]) -> list[dict[str, str]]:
    """One row per field: computed values beside the published ones (blank where none)."""
    reference = results[10].dose_gy_per_mu(100.0)
    rows = []
    for side, r in results.items():
        published = BJR25_PDD.get(side, {})
        rows.append({
            "field_cm": f"{side}x{side}",
            "pdd10_percent": f"{r.pdd_percent(100.0):.2f}",
            "pdd10_bjr25": f"{published[100]:.1f}" if published else "",
            "pdd20_percent": f"{r.pdd_percent(200.0):.2f}",
            "pdd20_bjr25": f"{published[200]:.1f}" if published else "",
            "dmax_mm": f"{r.dmax_mm:.1f}",
            "penumbra_80_20_mm": f"{r.penumbra_mm():.2f}",
            "output_factor_10cm": f"{r.dose_gy_per_mu(100.0) / reference:.3f}",
            "output_factor_typical": (f"{TYPICAL_OUTPUT[side]:.2f}" if side in TYPICAL_OUTPUT
                                      else ""),
            "dose_dmax_cgy_per_mu": f"{100 * r.axis_gy_per_mu.max():.3f}",
        })
    return rows


def write_table(results: dict[int, WaterResult], path: Path) -> None:
    rows = table_rows(results)
    with path.open("w", newline="") as handle:
        handle.write("# planner beam model in water, SSD 100 cm; published: BJR Supplement 25 "
                     "(PDD), typical 6 MV (output factors), see DESIGN.md\n")
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(results: dict[int, WaterResult], folder: Path) -> None:
    """pdd.png (depth doses with the BJR 25 points) and profiles.png (10 cm depth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    for side, r in results.items():
        line, = axes.plot(r.depth_mm / 10, 100 * r.axis_gy_per_mu / r.axis_gy_per_mu.max(),
                          label=f"{side}x{side} cm")
        for depth, value in BJR25_PDD.get(side, {}).items():
            axes.plot(depth / 10, value, "o", color=line.get_color())
    axes.set(xlabel="depth (cm)", ylabel="PDD (%)", title="6 MV, SSD 100 cm: model (lines), "
             "BJR Supplement 25 (dots)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(folder / "pdd.png", dpi=100)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 5))
    for side, r in results.items():
        centre = float(np.interp(0.0, r.offaxis_mm, r.profile_gy_per_mu))
        axes.plot(r.offaxis_mm / 10, 100 * r.profile_gy_per_mu / centre,
                  label=f"{side}x{side} cm, penumbra {r.penumbra_mm():.1f} mm")
    axes.set(xlabel="off-axis distance (cm)", ylabel="dose relative to the axis (%)",
             title="Profiles at 10 cm depth, SSD 100 cm (typical 80-20 % penumbra 5-7 mm)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(folder / "profiles.png", dpi=100)
    plt.close(figure)
