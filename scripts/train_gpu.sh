#!/usr/bin/env bash
# Train the dose-prediction network on an offline GPU machine in about ten minutes (scripts/README.md).
#
#   scripts/train_gpu.sh DATA_DIR OUT_DIR WHEELS_DIR [planner train options ...]
#   scripts/train_gpu.sh --requirements        # planner's dependencies, one a line (for pip download)
#
# DATA_DIR: an OpenKBP provided-data folder (train-pats/, validation-pats/). OUT_DIR: results
# (created; run again to resume). WHEELS_DIR: wheels of planner's dependencies that the Python in
# use lacks. Options after WHEELS_DIR go to 'planner train' after the defaults, so they override
# them. Environment: PYTHON (default python3), TIME_LIMIT_S (default 600), INIT (weights to start
# from, default the shipped ones; "none" trains from scratch).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
source "$REPO/scripts/offline_env.sh"

if [[ "${1:-}" == "--requirements" ]]; then
    planner_requirements
    exit 0
fi
if [[ $# -lt 3 ]]; then
    echo "usage: $0 DATA_DIR OUT_DIR WHEELS_DIR [planner train options ...]" >&2
    exit 2
fi
DATA_DIR="$1"; OUT_DIR="$2"; WHEELS_DIR="$3"; shift 3
for split in train-pats validation-pats; do
    if [[ ! -d "$DATA_DIR/$split" ]]; then
        echo "$DATA_DIR/$split: no such folder (DATA_DIR must be an OpenKBP provided-data folder)" >&2
        exit 2
    fi
done
require_wheels_dir "$WHEELS_DIR"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/train_gpu.log"

planner_requirements > "$OUT_DIR/requirements.txt"
install_from_wheels "$WHEELS_DIR" "$OUT_DIR/requirements.txt"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

{ date -u "+started %Y-%m-%d %H:%M:%S UTC"
  command -v nvidia-smi > /dev/null && nvidia-smi -L || echo "no nvidia-smi"; } | tee -a "$LOG"

# Fine-tune the shipped weights on whole volumes (the recipe of data/models/openkbp_unet.json);
# a second run continues the checkpoint.
RUN="$OUT_DIR/run"
INIT="${INIT:-$REPO/data/models/openkbp_unet.pt}"
if [[ -f "$RUN/checkpoint.pt" ]]; then
    start=(--resume)
elif [[ "$INIT" == none ]]; then
    start=()
else
    start=(--init "$INIT")
fi
# SIGTERM at the time limit (SIGINT would be ignored where the script runs in the background):
# each checkpoint is written under a temporary name and renamed, so the last finished epoch is
# kept and the next run resumes from it.
status=0
timeout --signal=TERM --kill-after=30 "${TIME_LIMIT_S:-600}" "$PYTHON" -m planner train "$DATA_DIR" --out "$RUN" \
    --cache "$OUT_DIR/cache" --device auto --crop 0 --lr 5e-5 --epochs 30 --seed 2 \
    "${start[@]}" "$@" 2>&1 | tee -a "$LOG" || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
    echo "stopped at the time limit (${TIME_LIMIT_S:-600} s): run the same command again to resume" \
        | tee -a "$LOG"
elif [[ $status -ne 0 ]]; then
    exit "$status"
fi

# The best epoch's weights, scored as 'planner plan' predicts (6-view average) on validation.
if [[ -f "$RUN/model.pt" ]]; then
    "$PYTHON" -m planner evaluate-prediction "$DATA_DIR/validation-pats" --model "$RUN/model.pt" \
        --device auto --csv "$OUT_DIR/validation.csv" --json "$OUT_DIR/validation.json" \
        --force 2>&1 | tee -a "$LOG"
fi
date -u "+finished %Y-%m-%d %H:%M:%S UTC" | tee -a "$LOG"
