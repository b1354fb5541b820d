#!/usr/bin/env bash
# The gpu preset, proven (scripts/gpu_check.py says what runs, what is cut and why):
#   scripts/gpu_check.sh                 on one GPU, under 10 minutes: writes results/gpu.md
#   scripts/gpu_check.sh --dry           the same path on CPU at smoke sizes: scratch/gpu_check/dry/gpu.md
#   scripts/gpu_check.sh --help          every option (--only, --out, --scratch, --budget)
# It runs in the project's virtual environment (.venv, or $LAB_VENV), which ./lab.sh creates on first use;
# on a GPU machine install the gpu extra into it first: .venv/bin/pip install -e '.[gpu]'.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LAB_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  "$root/lab.sh" list >/dev/null  # creates .venv and installs the project into it, saying so
fi
cd "$root"
exec "$venv/bin/python" scripts/gpu_check.py "$@"
