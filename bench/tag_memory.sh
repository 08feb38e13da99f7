#!/usr/bin/env bash
# What product-aware purge costs in Redis memory (SPEC section 9): every
# stored answer is filed under the tag index of each product and supplier it
# shows. Stores the 10,000 answers of compare.sh's key set (200 queries x 50
# users, 10 products each from bench/servers.rs's catalogue) through the
# release proxy (a logged route: tags come from the answers it reads), then sums `MEMORY USAGE` of the tag indexes and of the cache
# entries and gives both per stored answer.
#
#   bench/tag_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
cargo build --release --quiet --example bench_servers
BIN=target/release/leafcache
. bench/lib.sh

start_redis
start_backend
PORT=$(free_port)
leafcache_toml "$PORT" "$(free_port)" "" "$WORK/spool" true 'l1_max_bytes = "0"' >"$WORK/proxy.toml"
RUST_LOG=warn "$BIN" serve --config "$WORK/proxy.toml" 2>"$WORK/proxy.log" &
PIDS+=($!)
wait_port "$PORT"

# Every key of the set once (a miss each, stored with its tags).
n=$(wrk -t1 -c16 -d30s -s bench/wrk/search.lua "http://127.0.0.1:$PORT" -- GET set tags |
  awk '$1 == "RESULT" {split($2, kv, "="); print kv[2]}')
[ "$n" -ge 10016 ] || { echo "only $n requests: not every key was stored" >&2; exit 1; }

# The sum of MEMORY USAGE over the keys matching a pattern, and their count.
usage() {
  redis-cli -p "$REDIS_PORT" --scan --pattern "$1" |
    awk -v port="$REDIS_PORT" '{print "MEMORY USAGE \"" $0 "\" SAMPLES 0"}' |
    redis-cli -p "$REDIS_PORT" | awk '{s += $1; n++} END {printf "%d %d\n", s, n}'
}
read -r entry_bytes entries < <(usage 'user:*:cache:*')
read -r tag_bytes tags < <(usage 'cache:tag:*')
members=$(redis-cli -p "$REDIS_PORT" --scan --pattern 'cache:tag:*' |
  awk '{print "ZCARD \"" $0 "\""}' | redis-cli -p "$REDIS_PORT" | awk '{s += $1} END {print s}')

echo "stored answers:            $entries ($((entry_bytes / entries)) B each in Redis)"
echo "tag indexes:               $tags, $members members ($((members / entries)) per answer)"
echo "tag index bytes:           $tag_bytes ($((tag_bytes / entries)) B per stored answer, $((tag_bytes / members)) B per member)"
awk -v t="$tag_bytes" -v e="$entry_bytes" 'BEGIN {printf "tags / entries:            %.1f%%\n", 100 * t / e}'
