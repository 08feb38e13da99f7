#!/usr/bin/env bash
# Memory of two leafcache binaries under compare.sh's memory load: unique keys,
# search logging on, a 64 MiB L1, 64 connections, against one redis-server
# (maxmemory 2gb, allkeys-lru, as in compare.sh) and the fake backend, all on
# CPU 0; wrk on CPU 1. The binaries take turns; each run prints VmRSS every
# 5 s, VmHWM, how many events went through the spool and how many warnings the
# proxy logged (lookups timing out as Redis fills up are what make it spool).
#
#   bench/spill_memory.sh OLD_BIN NEW_BIN [secs per run, default 40] [rounds, default 2]
#   STALL=8 bench/spill_memory.sh ...   # redis-server SIGSTOPped for 8 s, 5 s into each run
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 SECS=${3:-40} ROUNDS=${4:-2}
cargo build --release --quiet --example bench_servers
. bench/lib.sh
start_redis --maxmemory 2gb --maxmemory-policy allkeys-lru
REDIS_PID=${PIDS[-1]}
STALL=${STALL:-0}
start_backend

# one BIN TAG: prints "TAG rss: <MiB every 5 s> hwm <MiB> spooled <n> warns <n>"
one() {
  local bin=$1 tag=$2 port admin pid wrk_pid stall_pid= samples=()
  port=$(free_port) admin=$(free_port)
  leafcache_toml "$port" "$admin" "m$RANDOM:" "$WORK/spool.$tag.$RANDOM" true \
    'l1_max_bytes = "64MiB"
l1_ttl = "10m"' >"$WORK/proxy.toml"
  : >"$WORK/proxy.$tag.log"
  RUST_LOG=warn taskset -c 0 "$bin" serve --config "$WORK/proxy.toml" 2>>"$WORK/proxy.$tag.log" &
  pid=$!
  wait_port "$port"
  taskset -c 1 wrk -t1 -c64 -d"${SECS}s" -s bench/wrk/search.lua "http://127.0.0.1:$port" \
    -- GET unique "m$RANDOM$tag" >/dev/null &
  wrk_pid=$!
  if [ "$STALL" -gt 0 ]; then
    (sleep 5; kill -STOP "$REDIS_PID"; sleep "$STALL"; kill -CONT "$REDIS_PID") &
    stall_pid=$!
  fi
  while kill -0 "$wrk_pid" 2>/dev/null; do
    sleep 5
    samples+=($(($(awk '$1 == "VmRSS:" {print $2}' /proc/"$pid"/status) / 1024)))
  done
  [ -z "$stall_pid" ] || wait "$stall_pid"
  echo "$tag rss: ${samples[*]} hwm $(($(awk '$1 == "VmHWM:" {print $2}' /proc/"$pid"/status) / 1024))" \
    "spooled $(admin_metric "$admin" events_spooled_total) left $(($(admin_metric "$admin" spool_bytes) / 1048576)) MiB" \
    "warns $(grep -c WARN "$WORK/proxy.$tag.log" || true)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "memory, ${SECS}s of unique keys with logging on, $ROUNDS rounds; VmRSS MiB every 5 s"
for _ in $(seq "$ROUNDS"); do
  one "$A" A
  one "$B" B
done
