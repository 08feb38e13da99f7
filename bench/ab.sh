#!/usr/bin/env bash
# A/B of two leafcache binaries on one path: the same backend and redis-server
# on CPU 0, wrk on CPU 1; the binaries take turns (fresh proxy, fresh Redis
# prefix each round), and each round prints both CPU times per request.
#
#   bench/ab.sh OLD_BIN NEW_BIN [get|post|redis|miss|miss1|log] [rounds] [secs]
#
# get/post: L1 hits (warmed); redis: Redis-tier hits (L1 off); miss: a new key
# per request at 64 connections; miss1: the same at one connection (p50 is the
# figure there); log: L1 GET hits with search logging on.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 SCENARIO=${3:-get} ROUNDS=${4:-3} SECS=${5:-8}
cargo build --release --quiet --example bench_servers
. bench/lib.sh
start_redis
start_backend

METHOD=GET KEYS=set CONNS=64 L1=64MiB LOGV=false
case $SCENARIO in
  post) METHOD=POST ;;
  redis) L1=0 ;;
  miss) KEYS=unique ;;
  miss1) KEYS=unique CONNS=1 ;;
  log) LOGV=true ;;
esac

# one BIN TAG: prints "TAG cpu_us_per_req rps p50_us p99_us"
one() {
  local bin=$1 tag=$2 port admin pid t0 t1 out n
  port=$(free_port) admin=$(free_port)
  leafcache_toml "$port" "$admin" "ab$RANDOM:" "$WORK/spool.$tag.$RANDOM" "$LOGV" \
    "l1_max_bytes = \"$L1\"
l1_ttl = \"10m\"" >"$WORK/proxy.toml"
  RUST_LOG=warn taskset -c 0 "$bin" serve --config "$WORK/proxy.toml" 2>>"$WORK/proxy.$tag.log" &
  pid=$!
  wait_port "$port"
  if [ "$KEYS" = set ]; then
    taskset -c 1 wrk -t1 -c16 -d4s -s bench/wrk/search.lua "http://127.0.0.1:$port" -- "$METHOD" set warm >/dev/null
  fi
  t0=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -s bench/wrk/search.lua "http://127.0.0.1:$port" -- "$METHOD" "$KEYS" "ab$RANDOM$tag" |
    awk '$1 == "RESULT"')
  t1=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  n=$(echo "$out" | sed 's/.*requests=\([0-9]*\).*/\1/')
  awk -v tag="$tag" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$n" -v secs="$SECS" -v out="$out" 'BEGIN {
    match(out, /p50_us=[0-9]+/); p50 = substr(out, RSTART + 7, RLENGTH - 7)
    match(out, /p99_us=[0-9]+/); p99 = substr(out, RSTART + 7, RLENGTH - 7)
    printf "%s %.2f %.0f %d %d\n", tag, t / hz * 1e6 / n, n / secs, p50, p99 }'
}

echo "scenario $SCENARIO, $ROUNDS rounds of ${SECS}s; columns: binary, CPU us/request, req/s, p50 us, p99 us"
for r in $(seq "$ROUNDS"); do
  a=$(one "$A" A) b=$(one "$B" B)
  echo "$a"; echo "$b"
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "round: B/A CPU per request %.3f, req/s %.3f, p50 %.3f\n", y[2] / x[2], y[3] / x[3], y[4] / x[4] }'
done
