#!/usr/bin/env bash
# Interleaved A/B of two raftmq binaries on one produce case: for each pair, a fresh three-node
# group of binary A runs the case, then one of binary B (A's group is stopped first), so slow
# and fast stretches of a shared machine hit both alike. Prints one line per run: msgs/s, p50 and
# p99, and CPU per acknowledged message of each node and of the bench client (from
# /proc/<pid>/stat and /usr/bin/time), because on a noisy machine CPU per message moves less
# than throughput does.
#
#   bench/ab.sh OLD_BIN NEW_BIN [FLUSH] [PRODUCERS] [WINDOW] [BATCH]
#
# Environment: PAIRS (default 3), SECONDS_PER_RUN (default 8), SIZE (default 1024),
# PORT_BASE (default 27080: client ports +1..3, peer ports +1001..1003), NODE_ENV (extra
# environment for the nodes only, e.g. "TOKIO_WORKER_THREADS=1"). Each run's client is the same
# binary as its nodes.
set -uo pipefail

A=${1:?usage: bench/ab.sh OLD_BIN NEW_BIN [FLUSH] [PRODUCERS] [WINDOW] [BATCH]}
B=${2:?usage: bench/ab.sh OLD_BIN NEW_BIN [FLUSH] [PRODUCERS] [WINDOW] [BATCH]}
FLUSH=${3:-async}
PRODUCERS=${4:-64}
WINDOW=${5:-1}
BATCH=${6:-1}
PAIRS=${PAIRS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
SIZE=${SIZE:-1024}
PORT_BASE=${PORT_BASE:-27080}
NODE_ENV=${NODE_ENV:-}
for bin in "$A" "$B"; do
  [[ -x $bin ]] || { echo "error: $bin is not an executable raftmq binary" >&2; exit 2; }
done

ENDPOINTS="127.0.0.1:$((PORT_BASE + 1));127.0.0.1:$((PORT_BASE + 2));127.0.0.1:$((PORT_BASE + 3))"
PEERS="1=127.0.0.1:$((PORT_BASE + 1001)),2=127.0.0.1:$((PORT_BASE + 1002)),3=127.0.0.1:$((PORT_BASE + 1003))"
WORK=$(mktemp -d /tmp/raftmq-ab.XXXXXX)
PIDS=()
stop_group() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  PIDS=()
}
trap 'stop_group; rm -rf "$WORK"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Runs the case once with binary $1 under label $2.
run_once() {
  local bin=$1 label=$2 dir id
  dir=$(mktemp -d "$WORK/run.XXXX")
  for id in 1 2 3; do
    env $NODE_ENV "$bin" server --node-id "$id" --group g1 --data-dir "$dir/n$id" \
      --listen "127.0.0.1:$((PORT_BASE + id))" --peer-listen "127.0.0.1:$((PORT_BASE + 1000 + id))" \
      --peers "$PEERS" --flush "$FLUSH" >"$dir/n$id.log" 2>&1 &
    PIDS+=($!)
  done
  sleep 2
  local before=() pid
  for pid in "${PIDS[@]}"; do before+=("$(cpu_ticks "$pid")"); done
  /usr/bin/time -f "%U %S" -o "$dir/time" "$bin" bench produce --endpoint "$ENDPOINTS" --topic T --create-topic \
    --size "$SIZE" --producers "$PRODUCERS" --window "$WINDOW" --batch "$BATCH" --messages 100000000 \
    --duration "${SECONDS_PER_RUN}s" >"$dir/out.json" 2>"$dir/bench.err"
  local ticks=() i
  for i in 0 1 2; do ticks+=($(( $(cpu_ticks "${PIDS[$i]}") - ${before[$i]} ))); done
  stop_group
  python3 - "$label" "$dir/out.json" "$dir/time" "$(getconf CLK_TCK)" "${ticks[@]}" <<'EOF'
import json, sys
label, out, timing, hz, *ticks = sys.argv[1:]
try:
    run = json.load(open(out))
except (OSError, ValueError):
    print(f"{label}: the bench run failed (see its stderr in the work dir)")
    sys.exit(0)
n = max(run["messages"], 1)
user, system = map(float, open(timing).read().split()[-2:])
nodes = " ".join(f"{int(t) / int(hz) * 1e6 / n:.0f}" for t in ticks)
print(f"{label}: {run['msgs_per_s']:>9,.0f} msgs/s  p50 {run['p50_us'] / 1000:.1f} ms  p99 {run['p99_us'] / 1000:.1f} ms"
      f"  cpu us/msg nodes {nodes}  client {(user + system) * 1e6 / n:.1f}")
EOF
}

echo "case: $SIZE B, producers $PRODUCERS, window $WINDOW, batch $BATCH, flush $FLUSH, ${SECONDS_PER_RUN}s per run"
for pair in $(seq "$PAIRS"); do
  run_once "$A" "pair $pair A"
  run_once "$B" "pair $pair B"
done
