#!/usr/bin/env bash
# RSS against l1_max_bytes: leafcache (logging off) under unique-key misses for
# SECS seconds at 64 connections, once per size in SIZES. If RSS grows by far
# more per L1 entry than the entry's accounted weight, entries hold memory the
# weigher does not see (bench/RESULTS.md, "Memory").
#
#   bench/l1_memory.sh                      # SIZES="16MiB 64MiB" SECS=20
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo build --release --quiet --example bench_servers
. bench/lib.sh
start_redis --maxmemory 1gb --maxmemory-policy allkeys-lru
start_backend
printf '%-13s %12s %8s %10s %10s %16s\n' l1_max_bytes "l1_bytes" entries "VmRSS MiB" "VmHWM MiB" "RSS KiB/entry"
POINTS=()
for size in ${SIZES:-16MiB 64MiB}; do
  L=$(free_port)
  A=$(free_port)
  leafcache_toml "$L" "$A" "$size:" "$WORK/spool" false "l1_max_bytes = \"$size\"" >"$WORK/$size.toml"
  RUST_LOG=error taskset -c 0 target/release/leafcache serve --config "$WORK/$size.toml" 2>/dev/null &
  pid=$!
  PIDS+=($pid)
  wait_port "$L"
  taskset -c 1 wrk -t1 -c64 -d"${SECS:-20}"s -s bench/wrk/search.lua "http://127.0.0.1:$L" -- GET unique "mem$size" >/dev/null
  bytes=$(admin_metric "$A" l1_bytes)
  entries=$(admin_metric "$A" l1_entries)
  rss=$(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status)
  hwm=$(awk '/^VmHWM/ {print $2}' /proc/"$pid"/status)
  printf '%-13s %12s %8s %10d %10d %16.1f\n' "$size" "$bytes" "$entries" $((rss / 1024)) $((hwm / 1024)) \
    "$(awk -v r="$rss" -v e="$entries" 'BEGIN {print r / e}')"
  POINTS+=("$entries $rss $bytes")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
# Between the first and the last size: RSS added per extra entry, against the
# weight the L1 accounts for it.
if [ ${#POINTS[@]} -ge 2 ]; then
  echo "${POINTS[0]} ${POINTS[-1]}" | awk '{printf "RSS per extra L1 entry: %.1f KiB; accounted weight per entry: %.1f KiB\n",
    ($5 - $2) / ($4 - $1), ($6 - $3) / 1024 / ($4 - $1)}'
fi
