#!/usr/bin/env bash
# The main job, end to end on one machine: train a model on the normal start of the bundled NAB machine-temperature
# series (once), publish it to a local registry, start `aelstm serve` on an embedded Ray, stream the whole labelled
# series through `aelstm-client replay` as a gateway would, print the flagged anomalies against the labelled
# failures and the latency seen, then stop the server cleanly.
#
# AELSTM_DEMO_PORT: the port the demo's server listens on (default 50051). The demo needs it free: it stops at once
# when something already listens there, and fails when its own server exits or never becomes healthy, so that it
# never scores against another server.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${AELSTM_DEMO_PORT:-50051}
TARGET=127.0.0.1:$PORT
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "demo: port $PORT is already in use; stop what listens there or pick another with AELSTM_DEMO_PORT" >&2
  exit 1
fi

bash scripts/setup.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0

DATA=tests/fixtures/nab/data/realKnownCause/machine_temperature_system_failure.csv
RUN=runs/demo
REGISTRY=$RUN/registry
mkdir -p "$RUN"

if [ ! -d "$REGISTRY/machines" ]; then
  echo "== training on the normal start of $(basename "$DATA")"
  aelstm train "$DATA" --dataset nab --until-first-anomaly --name machine-temperature -o "$RUN/machine-temperature"
  aelstm publish "$RUN/machine-temperature" --fleet machines --registry "$REGISTRY"
fi

echo "== starting aelstm serve on $TARGET (embedded Ray; log: $RUN/serve.log)"
aelstm serve --registry "$REGISTRY" --port "$PORT" --metrics-port 0 --log-format text > "$RUN/serve.log" 2>&1 &
SERVER=$!
stop_server() {
  if kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" && wait "$SERVER" || true
  fi
}
trap stop_server EXIT

server_gone() {
  echo "demo: the server exited; the end of $RUN/serve.log:" >&2
  tail -n 5 "$RUN/serve.log" >&2
  exit 1
}
healthy=
for _ in $(seq 180); do
  kill -0 "$SERVER" 2>/dev/null || server_gone
  # Healthy: this server says it listens (not just anything on the port) and its health check says SERVING.
  if grep -q "serving on" "$RUN/serve.log" && aelstm-client --target "$TARGET" --deadline 2s health > /dev/null 2>&1
  then healthy=1; break; fi
  sleep 1
done
if [ -z "$healthy" ]; then echo "demo: the server did not become healthy in 180 s; see $RUN/serve.log" >&2; exit 1; fi
kill -0 "$SERVER" 2>/dev/null || server_gone
aelstm-client --target "$TARGET" models

echo "== replaying $(basename "$DATA") reading by reading as device machine-1 of fleet machines"
aelstm-client --target "$TARGET" replay "$DATA" --dataset nab --fleet machines --device machine-1 \
  --max-in-flight 8 -o "$RUN/replay.csv"
kill -0 "$SERVER" 2>/dev/null || server_gone

echo "== stopping the server"
stop_server
trap - EXIT
echo "answers written to $RUN/replay.csv"
