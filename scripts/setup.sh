#!/usr/bin/env bash
# Create .venv (Python 3.11+) with the pinned dependency set and the project installed.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gestural needs Python 3.11 or newer")'
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned to 2.13.0: on our machines that is a CPU build that lies on disk; any
# other spec downloads gigabytes of CUDA wheels. On a GPU machine, install the torch build
# for its CUDA first; pyproject.toml accepts torch >= 2.4.
.venv/bin/python -m pip install --quiet -r requirements.lock
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, dvc; print("torch", torch.__version__, "dvc", dvc.__version__)'))"
