#!/usr/bin/env bash
# Create .venv and install superlora into it. CPU torch first, so nothing pulls a CUDA build.
# Usage: bash scripts/setup.sh [--test]
#   --test adds the test tools (pytest, ruff, Playwright) and Debian's chromium for the browser tests
#   (Playwright drives /usr/bin/chromium; `playwright install` would try to download a browser).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
if [ -n "$extras" ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "superlora installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
