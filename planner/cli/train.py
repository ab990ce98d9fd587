"""``planner train DATA_DIR --out DIR``: train the dose-prediction network on OpenKBP data.

torch is imported only when the command runs, so that other subcommands start fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from planner.cli._numbers import non_negative, positive, whole
from planner.errors import InputError
from planner.predict.data import DEFAULT_CACHE

#: Options that fill :class:`planner.predict.train.TrainConfig` (unset: its default).
_CONFIG_OPTIONS = {"epochs": "epochs", "base_channels": "base_channels", "levels": "levels",
                   "lr": "learning_rate", "lr_schedule": "lr_schedule",
                   "crop": "crop", "dvh_weight": "dvh_weight",
                   "seed": "seed", "limit_train": "limit_train", "limit_val": "limit_val"}


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=whole(1), default=None,
                        help="CPU threads for torch (default: the CPUs this process may use)")


def set_threads(threads: int | None) -> None:
    """Give torch ``threads`` CPU threads (default: the CPUs the process may run on)."""
    count = threads if threads is not None else len(os.sched_getaffinity(0))
    import torch

    torch.set_num_threads(count)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train the dose-prediction network on OpenKBP data",
        description="Train the 3D U-Net dose predictor on DATA_DIR/train-pats, scoring "
                    "DATA_DIR/validation-pats after every epoch. A checkpoint is written after "
                    "each epoch (--resume continues it); the best model by validation dose "
                    "score is OUT/model.pt with its card OUT/model.json.")
    parser.add_argument("data_dir", metavar="DATA_DIR", type=Path,
                        help="OpenKBP provided-data folder (with train-pats/, validation-pats/)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder to create, holding the checkpoint and the model (an "
                             "existing one only with --resume or --force)")
    parser.add_argument("--epochs", type=whole(1), help="total epochs (default 100)")
    parser.add_argument("--base-channels", type=whole(1), help="U-Net width (default 16)")
    parser.add_argument("--levels", type=whole(1), help="U-Net levels (default 5)")
    parser.add_argument("--lr", type=positive, help="Adam learning rate (default 5e-4)")
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"),
                        help="cosine: the rate falls to 1 %% of --lr by the last epoch "
                             "(default); constant")
    parser.add_argument("--crop", type=whole(0),
                        help="side of random training cubes, a multiple of 2**levels; "
                             "0: whole volumes (default 96)")
    parser.add_argument("--dvh-weight", type=non_negative,
                        help="weight of the DVH term (default 1)")
    parser.add_argument("--seed", type=whole(0), help="random seed (default 0)")
    parser.add_argument("--limit-train", type=whole(1), default=None,
                        help="use only the first N training patients")
    parser.add_argument("--limit-val", type=whole(1), default=None,
                        help="use only the first N validation patients")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"preprocessed-patient cache (default {DEFAULT_CACHE})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_threads_option(parser)
    parser.add_argument("--init", type=Path, default=None, metavar="MODEL",
                        help="start from these network weights (a model.pt of the same size) "
                             "with a fresh optimiser, e.g. to fine-tune on whole volumes "
                             "(--crop 0) after training on crops")
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt")
    parser.add_argument("--force", action="store_true", help="start again over an existing OUT")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from planner.predict.train import TrainConfig, train

    for split in ("train-pats", "validation-pats"):
        if not (args.data_dir / split).is_dir():
            raise InputError(f"{args.data_dir / split}: no such folder (DATA_DIR must be an "
                             f"OpenKBP provided-data folder)")
    set_threads(args.threads)
    given = {field: getattr(args, option) for option, field in _CONFIG_OPTIONS.items()
             if getattr(args, option) is not None}
    if given.get("crop") == 0:
        given["crop"] = None
    config = dataclasses.replace(TrainConfig(), **given)
    history = train(args.data_dir / "train-pats", args.data_dir / "validation-pats", args.out,
                    config, cache_dir=args.cache, device=args.device, resume=args.resume,
                    overwrite=args.force, initial_model=args.init,
                    progress=lambda line: print(line, flush=True))
    if history:
        best = min(history, key=lambda h: h["val_dose_score_gy"])
        print(f"best: epoch {best['epoch']}, validation dose score "
              f"{best['val_dose_score_gy']:.3f} Gy, DVH score {best['val_dvh_score_gy']:.3f} Gy; "
              f"model {args.out / 'model.pt'}")
    return 0
