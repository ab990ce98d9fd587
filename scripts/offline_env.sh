# Sourced by scripts/train_gpu.sh and benchmarks/gpu_check.sh: planner's dependencies on an
# offline machine, installed from a folder of wheels into the Python in use (scripts/README.md).
# Expects REPO (the repository root) and PYTHON (the interpreter) to be set.

# planner's dependencies from pyproject.toml, one a line, then those of the extras named as
# arguments (e.g. "test").
planner_requirements() {
    "$PYTHON" -c 'import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project.get("optional-dependencies", {})
print("\n".join(project["dependencies"] + [r for name in sys.argv[2:] for r in extras[name]]))' \
        "$REPO/pyproject.toml" "$@"
}

# require_wheels_dir WHEELS_DIR: exit 2, saying why, unless the folder exists.
require_wheels_dir() {
    if [[ ! -d "$1" ]]; then
        echo "$1: no such folder (the wheels of planner's dependencies, scripts/README.md)" >&2
        exit 2
    fi
}

# install_from_wheels WHEELS_DIR REQUIREMENTS_FILE: what the Python lacks, from WHEELS_DIR alone
# (nothing is downloaded); packages already installed (a CUDA build of torch, cupy) are kept.
install_from_wheels() {
    "$PYTHON" -m pip install --quiet --no-index --find-links "$1" -r "$2"
}
