#!/usr/bin/env bash
# Create .venv (if needed) with aelstm and its dev/training dependencies; torch is the CPU build.
# Re-runs are quick: nothing is reinstalled unless pyproject.toml or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.aelstm-installed
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -qq --upgrade pip
  # The CPU build of torch first, so that nothing below pulls a multi-GB CUDA build.
  .venv/bin/python -m pip install -qq "torch==2.13.0"
  .venv/bin/python -m pip install -qq -e ".[dev]"
  echo "$want" > "$stamp"
fi
