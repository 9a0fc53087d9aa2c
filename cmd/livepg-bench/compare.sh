#!/usr/bin/env bash
# compare.sh: the measurements of BENCHMARKS.md, livepg against the minimal
# fan-out server (the ceiling) in the same run. Loopback only; every run is
# bounded (--timeout) and every server this script starts is stopped at the
# end, whatever happens.
#
#   cmd/livepg-bench/compare.sh [smoke|idle|saturation|latency10k|latency1k|bus1k|bus10k|buslogical1k|batching|nodes3|nodes3-24k|all]
#   cmd/livepg-bench/compare.sh issue13     # issue 13's targets, livepg and the ceiling back to back
#   cmd/livepg-bench/compare.sh streams100k # 100,000 streams: one node at its file limit, then 6 nodes
#   cmd/livepg-bench/compare.sh streams100k-h2c # 100,000 streams on ONE node over HTTP/2 (h2c), 250 per connection
#
# Results go to $OUT (default ./bench-results), one file per scenario; the
# last line of each run is its one-line summary. PROFILE=1 (issue13) also
# takes an 8 s CPU profile of the node in the middle of its hot10 and burst
# runs, into $OUT/*.pprof.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${OUT:-$PWD/bench-results}
WORK=${WORK:-$(mktemp -d /tmp/livepg-bench.XXXXXX)}
PORT=${PORT:-18090}
CEILING=${CEILING:-127.0.0.1:19190}
FEED=${FEED:-127.0.0.1:19191}     # the ceiling's feed (issue13)
PPROF=${PPROF:-127.0.0.1:18392}   # the node's profiler, with PROFILE=1
READER=${READER:-goroutine}       # issue13's generator: a goroutine per stream, as in the issue
CEILING_HIJACK=${CEILING_HIJACK:-0} # 1: issue13's ceiling takes each stream's connection (one writev per batch, no net/http buffers)
mkdir -p "$OUT"
chmod 755 "$WORK" # the local PostgreSQL runs as the postgres user when we are root
go build -o "$WORK/livepg" ./cmd/livepg
go build -o "$WORK/livepg-bench" ./cmd/livepg-bench

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# start_livepg [ENV=VALUE...]: a fresh livepg with its own local PostgreSQL
# (data kept in $WORK/data between runs); sets LP and DB.
start_livepg() {
  # The generator's streams come from a few loopback addresses: lift the
  # per-client stream limit (LIVEPG_MAX_STREAMS_PER_CLIENT, 256 by default).
  env PORT="$PORT" LIVEPG_DATA_DIR="$WORK/data" LIVEPG_MAX_STREAMS_PER_CLIENT=1000000 "$@" "$WORK/livepg" >"$WORK/livepg.log" 2>&1 &
  LP=$!
  pids+=("$LP")
  for _ in $(seq 150); do
    grep -q "serving on" "$WORK/livepg.log" 2>/dev/null && break
    kill -0 "$LP" 2>/dev/null || break
    sleep 0.2
  done
  if ! grep -q "serving on" "$WORK/livepg.log"; then
    echo "livepg did not start:" >&2
    cat "$WORK/livepg.log" >&2
    exit 1
  fi
  DB=$(grep -o "postgres://[^ ']*" "$WORK/livepg.log" | head -1) # the printed psql line quotes the URL
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

start_ceiling() {
  "$WORK/livepg-bench" ceiling --addr "$CEILING" --lifetime 30m "$@" >"$WORK/ceiling.log" 2>&1 &
  CP=$!
  pids+=("$CP")
  sleep 1
}

# pair NAME STREAMS RATE EVENTS [flags]: livepg publishing through SQL, then
# the ceiling publishing through its HTTP endpoint, each freshly started.
pair() {
  local name=$1 streams=$2 rate=$3 events=$4
  shift 4
  start_livepg
  echo "== livepg $name" | tee -a "$OUT/$name.txt"
  "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --streams "$streams" --mode sql --database-url "$DB" \
    --rate "$rate" --events "$events" --pid "$LP" --timeout 5m --drain 60s "$@" | tee -a "$OUT/$name.txt"
  stop "$LP"
  start_ceiling
  echo "== ceiling $name" | tee -a "$OUT/$name.txt"
  "$WORK/livepg-bench" run --url "http://$CEILING" --streams "$streams" --mode http --publishers 64 \
    --rate "$rate" --events "$events" --pid "$CP" --timeout 5m --drain 60s "$@" | tee -a "$OUT/$name.txt"
  stop "$CP"
}

batching() {
  for window in 0 1ms; do
    start_livepg LIVEPG_PUBLISH_BATCH_WINDOW=$window
    echo "== livepg batching LIVEPG_PUBLISH_BATCH_WINDOW=$window" | tee -a "$OUT/batching.txt"
    "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --streams 10 --topics 2 --mode http \
      --publishers 64 --rate 0 --events 20000 --timeout 3m --drain 30s | tee -a "$OUT/batching.txt"
    stop "$LP"
  done
}

# nodes3 [STREAMS]: three nodes on one database, STREAMS (15000) over them.
# Above ~19,800 the generator spreads the streams over worker processes.
nodes3() {
  local streams=${1:-15000}
  start_livepg
  local p1=$LP
  env PORT=$((PORT + 1)) DATABASE_URL="$DB" "$WORK/livepg" >"$WORK/livepg2.log" 2>&1 &
  local p2=$!
  pids+=("$p2")
  env PORT=$((PORT + 2)) DATABASE_URL="$DB" "$WORK/livepg" >"$WORK/livepg3.log" 2>&1 &
  local p3=$!
  pids+=("$p3")
  sleep 5
  echo "== 3 nodes, $streams streams" | tee -a "$OUT/nodes3.txt"
  "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --url "http://127.0.0.1:$((PORT + 1))" --url "http://127.0.0.1:$((PORT + 2))" \
    --streams "$streams" --sources 6 --mode sql --database-url "$DB" --rate 10 --events 300 \
    --pid "$p1" --pid "$p2" --pid "$p3" --timeout 5m --drain 60s | tee -a "$OUT/nodes3.txt"
  stop "$p2"
  stop "$p3"
  stop "$p1"
}

# start_node PORT LOG [ENV=VALUE...]: one more node on $DB; sets NP.
start_node() {
  local port=$1 log=$2
  shift 2
  env PORT="$port" DATABASE_URL="$DB" LIVEPG_MAX_STREAMS_PER_CLIENT=1000000 "$@" "$WORK/livepg" >"$log" 2>&1 &
  NP=$!
  pids+=("$NP")
  for _ in $(seq 150); do
    grep -q "serving on" "$log" 2>/dev/null && return 0
    kill -0 "$NP" 2>/dev/null || break
    sleep 0.2
  done
  echo "livepg on :$port did not start:" >&2
  cat "$log" >&2
  exit 1
}

# profile NAME DELAY: an 8 s CPU profile of the node (LIVEPG_PPROF_ADDR)
# DELAY seconds from now, in the background, with PROFILE=1.
profile() {
  [ "${PROFILE:-0}" = 1 ] || return 0
  (sleep "$2" && curl -s -o "$OUT/$1.pprof" "http://$PPROF/debug/pprof/profile?seconds=8") &
}

# pair13 NAME STREAMS RATE EVENTS LIVEPG_FLAGS -- CEILING_FLAGS: issue 13's
# comparison: livepg publishing through SQL, then the ceiling fed the same
# events through its feed (so that it takes the offered rate), each freshly
# started, back to back, the generator reading with $READER.
pair13() {
  local name=$1 streams=$2 rate=$3 events=$4
  shift 4
  local lflags=() cflags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do lflags+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  cflags=("$@")
  start_livepg LIVEPG_PPROF_ADDR="$PPROF"
  echo "== livepg $name ($(uptime))" | tee -a "$OUT/$name.txt"
  case $name in hot10 | burst | smoke13) profile "$name-livepg" 6 ;; esac
  "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --streams "$streams" --sources 8 --reader "$READER" --mode sql --database-url "$DB" \
    --rate "$rate" --events "$events" --pid "$LP" --timeout 5m --drain 60s "${lflags[@]}" | tee -a "$OUT/$name.txt"
  wait_profiles
  # The node's commit-to-read lag (livepg_event_lag_seconds), what the
  # database side adds before the fan-out.
  curl -fsS "http://127.0.0.1:$PORT/metrics" 2>/dev/null | grep -E '^livepg_(event_lag|log_read)_seconds' >"$OUT/$name-lag.txt" || true
  stop "$LP"
  [ "${#cflags[@]}" -gt 0 ] && [ "${cflags[0]}" = none ] && return 0
  if [ "$CEILING_HIJACK" = 1 ]; then start_ceiling --feed "$FEED" --hijack; else start_ceiling --feed "$FEED"; fi
  echo "== ceiling $name ($(uptime))" | tee -a "$OUT/$name.txt"
  "$WORK/livepg-bench" run --url "http://$CEILING" --streams "$streams" --sources 8 --reader "$READER" --mode feed --feed "$FEED" \
    --rate "$rate" --events "$events" --pid "$CP" --timeout 5m --drain 60s "${cflags[@]}" | tee -a "$OUT/$name.txt"
  stop "$CP"
}
# profile_when_connected NAME FILE: with PROFILE=1, an 8 s CPU profile of
# the node from 1.5 s after FILE gets its next "connected" line (the
# generator's), in the background.
profile_when_connected() {
  [ "${PROFILE:-0}" = 1 ] || return 0
  local name=$1 file=$2 from
  from=$(($(wc -l <"$file" 2>/dev/null || echo 0) + 1))
  (
    for _ in $(seq 3000); do
      tail -n +"$from" "$file" 2>/dev/null | grep -q "^connected " && break
      sleep 0.2
    done
    sleep 1.5
    curl -s -o "$OUT/$name.pprof" "http://$PPROF/debug/pprof/profile?seconds=8"
  ) &
}
wait_profiles() { for j in $(jobs -rp); do case " ${pids[*]} " in *" $j "*) ;; *) wait "$j" || true ;; esac; done; }

issue13() {
  echo "== issue13 $(date -u) ${LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo "?")} reader=$READER ceiling_hijack=$CEILING_HIJACK" | tee -a "$OUT/issue13.txt"
  # Memory per idle stream.
  pair13 idle13 10000 10 0 --mode none --idle 1s -- --mode none --idle 1s
  # 10,000 streams x 10 ev/s on one topic: delivered/s, p50/p99.
  pair13 hot10 10000 10 300 --publishers 4
  # A burst: 300 events at 100/s to 10,000 streams: delivered/s, CPU per delivery.
  # (8 SQL connections, so that commits keep up with the rate on a busy machine.)
  pair13 burst 10000 100 300 --publishers 8
  # 10,000 streams over 5,000 topics, 1,000 ev/s (SQL, 32 connections): p99.
  pair13 topics5k 10000 1000 30000 --topics 5000 --publishers 32 -- --topics 5000 --publishers 2
  # 2,000 streams resuming at once from 1,000 events back (livepg alone:
  # the ceiling has no log): all served, catch-up reads, time to serve all.
  pair13 resume 2000 0 0 --backlog 1000 --publishers 16 --connect-concurrency 2000 -- none
  grep -h "^livepg-bench" "$OUT"/{idle13,hot10,burst,topics5k,resume}.txt | tee -a "$OUT/issue13.txt"
}

# streams100k: 100,000 streams. One process may hold 20,000 open files
# here (the hard RLIMIT_NOFILE; no CAP_SYS_RESOURCE to raise it), a node
# included, so one node holds at most about 19,870 (LIVEPG_MAX_CONNECTIONS
# defaults to the file limit less 128): first one node with 19,500, then
# 20,500 (it refuses what it cannot hold), then 100,000 over six fresh
# nodes on one database. 10 events at 1/s through SQL each time.
streams100k() {
  echo "== streams100k $(date -u) ${LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo "?")}" | tee -a "$OUT/streams100k.txt"
  start_livepg
  echo "== one node, 19,500 streams ($(uptime))" | tee -a "$OUT/streams100k.txt"
  "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --streams 19500 --sources 16 --mode sql --database-url "$DB" \
    --rate 1 --events 10 --pid "$LP" --procs 2 --timeout 10m --drain 120s | tee -a "$OUT/streams100k.txt"
  # Past the file limit: the node refuses what it cannot hold (503).
  echo "== one node, 20,500 streams: past its file limit ($(uptime))" | tee -a "$OUT/streams100k.txt"
  "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --streams 20500 --sources 16 --mode sql --database-url "$DB" \
    --rate 1 --events 10 --pid "$LP" --procs 2 --timeout 10m --drain 120s | tee -a "$OUT/streams100k.txt"
  stop "$LP" # a fresh first node, so that its memory per stream counts from its start
  start_livepg
  local urls=(--url "http://127.0.0.1:$PORT") nodes=(--pid "$LP")
  for i in 1 2 3 4 5; do
    start_node $((PORT + i)) "$WORK/livepg$i.log"
    urls+=(--url "http://127.0.0.1:$((PORT + i))")
    nodes+=(--pid "$NP")
  done
  sleep 2
  echo "== six nodes, 100,000 streams ($(uptime))" | tee -a "$OUT/streams100k.txt"
  "$WORK/livepg-bench" run "${urls[@]}" --streams 100000 --sources 16 --mode sql --database-url "$DB" \
    --rate 1 --events 10 "${nodes[@]}" --timeout 15m --drain 300s | tee -a "$OUT/streams100k.txt"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# streams100k-h2c: 100,000 streams on ONE node, opened as HTTP/2 streams
# over cleartext (h2c, as Fly's proxy speaks with h2_backend), 250 per
# connection: 400 connections, so the file limit that holds one node to
# ~19,870 HTTP/1.1 streams no longer bounds them; LIVEPG_MAX_STREAMS is
# raised to hold them. 10 events at 1/s through SQL, as streams100k.
# STREAMS and STREAMS_PER_CONN change the shape.
streams100k_h2c() {
  local streams=${STREAMS:-100000} per=${STREAMS_PER_CONN:-250}
  echo "== streams100k-h2c $(date -u) ${LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo "?")}" | tee -a "$OUT/streams100k-h2c.txt"
  start_livepg LIVEPG_MAX_STREAMS=$((streams + 10000)) LIVEPG_PPROF_ADDR="$PPROF"
  echo "== one node, $streams streams over h2c, $per per connection ($(uptime))" | tee -a "$OUT/streams100k-h2c.txt"
  # PROFILE=1: 8 s of the node's CPU from 1.5 s after the streams are
  # connected: while the events go out.
  profile_when_connected streams100k-h2c-livepg "$OUT/streams100k-h2c.txt"
  "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --h2c --streams-per-conn "$per" --streams "$streams" --sources 16 \
    --mode sql --database-url "$DB" --rate 1 --events 10 --pid "$LP" --timeout 15m --drain 300s | tee -a "$OUT/streams100k-h2c.txt"
  wait_profiles
  echo "== after ($(uptime))" | tee -a "$OUT/streams100k-h2c.txt"
  stop "$LP"
}

# bus1k: latency1k's load on livepg alone, in each bus mode on the same local
# cluster (migrations/00008_bus.sql): commit_timestamp (the local cluster's
# default), then commit_lock (track_commit_timestamp turned off with ALTER
# SYSTEM; livepg restarts its PostgreSQL), then back.
bus1k() { busmodes bus1k 1000; }
# bus10k: issue 13's 10 ev/s scenario (10,000 streams, a goroutine each in
# the generator, 4 SQL publishers) in each bus mode.
bus10k() { busmodes bus10k 10000 --sources 8 --reader goroutine --publishers 4; }

# busmodes NAME STREAMS [flags]: 300 events at 10/s through SQL to STREAMS
# streams, in each bus mode in turn.
busmodes() {
  local name=$1 streams=$2
  shift 2
  for bus in commit_timestamp commit_lock; do
    local setting=on
    [ "$bus" = commit_lock ] && setting=off
    start_livepg
    psql "$DB" -qc "ALTER SYSTEM SET track_commit_timestamp = $setting" >/dev/null
    stop "$LP" # and its local PostgreSQL: the setting needs a restart
    start_livepg
    if ! psql "$DB" -tAc "SELECT livepg.bus_mode()" | grep -qx "$bus"; then
      echo "$name: the cluster is not in bus mode $bus" >&2
      exit 1
    fi
    echo "== livepg $name bus=$bus ($(uptime))" | tee -a "$OUT/$name.txt"
    "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --streams "$streams" --mode sql --database-url "$DB" \
      --rate 10 --events 300 --pid "$LP" --timeout 5m --drain 60s "$@" | tee -a "$OUT/$name.txt"
    stop "$LP"
  done
  start_livepg
  psql "$DB" -qc "ALTER SYSTEM RESET track_commit_timestamp" >/dev/null
  stop "$LP"
}

# buslogical1k: latency1k's load on livepg alone, the default bus
# (commit_timestamp) and then the logical mode (migrations/00009_logical.sql)
# back to back on the same local cluster, restarted with wal_level=logical;
# the cluster is put back afterwards.
buslogical1k() {
  start_livepg
  psql "$DB" -qc "ALTER SYSTEM SET wal_level = logical" >/dev/null
  stop "$LP" # and its local PostgreSQL: the setting needs a restart
  for bus in default logical; do
    start_livepg LIVEPG_BUS=$bus
    echo "== livepg buslogical1k bus=$bus ($(psql "$DB" -tAc "SELECT livepg.bus_mode()"))" | tee -a "$OUT/buslogical1k.txt"
    "$WORK/livepg-bench" run --url "http://127.0.0.1:$PORT" --streams 1000 --mode sql --database-url "$DB" \
      --rate 10 --events 300 --pid "$LP" --timeout 5m --drain 60s | tee -a "$OUT/buslogical1k.txt"
    stop "$LP"
  done
  start_livepg LIVEPG_BUS=default
  psql "$DB" -qc "ALTER SYSTEM RESET wal_level" >/dev/null
  psql "$DB" -qc "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'livepg_bus'" >/dev/null
  stop "$LP"
}

case "${1:-all}" in
smoke) pair smoke 200 100 100 ;; # seconds: checks the tools
idle) pair idle 10000 10 0 --mode none --idle 1s ;;
saturation) pair saturation 10000 100 300 ;;
latency10k) pair latency10k 10000 10 300 ;;
latency1k) pair latency1k 1000 10 300 ;;
bus1k) bus1k ;;
bus10k) bus10k ;;
buslogical1k) buslogical1k ;;
batching) batching ;;
nodes3) nodes3 ;;
nodes3-24k) nodes3 24000 ;; # 3 x 8,000: more streams than one generator process may hold
smoke13) # seconds: checks issue13's tools
  PROFILE=1 pair13 smoke13 200 100 100 --topics 4 -- --topics 4
  pair13 smoke13 200 0 0 --backlog 100 --publishers 4 -- none
  ;;
issue13) issue13 ;;
hot13) pair13 hot10 10000 10 300 --publishers 4 ;; # issue 13's 10 ev/s scenario alone, livepg then the ceiling
topics13) pair13 topics5k 10000 1000 30000 --topics 5000 --publishers 32 -- --topics 5000 --publishers 2 ;; # issue 13's 5,000-topic scenario alone
streams100k) streams100k ;;
streams100k-h2c) streams100k_h2c ;;
all)
  pair idle 10000 10 0 --mode none --idle 1s
  pair saturation 10000 100 300
  pair latency10k 10000 10 300
  pair latency1k 1000 10 300
  batching
  nodes3
  ;;
*)
  echo "usage: $0 [smoke|idle|saturation|latency10k|latency1k|bus1k|bus10k|buslogical1k|batching|nodes3|nodes3-24k|all|issue13|streams100k|streams100k-h2c]" >&2
  exit 2
  ;;
esac
