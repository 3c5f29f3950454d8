#!/usr/bin/env bash
# Full detection-quality benchmark: choose the shared settings on SKAB's development runs (valve1) only, then report
# SKAB's held-out runs (valve2 + other) with them, and the other datasets with the same settings. Writes
# benchmarks/results/quality/selection-skab.{json,md}, <dataset>.{json,md} and PNG figures. From the repository root:
#   benchmarks/quality/run.sh            # full run
#   benchmarks/quality/run.sh --quick    # the CI-sized subset (each step ≤ 2 minutes)
set -euo pipefail
out=benchmarks/results/quality
extra=()
seeds=3
if [[ "${1:-}" == "--quick" ]]; then
  out=benchmarks/results/quality-quick
  extra=(--quick)
  seeds=1
fi
python -m benchmarks.quality.select --dataset skab -o "$out" "${extra[@]}"
aelstm evaluate --dataset skab --split held-out --settings "$out/selection-skab.json" --seeds "$seeds" -o "$out" \
  "${extra[@]}"
for dataset in skab-anomaly-free ton_iot; do
  aelstm evaluate --dataset "$dataset" --settings "$out/selection-skab.json" --seeds "$seeds" -o "$out" "${extra[@]}"
done
aelstm evaluate --dataset nbaiot --settings "$out/selection-skab.json" -o "$out" "${extra[@]}"  # smoke, one seed
