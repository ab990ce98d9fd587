#!/usr/bin/env bash
# The GPU check (benchmarks/README.md): on an offline GPU machine, as it is, in a few minutes.
#
#   benchmarks/gpu_check.sh OUT_DIR WHEELS_DIR OPENKBP_PATIENT
#   benchmarks/gpu_check.sh --requirements     # what WHEELS_DIR must hold, one a line
#
# 1. the tests parametrised over numpy and cupy (tests/conftest.py's xp fixture), 2. cupy against
# numpy on the same Dij and final dose, 3. Dij, optimisation and whole-plan times of TG-119
# (example:cshape) and of one OpenKBP patient (a folder with ct.csv) with --device cuda beside
# --device cpu (benchmarks/bench_gpu.py). Results in OUT_DIR (created): gpu_check.md,
# gpu_check.json, tests.txt, gpu_check.log, plans/. Without a GPU it runs the numpy half and says
# so. Environment: PYTHON (default python3), GPU_CHECK_QUICK=1 (coarse plans: a CPU test run).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
source "$REPO/scripts/offline_env.sh"

if [[ "${1:-}" == "--requirements" ]]; then
    planner_requirements test
    exit 0
fi
if [[ $# -ne 3 ]]; then
    echo "usage: $0 OUT_DIR WHEELS_DIR OPENKBP_PATIENT" >&2
    exit 2
fi
OUT_DIR="$1"; WHEELS_DIR="$2"; PATIENT="$3"
if [[ ! -f "$PATIENT/ct.csv" && ! -f "$PATIENT/ct.csv.gz" ]]; then
    echo "$PATIENT: no ct.csv (OPENKBP_PATIENT must be one OpenKBP patient folder)" >&2
    exit 2
fi
require_wheels_dir "$WHEELS_DIR"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"; PATIENT="$(cd "$PATIENT" && pwd)"
LOG="$OUT_DIR/gpu_check.log"

planner_requirements test > "$OUT_DIR/requirements.txt"
install_from_wheels "$WHEELS_DIR" "$OUT_DIR/requirements.txt"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

{ date -u "+started %Y-%m-%d %H:%M:%S UTC"
  command -v nvidia-smi > /dev/null && nvidia-smi -L || echo "no nvidia-smi"; } | tee -a "$LOG"
if "$PYTHON" -c 'import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)' 2> /dev/null
then
    devices=(--device cuda --device cpu)
    echo "CUDA device found: cupy against numpy, plans on cuda and cpu" | tee -a "$LOG"
else
    devices=(--device cpu)
    echo "no GPU (cupy absent or no CUDA device): the numpy half only; the cupy tests skip" \
        | tee -a "$LOG"
fi

# The xp-parametrised tests: ids end in [numpy...] or [cupy...]; without a GPU the cupy ones skip.
cd "$REPO"
status=0
"$PYTHON" -m pytest -q -p no:cacheprovider --continue-on-collection-errors -k "numpy or cupy" \
    -rs tests 2>&1 \
    | tee "$OUT_DIR/tests.txt" | tail -n 25 | tee -a "$LOG" || status=$?

quick=()
[[ "${GPU_CHECK_QUICK:-0}" == 1 ]] && quick=(--quick)
"$PYTHON" benchmarks/bench_gpu.py "$OUT_DIR" --case tg119=example:cshape \
    --case "openkbp-$(basename "$PATIENT")=$PATIENT" "${devices[@]}" "${quick[@]}" 2>&1 \
    | tee -a "$LOG"
date -u "+finished %Y-%m-%d %H:%M:%S UTC" | tee -a "$LOG"
exit "$status"
