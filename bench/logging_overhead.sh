#!/usr/bin/env bash
# Proxy CPU time per request with search logging on versus off, on a
# hit-heavy load, and Redis commands per logged event. Both proxies run in
# this one invocation on this machine, pinned to CPU 0 with Redis and the
# backend; wrk runs on CPU 1.
#
#   bench/logging_overhead.sh [seconds per run, default 10]
#   ROUNDS=5 bench/logging_overhead.sh 8   # off/on pairs (default 3), median ratio
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
cargo build --release --quiet
BIN=target/release/leafcache
. bench/lib.sh

start_redis
BACKEND_PORT=$(free_port)
taskset -c 0 "$BIN" demo-backend --listen 127.0.0.1:"$BACKEND_PORT" 2>/dev/null &
PIDS+=($!)
wait_port "$BACKEND_PORT"

run() { # name log(true|false)
  local name=$1 log=$2 port admin
  port=$(free_port); admin=$(free_port)
  leafcache_toml "$port" "$admin" "$name:" "$WORK/spool-$name" "$log" >"$WORK/$name.toml"
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

# Off and on alternate ROUNDS times (default 3), each with a fresh proxy: one
# pair can be off by 20% on a shared machine; the median ratio is the figure.
ROUNDS=${ROUNDS:-3}
printf '%-12s %10s %9s %9s %14s %16s\n' "logging" "req/s" "p50" "p99" "CPU us/req" "redis cmds/req"
RATIOS=()
CMDS=()
for r in $(seq "$ROUNDS"); do
  OFF=$(run "off$r" false)
  ON=$(run "on$r" true)
  for line in "$OFF" "$ON"; do
    set -- $line
    printf '%-12s %10s %9s %9s %14s %16s\n' "$1" "$2" "$3" "$4" "$5" "$6"
  done
  set -- $OFF; OFF_US=$5
  set -- $ON; ON_US=$5; CMDS+=("$6")
  RATIOS+=("$(awk -v a="$ON_US" -v b="$OFF_US" 'BEGIN {printf "%.2f", a / b}')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "CPU per request, logging on / off, per round: ${RATIOS[*]}"
echo "median: $(median "${RATIOS[@]}")x (target <= 1.15x); redis commands per logged event: median $(median "${CMDS[@]}") (target <= 8)"
