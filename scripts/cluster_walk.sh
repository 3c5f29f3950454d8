#!/usr/bin/env bash
# The README's cluster walk ("On a Ray cluster") on this machine: a head and a worker node that score and a training
# node without CPUs, started with `ray start` and token authentication, `aelstm deploy`, fleets trained on the
# training node (`--fit-resource`), two ingresses, publish, rollback, an identical re-deploy under load,
# `aelstm undeploy`, then no process of the walk left running and nothing of aelstm left in the temp dir. The
# commands are the README's, with what a shared host adds: private ports and temp dirs (other Ray clusters may run
# here), explicit addresses instead of `auto`, and nodes stopped by ending their own processes (`ray stop` would stop
# every Ray on the host).
# Usage: bash scripts/cluster_walk.sh   (about 2 minutes on 2 cores; exits non-zero at the first failed step,
# 3 when `ray start` itself cannot start a node here, with the node's log on stderr)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" RAY_USAGE_STATS_ENABLED=0

WORK=$(mktemp -d /tmp/walkXXXX)     # short: Ray's socket paths must fit in 107 bytes
mkdir -p "$WORK/tmp"
export TMPDIR="$WORK/tmp"           # where aelstm and Ray put their temporary files
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(python -c "import secrets; print(secrets.token_hex(32))")
export RAY_AUTH_TOKEN               # this cluster's token, for every node and every process that joins it
INGRESSES=()

say() { printf '\n== %s\n' "$*"; }
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
node_ports() {  # every port a node opens, chosen free now
  local low; low=$(python -c 'import random; print(random.randrange(20000, 29000, 100))')
  echo --node-manager-port "$(free_port)" --object-manager-port "$(free_port)" \
    --dashboard-agent-listen-port "$(free_port)" --dashboard-agent-grpc-port "$(free_port)" \
    --runtime-env-agent-port "$(free_port)" --metrics-export-port "$(free_port)" \
    --min-worker-port "$low" --max-worker-port "$((low + 99))"
}
our_ray_processes() {  # $1: only those under this path (default: the whole walk); with every process they started,
  # for Ray's agents rename themselves (their command line no longer says where they belong) and outlive a raylet
  python -c '
import os, sys
scope, shell = sys.argv[1:]
parents, found = {}, set()
for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
    try:
        state, ppid = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[:2]
        if state != "Z":
            parents[pid] = int(ppid)
            if scope in open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"):
                found.add(pid)
    except (OSError, ValueError):
        continue
while grown := {pid for pid, ppid in parents.items() if ppid in found} - found:
    found |= grown
found -= {os.getpid(), os.getppid(), int(shell)}  # this lookup and the shells that asked for it
print(*sorted(found), sep="\n")
' "${1:-$WORK}" "$$"
}
stop_processes() {  # $@: pids; SIGTERM, then SIGKILL what is still there after 10 s (Ray's agents ignore SIGTERM)
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2> /dev/null || true; done
  for _ in $(seq 40); do running "$@" || return 0; sleep 0.25; done
  for pid in "$@"; do kill -KILL "$pid" 2> /dev/null || true; done
  for _ in $(seq 20); do running "$@" || return 0; sleep 0.25; done
}
running() {  # $@: pids; whether any of them still runs (zombies awaiting their parent do not)
  local pid
  for pid in "$@"; do
    [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2> /dev/null)" != Z ] && return 0
  done
  return 1
}
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then  # what the failed step's commands wrote, before the temp dir goes
    for log in "$WORK"/*.log "$WORK"/*.err "$WORK"/*.txt; do
      [ -s "$log" ] && { echo "-- $(basename "$log"):"; tail -20 "$log"; }
    done >&2
  fi
  for pid in "${INGRESSES[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
  # shellcheck disable=SC2046
  stop_processes $(our_ray_processes)
  rm -rf "$WORK"
}
trap cleanup EXIT

start_ingress() {  # $1: log file; prints the ingress's address once its start line says SERVING
  aelstm serve --ray-address "$HEAD" --port 0 --metrics-port 0 --registry "$WORK/registry" --poll-s 0.5 \
    > "$1" 2> "$1.err" &
  INGRESSES+=($!)
  for _ in $(seq 240); do
    if grep -q "serving on" "$1"; then sed -E 's/.*serving on ([^ ]+) .*/\1/' "$1"; return; fi
    sleep 0.5
  done
  echo "ingress did not become SERVING: $(cat "$1" "$1.err" | tail -5)" >&2; return 1
}
start_node() {  # $1: name, then `ray start` options; fresh ports each try, since another process may take one
  local name=$1; shift
  for try in 1 2 3; do
    # shellcheck disable=SC2046
    ray start "$@" --temp-dir "$WORK/$name" $(node_ports) > "$WORK/$name.log" 2>&1 && return
    echo "ray start ($name) failed on try $try: $(tail -3 "$WORK/$name.log")" >&2
    for pid in $(our_ray_processes "$WORK/$name"); do kill -KILL "$pid" 2> /dev/null || true; done
  done
  echo "Ray could not start a $name node on this host" >&2; exit 3
}
version_of() { aelstm-client --target "$1" models --json | python -c 'import json, sys; print(json.load(sys.stdin)[0]["model_version"])'; }
wait_version() {  # $1 address, $2 version: within a few poll intervals
  for _ in $(seq 40); do [ "$(version_of "$1")" = "$2" ] && return; sleep 0.25; done
  echo "$1 serves version $(version_of "$1"), not $2" >&2; return 1
}

say "two bundles to publish"
for seed in 0 1; do
  aelstm train tests/fixtures/nab/data/realKnownCause/ec2_request_latency_system_failure.csv --dataset nab \
    --until-first-anomaly --window 16 --hidden 16 --latent 4 --epochs 3 --seed "$seed" -o "$WORK/bundle-$seed" \
    > /dev/null 2>&1
done

say "1. nodes: a head and a worker that score, a training node without CPUs, token authentication"
HEAD_PORT=$(free_port)
ray get-auth-token > /dev/null    # the token in RAY_AUTH_TOKEN is the one every node uses
HEAD=127.0.0.1:$HEAD_PORT
start_node head --head --num-cpus 1 --port "$HEAD_PORT" --dashboard-port "$(free_port)" \
  --ray-client-server-port "$(free_port)"
start_node worker --address "$HEAD" --num-cpus 1
start_node trainer --address "$HEAD" --num-cpus 0 --resources '{"training": 2}'
for _ in $(seq 60); do  # the nodes show in `ray status` once the head's autoscaler view has caught up
  [ "$(ray status --address "$HEAD" | tee "$WORK/status.txt" | grep -c " node_")" = 3 ] && break; sleep 1
done
[ "$(grep -c " node_" "$WORK/status.txt")" = 3 ] || { cat "$WORK/status.txt"; echo "expected three nodes" >&2; exit 1; }
echo "three nodes up at $HEAD"

say "2. deploy: dry run, then two Scorer replicas (one per scoring node)"
aelstm deploy --ray-address "$HEAD" --replicas 2 --dry-run | grep -q "import_path: aelstm.server.scoring_app:app"
aelstm deploy --ray-address "$HEAD" --replicas 2 | tee "$WORK/deploy.txt"
grep -qE "2 Scorer replica\(s\) on node\(s\) [0-9a-f]+, [0-9a-f]+" "$WORK/deploy.txt"

say "3. two fleets trained on the training node alone (--fit-resource), then publish and two ingresses"
python -c 'import math, os, sys
os.makedirs(sys.argv[1])
for name, period in (("pumps", 12), ("fans", 30)):
    rows = "\n".join(f"{math.sin(2 * math.pi * i / period):.5f}" for i in range(600))
    open(f"{sys.argv[1]}/{name}.csv", "w").write("v\n" + rows + "\n")' "$WORK/fleets"
aelstm train-fleets "$WORK/fleets" --registry "$WORK/fleet-registry" --ray-address "$HEAD" --fit-resource training \
  --summary "$WORK/fleets.json" --quiet --window 16 --hidden 16 --latent 4 --epochs 3
aelstm status --ray-address "$HEAD" > "$WORK/nodes.txt"  # the nodes with their resources, the replicas per node
TRAINER=$(grep -E "node .* CPUs 0 training 2$" "$WORK/nodes.txt" | awk '{print $2}' || true)
[ -n "$TRAINER" ] || { cat "$WORK/nodes.txt"; echo "aelstm status lists no training node" >&2; exit 1; }
if grep -q "$TRAINER" "$WORK/deploy.txt"; then echo "a Scorer replica landed on the training node" >&2; exit 1; fi
python -c 'import json, sys
nodes = {o["node"][:12] for o in json.load(open(sys.argv[1]))}
assert nodes == {sys.argv[2]}, f"fits ran on {nodes}, not the training node {sys.argv[2]!r}"' "$WORK/fleets.json" "$TRAINER"
echo "both fleets published, both fits on the training node $TRAINER"
aelstm publish "$WORK/bundle-0" --fleet ec2 --registry "$WORK/registry"
FIRST=$(start_ingress "$WORK/ingress-1.log")
SECOND=$(start_ingress "$WORK/ingress-2.log")
aelstm-client --target "$FIRST" health && aelstm-client --target "$SECOND" health

say "4. a new version, then a rollback: both ingresses follow"
aelstm publish "$WORK/bundle-1" --fleet ec2 --registry "$WORK/registry"
wait_version "$FIRST" 2 && wait_version "$SECOND" 2
aelstm registry rollback ec2 --registry "$WORK/registry"
wait_version "$FIRST" 3 && wait_version "$SECOND" 3
aelstm registry list --registry "$WORK/registry"
aelstm status --ray-address "$HEAD" --ingress "$FIRST" --ingress "$SECOND" | tee "$WORK/status.txt"
[ "$(grep -c "ec2: .* version 3" "$WORK/status.txt")" = 2 ]
echo "both ingresses serve version 3 (the content of version 1)"

say "5. an identical re-deploy under load"
aelstm-client --target "$FIRST" loadtest -G 2 -D 16 -b 4 --fleet ec2 --rate 100 --warmup 1s --duration 45s \
  --json "$WORK/rollout.json" > "$WORK/rollout.txt" 2>&1 &
LOAD=$!
sleep 5
DEPLOY_START=$(date +%s)
aelstm deploy --ray-address "$HEAD" --replicas 2
echo "re-deploy took $(($(date +%s) - DEPLOY_START)) s, inside the 46 s of load"
ROLLOUT_EXIT=0
wait "$LOAD" || ROLLOUT_EXIT=$?
python - "$WORK/rollout.json" "$ROLLOUT_EXIT" <<'EOF'
import json, sys
measured = json.load(open(sys.argv[1]))["measured"]
figures = {k: measured[k] for k in ("sent", "answered", "errors", "item_errors", "lost", "resent")}
print(f"re-deploy under load: loadtest exit {sys.argv[2]}, {figures}, latency ms {measured['latency_ms']}")
EOF

say "6. undeploy: both ingresses turn NOT_SERVING (health exits 8)"
aelstm undeploy --ray-address "$HEAD"
for target in "$FIRST" "$SECOND"; do
  status=0
  aelstm-client --target "$target" health --wait 0s > /dev/null 2>&1 || status=$?
  for _ in $(seq 40); do [ "$status" = 8 ] && break; sleep 0.5
    status=0; aelstm-client --target "$target" health > /dev/null 2>&1 || status=$?; done
  [ "$status" = 8 ] || { echo "$target: health exit $status, wanted 8" >&2; exit 1; }
done
echo "both ingresses NOT_SERVING"

say "7. stop: ingresses (SIGTERM drains), then the nodes' own processes"
for pid in "${INGRESSES[@]}"; do kill -TERM "$pid"; wait "$pid"; done
INGRESSES=()
# shellcheck disable=SC2046
stop_processes $(our_ray_processes)
left=$(our_ray_processes)
[ -z "$left" ] || { echo "still running: $left" >&2; exit 1; }
left=$(find "$TMPDIR" -mindepth 1 -maxdepth 1 -name 'aelstm-*' | head -5)
[ -z "$left" ] || { echo "left in the temp dir: $left" >&2; exit 1; }
echo "no process of the walk left running, nothing of aelstm left in $TMPDIR"
if [ "$ROLLOUT_EXIT" != 0 ]; then
  echo "cluster walk: every step passed except the re-deploy under load (loadtest exit $ROLLOUT_EXIT)" >&2; exit 7
fi
echo "cluster walk: every step passed"
