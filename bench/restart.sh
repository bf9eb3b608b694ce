#!/usr/bin/env bash
# How long a restarted raftmq node takes to serve again with a large commitlog: builds release,
# starts a three-node group as three `raftmq server` processes on 127.0.0.1 (data in a temp dir
# under /tmp), fills one topic until each node's commitlog holds SIZE_BYTES, then stops and
# restarts one node per case and measures, from the launch of the restarted process:
#   ms_to_status     `raftmq cluster status --endpoint <that node>` answers (its client port serves)
#   ms_to_read       `raftmq consume --local --endpoint <that node>` returns the probe messages: the
#                    node reads its own applied copy (consume queue + commitlog) of a 1-queue topic
#                    written after the fill, i.e. at the tail of the log
#   ms_to_pull       `raftmq bench consume --any-node --endpoint <that node>` pulls the probe topic
#                    through that node (a follower forwards QueryOffset/PullMessage to its leader,
#                    so this also needs the node to know the leader)
#   ms_to_caught_up  the node's own row in its cluster status says follower with applied >= the
#                    leader's commit index taken after a marker message was written while the node
#                    was down (so it has received and applied entries it did not have)
# Each is polled every POLL_MS by its own loop. One JSON line per measurement on stdout, progress
# and the restarted node's startup log lines (with their time since launch) on stderr.
#
#   bench/restart.sh > restart.jsonl
#   SIZE_BYTES=500000000 CASES="follower:term" CACHES=warm bench/restart.sh   # quick
#
# Environment:
#   SIZE_BYTES  commitlog bytes per node to fill to (default 5000000000); needs ~3x on disk
#   CASES       space-separated ROLE:SIGNAL, ROLE follower|leader, SIGNAL term|kill
#               (default "follower:term follower:kill leader:kill")
#   CACHES      for each case, in order: cold (sync + drop the page cache before the launch; needs
#               root) and/or warm (the files the open reads are read into the page cache first:
#               index files, the active segment, the first and last 64 KiB of each sealed segment,
#               consume queues, redb, vote) (default "cold warm")
#   FLUSH       flush policy of every node (default async: it fills faster; sync is the default of
#               `raftmq server`)
#   CHUNK       messages per `bench produce` run while filling (default 1000000)
#   POLL_MS     polling interval (default 50)
#   REPEAT      measurements per case and cache (default 1)
#   RESTART_LOG RAFTMQ_LOG of restarted nodes (default "info,openraft=info": openraft's startup lines)
#   STRACE      1 runs each restarted node under `strace -f --seccomp-bpf -ttt -T` (openat,
#               pread64, fdatasync, fsync, ftruncate, rename, unlink) and prints, per kind of file
#               (commitlog index files, segments, vote, consume queues, redb), when it was first and
#               last touched, its opens, preads (count, MB, time in them) and fdatasync/fsync calls;
#               this slows the traced syscalls, so times are somewhat higher
#   KEEP        1 keeps the data dir (node logs) under $BASE_DIR
#   BASE_DIR    parent of the temp data dir (default /tmp)
#   PORT_BASE   client ports PORT_BASE+1..3, peer ports PORT_BASE+1001..1003 (default 31000)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE_DIR=${BASE_DIR:-/tmp}
SIZE_BYTES=${SIZE_BYTES:-5000000000}
CASES=${CASES:-"follower:term follower:kill leader:kill"}
CACHES=${CACHES:-"cold warm"}
FLUSH=${FLUSH:-async}
CHUNK=${CHUNK:-1000000}
REPEAT=${REPEAT:-1}
STRACE=${STRACE:-0}
POLL_MS=${POLL_MS:-50}
RESTART_LOG=${RESTART_LOG:-"info,openraft=info"}
PORT_BASE=${PORT_BASE:-31000}
TOPIC=restart-fill
PROBE=restart-probe
PROBE_COUNT=8
POLL_S=$(awk -v ms="$POLL_MS" 'BEGIN { printf "%.3f", ms / 1000 }')

log() { echo "[raftmq restart] $*" >&2; }
now_ns() { date +%s%N; }
ms_since() { echo $((($2 - $1) / 1000000)); }

command -v jq >/dev/null || { log "needs jq"; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release/raftmq"
(cd "$ROOT" && timeout 1800 cargo build --release --quiet --bin raftmq) >&2 || { log "build failed"; exit 1; }

need=$((SIZE_BYTES * 3 + SIZE_BYTES / 5 + 1000000000))
avail=$(($(df -Pk "$BASE_DIR" | awk 'NR == 2 {print $4}') * 1024))
if ((avail < need)); then
  log "$BASE_DIR has $avail bytes free; SIZE_BYTES=$SIZE_BYTES needs about $need (3 nodes + consume queues + margin): set a smaller SIZE_BYTES"
  exit 1
fi

WORK=$(mktemp -d "$BASE_DIR/raftmq-restart.XXXXXX")
ENDPOINTS="127.0.0.1:$((PORT_BASE + 1));127.0.0.1:$((PORT_BASE + 2));127.0.0.1:$((PORT_BASE + 3))"
PEERS="1=127.0.0.1:$((PORT_BASE + 1001)),2=127.0.0.1:$((PORT_BASE + 1002)),3=127.0.0.1:$((PORT_BASE + 1003))"
endpoint() { echo "127.0.0.1:$((PORT_BASE + $1))"; }

# start-node.sh ID [RAFTMQ_LOG [STRACE_FILE]]: starts node ID, appending to its log (under strace
# writing STRACE_FILE if given); writes its pid file (the server's pid, also under strace).
cat >"$WORK/start-node.sh" <<EOF
#!/usr/bin/env bash
id=\$1
wrap=()
[[ -n \${3:-} ]] && wrap=(strace -f --seccomp-bpf -ttt -T -qq -o "\$3" -e trace=openat,pread64,fdatasync,fsync,ftruncate,rename,renameat,unlink,unlinkat)
RAFTMQ_LOG=\${2:-info,openraft=warn} nohup "\${wrap[@]}" "$BIN" server --node-id "\$id" --group g1 --data-dir "$WORK/node-\$id" \\
  --listen "127.0.0.1:\$(($PORT_BASE + id))" --peer-listen "127.0.0.1:\$(($PORT_BASE + 1000 + id))" \\
  --peers "$PEERS" --flush "$FLUSH" </dev/null >>"$WORK/node-\$id.log" 2>&1 &
pid=\$!
if [[ -n \${3:-} ]]; then
  for _ in \$(seq 200); do child=\$(pgrep -P "\$pid" -x raftmq) && break; sleep 0.005; done
  pid=\${child:-\$pid}
fi
echo \$pid >"$WORK/node-\$id.pid"
EOF
chmod +x "$WORK/start-node.sh"

pid_of() { cat "$WORK/node-$1.pid" 2>/dev/null; }
# A process that exited but is not reaped yet (a zombie: reaping is up to init) counts as gone.
running() { [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
alive() { local pid; pid=$(pid_of "$1") && [[ -n $pid ]] && running "$pid"; }

stop_node() {
  local pid
  pid=$(pid_of "$1") || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$WORK/node-$1.pid"
}

cleanup() {
  for id in 1 2 3; do stop_node "$id"; done
  if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK (data and node logs)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status_json() { timeout 10 "$BIN" cluster status --endpoint "$1" --json 2>/dev/null; }

# The leader's row, asked of the given endpoints.
leader_row() { status_json "$1" | jq -c '.nodes[] | select(.role == "leader")' 2>/dev/null | head -1; }

# Waits until there is one leader and two followers that have applied the leader's commit index.
wait_settled() {
  local status
  for _ in $(seq 600); do
    status=$(status_json "$ENDPOINTS")
    if [[ -n $status ]] && jq -e '
        ([.nodes[] | select(.role == "leader")] | length) == 1 and
        ([.nodes[] | select(.role == "follower")] | length) == 2 and
        ((.nodes[] | select(.role == "leader") | .committed) as $c | all(.nodes[]; .applied >= $c))' <<<"$status" >/dev/null; then
      echo "$status"
      return 0
    fi
    sleep 0.2
  done
  log "group did not settle: $status"
  return 1
}

# Reads what opening node ID's data dir reads into the page cache (see CACHES).
warm_node() {
  local dir=$WORK/node-$1 segs last s
  segs=$(ls "$dir"/commitlog/*.log 2>/dev/null)
  last=$(tail -n 1 <<<"$segs")
  for s in $segs; do
    if [[ $s == "$last" ]]; then cat "$s"; else head -c 65536 "$s"; tail -c 65536 "$s"; fi
  done >/dev/null
  find "$dir" -type f ! -name '*.log' -exec cat {} + >/dev/null
}

bytes_of() { du -sb "$1" 2>/dev/null | awk '{print $1}'; }

log "starting a three-node group with --flush $FLUSH in $WORK (ports $((PORT_BASE + 1))-$((PORT_BASE + 3)), $((PORT_BASE + 1001))-$((PORT_BASE + 1003)))"
for id in 1 2 3; do "$WORK/start-node.sh" "$id"; done
wait_settled >/dev/null || exit 1

# Fill: chunks of CHUNK messages (1 KiB, batch 32, 16 producers, window 1) until node 1's
# commitlog holds SIZE_BYTES; the last chunk is sized from the bytes per message so far.
sent=0
fill_start=$(now_ns)
while :; do
  have=$(bytes_of "$WORK/node-1/commitlog")
  ((have >= SIZE_BYTES)) && break
  per=$((sent > 0 ? have / sent : 1100))
  n=$(((SIZE_BYTES - have) / per + 1))
  ((n > CHUNK)) && n=$CHUNK
  ((n < 1000)) && n=1000
  log "fill: commitlog $have of $SIZE_BYTES bytes; producing $n messages"
  out=$(timeout 1800 "$BIN" bench produce --endpoint "$ENDPOINTS" --topic "$TOPIC" --create-topic --flush-label "$FLUSH" \
    --size 1024 --batch 32 --producers 16 --window 1 --messages "$n" --duration 1800s --note fill) || { log "fill failed: $out"; exit 1; }
  log "fill: $out"
  got=$(jq -r '.messages' <<<"$out")
  sent=$((sent + got))
done
log "fill: $sent messages in $(ms_since "$fill_start" "$(now_ns)") ms"
timeout 30 "$BIN" topic create --endpoint "$ENDPOINTS" --topic "$PROBE" --queues 1 >&2 || { log "probe topic create failed"; exit 1; }
timeout 30 "$BIN" topic create --endpoint "$ENDPOINTS" --topic "$PROBE-marker" --queues 1 >&2 || { log "marker topic create failed"; exit 1; }
timeout 30 "$BIN" send --endpoint "$ENDPOINTS" --topic "$PROBE" --body probe --count "$PROBE_COUNT" >/dev/null || { log "probe send failed"; exit 1; }
settled=$(wait_settled) || exit 1
log "settled: $settled"
for id in 1 2 3; do
  log "node $id: data $(du -sh "$WORK/node-$id" | cut -f1), commitlog $(du -sh "$WORK/node-$id/commitlog" | cut -f1) ($(bytes_of "$WORK/node-$id/commitlog") bytes, $(ls "$WORK/node-$id/commitlog" | grep -c '\.log$') segments), consumequeue $(du -sh "$WORK/node-$id/consumequeue" | cut -f1), metadata.redb $(du -sh "$WORK/node-$id/metadata.redb" | cut -f1)"
done
echo "{\"mode\":\"restart-fill\",\"flush\":\"$FLUSH\",\"messages\":$sent,\"log_bytes\":[$(bytes_of "$WORK/node-1/commitlog"),$(bytes_of "$WORK/node-2/commitlog"),$(bytes_of "$WORK/node-3/commitlog")],\"data_bytes\":[$(bytes_of "$WORK/node-1"),$(bytes_of "$WORK/node-2"),$(bytes_of "$WORK/node-3")]}"

# poll_until FILE CMD...: runs CMD every POLL_MS until it succeeds, then writes the time to FILE.
poll_until() {
  local file=$1
  shift
  while :; do
    if "$@"; then now_ns >"$file"; return 0; fi
    sleep "$POLL_S"
  done
}
probe_status() { status_json "$1" >"$WORK/poll/status.json"; }
probe_read() {
  [[ $(timeout 10 "$BIN" consume --local --endpoint "$1" --topic "$PROBE" --from earliest --until-idle 0s 2>/dev/null | grep -c '"body":"probe-') == "$PROBE_COUNT" ]]
}
probe_pull() {
  timeout 10 "$BIN" bench consume --any-node --endpoint "$1" --topic "$PROBE" --expect "$PROBE_COUNT" >/dev/null 2>&1
}
probe_caught_up() {
  local status
  status=$(status_json "$(endpoint "$1")") || return 1
  jq -e --argjson id "$1" --argjson t "$2" '.nodes[] | select(.id == $id) | .role == "follower" and .applied >= $t' <<<"$status" >/dev/null
}

# Lines the node logged since the marker, each with its time since t0 (tracing's UTC timestamps).
startup_lines() {
  local id=$1 t0=$2 line ts ns
  sed -n "/^=== restart $3 ===\$/,\$p" "$WORK/node-$id.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -n +2 | head -n 40 |
    while IFS= read -r line; do
      ts=${line%% *}
      if ns=$(date -d "$ts" +%s%N 2>/dev/null); then echo "  +$(ms_since "$t0" "$ns")ms ${line#* }"; else echo "  $line"; fi
    done
}

# From an strace -ttt -T file, per kind of file: first and last open/pread/sync (ms since t0),
# opens, preads (count, MB, total time) and fdatasync/fsync calls (count, total time).
strace_phases() {
  local file=$1 t0=$2 dir=$3 until=$4
  local active
  [[ $until =~ ^[0-9]+$ ]] || until=999999999
  active=$(ls "$dir"/commitlog/*.log 2>/dev/null | tail -n 1)
  awk -v t0="$t0" -v dir="$dir/" -v until="$until" -v active="${active#"$dir"/}" '
    function ms(ts) { return sprintf("%.0f", ts * 1000 - t0 / 1000000) }
    function phase(path) {
      sub(dir, "", path)
      if (path ~ /^commitlog\/.*\.idx/) return "index files"
      if (path == active) return "active segment"
      if (path ~ /^commitlog\/.*\.log/) return "sealed segments"
      if (path ~ /^commitlog/) return "commitlog dir"
      if (path ~ /^vote/) return "vote"
      if (path ~ /^consumequeue/) return "consumequeue"
      if (path ~ /^metadata\.redb/) return "metadata.redb"
      if (path ~ /^snapshot/) return "snapshot"
      return ""
    }
    {
      ts = $2
      if (ms(ts) + 0 > until + 0) next
      if ($0 ~ /openat\(/ && match($0, /"[^"]*"/)) {
        path = substr($0, RSTART + 1, RLENGTH - 2)
        if (index(path, dir) != 1) next
        p = phase(path)
        if (p == "") next
        fdpath = path
        if (match($0, /= [0-9]+ </)) { fd = substr($0, RSTART + 2, RLENGTH - 4); owner[$1 " " fd] = p }
        if (!(p in first)) { first[p] = ts; order[++n] = p }
        last[p] = ts; opens[p]++
        if ($0 ~ /unfinished/) pending_open[$1] = p
      } else if ($0 ~ /<\.\.\. openat resumed>/ && ($1 in pending_open)) {
        if (match($0, /= [0-9]+ </)) { fd = substr($0, RSTART + 2, RLENGTH - 4); owner[$1 " " fd] = pending_open[$1] }
        delete pending_open[$1]
      } else if ($0 ~ /pread64\(/ && match($0, /\([0-9]+/)) {
        fd = substr($0, RSTART + 1, RLENGTH - 1)
        if (!(($1 " " fd) in owner)) next
        p = owner[$1 " " fd]
        last[p] = ts; reads[p]++
        if (match($0, /\) = [0-9]+ </)) rbytes[p] += substr($0, RSTART + 4, RLENGTH - 6)
        if (match($0, /<[0-9.]+>$/)) readt[p] += substr($0, RSTART + 1, RLENGTH - 2)
      } else if ($0 ~ /(fdatasync|fsync)\(/ && match($0, /\([0-9]+/)) {
        fd = substr($0, RSTART + 1, RLENGTH - 1)
        p = ($1 " " fd) in owner ? owner[$1 " " fd] : "other"
        if (!(p in first)) { first[p] = ts; order[++n] = p }
        last[p] = ts
        syncs[p]++
        if ($0 ~ /unfinished/) pending_sync[$1] = p
        else if (match($0, /<[0-9.]+>$/)) synct[p] += substr($0, RSTART + 1, RLENGTH - 2)
      } else if ($0 ~ /<\.\.\. f(data)?sync resumed>/ && ($1 in pending_sync)) {
        p = pending_sync[$1]
        delete pending_sync[$1]
        last[p] = ts
        if (match($0, /<[0-9.]+>$/)) synct[p] += substr($0, RSTART + 1, RLENGTH - 2)
      }
    }
    END {
      printf "  strace until serving (+%s ms), per kind of file (ms since launch; preads: count, MB, ms in them; syncs: count, ms):\n", until
      for (i = 1; i <= n; i++) {
        p = order[i]
        printf "    %-16s first %6s  last %6s  opens %3d  preads %6d %8.1f MB %7.1f ms  syncs %3d %6.1f ms\n", p, ms(first[p]), ms(last[p]), opens[p], reads[p], rbytes[p] / 1e6, readt[p] * 1000, syncs[p], synct[p] * 1000
      }
    }' "$file"
}

serving_ms() {
  local ts
  ts=$(sed -n "/^=== restart $3 ===\$/,\$p" "$WORK/node-$1.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 'serving clients' | cut -d' ' -f1)
  [[ -n $ts ]] && ms_since "$2" "$(date -d "$ts" +%s%N)" || echo null
}

fail=0
run_no=0
for c in $CASES; do
  IFS=: read -r role sig <<<"$c"
  for cache in $(for _ in $(seq "$REPEAT"); do echo $CACHES; done); do
    run_no=$((run_no + 1))
    settled=$(wait_settled) || { fail=1; break 2; }
    if [[ $role == leader ]]; then
      id=$(jq -r '.nodes[] | select(.role == "leader") | .id' <<<"$settled")
    else
      id=$(jq -r '[.nodes[] | select(.role == "follower") | .id] | .[0]' <<<"$settled")
    fi
    applied_before=$(jq -r --argjson id "$id" '.nodes[] | select(.id == $id) | .applied' <<<"$settled")
    others=$(for o in 1 2 3; do [[ $o != "$id" ]] && printf '%s;' "$(endpoint "$o")"; done)
    others=${others%;}
    pid=$(pid_of "$id")
    log "case $run_no: $role node $id, SIG${sig^^}, $cache cache (applied $applied_before)"
    t_stop=$(now_ns)
    if [[ $sig == term ]]; then kill -TERM "$pid"; else kill -KILL "$pid"; fi
    for _ in $(seq 600); do running "$pid" || break; sleep 0.01; done
    if running "$pid"; then log "node $id did not exit within 6 s of SIG${sig^^}; killing it"; kill -KILL "$pid"; sleep 0.5; fi
    ms_to_exit=$(ms_since "$t_stop" "$(now_ns)")
    # A marker written while the node is down: catching up means receiving entries it lacks.
    for _ in $(seq 300); do
      timeout 5 "$BIN" send --endpoint "$others" --topic "$PROBE-marker" --body marker >/dev/null 2>&1 && break
      sleep 0.1
    done
    target=$(leader_row "$others" | jq -r '.committed')
    [[ $target =~ ^[0-9]+$ ]] || { log "no leader among $others"; fail=1; break 2; }
    log_bytes=$(bytes_of "$WORK/node-$id/commitlog")
    data_bytes=$(bytes_of "$WORK/node-$id")
    cold=false
    [[ $cache == warm ]] && warm_node "$id"
    if [[ $cache == cold ]]; then
      sync
      if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then cold=true; else log "cannot drop the page cache (not root?): this run is warm"; fi
    fi
    rm -rf "$WORK/poll"
    mkdir -p "$WORK/poll"
    echo "=== restart $run_no ===" >>"$WORK/node-$id.log"
    trace=
    [[ $STRACE == 1 ]] && trace="$WORK/node-$id.strace.$run_no"
    load1=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(now_ns)
    "$WORK/start-node.sh" "$id" "$RESTART_LOG" $trace
    ep=$(endpoint "$id")
    poll_until "$WORK/poll/t_status" probe_status "$ep" &
    p1=$!
    poll_until "$WORK/poll/t_read" probe_read "$ep" &
    p2=$!
    poll_until "$WORK/poll/t_pull" probe_pull "$ep" &
    p3=$!
    poll_until "$WORK/poll/t_caught_up" probe_caught_up "$id" "$target" &
    p4=$!
    for _ in $(seq 1200); do
      [[ -f $WORK/poll/t_status && -f $WORK/poll/t_read && -f $WORK/poll/t_pull && -f $WORK/poll/t_caught_up ]] && break
      alive "$id" || break
      sleep 0.1
    done
    for p in $p1 $p2 $p3 $p4; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    ok=true
    fields=
    for what in status read pull caught_up; do
      if [[ -f $WORK/poll/t_$what ]]; then v=$(ms_since "$t0" "$(cat "$WORK/poll/t_$what")"); else v=null; ok=false; fi
      fields="$fields,\"ms_to_$what\":$v"
    done
    alive "$id" || { log "node $id is not running"; ok=false; }
    applied_at_status=$(jq -r --argjson id "$id" '.nodes[] | select(.id == $id) | .applied' "$WORK/poll/status.json" 2>/dev/null)
    [[ $applied_at_status =~ ^[0-9]+$ ]] || applied_at_status=null
    echo "{\"mode\":\"restart\",\"kill\":\"$sig\",\"role\":\"$role\",\"node\":$id,\"cache\":\"$cache\",\"cold\":$cold,\"flush\":\"$FLUSH\",\"log_bytes\":$log_bytes,\"data_bytes\":$data_bytes,\"ms_to_exit\":$ms_to_exit,\"ms_to_serving_log\":$(serving_ms "$id" "$t0" "$run_no")$fields,\"applied_before_stop\":$applied_before,\"applied_at_status\":$applied_at_status,\"target_index\":$target,\"poll_ms\":$POLL_MS,\"load1\":$load1,\"strace\":$([[ -n $trace ]] && echo true || echo false),\"ok\":$ok}"
    log "node $id log since its launch:"
    startup_lines "$id" "$t0" "$run_no" >&2
    [[ -n $trace ]] && strace_phases "$trace" "$t0" "$WORK/node-$id" "$(serving_ms "$id" "$t0" "$run_no")" >&2
    [[ $ok == true ]] || { fail=1; tail -n 20 "$WORK/node-$id.log" >&2; break 2; }
  done
done
exit $fail
