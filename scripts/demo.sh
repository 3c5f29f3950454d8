#!/usr/bin/env bash
# The main job on the bundled NAB machine-temperature series: train a model on its normal start (if none is there
# yet), then score the whole series and report the flagged anomalies against the labelled failures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0

DATA=tests/fixtures/nab/data/realKnownCause/machine_temperature_system_failure.csv
BUNDLE=runs/demo/machine-temperature
if [ ! -f "$BUNDLE/manifest.json" ]; then
  aelstm train "$DATA" --dataset nab --until-first-anomaly --name machine-temperature -o "$BUNDLE"
fi
aelstm score "$BUNDLE" "$DATA" --dataset nab -o runs/demo/scores.csv
