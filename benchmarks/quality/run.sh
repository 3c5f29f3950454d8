#!/usr/bin/env bash
# Full detection-quality benchmark on SKAB (both protocols) and TON_IoT (plus the N-BaIoT smoke run): writes
# benchmarks/results/quality/<dataset>.{json,md} and PNG figures. Run from the repository root:
#   benchmarks/quality/run.sh            # full run
#   benchmarks/quality/run.sh --quick    # the CI-sized subset (each dataset ≤ 2 minutes)
set -euo pipefail
out=benchmarks/results/quality
extra=()
if [[ "${1:-}" == "--quick" ]]; then
  out=benchmarks/results/quality-quick
  extra=(--quick)
fi
for dataset in skab skab-anomaly-free ton_iot nbaiot; do
  aelstm evaluate --dataset "$dataset" -o "$out" "${extra[@]}"
done
