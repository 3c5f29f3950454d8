#!/usr/bin/env bash
# Set up .venv and run lint + the whole test suite (unit and integration: real Ray Serve, gRPC, onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
