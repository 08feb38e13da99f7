#!/usr/bin/env bash
# Proxy CPU time per request with search logging on versus off, on a
# hit-heavy load, and Redis commands per logged event. Both proxies run in
# this one invocation on this machine, pinned to CPU 0 with Redis and the
# backend; wrk runs on CPU 1.
#
#   bench/logging_overhead.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
cargo build --release --quiet
BIN=target/release/leafcache
. bench/lib.sh

REDIS_PORT=$(free_port)
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
PIDS+=($!)
BACKEND_PORT=$(free_port)
taskset -c 0 "$BIN" demo-backend --listen 127.0.0.1:"$BACKEND_PORT" 2>/dev/null &
PIDS+=($!)
wait_port "$REDIS_PORT"; wait_port "$BACKEND_PORT"

admin_metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="leafcache_$2" '$1 == m {v = $2} END {printf "%.0f", v + 0}'; }

run() { # name log(true|false)
  local name=$1 log=$2 port admin
  port=$(free_port); admin=$(free_port)
  cat >"$WORK/$name.toml" <<TOML
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "$name:"
[events]
spool_dir = "$WORK/spool-$name"
[[route]]
name = "search"
methods = ["GET", "POST"]
path = "/api/v1/search"
query = ["json:/query", "query:q"]
log = $log
TOML
  RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$WORK/$name.toml" 2>"$WORK/$name.log" &
  local pid=$!
  PIDS+=($pid)
  wait_port "$port"
  # Warm: every key once, then measure.
  taskset -c 1 wrk -t1 -c16 -d3s -s bench/wrk/search_get.lua "http://127.0.0.1:$port" >/dev/null
  sleep 1.5 # let the writer flush the warm-up's events before counting commands
  local t0 c0 out reqs t1 c1
  t0=$(cpu_ticks "$pid"); c0=$(redis_calls)
  out=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}s" --latency -s bench/wrk/search_get.lua "http://127.0.0.1:$port")
  sleep 1.5
  # Batches spilled to the spool under load are replayed before counting:
  # their cost counts too.
  local i
  for i in $(seq 1200); do
    [ "$(admin_metric "$admin" spool_bytes)" = 0 ] && [ "$(admin_metric "$admin" events_queue_depth)" = 0 ] && break
    sleep 0.1
  done
  t1=$(cpu_ticks "$pid"); c1=$(redis_calls)
  echo "$name: events spooled $(admin_metric "$admin" events_spooled_total), dropped $(admin_metric "$admin" events_dropped_total)" >&2
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local hz; hz=$(getconf CLK_TCK)
  local us_per_req; us_per_req=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v r="$reqs" 'BEGIN {printf "%.2f", t * 1e6 / hz / r}')
  local cmds_per; cmds_per=$(awk -v c=$((c1 - c0)) -v r="$reqs" 'BEGIN {printf "%.2f", c / r}')
  echo "$name $rps $p50 $p99 $us_per_req $cmds_per"
  if grep -qi -e warn -e error "$WORK/$name.log"; then echo "$name proxy log:" >&2; grep -i -e warn -e error "$WORK/$name.log" | head -5 >&2; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

OFF=$(run off false)
ON=$(run on true)
printf '%-12s %10s %9s %9s %14s %16s\n' "logging" "req/s" "p50" "p99" "CPU us/req" "redis cmds/req"
for line in "$OFF" "$ON"; do
  set -- $line
  printf '%-12s %10s %9s %9s %14s %16s\n' "$1" "$2" "$3" "$4" "$5" "$6"
done
set -- $OFF; OFF_US=$5
set -- $ON; ON_US=$5; ON_CMDS=$6
awk -v a="$ON_US" -v b="$OFF_US" -v c="$ON_CMDS" 'BEGIN {printf "CPU per request, logging on / off: %.2fx (target <= 1.15x); redis commands per logged event: %s (target <= 8)\n", a / b, c}'
