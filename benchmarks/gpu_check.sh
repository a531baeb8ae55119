#!/usr/bin/env bash
# The GPU check, for a CUDA machine with PyTorch and without internet (benchmarks/gpu_check.py says what
# it runs): installs dncsim and what the machine lacks from the wheels that benchmarks/gpu_wheels.sh
# downloaded beforehand, into .gpu-venv (a venv that sees the machine's own torch), then runs the stages
# within 8 minutes and writes gpu-check.log.
#
#   benchmarks/gpu_check.sh [WHEELS_DIR]     (default: gpu-wheels in the repository)
#   DEVICE=cpu benchmarks/gpu_check.sh       every stage on the CPU
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh     use an interpreter that has dncsim: no install
#   benchmarks/gpu_check.sh --dry-run        = DEVICE=cpu with PYTHON (default python3), a tiny run, no install
# Extra arguments after the wheels directory go to gpu_check.py (--set KEY=VALUE, --budget S, --out, --log).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
device="${DEVICE:-cuda}"
extra=()
if [[ "${1:-}" == "--dry-run" ]]; then
    shift
    device=cpu
    PYTHON="${PYTHON:-python3}"
    extra=(--set scenario.source.image_size=16 --set scenario.source.train_repeats=1
           --set scenario.source.probe_repeats=1 --set scenario.source.test_repeats=2
           --set backbone.width=4 --set backbone.feature_dim=8 --set training.epochs=1
           --set analysis.episodes=5 --set "analysis.shots=[1]" --set output.report=false
           --set output.tensorboard=false --set threads=1)
fi
if [[ -z "${PYTHON:-}" ]]; then
    wheels="$root/gpu-wheels"
    if [[ $# -gt 0 && "$1" != -* ]]; then wheels="$(realpath -m "$1")"; shift; fi
    if ! ls "$wheels"/*.whl > /dev/null 2>&1; then
        echo "gpu_check: no wheels in $wheels (run benchmarks/gpu_wheels.sh $wheels on a machine with internet)" >&2
        exit 2
    fi
    python3 -c 'import torch' 2> /dev/null || { echo "gpu_check: python3 has no torch; this check expects a" \
        "machine with PyTorch (the wheels leave torch out)" >&2; exit 2; }
    python3 -m venv --system-site-packages "$root/.gpu-venv"
    # exactly the carried wheels, over the machine's own packages: no index, no resolution
    "$root/.gpu-venv/bin/pip" install --quiet --no-index --no-deps --ignore-installed "$wheels"/*.whl
    PYTHON="$root/.gpu-venv/bin/python"
fi
cd "$root"
exec "$PYTHON" benchmarks/gpu_check.py --device "$device" "${extra[@]}" "$@"
