#!/usr/bin/env bash
# Jepsen-style suite against the docker-compose cluster. Exits non-zero on any invalid result.
#   scripts/jepsen.sh            short suite (CI): one run, every nemesis at least once (~100 s of faults)
#   scripts/jepsen.sh long       one 300 s run per nemesis, then a 600 s run with all of them
#   scripts/jepsen.sh kill pause one 120 s run per named nemesis
# Env: SKIP_IMAGE=1 (reuse raftmq:latest), KEEP=1 (leave the cluster up), RATE (200), OUT (target/jepsen).
set -euo pipefail
cd "$(dirname "$0")/.."
# One project name wherever the checkout lives (the network and its fixed subnet are per project).
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-raftmq}"
COMPOSE="${COMPOSE:-$(docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)}"
RATE="${RATE:-200}"
OUT="${OUT:-target/jepsen}"

[ "${SKIP_IMAGE:-0}" = 1 ] || scripts/image.sh
cargo build --locked -p raftmq-jepsen
JEPSEN=target/debug/raftmq-jepsen

fresh_cluster() {
  $COMPOSE down -v --remove-orphans >/dev/null 2>&1 || true
  $COMPOSE up -d
}
cleanup() { [ "${KEEP:-0}" = 1 ] || $COMPOSE down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

failed=0
run() { # name time nemesis
  local name="$1" time="$2" nemesis="$3"
  echo "=== jepsen $name: ${time}s, nemesis $nemesis, $RATE sends/s"
  fresh_cluster
  if ! "$JEPSEN" run --time "$time" --nemesis "$nemesis" --rate "$RATE" --compose "$COMPOSE" --out "$OUT/$name"; then
    echo "=== jepsen $name: INVALID (see $OUT/$name/summary.txt)"; failed=1
    $COMPOSE logs --no-color --tail 200 > "$OUT/$name/compose.log" 2>&1 || true
  fi
}

case "${1:-short}" in
  short) run short 120 kill,pause,partition,restart,wipe ;;
  long)
    for n in kill pause partition restart wipe; do run "long-$n" 300 "$n"; done
    run long-all 600 kill,pause,partition,restart,wipe ;;
  *) for n in "$@"; do run "$n" 120 "$n"; done ;;
esac
exit $failed
