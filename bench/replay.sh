#!/usr/bin/env bash
# How fast a proxy replays its spool into Redis once Redis answers: searches
# are spooled by a proxy whose Redis is down (SECS of unique-key load, search
# logging on), then each binary in turn starts on a copy of that spool with
# redis-server up and no load, and replays it at startup. Prints the time
# until the spool is empty and the events per second, per round. Everything
# on CPU 0, wrk on CPU 1.
#
#   bench/replay.sh OLD_BIN NEW_BIN [secs of load to spool, default 10] [rounds, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 SECS=${3:-10} ROUNDS=${4:-2}
cargo build --release --quiet --example bench_servers
. bench/lib.sh
start_backend

# Spool with Redis down: its port is free, nothing listens there.
REDIS_PORT=$(free_port)
port=$(free_port) admin=$(free_port)
leafcache_toml "$port" "$admin" "r:" "$WORK/spool" true >"$WORK/spooling.toml"
RUST_LOG=error taskset -c 0 "$B" serve --config "$WORK/spooling.toml" 2>"$WORK/spooling.log" &
pid=$!
wait_port "$port"
taskset -c 1 wrk -t1 -c64 -d"${SECS}s" -s bench/wrk/search.lua "http://127.0.0.1:$port" \
  -- GET unique "r$RANDOM" >/dev/null
kill -TERM "$pid"; wait "$pid" || true
echo "spool: $(du -sm "$WORK/spool" | cut -f1) MiB in $(ls "$WORK/spool" | grep -c '\.spool$') segments"

start_redis
hz=$(getconf CLK_TCK)
# one BIN TAG: replays a copy of the spool at startup
one() {
  local bin=$1 tag=$2 t0 t1 events pid cpu
  rm -rf "$WORK/spool.$tag"; cp -r "$WORK/spool" "$WORK/spool.$tag"
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  port=$(free_port) admin=$(free_port)
  leafcache_toml "$port" "$admin" "r:" "$WORK/spool.$tag" true >"$WORK/$tag.toml"
  t0=$(date +%s%N)
  RUST_LOG=warn taskset -c 0 "$bin" serve --config "$WORK/$tag.toml" 2>"$WORK/$tag.log" &
  pid=$!
  wait_port "$admin"
  until [ "$(admin_metric "$admin" spool_bytes)" = 0 ]; do sleep 0.02; done
  t1=$(date +%s%N)
  cpu=$(cpu_ticks "$pid")
  events=$(admin_metric "$admin" events_replayed_total)
  awk -v tag="$tag" -v e="$events" -v ns=$((t1 - t0)) -v c="$cpu" -v hz="$hz" \
    'BEGIN {printf "%s replayed %d events in %.2f s: %.0f events/s, proxy CPU %.2f s\n", tag, e, ns / 1e9, e / (ns / 1e9), c / hz}'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for _ in $(seq "$ROUNDS"); do
  one "$A" A
  one "$B" B
done
