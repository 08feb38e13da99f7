#!/usr/bin/env bash
# Where leafcache's CPU goes under wrk load, on one path at a time: the setup
# of bench/compare.sh (servers on CPU 0, wrk on CPU 1, every key warmed first),
# with the profiler attached for the measured window only.
#
#   bench/profile.sh get   [perf|callgrind] [secs]   # L1 GET hits
#   bench/profile.sh post  [perf|callgrind] [secs]   # L1 POST JSON hits
#   bench/profile.sh redis [perf|callgrind] [secs]   # Redis-tier GET hits
#   bench/profile.sh miss  [perf|callgrind] [secs]   # a new key per request
#   bench/profile.sh miss1 [perf|callgrind] [secs]   # the same, one connection
#   LOG=1 bench/profile.sh get ...                   # with search logging on
#
# perf: `perf record -e cpu-clock` (a software clock, so it works in VMs
# without hardware counters) with DWARF call graphs; prints the self and the
# inclusive (children) rankings. callgrind: the proxy runs under valgrind with
# instrumentation switched on after the warm-up; prints callgrind_annotate's
# inclusive ranking. Output stays in $OUT (default /tmp/leafcache-profile).
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${1:-get}
TOOL=${2:-perf}
SECS=${3:-20}
OUT=${OUT:-/tmp/leafcache-profile}
LOG=${LOG:-}
mkdir -p "$OUT"

cargo build --release --quiet
cargo build --release --quiet --example bench_servers
BIN=target/release/leafcache
. bench/lib.sh

start_redis
start_backend

PORT=$(free_port)
L1=64MiB
[ "$SCENARIO" = redis ] && L1=0
LOGV=false
[ -n "$LOG" ] && LOGV=true
leafcache_toml "$PORT" "$(free_port)" "" "$WORK/spool" "$LOGV" \
  "l1_max_bytes = \"$L1\"
l1_ttl = \"10m\"" >"$WORK/proxy.toml"

if [ "$TOOL" = callgrind ]; then
  # Valgrind runs the proxy ~50x slower: a longer Redis budget keeps Redis-tier
  # lookups from timing out into misses.
  sed -i 's/^\[redis\]$/[redis]\ntimeout = "2s"/' "$WORK/proxy.toml"
  RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/callgrind.$SCENARIO.out" "$BIN" serve --config "$WORK/proxy.toml" 2>"$WORK/proxy.log" &
else
  RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$WORK/proxy.toml" 2>"$WORK/proxy.log" &
fi
PID=$!
PIDS+=($PID)
wait_port "$PORT"

METHOD=GET
[ "$SCENARIO" = post ] && METHOD=POST
URL="http://127.0.0.1:$PORT"
CONNS=64
[ "$SCENARIO" = miss1 ] && CONNS=1
if [ "${SCENARIO%1}" != miss ]; then
  # Every key once, as in compare.sh (slowly under valgrind).
  secs=2
  while :; do
    n=$(taskset -c 1 wrk -t1 -c16 -d"${secs}s" -s bench/wrk/search.lua "$URL" -- "$METHOD" set warm |
      awk '$1 == "RESULT" {split($2, kv, "="); print kv[2]}')
    [ "$n" -ge 10016 ] && break
    [ "$secs" -ge 256 ] && { echo "warm-up incomplete: $n requests" >&2; exit 1; }
    secs=$((secs * 2))
  done
fi
KEYS=set
[ "${SCENARIO%1}" = miss ] && KEYS=unique

if [ "$TOOL" = callgrind ]; then
  callgrind_control -i on "$PID" >/dev/null
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -s bench/wrk/search.lua "$URL" -- "$METHOD" "$KEYS" prof | tee "$OUT/wrk.$SCENARIO.txt"
  callgrind_control -i off "$PID" >/dev/null
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  callgrind_annotate --inclusive=yes "$OUT/callgrind.$SCENARIO.out" 2>/dev/null | sed -n 1,80p >"$OUT/callgrind.$SCENARIO.inclusive.txt"
  callgrind_annotate "$OUT/callgrind.$SCENARIO.out" 2>/dev/null | sed -n 1,80p >"$OUT/callgrind.$SCENARIO.self.txt"
  echo "callgrind: $OUT/callgrind.$SCENARIO.{self,inclusive}.txt"
else
  taskset -c 1 wrk -t1 -c"$CONNS" -d"$((SECS + 2))s" -s bench/wrk/search.lua "$URL" -- "$METHOD" "$KEYS" prof >"$OUT/wrk.$SCENARIO.txt" &
  WRK=$!
  PIDS+=($WRK)
  sleep 1
  perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$PID" -o "$OUT/perf.$SCENARIO.data" -- sleep "$SECS" 2>/dev/null
  wait "$WRK"
  perf report -i "$OUT/perf.$SCENARIO.data" --no-children --sort symbol --stdio -g none --percent-limit 0.5 2>/dev/null |
    grep -v '^#' | grep -v '^$' >"$OUT/perf.$SCENARIO.self.txt"
  perf report -i "$OUT/perf.$SCENARIO.data" --children --sort symbol --stdio -g none --percent-limit 2 2>/dev/null |
    grep -v '^#' | grep -v '^$' >"$OUT/perf.$SCENARIO.children.txt"
  echo "perf: $OUT/perf.$SCENARIO.{self,children}.txt"
  head -40 "$OUT/perf.$SCENARIO.self.txt"
fi
