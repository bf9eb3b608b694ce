#!/usr/bin/env bash
# raftmq's benchmark matrix: builds release, starts a three-node group as three `raftmq server`
# processes on 127.0.0.1, runs the same publish matrix as ../shared/bench/nats/run.sh (plus a
# batch-32 case and an e2e case) with --flush sync and then --flush async (a fresh group for each),
# reads the largest topic back (consume), and runs failover trials. JSON lines go to stdout,
# progress to stderr. See bench/README.md.
#
#   bench/run.sh > raftmq.jsonl
#
# Environment:
#   CASES         space-separated SIZE:PRODUCERS:WINDOW:BATCH:MESSAGES (default: the matrix below)
#   FLUSHES       flush policies to run, in order (default "sync async")
#   CASE_SECONDS  cap on each produce case's sending time (default 30; a case stops at its message
#                 count or after this, whichever comes first; the JSON line has the acked count)
#   RUN_TIMEOUT   seconds allowed per bench run (default 120; failover gets 30 per trial + 60)
#   TRIALS        failover trials (default 10; 0 skips failover)
#   FAILOVER_FLUSH  the flush policy whose group runs failover (default sync)
#   E2E           1 (default) runs one e2e case (1 KiB, 16 producers, window 1) per policy
#   NATS          1 also runs ../shared/bench/nats/run.sh, default and NATS_SYNC=always, after ours
#   KEEP          1 keeps the data dir (node logs) under $BASE_DIR
#   BASE_DIR      parent of the temp data dir (default /tmp)
#   PORT_BASE     client ports PORT_BASE+1..3, peer ports PORT_BASE+1001..1003 (default 27080)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE_DIR=${BASE_DIR:-/tmp}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
CASE_SECONDS=${CASE_SECONDS:-30}
TRIALS=${TRIALS:-10}
FLUSHES=${FLUSHES:-"sync async"}
FAILOVER_FLUSH=${FAILOVER_FLUSH:-sync}
E2E=${E2E:-1}
PORT_BASE=${PORT_BASE:-27080}
# The nats matrix, the batch case, then (16,32) last so that consume reads back the largest topic.
CASES=${CASES:-"1024:1:1:1:18000 1024:16:1:1:50000 1024:64:1:1:100000 128:64:1:1:100000 1024:16:1:32:1000000 1024:16:32:1:200000"}

log() { echo "[raftmq run] $*" >&2; }

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release/raftmq"
(cd "$ROOT" && timeout 1800 cargo build --release --quiet --bin raftmq) >&2 || { log "build failed"; exit 1; }

WORK=$(mktemp -d "$BASE_DIR/raftmq-bench.XXXXXX")
ENDPOINTS="127.0.0.1:$((PORT_BASE + 1));127.0.0.1:$((PORT_BASE + 2));127.0.0.1:$((PORT_BASE + 3))"
PEERS="1=127.0.0.1:$((PORT_BASE + 1001)),2=127.0.0.1:$((PORT_BASE + 1002)),3=127.0.0.1:$((PORT_BASE + 1003))"

# Starts node ID of the current group (its flush policy is in $WORK/flush); writes its pid file.
cat >"$WORK/start-node.sh" <<EOF
#!/usr/bin/env bash
id=\$1
flush=\$(cat "$WORK/flush")
nohup "$BIN" server --node-id "\$id" --group g1 --data-dir "$WORK/node-\$id" \\
  --listen "127.0.0.1:\$(($PORT_BASE + id))" --peer-listen "127.0.0.1:\$(($PORT_BASE + 1000 + id))" \\
  --peers "$PEERS" --flush "\$flush" </dev/null >>"$WORK/node-\$id.log" 2>&1 &
echo \$! >"$WORK/node-\$id.pid"
EOF
chmod +x "$WORK/start-node.sh"

stop_node() {
  local pidfile="$WORK/node-$1.pid" pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

stop_group() {
  for id in 1 2 3; do stop_node "$id"; done
  rm -rf "$WORK"/node-1 "$WORK"/node-2 "$WORK"/node-3
  for id in 1 2 3; do [[ -f $WORK/node-$id.log ]] && mv "$WORK/node-$id.log" "$WORK/node-$id.log.$(date +%s%N)"; done
  return 0
}

# After a failed run: a node that is gone is reported (with its last log lines) and the group is
# started again so that the next cases still run. Returns 1 if it restarted the group.
check_group() {
  local dead=
  for id in 1 2 3; do
    pid=$(cat "$WORK/node-$id.pid" 2>/dev/null) || pid=
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
      dead="$dead $id"
      log "node $id is not running; last lines of its log:"
      tail -n 20 "$WORK/node-$id.log" >&2
    fi
  done
  if [[ -n $dead ]]; then
    crashed=1
    log "nodes$dead died; logs kept in $WORK; starting a fresh group"
    start_group "$(cat "$WORK/flush")"
    return 1
  fi
  return 0
}

cleanup() {
  stop_group
  if [[ ${KEEP:-0} == 1 || $crashed == 1 ]]; then log "kept $WORK (node logs)"; else rm -rf "$WORK"; fi
}
crashed=0
trap cleanup EXIT

wait_group() {
  for _ in $(seq 300); do
    status=$("$BIN" cluster status --endpoint "$ENDPOINTS" --json 2>/dev/null) || status=
    if [[ $(grep -o '"role":"leader"' <<<"$status" | wc -l) == 1 && $(grep -o '"role":"follower"' <<<"$status" | wc -l) == 2 ]]; then
      return 0
    fi
    sleep 0.2
  done
  log "group did not come up: $status"
  return 1
}

start_group() {
  stop_group
  echo "$1" >"$WORK/flush"
  for id in 1 2 3; do "$WORK/start-node.sh" "$id"; done
  wait_group
}

bench() { timeout "$1" "$BIN" bench "${@:2}" --endpoint "$ENDPOINTS" --system raftmq; }

# One JSON line with each node's resident memory now and at its peak (VmRSS, VmHWM in KiB).
memory() {
  local rss= hwm= id pid
  for id in 1 2 3; do
    pid=$(cat "$WORK/node-$id.pid" 2>/dev/null) || continue
    rss="$rss${rss:+,}$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
    hwm="$hwm${hwm:+,}$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
  done
  echo "{\"system\":\"raftmq\",\"mode\":\"memory\",\"flush\":\"$1\",\"phase\":\"$2\",\"rss_kb\":[$rss],\"peak_rss_kb\":[$hwm]}"
}

fail=0
case_no=0
for flush in $FLUSHES; do
  log "starting a three-node group with --flush $flush in $WORK"
  start_group "$flush" || { fail=1; continue; }
  sleep 2
  memory "$flush" idle
  last_topic= last=0
  for c in $CASES; do
    IFS=: read -r size pubs win batch n <<<"$c"
    case_no=$((case_no + 1))
    topic="bench-$flush-$case_no"
    log "produce flush=$flush size=$size producers=$pubs window=$win batch=$batch messages=$n (cap ${CASE_SECONDS}s)"
    if out=$(bench "$RUN_TIMEOUT" produce --topic "$topic" --create-topic --flush-label "$flush" \
      --size "$size" --producers "$pubs" --window "$win" --batch "$batch" --messages "$n" --duration "${CASE_SECONDS}s"); then
      echo "$out"
      last_topic=$topic
      last=$(sed -n 's/.*"messages":\([0-9]*\).*/\1/p' <<<"$out")
    else
      log "case $c failed (rc $?)"
      [[ -n ${out:-} ]] && echo "$out"
      fail=1
      last_topic= last=0
      check_group
    fi
  done
  memory "$flush" after-produce
  if [[ -n $last_topic ]]; then
    log "consume $last_topic (expect $last)"
    # One connection, as the NATS peer reads; then one per queue (8), as 8 pull workers would.
    for connections in 1 8; do
      bench "$RUN_TIMEOUT" consume --topic "$last_topic" --flush-label "$flush" --expect "$last" --connections "$connections" \
        || { log "consume failed (rc $?)"; fail=1; }
    done
  fi
  if [[ $E2E == 1 ]]; then
    log "e2e flush=$flush 1 KiB, 16 producers, window 1"
    bench "$RUN_TIMEOUT" e2e --topic "bench-$flush-e2e" --create-topic --flush-label "$flush" \
      --size 1024 --producers 16 --window 1 --messages 50000 --duration "${CASE_SECONDS}s" || { log "e2e failed (rc $?)"; fail=1; }
  fi
  if [[ $TRIALS -gt 0 && $flush == "$FAILOVER_FLUSH" ]]; then
    log "failover flush=$flush, $TRIALS trials"
    bench $((TRIALS * 30 + 60)) failover --topic "bench-$flush-failover" --create-topic --flush-label "$flush" \
      --trials "$TRIALS" --producers 8 \
      --kill-cmd "kill -9 \$(cat $WORK/node-{id}.pid)" --restart-cmd "$WORK/start-node.sh {id}" || { log "failover failed (rc $?)"; fail=1; }
  fi
done
stop_group

if [[ ${NATS:-0} == 1 ]]; then
  NATS_DIR="$ROOT/../shared/bench/nats"
  server=$("$NATS_DIR/server.sh") || { log "nats-server not available"; exit 1; }
  log "NATS JetStream baseline (default sync) with $server"
  NATS_SERVER=$server "$NATS_DIR/run.sh" || fail=1
  log "NATS JetStream baseline (NATS_SYNC=always)"
  NATS_SERVER=$server NATS_SYNC=always "$NATS_DIR/run.sh" || fail=1
fi
exit $fail
