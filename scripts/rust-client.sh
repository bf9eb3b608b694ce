#!/usr/bin/env bash
# The official RocketMQ Rust client (crate rocketmq 5.0.0, clients/rust-check) against a real
# three-process raftmq group: Producer + SimpleConsumer round trip, then a negative control that
# must fail (the check is told to expect one altered body).
#
#   scripts/rust-client.sh            # builds raftmq (debug) unless RAFTMQ_BIN is set
#   RAFTMQ_KEEP_TMP=1 ...             # keep the nodes' data and logs
#   RUST_CHECK_COUNT=64 ...           # messages per run (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

COUNT="${RUST_CHECK_COUNT:-40}"
CHECK_DIR="$REPO/clients/rust-check"
CHECK_TARGET_DIR="${RUST_CHECK_TARGET_DIR:-$CHECK_DIR/target}"
START_TIMEOUT_S=30
LOG_TAIL_LINES=40

if [ -z "${RAFTMQ_BIN:-}" ]; then
  echo "rust-client: building raftmq (cargo build --locked)"
  cargo build --locked
  RAFTMQ_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/raftmq"
fi
[ -x "$RAFTMQ_BIN" ] || { echo "rust-client: raftmq binary not found at $RAFTMQ_BIN" >&2; exit 1; }

# Its own workspace and lock file, its own target dir: the client brings tonic 0.9 / prost 0.11.
echo "rust-client: building clients/rust-check (rocketmq 5.0.0)"
CARGO_TARGET_DIR="$CHECK_TARGET_DIR" cargo build --locked --manifest-path "$CHECK_DIR/Cargo.toml"
CHECK_BIN="$CHECK_TARGET_DIR/debug/raftmq-rust-client-check"

TMP="$(mktemp -d -t raftmq-rust-client-XXXXXX)"
PIDS=()
LOGS=()
status_failed=1

stop_servers() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

log_tails() {
  for log in "${LOGS[@]}"; do
    echo "--- $log (last $LOG_TAIL_LINES lines) ---"
    tail -n "$LOG_TAIL_LINES" "$log" | sed 's/\x1b\[[0-9;]*m//g' || true
  done
}

on_exit() {
  local rc=$?
  stop_servers
  if [ "$status_failed" -ne 0 ] || [ "$rc" -ne 0 ]; then
    echo "rust-client: FAILED; server logs:" >&2
    log_tails >&2
  fi
  if [ -n "${RAFTMQ_KEEP_TMP:-}" ]; then
    echo "rust-client: data and logs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
}
trap on_exit EXIT

# Six free loopback ports (held open together so they are distinct), as tests/python/conftest.py does.
read -r -a PORTS <<<"$(python3 - <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"
CLIENT=("127.0.0.1:${PORTS[0]}" "127.0.0.1:${PORTS[1]}" "127.0.0.1:${PORTS[2]}")
PEERS="1=127.0.0.1:${PORTS[3]},2=127.0.0.1:${PORTS[4]},3=127.0.0.1:${PORTS[5]}"

for i in 1 2 3; do
  log="$TMP/node-$i.log"
  LOGS+=("$log")
  NO_COLOR=1 "$RAFTMQ_BIN" server --node-id "$i" --group g1 --data-dir "$TMP/data-$i" \
    --listen "${CLIENT[$((i - 1))]}" --peer-listen "127.0.0.1:${PORTS[$((i + 2))]}" --peers "$PEERS" \
    >"$log" 2>&1 </dev/null &
  PIDS+=("$!")
done
echo "rust-client: started nodes ${CLIENT[*]} (data and logs in $TMP)"

# Settled: three nodes, one leader, every node at the same applied index.
deadline=$((SECONDS + START_TIMEOUT_S))
until NO_COLOR=1 "$RAFTMQ_BIN" cluster status --endpoint "${CLIENT[0]}" --json 2>/dev/null | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
leaders = [n for n in nodes if n.get("role") == "leader"]
sys.exit(0 if len(nodes) == 3 and len(leaders) == 1 and len({n.get("applied") for n in nodes}) == 1 else 1)
' 2>/dev/null; do
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "rust-client: a raftmq node exited during startup" >&2; exit 1; }
  done
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "rust-client: no settled leader within ${START_TIMEOUT_S}s" >&2
    NO_COLOR=1 "$RAFTMQ_BIN" cluster status --endpoint "${CLIENT[0]}" >&2 || true
    exit 1
  fi
  sleep 0.2
done
NO_COLOR=1 "$RAFTMQ_BIN" cluster status --endpoint "${CLIENT[0]}"

suffix="$(date +%s)-$$"
TOPIC="rust-check-$suffix"
TOPIC_NEGATIVE="rust-check-negative-$suffix"
for topic in "$TOPIC" "$TOPIC_NEGATIVE"; do
  NO_COLOR=1 "$RAFTMQ_BIN" topic create --endpoint "${CLIENT[0]}" --topic "$topic" --queues 4
done

# The client gets every node's address (its ',' form) and follows the route to the serving node.
ENDPOINTS="$(IFS=,; echo "${CLIENT[*]}")"

echo "rust-client: round trip, $COUNT messages"
"$CHECK_BIN" --endpoint "$ENDPOINTS" --topic "$TOPIC" --group "rust-check-$suffix" --count "$COUNT" \
  2>"$TMP/check.stderr" | tee "$TMP/check.stdout" || {
  echo "rust-client: the round trip failed; its stderr (client log and mismatches):" >&2
  tail -n 60 "$TMP/check.stderr" >&2
  exit 1
}

# Negative control: the check expects an altered body for message #0, so it must report that the
# real body was never sent and that #0 is missing, and exit 1.
echo "rust-client: negative control (--tamper-expected-body must fail)"
set +e
"$CHECK_BIN" --endpoint "$ENDPOINTS" --topic "$TOPIC_NEGATIVE" --group "rust-check-negative-$suffix" \
  --count 4 --deadline-secs 8 --tamper-expected-body >"$TMP/negative.stdout" 2>"$TMP/negative.stderr"
negative_rc=$?
set -e
if [ "$negative_rc" -ne 1 ] || ! grep -q "never sent" "$TMP/negative.stderr" \
   || ! grep -q "missing #\[0\]" "$TMP/negative.stderr"; then
  echo "rust-client: the negative control did not fail as it must (exit $negative_rc):" >&2
  cat "$TMP/negative.stdout" >&2
  tail -n 60 "$TMP/negative.stderr" >&2
  exit 1
fi
echo "rust-client: negative control failed as it must: $(grep -m1 'never sent' "$TMP/negative.stderr")"

status_failed=0
echo "rust-client: 2 passed, 0 failed"   # the round trip and the negative control
