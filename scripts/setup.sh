#!/usr/bin/env bash
# Create .venv and install superlora into it. CPU torch first, so nothing pulls a CUDA build.
# Usage: bash scripts/setup.sh [--test]     (--test adds pytest and ruff)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
echo "superlora installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
